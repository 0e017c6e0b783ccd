package query

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// findSubqueries returns the subquery nodes of a plan.
func findSubqueries(p *Plan) []*subqueryNode {
	var out []*subqueryNode
	for _, it := range p.timing {
		if it.sub != nil {
			out = append(out, it.sub)
		}
	}
	return out
}

// TestSubqueryStepAlignment checks the subquery semantics on a series
// whose value is its timestamp in seconds: the points are the child
// evaluated at the multiples of the step in (t-offset-range, t-offset],
// aligned to absolute time, not to t.
func TestSubqueryStepAlignment(t *testing.T) {
	st := storeWith(t, map[string][]point{`x`: counter(0, 10, 200, 0, 10)}) // x = t/1s every 10 s
	for _, tc := range []struct {
		q    string
		at   float64
		want float64
	}{
		// Steps 980, 990, 1000: t is on the grid.
		{`count_over_time(x[30s:10s])`, 1000, 3},
		{`sum_over_time(x[30s:10s])`, 1000, 980 + 990 + 1000},
		// t = 1005: still 980..1000, the grid does not move with t.
		{`sum_over_time(x[30s:10s])`, 1005, 980 + 990 + 1000},
		// The window is left-open: 970 is out at t=1000.
		{`min_over_time(x[30s:10s])`, 1000, 980},
		// Offset shifts the window, the grid stays: (960, 990].
		{`sum_over_time(x[30s:10s] offset 10s)`, 1000, 970 + 980 + 990},
		{`sum_over_time(x[30s:10s] offset 3s)`, 1000, 970 + 980 + 990},
		// A step that does not divide the range: multiples of 7 s in
		// (970, 1000]: 973, 980, 987, 994, each reading the sample at or
		// before it.
		{`sum_over_time(x[30s:7s])`, 1000, 970 + 980 + 980 + 990},
		// The default resolution is Prometheus's 1m: (700, 1000] holds
		// 720, 780, 840, 900, 960.
		{`count_over_time(x[5m:])`, 1000, 5},
		// @ pins the window end; start() and end() are t here.
		{`sum_over_time(x[30s:10s] @ 500)`, 1000, 480 + 490 + 500},
		{`sum_over_time(x[30s:10s] @ end())`, 1000, 980 + 990 + 1000},
		// Nested: an inner [20s:10s] sum at each outer step 960..1000.
		{`sum_over_time(sum_over_time(x[20s:10s])[50s:10s])`, 1000, (950 + 960) + (960 + 970) + (970 + 980) + (980 + 990) + (990 + 1000)},
		// rate over the points of sum(rate): 1/s steadily.
		{`max_over_time(sum(rate(x[1m]))[5m:15s])`, 1000, 1},
	} {
		t.Run(fmt.Sprintf("%s@%v", tc.q, tc.at), func(t *testing.T) {
			res, err := evalAt(t, st, tc.q, tc.at, Options{})
			require.NoError(t, err)
			require.Len(t, res.Vector, 1, "%v", res.Vector)
			assert.InDelta(t, tc.want, res.Vector[0].F, 1e-9)
		})
	}
}

// TestAtModifier covers @ on selectors and range selectors in instant and
// range queries: start() and end() are the query's first and last step.
func TestAtModifier(t *testing.T) {
	st := storeWith(t, map[string][]point{`x{pod="a"}`: counter(0, 10, 200, 0, 10)})
	e := NewEngine(st)
	for _, tc := range []struct {
		q    string
		want float64
	}{
		{`x @ 100`, 100},
		{`x @ 100 offset 20s`, 80},
		{`x offset -20s @ 100`, 120},
		{`sum_over_time(x[30s] @ 100)`, 80 + 90 + 100},
		{`rate(x[1m] @ 100)`, 1},
		{`timestamp(x @ 95)`, 90},
		// Upstream ignores the offset of timestamp(sel @ t).
		{`timestamp(x @ 95 offset 30s)`, 90},
		{`x @ start()`, 1000},
		{`x @ end() - x`, 0},
	} {
		t.Run(tc.q, func(t *testing.T) {
			p, err := e.Query(tc.q, Options{})
			require.NoError(t, err)
			res, err := p.Eval(context.Background(), 1_000_000)
			require.NoError(t, err)
			require.Len(t, res.Vector, 1)
			assert.InDelta(t, tc.want, res.Vector[0].F, 1e-9)
		})
	}
	// A range query: @ start()/end() are the range's bounds at every step.
	for _, tc := range []struct {
		q    string
		want func(t int64) float64
	}{
		{`x @ start()`, func(int64) float64 { return 500 }},
		{`x @ end()`, func(int64) float64 { return 600 }},
		{`x - x @ start()`, func(t int64) float64 { return float64(t)/1000 - 500 }},
		{`x`, func(t int64) float64 { return float64(t) / 1000 }},
		{`max_over_time(x[30s:10s] @ end())`, func(int64) float64 { return 600 }},
	} {
		t.Run("range "+tc.q, func(t *testing.T) {
			p, err := e.Query(tc.q, Options{})
			require.NoError(t, err)
			mat, err := p.EvalRange(context.Background(), 500_000, 600_000, 20_000, nil)
			require.NoError(t, err)
			require.Len(t, mat, 1)
			require.Len(t, mat[0].Points, 6)
			for _, pt := range mat[0].Points {
				assert.InDelta(t, tc.want(pt.T), pt.F, 1e-9, "at %d", pt.T)
			}
		})
	}
}

// TestEvalRangeMatchesEval: without @, a range query's step k equals an
// instant query at that step, subqueries included (their matrix slides
// over the range instead of being recomputed).
func TestEvalRangeMatchesEval(t *testing.T) {
	st := randomStore(t, 1, 12)
	e := NewEngine(st)
	for _, q := range []string{
		`sum(rate(c[1m]))`,
		`max_over_time(sum(rate(c[1m]))[5m:15s])`,
		`avg_over_time(g[2m:20s] offset 30s)`,
		`max_over_time(rate(sum_over_time(g[1m:10s])[2m:20s])[4m:30s])`,
		`count_values("v", round(g))`,
		`limit_ratio(0.5, g)`,
		`g > 3 or vector(1)`,
	} {
		t.Run(q, func(t *testing.T) {
			p, err := e.Query(q, Options{})
			require.NoError(t, err)
			mat, err := p.EvalRange(context.Background(), 600_000, 900_000, 25_000, nil)
			require.NoError(t, err)
			got := map[string]float64{}
			for _, s := range mat {
				for _, pt := range s.Points {
					got[fmt.Sprintf("%s@%d", s.Labels, pt.T)] = pt.F
				}
			}
			want := map[string]float64{}
			p2, err := e.Query(q, Options{})
			require.NoError(t, err)
			for ts := int64(600_000); ts <= 900_000; ts += 25_000 {
				res, err := p2.Eval(context.Background(), ts)
				require.NoError(t, err)
				for _, s := range res.Vector {
					want[fmt.Sprintf("%s@%d", s.Labels, ts)] = s.F
				}
			}
			require.NotEmpty(t, want)
			require.Len(t, got, len(want))
			for k, w := range want {
				require.Contains(t, got, k)
				assert.True(t, math.Float64bits(w) == math.Float64bits(got[k]) || math.IsNaN(w) && math.IsNaN(got[k]), "%s: %v vs %v", k, got[k], w)
			}
		})
	}
}

// randomStore holds counters c (with resets), gauges g and sparse series
// with stale markers and NaN, sampled at jittered times for 20 minutes.
func randomStore(t *testing.T, seed uint64, pods int) *store.Store {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, seed))
	st := store.New(store.Config{Retention: time.Hour, Freshness: -1}, store.Settings{Now: func() time.Time { return time.UnixMilli(1_200_000) }})
	var h uint64
	add := func(lset labels.Labels, f func(i int, prev float64) float64) {
		h++
		ref, err := st.Create(h, lset)
		require.NoError(t, err)
		ts := int64(rnd.IntN(10_000))
		prev := 0.0
		for i := 0; ts < 1_200_000; i++ {
			v := f(i, prev)
			require.NoError(t, st.Append(ref, ts, v))
			if !value.IsStaleNaN(v) && !math.IsNaN(v) {
				prev = v
			}
			ts += 5_000 + int64(rnd.IntN(20_000))
		}
	}
	for p := range pods {
		pod := fmt.Sprintf("p%d", p)
		add(labels.FromStrings("__name__", "c", "pod", pod), func(_ int, prev float64) float64 {
			switch rnd.IntN(40) {
			case 0:
				return float64(rnd.IntN(5)) // reset
			case 1:
				return math.Float64frombits(value.StaleNaN)
			}
			return prev + float64(rnd.IntN(20))
		})
		add(labels.FromStrings("__name__", "g", "pod", pod), func(int, float64) float64 {
			if rnd.IntN(50) == 0 {
				return math.NaN()
			}
			return float64(rnd.IntN(10))
		})
	}
	return st
}

// TestSubqueryFusedMatchesPerStep: the one-pass sum(rate) of a subquery's
// steps (rangeNode.sumSteps) is bit-identical to evaluating the child at
// every step, on counters with resets, stale markers, gaps and jitter.
func TestSubqueryFusedMatchesPerStep(t *testing.T) {
	for seed := range uint64(4) {
		st := randomStore(t, seed, 30)
		e := NewEngine(st)
		for _, q := range []string{
			`max_over_time(sum(rate(c[1m]))[5m:15s])`,
			`sum_over_time(sum(increase(c[45s]))[3m:7s] offset 20s)`,
			`last_over_time(sum(delta(g[2m]))[4m:30s])`,
			`min_over_time(sum(rate(c[15s]))[2m:5s])`,
		} {
			fused, err := e.Query(q, Options{})
			require.NoError(t, err)
			perStep, err := e.Query(q, Options{})
			require.NoError(t, err)
			require.NotNil(t, findSubqueries(fused)[0].fused, "%s takes the one-pass path", q)
			findSubqueries(perStep)[0].fused = nil
			nonEmpty := 0
			for ts := int64(300_000); ts <= 1_200_000; ts += 9_001 {
				a, err := fused.Eval(context.Background(), ts)
				require.NoError(t, err)
				b, err := perStep.Eval(context.Background(), ts)
				require.NoError(t, err)
				require.Len(t, a.Vector, len(b.Vector), "%s at %d", q, ts)
				for i := range a.Vector {
					require.Equal(t, math.Float64bits(b.Vector[i].F), math.Float64bits(a.Vector[i].F), "%s at %d: %v vs %v", q, ts, a.Vector[i].F, b.Vector[i].F)
					nonEmpty++
				}
			}
			require.NotZero(t, nonEmpty, q)
			// And as range queries, where the matrix slides.
			ma, err := fused.EvalRange(context.Background(), 300_000, 1_200_000, 13_000, nil)
			require.NoError(t, err)
			mb, err := perStep.EvalRange(context.Background(), 300_000, 1_200_000, 13_000, nil)
			require.NoError(t, err)
			require.Len(t, ma, len(mb), q)
			for i := range ma {
				require.Equal(t, mb[i].Labels, ma[i].Labels, q)
				require.Len(t, ma[i].Points, len(mb[i].Points), q)
				for j, pt := range ma[i].Points {
					require.Equal(t, mb[i].Points[j].T, pt.T, q)
					require.Equal(t, math.Float64bits(mb[i].Points[j].F), math.Float64bits(pt.F), q)
				}
			}
		}
	}
}

// TestSubqueryBudget: a subquery's steps and points count against the
// sample budget, and a range:resolution ratio beyond the budget fails
// before any step is evaluated.
func TestSubqueryBudget(t *testing.T) {
	st := randomStore(t, 1, 20)
	e := NewEngine(st)
	p, err := e.Query(`max_over_time(g[1000d:1ms])`, Options{MaxSamples: 1_000_000})
	require.NoError(t, err)
	start := time.Now()
	_, err = p.Eval(context.Background(), 1_000_000)
	require.ErrorIs(t, err, ErrBudgetExceeded)
	assert.Less(t, time.Since(start), 5*time.Second, "refused up front, not after evaluating")

	// 20 pods × 300 steps of g: 6,000 points plus the reads.
	p, err = e.Query(`max_over_time(g[5m:1s])`, Options{MaxSamples: 5_000})
	require.NoError(t, err)
	_, err = p.Eval(context.Background(), 1_000_000)
	require.ErrorIs(t, err, ErrBudgetExceeded)
	p, err = e.Query(`max_over_time(g[5m:1s])`, Options{MaxSamples: 100_000})
	require.NoError(t, err)
	res, err := p.Eval(context.Background(), 1_000_000)
	require.NoError(t, err)
	assert.Len(t, res.Vector, 20)

	// The points held at once have their own bound (the HTTP API sets it
	// to its answer budget), and what is held is given back: after many
	// evaluations, and after a failed one, the count is what one window
	// holds.
	p, err = e.Query(`max_over_time(g[5m:1s]) + max_over_time(g[1m:1s])`, Options{MaxSubqueryPoints: 5_000})
	require.NoError(t, err)
	_, err = p.Eval(context.Background(), 1_000_000)
	require.ErrorIs(t, err, ErrBudgetExceeded)
	p, err = e.Query(`max_over_time(g[5m:1s]) + max_over_time(g[1m:1s])`, Options{MaxSubqueryPoints: 7_200})
	require.NoError(t, err)
	held := findSubqueries(p)[0].held
	for ts := int64(600_000); ts < 1_000_000; ts += 7_000 {
		_, err := p.Eval(context.Background(), ts)
		require.NoError(t, err)
		assert.LessOrEqual(t, held.n, int64(7_200))
	}
	_, err = p.EvalRange(context.Background(), 600_000, 1_000_000, 10_000, nil)
	require.NoError(t, err)
	// Once the query ends, the 6,000-point matrix (over
	// subqueryRetainPoints) is released; the 1,200-point one is kept for
	// the next query.
	assert.Equal(t, int64(20*60), held.n)
	subs := findSubqueries(p)
	assert.Nil(t, subs[0].series)
	assert.NotEmpty(t, subs[1].series)
}

// TestSubqueryWarmAllocsMovingTime: a subquery trigger evaluated at
// advancing times (as KEDA polls it) allocates nothing once warm, and
// neither does @ or a step-invariant part.
func TestSubqueryWarmAllocsMovingTime(t *testing.T) {
	st := randomStore(t, 2, 50)
	e := NewEngine(st)
	for _, q := range []string{
		`max_over_time(sum(rate(c[1m]))[5m:15s])`,
		`avg_over_time(sum by (pod) (g)[2m:30s])`,
		`max_over_time(max_over_time(g[1m:10s])[3m:1m])`,
		`sum(g @ 600) + sum(rate(c[1m] @ end()))`,
		`max_over_time(sum(g @ 600)[2m:20s])`,
	} {
		t.Run(q, func(t *testing.T) {
			p, err := e.Query(q, Options{})
			require.NoError(t, err)
			ts := int64(600_000)
			for range 40 { // warm: every buffer reaches its size
				_, err := p.Eval(context.Background(), ts)
				require.NoError(t, err)
				ts += 15_000
				if ts > 1_100_000 {
					ts = 600_000
				}
			}
			allocs := testing.AllocsPerRun(30, func() {
				res, err := p.Eval(context.Background(), ts)
				if err != nil || len(res.Vector) == 0 {
					t.Fatalf("eval: %v, %v", err, res.Vector)
				}
				ts += 15_000
				if ts > 1_100_000 {
					ts = 600_000
				}
			})
			assert.Zero(t, allocs)
		})
	}
}

// TestStepInvariantEvaluatedOnce: in a range query an @ selector (a
// step-invariant part) is read once, not at every step, so the budget is
// charged once.
func TestStepInvariantEvaluatedOnce(t *testing.T) {
	st := randomStore(t, 3, 10)
	e := NewEngine(st)
	p, err := e.Query(`sum(rate(c[5m] @ 900))`, Options{})
	require.NoError(t, err)
	mat, err := p.EvalRange(context.Background(), 600_000, 1_100_000, 10_000, nil)
	require.NoError(t, err)
	require.Len(t, mat, 1)
	require.Len(t, mat[0].Points, 51)
	for _, pt := range mat[0].Points {
		assert.Equal(t, math.Float64bits(mat[0].Points[0].F), math.Float64bits(pt.F))
	}
	// Every step after the first reuses the result: no samples read.
	p.beginQuery(600_000, 1_100_000, 10_000)
	_, _, err = p.evalRaw(context.Background(), 600_000)
	require.NoError(t, err)
	first := p.ev.samples
	_, _, err = p.evalRaw(context.Background(), 610_000)
	require.NoError(t, err)
	assert.Positive(t, first)
	assert.Zero(t, p.ev.samples)
}

// TestNewAggregations checks count_values, limitk and limit_ratio on
// hand-computed cases (the upstream corpus and the differential test cover
// them further).
func TestNewAggregations(t *testing.T) {
	st := storeWith(t, map[string][]point{
		`x{pod="a",job="j1"}`: {{10, 1}},
		`x{pod="b",job="j1"}`: {{10, 2}},
		`x{pod="c",job="j2"}`: {{10, 1}},
		`x{pod="d",job="j2"}`: {{10, 0.5}},
	})
	for _, tc := range []struct {
		q    string
		want map[string]float64
		err  string
	}{
		{`count_values("v", x)`, map[string]float64{`{v="1"}`: 2, `{v="2"}`: 1, `{v="0.5"}`: 1}, ""},
		{`count_values by (job) ("v", x)`, map[string]float64{`{job="j1", v="1"}`: 1, `{job="j1", v="2"}`: 1, `{job="j2", v="1"}`: 1, `{job="j2", v="0.5"}`: 1}, ""},
		{`count_values without (pod) ("v", x)`, map[string]float64{`{job="j1", v="1"}`: 1, `{job="j1", v="2"}`: 1, `{job="j2", v="1"}`: 1, `{job="j2", v="0.5"}`: 1}, ""},
		{`count_values("", x)`, nil, `invalid label name ""`},
		// limitk keeps the first k of each group in the input's (label)
		// order.
		{`limitk(1, x)`, map[string]float64{`{__name__="x", job="j1", pod="a"}`: 1}, ""},
		{`limitk by (job) (1, x)`, map[string]float64{`{__name__="x", job="j1", pod="a"}`: 1, `{__name__="x", job="j2", pod="c"}`: 1}, ""},
		{`limitk(0, x)`, map[string]float64{}, ""},
		{`limitk(NaN, x)`, nil, "Parameter value is NaN"},
		{`limit_ratio(0, x)`, map[string]float64{}, ""},
		{`limit_ratio(1, x)`, map[string]float64{`{__name__="x", job="j1", pod="a"}`: 1, `{__name__="x", job="j1", pod="b"}`: 2, `{__name__="x", job="j2", pod="c"}`: 1, `{__name__="x", job="j2", pod="d"}`: 0.5}, ""},
		{`limit_ratio(-1, x)`, map[string]float64{`{__name__="x", job="j1", pod="a"}`: 1, `{__name__="x", job="j1", pod="b"}`: 2, `{__name__="x", job="j2", pod="c"}`: 1, `{__name__="x", job="j2", pod="d"}`: 0.5}, ""},
		{`limit_ratio(NaN, x)`, nil, "Ratio value is NaN"},
	} {
		t.Run(tc.q, func(t *testing.T) {
			res, err := evalAt(t, st, tc.q, 10, Options{})
			if tc.err != "" {
				require.EqualError(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, vecMap(res))
		})
	}
	// count_values and histogram_quantiles build label sets: they are
	// charged to the label budget.
	for _, q := range []string{`count_values("v", x)`, `histogram_quantiles(x, "q", 0.5, 0.9)`} {
		p, err := NewEngine(st).Query(q, Options{MaxLabelBytes: 20})
		require.NoError(t, err)
		_, err = p.Eval(context.Background(), 10_000)
		if q == `count_values("v", x)` {
			require.ErrorIs(t, err, ErrBudgetExceeded, q)
		} else {
			require.NoError(t, err, "x has no le label: no group, no label set built")
		}
	}
	// limit_ratio(r) and limit_ratio(r-1) split the series by their label
	// hash: every series is in exactly one of them (upstream's sampler).
	for _, r := range []float64{0.1, 0.3, 0.5, 0.9} {
		a, err := evalAt(t, st, fmt.Sprintf("limit_ratio(%v, x)", r), 10, Options{})
		require.NoError(t, err)
		b, err := evalAt(t, st, fmt.Sprintf("limit_ratio(%v, x)", r-1), 10, Options{})
		require.NoError(t, err)
		ma, mb := vecMap(a), vecMap(b)
		assert.Len(t, ma, 4-len(mb), "r=%v", r)
		for k := range ma {
			assert.NotContains(t, mb, k)
			l, err := NewEngine(st).parser.ParseMetric(k)
			require.NoError(t, err)
			assert.Less(t, float64(l.Hash())/float64(math.MaxUint64), r, "r=%v %s", r, k)
		}
	}
}

// TestSubqueryKeepsTwinsApart: hidden twins (two series with the same
// labels, kept apart by attributes that are not labels) are two series of
// a subquery's matrix and of a range query's result, not a clash.
func TestSubqueryKeepsTwinsApart(t *testing.T) {
	st := store.New(store.Config{Retention: time.Hour, Freshness: -1}, store.Settings{Now: func() time.Time { return time.UnixMilli(0) }})
	lset := labels.FromStrings("__name__", "x", "pod", "a")
	for i, v := range []float64{1, 10} {
		ref, err := st.Create(uint64(i+1), lset)
		require.NoError(t, err)
		for ts := int64(0); ts <= 300_000; ts += 10_000 {
			require.NoError(t, st.Append(ref, ts, v))
		}
	}
	e := NewEngine(st)
	for q, want := range map[string]float64{
		`sum(max_over_time(x[1m:10s]))`:                11,
		`count(count_over_time(x[1m:10s]))`:            2,
		`sum(max_over_time(sum by (pod) (x)[1m:10s]))`: 11,
	} {
		p, err := e.Query(q, Options{})
		require.NoError(t, err)
		res, err := p.Eval(context.Background(), 300_000)
		require.NoError(t, err, q)
		require.Len(t, res.Vector, 1, q)
		assert.InDelta(t, want, res.Vector[0].F, 1e-9, q)
		mat, err := p.EvalRange(context.Background(), 200_000, 300_000, 50_000, nil)
		require.NoError(t, err, q)
		require.Len(t, mat, 1, q)
		for _, pt := range mat[0].Points {
			assert.InDelta(t, want, pt.F, 1e-9, q)
		}
	}
	p, err := e.Query(`x`, Options{})
	require.NoError(t, err)
	mat, err := p.EvalRange(context.Background(), 200_000, 300_000, 50_000, nil)
	require.NoError(t, err)
	require.Len(t, mat, 2, "two series with the same labels")
	assert.Equal(t, mat[0].Labels, mat[1].Labels)
	assert.Len(t, mat[0].Points, 3)
	assert.Len(t, mat[1].Points, 3)
}

// TestHistogramQuantilesLabelBudget: histogram_quantiles charges the label
// sets it builds.
func TestHistogramQuantilesLabelBudget(t *testing.T) {
	st := storeWith(t, map[string][]point{
		`h_bucket{le="1"}`:    {{10, 1}},
		`h_bucket{le="+Inf"}`: {{10, 2}},
	})
	p, err := NewEngine(st).Query(`histogram_quantiles(h_bucket, "q", 0.5, 0.9)`, Options{MaxLabelBytes: 20})
	require.NoError(t, err)
	_, err = p.Eval(context.Background(), 10_000)
	require.ErrorIs(t, err, ErrBudgetExceeded)
	res, err := evalAt(t, st, `histogram_quantiles(h_bucket, "q", 0.5, 0.9)`, 10, Options{})
	require.NoError(t, err)
	assert.Equal(t, map[string]float64{`{q="0.5"}`: 1, `{q="0.9"}`: 1}, vecMap(res))
}
