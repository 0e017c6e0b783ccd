package compat

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// benchExprs are the T6 queries of performance.md, each over the data it
// names: 1k gauge series, 1k counter series, 100 histograms × 11 buckets.
var benchExprs = []struct {
	name string
	q    string
	// minSpeedup overrides the gate's minSpeedup for this query.
	minSpeedup float64
}{
	{"sum", `sum(bench_gauge)`, 0},
	{"sum_rate", `sum(rate(bench_requests_total[1m]))`, 0},
	{"hq_sum_rate", `histogram_quantile(0.9, sum by (le) (rate(bench_latency_seconds_bucket[1m])))`, 0},
	// A spike-smoothing trigger (issue #16): sum(rate) at 20 subquery
	// steps. Prometheus evaluates the inside as one range query over each
	// series once, and so do we (rangeNode.sumSteps), so the ratio is that
	// of the kernels, not of per-query overheads: a lower gate.
	{"subq_max_sum_rate", `max_over_time(sum(rate(bench_requests_total[1m]))[5m:15s])`, 5},
	// The p90 latency of a fleet's native histograms (OTLP exponential
	// histograms, issue #16): 1k series of 30 buckets at schema 3.
	// Both engines do the same histogram arithmetic per sample
	// (model/histogram: Sub, Add, Mul, Compact), which dominates, so the
	// ratio is lower than for floats: a lower gate.
	{"nhq_sum_rate", `histogram_quantile(0.9, sum(rate(bench_latency_native_seconds[1m])))`, 3},
}

// nativeBenchHistograms are pod p's native histograms at the 21 sample
// times: integer histograms, as Prometheus's OTLP receiver appends
// exponential histograms, schema 3 (an OpenTelemetry SDK at scale 3),
// 30 buckets in two spans, counts growing at random rates.
func nativeBenchHistograms(rnd *rand.Rand, samples int) []*histogram.Histogram {
	counts := make([]int64, 30)
	var zero, count uint64
	sum := 0.0
	out := make([]*histogram.Histogram, samples)
	for i := range out {
		for range rnd.Intn(60) {
			b := min(int(rnd.ExpFloat64()*8), len(counts)-1)
			counts[b]++
			count++
			sum += 0.01 * float64(b+1)
		}
		if rnd.Intn(10) == 0 {
			zero++
			count++
		}
		deltas := make([]int64, len(counts))
		prev := int64(0)
		for k, c := range counts {
			deltas[k], prev = c-prev, c
		}
		out[i] = &histogram.Histogram{
			Schema: 3, ZeroThreshold: 1e-128, ZeroCount: zero, Count: count, Sum: sum,
			PositiveSpans:   []histogram.Span{{Offset: -60, Length: 15}, {Offset: 3, Length: 15}},
			PositiveBuckets: deltas,
		}
	}
	return out
}

// benchDataset is the T6 data: 21 samples at 15 s per series (a 5-minute
// window), counters and cumulative buckets growing at random rates.
func benchDataset() *dataset {
	rnd := rand.New(rand.NewSource(1))
	const samples, step = 21, int64(15_000)
	d := &dataset{start: baseTime, end: baseTime + (samples-1)*step}
	grid := func() []int64 {
		out := make([]int64, samples)
		for i := range out {
			out[i] = baseTime + int64(i)*step
		}
		return out
	}
	for p := range 1000 {
		pod := fmt.Sprintf("pod-%04d", p)
		g := make([]float64, samples)
		c := make([]float64, samples)
		v := float64(rnd.Intn(100))
		for i := range samples {
			g[i] = float64(rnd.Intn(50))
			v += float64(rnd.Intn(30))
			c[i] = v
		}
		d.add("bench_gauge", []string{"pod", pod, "namespace", "bench"}, grid(), g)
		d.add("bench_requests_total", []string{"pod", pod, "namespace", "bench"}, grid(), c)
	}
	bounds := []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf"}
	for p := range 100 {
		pod := fmt.Sprintf("pod-%04d", p)
		cum := make([][]float64, len(bounds))
		counts := make([]float64, len(bounds))
		for range samples {
			for range rnd.Intn(40) {
				for j := rnd.Intn(len(bounds)); j < len(bounds); j++ {
					counts[j]++
				}
			}
			for j := range bounds {
				cum[j] = append(cum[j], counts[j])
			}
		}
		for j, le := range bounds {
			d.add("bench_latency_seconds_bucket", []string{"pod", pod, "namespace", "bench", "le", le}, grid(), cum[j])
		}
	}
	for p := range 1000 {
		b := labels.NewScratchBuilder(3)
		b.Add(labels.MetricName, "bench_latency_native_seconds")
		b.Add("namespace", "bench")
		b.Add("pod", fmt.Sprintf("pod-%04d", p))
		s := series{lset: b.Labels()}
		for i, h := range nativeBenchHistograms(rnd, samples) {
			s.samples = append(s.samples, sample{T: grid()[i], H: h.ToFloat(nil), ih: h})
		}
		d.series = append(d.series, s)
	}
	slices.SortFunc(d.series, func(a, b series) int { return labels.Compare(a.lset, b.lset) })
	return d
}

// benchEnv holds both engines loaded with the benchmark data. Prometheus
// reads it from two storages: qb, the list series the differential test
// uses (storage.MockQueryable; the CI gate's baseline), and head, an
// in-memory TSDB head (tsdb.NewHead, no WAL), the storage performance.md's
// anchor figures were measured on. The head decodes XOR chunks, so it is
// the slower, more realistic baseline.
type benchEnv struct {
	ours *ours
	prom *promql.Engine
	qb   storage.Queryable
	head storage.Queryable
	t    int64
}

// newPromHead loads d into an in-memory TSDB head that tb closes.
func newPromHead(tb testing.TB, d *dataset) storage.Queryable {
	tb.Helper()
	opts := tsdb.DefaultHeadOptions()
	opts.ChunkDirRoot = tb.TempDir()
	h, err := tsdb.NewHead(nil, nil, nil, nil, opts, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = h.Close() })
	app := h.Appender(context.Background())
	for _, s := range d.series {
		var ref storage.SeriesRef
		for _, sm := range s.samples {
			switch {
			case sm.ih != nil:
				ref, err = app.AppendHistogram(ref, s.lset, sm.T, sm.ih, nil)
			case sm.H != nil:
				ref, err = app.AppendHistogram(ref, s.lset, sm.T, nil, sm.H)
			default:
				ref, err = app.Append(ref, s.lset, sm.T, sm.F)
			}
			if err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		tb.Fatal(err)
	}
	return storage.QueryableFunc(func(mint, maxt int64) (storage.Querier, error) {
		return tsdb.NewBlockQuerier(tsdb.NewRangeHead(h, mint, maxt), mint, maxt)
	})
}

func newBenchEnv(tb testing.TB) *benchEnv {
	tb.Helper()
	d := benchDataset()
	// The production store configuration (10m retention, default ring
	// cap), without freshness so the answers stay comparable with
	// Prometheus's (the data is fresh at the evaluation time anyway).
	o := newEmptyOursWith(d, store.Config{Retention: 10 * time.Minute, Freshness: -1})
	if err := o.load(d, func(int, sample) bool { return true }); err != nil {
		tb.Fatal(err)
	}
	return &benchEnv{ours: o, prom: newPromEngine(), qb: newPromStorage(d).queryable(), head: newPromHead(tb, d), t: d.end}
}

// check asserts both engines give the same, non-empty answer, so the
// benchmarks measure real work.
func (e *benchEnv) check(tb testing.TB, q string) {
	tb.Helper()
	ctx := context.Background()
	prom := evalProm(ctx, e.prom, e.qb, q, e.t, 5*time.Minute)
	plan, declined, err := e.ours.compile(q, 5*time.Minute)
	if declined != "" || err != nil {
		tb.Skipf("our engine does not run %s yet: %s%v", q, declined, err)
	}
	our := e.ours.eval(ctx, plan, e.t)
	if ok, _ := compare(prom, our); !ok || prom.err != nil || len(prom.vector) == 0 {
		tb.Fatalf("%s: engines disagree or the result is empty:\n  prometheus: %s\n  ours: %s", q, prom, our)
	}
	if head := evalProm(ctx, e.prom, e.head, q, e.t, 5*time.Minute); !sameOutcome(head, prom) {
		tb.Fatalf("%s: Prometheus over the TSDB head disagrees with Prometheus over the list series:\n  head: %s\n  list: %s", q, head, prom)
	}
}

// sameOutcome compares two outcomes of Prometheus's engine.
func sameOutcome(a, b outcome) bool {
	ok, _ := compare(a, b)
	return ok && (a.err == nil) == (b.err == nil)
}

func (e *benchEnv) benchOurs(q string) func(b *testing.B) {
	return func(b *testing.B) {
		e.check(b, q)
		plan, _, _ := e.ours.compile(q, 5*time.Minute)
		ctx := context.Background()
		if _, err := plan.Eval(ctx, e.t); err != nil { // warm: a cached trigger's plan
			b.Fatal(err)
		}
		b.ReportAllocs()
		cpu := processCPU()
		for b.Loop() {
			if _, err := plan.Eval(ctx, e.t); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu)
	}
}

// benchOursUncached parses, compiles and evaluates every time, as an
// HTTP API request or a first trigger evaluation does.
func (e *benchEnv) benchOursUncached(q string) func(b *testing.B) {
	return func(b *testing.B) {
		e.check(b, q)
		ctx := context.Background()
		b.ReportAllocs()
		cpu := processCPU()
		for b.Loop() {
			plan, _, err := e.ours.compile(q, 5*time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := plan.Eval(ctx, e.t); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu)
	}
}

func (e *benchEnv) benchProm(q string) func(b *testing.B) { return e.benchPromOn(e.qb, q) }

func (e *benchEnv) benchPromHead(q string) func(b *testing.B) { return e.benchPromOn(e.head, q) }

func (e *benchEnv) benchPromOn(qb storage.Queryable, q string) func(b *testing.B) {
	return func(b *testing.B) {
		ctx := context.Background()
		opts := promql.NewPrometheusQueryOpts(false, 5*time.Minute, nil)
		ts := time.UnixMilli(e.t)
		b.ReportAllocs()
		cpu := processCPU()
		for b.Loop() {
			qry, err := e.prom.NewInstantQuery(ctx, qb, opts, q, ts)
			if err != nil {
				b.Fatal(err)
			}
			if res := qry.Exec(ctx); res.Err != nil {
				b.Fatal(res.Err)
			}
			qry.Close()
		}
		reportCPU(b, cpu)
	}
}

// reportCPU reports the process CPU time per op since start, as cpu-ns/op.
func reportCPU(b *testing.B, start time.Duration) {
	if start > 0 {
		b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
	}
}

// perOp is the cost per op the ratio uses: process CPU time when
// available, else wall time.
func perOp(r testing.BenchmarkResult) float64 {
	if v, ok := r.Extra["cpu-ns/op"]; ok && v > 0 {
		return v
	}
	return float64(r.NsPerOp())
}

// BenchmarkInstant compares our warm, cached plan (engine=ours) and a
// parse + compile + evaluate per query (engine=ours-uncached) with
// Prometheus's engine (which parses and plans every query; it has no plan
// cache) on the same data in the same run, over list series
// (engine=prometheus) and over a TSDB head (engine=prometheus-head).
//
//	cd test/compat && go test -run '^$' -bench BenchmarkInstant -benchmem -cpu 2 -benchtime 300ms -count 6 . | tee bench.txt
//	go tool benchstat -col /engine bench.txt
func BenchmarkInstant(b *testing.B) {
	e := newBenchEnv(b)
	engines := []struct {
		name string
		fn   func(q string) func(*testing.B)
	}{{"ours", e.benchOurs}, {"ours-uncached", e.benchOursUncached}, {"prometheus", e.benchProm}, {"prometheus-head", e.benchPromHead}}
	for _, engine := range engines {
		for _, x := range benchExprs {
			b.Run("engine="+engine.name+"/expr="+x.name, engine.fn(x.q))
		}
	}
}

// minSpeedup is the same-run ratio TestSpeedRatio enforces: Prometheus's
// time per query over ours. performance.md targets ≥ 35× (T6a–c); the
// gate leaves margin for a noisy shared machine.
const minSpeedup = 10.0

// TestSpeedRatio measures both engines on each T6 query with
// testing.Benchmark, interleaved over a few rounds, and asserts the median
// per-round ratio of CPU time per query (wall time is logged too: on a
// shared machine it mostly measures waiting for a core). It gates on the
// ratio only, never on absolute time. The gate's baseline is Prometheus
// over list series (storage.MockQueryable); the ratio against Prometheus
// over a TSDB head, performance.md's anchor, is measured in the same
// rounds and logged, not gated: the head is the slower baseline, so the
// gate is the conservative one.
func TestSpeedRatio(t *testing.T) {
	if testing.Short() {
		t.Skip("speed ratio: skipped under -short")
	}
	if raceEnabled {
		t.Skip("speed ratio: the race detector distorts timing; run without -race (make compat does)")
	}
	if f := flag.Lookup("test.benchtime"); f != nil && f.Value.String() == "1s" {
		// testing.Benchmark reads the global benchtime; 1s (the default)
		// makes the test needlessly long.
		_ = f.Value.Set("200ms")
		defer func() { _ = f.Value.Set("1s") }()
	}
	e := newBenchEnv(t)
	const rounds = 5
	for _, x := range benchExprs {
		t.Run("expr="+x.name, func(t *testing.T) {
			e.check(t, x.q)
			var ratios, headRatios, wallRatios []float64
			var ours, prom, head testing.BenchmarkResult
			for range rounds {
				ours = testing.Benchmark(e.benchOurs(x.q))
				prom = testing.Benchmark(e.benchProm(x.q))
				head = testing.Benchmark(e.benchPromHead(x.q))
				if ours.N == 0 || prom.N == 0 || head.N == 0 {
					t.Fatal("benchmark did not run")
				}
				ratios = append(ratios, perOp(prom)/max(perOp(ours), 1))
				headRatios = append(headRatios, perOp(head)/max(perOp(ours), 1))
				wallRatios = append(wallRatios, float64(prom.NsPerOp())/float64(max(ours.NsPerOp(), 1)))
			}
			slices.Sort(ratios)
			slices.Sort(headRatios)
			slices.Sort(wallRatios)
			median := ratios[len(ratios)/2]
			want := minSpeedup
			if x.minSpeedup > 0 {
				want = x.minSpeedup
			}
			t.Logf("%s: ours %.0f cpu-ns/op (%d ns/op wall) %d allocs/op; prometheus %.0f cpu-ns/op (%d ns/op wall) %d allocs/op; "+
				"prometheus over a TSDB head %.0f cpu-ns/op %d allocs/op; "+
				"cpu ratios %.1f (median %.1fx), head cpu ratios %.1f (median %.1fx), wall ratios %.1f",
				x.name, perOp(ours), ours.NsPerOp(), ours.AllocsPerOp(), perOp(prom), prom.NsPerOp(), prom.AllocsPerOp(),
				perOp(head), head.AllocsPerOp(),
				ratios, median, headRatios, headRatios[len(headRatios)/2], wallRatios)
			if median < want {
				t.Errorf("%s: ours is only %.1fx faster than Prometheus's engine (median of %d rounds), want ≥ %.0fx", x.name, median, rounds, want)
			}
		})
	}
}

// TestWarmEvalAllocs gates T6's deterministic half: a warm, cached plan
// evaluates each T6 query without allocating.
func TestWarmEvalAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts: the race detector adds its own; run without -race (make compat does)")
	}
	e := newBenchEnv(t)
	ctx := context.Background()
	for _, x := range benchExprs {
		t.Run("expr="+x.name, func(t *testing.T) {
			e.check(t, x.q)
			plan, _, _ := e.ours.compile(x.q, 5*time.Minute)
			if _, err := plan.Eval(ctx, e.t); err != nil { // warm up buffers
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(50, func() {
				if _, err := plan.Eval(ctx, e.t); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("%s: %.1f allocs per warm evaluation, want 0", x.name, allocs)
			}
		})
	}
}
