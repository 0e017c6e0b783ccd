// Package integration runs the real server on 127.0.0.1 port 0, pushes
// metrics with the OpenTelemetry Go SDK's OTLP/gRPC exporter, and asks for
// them with KEDA's generated external scaler client.
package integration

import (
	"context"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startServer(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.New(servertest.Config(), server.Settings{})
	require.NoError(t, err)
	return servertest.Start(t, s)
}

// pusher is a real OpenTelemetry SDK pipeline exporting gauges over OTLP/gRPC.
type pusher struct {
	provider *sdkmetric.MeterProvider
	values   map[string]float64
}

func newPusher(t *testing.T, endpoint, pod string, values map[string]float64) *pusher {
	t.Helper()
	exp, err := otlpmetricgrpc.New(context.Background(),
		otlpmetricgrpc.WithEndpoint(endpoint), otlpmetricgrpc.WithInsecure(),
		otlpmetricgrpc.WithCompressor("gzip"))
	require.NoError(t, err)
	res := resource.NewSchemaless(attribute.String("service.name", "vllm"), attribute.String("k8s.pod.name", pod))
	// The periodic reader's interval is long; the test exports with ForceFlush.
	p := &pusher{values: values, provider: sdkmetric.NewMeterProvider(sdkmetric.WithResource(res),
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))))}
	meter := p.provider.Meter("integration")
	_, err = meter.Float64ObservableGauge("x", metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
		for a, v := range p.values {
			o.Observe(v, metric.WithAttributes(attribute.String("a", a)))
		}
		return nil
	}))
	require.NoError(t, err)
	// A test may shut the provider down itself before stopping the server.
	t.Cleanup(func() { _ = p.provider.Shutdown(context.Background()) })
	return p
}

func (p *pusher) flush(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.provider.ForceFlush(ctx))
}

func kedaClient(t *testing.T, addr string) externalscaler.ExternalScalerClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return externalscaler.NewExternalScalerClient(conn)
}

func TestPushThenScale(t *testing.T) {
	s := startServer(t)
	client := kedaClient(t, s.Addrs().Scaler)
	ref := &externalscaler.ScaledObjectRef{
		Name: "vllm", Namespace: "default",
		ScalerMetadata: map[string]string{
			"scalerAddress":       s.Addrs().Scaler,
			"metricQuery":         `sum(x{a="b"})`,
			"targetValue":         "4",
			"activationThreshold": "1",
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	spec, err := client.GetMetricSpec(ctx, ref)
	require.NoError(t, err)
	require.Len(t, spec.GetMetricSpecs(), 1)
	assert.Equal(t, "default-vllm", spec.GetMetricSpecs()[0].GetMetricName())
	assert.InDelta(t, 4.0, spec.GetMetricSpecs()[0].GetTargetSizeFloat(), 0)
	assert.Equal(t, int64(4), spec.GetMetricSpecs()[0].GetTargetSize())

	// Before any data the trigger is inactive and the stream stays silent.
	stream, err := client.StreamIsActive(ctx, ref)
	require.NoError(t, err)
	active, err := client.IsActive(ctx, ref)
	require.NoError(t, err)
	assert.False(t, active.GetResult())

	// Two pods push; only series with a="b" count.
	newPusher(t, s.Addrs().OTLPGRPC, "pod-1", map[string]float64{"b": 2.5, "c": 100}).flush(t)
	newPusher(t, s.Addrs().OTLPGRPC, "pod-2", map[string]float64{"b": 3}).flush(t)

	msg, err := stream.Recv()
	require.NoError(t, err)
	assert.True(t, msg.GetResult(), "the stream pushes true once data makes the trigger active")

	mv, err := client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref, MetricName: "s0-default-vllm"})
	require.NoError(t, err)
	require.Len(t, mv.GetMetricValues(), 1)
	assert.InDelta(t, 5.5, mv.GetMetricValues()[0].GetMetricValueFloat(), 1e-9)
	assert.Equal(t, int64(6), mv.GetMetricValues()[0].GetMetricValue())
	assert.Equal(t, "s0-default-vllm", mv.GetMetricValues()[0].GetMetricName())

	active, err = client.IsActive(ctx, ref)
	require.NoError(t, err)
	assert.True(t, active.GetResult())
}

func TestBadTriggerMetadata(t *testing.T) {
	s := startServer(t)
	client := kedaClient(t, s.Addrs().Scaler)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		md      map[string]string
		wantKey string
	}{
		{"missing query", map[string]string{"targetValue": "1"}, "metricQuery"},
		{"unparsable query", map[string]string{"metricQuery": "sum(x", "targetValue": "1"}, "metricQuery"},
		{"zero target", map[string]string{"metricQuery": "x", "targetValue": "0"}, "targetValue"},
		{"bad target", map[string]string{"metricQuery": "x", "targetValue": "abc"}, "targetValue"},
		{"missing target", map[string]string{"metricQuery": "x"}, "targetValue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := &externalscaler.ScaledObjectRef{Name: "so", Namespace: "ns", ScalerMetadata: tc.md}
			_, err := client.GetMetricSpec(ctx, ref)
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			assert.Contains(t, err.Error(), tc.wantKey)
			assert.Contains(t, err.Error(), "ns/so")
			_, err = client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref})
			require.Equal(t, codes.InvalidArgument, status.Code(err))
			_, err = client.IsActive(ctx, ref)
			require.Equal(t, codes.InvalidArgument, status.Code(err))
			stream, err := client.StreamIsActive(ctx, ref)
			require.NoError(t, err)
			_, err = stream.Recv()
			require.Equal(t, codes.InvalidArgument, status.Code(err))
		})
	}
}

func TestMalformedOTLPKeepsServing(t *testing.T) {
	s := startServer(t)
	conn, err := grpc.NewClient(s.Addrs().OTLPGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out rawMessage
	err = conn.Invoke(ctx, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
		&rawMessage{0xff, 0xff, 0xff, 0x0a, 0x05}, &out, grpc.ForceCodecV2(rawCodec{}))
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)

	// The server still ingests valid data afterwards.
	newPusher(t, s.Addrs().OTLPGRPC, "pod-1", map[string]float64{"b": 7}).flush(t)
	client := kedaClient(t, s.Addrs().Scaler)
	mv, err := client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: &externalscaler.ScaledObjectRef{
		Name: "so", Namespace: "ns", ScalerMetadata: map[string]string{"metricQuery": "x", "targetValue": "1"},
	}})
	require.NoError(t, err)
	assert.InDelta(t, 7.0, mv.GetMetricValues()[0].GetMetricValueFloat(), 0)
}

func TestShutdownEndsStreamsWithOK(t *testing.T) {
	s := startServer(t) // shut down below, before the cleanup's idempotent Shutdown
	client := kedaClient(t, s.Addrs().Scaler)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := newPusher(t, s.Addrs().OTLPGRPC, "pod-1", map[string]float64{"b": 7})
	p.flush(t)
	require.NoError(t, p.provider.Shutdown(ctx))
	stream, err := client.StreamIsActive(ctx, &externalscaler.ScaledObjectRef{
		Name: "so", Namespace: "ns", ScalerMetadata: map[string]string{"metricQuery": "x", "targetValue": "1"},
	})
	require.NoError(t, err)
	msg, err := stream.Recv() // active on open: the stream is being served
	require.NoError(t, err)
	require.True(t, msg.GetResult())
	require.NoError(t, s.Shutdown(ctx))
	_, err = stream.Recv()
	require.ErrorContains(t, err, "EOF", "a drained stream ends with status OK")
}
