// Package promtool drives the scaler's Prometheus-compatible HTTP API with
// promtool, Prometheus's own command-line client, built from the Go module
// proxy by `make promtool-test` (this module pins its version with a tool
// directive, so the main module stays lean).
package promtool

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// promtoolPath returns the binary `make promtool-test` built.
func promtoolPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("PROMTOOL")
	if p == "" {
		t.Skip("PROMTOOL is not set: run `make promtool-test`, which builds promtool and sets it")
	}
	_, err := os.Stat(p)
	require.NoError(t, err, "PROMTOOL=%s must exist", p)
	return p
}

// startServer runs the real server on loopback ports with two pods'
// vllm:num_requests_waiting (3 and 4) pushed over OTLP/HTTP.
func startServer(t *testing.T) string {
	t.Helper()
	s, err := server.New(servertest.Config(), server.Settings{})
	require.NoError(t, err)
	servertest.Start(t, s)
	servertest.PushVLLMWaiting(t, s.Addrs().HTTP, map[string]float64{"qwen-a": 3, "qwen-b": 4}, nil)
	return "http://" + s.Addrs().HTTP
}

func TestPromtoolQueryInstant(t *testing.T) {
	bin := promtoolPath(t)
	url := startServer(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"sum", []string{`sum(vllm:num_requests_waiting{model_name="qwen"})`}, []string{"{} => 7 @["}},
		{"sum by pod", []string{`sum by (pod) (vllm:num_requests_waiting)`}, []string{
			`{pod="qwen-a"} => 3 @[`, `{pod="qwen-b"} => 4 @[`,
		}},
		{"max", []string{`max(vllm:num_requests_waiting)`}, []string{"{} => 4 @["}},
		{"scalar", []string{`42`}, []string{"scalar: 42 @["}},
		{"no match", []string{`nothing_here`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append([]string{"query", "instant", url}, tc.args...)
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			require.NoError(t, err, "promtool %v: %s", args, out)
			for _, w := range tc.want {
				assert.Contains(t, string(out), w)
			}
			if tc.want == nil {
				assert.Empty(t, bytes.TrimSpace(out), "an empty vector prints nothing")
			}
		})
	}
}

func TestPromtoolQueryInstantReportsErrors(t *testing.T) {
	bin := promtoolPath(t)
	url := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "query", "instant", url, "sum(").CombinedOutput()
	require.Error(t, err, "promtool exits non-zero on a bad query")
	assert.Contains(t, string(out), "bad_data")
}

func TestPromtoolQueryInstantAtTime(t *testing.T) {
	bin := promtoolPath(t)
	url := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// An hour ago nothing had been pushed yet.
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	out, err := exec.CommandContext(ctx, bin, "query", "instant", "--time="+past, url, `sum(vllm:num_requests_waiting)`).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.NotContains(t, string(out), "=> 7", "the time parameter reaches the server")
}

// TestPromtoolSeriesRangeAndMatrix: promtool's series, labels and range
// commands, and a range selector in an instant query, which answers a
// matrix of raw samples (issue #12 class 10).
func TestPromtoolSeriesRangeAndMatrix(t *testing.T) {
	bin := promtoolPath(t)
	url := startServer(t)
	now := time.Now()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"series, open range", []string{"query", "series", "--match=vllm:num_requests_waiting", url}, []string{
			`{__name__="vllm:num_requests_waiting", job="vllm", model_name="qwen", pod="qwen-a"}`,
			`{__name__="vllm:num_requests_waiting", job="vllm", model_name="qwen", pod="qwen-b"}`,
		}},
		{"labels, open range", []string{"query", "labels", url, "pod"}, []string{"qwen-a", "qwen-b"}},
		{"range", []string{
			"query", "range", "--start=" + now.Add(-30*time.Second).UTC().Format(time.RFC3339), "--end=" + now.Add(30*time.Second).UTC().Format(time.RFC3339),
			"--step=15s", url, `sum(vllm:num_requests_waiting)`,
		}, []string{"{} =>\n7 @["}},
		{"range selector", []string{"query", "instant", url, `vllm:num_requests_waiting{pod="qwen-b"}[5m]`}, []string{
			`vllm:num_requests_waiting{job="vllm", model_name="qwen", pod="qwen-b"} =>`, "4 @[",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, tc.args...).CombinedOutput()
			require.NoError(t, err, "promtool %v: %s", tc.args, out)
			for _, w := range tc.want {
				assert.Contains(t, string(out), w)
			}
		})
	}
}
