package store

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func fixedClock(ms int64) func() time.Time { return func() time.Time { return time.UnixMilli(ms) } }

func TestAppendOrderAndDuplicates(t *testing.T) {
	s := New(Config{Freshness: -1}, Settings{Now: fixedClock(100_000)})
	ref, err := s.Create(1, labels.FromStrings("__name__", "x"))
	require.NoError(t, err)
	require.NoError(t, s.Append(ref, 10_000, 1))
	require.NoError(t, s.Append(ref, 20_000, 2))
	require.NoError(t, s.Append(ref, 20_000, 2), "same time and value is dropped silently")
	require.ErrorIs(t, s.Append(ref, 20_000, 3), ErrDuplicateTimestamp)
	require.ErrorIs(t, s.Append(ref, 15_000, 3), ErrOutOfOrder)
	require.NoError(t, s.Append(ref, 15_000, math.Float64frombits(value.StaleNaN)), "late stale marker is ignored")
	assert.Equal(t, []Sample{{10_000, 1}, {20_000, 2}}, s.Range(nil, ref, 0, 100_000))
}

func TestRingWrapsAtCapacity(t *testing.T) {
	s := New(Config{Freshness: -1, MaxSamplesPerSeries: 16}, Settings{Now: fixedClock(100_000)})
	ref, err := s.Create(1, labels.FromStrings("__name__", "x"))
	require.NoError(t, err)
	for i := range 40 {
		require.NoError(t, s.Append(ref, int64(i+1)*1000, float64(i+1)))
	}
	got := s.Range(nil, ref, 0, 100_000)
	require.Len(t, got, 16)
	assert.Equal(t, Sample{25_000, 25}, got[0])
	assert.Equal(t, Sample{40_000, 40}, got[15])
}

func TestLatestFreshness(t *testing.T) {
	s := New(Config{Freshness: 30 * time.Second}, Settings{Now: fixedClock(100_000)})
	ref, err := s.Create(1, labels.FromStrings("__name__", "x"))
	require.NoError(t, err)
	require.NoError(t, s.Append(ref, 50_000, 5))
	got, ok := s.Latest(ref, 79_999)
	require.True(t, ok)
	assert.Equal(t, Sample{50_000, 5}, got)
	got, ok = s.Latest(ref, 80_000)
	require.True(t, ok)
	assert.True(t, value.IsStaleNaN(got.V), "silent series ends at last + freshness")
}

func TestSeriesLimit(t *testing.T) {
	s := New(Config{MaxSeries: 2}, Settings{})
	_, err := s.Create(1, labels.FromStrings("__name__", "x", "i", "1"))
	require.NoError(t, err)
	_, err = s.Create(2, labels.FromStrings("__name__", "x", "i", "2"))
	require.NoError(t, err)
	_, err = s.Create(3, labels.FromStrings("__name__", "x", "i", "3"))
	require.ErrorIs(t, err, ErrSeriesLimit)
	ref, err := s.Create(1, labels.FromStrings("__name__", "x", "i", "1"))
	require.NoError(t, err, "existing series keep working")
	assert.Equal(t, "1", s.Labels(ref).Get("i"))
}

func TestSelect(t *testing.T) {
	s := New(Config{}, Settings{})
	for i, pod := range []string{"a", "b", "c"} {
		_, err := s.Create(uint64(i+1), labels.FromStrings("__name__", "x", "pod", pod))
		require.NoError(t, err)
	}
	refs := s.Select(nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "x"), labels.MustNewMatcher(labels.MatchRegexp, "pod", "a|c"))
	require.Len(t, refs, 2)
	assert.Equal(t, "a", s.Labels(refs[0]).Get("pod"))
	assert.Equal(t, "c", s.Labels(refs[1]).Get("pod"))
}
