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
