package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

func healthStatus(t *testing.T, addr string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	return hr.GetStatus()
}

// postGauge sends one gauge point stamped at ts over OTLP/HTTP JSON.
func postGauge(t *testing.T, httpAddr string, ts time.Time) {
	t.Helper()
	body := fmt.Sprintf(`{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"x","gauge":{"dataPoints":[{"timeUnixNano":"%d","asDouble":1}]}}]}]}]}`, ts.UnixNano())
	resp, err := http.Post("http://"+httpAddr+"/v1/metrics", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestReadinessFollowsWarmup: the KEDA listener's health is NOT_SERVING
// while GetMetrics would answer Unavailable and the OTLP listener's is
// SERVING throughout (keda-contract.md §8.2). Without --ready-after-fresh
// /readyz is 200 once the listeners serve, as before; with it /readyz is
// 503 until warm-up ends, and warm-up starts only at the first fresh
// sample: a replayed old one does not start it.
func TestReadinessFollowsWarmup(t *testing.T) {
	for _, fresh := range []bool{false, true} {
		t.Run(fmt.Sprintf("ready-after-fresh=%v", fresh), func(t *testing.T) {
			cfg := servertest.Config()
			cfg.Scaler.Warmup = 300 * time.Millisecond
			cfg.Scaler.ReadyAfterFresh = fresh
			s, err := New(cfg, Settings{})
			require.NoError(t, err)
			servertest.Start(t, s)
			a := s.Addrs()
			readyz := func() int { c, _ := get(t, "http://"+a.HTTP+"/readyz"); return c }

			assert.Equal(t, healthpb.HealthCheckResponse_SERVING, healthStatus(t, a.OTLPGRPC))
			assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, healthStatus(t, a.Scaler))
			if !fresh {
				assert.Equal(t, http.StatusOK, readyz())
				require.Eventually(t, func() bool {
					return healthStatus(t, a.Scaler) == healthpb.HealthCheckResponse_SERVING
				}, 10*time.Second, 20*time.Millisecond)
				return
			}
			assert.Equal(t, http.StatusServiceUnavailable, readyz())
			postGauge(t, a.HTTP, time.Now().Add(-time.Minute)) // older than --freshness (30s)
			time.Sleep(3 * cfg.Scaler.Warmup)
			assert.Equal(t, http.StatusServiceUnavailable, readyz(), "a replayed sample does not start warm-up")
			assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, healthStatus(t, a.Scaler))

			postGauge(t, a.HTTP, time.Now())
			require.Eventually(t, func() bool { return readyz() == http.StatusOK }, 10*time.Second, 20*time.Millisecond)
			assert.Equal(t, healthpb.HealthCheckResponse_SERVING, healthStatus(t, a.Scaler))
		})
	}
}
