package server

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

func TestMain(m *testing.M) {
	if os.Getenv(envStalledAddr) != "" {
		os.Exit(stalledClientMain()) // a child process: see openStalled
	}
	if os.Getenv(envIdleAddr) != "" {
		os.Exit(idleClientMain()) // a child process: see openIdle
	}
	goleak.VerifyTestMain(m)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := servertest.Config()
	cfg.Server.HTTPAddr = "no-port"
	_, err := New(cfg, Settings{})
	require.ErrorContains(t, err, "--http-addr")
}

func TestStartReportsBusyPort(t *testing.T) {
	a, err := New(servertest.Config(), Settings{})
	require.NoError(t, err)
	servertest.Start(t, a)

	cfg := servertest.Config()
	cfg.Server.ScalerAddr = a.Addrs().Scaler
	b, err := New(cfg, Settings{})
	require.NoError(t, err)
	require.ErrorContains(t, b.Start(), "scaler-addr")
}

func TestEndpointsAndReadiness(t *testing.T) {
	s, err := New(servertest.Config(), Settings{}) // no warm-up: KEDA's health is NOT_SERVING during it (TestReadinessFollowsWarmup)
	require.NoError(t, err)
	require.NoError(t, s.Start())
	base := "http://" + s.Addrs().HTTP

	code, _ := get(t, base+"/healthz")
	assert.Equal(t, http.StatusOK, code)
	code, _ = get(t, base+"/readyz")
	assert.Equal(t, http.StatusOK, code)
	code, body := get(t, base+"/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "keda_otel_scaler_")

	// Both gRPC listeners serve health and reflection.
	for _, addr := range []string{s.Addrs().OTLPGRPC, s.Addrs().Scaler} {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		assert.Equal(t, healthpb.HealthCheckResponse_SERVING, hr.GetStatus())
		rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		require.NoError(t, err)
		require.NoError(t, rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}))
		resp, err := rs.Recv()
		require.NoError(t, err)
		var names []string
		for _, svc := range resp.GetListServicesResponse().GetService() {
			names = append(names, svc.GetName())
		}
		joined := strings.Join(names, ",")
		assert.Contains(t, joined, "grpc.health.v1.Health")
		if addr == s.Addrs().Scaler {
			assert.Contains(t, joined, "externalscaler.ExternalScaler")
		} else {
			assert.Contains(t, joined, "opentelemetry.proto.collector.metrics.v1.MetricsService")
		}
		require.NoError(t, rs.CloseSend())
		cancel()
		_ = conn.Close()
	}

	// Readiness drops as soon as shutdown starts; the process is still alive.
	s.ready.Store(false) // what Shutdown does first
	code, _ = get(t, base+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	code, _ = get(t, base+"/healthz")
	assert.Equal(t, http.StatusOK, code)

	require.NoError(t, s.Shutdown(context.Background()))
	require.NoError(t, s.Shutdown(context.Background()), "Shutdown is idempotent")
	_, err = http.Get(base + "/healthz")
	require.Error(t, err, "listeners are closed after shutdown")
}

func TestRunStopsOnContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, servertest.Config(), Settings{}) }()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func healthCheck(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// Checklist item 45 of keda-contract.md: KEDA's single pooled connection
// must never be aged out under its open streams.
func TestScalerListenerNeverAgesConnections(t *testing.T) {
	assert.Zero(t, scalerKeepalive.MaxConnectionAge, "no MaxConnectionAge (grpc-go's zero means infinite)")
	assert.Zero(t, scalerKeepalive.MaxConnectionAgeGrace)
	assert.Zero(t, scalerKeepalive.MaxConnectionIdle, "an idle KEDA connection is not closed either")
}
