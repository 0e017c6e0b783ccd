package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"
)

const (
	// scrapeInterval is each sidecar's scrape period (KServe uses 5 s).
	scrapeInterval = time.Second
	// freshness is the scaler's --freshness floor; a series' window is
	// max(freshness, 3 × its sample interval) = 5 s here.
	freshness = 5 * time.Second
	// exampleCollectorConfig is run as each fake pod's sidecar.
	exampleCollectorConfig = "../../examples/collector/collector-config.yaml"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if toolsDir != "" {
		_ = os.RemoveAll(toolsDir)
	}
	if binCache != nil {
		_ = binCache.Close()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	toolsOnce sync.Once
	toolsDir  string
	collector string
	scaler    string
	toolsErr  error
)

// tools builds (or reuses) the collector and builds the scaler, once.
// E2E_OTELCOL and E2E_SCALER name prebuilt binaries instead.
func tools(t *testing.T) (collectorBin, scalerBin string) {
	t.Helper()
	toolsOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
		defer cancel()
		if collector, toolsErr = buildCollector(ctx, os.Stderr); toolsErr != nil {
			return
		}
		if toolsDir, toolsErr = os.MkdirTemp("", "kos-e2e-"); toolsErr != nil {
			return
		}
		if p := os.Getenv("E2E_SCALER"); p != "" {
			scaler = p // a prebuilt scaler binary, e.g. from another branch
			return
		}
		scaler, toolsErr = buildScaler(ctx, toolsDir)
	})
	require.NoError(t, toolsErr)
	return collector, scaler
}

// sidecarConfig turns examples/collector/collector-config.yaml into the
// config this build can run: the resourcedetection processor does not build
// at collector v0.161.0, so its env detector is emulated by a transform
// statement merging OTEL_RESOURCE_ATTRIBUTES into the resource without
// overriding (override: false). Everything else runs as written. The
// collector's own telemetry is switched off so several collectors can run
// side by side without binding :8888.
//
// compression "" keeps the example's exporter default (gzip); "none" is what
// KServe's generated sidecar sends.
func sidecarConfig(t *testing.T, compression string) string {
	t.Helper()
	raw, err := os.ReadFile(exampleCollectorConfig)
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &cfg))
	return runnableConfig(t, cfg, compression)
}

// runnableConfig applies sidecarConfig's substitutions to a KServe-like
// collector config and writes it to a file.
func runnableConfig(t *testing.T, cfg map[string]any, compression string) string {
	t.Helper()
	procs := cfg["processors"].(map[string]any)
	rd, ok := procs["resourcedetection/env"].(map[string]any)
	require.True(t, ok, "example has resourcedetection/env")
	require.Equal(t, []any{"env"}, rd["detectors"])
	delete(procs, "resourcedetection/env")
	procs["transform/env"] = map[string]any{
		"metric_statements": []any{map[string]any{
			"context": "resource",
			"statements": []any{
				`merge_maps(attributes, ParseKeyValue("${env:OTEL_RESOURCE_ATTRIBUTES}", "=", ","), "insert")`,
			},
		}},
	}
	svc := cfg["service"].(map[string]any)
	pipe := svc["pipelines"].(map[string]any)["metrics"].(map[string]any)
	var ps []any
	for _, p := range pipe["processors"].([]any) {
		if p == "resourcedetection/env" {
			p = "transform/env"
		}
		ps = append(ps, p)
	}
	require.Equal(t, []any{"transform/env", "transform", "filter/metrics"}, ps)
	pipe["processors"] = ps
	svc["telemetry"] = map[string]any{
		"metrics": map[string]any{"level": "none"},
		"logs":    map[string]any{"level": "warn"},
	}
	if compression != "" {
		otlp := cfg["exporters"].(map[string]any)["otlp"].(map[string]any)
		otlp["compression"] = compression
	}
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "collector-config.yaml")
	require.NoError(t, os.WriteFile(path, out, 0o600))
	return path
}

// pod is a fake vLLM pod: the model server and its collector sidecar.
type pod struct {
	name string
	vllm *fakeVLLM
	col  *proc
}

func startPod(t *testing.T, colBin, cfgPath, otlpAddr, ns, deploy, name string, fixture []string, running float64) *pod {
	t.Helper()
	f := startFakeVLLM(t, fixture, running, 0, 0.1)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"SCRAPE_INTERVAL=" + scrapeInterval.String(),
		"VLLM_METRICS_TARGET=" + f.Addr(),
		"KEDA_OTEL_SCALER_ENDPOINT=" + otlpAddr,
		// What the OpenTelemetry Operator injects into a sidecar.
		"OTEL_RESOURCE_ATTRIBUTES=k8s.namespace.name=" + ns + ",k8s.deployment.name=" + deploy + ",k8s.pod.name=" + name,
	}
	c := startProc(t, "collector-"+name, colBin, []string{"--config=file:" + cfgPath}, env)
	return &pod{name: name, vllm: f, col: c}
}

// kill ends the pod like a node failure: the model server stops answering
// and the collector dies without flushing.
func (p *pod) kill() {
	p.col.Kill()
	p.vllm.Close()
}

// waitScraped waits until every pod's collector has scraped it twice (the
// pipeline runs), failing at once with the collector's log if one exits.
func waitScraped(t *testing.T, pods []*pod, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ready := true
		for _, p := range pods {
			if p.col.exited() {
				t.Fatalf("collector %s exited: %v\n%s", p.name, p.col.waitErr, p.col.tail(30))
			}
			if p.vllm.scrapes.Load() < 2 {
				ready = false
			}
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("collectors did not scrape within %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type kedaClient struct {
	c    externalscaler.ExternalScalerClient
	conn *grpc.ClientConn
}

func dialKEDA(t *testing.T, addr string) *kedaClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return &kedaClient{c: externalscaler.NewExternalScalerClient(conn), conn: conn}
}

// kserveRef is the trigger KServe v0.16+ generates for an InferenceService
// "<d minus -predictor>" with query vllm:num_requests_running.
func kserveRef(ns, deploy, query, target string, extra map[string]string) *externalscaler.ScaledObjectRef {
	md := map[string]string{
		"metricQuery":   fmt.Sprintf(`sum(%s{namespace="%s", deployment="%s"})`, query, ns, deploy),
		"targetValue":   target,
		"scalerAddress": "keda-otel-scaler.keda.svc:4318",
	}
	for k, v := range extra {
		md[k] = v
	}
	return &externalscaler.ScaledObjectRef{Name: deploy, Namespace: ns, ScalerMetadata: md}
}

// value asks like KEDA's scale loop: GetMetricSpec then GetMetrics.
func (k *kedaClient) value(ctx context.Context, ref *externalscaler.ScaledObjectRef) (float64, error) {
	spec, err := k.c.GetMetricSpec(ctx, ref)
	if err != nil {
		return 0, err
	}
	if len(spec.MetricSpecs) != 1 {
		return 0, fmt.Errorf("GetMetricSpec returned %d specs", len(spec.MetricSpecs))
	}
	resp, err := k.c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref, MetricName: spec.MetricSpecs[0].MetricName})
	if err != nil {
		return 0, err
	}
	if len(resp.MetricValues) != 1 {
		return 0, fmt.Errorf("GetMetrics returned %d values", len(resp.MetricValues))
	}
	return resp.MetricValues[0].MetricValueFloat, nil
}

// waitValue polls every 50 ms until the trigger's value equals want (within
// 1e-9) and returns how long that took; it fails after timeout.
func (k *kedaClient) waitValue(t *testing.T, ref *externalscaler.ScaledObjectRef, want float64, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	var last float64
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v, err := k.value(ctx, ref)
		cancel()
		last, lastErr = v, err
		if err == nil && math.Abs(v-want) < 1e-9 {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("trigger %q: value %v (err %v) after %s, want %v", ref.ScalerMetadata["metricQuery"], last, lastErr, timeout, want)
	return 0
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an OpenTelemetry Collector and runs real processes")
	}
	colBin, scalerBin := tools(t)
	report := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		t.Log(line)
		fmt.Fprintln(os.Stderr, "E2E REPORT: "+line)
	}

	args := []string{
		"--otlp-grpc-addr=127.0.0.1:0", "--scaler-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0",
		"--log-format=json", "--log-level=info", "--freshness=" + freshness.String(),
	}
	hasWarmup, err := scalerHasFlag(scalerBin, "warmup")
	require.NoError(t, err)
	if hasWarmup {
		args = append(args, "--warmup=0")
	}
	srv := startProc(t, "scaler", scalerBin, args, []string{"PATH=" + os.Getenv("PATH")})
	addrs := waitServing(t, srv, 30*time.Second)
	keda := dialKEDA(t, addrs.Scaler)

	// Three pods of Deployment "d" in namespace "ns", one pod of another
	// Deployment in the same namespace that no trigger of "d" may count.
	const ns, deploy = "ns", "d"
	cfgPath := sidecarConfig(t, "")           // gzip, the otlp exporter's default
	kserveCfgPath := sidecarConfig(t, "none") // KServe's sidecar: uncompressed
	fixture := loadFixture(t)
	startAll := time.Now()
	pods := []*pod{
		startPod(t, colBin, cfgPath, addrs.OTLPGRPC, ns, deploy, "d-7c9f-a", fixture, 2),
		startPod(t, colBin, cfgPath, addrs.OTLPGRPC, ns, deploy, "d-7c9f-b", fixture, 3),
		startPod(t, colBin, cfgPath, addrs.OTLPGRPC, ns, deploy, "d-7c9f-c", fixture, 5),
	}
	other := startPod(t, colBin, kserveCfgPath, addrs.OTLPGRPC, ns, "other", "other-5d8b-a", fixture, 100)
	all := append(append([]*pod{}, pods...), other)
	waitScraped(t, all, 60*time.Second)

	running := kserveRef(ns, deploy, "vllm:num_requests_running", "4", nil)
	keda.waitValue(t, running, 2+3+5, 90*time.Second)
	report("first correct value (10 = 2+3+5, other Deployment excluded) %s after starting 4 collectors",
		time.Since(startAll).Round(10*time.Millisecond))

	// The other Deployment's pod exports uncompressed, like KServe's sidecar.
	keda.waitValue(t, kserveRef(ns, "other", "vllm:num_requests_running", "4", nil), 100, 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	act, err := keda.c.IsActive(ctx, running)
	require.NoError(t, err)
	assert.True(t, act.Result, "IsActive with value 10 > activationThreshold 0")

	// The KServe-shaped wrap of other vLLM signals read through the same
	// sidecars: queue depth and the busiest pod's KV-cache use.
	for i, p := range pods {
		p.vllm.Set([]float64{2, 3, 5}[i], float64(i+1), []float64{0.25, 0.5, 0.75}[i])
	}
	keda.waitValue(t, kserveRef(ns, deploy, "vllm:num_requests_waiting", "4", nil), 1+2+3, 30*time.Second)
	kvRef := &externalscaler.ScaledObjectRef{Name: deploy, Namespace: ns, ScalerMetadata: map[string]string{
		"metricQuery": fmt.Sprintf(`max(vllm:kv_cache_usage_perc{namespace=%q, deployment=%q})`, ns, deploy),
		"targetValue": "0.8",
	}}
	keda.waitValue(t, kvRef, 0.75, 30*time.Second)

	// Load changes: the value follows within about one scrape interval.
	pods[0].vllm.Set(12, 1, 0.25)
	up := keda.waitValue(t, running, 12+3+5, 30*time.Second)
	report("value lag after a load increase (10 -> 20): %s (scrape interval %s)", up.Round(10*time.Millisecond), scrapeInterval)
	pods[0].vllm.Set(1, 1, 0.25)
	down := keda.waitValue(t, running, 1+3+5, 30*time.Second)
	report("value lag after a load decrease (20 -> 9): %s", down.Round(10*time.Millisecond))

	// external-push: a StreamIsActive stream with activationThreshold 15
	// stays silent at 9 and pushes true when the load crosses it.
	pushRef := kserveRef(ns, deploy, "vllm:num_requests_running", "4", map[string]string{"activationThreshold": "15"})
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	stream, err := keda.c.StreamIsActive(sctx, pushRef)
	require.NoError(t, err)
	pushed := make(chan time.Time, 4)
	streamErr := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				streamErr <- err
				return
			}
			if r.Result {
				pushed <- time.Now()
			}
		}
	}()
	select {
	case at := <-pushed:
		t.Fatalf("stream pushed true at %v while the value (9) is below the activation threshold (15)", at)
	case <-time.After(2 * scrapeInterval):
	}
	pushStart := time.Now()
	pods[1].vllm.Set(10, 2, 0.5)
	select {
	case at := <-pushed:
		report("external-push: true pushed %s after the load crossed the activation threshold", at.Sub(pushStart).Round(10*time.Millisecond))
	case err := <-streamErr:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no true pushed within 30s of crossing the activation threshold")
	}
	keda.waitValue(t, running, 1+10+5, 30*time.Second)
	scancel()
	assert.Equal(t, codes.Canceled, status.Code(<-streamErr), "the stream ends with the client's cancel")

	// A pod dies: its collector is killed (nothing flushed) and its model
	// server stops. Its last samples stop counting once the freshness window
	// (max(--freshness, 3 × scrape interval)) has passed.
	pods[2].kill()
	gone := keda.waitValue(t, running, 1+10, freshness+3*scrapeInterval+20*time.Second)
	report("dead pod's contribution disappeared %s after the kill (freshness floor %s, scrape interval %s)",
		gone.Round(10*time.Millisecond), freshness, scrapeInterval)
	report("scenario total %s", time.Since(startAll).Round(100*time.Millisecond))

	// The scaler stayed healthy and logged no errors.
	for _, p := range append(pods[:2:2], other) {
		assert.False(t, p.col.exited(), "collector %s still running", p.name)
		assert.Greater(t, p.vllm.scrapes.Load(), int64(3), "pod %s scraped", p.name)
	}
	for _, p := range pods[:2] {
		assert.NotContains(t, strings.ToLower(p.col.log()), "export failed", "collector %s export errors:\n%s", p.name, p.col.tail(20))
	}
	assert.False(t, srv.exited(), "scaler still running")
	srv.Stop(20 * time.Second)
	require.NoError(t, srv.waitErr, "scaler exits cleanly on SIGTERM")
	assert.NotContains(t, srv.log(), `"level":"ERROR"`, "scaler logged errors:\n%s", srv.tail(20))
}

// TestExampleCollectorConfigsValidate runs the real collector's validate
// command on the plain config and on the OpenTelemetryCollector resource's
// config from examples/ (with the resourcedetection emulation).
func TestExampleCollectorConfigsValidate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an OpenTelemetry Collector")
	}
	colBin, _ := tools(t)
	raw, err := os.ReadFile("../../examples/vllm/otel-sidecar.yaml")
	require.NoError(t, err)
	var cr struct {
		Spec struct {
			Config map[string]any `json:"config"`
		} `json:"spec"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &cr))
	for name, path := range map[string]string{
		"collector-config.yaml":              sidecarConfig(t, ""),
		"otel-sidecar.yaml":                  runnableConfig(t, cr.Spec.Config, ""),
		"tls/collector-exporters.yaml":       tlsCollectorConfig(t, "otlp"),
		"tls/collector-exporters.yaml, http": tlsCollectorConfig(t, "otlphttp"),
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, colBin, "validate", "--config=file:"+path)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "OTEL_RESOURCE_ATTRIBUTES=k8s.namespace.name=ns,k8s.deployment.name=d,k8s.pod.name=p"}
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "collector validate:\n%s", out)
		})
	}
	t.Run("a broken statement is rejected", func(t *testing.T) {
		var cfg map[string]any
		b, err := os.ReadFile(exampleCollectorConfig)
		require.NoError(t, err)
		require.NoError(t, yaml.Unmarshal(b, &cfg))
		tr := cfg["processors"].(map[string]any)["transform"].(map[string]any)
		tr["metric_statements"] = []any{map[string]any{"context": "datapoint", "statements": []any{`set(attributes["namespace"], resource.attributes["k8s.namespace.name"]`}}}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, colBin, "validate", "--config=file:"+runnableConfig(t, cfg, "")).CombinedOutput()
		require.Error(t, err, "validate accepted a broken OTTL statement:\n%s", out)
	})
}

// TestBuildCollector builds (or finds in the per-user binary cache,
// test/bincache) the collector; `make e2e-collector` runs only this to warm
// the cache.
func TestBuildCollector(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an OpenTelemetry Collector")
	}
	colBin, _ := tools(t)
	out, err := exec.Command(colBin, "components").CombinedOutput()
	require.NoError(t, err, string(out))
	for _, c := range []string{"prometheus", "transform", "filter", "otlp", "otlp_http", "bearertokenauth", "batch", "memory_limiter"} {
		assert.Contains(t, string(out), "name: "+c, "collector has the %s component", c)
	}
}
