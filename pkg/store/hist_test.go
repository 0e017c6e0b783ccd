package store

import (
	"bytes"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testHist is a counter histogram of schema 0 whose count grows with k:
// buckets 1, 2 and 4 (upper bounds) hold k, 2k and k observations, the
// zero bucket k/2.
func testHist(k float64) *histogram.FloatHistogram {
	return &histogram.FloatHistogram{
		Schema: 0, ZeroThreshold: 1e-128, ZeroCount: k / 2,
		Count: 4.5 * k, Sum: 7 * k,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 3}},
		PositiveBuckets: []float64{k, 2 * k, k},
	}
}

func mustCreateHist(t testing.TB, s *Store, h uint64, kv ...string) SeriesRef {
	t.Helper()
	ref, err := s.CreateHistogram(h, labels.FromStrings(kv...))
	require.NoError(t, err)
	return ref
}

// histsOf reads every sample of ref back: floats and histograms.
func histsOf(s *Store, ref SeriesRef) ([]Sample, []HSample) {
	rd := s.Reader()
	return rd.RangeHistograms(s.Handle(ref), math.MinInt64+1, math.MaxInt64, nil, nil)
}

func TestHistogramRoundTrip(t *testing.T) {
	s := New(Config{Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	ref := mustCreateHist(t, s, 1, "__name__", "h")
	custom := &histogram.FloatHistogram{
		Schema: histogram.CustomBucketsSchema, Count: 6, Sum: 9,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}, {Offset: 1, Length: 1}},
		PositiveBuckets: []float64{1, 2, 3},
		CustomValues:    []float64{0.5, 1, 2.5},
	}
	negative := &histogram.FloatHistogram{
		Schema: 3, ZeroThreshold: 0.001, ZeroCount: 2, Count: 10, Sum: -3,
		PositiveSpans:   []histogram.Span{{Offset: -2, Length: 1}, {Offset: 3, Length: 2}},
		PositiveBuckets: []float64{1, 1, 2},
		NegativeSpans:   []histogram.Span{{Offset: 5, Length: 2}},
		NegativeBuckets: []float64{3, 1},
	}
	in := []*histogram.FloatHistogram{testHist(1), custom, negative}
	for i, fh := range in {
		require.NoError(t, s.AppendHistogram(ref, int64(900_000+i*1000), fh))
	}
	require.NoError(t, s.Append(ref, 904_000, 42)) // a float in a histogram series
	fs, hs := histsOf(s, ref)
	require.Len(t, hs, 3)
	for i, fh := range in {
		assert.Equal(t, int64(900_000+i*1000), hs[i].T)
		assert.True(t, fh.Equals(&hs[i].H), "sample %d: %s != %s", i, &hs[i].H, fh)
	}
	assert.Equal(t, []Sample{{904_000, 42}}, fs)

	// Latest returns the newest histogram, copied into the caller's.
	var got histogram.FloatHistogram
	smp, isHist, ok := s.Reader().LatestHistogram(s.Handle(ref), 903_500, &got)
	require.True(t, ok)
	assert.True(t, isHist)
	assert.Equal(t, int64(902_000), smp.T)
	assert.True(t, negative.Equals(&got))
	smp, isHist, ok = s.Reader().LatestHistogram(s.Handle(ref), 905_000, &got)
	require.True(t, ok)
	assert.False(t, isHist)
	assert.Equal(t, Sample{904_000, 42}, smp)

	// The float path sees markers, never plain floats.
	raw := s.Range(nil, ref, 0, 1_000_000)
	require.Len(t, raw, 4)
	for _, r := range raw[:3] {
		assert.True(t, IsHistogram(r.V))
	}
	assert.False(t, IsHistogram(raw[3].V))
}

func TestHistogramAppendRules(t *testing.T) {
	s := New(Config{Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	ref := mustCreateHist(t, s, 1, "__name__", "h")
	floatRef := mustCreate(t, s, 2, "__name__", "f")
	bad := testHist(1)
	bad.PositiveBuckets = bad.PositiveBuckets[:2] // spans want 3
	tooBig := &histogram.FloatHistogram{
		Schema: 0, Count: 1,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: MaxHistogramBuckets + 1}},
		PositiveBuckets: make([]float64, MaxHistogramBuckets+1),
	}
	highSchema := testHist(1)
	highSchema.Schema = 9
	stale := testHist(1)
	stale.Sum = staleNaN
	for _, tc := range []struct {
		name string
		ref  SeriesRef
		t    int64
		fh   *histogram.FloatHistogram
		want error
	}{
		{"first", ref, 900_000, testHist(1), nil},
		{"same time same histogram is dropped", ref, 900_000, testHist(1), nil},
		{"same time other histogram", ref, 900_000, testHist(2), ErrDuplicateTimestamp},
		{"older", ref, 899_000, testHist(2), ErrOutOfOrder},
		{"too old", ref, 100, testHist(2), ErrTooOld},
		{"malformed", ref, 901_000, bad, ErrInvalidHistogram},
		{"too many buckets", ref, 901_000, tooBig, ErrInvalidHistogram},
		{"schema above 8", ref, 901_000, highSchema, ErrInvalidHistogram},
		{"float series", floatRef, 901_000, testHist(1), ErrNotHistogramSeries},
		{"unknown series", 999, 901_000, testHist(1), ErrUnknownSeries},
		{"a stale histogram is a stale marker", ref, 902_000, stale, nil},
		{"after the marker", ref, 903_000, testHist(3), nil},
	} {
		err := s.AppendHistogram(tc.ref, tc.t, tc.fh)
		if tc.want == nil {
			require.NoError(t, err, tc.name)
		} else {
			require.ErrorIs(t, err, tc.want, tc.name)
		}
	}
	fs, hs := histsOf(s, ref)
	require.Len(t, hs, 2)
	require.Len(t, fs, 1)
	assert.True(t, isStale(fs[0].V))
	assert.Equal(t, int64(902_000), fs[0].T)

	// A float that looks like a marker is stored as the canonical NaN.
	require.NoError(t, s.Append(floatRef, 900_000, math.Float64frombits(makeMark(7, histogram.NotCounterReset, false))))
	got := s.Range(nil, floatRef, 0, 1_000_000)
	require.Len(t, got, 1)
	assert.False(t, IsHistogram(got[0].V))
	assert.True(t, math.IsNaN(got[0].V))
}

func isStale(v float64) bool { return math.Float64bits(v) == math.Float64bits(staleNaN) }

// The hints a reader gets follow what Prometheus's TSDB head returns for
// the same samples read back.
func TestHistogramHints(t *testing.T) {
	s := New(Config{Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	ref := mustCreateHist(t, s, 1, "__name__", "h")
	gauge := func(k float64) *histogram.FloatHistogram {
		h := testHist(k)
		h.CounterResetHint = histogram.GaugeType
		return h
	}
	lower := testHist(4)
	lower.Schema = -1
	lower.PositiveSpans = []histogram.Span{{Offset: 0, Length: 2}}
	lower.PositiveBuckets = []float64{12, 6}
	explicit := testHist(9)
	explicit.CounterResetHint = histogram.CounterReset
	in := []struct {
		fh   *histogram.FloatHistogram
		want histogram.CounterResetHint
	}{
		{testHist(1), histogram.UnknownCounterReset}, // first of a chunk
		{testHist(2), histogram.NotCounterReset},
		{testHist(3), histogram.NotCounterReset},
		{testHist(1), histogram.UnknownCounterReset}, // a reset starts a chunk
		{testHist(2), histogram.NotCounterReset},
		{lower, histogram.UnknownCounterReset}, // schema change
		{explicit, histogram.UnknownCounterReset},
		{testHist(10), histogram.NotCounterReset},
		{gauge(1), histogram.GaugeType},
		{gauge(0.5), histogram.GaugeType},
		{testHist(11), histogram.UnknownCounterReset}, // after a gauge
	}
	for i, x := range in {
		require.NoError(t, s.AppendHistogram(ref, int64(900_000+i*1000), x.fh))
	}
	require.NoError(t, s.Append(ref, 920_000, 5))
	require.NoError(t, s.AppendHistogram(ref, 921_000, testHist(12)))
	_, hs := histsOf(s, ref)
	require.Len(t, hs, len(in)+1)
	for i, x := range in {
		assert.Equal(t, x.want, hs[i].H.CounterResetHint, "sample %d", i)
	}
	assert.Equal(t, histogram.UnknownCounterReset, hs[len(in)].H.CounterResetHint, "after a float")
	assert.Equal(t, histogram.CounterReset, explicit.CounterResetHint, "the caller's histogram is left as it was")
}

// memoryUsed sums what the store should have charged: every ring's and
// every log's allocation.
func memoryUsed(s *Store) int64 {
	var n int64
	for ref := uint32(1); ref < s.nextRef.Load(); ref++ {
		ms := s.get(SeriesRef(ref))
		if ms == nil {
			continue
		}
		if ms.ring.Load() != nil {
			_, _, c := unpackMeta(ms.meta.Load())
			n += ringBytes(c)
		}
		if hs := s.histSeriesOf(SeriesRef(ref), ms); hs != nil {
			if lg := hs.log.Load(); lg != nil {
				n += lg.bytes
			}
		}
	}
	return n
}

// A histogram series pushed for longer than the retention keeps its log
// bounded (compaction), charged to the budget at its real size, and gives
// it all back when it is deleted; pushed faster than its bound it is
// thinned with every counter reset kept, so the increase between the kept
// samples is the true one.
func TestHistogramLogBoundedAndThinned(t *testing.T) {
	clk := &movingClock{}
	s := New(Config{Retention: time.Minute, Freshness: -1, SeriesTTL: 2 * time.Minute, MaxSamplesPerSeries: 64}, Settings{Now: clk.now})
	ref := mustCreateHist(t, s, 1, "__name__", "h")
	var grownBytes int64
	type point struct {
		t int64
		c float64
	}
	var all []point
	k := 0.0
	for i := range 2000 {
		ts := int64(10_000 + i*100) // 10 samples a second: 600 per retention, thinned to 64 slots
		clk.ms.Store(ts)
		k++
		if i%97 == 96 {
			k = 1 // a counter reset
		}
		fh := testHist(k)
		require.NoError(t, s.AppendHistogram(ref, ts, fh))
		all = append(all, point{ts, fh.Count})
		require.Equal(t, memoryUsed(s), s.rl.used.Load(), "sample %d: the budget counts every ring and log", i)
		if i == 999 {
			grownBytes = s.histSeriesOf(ref, s.get(ref)).log.Load().bytes
		}
	}
	lg := s.histSeriesOf(ref, s.get(ref)).log.Load()
	assert.LessOrEqual(t, lg.bytes, grownBytes, "the log stops growing once the ring is at its bound")
	_, hs := histsOf(s, ref)
	require.LessOrEqual(t, len(hs), 64)
	require.Greater(t, len(hs), 16)
	gap := 2 * time.Minute.Milliseconds() / 63
	assert.LessOrEqual(t, hs[0].T, clk.ms.Load()-time.Minute.Milliseconds()+2*gap, "the kept samples still cover the retention")
	// The increase over the kept samples, with a reset wherever the hint
	// or the counts say so, equals the true one over the same span.
	var kept float64
	for i := 1; i < len(hs); i++ {
		cur, prev := &hs[i].H, &hs[i-1].H
		if cur.DetectReset(prev) {
			kept += cur.Count
		} else {
			kept += cur.Count - prev.Count
		}
	}
	var want float64
	for i := 1; i < len(all); i++ {
		if all[i].t <= hs[0].T || all[i].t > hs[len(hs)-1].T {
			continue
		}
		if all[i].c < all[i-1].c {
			want += all[i].c
		} else {
			want += all[i].c - all[i-1].c
		}
	}
	assert.InDelta(t, want, kept, 1e-9)

	// Deleting the series gives its ring and log back.
	clk.ms.Store(clk.ms.Load() + 10*time.Minute.Milliseconds())
	s.Sweep()
	s.Sweep()
	assert.Zero(t, s.rl.used.Load())
	assert.Nil(t, s.hists.at(uint32(ref)).Load())
}

// With --max-sample-memory spent, histogram series are thinned (or
// refused a first log), and the budget is never exceeded.
func TestHistogramMemoryBudget(t *testing.T) {
	clk := &movingClock{}
	const budget = 64 << 10
	s := New(Config{Retention: time.Hour, Freshness: -1, MaxSampleMemory: budget}, Settings{Now: clk.now})
	var refs []SeriesRef
	for i := range 20 {
		refs = append(refs, mustCreateHist(t, s, uint64(i+1), "__name__", "h", "i", string(rune('a'+i))))
	}
	refused := 0
	for step := range 300 {
		ts := int64(1000 + step*1000)
		clk.ms.Store(ts)
		for _, ref := range refs {
			err := s.AppendHistogram(ref, ts, testHist(float64(step+1)))
			if err != nil {
				require.ErrorIs(t, err, ErrHistogramMemory)
				refused++
			}
		}
		// The first rings (48 B each) are always granted, as for floats.
		require.LessOrEqual(t, s.rl.used.Load(), int64(budget+48*len(refs)))
		require.Equal(t, memoryUsed(s), s.rl.used.Load())
	}
	for _, ref := range refs {
		_, hs := histsOf(s, ref)
		if len(hs) > 0 {
			assert.Equal(t, int64(300_000), hs[len(hs)-1].T, "the newest sample is always the last pushed")
		}
	}
	assert.Positive(t, s.m.thinnedMem.load(), "the budget thinned the rings")
	t.Logf("refused %d of %d, thinned %d", refused, 300*len(refs), s.m.thinnedMem.load())
}

// Readers racing a writer that grows, compacts and thins the log always
// get whole histograms: each sample's histogram is a function of its
// time.
func TestHistogramConcurrentReads(t *testing.T) {
	clk := &movingClock{}
	s := New(Config{Retention: 5 * time.Second, Freshness: -1, MaxSamplesPerSeries: 16}, Settings{Now: clk.now})
	ref := mustCreateHist(t, s, 1, "__name__", "h")
	h := s.Handle(ref)
	var stop atomic.Bool
	var wg sync.WaitGroup
	check := func(ts int64, fh *histogram.FloatHistogram) {
		want := testHist(float64(ts))
		if ts%3 == 0 {
			want = wideHist(float64(ts))
		}
		if !want.Equals(fh) {
			t.Errorf("torn histogram at %d: %s", ts, fh)
			stop.Store(true)
		}
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var fs []Sample
			var hs []HSample
			var fh histogram.FloatHistogram
			for !stop.Load() {
				rd := s.Reader()
				fs, hs = rd.RangeHistograms(h, math.MinInt64+1, math.MaxInt64, fs[:0], hs[:0])
				for i := range hs {
					check(hs[i].T, &hs[i].H)
				}
				if smp, isHist, ok := rd.LatestHistogram(h, math.MaxInt64, &fh); ok && isHist {
					check(smp.T, &fh)
				}
			}
		}()
	}
	for i := int64(1); i <= 20_000 && !stop.Load(); i++ {
		ts := i * 10
		clk.ms.Store(ts)
		fh := testHist(float64(ts))
		if ts%3 == 0 {
			fh = wideHist(float64(ts))
		}
		require.NoError(t, s.AppendHistogram(ref, ts, fh))
	}
	stop.Store(true)
	wg.Wait()
}

// wideHist has more buckets than testHist, so entries differ in size.
func wideHist(k float64) *histogram.FloatHistogram {
	b := make([]float64, 40)
	for i := range b {
		b[i] = k
	}
	return &histogram.FloatHistogram{
		Schema: 2, ZeroThreshold: 1e-128, Count: 40 * k, Sum: k,
		PositiveSpans:   []histogram.Span{{Offset: -5, Length: 20}, {Offset: 3, Length: 20}},
		PositiveBuckets: b,
	}
}

func TestHistogramSnapshotRoundTrip(t *testing.T) {
	s := New(Config{Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	ref := mustCreateHist(t, s, 1, "__name__", "h", "pod", "a")
	custom := &histogram.FloatHistogram{
		Schema: histogram.CustomBucketsSchema, Count: 3, Sum: 9,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []float64{1, 2},
		CustomValues: []float64{0.5, 1},
	}
	g := testHist(3)
	g.CounterResetHint = histogram.GaugeType
	require.NoError(t, s.AppendHistogram(ref, 900_000, testHist(1)))
	require.NoError(t, s.AppendHistogram(ref, 901_000, testHist(2)))
	require.NoError(t, s.Append(ref, 902_000, 7))
	require.NoError(t, s.AppendHistogram(ref, 903_000, custom))
	require.NoError(t, s.AppendHistogram(ref, 904_000, g))
	mustCreate(t, s, 2, "__name__", "f")
	require.NoError(t, s.Append(2, 900_000, 1))
	var buf bytes.Buffer
	require.NoError(t, s.WriteSnapshot(&buf))

	r := New(Config{Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	n, newest, err := r.ReadSnapshot(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, int64(904_000), newest)
	rref := mustLookup(t, r, 1)
	assert.True(t, r.IsHistogramSeries(rref))
	assert.False(t, r.IsHistogramSeries(mustLookup(t, r, 2)))
	wantF, wantH := histsOf(s, ref)
	gotF, gotH := histsOf(r, rref)
	assert.Equal(t, wantF, gotF)
	require.Len(t, gotH, len(wantH))
	for i := range wantH {
		assert.Equal(t, wantH[i].T, gotH[i].T)
		assert.True(t, wantH[i].H.Equals(&gotH[i].H))
		assert.Equal(t, wantH[i].H.CounterResetHint, gotH[i].H.CounterResetHint, "sample %d", i)
	}
}

// Appending histograms to a series whose log has reached its size, and
// reading them back, allocates nothing.
func TestHistogramHotPathsDoNotAllocate(t *testing.T) {
	clk := &movingClock{}
	s := New(Config{Retention: time.Minute, Freshness: -1}, Settings{Now: clk.now})
	ref := mustCreateHist(t, s, 1, "__name__", "h")
	ts := int64(0)
	push := func() {
		ts += 1000
		clk.ms.Store(ts)
		if err := s.AppendHistogram(ref, ts, testHist(float64(ts))); err != nil {
			t.Fatal(err)
		}
	}
	for range 1000 {
		push()
	}
	assert.Zero(t, fewestAllocs(push))
	h := s.Handle(ref)
	var fh histogram.FloatHistogram
	var fs []Sample
	var hs []HSample
	read := func() {
		rd := s.Reader()
		rd.LatestHistogram(h, ts, &fh)
		fs, hs = rd.RangeHistograms(h, ts-30_000, ts, fs[:0], hs[:0])
	}
	read()
	assert.Zero(t, fewestAllocs(read))
}

// fewestAllocs is testing.AllocsPerRun(200, f) at its lowest over three
// measurements. AllocsPerRun counts every goroutine's allocations, and
// under -race in a loaded CI run something else in the process (a
// previous test's goroutine ending, the race runtime) once added one per
// run; an allocation of f's own shows in all three.
func fewestAllocs(f func()) float64 {
	fewest := testing.AllocsPerRun(200, f)
	for range 2 {
		fewest = min(fewest, testing.AllocsPerRun(200, f))
	}
	return fewest
}
