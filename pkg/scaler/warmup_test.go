package scaler

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestEndWarmup: a store restored from --state-dir ends warm-up at once
// (keda-contract.md §8.2), also across a later Start, and open streams
// evaluate.
func TestEndWarmup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{Warmup: 30 * time.Second})
		e.push(t, "x", 9)
		fs, _ := e.open(t, sumX)
		time.Sleep(time.Second)
		synctest.Wait()
		_, err := e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(sumX)})
		require.Equal(t, codes.Unavailable, status.Code(err), "still warming up")

		e.s.EndWarmup()
		synctest.Wait()
		assert.Equal(t, []bool{true}, fs.got(), "streams evaluate when warm-up ends")
		mv, err := e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(sumX)})
		require.NoError(t, err)
		assert.InDelta(t, 9, mv.GetMetricValues()[0].GetMetricValueFloat(), 0)

		e.s.Start() // the server starts the scaler after restoring
		_, err = e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(sumX)})
		require.NoError(t, err, "Start after EndWarmup does not restart warm-up")
	})
}
