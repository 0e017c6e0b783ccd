package store

import (
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStatus(t *testing.T) {
	s := New(Config{MaxSeries: 100, MaxSeriesPerMetric: 50}, Settings{})
	for i, n := range []int{3, 7, 1, 2, 9, 4, 5} {
		for j := range n {
			lset := labels.FromStrings(labels.MetricName, "m"+strconv.Itoa(i), "pod", strconv.Itoa(j))
			_, err := s.Create(lset.Hash(), lset)
			require.NoError(t, err)
		}
	}
	st := s.Status()
	assert.Equal(t, 31, st.Series)
	assert.Equal(t, 100, st.MaxSeries)
	assert.Equal(t, 50, st.MaxSeriesPerMetric)
	assert.Equal(t, 10*time.Minute, st.Retention)
	assert.Positive(t, st.MemoryBytes)
	assert.Equal(t, []MetricSeries{{"m4", 9}, {"m1", 7}, {"m6", 5}, {"m5", 4}, {"m0", 3}}, st.TopMetrics)
}

// TestFreshSeries: only series whose newest sample is within the window
// count; empty and deleted series do not.
func TestFreshSeries(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	s := New(Config{SeriesTTL: time.Minute}, Settings{Now: func() time.Time { return now }})
	add := func(pod string, ages ...time.Duration) {
		lset := labels.FromStrings(labels.MetricName, "m", "pod", pod)
		ref, err := s.Create(lset.Hash(), lset)
		require.NoError(t, err)
		for _, a := range ages {
			require.NoError(t, s.Append(ref, now.Add(-a).UnixMilli(), 1))
		}
	}
	add("fresh", 20*time.Second, time.Second)
	add("edge", 5*time.Second)
	add("stale", 6*time.Second)
	add("empty")
	assert.Equal(t, 2, s.FreshSeries(5*time.Second))
	assert.Equal(t, 3, s.FreshSeries(10*time.Second))
	now = now.Add(2 * time.Minute)
	s.Sweep()
	s.Sweep()
	assert.Zero(t, s.FreshSeries(time.Hour), "deleted series do not count")
}
