package scaler

import (
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestGetMetricsHiddenTwins is issue #12 class 10 through KEDA: two
// sidecars whose series differ only in hidden resource attributes
// (otlp-contract.md §8.3; same labels, different identity hashes) both
// count, as in the query API. A trigger that aggregates gets their total;
// one that does not gets the multiple-series error telling it to
// aggregate, instead of Prometheus's same-labelset error as Internal.
func TestGetMetricsHiddenTwins(t *testing.T) {
	e := newEnv(t, Config{})
	lset := labels.FromStrings(labels.MetricName, "vllm:num_requests_waiting", "instance", "localhost:8000", "job", "vllm")
	now := time.Now().UnixMilli()
	for i, v := range []float64{3, 4} {
		ref, err := e.st.Create(uint64(1000+i), lset) // two identities, one label set
		require.NoError(t, err)
		require.NoError(t, e.st.Append(ref, now-1000, v))
	}
	get := func(q string) (float64, error) {
		mv, err := e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"metricQuery": q, "targetValue": "1"})})
		if err != nil {
			return 0, err
		}
		return mv.GetMetricValues()[0].GetMetricValueFloat(), nil
	}
	for _, tc := range []struct {
		q    string
		want float64
	}{
		{`vllm:num_requests_waiting`, 7}, // a bare selector is summed
		{`sum(vllm:num_requests_waiting{instance="localhost:8000"})`, 7},
		{`max(vllm:num_requests_waiting)`, 4},
		{`sum(label_replace(vllm:num_requests_waiting, "port", "$1", "instance", ".*:(.*)"))`, 7},
	} {
		v, err := get(tc.q)
		require.NoError(t, err, tc.q)
		assert.InDelta(t, tc.want, v, 0, tc.q)
	}
	_, err := get(`last_over_time(vllm:num_requests_waiting[1m])`)
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "query returned 2 series; aggregate them")
}
