package browser

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// live is a running server with a fake clock, KEDA's generated client and
// an OTLP/HTTP sender.
type live struct {
	srv    *server.Server
	client externalscaler.ExternalScalerClient
	clock  atomic.Int64 // unix ms
}

func startLive(t *testing.T) *live {
	t.Helper()
	l := &live{}
	l.clock.Store(time.Now().Add(-10 * time.Minute).UnixMilli())
	s, err := server.New(servertest.Config(), server.Settings{Version: "browser-test", Now: func() time.Time { return time.UnixMilli(l.clock.Load()) }})
	require.NoError(t, err)
	l.srv = servertest.Start(t, s)
	conn, err := grpc.NewClient(s.Addrs().Scaler, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	l.client = externalscaler.NewExternalScalerClient(conn)
	return l
}

type gauge struct {
	name  string
	v     float64
	kv    []string
	delta bool // a delta sum: rejected (delta_temporality)
}

// export sends gauges at the clock's now over OTLP/HTTP.
func (l *live) export(t *testing.T, gs ...gauge) {
	t.Helper()
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "vllm")
	sm := rm.ScopeMetrics().AppendEmpty()
	ts := pcommon.Timestamp(l.clock.Load() * int64(time.Millisecond))
	for _, g := range gs {
		m := sm.Metrics().AppendEmpty()
		m.SetName(g.name)
		var dp pmetric.NumberDataPoint
		if g.delta {
			s := m.SetEmptySum()
			s.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
			s.SetIsMonotonic(true)
			dp = s.DataPoints().AppendEmpty()
		} else {
			dp = m.SetEmptyGauge().DataPoints().AppendEmpty()
		}
		dp.SetTimestamp(ts)
		dp.SetDoubleValue(g.v)
		for i := 0; i+1 < len(g.kv); i += 2 {
			dp.Attributes().PutStr(g.kv[i], g.kv[i+1])
		}
	}
	servertest.PostOTLP(t, l.srv.Addrs().HTTP, md) // delta sums are rejected: the page shows it
}

func ref(ns, name, q string, kv ...string) *externalscaler.ScaledObjectRef {
	md := map[string]string{"scalerAddress": "keda-otel-scaler.keda.svc:4318", "metricQuery": q, "targetValue": "4"}
	for i := 0; i+1 < len(kv); i += 2 {
		md[kv[i]] = kv[i+1]
	}
	return &externalscaler.ScaledObjectRef{Namespace: ns, Name: name, ScalerMetadata: md}
}

// traffic plays ten minutes of a small vLLM fleet, 20 s per step, with the
// calls KEDA and the HPA make: the triggers end in every state the page
// shows (active, inactive, push, error, invalid), with history.
func (l *live) traffic(t *testing.T) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chat := ref("llm", "qwen-chat", `sum(vllm:num_requests_waiting{model_name="qwen"})`, "activationThreshold", "2")
	kv := ref("llm", "qwen-kv-cache", `avg(vllm:gpu_cache_usage_perc)`, "targetValue", "0.8", "activationThreshold", "0.5")
	gw := ref("llm", "gateway", `sum(gateway_queue_depth)`, "activationThreshold", "0", "tlsClientKey", "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----")
	multi := ref("batch", "embedder", `vllm:num_requests_running * 1`)
	bad := ref("batch", "reranker", `sum(rate(vllm:request_success_total[1m])`)

	// The stream stays open until the test ends, so the page shows it.
	stream, err := l.client.StreamIsActive(t.Context(), gw)
	require.NoError(t, err)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	for _, r := range []*externalscaler.ScaledObjectRef{chat, kv, gw, multi} {
		_, err := l.client.GetMetricSpec(ctx, r)
		require.NoError(t, err)
	}
	_, err = l.client.GetMetricSpec(ctx, bad)
	require.Error(t, err)

	for step := range 30 {
		l.clock.Add(20_000)
		wave := 6 + 5*math.Sin(float64(step)/4)
		var gs []gauge
		for i, pod := range []string{"qwen-0", "qwen-1", "qwen-2"} {
			gs = append(gs,
				gauge{"vllm:num_requests_waiting", math.Round(wave / float64(i+1)), []string{"model_name", "qwen", "pod", pod}, false},
				gauge{"vllm:num_requests_running", float64(4 + i), []string{"model_name", "qwen", "pod", pod}, false},
				gauge{"vllm:gpu_cache_usage_perc", 0.3 + 0.05*float64(i) + 0.02*math.Cos(float64(step)/3), []string{"model_name", "qwen", "pod", pod}, false},
			)
		}
		gs = append(gs, gauge{"gateway_queue_depth", float64((step / 3) % 2 * (step % 7)), nil, false})
		if step%10 == 0 {
			gs = append(gs, gauge{"vllm:request_success", 3, []string{"pod", "qwen-0"}, true}) // rejected: delta
		}
		l.export(t, gs...)
		for _, r := range []*externalscaler.ScaledObjectRef{chat, kv, multi} {
			_, _ = l.client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: r, MetricName: "s0-" + r.Namespace + "-" + r.Name})
			_, _ = l.client.IsActive(ctx, r)
		}
		_, _ = l.client.GetMetricSpec(ctx, bad) // KEDA keeps asking; the scaler keeps refusing
	}
	l.clock.Add(7_000) // the page shows ages
	return map[string]string{
		"llm/qwen-chat":     "",
		"llm/qwen-kv-cache": "inactive",
		"llm/gateway":       "",
		"batch/embedder":    "error",
		"batch/reranker":    "invalid",
	}
}

// TestStatusPageInChromium loads /status from a running server with live
// triggers in headless Chromium, checks the triggers table's rows, that
// no console error, exception or failed load was reported, that the page
// fits a narrow window, and saves screenshots of both widths.
func TestStatusPageInChromium(t *testing.T) {
	l := startLive(t)
	want := l.traffic(t)
	b := startBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := b.newPage(ctx)
	require.NoError(t, err)
	out := t.ArtifactDir()
	url := "http://" + l.srv.Addrs().HTTP + "/status"

	for _, vp := range []struct {
		name          string
		width, height int
	}{{"wide", 1440, 900}, {"narrow", 390, 844}} {
		t.Run(vp.name, func(t *testing.T) {
			require.NoError(t, p.setViewport(ctx, vp.width, vp.height))
			_, from := p.eventsSince(1 << 30)
			require.NoError(t, p.navigate(ctx, url))

			var rows []string
			require.NoError(t, p.eval(ctx, `Array.from(document.querySelectorAll("tr.trigger")).map(r => r.dataset.namespace + "/" + r.dataset.name + "=" + r.dataset.state)`, &rows))
			got := map[string]string{}
			for _, r := range rows {
				k, v, _ := strings.Cut(r, "=")
				got[k] = v
			}
			require.Len(t, got, len(want), "rows: %v", rows)
			for k, state := range want {
				require.Contains(t, got, k)
				if state != "" {
					assert.Equal(t, state, got[k], k)
				}
			}
			assert.Contains(t, []string{"active", "inactive"}, got["llm/qwen-chat"])

			var sparkPoints []int
			require.NoError(t, p.eval(ctx, `Array.from(document.querySelectorAll("tr.trigger[data-name=qwen-chat] svg.spark polyline")).map(l => l.points.numberOfItems)`, &sparkPoints))
			require.Len(t, sparkPoints, 1)
			assert.GreaterOrEqual(t, sparkPoints[0], 25, "ten minutes of history at 20 s per bucket")

			var text string
			require.NoError(t, p.eval(ctx, `document.body.innerText`, &text))
			assert.NotContains(t, text, "MIIE", "the TLS key is never shown")
			assert.Contains(t, text, "delta_temporality", "the receiver's rejections are shown")

			var scrollWidth int
			require.NoError(t, p.eval(ctx, `document.documentElement.scrollWidth`, &scrollWidth))
			if !assert.LessOrEqual(t, scrollWidth, vp.width, "no horizontal scrolling at %d px", vp.width) {
				var wide []string
				_ = p.eval(ctx, fmt.Sprintf(`Array.from(document.querySelectorAll("body *")).filter(e => e.getBoundingClientRect().right > %d).slice(0, 12).map(e => e.tagName + "." + e.className + " " + Math.round(e.getBoundingClientRect().right) + " " + (e.textContent || "").slice(0, 40))`, vp.width), &wide)
				t.Logf("elements past the right edge: %q", wide)
			}

			shot, err := p.screenshot(ctx)
			require.NoError(t, err)
			path := filepath.Join(out, "status-"+vp.name+".png")
			require.NoError(t, os.WriteFile(path, shot, 0o644))
			t.Logf("screenshot: %s", path)
			checkScreenshot(t, shot, vp.width)
			if dst := os.Getenv("STATUS_SCREENSHOT"); dst != "" && vp.name == "wide" {
				require.NoError(t, os.WriteFile(dst, shot, 0o644))
			}

			assert.Empty(t, p.problems(from), "the browser reported problems")
		})
	}
}

// TestProblemsAreReported is the console check's control: a page that
// logs an error and fetches a missing resource is reported.
func TestProblemsAreReported(t *testing.T) {
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`<!DOCTYPE html><link rel="icon" href="data:,"><p>x</p><script>console.error("boom")</script><img src="/missing.png">`))
	}))
	defer control.Close()
	b := startBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := b.newPage(ctx)
	require.NoError(t, err)
	_, from := p.eventsSince(1 << 30)
	require.NoError(t, p.navigate(ctx, control.URL+"/"))
	require.Eventually(t, func() bool { return len(p.problems(from)) >= 2 }, 10*time.Second, 50*time.Millisecond)
	all := strings.Join(p.problems(from), "\n")
	assert.Contains(t, all, "boom")
	assert.Contains(t, all, "404")
}

// checkScreenshot decodes the PNG and checks that the page was painted:
// the width asked for, and the state colours of the table (the active or
// inactive pill and the error pill) present.
func checkScreenshot(t *testing.T, data []byte, width int) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	require.NoError(t, err)
	require.Equal(t, width, img.Bounds().Dx())
	require.Greater(t, img.Bounds().Dy(), 300)
	colours := map[string][3]int{"error red": {0xcf, 0x22, 0x2e}, "link/active blue": {0x09, 0x69, 0xda}}
	counts := map[string]int{}
	distinct := map[[3]int]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y += 2 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x += 2 {
			c := rgb(img, x, y)
			if len(distinct) < 1000 {
				distinct[c] = true
			}
			for name, want := range colours {
				if near(c, want) {
					counts[name]++
				}
			}
		}
	}
	assert.Greater(t, len(distinct), 20, "the screenshot is not blank")
	for name := range colours {
		assert.Positive(t, counts[name], "%s appears", name)
	}
	names := make([]string, 0, len(counts))
	for n, c := range counts {
		names = append(names, fmt.Sprintf("%s=%d", n, c))
	}
	sort.Strings(names)
	t.Logf("colour pixels (every 2nd): %s", strings.Join(names, " "))
}

func rgb(img image.Image, x, y int) [3]int {
	r, g, b, _ := img.At(x, y).RGBA()
	return [3]int{int(r >> 8), int(g >> 8), int(b >> 8)}
}

func near(a, b [3]int) bool {
	d := 0
	for i := range a {
		d += (a[i] - b[i]) * (a[i] - b[i])
	}
	return d < 30*30
}
