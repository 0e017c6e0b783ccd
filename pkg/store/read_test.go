package store

import (
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// windowSamples reads a window with the full read protocol (retry until
// Valid).
func windowSamples(rd Reader, h Handle, mint, maxt int64) []Sample {
	var win Window
	for {
		rd.Window(&win, h, mint, maxt)
		out := win.AppendTo(nil)
		if win.Valid() {
			return out
		}
	}
}

// TestReadPathMatchesStore checks the zero-copy read path (Handle, Reader,
// Window) against Store.Range and Store.Latest over rings in every shape
// (not yet grown, wrapped, grown by rebuild, re-based, with stale markers
// and irregular intervals), for every window bound around every sample.
func TestReadPathMatchesStore(t *testing.T) {
	const t0 = int64(1_700_000_000_000)
	cases := []struct {
		name      string
		cfg       Config
		times     []int64 // offsets from t0
		staleAt   int     // index of a stale marker, -1 for none
		nanAt     []int   // indices of ordinary NaN values
		now       int64   // offset of the clock from t0
		extraMaxt []int64
	}{
		{name: "empty", cfg: Config{Retention: time.Hour}, staleAt: -1},
		{name: "one sample", cfg: Config{Retention: time.Hour}, times: []int64{0}, staleAt: -1},
		{name: "regular not wrapped", cfg: Config{Retention: time.Hour}, times: steps(0, 15_000, 21), staleAt: -1},
		{name: "wrapped at the cap", cfg: Config{Retention: time.Hour, MaxSamplesPerSeries: 16}, times: steps(0, 15_000, 50), staleAt: -1},
		{name: "wrapped with a stale marker", cfg: Config{Retention: time.Hour, MaxSamplesPerSeries: 16}, times: steps(0, 10_000, 40), staleAt: 35},
		{name: "retention edge", cfg: Config{Retention: time.Minute}, times: steps(0, 7_000, 30), staleAt: -1, now: 29 * 7_000},
		{name: "irregular", cfg: Config{Retention: time.Hour}, times: []int64{0, 1, 2, 1000, 1001, 50_000, 50_500, 51_000, 120_000, 120_001, 300_000}, staleAt: 4},
		{name: "freshness on", cfg: Config{Retention: time.Hour, Freshness: 30 * time.Second}, times: steps(0, 15_000, 12), staleAt: -1, extraMaxt: []int64{200_000, 10_000_000}},
		{name: "ordinary NaNs", cfg: Config{Retention: time.Hour}, times: steps(0, 15_000, 14), staleAt: 9, nanAt: []int{0, 4, 5, 12}},
		{name: "ordinary NaNs wrapped", cfg: Config{Retention: time.Hour, MaxSamplesPerSeries: 16}, times: steps(0, 10_000, 40), staleAt: -1, nanAt: []int{17, 30, 39}},
		{name: "freshness off", cfg: Config{Retention: time.Hour, Freshness: -1}, times: steps(0, 15_000, 12), staleAt: -1, extraMaxt: []int64{200_000}},
	}
	for _, tc := range cases {
		t.Run("case="+tc.name, func(t *testing.T) {
			now := t0 + tc.now
			if len(tc.times) > 0 && tc.now == 0 {
				now = t0 + tc.times[len(tc.times)-1]
			}
			clk := &movingClock{}
			clk.ms.Store(t0)
			s := New(tc.cfg, Settings{Now: clk.now})
			ref := mustCreate(t, s, 1, "__name__", "m")
			for i, off := range tc.times {
				clk.ms.Store(t0 + off)
				v := float64(i%7) * 1.5 // counter-like, with resets
				if i == tc.staleAt {
					v = staleNaN
				}
				if slices.Contains(tc.nanAt, i) {
					v = math.NaN()
				}
				require.NoError(t, s.Append(ref, t0+off, v))
			}
			clk.ms.Store(now)
			h := s.Handle(ref)
			require.False(t, h.IsZero())
			rd := s.Reader()
			bounds := []int64{math.MinInt64 / 2, 0, t0 - 1, math.MaxInt64 / 2}
			for _, off := range append(tc.times, tc.extraMaxt...) {
				bounds = append(bounds, t0+off-1, t0+off, t0+off+1)
			}
			var reused Scan
			for _, mint := range bounds {
				for _, maxt := range bounds {
					want := s.Range(nil, ref, mint, maxt)
					got := windowSamples(rd, h, mint, maxt)
					if !sameSamples(want, got) {
						t.Fatalf("window (%d, %d]: got %v, want %v", mint-t0, maxt-t0, got, want)
					}
					var wantScan, gotScan Scan
					var win Window
					rd.Window(&win, h, mint, maxt)
					win.Scan(&wantScan)
					require.True(t, win.Valid())
					if total := rd.ScanRange(&gotScan, h, mint, maxt); total != len(want) || !sameScan(gotScan, wantScan) || !sameScan(wantScan, scanOf(want)) {
						t.Fatalf("scan (%d, %d]: ScanRange %+v (%d samples), Window.Scan %+v, want %+v (%d samples)", mint-t0, maxt-t0, gotScan, total, wantScan, scanOf(want), len(want))
					}
					// Again into a Scan reused across all bounds: its last
					// range's length is ScanRange's guess, right or wrong.
					if total := rd.ScanRange(&reused, h, mint, maxt); total != len(want) || !sameScan(reused, wantScan) {
						t.Fatalf("scan (%d, %d] after another range: ScanRange %+v (%d samples), want %+v (%d samples)", mint-t0, maxt-t0, reused, total, wantScan, len(want))
					}
				}
				wantS, wantOK := s.Latest(ref, mint)
				gotS, gotOK := rd.Latest(h, mint)
				if wantOK != gotOK || !sameSamples([]Sample{wantS}, []Sample{gotS}) {
					t.Fatalf("latest at %d: got %v %v, want %v %v", mint-t0, gotS, gotOK, wantS, wantOK)
				}
			}
		})
	}
}

// scanOf is Scan computed the obvious way.
func scanOf(smps []Sample) Scan {
	var s Scan
	var prev float64
	for _, x := range smps {
		if value.IsStaleNaN(x.V) {
			continue
		}
		if s.N == 0 {
			s.FirstT, s.FirstV = x.T, x.V
		} else if x.V < prev {
			if s.Drops == 0 {
				s.FirstDrop = prev
			}
			s.Drops++
		}
		s.LastT, s.LastV, prev = x.T, x.V, x.V
		s.N++
	}
	return s
}

func sameScan(a, b Scan) bool {
	return a.N == b.N && a.FirstT == b.FirstT && a.LastT == b.LastT && a.Drops == b.Drops &&
		math.Float64bits(a.FirstV) == math.Float64bits(b.FirstV) && math.Float64bits(a.LastV) == math.Float64bits(b.LastV) &&
		math.Float64bits(a.FirstDrop) == math.Float64bits(b.FirstDrop)
}

func steps(from, step int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = from + int64(i)*step
	}
	return out
}

func sameSamples(a, b []Sample) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].T != b[i].T || math.Float64bits(a[i].V) != math.Float64bits(b[i].V) {
			return false
		}
	}
	return true
}

// TestHandleAfterDelete checks store.Handle's invariant: a handle to a
// deleted series reads nothing, even after its ref names a new series.
func TestHandleAfterDelete(t *testing.T) {
	clk := &movingClock{}
	clk.ms.Store(1_000_000)
	s := New(Config{Retention: time.Minute, SeriesTTL: time.Minute, Freshness: -1}, Settings{Now: clk.now})
	ref := mustCreate(t, s, 1, "__name__", "old")
	require.NoError(t, s.Append(ref, 1_000_000, 1))
	old := s.Handle(ref)
	g := s.Generation()
	clk.ms.Add(2 * time.Minute.Milliseconds())
	s.Sweep() // deletes the series
	s.Sweep() // the ref leaves quarantine
	require.NotEqual(t, g, s.Generation(), "deletion moves the generation")
	ref2 := mustCreate(t, s, 2, "__name__", "new")
	require.NoError(t, s.Append(ref2, clk.ms.Load(), 2))
	rd := s.Reader()
	assert.Empty(t, windowSamples(rd, old, 0, math.MaxInt64), "stale handle reads nothing")
	_, ok := rd.Latest(old, math.MaxInt64)
	assert.False(t, ok)
	assert.Len(t, windowSamples(rd, s.Handle(ref2), 0, math.MaxInt64), 1)
	assert.True(t, s.Handle(SeriesRef(1<<30)).IsZero(), "unknown ref")
	assert.Empty(t, windowSamples(rd, Handle{}, 0, math.MaxInt64))
}

// TestCreatedSince covers the creation log: new refs in creation order,
// unknown after a deletion or an overflow, and Filter over them.
func TestCreatedSince(t *testing.T) {
	clk := &movingClock{}
	clk.ms.Store(1_000_000)
	s := New(Config{Retention: time.Minute, SeriesTTL: time.Minute, Freshness: -1}, Settings{Now: clk.now})
	old := mustCreate(t, s, 1, "__name__", "m", "pod", "a")
	require.NoError(t, s.Append(old, clk.ms.Load(), 1))
	g := s.Generation()

	refs, cur, ok := s.CreatedSince(nil, g)
	require.True(t, ok)
	assert.Empty(t, refs)
	assert.Equal(t, g, cur)

	var want []SeriesRef
	for i, kv := range [][]string{{"__name__", "m", "pod", "b"}, {"__name__", "other"}, {"__name__", "m", "pod", "c"}} {
		ref := mustCreate(t, s, uint64(10+i), kv...)
		want = append(want, ref)
	}
	mustCreate(t, s, 10, "__name__", "m", "pod", "b") // exists: no new generation
	refs, cur, ok = s.CreatedSince(nil, g)
	require.True(t, ok)
	assert.Equal(t, want, refs)
	assert.Equal(t, s.Generation(), cur)
	m := labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")
	assert.Equal(t, []SeriesRef{want[0], want[2]}, s.Filter(nil, refs, m))
	assert.Equal(t, []SeriesRef{want[2]}, s.Filter(nil, refs, m, labels.MustNewMatcher(labels.MatchRegexp, "pod", "c|d")))
	assert.Empty(t, s.Filter(nil, refs, labels.MustNewMatcher(labels.MatchEqual, "__name__", "never_interned")))

	// A deletion: the log cannot answer for generations before it.
	g2 := s.Generation()
	clk.ms.Add(2 * time.Minute.Milliseconds())
	require.Positive(t, s.Sweep())
	_, _, ok = s.CreatedSince(nil, g)
	assert.False(t, ok, "deleted since")
	_, _, ok = s.CreatedSince(nil, g2)
	assert.False(t, ok, "deleted since")
	g3 := s.Generation()
	refs, _, ok = s.CreatedSince(nil, g3)
	assert.True(t, ok)
	assert.Empty(t, refs)

	// Overflow: more creations than the log holds.
	for i := range createLogSize + 1 {
		mustCreate(t, s, uint64(1000+i), "__name__", "churn", "i", strconv.Itoa(i))
	}
	_, _, ok = s.CreatedSince(nil, g3)
	assert.False(t, ok, "overflowed")
	refs, _, ok = s.CreatedSince(nil, s.Generation()-createLogSize)
	assert.True(t, ok, "exactly the log's size")
	assert.Len(t, refs, createLogSize)
}
