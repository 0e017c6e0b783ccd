package query

import (
	"context"
	"math"
	"math/rand"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestRateWindowMatchesSlices checks the fused rate/increase/delta kernel
// (one pass over the store's window, memoized extrapolation) bit for bit
// against extrapolatedRate over the copied, stale-free samples, on series
// that share timestamps (so the memo hits) but not values: young counters
// whose zero point moves the start, several resets, stale markers, NaN
// and infinite values, negative starts and irregular spacing.
func TestRateWindowMatchesSlices(t *testing.T) {
	const t0 = int64(1_700_000_000_000)
	rnd := rand.New(rand.NewSource(5))
	valueGens := []struct {
		name string
		gen  func(i int) float64
	}{
		{"old counter", func(i int) float64 { return 1e6 + float64(i*3) }},
		{"young counter", func(i int) float64 { return float64(i * 7) }},
		{"starts at zero", func(i int) float64 { return float64(i) }},
		{"one reset", func(i int) float64 { return float64(i%9) * 2 }},
		{"many resets", func(i int) float64 { return float64(i % 3) }},
		{"negative start", func(i int) float64 { return float64(i - 3) }},
		{"flat", func(int) float64 { return 4 }},
		// Doubles: over two samples first == increase, the zero point
		// lands exactly one interval back and can still move the start.
		{"doubling", func(i int) float64 { return math.Pow(2, float64(i)) }},
		{"random", func(int) float64 { return rnd.Float64() * 100 }},
		{"random ints", func(int) float64 { return float64(rnd.Intn(5)) }},
		{"nan", func(i int) float64 {
			if i%4 == 2 {
				return math.NaN()
			}
			return float64(i)
		}},
		{"inf", func(i int) float64 {
			if i == 5 {
				return math.Inf(1)
			}
			return float64(i)
		}},
		{"stale markers", func(i int) float64 {
			if i%5 == 3 {
				return math.Float64frombits(value.StaleNaN)
			}
			return float64(i * 2)
		}},
	}
	timeGens := []struct {
		name  string
		times func(n int) []int64
	}{
		{"regular", func(n int) []int64 { return regularTimes(t0, 15_000, n) }},
		// Pairs 10 s apart, 30 s between pairs: a 20.5 s range holds two
		// samples and starts 10.5 s before the first, within the 1.1 ×
		// threshold but past the sampled interval.
		{"pairs", func(n int) []int64 {
			out := make([]int64, n)
			for i := range out {
				out[i] = t0 + int64(i/2)*40_000 + int64(i%2)*10_000
			}
			return out
		}},
		{"irregular", func(n int) []int64 {
			out := make([]int64, n)
			for i := range out {
				out[i] = t0 + int64(i)*15_000 + int64(rnd.Intn(9_000))
			}
			return out
		}},
	}
	for _, tg := range timeGens {
		t.Run("times="+tg.name, func(t *testing.T) {
			times := tg.times(40)
			end := times[len(times)-1]
			st := store.New(store.Config{Retention: time.Hour, Freshness: -1}, store.Settings{Now: func() time.Time { return time.UnixMilli(end) }})
			var handles []store.Handle
			var refs []store.SeriesRef
			for k, vg := range valueGens {
				ref, err := st.Create(uint64(k+1), labels.FromStrings("__name__", "m", "k", vg.name))
				require.NoError(t, err)
				for i, ts := range times {
					require.NoError(t, st.Append(ref, ts, vg.gen(i)))
				}
				refs = append(refs, ref)
				handles = append(handles, st.Handle(ref))
			}
			rd := st.Reader()
			for _, rng := range []int64{20_000, 20_500, 31_000, 60_000, 61_000, 300_000, 3_600_000} {
				for _, evalT := range []int64{end, end - 7_000, end + 20_000, times[3]} {
					for _, kind := range []struct {
						name              string
						isCounter, isRate bool
					}{{"rate", true, true}, {"increase", true, false}, {"delta", false, false}} {
						var memo, memo2 rateMemo // shared across series, as in rangeNode
						var win store.Window
						for i, h := range handles {
							rangeStart := evalT - rng
							want, wantOK := extrapolatedRate(dropStale(st.Range(nil, refs[i], rangeStart, evalT)), rangeStart, evalT, rng, kind.isCounter, kind.isRate)
							rd.Window(&win, h, rangeStart, evalT)
							got, gotOK := rateWindow(&win, &memo, rangeStart, evalT, rng, kind.isCounter, kind.isRate)
							require.True(t, win.Valid())
							if gotOK != wantOK || math.Float64bits(got) != math.Float64bits(want) && !(math.IsNaN(got) && math.IsNaN(want)) {
								t.Fatalf("rateWindow: %s over %s, range %d at %d: got %v %v (%x), want %v %v (%x)",
									kind.name, valueGens[i].name, rng, evalT-t0, got, gotOK, math.Float64bits(got), want, wantOK, math.Float64bits(want))
							}
							got, gotOK, total := rateSeries(rd, h, &win, &memo2, rangeStart, evalT, rng, kind.isCounter, kind.isRate)
							if gotOK != wantOK || math.Float64bits(got) != math.Float64bits(want) && !(math.IsNaN(got) && math.IsNaN(want)) {
								t.Fatalf("rateSeries: %s over %s, range %d at %d: got %v %v (%x), want %v %v (%x)",
									kind.name, valueGens[i].name, rng, evalT-t0, got, gotOK, math.Float64bits(got), want, wantOK, math.Float64bits(want))
							}
							if n := len(st.Range(nil, refs[i], rangeStart, evalT)); total != n {
								t.Fatalf("rateSeries: %s over %s: %d samples charged, want %d", kind.name, valueGens[i].name, total, n)
							}
						}
					}
				}
			}
		})
	}
}

func regularTimes(from, step int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = from + int64(i)*step
	}
	return out
}

// TestRateMemoAcrossEvalTimes evaluates one plan at times a few seconds
// apart, where each series' range holds the same two samples but the
// extrapolation differs, and checks each result against a plan that was
// only evaluated at that time: the rate memo must not carry a factor
// across range bounds (rateMemo.forRange).
func TestRateMemoAcrossEvalTimes(t *testing.T) {
	const t0 = int64(1_700_000_000_000)
	st := store.New(store.Config{Retention: time.Hour, Freshness: -1}, store.Settings{Now: func() time.Time { return time.UnixMilli(t0 + 60_000) }})
	for i, le := range []string{"0.1", "1", "+Inf"} {
		ref, err := st.Create(uint64(i+1), labels.FromStrings("__name__", "m_bucket", "le", le))
		require.NoError(t, err)
		require.NoError(t, st.Append(ref, t0, float64(10*(i+1))))
		require.NoError(t, st.Append(ref, t0+10_000, float64(20*(i+1))))
	}
	ctx := context.Background()
	for _, expr := range []string{`sum(rate(m_bucket[1m]))`, `sum by (le) (increase(m_bucket[1m]))`} {
		t.Run("expr="+expr, func(t *testing.T) {
			plan, err := NewEngine(st).Query(expr, Options{})
			require.NoError(t, err)
			for _, dt := range []int64{15_000, 20_000, 25_000, 20_000, 40_000} {
				got, err := plan.Eval(ctx, t0+dt)
				require.NoError(t, err)
				fresh, err := NewEngine(st).Query(expr, Options{})
				require.NoError(t, err)
				want, err := fresh.Eval(ctx, t0+dt)
				require.NoError(t, err)
				require.Len(t, got.Vector, len(want.Vector))
				require.NotEmpty(t, want.Vector)
				for j := range want.Vector {
					if math.Float64bits(got.Vector[j].F) != math.Float64bits(want.Vector[j].F) {
						t.Fatalf("at t0+%dms, element %d: reused plan %v, fresh plan %v", dt, j, got.Vector[j].F, want.Vector[j].F)
					}
				}
			}
		})
	}
}
