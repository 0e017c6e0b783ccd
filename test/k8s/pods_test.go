package k8s

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

const (
	// fixturePath is test/e2e's realistic vLLM V1 /metrics body.
	fixturePath = "../e2e/testdata/vllm-metrics-sample.prom"
	// collectorConfig is the example sidecar config each fake pod runs.
	collectorConfig = "../../examples/collector/collector-config.yaml"
	// scrapeInterval is each sidecar's scrape period (KServe's is 5 s).
	scrapeInterval = time.Second
)

// fakeVLLM serves the fixture as /metrics with vllm:num_requests_running
// replaced by a value the test controls.
type fakeVLLM struct {
	srv     *http.Server
	ln      net.Listener
	lines   []string
	running atomic.Uint64 // float64 bits
	scrapes atomic.Int64
	done    chan struct{}
	once    sync.Once
}

func loadFixture(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(fixturePath)
	require.NoError(t, err)
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// startFakeVLLM listens on 127.0.0.1:0; the caller owns it and calls Close.
func startFakeVLLM(fixture []string, running float64) (*fakeVLLM, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &fakeVLLM{ln: ln, lines: fixture, done: make(chan struct{})}
	f.Set(running)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", f.serveMetrics)
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(f.done)
		_ = f.srv.Serve(ln) // ends with ErrServerClosed on Close
	}()
	return f, nil
}

func (f *fakeVLLM) Addr() string { return f.ln.Addr().String() }

// Set changes the running requests the next scrape reports.
func (f *fakeVLLM) Set(running float64) { f.running.Store(math.Float64bits(running)) }

func (f *fakeVLLM) Close() {
	f.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = f.srv.Shutdown(ctx)
		<-f.done
	})
}

func (f *fakeVLLM) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	f.scrapes.Add(1)
	running := strconv.FormatFloat(math.Float64frombits(f.running.Load()), 'g', -1, 64)
	var b strings.Builder
	for _, l := range f.lines {
		if strings.HasPrefix(l, "vllm:num_requests_running{") {
			l = l[:strings.LastIndexByte(l, ' ')+1] + running
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = fmt.Fprint(w, b.String())
}

// sidecarConfig writes examples/collector/collector-config.yaml in the form
// this collector build runs and KServe's sidecar sends: the
// resourcedetection env detector emulated by a transform statement (as
// test/e2e does: that processor does not build at collector v0.161.0), the
// filter keeping metricNames, and compression none. The collector's own
// telemetry is off so several run side by side.
func sidecarConfig(t *testing.T, metricNames ...string) string {
	t.Helper()
	raw, err := os.ReadFile(collectorConfig)
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &cfg))
	procs := cfg["processors"].(map[string]any)
	require.Contains(t, procs, "resourcedetection/env")
	delete(procs, "resourcedetection/env")
	procs["transform/env"] = map[string]any{
		"metric_statements": []any{map[string]any{
			"context": "resource",
			"statements": []any{
				`merge_maps(attributes, ParseKeyValue("${env:OTEL_RESOURCE_ATTRIBUTES}", "=", ","), "insert")`,
			},
		}},
	}
	filter := procs["filter/metrics"].(map[string]any)["metrics"].(map[string]any)["include"].(map[string]any)
	names := make([]any, len(metricNames))
	for i, n := range metricNames {
		names[i] = n
	}
	filter["metric_names"] = names
	svc := cfg["service"].(map[string]any)
	pipe := svc["pipelines"].(map[string]any)["metrics"].(map[string]any)
	pipe["processors"] = []any{"transform/env", "transform", "filter/metrics"}
	svc["telemetry"] = map[string]any{
		"metrics": map[string]any{"level": "none"},
		"logs":    map[string]any{"level": "warn"},
	}
	cfg["exporters"].(map[string]any)["otlp"].(map[string]any)["compression"] = "none"
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "collector-config.yaml")
	require.NoError(t, os.WriteFile(path, out, 0o600))
	return path
}

// fakePod is a model server and its collector sidecar, labelled like a pod
// of Deployment deploy in namespace ns.
type fakePod struct {
	name string
	vllm *fakeVLLM
	col  *proc
}

// startFakePodE starts a pod whose collector logs into logDir; the caller
// owns it and calls stop. It does not touch t, so any goroutine may call it.
func startFakePodE(logDir, cfgPath, otlpAddr, ns, deploy, name string, fixture []string, running float64) (*fakePod, error) {
	f, err := startFakeVLLM(fixture, running)
	if err != nil {
		return nil, err
	}
	env := baseEnv(
		"SCRAPE_INTERVAL="+scrapeInterval.String(),
		"VLLM_METRICS_TARGET="+f.Addr(),
		"KEDA_OTEL_SCALER_ENDPOINT="+otlpAddr,
		// What the OpenTelemetry Operator injects into a sidecar.
		"OTEL_RESOURCE_ATTRIBUTES=k8s.namespace.name="+ns+",k8s.deployment.name="+deploy+",k8s.pod.name="+name,
	)
	c, err := startProcess(logDir, "collector-"+name, tools.Collector, []string{"--config=file:" + cfgPath}, env)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fakePod{name: name, vllm: f, col: c}, nil
}

// startFakePod starts a pod owned by the test.
func startFakePod(t *testing.T, cfgPath, otlpAddr, ns, deploy, name string, fixture []string, running float64) *fakePod {
	t.Helper()
	p, err := startFakePodE(t.TempDir(), cfgPath, otlpAddr, ns, deploy, name, fixture, running)
	require.NoError(t, err)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- collector %s log (tail) ---\n%s", name, p.col.tail(20))
		}
	})
	return p
}

// stop ends the pod as a deleted pod ends: the collector gets SIGTERM, the
// model server stops answering.
func (p *fakePod) stop() {
	p.col.Stop(5 * time.Second)
	p.vllm.Close()
}
