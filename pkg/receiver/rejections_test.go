package receiver

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestRejectionExamples: rejected points appear in Status by reason, with
// the last examples newest first, bounded in number and length; accepted
// points add none.
func TestRejectionExamples(t *testing.T) {
	f := newFixture(t, Config{MaxLabelValueLength: 300}, store.Config{})
	f.export(t, req(rm(nil, gauge("fine", "", dpD(attrs("pod", "a"), tsNs(30), 1)))))
	st := f.r.Status()
	assert.Equal(t, uint64(1), st.Accepted)
	assert.Empty(t, st.Rejected)
	assert.Empty(t, st.Examples)

	long := strings.Repeat("v", 290)
	res := f.export(t, req(rm(nil,
		gauge("too_old", "", dpD(attrs("pod", long), tsNs(3600), 1), dpD(attrs("pod", "b"), tsNs(3600), 1)),
		sum("delta_c", "", true, metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA, dpD(attrs("pod", "a"), tsNs(30), 1)),
	)))
	require.Equal(t, int64(3), res.rejected)
	st = f.r.Status()
	assert.Equal(t, map[string]uint64{"too_old": 2, "delta_temporality": 1}, st.Rejected)
	require.Len(t, st.Examples, 2)
	byReason := map[string]RejectionExample{}
	for _, e := range st.Examples {
		byReason[e.Reason] = e
		assert.LessOrEqual(t, len(e.Message), maxExampleMessage)
		assert.LessOrEqual(t, len(e.Metric), maxExampleMetric)
	}
	assert.Equal(t, "too_old", byReason["too_old"].Metric)
	assert.Equal(t, 2, byReason["too_old"].Points)
	assert.Contains(t, byReason["too_old"].Message, `too_old{pod="vvv`)
	assert.Equal(t, 1, byReason["delta_temporality"].Points)

	for i := range 2 * rejectionExamples {
		f.export(t, req(rm(nil, gauge(fmt.Sprint("old_", i), "", dpD(nil, tsNs(3600), 1)))))
	}
	st = f.r.Status()
	require.Len(t, st.Examples, rejectionExamples)
	assert.Equal(t, fmt.Sprint("old_", 2*rejectionExamples-1), st.Examples[0].Metric, "newest first")
	assert.Equal(t, fmt.Sprint("old_", rejectionExamples), st.Examples[rejectionExamples-1].Metric)
}
