package store

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

var (
	sinkSample Sample
	sinkRefs   []SeriesRef
	sinkLabels labels.Labels
	sinkN      int
)

const benchT0 = int64(1_700_000_000_000)

func seriesName(n int) string {
	if n >= 1_000_000 {
		return strconv.Itoa(n/1_000_000) + "M"
	}
	return strconv.Itoa(n/1000) + "k"
}

// appendFixture returns a store with n series, each already holding 22
// samples at 15 s under a 5 m retention, so their rings have reached their
// final size and later appends only overwrite; and the next timestamp.
func appendFixture(b *testing.B, n int) (*Store, []SeriesRef, int64) {
	b.Helper()
	s := New(Config{Retention: 5 * time.Minute, Freshness: -1, MaxSeries: n, MaxSeriesPerMetric: n}, Settings{Now: fixedClock(benchT0)})
	refs := make([]SeriesRef, n)
	for i := range refs {
		ref, err := s.Create(uint64(i+1)*0x9e3779b97f4a7c15, labels.FromStrings(
			"__name__", "m"+strconv.Itoa(i%100), "pod", "p"+strconv.Itoa(i/300), "i", strconv.Itoa(i)))
		if err != nil {
			b.Fatal(err)
		}
		refs[i] = ref
	}
	t := benchT0
	for range 22 {
		for _, ref := range refs {
			if err := s.Append(ref, t, 1); err != nil {
				b.Fatal(err)
			}
		}
		t += 15_000
	}
	runtime.GC() // settle the fixture's garbage before timing
	return s, refs, t
}

// BenchmarkAppend appends to existing series in a random order, each
// series once per round, as a fleet pushing every 15 s does (T1a/T1b
// without the decode). The store must hold exactly b.N more samples.
//
// go test -run '^$' -bench '^BenchmarkAppend$' -benchmem -cpu 2 -benchtime 2000000x ./pkg/store
func BenchmarkAppend(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run("series="+seriesName(n)+"/order=scattered", func(b *testing.B) {
			if n >= 1_000_000 && testing.Short() {
				b.Skip("1M series: not under -short")
			}
			s, refs, t := appendFixture(b, n)
			perm := rand.New(rand.NewPCG(1, 2)).Perm(n)
			before := s.m.samples.load()
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if err := s.Append(refs[perm[i]], t, 1); err != nil {
					b.Fatal(err)
				}
				if i++; i == n {
					i, t = 0, t+15_000
				}
			}
			if got := s.m.samples.load() - before; got != uint64(b.N) {
				b.Fatalf("store took %d samples, want %d", got, b.N)
			}
		})
	}
}

// BenchmarkAppendParallel has two writers append to disjoint series: with
// no store-wide lock they should not slow each other down beyond memory
// bandwidth.
//
// go test -run '^$' -bench '^BenchmarkAppendParallel$' -benchmem -cpu 1,2 -benchtime 200ms ./pkg/store
func BenchmarkAppendParallel(b *testing.B) {
	const n = 10_000
	b.Run("series="+seriesName(n), func(b *testing.B) {
		s, refs, t0 := appendFixture(b, n)
		var worker atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			w := int(worker.Add(1))
			part := refs[(w-1)%2*n/2 : ((w-1)%2+1)*n/2]
			t := t0 + int64(w)*1000 // disjoint timestamps per worker, increasing
			i := 0
			for pb.Next() {
				_ = s.Append(part[i], t, 1) // goroutines beyond two share halves: out-of-order is fine here
				if i++; i == len(part) {
					i, t = 0, t+15_000
				}
			}
		})
	})
}

// BenchmarkSelect evaluates matchers over 100k realistic vLLM series (287
// servers): the cost a query plan pays when the generation moves.
//
// go test -run '^$' -bench '^BenchmarkSelect$' -benchmem -cpu 2 -benchtime 200ms ./pkg/store
func BenchmarkSelect(b *testing.B) {
	const n = 100_000
	fleet := newVLLMFleet(b)
	s := New(Config{MaxSeries: n, MaxSeriesPerMetric: n}, Settings{})
	for i := range n {
		lset, h := fleet.series(i)
		if _, err := s.Create(h, lset); err != nil {
			b.Fatal(err)
		}
	}
	m := labels.MustNewMatcher
	for _, tc := range []struct {
		name string
		ms   []*labels.Matcher
		want int
	}{
		{"name", []*labels.Matcher{m(labels.MatchEqual, "__name__", "vllm:num_requests_running")}, 288},
		{"name_eq", []*labels.Matcher{m(labels.MatchEqual, "__name__", "vllm:e2e_request_latency_seconds_bucket"), m(labels.MatchEqual, "deployment", "vllm-model-3")}, 8 * 22},
		{"name_regex", []*labels.Matcher{m(labels.MatchEqual, "__name__", "vllm:num_requests_running"), m(labels.MatchRegexp, "deployment", "vllm-model-(1|2|3)")}, 24},
		{"eq_no_name", []*labels.Matcher{m(labels.MatchEqual, "deployment", "vllm-model-3"), m(labels.MatchEqual, "le", "+Inf")}, 8 * 15},
		{"regex_no_name", []*labels.Matcher{m(labels.MatchRegexp, "namespace", "inference-1")}, 16 * 8 * 348},
	} {
		b.Run(fmt.Sprintf("series=%s/query=%s", seriesName(n), tc.name), func(b *testing.B) {
			var dst []SeriesRef
			b.ReportAllocs()
			for b.Loop() {
				dst = s.Select(dst[:0], tc.ms...)
			}
			if len(dst) != tc.want {
				b.Fatalf("selected %d series, want %d", len(dst), tc.want)
			}
			sinkRefs = dst
		})
	}
}

// BenchmarkRead covers the evaluator's per-series reads: a 5-minute Range
// window (20 samples at 15 s), Latest, and cached Labels, and the
// zero-copy read path (ScanRange, Window plus Scan, Reader.Latest) over 1-
// and 5-minute windows. All must be allocation-free with a reused dst.
//
// go test -run '^$' -bench '^BenchmarkRead$' -benchmem -cpu 2 -benchtime 200ms ./pkg/store
func BenchmarkRead(b *testing.B) {
	s := New(Config{Retention: 10 * time.Minute}, Settings{Now: fixedClock(benchT0 + 600_000)})
	ref, err := s.Create(1, labels.FromStrings("__name__", "vllm:num_requests_running", "pod", "p", "model_name", "qwen"))
	if err != nil {
		b.Fatal(err)
	}
	for i := range int64(41) {
		if err := s.Append(ref, benchT0+i*15_000, float64(i)); err != nil {
			b.Fatal(err)
		}
	}
	maxt := benchT0 + 600_000
	b.Run("op=range/window=5m", func(b *testing.B) {
		var dst []Sample
		b.ReportAllocs()
		for b.Loop() {
			dst = s.Range(dst[:0], ref, maxt-300_000, maxt)
		}
		if len(dst) != 20 {
			b.Fatalf("got %d samples, want 20", len(dst))
		}
	})
	b.Run("op=latest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkSample, _ = s.Latest(ref, maxt)
		}
		if sinkSample.T != maxt {
			b.Fatalf("latest %v", sinkSample)
		}
	})
	// The zero-copy path the evaluator uses: a resolved Handle, a Reader
	// per batch, and one pass over the ring in place.
	h, rd := s.Handle(ref), s.Reader()
	for _, window := range []int64{60_000, 300_000} {
		b.Run(fmt.Sprintf("op=scan_range/window=%dm", window/60_000), func(b *testing.B) {
			var sc Scan
			b.ReportAllocs()
			for b.Loop() {
				sinkN = rd.ScanRange(&sc, h, maxt-window, maxt)
			}
			if sinkN != int(window/15_000) || sc.N != sinkN {
				b.Fatalf("scanned %d samples (%+v), want %d", sinkN, sc, window/15_000)
			}
		})
		b.Run(fmt.Sprintf("op=window_scan/window=%dm", window/60_000), func(b *testing.B) {
			var (
				win Window
				sc  Scan
			)
			b.ReportAllocs()
			for b.Loop() {
				rd.Window(&win, h, maxt-window, maxt)
				win.Scan(&sc)
				if !win.Valid() {
					b.Fatal("concurrent write in a single-goroutine benchmark")
				}
			}
			if sc.N != int(window/15_000) {
				b.Fatalf("scanned %+v, want %d samples", sc, window/15_000)
			}
		})
	}
	b.Run("op=reader_latest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkSample, _ = rd.Latest(h, maxt)
		}
		if sinkSample.T != maxt {
			b.Fatalf("latest %v", sinkSample)
		}
	})
	b.Run("op=labels", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkLabels = s.Labels(ref)
		}
		if sinkLabels.Get("pod") != "p" {
			b.Fatal(sinkLabels)
		}
	})
}

// BenchmarkLookup finds existing series by identity hash in random order.
//
// go test -run '^$' -bench '^BenchmarkLookup$' -benchmem -cpu 2 -benchtime 200ms ./pkg/store
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run("series="+seriesName(n), func(b *testing.B) {
			if n >= 1_000_000 && testing.Short() {
				b.Skip("1M series: not under -short")
			}
			s := New(Config{MaxSeries: n, MaxSeriesPerMetric: n}, Settings{})
			hashes := make([]uint64, n)
			for i := range hashes {
				hashes[i] = rand.Uint64()
				if _, err := s.Create(hashes[i], labels.FromStrings("__name__", "m", "i", strconv.Itoa(i))); err != nil {
					b.Fatal(err)
				}
			}
			perm := rand.New(rand.NewPCG(1, 2)).Perm(n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := s.Lookup(hashes[perm[i]]); !ok {
					b.Fatal("missing")
				}
				if i++; i == n {
					i = 0
				}
			}
		})
	}
}

// BenchmarkMemory reports the store's footprint for 21-sample windows
// (performance.md T3–T5) as B/series (all-in) and B/sample (the extra heap
// of 42 samples over 21, per sample).
//
// go test -run '^$' -bench '^BenchmarkMemory$' -benchtime 1x ./pkg/store
func BenchmarkMemory(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run("series="+seriesName(n), func(b *testing.B) {
			if n >= 1_000_000 && testing.Short() {
				b.Skip("1M series: not under -short")
			}
			var perSeries, perSample, header float64
			for b.Loop() {
				perSeries, perSample, header = memoryGates(b, n)
			}
			b.ReportMetric(perSeries, "B/series")
			b.ReportMetric(perSample, "B/sample")
			b.ReportMetric(header, "B/series-excl-samples-labels")
		})
	}
}

// BenchmarkAppendBurst fills new series with 20 samples each, either 1 ms
// apart (a high-frequency sender's burst) or 5 s apart, into a store on
// its defaults (10m retention). Series creation is outside the timer; the
// timed part is the appends and the ring growth they cause. The two must
// cost the same per point: ring growth may not depend on the sender's
// interval beyond what the retention bounds (issue: bursts once sized
// every ring to its cap at once).
//
// go test -run '^$' -bench '^BenchmarkAppendBurst$' -benchmem -cpu 2 -count 6 ./pkg/store
func BenchmarkAppendBurst(b *testing.B) {
	const (
		series = 1000
		points = 20
	)
	for _, sp := range []struct {
		name string
		ms   int64
	}{{"1ms", 1}, {"5s", 5000}} {
		b.Run("spacing="+sp.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				s, refs := burstFixture(b, series)
				b.StartTimer()
				for k := range int64(points) {
					for _, ref := range refs {
						if err := s.Append(ref, benchT0+k*sp.ms, float64(k)); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*series*points), "ns/dp")
		})
	}
}

// burstFixture returns a store on its defaults whose clock sits at the end
// of a 20-sample 5 s burst from benchT0, with n empty series of realistic
// vLLM label sets (newVLLMFleet).
func burstFixture(tb testing.TB, n int) (*Store, []SeriesRef) {
	tb.Helper()
	fleet := newVLLMFleet(tb)
	s := New(Config{Freshness: -1, MaxSeries: n, MaxSeriesPerMetric: n}, Settings{Now: fixedClock(benchT0 + 100_000)})
	refs := make([]SeriesRef, n)
	for i := range refs {
		lset, h := fleet.series(i)
		ref, err := s.Create(h, lset)
		if err != nil {
			tb.Fatal(err)
		}
		refs[i] = ref
	}
	return s, refs
}
