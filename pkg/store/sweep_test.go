package store

import (
	"context"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A pod that dies sends nothing: its series disappear once silent for the
// TTL, under the background sweeper, while live series stay.
func TestSweeperRemovesSilentSeries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New(Config{Retention: 2 * time.Minute, SeriesTTL: 90 * time.Second, SweepInterval: 10 * time.Second}, Settings{})
		require.NoError(t, s.Start(t.Context()))
		dead := mustCreate(t, s, 1, "__name__", "x", "pod", "dead")
		live := mustCreate(t, s, 2, "__name__", "x", "pod", "live")
		now := func() int64 { return time.Now().UnixMilli() }
		require.NoError(t, s.Append(dead, now(), 1))
		gen := s.Generation()
		for range 12 { // 120 s, the live pod pushes every 10 s
			require.NoError(t, s.Append(live, now(), 1))
			time.Sleep(10 * time.Second)
			synctest.Wait()
		}
		assert.Equal(t, 1, s.NumSeries(), "the silent series expired")
		assert.NotEqual(t, gen, s.Generation(), "deletion moves the generation")
		_, ok := s.Lookup(1)
		assert.False(t, ok)
		_, ok = s.Latest(dead, math.MaxInt64)
		assert.False(t, ok, "a deleted ref reads nothing")
		assert.Empty(t, s.Range(nil, dead, 0, math.MaxInt64))
		assert.True(t, s.Labels(dead).IsEmpty())
		require.ErrorIs(t, s.Append(dead, now(), 1), ErrUnknownSeries)
		assert.Equal(t, []SeriesRef{live}, s.Select(nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "x")))
		assert.Empty(t, s.Select(nil, labels.MustNewMatcher(labels.MatchEqual, "pod", "dead")))
		assert.InDelta(t, 1, testutil.ToFloat64(s.m.removed), 0)

		// A new point re-creates the series, under a fresh ref.
		again := mustCreate(t, s, 1, "__name__", "x", "pod", "dead")
		require.NoError(t, s.Append(again, now(), 2))
		assert.Equal(t, 2, s.NumSeries())
		assert.Equal(t, "dead", s.Labels(again).Get("pod"))

		require.NoError(t, s.Shutdown(t.Context()))
		require.NoError(t, s.Shutdown(t.Context()), "idempotent")
	})
}

func TestShutdownWithoutStart(t *testing.T) {
	s := New(Config{}, Settings{})
	require.NoError(t, s.Shutdown(context.Background()))
	require.NoError(t, s.Start(context.Background()), "start after shutdown does nothing")
	require.NoError(t, s.Shutdown(context.Background()))
}

// Freed refs are quarantined for one sweep, and a re-used ref never
// carries the old series' labels or samples.
func TestDeletedRefReuse(t *testing.T) {
	clk := &movingClock{}
	clk.ms.Store(1_000_000)
	s := New(Config{Retention: time.Minute, Freshness: -1}, Settings{Now: clk.now})
	old := mustCreate(t, s, 1, "__name__", "x", "pod", "old")
	require.NoError(t, s.Append(old, 1_000_000, 1))
	clk.ms.Store(1_100_000)
	gen := s.Generation()
	require.Equal(t, 1, s.Sweep())
	assert.NotEqual(t, gen, s.Generation())
	other := mustCreate(t, s, 2, "__name__", "y", "pod", "new")
	assert.NotEqual(t, old, other, "not reused before the next sweep")
	assert.Equal(t, 0, s.Sweep())
	reused := mustCreate(t, s, 3, "__name__", "z", "pod", "newer")
	assert.Equal(t, old, reused, "reused after the quarantine")
	assert.Equal(t, "z", s.Labels(reused).Get("__name__"))
	assert.Empty(t, s.Range(nil, reused, 0, math.MaxInt64), "no samples of the old series")
	assert.Empty(t, s.Select(nil, labels.MustNewMatcher(labels.MatchEqual, "pod", "old")))
	assert.Equal(t, []SeriesRef{reused}, s.Select(nil, labels.MustNewMatcher(labels.MatchRegexp, "pod", "ne.*"), labels.MustNewMatcher(labels.MatchEqual, "__name__", "z")))
}

// A series created but never appended to survives one sweep (its first
// sample may be on its way) and is deleted by the second.
func TestSweepEmptySeries(t *testing.T) {
	s := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	mustCreate(t, s, 1, "__name__", "x")
	assert.Equal(t, 0, s.Sweep())
	assert.Equal(t, 1, s.NumSeries())
	assert.Equal(t, 1, s.Sweep())
	assert.Equal(t, 0, s.NumSeries())
}

// Many deletions leave the index, postings and label sets consistent.
func TestSweepChurn(t *testing.T) {
	clk := &movingClock{}
	s := New(Config{Retention: time.Minute, Freshness: -1}, Settings{Now: clk.now})
	nm := labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")
	ts := int64(1_000_000)
	for round := range 5 {
		clk.ms.Store(ts)
		for i := range 1000 {
			h := uint64(round*1000 + i + 1)
			ref := mustCreate(t, s, h, "__name__", "m", "pod", string(rune('a'+round)), "i", string(rune('a'+i%7)))
			require.NoError(t, s.Append(ref, ts, float64(h)))
		}
		require.Len(t, s.Select(nil, nm), 1000)
		ts += 2 * time.Minute.Milliseconds()
		clk.ms.Store(ts)
		require.Equal(t, 1000, s.Sweep())
		require.Equal(t, 0, s.NumSeries())
		require.Empty(t, s.Select(nil, nm))
	}
	s.mu.Lock()
	assert.Empty(t, s.setIDs, "label sets are released")
	assert.Empty(t, s.perMetric)
	s.mu.Unlock()
	assert.LessOrEqual(t, s.nextRef.Load(), uint32(2001), "refs are reused")
}

// While the loop runs, the retention edge follows the refreshed clock.
func TestClockRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New(Config{Retention: time.Minute, SeriesTTL: time.Hour}, Settings{})
		require.NoError(t, s.Start(t.Context()))
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		ref := mustCreate(t, s, 1, "__name__", "x")
		now := time.Now().UnixMilli()
		require.ErrorIs(t, s.Append(ref, now-61_000, 1), ErrTooOld)
		require.NoError(t, s.Append(mustCreate(t, s, 2, "__name__", "y"), now-59_000, 1))
		require.NoError(t, s.Append(ref, now-10_000, 2))
		time.Sleep(30 * time.Second)
		synctest.Wait()
		got, ok := s.Latest(ref, time.Now().UnixMilli())
		require.True(t, ok)
		assert.True(t, value.IsStaleNaN(got.V))
		assert.Equal(t, now-10_000+30_000, got.T, "silent: ended at T+30s by freshness")
		time.Sleep(time.Minute)
		synctest.Wait()
		_, ok = s.Latest(ref, time.Now().UnixMilli())
		assert.False(t, ok, "past retention")
		require.NoError(t, s.Shutdown(t.Context()))
		assert.Zero(t, s.clock.Load(), "reads the clock directly again")
	})
}

func TestLabelNamesAndValues(t *testing.T) {
	clk := &movingClock{}
	clk.ms.Store(1_000_000)
	s := New(Config{Retention: time.Minute}, Settings{Now: clk.now})
	a := mustCreate(t, s, 1, "__name__", "up", "pod", "b", "zone", "z1")
	require.NoError(t, s.Append(a, 1_000_000, 1))
	clk.ms.Store(1_030_000)
	b := mustCreate(t, s, 2, "__name__", "down", "pod", "a")
	require.NoError(t, s.Append(b, 1_030_000, 1))
	assert.Equal(t, []string{"__name__", "pod", "zone"}, s.LabelNames(nil))
	assert.Equal(t, []string{"a", "b"}, s.LabelValues(nil, "pod"))
	assert.Equal(t, []string{"down", "up"}, s.LabelValues(nil, "__name__"))
	assert.Empty(t, s.LabelValues(nil, "nope"))

	clk.ms.Store(1_070_000) // a expires, b stays
	require.Equal(t, 1, s.Sweep())
	assert.Equal(t, []string{"__name__", "pod"}, s.LabelNames(nil), "zone only existed on the deleted series")
	assert.Equal(t, []string{"a"}, s.LabelValues(nil, "pod"))
	assert.Equal(t, []string{"down"}, s.LabelValues(nil, "__name__"))
}
