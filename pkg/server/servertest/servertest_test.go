package servertest_test

import (
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/goleak"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestStartPushAndShutdown: a server started from Config listens on
// loopback, answers at once for what PushVLLMWaiting sent, reports a
// rejected point through PostOTLP, logs into Logs, and is shut down when
// its test ends.
func TestStartPushAndShutdown(t *testing.T) {
	cfg := servertest.Config()
	assert.Equal(t, []string{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"}, []string{cfg.Server.OTLPGRPCAddr, cfg.Server.ScalerAddr, cfg.Server.HTTPAddr})
	assert.Zero(t, cfg.Scaler.Warmup)
	assert.Zero(t, cfg.Scaler.PushHoldoff)

	var addrs server.Addrs
	t.Run("serve", func(t *testing.T) {
		var logs servertest.Logs
		s, err := server.New(cfg, server.Settings{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		require.NoError(t, err)
		addrs = servertest.Start(t, s).Addrs()
		assert.Equal(t, 1, logs.Count("msg=Serving"), "Logs collects the server's log:\n%s", logs.String())
		servertest.PushVLLMWaiting(t, addrs.HTTP, map[string]float64{"a": 3, "b": 4}, map[string]string{"k8s.namespace.name": "llm"})
		v, ok := servertest.Query(t, addrs.HTTP, `sum(vllm:num_requests_waiting{namespace="llm",model_name="qwen"})`, time.Now(), 0)
		assert.True(t, ok)
		assert.InDelta(t, 7.0, v, 0)
		v, ok = servertest.Query(t, addrs.HTTP, `scalar(sum(vllm:num_requests_waiting))`, time.Now(), time.Minute)
		assert.True(t, ok, "a scalar")
		assert.InDelta(t, 7.0, v, 0)
		_, ok = servertest.Query(t, addrs.HTTP, `absent_series_name`, time.Now(), 0)
		assert.False(t, ok, "an empty vector")

		md := pmetric.NewMetrics()
		m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
		m.SetName("requests")
		sum := m.SetEmptySum()
		sum.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
		dp := sum.DataPoints().AppendEmpty()
		dp.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
		dp.SetDoubleValue(1)
		rejected, msg := servertest.PostOTLP(t, addrs.HTTP, md)
		assert.Equal(t, int64(1), rejected)
		assert.Contains(t, msg, "delta_temporality")
	})
	_, err := http.Get("http://" + addrs.HTTP + "/healthz")
	require.Error(t, err, "shut down when its test ended")
}
