package scaler

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseNumber(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
	}{{"4", 4}, {"4.000000", 4}, {".5", 0.5}, {"+4", 4}, {"600m", 0.6}, {"2k", 2000}, {"1e3", 1000}, {"1Ki", 1024}, {"1M", 1e6}} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseNumber(tc.in)
			require.NoError(t, err)
			assert.InDelta(t, tc.want, got, 1e-12)
		})
	}
	for _, bad := range []string{"NaN", "Inf", "-Inf", "abc", "1x", "m", "1e3k"} {
		_, err := parseNumber(bad)
		assert.Error(t, err, bad)
	}
}

func TestMetricName(t *testing.T) {
	assert.Equal(t, "default-my-so", metricName("Default", "My_SO"))
	assert.Equal(t, "ns", metricName("ns", ""))
	assert.Equal(t, "keda-otel-scaler", metricName("", ""))
	long := metricName("ns", strings.Repeat("a", 300))
	assert.Len(t, long, 200)
	assert.Equal(t, long, metricName("ns", strings.Repeat("a", 300)), "stable")
	assert.NotEqual(t, long, metricName("ns", strings.Repeat("a", 299)+"b"))
}
