package store

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func fixedClock(ms int64) func() time.Time { return func() time.Time { return time.UnixMilli(ms) } }

// movingClock is a clock tests set explicitly.
type movingClock struct{ ms atomic.Int64 }

func (c *movingClock) now() time.Time { return time.UnixMilli(c.ms.Load()) }

var staleNaN = math.Float64frombits(value.StaleNaN)

func mustCreate(t *testing.T, s *Store, h uint64, kv ...string) SeriesRef {
	t.Helper()
	ref, err := s.Create(h, labels.FromStrings(kv...))
	require.NoError(t, err)
	return ref
}

func TestAppendOrderAndDuplicates(t *testing.T) {
	s := New(Config{Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	ref := mustCreate(t, s, 1, "__name__", "x")
	for _, tc := range []struct {
		name string
		t    int64
		v    float64
		want error
	}{
		{"first", 500_000, 1, nil},
		{"newer", 510_000, 2, nil},
		{"same time same value is dropped silently", 510_000, 2, nil},
		{"same time other value", 510_000, 3, ErrDuplicateTimestamp},
		{"older", 505_000, 3, ErrOutOfOrder},
		{"late stale marker is ignored", 505_000, staleNaN, nil},
		{"stale marker at newest is ignored", 510_000, staleNaN, nil},
		{"older than retention", 399_999, 1, ErrTooOld},
		{"stale marker older than retention is ignored", 399_999, staleNaN, nil},
		{"stale marker after newest is stored", 520_000, staleNaN, nil},
		{"resumes after a marker", 530_000, 4, nil},
	} {
		err := s.Append(ref, tc.t, tc.v)
		if tc.want == nil {
			require.NoError(t, err, tc.name)
		} else {
			require.ErrorIs(t, err, tc.want, tc.name)
		}
	}
	require.ErrorIs(t, s.Append(999, 600_000, 1), ErrUnknownSeries)
	got := s.Range(nil, ref, 0, 1_000_000)
	require.Len(t, got, 4)
	assert.Equal(t, []Sample{{500_000, 1}, {510_000, 2}}, got[:2])
	assert.True(t, value.IsStaleNaN(got[2].V))
	assert.Equal(t, Sample{530_000, 4}, got[3])
}

// A full ring whose oldest sample has left the retention overwrites it.
func TestRingWrapsAtCapacity(t *testing.T) {
	clk := &movingClock{}
	s := New(Config{Retention: 15 * time.Second, Freshness: -1, MaxSamplesPerSeries: 16}, Settings{Now: clk.now})
	ref := mustCreate(t, s, 1, "__name__", "x")
	for i := range int64(40) {
		clk.ms.Store((i + 1) * 1000)
		require.NoError(t, s.Append(ref, (i+1)*1000, float64(i+1)))
	}
	got := s.Range(nil, ref, 0, 100_000)
	require.Len(t, got, 16)
	assert.Equal(t, Sample{25_000, 25}, got[0])
	assert.Equal(t, Sample{40_000, 40}, got[15])
	assert.Equal(t, 16, s.ringCap(ref))
	assert.Zero(t, s.m.thinnedCap.load()+s.m.thinnedMem.load(), "nothing within the retention was dropped")
}

// The ring grows to retention/interval + 1 slots, then overwrites the
// oldest sample: memory stays bounded however long the series lives.
func TestRingSizedFromRetention(t *testing.T) {
	for _, tc := range []struct {
		retention, interval time.Duration
		wantSlots           int
	}{
		{5 * time.Minute, 15 * time.Second, 21},
		{10 * time.Minute, 15 * time.Second, 41},
		{time.Minute, 5 * time.Second, 13},
		{10 * time.Minute, 60 * time.Second, 11},
	} {
		t.Run(fmt.Sprintf("retention=%v/interval=%v", tc.retention, tc.interval), func(t *testing.T) {
			clk := &movingClock{}
			s := New(Config{Retention: tc.retention, Freshness: -1}, Settings{Now: clk.now})
			ref := mustCreate(t, s, 1, "__name__", "x")
			iv := tc.interval.Milliseconds()
			const start = int64(1_700_000_000_000)
			var capAfter int
			for i := range int64(500) {
				ts := start + i*iv
				clk.ms.Store(ts)
				require.NoError(t, s.Append(ref, ts, float64(ts)))
				if i == 100 {
					capAfter = s.ringCap(ref)
				}
			}
			got := s.Range(nil, ref, 0, math.MaxInt64)
			require.Len(t, got, tc.wantSlots, "window = retention/interval + 1 samples")
			for i, smp := range got {
				assert.InDelta(t, float64(smp.T), smp.V, 0)
				if i > 0 {
					assert.Equal(t, iv, smp.T-got[i-1].T)
				}
			}
			assert.GreaterOrEqual(t, capAfter, tc.wantSlots)
			assert.Less(t, capAfter, tc.wantSlots+4, "capacity is sized, not doubled")
			assert.Equal(t, capAfter, s.ringCap(ref), "no growth once sized")
		})
	}
}

// ringCap exposes a series' ring capacity to tests.
func (s *Store) ringCap(ref SeriesRef) int {
	_, _, c := unpackMeta(s.get(ref).meta.Load())
	return c
}

func TestRetentionHidesOldSamples(t *testing.T) {
	clk := &movingClock{}
	clk.ms.Store(100_000)
	s := New(Config{Retention: time.Minute, Freshness: -1}, Settings{Now: clk.now})
	ref := mustCreate(t, s, 1, "__name__", "x")
	for ts := int64(50_000); ts <= 100_000; ts += 10_000 {
		require.NoError(t, s.Append(ref, ts, float64(ts)))
	}
	assert.Len(t, s.Range(nil, ref, 0, math.MaxInt64), 6)
	clk.ms.Store(125_000) // now-retention = 65_000
	got := s.Range(nil, ref, 0, math.MaxInt64)
	require.Len(t, got, 4)
	assert.Equal(t, int64(70_000), got[0].T)
	_, ok := s.Latest(ref, 60_000)
	assert.False(t, ok, "the newest sample at or before maxt is past retention")
	clk.ms.Store(170_000)
	_, ok = s.Latest(ref, 170_000)
	assert.False(t, ok, "everything expired")
	assert.Empty(t, s.Range(nil, ref, 0, math.MaxInt64))
	require.ErrorIs(t, s.Append(ref, 100_001, 1), ErrTooOld)
}

// A series living longer than a uint32 of milliseconds (49.7 days) is
// re-based without losing or corrupting samples.
func TestRingRebase(t *testing.T) {
	clk := &movingClock{}
	s := New(Config{Retention: time.Hour, Freshness: -1}, Settings{Now: clk.now})
	ref := mustCreate(t, s, 1, "__name__", "x")
	const day = int64(24 * 3600 * 1000)
	ts := int64(1_700_000_000_000)
	for i := range 120 { // 60 days, a sample every 12 h, plus a dense hour at the end
		ts += day / 2
		if i >= 100 {
			ts = ts - day/2 + 5*60*1000
		}
		clk.ms.Store(ts)
		require.NoError(t, s.Append(ref, ts, float64(ts)))
	}
	got := s.Range(nil, ref, 0, math.MaxInt64)
	require.NotEmpty(t, got)
	for i, smp := range got {
		assert.InDelta(t, float64(smp.T), smp.V, 0)
		assert.GreaterOrEqual(t, smp.T, ts-time.Hour.Milliseconds())
		if i > 0 {
			assert.Greater(t, smp.T, got[i-1].T)
		}
	}
	assert.Equal(t, ts, got[len(got)-1].T)
}

func TestLatestFreshness(t *testing.T) {
	const last = int64(500_000)
	for _, tc := range []struct {
		name      string
		freshness time.Duration
		retention time.Duration
		times     []int64 // appended with value = index+1
		maxt      int64
		want      Sample
		stale     bool // want a synthetic stale marker at want.T
	}{
		{"fresh, floor", 30 * time.Second, 0, []int64{last}, last + 29_999, Sample{last, 1}, false},
		{"silent past floor", 30 * time.Second, 0, []int64{last}, last + 30_000, Sample{T: last + 30_000}, true},
		{"slow sender: 3 × interval", 30 * time.Second, 0, []int64{last - 60_000, last}, last + 179_999, Sample{last, 2}, false},
		{"slow sender ends at 3 × interval", 30 * time.Second, 0, []int64{last - 60_000, last}, last + 180_000, Sample{T: last + 180_000}, true},
		{"fast sender keeps the floor", 30 * time.Second, 0, []int64{last - 1_000, last}, last + 29_000, Sample{last, 2}, false},
		{"capped at retention", 30 * time.Second, 2 * time.Minute, []int64{last - 50_000, last}, last + 120_000, Sample{T: last + 120_000}, true},
		{"disabled", -1, 0, []int64{last}, last + 1_000_000, Sample{last, 1}, false},
		{"silent gap before a later sample", 30 * time.Second, 0, []int64{last - 100_000, last}, last - 50_000, Sample{T: last - 70_000}, true},
		{"maxt before first sample", 30 * time.Second, 0, []int64{last}, last - 1, Sample{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Config{Freshness: tc.freshness, Retention: tc.retention}, Settings{Now: fixedClock(last + 60_000)})
			ref := mustCreate(t, s, 1, "__name__", "x")
			for i, ts := range tc.times {
				require.NoError(t, s.Append(ref, ts, float64(i+1)))
			}
			got, ok := s.Latest(ref, tc.maxt)
			if tc.want == (Sample{}) {
				assert.False(t, ok)
				return
			}
			require.True(t, ok)
			if tc.stale {
				assert.True(t, value.IsStaleNaN(got.V), "got %v", got)
				assert.Equal(t, tc.want.T, got.T)
				return
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestLimits(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := New(Config{MaxSeries: 3, MaxSeriesPerMetric: 2, MaxLabelsPerSeries: 4, MaxLabelNameLength: 8, MaxLabelValueLength: 8},
		Settings{Registerer: reg, Now: fixedClock(100_000)})
	a := mustCreate(t, s, 1, "__name__", "x", "i", "1")
	mustCreate(t, s, 2, "__name__", "x", "i", "2")
	for _, tc := range []struct {
		name string
		h    uint64
		lset []string
		want error
	}{
		{"per metric", 3, []string{"__name__", "x", "i", "3"}, ErrSeriesPerMetricLimit},
		{"too many labels", 4, []string{"__name__", "y", "a", "1", "b", "2", "c", "3", "d", "4"}, ErrTooManyLabels},
		{"name too long", 4, []string{"__name__", "y", "abcdefghi", "1"}, ErrLabelNameTooLong},
		{"value too long", 4, []string{"__name__", "y", "a", "123456789"}, ErrLabelValueTooLong},
		{"other metric fits", 4, []string{"__name__", "y"}, nil},
		{"total", 5, []string{"__name__", "z"}, ErrSeriesLimit},
		{"existing series keep working", 1, []string{"__name__", "x", "i", "1"}, nil},
	} {
		_, err := s.Create(tc.h, labels.FromStrings(tc.lset...))
		if tc.want == nil {
			require.NoError(t, err, tc.name)
		} else {
			require.ErrorIs(t, err, tc.want, tc.name)
		}
	}
	assert.Equal(t, 3, s.NumSeries())
	require.NoError(t, s.Append(a, 90_000, 1), "a rejection never affects existing series")
	assert.Equal(t, "1", s.Labels(a).Get("i"))
	for reason, want := range map[string]float64{
		reasonSeriesLimit: 1, reasonSeriesPerMetric: 1, reasonTooManyLabels: 1,
		reasonLabelNameTooLong: 1, reasonLabelValueTooLong: 1,
	} {
		assert.InDelta(t, want, testutil.ToFloat64(s.m.rejected[reason]), 0, reason)
	}
	assert.InDelta(t, 3, testutil.ToFloat64(s.m.created), 0)
	n, err := testutil.GatherAndCount(reg,
		"keda_otel_scaler_store_series", "keda_otel_scaler_store_samples_appended_total",
		"keda_otel_scaler_store_memory_bytes", "keda_otel_scaler_store_series_created_total")
	require.NoError(t, err)
	assert.Equal(t, 4, n)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP keda_otel_scaler_store_series Live series in the store.
# TYPE keda_otel_scaler_store_series gauge
keda_otel_scaler_store_series 3
# HELP keda_otel_scaler_store_samples_appended_total Samples appended to the store.
# TYPE keda_otel_scaler_store_samples_appended_total counter
keda_otel_scaler_store_samples_appended_total 1
`), "keda_otel_scaler_store_series", "keda_otel_scaler_store_samples_appended_total"))
}

func TestCreateIsIdempotentAndLabelsRoundTrip(t *testing.T) {
	s := New(Config{}, Settings{})
	g0 := s.Generation()
	lset := labels.FromStrings("__name__", "vllm:num_requests_running", "Upper", "u", "engine", "0", "model_name", "qwen", "pod", "p-1")
	ref, err := s.Create(42, lset)
	require.NoError(t, err)
	g1 := s.Generation()
	assert.NotEqual(t, g0, g1)
	again, err := s.Create(42, lset)
	require.NoError(t, err)
	assert.Equal(t, ref, again)
	assert.Equal(t, g1, s.Generation(), "an existing series does not move the generation")
	got, ok := s.Lookup(42)
	require.True(t, ok)
	assert.Equal(t, ref, got)
	assert.Equal(t, lset, s.Labels(ref))
	assert.Equal(t, lset, s.Labels(ref), "cached")
	mid, ok := s.SeriesMetricID(ref)
	require.True(t, ok)
	assert.Equal(t, s.MetricID("vllm:num_requests_running"), mid)
	assert.NotEqual(t, s.MetricID("other"), mid)
	_, ok = s.Lookup(43)
	assert.False(t, ok)
	assert.True(t, s.Labels(999).IsEmpty())
	_, ok = s.SeriesMetricID(999)
	assert.False(t, ok)
	// Identity 0 is a valid hash.
	z, err := s.Create(0, labels.FromStrings("__name__", "zero"))
	require.NoError(t, err)
	got, ok = s.Lookup(0)
	require.True(t, ok)
	assert.Equal(t, z, got)
}

func TestSelect(t *testing.T) {
	s := New(Config{}, Settings{})
	type ser struct {
		h    uint64
		lset []string
	}
	for _, x := range []ser{
		{1, []string{"__name__", "x", "pod", "a", "ns", "n1"}},
		{2, []string{"__name__", "x", "pod", "b", "ns", "n1"}},
		{3, []string{"__name__", "x", "pod", "c"}},
		{4, []string{"__name__", "y", "pod", "a", "ns", "n2"}},
	} {
		mustCreate(t, s, x.h, x.lset...)
	}
	m := labels.MustNewMatcher
	for _, tc := range []struct {
		name string
		ms   []*labels.Matcher
		want []string // name/pod of each result
	}{
		{"name", []*labels.Matcher{m(labels.MatchEqual, "__name__", "x")}, []string{"x/a", "x/b", "x/c"}},
		{"name and regex", []*labels.Matcher{m(labels.MatchEqual, "__name__", "x"), m(labels.MatchRegexp, "pod", "a|c")}, []string{"x/a", "x/c"}},
		{"absent label equals empty", []*labels.Matcher{m(labels.MatchEqual, "__name__", "x"), m(labels.MatchEqual, "ns", "")}, []string{"x/c"}},
		{"not equal keeps absent", []*labels.Matcher{m(labels.MatchEqual, "__name__", "x"), m(labels.MatchNotEqual, "ns", "n1")}, []string{"x/c"}},
		{"no name, equality", []*labels.Matcher{m(labels.MatchEqual, "pod", "a")}, []string{"x/a", "y/a"}},
		{"no name, regex only", []*labels.Matcher{m(labels.MatchRegexp, "ns", "n.*")}, []string{"x/a", "x/b", "y/a"}},
		{"name regex", []*labels.Matcher{m(labels.MatchRegexp, "__name__", "x|y"), m(labels.MatchNotRegexp, "pod", "b")}, []string{"x/a", "x/c", "y/a"}},
		{"only empty-matching", []*labels.Matcher{m(labels.MatchNotEqual, "pod", "a")}, []string{"x/b", "x/c"}},
		{"unknown value", []*labels.Matcher{m(labels.MatchEqual, "__name__", "nope")}, nil},
		{"unknown label name must be empty", []*labels.Matcher{m(labels.MatchEqual, "__name__", "x"), m(labels.MatchEqual, "zz", "")}, []string{"x/a", "x/b", "x/c"}},
		{"unknown label name regex", []*labels.Matcher{m(labels.MatchRegexp, "zz", ".+")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refs := s.Select([]SeriesRef{7}, tc.ms...)
			require.Equal(t, SeriesRef(7), refs[0], "appends to dst")
			var got []string
			for i, r := range refs[1:] {
				if i > 0 {
					assert.Less(t, refs[i], r, "ascending")
				}
				l := s.Labels(r)
				got = append(got, l.Get("__name__")+"/"+l.Get("pod"))
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// Concurrent Create calls for the same identities agree on one ref each.
func TestCreateConcurrent(t *testing.T) {
	s := New(Config{}, Settings{})
	const n, workers = 2000, 4
	got := make([][]SeriesRef, workers)
	var wg sync.WaitGroup
	for w := range workers {
		got[w] = make([]SeriesRef, n)
		wg.Go(func() {
			for i := range n {
				j := (i + w*n/workers) % n
				ref, err := s.Create(uint64(j+1), labels.FromStrings("__name__", "m", "i", strconv.Itoa(j)))
				if err != nil {
					t.Error(err)
					return
				}
				got[w][j] = ref
			}
		})
	}
	wg.Wait()
	require.Equal(t, n, s.NumSeries())
	for w := 1; w < workers; w++ {
		assert.Equal(t, got[0], got[w])
	}
	for j, ref := range got[0] {
		assert.Equal(t, strconv.Itoa(j), s.Labels(ref).Get("i"))
	}
}

// The ingest and evaluation paths do not allocate once a series' ring has
// reached its size (performance.md gates T1 and T6 on exact allocs).
func TestHotPathsDoNotAllocate(t *testing.T) {
	s := New(Config{Retention: 5 * time.Minute}, Settings{Now: fixedClock(1_000_000)})
	ref := mustCreate(t, s, 7, "__name__", "m", "pod", "p")
	ts := int64(1_000_000)
	for range 30 {
		require.NoError(t, s.Append(ref, ts, 1))
		ts += 15_000
	}
	_ = s.Labels(ref) // builds the cache once
	dst := make([]Sample, 0, 64)
	app := s.Appender()
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"append", func() { _ = s.Append(ref, ts, 1); ts += 15_000 }},
		{"append_start", func() { _ = app.Append(ref, 1_000, ts, 1); ts += 15_000 }},
		{"appender_commit", func() { _ = app.Append(ref, 0, ts, 1); app.Commit(); ts += 15_000 }},
		{"append_duplicate", func() { _ = s.Append(ref, ts-15_000, 1) }},
		{"append_out_of_order", func() { _ = s.Append(ref, ts-100_000, 2) }},
		{"lookup", func() { _, _ = s.Lookup(7) }},
		{"series_metric_id", func() { _, _ = s.SeriesMetricID(ref) }},
		{"latest", func() { _, _ = s.Latest(ref, ts) }},
		{"range", func() { dst = s.Range(dst[:0], ref, ts-300_000, ts) }},
		{"labels", func() { _ = s.Labels(ref) }},
		{"generation", func() { _ = s.Generation() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Zero(t, testing.AllocsPerRun(100, tc.f))
		})
	}
}

// TestIndexKeysWithZeroLowHalf checks identities whose stored key needs
// fixing (index slots mark emptiness with a zero low half): each is found,
// they stay apart from their neighbours, and a snapshot carries them over.
func TestIndexKeysWithZeroLowHalf(t *testing.T) {
	hashes := []uint64{0, 1, 1 << 32, 1<<32 | 2, 0xdead_beef_0000_0000, 0xdead_beef_0000_0002, ^uint64(0)}
	s := New(Config{}, Settings{})
	refs := map[uint64]SeriesRef{}
	for i, h := range hashes {
		ref, err := s.Create(h, labels.FromStrings("__name__", "m", "i", strconv.Itoa(i)))
		require.NoError(t, err)
		refs[h] = ref
		require.NoError(t, s.Append(ref, time.Now().UnixMilli(), float64(i)))
	}
	for i, h := range hashes {
		got, ok := s.Lookup(h)
		require.True(t, ok, "hash %#x", h)
		assert.Equal(t, refs[h], got, "hash %#x", h)
		assert.Equal(t, strconv.Itoa(i), s.Labels(got).Get("i"))
	}
	var buf bytes.Buffer
	require.NoError(t, s.WriteSnapshot(&buf))
	s2 := New(Config{}, Settings{})
	n, _, err := s2.ReadSnapshot(&buf)
	require.NoError(t, err)
	require.Equal(t, len(hashes), n)
	for i, h := range hashes {
		got, ok := s2.Lookup(h)
		require.True(t, ok, "restored hash %#x", h)
		assert.Equal(t, strconv.Itoa(i), s2.Labels(got).Get("i"))
	}
}

// TestPrefetchWhileAppending runs Prefetch and PrefetchAll against series
// whose rings grow, re-base and wrap and whose start times are recorded
// under concurrent appends (run with -race): they must never fault or
// block, and they change nothing. PrefetchAll gets more refs than one
// group of passes holds, with 0 and unknown refs among them.
func TestPrefetchWhileAppending(t *testing.T) {
	t.Parallel()
	s := New(Config{MaxSamplesPerSeries: 64}, Settings{})
	var refs []SeriesRef
	for i := range 16 {
		ref, err := s.Create(uint64(i+1), labels.FromStrings("__name__", "m", "i", strconv.Itoa(i)))
		require.NoError(t, err)
		refs = append(refs, ref)
	}
	t0 := time.Now().UnixMilli() - 60_000
	var wg sync.WaitGroup
	wg.Go(func() {
		for k := range 2000 {
			for i, ref := range refs {
				if i%2 == 0 {
					_ = s.Append(ref, t0+int64(k), float64(k))
				} else {
					_, _ = appendStart(s, ref, t0+int64(k), float64(k), t0-int64(k%3))
				}
			}
		}
	})
	var all []SeriesRef
	for len(all) < 2*prefetchBatch+5 {
		all = append(all, refs...)
		all = append(all, 0, SeriesRef(1<<20))
	}
	for range 2000 {
		for _, ref := range refs {
			s.Prefetch(ref)
		}
		s.Prefetch(SeriesRef(1 << 20)) // unknown: nothing
		s.PrefetchAll(all)
	}
	wg.Wait()
	for _, ref := range refs {
		last, ok := s.LastSampleTime(ref)
		require.True(t, ok)
		assert.Equal(t, t0+1999, last)
	}
}

// TestAppenderCommit checks that an Appender counts exactly the samples it
// stores, with or without a start time, leaves the store's counter alone
// until Commit, and otherwise behaves as Store.Append.
func TestAppenderCommit(t *testing.T) {
	t.Parallel()
	now := time.Now().UnixMilli()
	tests := []struct {
		name    string
		t       int64
		v       float64
		start   int64
		wantErr error
		wantN   uint64
	}{
		{"stored", now - 1000, 1, 0, nil, 1},
		{"duplicate dropped", now - 2000, 1, 0, nil, 0},
		{"duplicate timestamp", now - 2000, 2, 0, ErrDuplicateTimestamp, 0},
		{"out of order", now - 3000, 1, 0, ErrOutOfOrder, 0},
		{"too old", now - 3_600_000, 1, 0, ErrTooOld, 0},
		{"with start time", now - 1000, 5, now - 60_000, nil, 1},
		{"start time rejected", now - 3000, 5, now - 60_000, ErrOutOfOrder, 0},
		{"stale marker after", now - 1000, math.Float64frombits(value.StaleNaN), 0, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := New(Config{}, Settings{})
			ref, err := s.Create(1, labels.FromStrings("__name__", "m"))
			require.NoError(t, err)
			require.NoError(t, s.Append(ref, now-2000, 1))
			require.Equal(t, uint64(1), s.m.samples.load())
			a := s.Appender()
			require.ErrorIs(t, a.Append(ref, tt.start, tt.t, tt.v), tt.wantErr)
			require.Equal(t, uint64(1), s.m.samples.load(), "store counter untouched before Commit")
			assert.Equal(t, AppendStats{Appended: tt.wantN}, a.Commit())
			require.Equal(t, 1+tt.wantN, s.m.samples.load())
			assert.Equal(t, AppendStats{}, a.Commit(), "a second Commit adds nothing")
			require.Equal(t, 1+tt.wantN, s.m.samples.load())
		})
	}
	var zero Appender
	assert.Equal(t, AppendStats{}, zero.Commit(), "the zero Appender commits nothing")
}
