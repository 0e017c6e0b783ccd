package query

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestEvalSteadyStateAllocs gates the hot trigger shapes on zero
// allocations per evaluation once the plan's caches are warm.
func TestEvalSteadyStateAllocs(t *testing.T) {
	for _, name := range []string{"sum", "sum_rate", "hq_sum_rate", "subq_max_sum_rate", "nhq_sum_rate", "nhq_rate", "nh_count_sum_by"} {
		t.Run("expr="+name, func(t *testing.T) {
			plan, ts := evalFixture(t, name, 200)
			ctx := context.Background()
			var want int
			for range 2 { // warm the caches
				res, err := plan.Eval(ctx, ts)
				require.NoError(t, err)
				want = len(res.Vector)
				require.NotZero(t, want)
			}
			allocs := testing.AllocsPerRun(20, func() {
				res, err := plan.Eval(ctx, ts)
				if err != nil || len(res.Vector) != want {
					t.Fatalf("eval: %v, %v", err, res.Vector)
				}
			})
			assert.Zero(t, allocs, "allocations per evaluation")
		})
	}
}

type point struct {
	t int64 // seconds
	v float64
}

func storeWith(t testing.TB, series map[string][]point) *store.Store {
	t.Helper()
	st := store.New(store.Config{Retention: time.Hour, Freshness: -1}, store.Settings{Now: func() time.Time { return time.UnixMilli(0) }})
	p := NewEngine(st)
	var h uint64
	for desc, pts := range series {
		lset, err := p.parser.ParseMetric(desc)
		require.NoError(t, err)
		h++
		ref, err := st.Create(h, lset)
		require.NoError(t, err)
		for _, pt := range pts {
			require.NoError(t, st.Append(ref, pt.t*1000, pt.v))
		}
	}
	return st
}

func counter(from, step, n int, start, inc float64) []point {
	out := make([]point, n)
	for i := range out {
		out[i] = point{int64(from + i*step), start + float64(i)*inc}
	}
	return out
}

func evalAt(t *testing.T, st *store.Store, q string, sec float64, opts Options) (Result, error) {
	t.Helper()
	p, err := NewEngine(st).Query(q, opts)
	require.NoError(t, err)
	return p.Eval(context.Background(), int64(sec*1000))
}

func vecMap(res Result) map[string]float64 {
	m := map[string]float64{}
	for _, s := range res.Vector {
		m[s.Labels.String()] = s.F
	}
	return m
}

// TestEvalSemantics checks the worked examples of promql-subset.md §4
// (engine-checked against Prometheus v0.316.0) and the common trigger
// shapes.
func TestEvalSemantics(t *testing.T) {
	st := storeWith(t, map[string][]point{
		`steady_total{pod="a"}`:  counter(0, 15, 21, 0, 15),
		`reset_total`:            {{240, 100}, {255, 110}, {270, 5}, {285, 15}, {300, 25}},
		`newpod_total`:           {{270, 3}, {285, 18}, {300, 33}},
		`h_bucket{le="1"}`:       {{300, 4}},
		`h_bucket{le="2"}`:       {{300, 3}},
		`h_bucket{le="4"}`:       {{300, 8}},
		`h_bucket{le="+Inf"}`:    {{300, 10}},
		`idle_bucket{le="1"}`:    counter(0, 15, 21, 5, 0),
		`idle_bucket{le="+Inf"}`: counter(0, 15, 21, 9, 0),
		`q{pod="a"}`:             {{290, 3}},
		`q{pod="b"}`:             {{290, 5}},
		`free{pod="a"}`:          {{290, 0}},
	})
	for _, tc := range []struct {
		q    string
		at   float64
		want map[string]float64
	}{
		{`rate(steady_total[1m])`, 300, map[string]float64{`{pod="a"}`: 1}},
		{`increase(steady_total[1m])`, 300, map[string]float64{`{pod="a"}`: 60}},
		{`rate(reset_total[1m])`, 300, map[string]float64{`{}`: 25.0 * 60 / 45 / 60}},
		{`increase(reset_total[2m])`, 300, map[string]float64{`{}`: 39.375}},
		{`increase(newpod_total[1m])`, 300, map[string]float64{`{}`: 33}},
		{`rate(newpod_total[1m])`, 300, map[string]float64{`{}`: 0.55}},
		{`histogram_quantile(0.5, h_bucket)`, 300, map[string]float64{`{}`: 2.5}},
		{`histogram_quantile(0.3, h_bucket)`, 300, map[string]float64{`{}`: 0.75}},
		{`histogram_quantile(0.9, sum by (le) (rate(idle_bucket[1m])))`, 300, map[string]float64{`{}`: math.NaN()}},
		{`sum(q) / clamp_min(sum(free), 1)`, 300, map[string]float64{`{}`: 8}},
		{`sum(nothing) or vector(0)`, 300, map[string]float64{`{}`: 0}},
		{`sum(q) or vector(0)`, 300, map[string]float64{`{}`: 8}},
		{`count(nothing)`, 300, map[string]float64{}},
		{`sum(q > bool 3)`, 300, map[string]float64{`{}`: 1}},
		{`q > 3`, 300, map[string]float64{`{__name__="q", pod="b"}`: 5}},
		{`absent(nothing{job="x", pod=~"a.*"})`, 300, map[string]float64{`{job="x"}`: 1}},
		{`q offset 1m`, 350, map[string]float64{`{__name__="q", pod="a"}`: 3, `{__name__="q", pod="b"}`: 5}},
		{`q`, 589.999, map[string]float64{`{__name__="q", pod="a"}`: 3, `{__name__="q", pod="b"}`: 5}},
		{`q`, 590, map[string]float64{}},
		{`sum(avg_over_time(q[30s]))`, 300, map[string]float64{`{}`: 8}},
		{`topk(1, q)`, 300, map[string]float64{`{__name__="q", pod="b"}`: 5}},
	} {
		t.Run(tc.q, func(t *testing.T) {
			res, err := evalAt(t, st, tc.q, tc.at, Options{})
			require.NoError(t, err)
			got := vecMap(res)
			require.Len(t, got, len(tc.want), "got %v", got)
			for k, w := range tc.want {
				require.Contains(t, got, k)
				if math.IsNaN(w) {
					assert.True(t, math.IsNaN(got[k]), "want NaN, got %v", got[k])
				} else {
					assert.InDelta(t, w, got[k], 1e-9)
				}
			}
		})
	}
}

func TestStaleMarkerHidesOlderSample(t *testing.T) {
	st := storeWith(t, map[string][]point{`x`: {{10, 1}, {20, math.Float64frombits(value.StaleNaN)}}})
	res, err := evalAt(t, st, `x`, 25, Options{})
	require.NoError(t, err)
	assert.Empty(t, res.Vector, "a stale marker must not fall back to an older sample")
	res, err = evalAt(t, st, `count_over_time(x[1m])`, 25, Options{})
	require.NoError(t, err)
	assert.Equal(t, map[string]float64{`{}`: 1}, vecMap(res), "stale markers are skipped in ranges")
}

func TestLookbackOption(t *testing.T) {
	st := storeWith(t, map[string][]point{`x`: {{100, 1}}})
	res, err := evalAt(t, st, `x`, 129, Options{LookbackDelta: 30 * time.Second})
	require.NoError(t, err)
	assert.Len(t, res.Vector, 1)
	res, err = evalAt(t, st, `x`, 130, Options{LookbackDelta: 30 * time.Second})
	require.NoError(t, err)
	assert.Empty(t, res.Vector)
}

func TestDelayedNameDropping(t *testing.T) {
	st := storeWith(t, map[string][]point{
		`a{pod="p"}`: counter(0, 15, 5, 0, 1),
		`b{pod="p"}`: counter(0, 15, 5, 0, 2),
	})
	res, err := evalAt(t, st, `sum(rate({__name__=~"a|b"}[1m]))`, 60, Options{})
	require.NoError(t, err, "delayed dropping lets the colliding rates be summed")
	require.Len(t, res.Vector, 1)
	_, err = evalAt(t, st, `rate({__name__=~"a|b"}[1m])`, 60, Options{})
	require.EqualError(t, err, "vector cannot contain metrics with the same labelset")
}

func TestVectorMatchingErrors(t *testing.T) {
	st := storeWith(t, map[string][]point{
		`l{pod="a", c="1"}`: {{10, 1}},
		`l{pod="a", c="2"}`: {{10, 1}},
		`r{pod="a", c="1"}`: {{10, 1}},
		`r{pod="a", c="2"}`: {{10, 1}},
	})
	_, err := evalAt(t, st, `l / on(pod) r`, 20, Options{})
	require.ErrorContains(t, err, "found duplicate series for the match group {pod=\"a\"} on the right hand-side of the operation")
	require.ErrorContains(t, err, "many-to-many matching not allowed: matching labels must be unique on one side")
	_, err = evalAt(t, st, `l / on(pod) sum by (pod) (r)`, 20, Options{})
	require.EqualError(t, err, "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")
	res, err := evalAt(t, st, `l / on(pod) group_left sum by (pod) (r)`, 20, Options{})
	require.NoError(t, err)
	assert.Equal(t, map[string]float64{`{c="1", pod="a"}`: 0.5, `{c="2", pod="a"}`: 0.5}, vecMap(res))
}

func TestNumericLabelMatchersAreNormalised(t *testing.T) {
	st := storeWith(t, map[string][]point{
		`b{le="1.0"}`:       {{10, 1}},
		`b{le="+Inf"}`:      {{10, 2}},
		`s{quantile="0.5"}`: {{10, 3}},
	})
	for _, q := range []string{`b{le="1"}`, `b{le="1.0"}`, `b{le="1e0"}`, `b{le="+inf"}`, `s{quantile="5e-1"}`} {
		res, err := evalAt(t, st, q, 20, Options{})
		require.NoError(t, err)
		assert.Len(t, res.Vector, 1, q)
	}
	res, err := evalAt(t, st, `b{le!="1"}`, 20, Options{})
	require.NoError(t, err)
	assert.Len(t, res.Vector, 1)
	res, err = evalAt(t, st, `b{le=~"1"}`, 20, Options{})
	require.NoError(t, err)
	assert.Empty(t, res.Vector, "regex matchers are not rewritten")
}

func TestPlanPicksUpNewSeries(t *testing.T) {
	st := storeWith(t, map[string][]point{`x{pod="a"}`: {{10, 1}}})
	p, err := NewEngine(st).Query(`sum(x)`, Options{})
	require.NoError(t, err)
	res, err := p.Eval(context.Background(), 20_000)
	require.NoError(t, err)
	assert.InDelta(t, 1.0, res.Vector[0].F, 0)
	ref, err := st.Create(999, labels.FromStrings("__name__", "x", "pod", "b"))
	require.NoError(t, err)
	require.NoError(t, st.Append(ref, 15_000, 2))
	res, err = p.Eval(context.Background(), 20_000)
	require.NoError(t, err)
	assert.InDelta(t, 3.0, res.Vector[0].F, 0, "a series created after compile is selected")
}

func TestBadInput(t *testing.T) {
	st := storeWith(t, map[string][]point{`x{pod="a"}`: {{10, 1}}})
	e := NewEngine(st)
	long := "sum(" + strings.Repeat("x + ", 25_000) + "x)"
	for _, tc := range []struct {
		name, q string
		check   func(t *testing.T, err error)
	}{
		{"unparseable", `sum(x`, func(t *testing.T, err error) {
			var pe *ParseError
			require.ErrorAs(t, err, &pe)
		}},
		{"unsupported function", `sum(x) + start_timestamp(x)`, func(t *testing.T, err error) {
			var ue *UnsupportedError
			require.ErrorAs(t, err, &ue)
			assert.Equal(t, "function start_timestamp", ue.Construct)
			assert.Equal(t, 9, int(ue.Pos.Start))
		}},
		{"unsupported experimental function", `info(x)`, func(t *testing.T, err error) {
			var ue *UnsupportedError
			require.ErrorAs(t, err, &ue)
			assert.Equal(t, "function info", ue.Construct)
		}},
		{"experimental function", `double_exponential_smoothing(x[5m], 0.5, 0.5)`, func(t *testing.T, err error) { require.NoError(t, err) }},
		{"experimental aggregation", `limitk(1, x) or limit_ratio(0.5, x)`, func(t *testing.T, err error) { require.NoError(t, err) }},
		{"subquery", `max_over_time(x[5m:1m])`, func(t *testing.T, err error) { require.NoError(t, err) }},
		{"subquery result", `x[5m:1m]`, func(t *testing.T, err error) { require.ErrorIs(t, err, ErrUnsupported) }},
		{"at modifier", `x @ 100`, func(t *testing.T, err error) { require.NoError(t, err) }},
		{"huge subquery resolution", `max_over_time(x[1000d:1ms])`, func(t *testing.T, err error) { require.NoError(t, err) }},
		{"anchored selector", `rate(x[5m] anchored)`, func(t *testing.T, err error) { require.ErrorIs(t, err, ErrUnsupported) }},
		{"sub-millisecond subquery step", `max_over_time(x[5m:0.0001])`, func(t *testing.T, err error) {
			var pe *ParseError
			if !errors.As(err, &pe) {
				require.ErrorIs(t, err, ErrUnsupported)
			}
		}},
		{"string result", `"vllm:x"`, func(t *testing.T, err error) { require.ErrorIs(t, err, ErrUnsupported) }},
		{"matrix result", `x[5m]`, func(t *testing.T, err error) { require.ErrorIs(t, err, ErrUnsupported) }},
		{"100 KB query", long, func(t *testing.T, err error) { require.ErrorIs(t, err, ErrQueryTooLong) }},
		{"deep unary", strings.Repeat("-", 10_000) + "x", func(t *testing.T, err error) { require.ErrorIs(t, err, ErrQueryTooComplex) }},
		{"deep parens", strings.Repeat("(", 3000) + "x" + strings.Repeat(")", 3000), func(t *testing.T, err error) {
			require.ErrorIs(t, err, ErrQueryTooComplex)
		}},
		{"long or chain", strings.Repeat("x or ", 2000) + "x", func(t *testing.T, err error) { require.ErrorIs(t, err, ErrQueryTooComplex) }},
		{"largest accepted chain", strings.Repeat("x+", 1000) + "x", func(t *testing.T, err error) { require.NoError(t, err) }},
		{"strings are one token", `label_replace(x, "a", "` + strings.Repeat("(", 5000) + `", "b", "c")`, func(t *testing.T, err error) {
			require.NoError(t, err)
		}},
		{"pathological regex", `x{pod=~"(a*)*b(a|aa)*(a+)+$` + strings.Repeat("a?", 500) + `"}`, func(_ *testing.T, _ error) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := e.Query(tc.q, Options{MaxSamples: 1_000_000})
			tc.check(t, err)
			if err == nil {
				_, err = p.Eval(context.Background(), 20_000)
				if tc.name == "huge subquery resolution" {
					// 86.4e9 steps: refused before any is evaluated.
					require.ErrorIs(t, err, ErrBudgetExceeded)
					return
				}
				require.NoError(t, err)
			}
		})
	}
}

func TestEvalHonoursContextAndBudget(t *testing.T) {
	series := map[string][]point{}
	for _, pod := range []string{"a", "b", "c", "d"} {
		series[`x{pod="`+pod+`"}`] = counter(0, 1, 100, 0, 1)
	}
	st := storeWith(t, series)
	p, err := NewEngine(st).Query(`sum(rate(x[5m]))`, Options{MaxSamples: 100})
	require.NoError(t, err)
	_, err = p.Eval(context.Background(), 100_000)
	require.ErrorIs(t, err, ErrBudgetExceeded)

	p, err = NewEngine(st).Query(`sum(x)`, Options{MaxSeries: 3})
	require.NoError(t, err)
	_, err = p.Eval(context.Background(), 100_000)
	require.ErrorIs(t, err, ErrBudgetExceeded)

	p, err = NewEngine(st).Query(`sum(rate(x[5m]))`, Options{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = p.Eval(ctx, 100_000)
	require.ErrorIs(t, err, context.Canceled)

	// A deadline in the past counts even before its timer has fired.
	_, err = p.Eval(lateTimerCtx{context.Background()}, 100_000)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestPlanMetadata(t *testing.T) {
	e := NewEngine(storeWith(t, nil))
	for _, tc := range []struct {
		q      string
		names  []string
		all    bool
		window time.Duration
	}{
		{`sum(x)`, []string{"x"}, false, 5 * time.Minute},
		{`rate(x[10m] offset 1m) / y`, []string{"x", "y"}, false, 11 * time.Minute},
		{`{"vllm:a", pod="p"} + {__name__=~"b.*"}`, []string{"vllm:a"}, true, 5 * time.Minute},
		{`vector(1)`, nil, false, 0},
		// A subquery reads its range and offset back, plus its inside's.
		{`max_over_time(rate(x[1m])[5m:30s] offset 1m)`, []string{"x"}, false, 7 * time.Minute},
		{`max_over_time(max_over_time(y[2m:10s])[5m:1m])`, []string{"y"}, false, 12 * time.Minute},
	} {
		t.Run(tc.q, func(t *testing.T) {
			p, err := e.Query(tc.q, Options{})
			require.NoError(t, err)
			names, all := p.MetricNames()
			assert.Equal(t, tc.names, names)
			assert.Equal(t, tc.all, all)
			assert.Equal(t, tc.window, p.Window())
			assert.Empty(t, p.Warnings(), "the test store keeps an hour")
		})
	}
	p, err := e.Query(`rate(x[50m] offset 20m)`, Options{})
	require.NoError(t, err)
	require.Len(t, p.Warnings(), 1)
	assert.Contains(t, p.Warnings()[0], "reads 1h10m0s back")
}

// TestPlanIgnoresUnrelatedSeries: a series of another metric moves the
// store's generation; the plan selects again, finds the same series and
// keeps its sorted match (no rebuild); a matching series does rebuild it.
func TestPlanIgnoresUnrelatedSeries(t *testing.T) {
	st := storeWith(t, map[string][]point{`x{pod="a"}`: {{10, 1}}, `x{pod="b"}`: {{10, 2}}})
	p, err := NewEngine(st).Query(`sum(x)`, Options{})
	require.NoError(t, err)
	set := p.root.(*aggNode).child.(*selectorNode).set
	ctx := context.Background()
	eval := func() float64 {
		res, err := p.Eval(ctx, 20_000)
		require.NoError(t, err)
		return res.Vector[0].F
	}
	assert.InDelta(t, 3.0, eval(), 0)
	assert.Equal(t, 1, set.rebuilds)
	_, err = st.Create(1000, labels.FromStrings("__name__", "y"))
	require.NoError(t, err)
	assert.InDelta(t, 3.0, eval(), 0)
	assert.Equal(t, 1, set.rebuilds, "an unrelated series must not rebuild the match")
	ref, err := st.Create(1001, labels.FromStrings("__name__", "x", "pod", "c"))
	require.NoError(t, err)
	require.NoError(t, st.Append(ref, 15_000, 4))
	assert.InDelta(t, 7.0, eval(), 0)
	assert.Equal(t, 2, set.rebuilds)
}

// lateTimerCtx has a passed deadline whose timer has not fired: Err is nil.
type lateTimerCtx struct{ context.Context }

func (lateTimerCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

func TestDropStale(t *testing.T) {
	stale := math.Float64frombits(value.StaleNaN)
	for _, tc := range []struct {
		name string
		in   []float64
		want []float64
	}{
		{"none", []float64{1, 2, 3}, []float64{1, 2, 3}},
		{"first", []float64{stale, 2, 3}, []float64{2, 3}},
		{"middle", []float64{1, stale, 3, stale}, []float64{1, 3}},
		{"all", []float64{stale, stale}, []float64{}},
		{"real NaN stays", []float64{math.NaN(), stale}, []float64{math.NaN()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]store.Sample, len(tc.in))
			for i, v := range tc.in {
				buf[i] = store.Sample{T: int64(i), V: v}
			}
			got := dropStale(buf)
			require.Len(t, got, len(tc.want))
			for i, w := range tc.want {
				if math.IsNaN(w) {
					assert.True(t, math.IsNaN(got[i].V) && !value.IsStaleNaN(got[i].V))
				} else {
					assert.InDelta(t, w, got[i].V, 0)
				}
			}
		})
	}
}

// TestPlanSelectsIncrementally: after series are only created, a plan
// checks just the new ones (the store's creation log) and keeps its match
// sorted by labels; after a deletion, or more creations than the log
// holds, it selects again.
func TestPlanSelectsIncrementally(t *testing.T) {
	var now atomic.Int64
	now.Store(100_000)
	st := store.New(store.Config{Retention: time.Minute, SeriesTTL: time.Minute, Freshness: -1},
		store.Settings{Now: func() time.Time { return time.UnixMilli(now.Load()) }})
	var h uint64
	add := func(v float64, kv ...string) store.SeriesRef {
		h++
		ref, err := st.Create(h, labels.FromStrings(kv...))
		require.NoError(t, err)
		require.NoError(t, st.Append(ref, now.Load(), v))
		return ref
	}
	pods := map[string]store.SeriesRef{}
	pods["b"] = add(1, "__name__", "x", "pod", "b")
	pods["d"] = add(2, "__name__", "x", "pod", "d")
	p, err := NewEngine(st).Query(`sum(x)`, Options{})
	require.NoError(t, err)
	set := p.root.(*aggNode).child.(*selectorNode).set
	eval := func() float64 {
		res, err := p.Eval(context.Background(), now.Load())
		require.NoError(t, err)
		require.Len(t, res.Vector, 1)
		return res.Vector[0].F
	}
	sorted := func() {
		require.Len(t, set.handles, len(set.refs))
		assert.True(t, slices.IsSortedFunc(set.lsets, labels.Compare), "match sorted by labels: %v", set.lsets)
		for i, r := range set.refs {
			assert.Equal(t, st.Labels(r), set.lsets[i])
		}
	}
	assert.InDelta(t, 3.0, eval(), 0)
	assert.Zero(t, set.incremental)

	add(10, "__name__", "y")
	pods["c"] = add(4, "__name__", "x", "pod", "c")
	pods["a"] = add(8, "__name__", "x", "pod", "a")
	assert.InDelta(t, 15.0, eval(), 0)
	assert.Equal(t, 1, set.incremental, "new series only: checked from the creation log")
	assert.Equal(t, 3, set.rebuilds, "two matching series added")
	sorted()

	// A deletion: select again; the deleted series vanish.
	now.Add(2 * time.Minute.Milliseconds())
	for _, pod := range []string{"a", "c", "d"} {
		require.NoError(t, st.Append(pods[pod], now.Load(), 1))
	}
	require.Positive(t, st.Sweep()) // x{pod="b"} and y are silent
	assert.InDelta(t, 3.0, eval(), 0)
	assert.Equal(t, 1, set.incremental, "a deletion forces a full select")
	sorted()

	// More creations than the log holds: select again, still right.
	for i := range 1100 {
		add(1, "__name__", "churn", "i", fmt.Sprint(i))
	}
	add(5, "__name__", "x", "pod", "e")
	assert.InDelta(t, 8.0, eval(), 0)
	assert.Equal(t, 1, set.incremental, "an overflowed log forces a full select")
	sorted()
	add(6, "__name__", "x", "pod", "0")
	assert.InDelta(t, 14.0, eval(), 0)
	assert.Equal(t, 2, set.incremental)
	sorted()
}

// TestGroupedSumMatchesGenericPath: sum by/without over a selector or a
// range function takes groupedSum's fast path; the same sum over "* 1"
// (not streamable) takes aggNode.add's. Both must give the same elements,
// values and order, including groups whose first series has no value.
func TestGroupedSumMatchesGenericPath(t *testing.T) {
	series := map[string][]point{}
	for i := range 12 {
		pod := fmt.Sprintf("p%d", i%4)
		le := fmt.Sprint([]string{"0.1", "1", "+Inf"}[i%3])
		n := 30
		if i%5 == 0 {
			n = 1 // too few samples for rate: absent from its group
		}
		series[fmt.Sprintf(`h_bucket{pod=%q,le=%q,i="%d"}`, pod, le, i)] = counter(0, 15, n, float64(i), float64(i%3+1))
	}
	st := storeWith(t, series)
	for _, q := range []struct{ fast, generic string }{
		{`sum by (pod) (rate(h_bucket[1m]))`, `sum by (pod) (rate(h_bucket[1m]) * 1)`},
		{`sum by (le) (rate(h_bucket[1m]))`, `sum by (le) (rate(h_bucket[1m]) * 1)`},
		{`sum without (i) (rate(h_bucket[1m]))`, `sum without (i) (rate(h_bucket[1m]) * 1)`},
		{`sum without (i, pod) (increase(h_bucket[2m]))`, `sum without (i, pod) (increase(h_bucket[2m]) * 1)`},
		{`sum by (pod) (h_bucket)`, `sum by (pod) (h_bucket * 1)`},
		{`sum by (le, pod) (h_bucket)`, `sum by (le, pod) (h_bucket * 1)`},
	} {
		t.Run(q.fast, func(t *testing.T) {
			fast, err := NewEngine(st).Query(q.fast, Options{})
			require.NoError(t, err)
			generic, err := NewEngine(st).Query(q.generic, Options{})
			require.NoError(t, err)
			for _, sec := range []float64{60, 200, 435} {
				for range 2 { // cold, then warm caches
					want, err := generic.Eval(context.Background(), int64(sec*1000))
					require.NoError(t, err)
					got, err := fast.Eval(context.Background(), int64(sec*1000))
					require.NoError(t, err)
					require.NotEmpty(t, want.Vector)
					require.Len(t, got.Vector, len(want.Vector))
					for i := range want.Vector {
						assert.Equal(t, want.Vector[i].Labels.String(), got.Vector[i].Labels.String(), "element %d", i)
						assert.Equal(t, math.Float64bits(want.Vector[i].F), math.Float64bits(got.Vector[i].F), "element %d", i)
					}
				}
			}
		})
	}
}
