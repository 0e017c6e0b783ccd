package query

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

func heapLive() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// retainedStore holds n float series of gauge g and counter c (labels pod
// and model) and n/10 native histogram series h, sampled every 15 s for
// 10 minutes; end is the last sample's time.
func retainedStore(tb testing.TB, n int) (st *store.Store, end int64) {
	tb.Helper()
	end = fixtureStart + (fixturePoints-1)*fixtureInterval
	st = store.New(store.Config{Retention: 15 * time.Minute}, store.Settings{Now: func() time.Time { return time.UnixMilli(end) }})
	var h uint64
	for p := range n {
		for _, name := range []string{"g", "c"} {
			h++
			ref, err := st.Create(h, labels.FromStrings("__name__", name, "model", fmt.Sprintf("m%d", p%7), "pod", fmt.Sprintf("pod-%d", p)))
			require.NoError(tb, err)
			for i := range fixturePoints {
				require.NoError(tb, st.Append(ref, fixtureStart+int64(i)*fixtureInterval, float64(i*(p%5+1))))
			}
		}
	}
	for p := range n / 10 {
		h++
		ref, err := st.CreateHistogram(h, labels.FromStrings("__name__", "h", "model", fmt.Sprintf("m%d", p%4), "pod", fmt.Sprintf("pod-%d", p)))
		require.NoError(tb, err)
		for i := range fixturePoints {
			require.NoError(tb, st.AppendHistogram(ref, fixtureStart+int64(i)*fixtureInterval, nativeFixture(p, i)))
		}
	}
	return st, end
}

// retainedShapes are plan shapes whose working set grows with the series
// they touch.
var retainedShapes = []struct{ name, q string }{
	{"selector", `g`},
	{"selector_filter", `g > 2`},
	{"sum_by", `sum by (pod) (g)`},
	{"sum_by_model", `sum by (model) (g)`},
	{"topk", `topk(10, g)`},
	{"rate", `rate(c[1m])`},
	{"sum_rate", `sum by (model) (rate(c[5m]))`},
	{"join", `g / on (pod) rate(c[1m])`},
	{"join_group_left", `g * on (model) group_left sum by (model) (g)`},
	{"label_replace", `label_replace(g, "x", "$1", "pod", "pod-(.*)")`},
	{"subquery", `max_over_time(sum by (model) (g)[5m:1m])`},
	{"subquery_wide", `max_over_time(g[2m:1m])`},
	{"histogram", `histogram_quantile(0.9, rate(h[1m]))`},
	{"histogram_sum", `histogram_quantile(0.9, sum by (model) (rate(h[1m])))`},
	{"classic_hq", `histogram_quantile(0.9, sum by (le, model) (label_replace(g, "le", "$1", "pod", "pod-(.)")))`},
}

// TestRetainedBytesBoundsHeap checks RetainedBytes against the heap that
// evaluated plans keep: at least what is measured and at most 3 times it,
// for every shape, and that Trim gives the memory back while the plan
// keeps answering the same.
func TestRetainedBytesBoundsHeap(t *testing.T) {
	if raceEnabled {
		t.Skip("heap gate: runs without -race in make gates")
	}
	const series, plans = 4000, 4
	st, end := retainedStore(t, series)
	e := NewEngine(st)
	for _, sh := range retainedShapes {
		t.Run(sh.name, func(t *testing.T) {
			// Warm the store's read paths with a plan of the same shape.
			warm, err := e.Query(sh.q, Options{})
			require.NoError(t, err)
			_, err = warm.Eval(context.Background(), end)
			require.NoError(t, err)
			ps := make([]*Plan, plans)
			for i := range ps {
				ps[i], err = e.Query(sh.q, Options{})
				require.NoError(t, err)
				require.Zero(t, ps[i].RetainedBytes(), "a plan keeps nothing before it is evaluated")
			}
			var base int64
			for _, p := range ps {
				base += p.RetainedBytes()
			}
			h0 := heapLive()
			var est int64
			for _, p := range ps {
				for range 2 {
					_, err := p.Eval(context.Background(), end)
					require.NoError(t, err)
				}
				est += p.RetainedBytes()
			}
			h1 := heapLive()
			measured := float64(h1-h0) / plans
			per := float64(est-base) / plans
			t.Logf("%-16s retained heap %9.0f B/plan, estimate %9.0f B/plan, ratio %.2f", sh.name, measured, per, per/measured)
			assert.GreaterOrEqual(t, per, measured, "the estimate must cover the heap")
			assert.LessOrEqual(t, per, 3*measured, "the estimate is too pessimistic")

			// Trim: the memory goes, the answer stays.
			want, err := ps[0].Eval(context.Background(), end)
			require.NoError(t, err)
			wantText := fmt.Sprint(want)
			for _, p := range ps {
				require.NoError(t, p.Trim())
			}
			h2 := heapLive()
			assert.Less(t, float64(h2-h0), 0.2*float64(h1-h0)+64<<10, "Trim releases the working set")
			for _, p := range ps {
				assert.LessOrEqual(t, p.RetainedBytes(), base/plans+1024)
			}
			got, err := ps[0].Eval(context.Background(), end)
			require.NoError(t, err)
			assert.Equal(t, wantText, fmt.Sprint(got), "a trimmed plan answers the same")
			runtime.KeepAlive(ps)
			runtime.KeepAlive(warm)
		})
	}
}

// TestRetainedBytesDoesNotAllocate: the scaler calls RetainedBytes after
// every evaluation, so a warm call must not allocate, and it visits the
// plan's nodes, not its series (the work is the same for 100 and 4,000
// series).
func TestRetainedBytesDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation gate: runs without -race in make gates")
	}
	st, end := retainedStore(t, 400)
	e := NewEngine(st)
	for _, sh := range retainedShapes {
		p, err := e.Query(sh.q, Options{})
		require.NoError(t, err)
		_, err = p.Eval(context.Background(), end)
		require.NoError(t, err)
		p.RetainedBytes()
		allocs := testing.AllocsPerRun(20, func() { p.RetainedBytes() })
		assert.Zero(t, allocs, sh.name)
	}
}

func BenchmarkRetainedBytes(b *testing.B) {
	st, end := retainedStore(b, 4000)
	e := NewEngine(st)
	for _, sh := range retainedShapes {
		p, err := e.Query(sh.q, Options{})
		require.NoError(b, err)
		_, err = p.Eval(context.Background(), end)
		require.NoError(b, err)
		b.Run(sh.name+"/eval", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = p.Eval(context.Background(), end)
			}
		})
		b.Run(sh.name+"/retained", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.RetainedBytes()
			}
		})
	}
}

// TestTrimKeepsAnswers: Trim recompiles the plan's nodes from its text, so
// every construct must survive the round trip: modifiers, escapes,
// regular expressions, scalars, subqueries.
func TestTrimKeepsAnswers(t *testing.T) {
	st, end := retainedStore(t, 50)
	e := NewEngine(st)
	for _, q := range []string{
		`sum(rate(c{pod=~"pod-1.*"}[1m] offset 1m))`,
		`label_replace(g, "x", "a\"b$1", "pod", "pod-(.*)")`,
		`g @ end()`, `g @ 1700000300`,
		`quantile_over_time(0.5, g[5m:30s])`,
		`count_values("v", g)`, `absent(nope{a="b"})`, `vector(1)`,
		`scalar(sum(g)) * 2`, `time()`, `-sum(g) ^ 2`,
		`g and on (pod) topk(3, g)`, `sort_desc(g unless g{model="m1"})`,
		`histogram_quantile(0.5, h)`, `histogram_count(sum(h))`,
		`sum by (model) (g) > bool 10`, `max_over_time(g[5m:1m] offset 30s)`,
	} {
		p, err := e.Query(q, Options{})
		require.NoError(t, err, q)
		want, err := p.Eval(context.Background(), end)
		require.NoError(t, err, q)
		wantText := fmt.Sprint(want)
		require.NoError(t, p.Trim(), q)
		got, err := p.Eval(context.Background(), end)
		require.NoError(t, err, q)
		assert.Equal(t, wantText, fmt.Sprint(got), q)
	}
}
