package k8s

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// gateway is the LLM gateway in front of a scaled-to-zero model: it holds
// requests while no replica runs and reports how many wait as the gauge
// gateway_pending_requests{model_name="qwen"}, exporting OTLP/gRPC every
// second like an SDK's periodic reader, and at once when the count changes.
// One goroutine owns the periodic export; Stop ends it.
type gateway struct {
	client colmetricspb.MetricsServiceClient
	conn   *grpc.ClientConn
	ns     string
	mu     sync.Mutex
	value  float64
	cancel context.CancelFunc
	done   chan struct{}
	errs   chan error
}

func startGateway(t *testing.T, otlpAddr, ns string) *gateway {
	t.Helper()
	conn, err := grpc.NewClient(otlpAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{
		client: colmetricspb.NewMetricsServiceClient(conn), conn: conn, ns: ns, cancel: cancel,
		done: make(chan struct{}), errs: make(chan error, 1),
	}
	go func() {
		defer close(g.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				g.mu.Lock()
				v := g.value
				g.mu.Unlock()
				if err := g.export(ctx, v); err != nil && ctx.Err() == nil {
					select {
					case g.errs <- err:
					default:
					}
				}
			}
		}
	}()
	t.Cleanup(g.Stop)
	return g
}

func (g *gateway) Stop() {
	g.cancel()
	<-g.done
	_ = g.conn.Close()
}

// Set changes the waiting count and exports it at once; it returns the time
// the Export call started.
func (g *gateway) Set(t *testing.T, v float64) time.Time {
	t.Helper()
	g.mu.Lock()
	g.value = v
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, g.export(ctx, v))
	return start
}

func strAttr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func (g *gateway) export(ctx context.Context, v float64) error {
	req := &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			strAttr("service.name", "llm-gateway"),
			strAttr("k8s.namespace.name", g.ns),
			strAttr("k8s.pod.name", "llm-gateway-0"),
		}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{{
			Name: "gateway_pending_requests",
			Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: []*metricspb.NumberDataPoint{{
				Attributes:   []*commonpb.KeyValue{strAttr("model_name", "qwen")},
				TimeUnixNano: uint64(time.Now().UnixNano()),
				Value:        &metricspb.NumberDataPoint_AsDouble{AsDouble: v},
			}}}},
		}}}},
	}}}
	resp, err := g.client.Export(ctx, req)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if ps := resp.GetPartialSuccess(); ps != nil && ps.GetRejectedDataPoints() > 0 {
		return fmt.Errorf("export: %d points rejected: %s", ps.GetRejectedDataPoints(), ps.GetErrorMessage())
	}
	return nil
}

// TestScalePushFromZero: an external-push trigger with minReplicaCount 0.
// From idle (0 replicas), one request waiting at the gateway makes the
// scaler push `true` on KEDA's StreamIsActive stream, and KEDA's operator
// scales the Deployment 0 -> 1 without waiting for its next poll (the
// ScaledObject keeps KEDA's default 30 s pollingInterval). The time from the
// OTLP Export to the Deployment's .spec.replicas changing is reported. When
// the request is served, the cooldown returns the Deployment to 0.
func TestScalePushFromZero(t *testing.T) {
	c := needCluster(t)
	t.Parallel()
	const (
		ns       = "kserve-push"
		deploy   = "qwen-predictor"
		cooldown = 10 // seconds
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.createNamespace(ctx, ns))
	addrs, scaler := startScaler(t, ns)
	createDeployment(t, c, ns, deploy, 0)
	tl := watchScenario(t, c, "push", ns, deploy, deploy)
	gw := startGateway(t, addrs.OTLPGRPC, ns)

	createScaledObject(t, c, ns, fmt.Sprintf(`
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  scaleTargetRef:
    name: %[1]s
  minReplicaCount: 0
  maxReplicaCount: 5
  cooldownPeriod: %[4]d
  triggers:
    - type: external-push
      metadata:
        scalerAddress: %[3]s
        metricQuery: sum(gateway_pending_requests{model_name="qwen"})
        targetValue: "4"
        activationThreshold: "0"
`, deploy, ns, addrs.Scaler, cooldown))

	// Idle: KEDA's operator holds the StreamIsActive stream open and the
	// Deployment stays at 0.
	require.NoError(t, waitFor(context.Background(), nil, "KEDA's StreamIsActive stream", 60*time.Second, func(context.Context) error {
		if n := scalerMetric(t, addrs.HTTP, "keda_otel_scaler_scaler_open_streams"); n < 1 {
			return fmt.Errorf("%v open streams", n)
		}
		return nil
	}))
	time.Sleep(2 * time.Second) // idle for a moment: nothing may scale
	require.Equal(t, []int32{0}, tl.replicaSequence(), "idle Deployment stays at 0")
	pushesBefore := scalerMetric(t, addrs.HTTP, "keda_otel_scaler_scaler_pushes_total")

	tl.note("gateway: 1 request waiting (OTLP Export)")
	exportAt := gw.Set(t, 1)
	up := tl.waitSpec(t, 1, scenarioTimeout)
	pushes := scalerMetric(t, addrs.HTTP, "keda_otel_scaler_scaler_pushes_total") - pushesBefore
	assert.GreaterOrEqual(t, pushes, 1.0, "the scaler pushed true on the stream")
	// The HPA takes over at 1 replica with the scaler's value: 1 waiting.
	waitHPA(t, c, tl, ns, deploy, 1, "1")

	// The request is served: nothing waits; after the cooldown KEDA's next
	// poll finds the trigger inactive and scales to 0.
	servedAt := tl.note("gateway: request served, 0 waiting")
	gw.Set(t, 0)
	down := tl.waitSpec(t, 0, scenarioTimeout+cooldown*time.Second)
	tl.Stop()
	select {
	case err := <-gw.errs:
		t.Errorf("periodic export: %v", err)
	default:
	}

	tl.print()
	report("push: OTLP Export -> .spec.replicas 0->1 in %s (true pushed %v time(s); KEDA's poll every 30s); request served -> 0 replicas after %.1fs (cooldown %ds)",
		up.Sub(exportAt).Round(time.Millisecond), pushes, down.Sub(servedAt).Seconds(), cooldown)
	assert.Equal(t, []int32{0, 1, 0}, tl.replicaSequence(), "replica sequence")
	assertScalerClean(t, scaler)
}
