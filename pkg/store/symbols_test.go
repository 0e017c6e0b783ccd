package store

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// churnLabels returns the labels of metric m of churned pod p: every pod
// brings its own pod, instance and lora values, as vLLM pods do.
func churnLabels(m string, p int) labels.Labels {
	return labels.FromStrings(
		"__name__", m,
		"instance", "10.1."+strconv.Itoa(p)+":8000",
		"lora_name", "adapter-"+strconv.Itoa(p),
		"model_name", "llama",
		"pod", "vllm-"+strconv.Itoa(p),
	)
}

// Pods come and go for many TTLs under the background sweeper: the symbol
// table must hold only what the live series need plus a small constant,
// reuse freed IDs, keep metric-name IDs stable, and the memory estimate
// must fall back when the dead pods' symbols are freed.
func TestSymbolsReclaimedUnderChurn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			cycles  = 40
			podsPer = 25 // new pods per cycle
		)
		metrics := []string{"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:lora_requests_info"}
		s := New(Config{Retention: 2 * time.Minute, SeriesTTL: 90 * time.Second, SweepInterval: 10 * time.Second}, Settings{})
		require.NoError(t, s.Start(t.Context()))
		defer func() { require.NoError(t, s.Shutdown(t.Context())) }()
		waitingID := s.MetricID("vllm:num_requests_waiting") // as a subscription holds it
		subOnly := s.MetricID("vllm:subscribed_but_never_sent")

		// One steady pod lives throughout.
		var steady []SeriesRef
		for i, m := range metrics {
			ref, err := s.Create(uint64(1_000_000+i), churnLabels(m, -1))
			require.NoError(t, err)
			steady = append(steady, ref)
		}
		distinct := map[string]struct{}{} // what the store held before reclamation
		hash := uint64(1)
		var maxSyms int
		var baseMem int64
		for c := range cycles {
			var refs []SeriesRef
			for p := c * podsPer; p < (c+1)*podsPer; p++ {
				for _, m := range metrics {
					lset := churnLabels(m, p)
					lset.Range(func(l labels.Label) { distinct[l.Name], distinct[l.Value] = struct{}{}, struct{}{} })
					ref, err := s.Create(hash, lset)
					require.NoError(t, err)
					hash++
					refs = append(refs, ref)
				}
			}
			// The pods push for a minute, then die without a word; the
			// steady pod keeps pushing. Two more minutes let the sweeper
			// delete the dead series and rotate their symbols through
			// quarantine.
			for tick := range 18 {
				now := time.Now().UnixMilli()
				for _, ref := range steady {
					require.NoError(t, s.Append(ref, now, 1))
				}
				if tick < 6 {
					for _, ref := range refs {
						require.NoError(t, s.Append(ref, now, 1))
					}
				}
				time.Sleep(10 * time.Second)
				synctest.Wait()
			}
			require.Equal(t, len(steady), s.NumSeries(), "cycle %d: dead pods swept", c)
			n, _ := s.syms.stats()
			maxSyms = max(maxSyms, n)
			if c == 0 {
				baseMem = s.MemoryEstimate()
			}
		}

		n, b := s.syms.stats()
		// Live: 3 metric names + the subscribed one + __name__, 4 label
		// names, llama and the steady pod's 3 values = 13.
		const live = 13
		t.Logf("symbols after %d cycles: %d (%d B), peak after a sweep %d; without reclamation: %d; memory estimate %d B vs %d B after the first cycle",
			cycles, n, b, maxSyms, len(distinct)+2, s.MemoryEstimate(), baseMem)
		assert.Equal(t, live, n, "only the live series' symbols remain")
		var liveBytes int64
		for _, str := range []string{
			"__name__", "instance", "lora_name", "model_name", "pod", "llama",
			"vllm:subscribed_but_never_sent", "10.1.-1:8000", "adapter--1", "vllm--1",
		} {
			liveBytes += symCost(str)
		}
		for _, m := range metrics {
			liveBytes += symCost(m)
		}
		assert.Equal(t, liveBytes, b, "freed symbols' bytes are subtracted")
		s.syms.mu.Lock()
		next := s.syms.next
		s.syms.mu.Unlock()
		// One cycle's pods need 3 values each; freed IDs come back after a
		// sweep, so the table never grows past about two cycles' worth.
		assert.LessOrEqual(t, int(next), live+2*3*podsPer+8, "freed IDs are reused")
		assert.Less(t, s.MemoryEstimate(), baseMem+baseMem/4, "memory stays at the first cycle's level")

		assert.Equal(t, waitingID, s.MetricID("vllm:num_requests_waiting"), "metric IDs are stable")
		assert.Equal(t, subOnly, s.MetricID("vllm:subscribed_but_never_sent"))
		got, ok := s.SeriesMetricID(steady[1])
		assert.True(t, ok)
		assert.Equal(t, waitingID, got)
		for i, ref := range steady {
			assert.Equal(t, churnLabels(metrics[i], -1), s.Labels(ref))
		}
		assert.Equal(t, []string{"vllm--1"}, s.LabelValues(nil, "pod"))
		assert.Empty(t, s.Select(nil, labels.MustNewMatcher(labels.MatchEqual, "pod", "vllm-3")))
		assert.Len(t, s.Select(nil, labels.MustNewMatcher(labels.MatchRegexp, "pod", "vllm-.*")), 3)

		// A dead pod's values come back as new symbols, correctly.
		ref, err := s.Create(hash, churnLabels(metrics[0], 3))
		require.NoError(t, err)
		assert.Equal(t, churnLabels(metrics[0], 3), s.Labels(ref))
		assert.Equal(t, []SeriesRef{ref}, s.Select(nil, labels.MustNewMatcher(labels.MatchEqual, "pod", "vllm-3")))
	})
}

// reuseLabels encodes k three ways, so a reader can tell a label set whose
// symbols were swapped under it from the one that was created.
func reuseLabels(k int) labels.Labels {
	ks := strconv.Itoa(k)
	return labels.FromStrings("__name__", "m", "instance", "10.2."+ks+":80", "k", ks, "pod", "p-"+ks)
}

func checkReuseLabels(l labels.Labels) bool {
	if l.IsEmpty() {
		return true // deleted meanwhile
	}
	k, err := strconv.Atoi(l.Get("k"))
	return err == nil && labels.Equal(l, reuseLabels(k))
}

// Readers resolve labels and select while the sweeper frees symbols and
// writers intern new values into the freed IDs: every Labels read must be
// exactly the set the series was created with (or empty once deleted),
// and Select must keep finding the steady series by value. Run with -race.
func TestSymbolReuseConcurrent(t *testing.T) {
	dur := 1500 * time.Millisecond
	if testing.Short() {
		dur = 300 * time.Millisecond
	}
	const (
		nWriters = 2
		nReaders = 3
		maxOps   = 2_000_000
		t0       = int64(1_700_000_000_000)
		steadyK  = -1
	)
	clk := &movingClock{}
	clk.ms.Store(t0)
	s := New(Config{Retention: time.Minute, Freshness: -1, SeriesTTL: 10 * time.Second}, Settings{Now: clk.now})
	steady, err := s.Create(1<<62, reuseLabels(steadyK))
	require.NoError(t, err)
	require.NoError(t, s.Append(steady, t0, 1))

	var (
		stop     atomic.Bool
		ops      atomic.Int64
		reads    atomic.Int64
		sweeps   atomic.Int64
		failures atomic.Int64
		nextK    atomic.Int64
		recent   [512]atomic.Uint32
		wg       sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	done := func() bool { return stop.Load() || ops.Add(1) > maxOps }

	for w := range nWriters {
		wg.Go(func() {
			for i := 0; !done(); i++ {
				k := int(nextK.Add(1))
				ref, err := s.Create(uint64(k), reuseLabels(k))
				if err != nil {
					fail("create %d: %v", k, err)
					return
				}
				_ = s.Append(ref, clk.ms.Load(), 1) // may be swept already
				recent[(i*nWriters+w)%len(recent)].Store(uint32(ref))
			}
		})
	}
	for r := range nReaders {
		wg.Go(func() {
			steadyM := labels.MustNewMatcher(labels.MatchEqual, "pod", "p-"+strconv.Itoa(steadyK))
			var dst []SeriesRef
			for i := r; !done(); i++ {
				// Take the slot, so that most reads are a series' first
				// (the one that resolves symbols; later ones hit lcache),
				// at a random age relative to the sweeps.
				ref := SeriesRef(recent[i%len(recent)].Swap(0))
				if ref == 0 {
					ref = steady
				}
				if l := s.Labels(ref); !checkReuseLabels(l) {
					fail("Labels(%d) = %v: symbols of another series", ref, l)
				}
				if i%16 == 0 {
					k := strconv.Itoa(int(nextK.Load()) - i%64)
					dst = s.Select(dst[:0], labels.MustNewMatcher(labels.MatchRegexp, "pod", "p-"+k+"|p-1"+k))
					for _, ref := range dst {
						if l := s.Labels(ref); !checkReuseLabels(l) {
							fail("Labels(%d) after Select = %v", ref, l)
						}
					}
					for _, v := range s.LabelValues(nil, "pod") {
						if !strings.HasPrefix(v, "p-") {
							fail("LabelValues(pod) has %q", v)
						}
					}
					for _, n := range s.LabelNames(nil) {
						if !slices.Contains([]string{"__name__", "instance", "k", "pod"}, n) {
							fail("LabelNames has %q", n)
						}
					}
					dst = s.Select(dst[:0], steadyM)
					if len(dst) != 1 || dst[0] != steady {
						fail("Select(steady) = %v, want [%d]", dst, steady)
					}
				}
				reads.Add(1)
			}
		})
	}
	wg.Go(func() { // the sweeper: every sweep expires all but the steady series
		for !done() {
			now := clk.ms.Add(11_000)
			if err := s.Append(steady, now, 1); err != nil {
				fail("append steady: %v", err)
			}
			s.Sweep()
			sweeps.Add(1)
			time.Sleep(100 * time.Microsecond)
		}
	})
	time.Sleep(dur)
	// The run ends on counts: at least minSweeps sweeps must have
	// interleaved with the readers, however slowly a loaded machine
	// schedules the sweeper (bounded, in case it never runs).
	const minSweeps = 3
	for deadline := time.Now().Add(30 * time.Second); sweeps.Load() < minSweeps && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()

	assert.Equal(t, reuseLabels(steadyK), s.Labels(steady))
	require.Positive(t, reads.Load())
	require.GreaterOrEqual(t, sweeps.Load(), int64(minSweeps))
	t.Logf("series created %d, sweeps %d, reads %d, symbol reuses %d", nextK.Load(), sweeps.Load(), reads.Load(), s.syms.reuses.Load())
	assert.Positive(t, s.syms.reuses.Load(), "freed IDs were reused under the readers")
	// Final sweeps delete everything but the steady series (a series that
	// never got a sample goes at the second sweep that finds it empty).
	clk.ms.Add(11_000)
	require.NoError(t, s.Append(steady, clk.ms.Load(), 1))
	for range 3 {
		s.Sweep()
	}
	assert.Equal(t, 1, s.NumSeries())
	n, _ := s.syms.stats()
	assert.Equal(t, 8, n, "__name__, m, instance, k, pod and the steady series' three values")
}

// A freed symbol keeps its string through the sweep that freed it and is
// handed out again only after the next one, like deleted refs: a reader
// that resolved the dead set's IDs just before the sweep still reads its
// strings. A metric name is freed with its last series the same way.
func TestSymbolQuarantine(t *testing.T) {
	clk := &movingClock{}
	clk.ms.Store(1_000_000)
	s := New(Config{Retention: time.Minute, Freshness: -1, SeriesTTL: 10 * time.Second}, Settings{Now: clk.now})
	pairsOf := func(ref SeriesRef) []uint32 {
		return slices.Clone(s.sets.at(s.get(ref).setID).Load().pairs())
	}
	create := func(h uint64, pod string) SeriesRef {
		ref := mustCreate(t, s, h, "__name__", "gone_metric", "pod", pod)
		require.NoError(t, s.Append(ref, clk.ms.Load(), 1))
		return ref
	}
	a := create(1, "pod-a")
	mid, _ := s.SeriesMetricID(a)
	aPairs := pairsOf(a) // pod, pod-a
	clk.ms.Add(11_000)
	require.Equal(t, 1, s.Sweep())
	n, _ := s.syms.stats()
	assert.Equal(t, 1, n, "__name__ stays; gone_metric, pod and pod-a are freed")
	assert.Equal(t, "pod", s.syms.str(aPairs[0]), "quarantined: the old string is still readable")
	assert.Equal(t, "pod-a", s.syms.str(aPairs[1]))
	assert.Equal(t, "gone_metric", s.syms.str(mid))
	freed := append(slices.Clone(aPairs), mid)
	_, ok := s.syms.id("pod-a")
	assert.False(t, ok, "a freed string no longer resolves")
	assert.Empty(t, s.Select(nil, labels.MustNewMatcher(labels.MatchEqual, "pod", "pod-a")))
	assert.True(t, s.Labels(a).IsEmpty())

	b := create(2, "pod-b")
	bMid, _ := s.SeriesMetricID(b)
	for _, id := range append(pairsOf(b), bMid) {
		assert.NotContains(t, freed, id, "no reuse before the next sweep")
	}
	reuses := s.syms.reuses.Load()
	require.Equal(t, 0, s.Sweep())
	c := create(3, "pod-c")
	assert.Contains(t, freed, pairsOf(c)[1], "reused after the next sweep")
	assert.Greater(t, s.syms.reuses.Load(), reuses)
	assert.Equal(t, labels.FromStrings("__name__", "gone_metric", "pod", "pod-b"), s.Labels(b))
	assert.Equal(t, labels.FromStrings("__name__", "gone_metric", "pod", "pod-c"), s.Labels(c))
	cMid, _ := s.SeriesMetricID(c)
	assert.Equal(t, bMid, cMid, "a live metric name keeps its ID")
	assert.Equal(t, []SeriesRef{c}, s.Select(nil, labels.MustNewMatcher(labels.MatchRegexp, "pod", "pod-[ac]")))
}

// TestHeldMetricNames: AcquireMetricID holds a name (what the scaler does
// for the names a compiled trigger's query reads) and ReleaseMetricIDs
// frees it once nothing else keeps it: no other hold, no series (pinned
// name), no label set (refs). While held, the ID keeps naming the string,
// and a series created meanwhile gets the same ID. A name freed by its
// last release drops its string at once, and its ID is reused only after
// the next sweep.
func TestHeldMetricNames(t *testing.T) {
	clk := &movingClock{}
	clk.ms.Store(1_000_000)
	s := New(Config{Retention: time.Minute, Freshness: -1, SeriesTTL: 10 * time.Second}, Settings{Now: clk.now})
	live := func() int { n, _ := s.syms.stats(); return n }
	base := live() // __name__

	// Held twice, released twice: freed on the second release only.
	a := s.AcquireMetricID("trigger_only")
	require.Equal(t, a, s.AcquireMetricID("trigger_only"))
	assert.Equal(t, base+1, live())
	s.ReleaseMetricIDs([]uint32{a})
	id, ok := s.syms.id("trigger_only")
	require.True(t, ok, "one hold remains")
	assert.Equal(t, a, id)
	s.ReleaseMetricIDs([]uint32{a})
	_, ok = s.syms.id("trigger_only")
	assert.False(t, ok, "the last release frees it")
	assert.Equal(t, base, live())
	assert.Empty(t, s.syms.str(a), "its string is dropped at once")
	b := s.AcquireMetricID("other")
	assert.NotEqual(t, a, b, "a freed ID waits for the next sweep")
	s.Sweep()
	c := s.AcquireMetricID("third")
	assert.Equal(t, a, c, "and is reused after it")
	s.ReleaseMetricIDs([]uint32{b, c})
	assert.Equal(t, base, live())

	// A held name that a series starts to use keeps its ID, and survives
	// the release while the series lives (MetricID then pins it).
	h := s.AcquireMetricID("stored_later")
	ref := mustCreate(t, s, 1, "__name__", "stored_later", "pod", "p")
	mid, _ := s.SeriesMetricID(ref)
	assert.Equal(t, h, mid, "the series reports the ID the trigger holds")
	s.ReleaseMetricIDs([]uint32{h})
	assert.Equal(t, "stored_later", s.syms.str(h))
	assert.Equal(t, h, s.MetricID("stored_later"))

	// A name that is also a live label value stays until both the hold and
	// the label set are gone, in either order.
	v := s.AcquireMetricID("p") // "p" is the pod label value above
	s.ReleaseMetricIDs([]uint32{v})
	assert.Equal(t, "p", s.syms.str(v), "the label set still uses it")
	_, ok = s.syms.id("p")
	assert.True(t, ok)
	v = s.AcquireMetricID("p")
	require.NoError(t, s.Append(ref, clk.ms.Load(), 1))
	clk.ms.Add(11_000)
	require.Equal(t, 1, s.Sweep(), "the series goes, and with it the set")
	_, ok = s.syms.id("p")
	assert.True(t, ok, "the hold keeps the name after its label set went")
	s.ReleaseMetricIDs([]uint32{v})
	_, ok = s.syms.id("p")
	assert.False(t, ok, "freed by the release")
	assert.Equal(t, h, s.MetricID("stored_later"), "a series' metric name outlives its series")
}

// TestHeldMetricNamesConcurrent races holds and releases against series
// creation and sweeps over the same strings (as label values and metric
// names): counts never go negative, nothing held or used is freed, and
// once everything is released only pinned names and live sets remain.
func TestHeldMetricNamesConcurrent(t *testing.T) {
	clk := &movingClock{}
	clk.ms.Store(1_000_000)
	s := New(Config{Retention: time.Minute, Freshness: -1, SeriesTTL: 10 * time.Second}, Settings{Now: clk.now})
	names := []string{"n0", "n1", "n2", "n3"}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 300 {
				name := names[(w+i)%len(names)]
				id := s.AcquireMetricID(name)
				if got := s.syms.str(id); got != name {
					t.Errorf("held ID %d reads %q, want %q", id, got, name)
				}
				s.ReleaseMetricIDs([]uint32{id})
			}
		})
	}
	wg.Go(func() {
		for i := range 300 {
			ref, err := s.Create(uint64(i), labels.FromStrings("__name__", "m", "v", names[i%len(names)], "i", strconv.Itoa(i)))
			if err != nil {
				t.Error(err)
				return
			}
			_ = s.Append(ref, clk.ms.Load(), 1)
			if i%50 == 0 {
				clk.ms.Add(11_000)
				s.Sweep()
			}
		}
	})
	wg.Wait()
	clk.ms.Add(11_000)
	s.Sweep()
	s.Sweep()
	n, _ := s.syms.stats()
	assert.Equal(t, 1, n, "__name__: every hold was released and every series swept")
}
