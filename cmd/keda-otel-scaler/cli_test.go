package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer runs the real server on loopback ports and pushes two pods'
// vllm:num_requests_waiting (3 and 4) over OTLP/HTTP.
func startServer(t *testing.T) server.Addrs {
	t.Helper()
	return startServerWith(t, nil, http.DefaultClient, "http")
}

// startServerWith is startServer with edit applied to the configuration,
// pushing through client to scheme://.
func startServerWith(t *testing.T, edit func(*config.Config), client *http.Client, scheme string) server.Addrs {
	t.Helper()
	cfg := servertest.Config()
	if edit != nil {
		edit(&cfg)
	}
	s, err := server.New(cfg, server.Settings{})
	require.NoError(t, err)
	servertest.Start(t, s)
	servertest.PushVLLMWaitingWith(t, client, scheme+"://"+s.Addrs().HTTP, map[string]float64{"qwen-a": 3, "qwen-b": 4}, nil)
	return s.Addrs()
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, func(string) string { return "" }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestQueryCommand(t *testing.T) {
	a := startServer(t)
	srv := "http://" + a.HTTP
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{
			"sum",
			[]string{"query", `sum(vllm:num_requests_waiting{model_name="qwen"})`, "--server", srv},
			0,
			[]string{`{} => 7 @ `},
		},
		{
			"flags first, series sorted",
			[]string{"query", "--server", srv, `vllm:num_requests_waiting`},
			0,
			[]string{`{job="vllm", model_name="qwen", pod="qwen-a"} => 3`, `pod="qwen-b"} => 4`},
		},
		{"scalar", []string{"query", "42", "--server", srv}, 0, []string{"scalar => 42"}},
		{
			"range selector: raw samples",
			[]string{"query", `vllm:num_requests_waiting{pod="qwen-a"}[5m]`, "--server", srv},
			0,
			[]string{`vllm:num_requests_waiting{job="vllm", model_name="qwen", pod="qwen-a"} =>` + "\n  3 @ "},
		},
		{"range selector, no samples", []string{"query", "nothing_here[1m]", "--server", srv}, 0, []string{"(empty matrix"}},
		{"no match", []string{"query", "nothing_here", "--server", srv}, 0, []string{"(empty vector"}},
		{
			"time in the past sees nothing",
			[]string{"query", "vllm:num_requests_waiting", "--time", "1000", "--server", srv},
			0,
			[]string{"(empty vector"},
		},
		{
			"json",
			[]string{"query", "sum(vllm:num_requests_waiting)", "--json", "--server", srv},
			0,
			[]string{`"status":"success"`, `"7"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.args...)
			require.Equal(t, tc.wantCode, code, "stderr: %s", errOut)
			for _, w := range tc.want {
				assert.Contains(t, out, w)
			}
		})
	}
}

func TestQueryCommandErrors(t *testing.T) {
	a := startServer(t)
	code, _, errOut := runCLI(t, "query", "sum(", "--server", "http://"+a.HTTP)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "bad_data", "the server's error type is shown")

	code, _, errOut = runCLI(t, "query")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "want exactly one query expression")

	code, _, errOut = runCLI(t, "query", "up", "--server", "http://127.0.0.1:1")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "127.0.0.1:1")
}

func TestExplainCommand(t *testing.T) {
	a := startServer(t)
	code, out, errOut := runCLI(t, "explain", "--scaler", a.Scaler, "--server", "http://"+a.HTTP, "--replicas", "1",
		"--metadata", `query=sum(vllm:num_requests_waiting{model_name="qwen"})`,
		"--metadata", "targetValue=2", "--metadata", "activationThreshold=5", "--metadata", "bogus=1")
	require.Equal(t, 0, code, "stderr: %s\nstdout: %s", errOut, out)
	for _, w := range []string{
		`metricQuery           = "sum(vllm:num_requests_waiting{model_name=\"qwen\"})" (from query)`,
		`targetValue           = "2" (from targetValue)`,
		"ignored (unknown to the scaler): bogus",
		`evaluated:         sum(vllm:num_requests_waiting{model_name="qwen"})`,
		"reads:             vllm:num_requests_waiting, up to 2m0s back",
		"IsActive answers v > 5 (activationThreshold)",
		`metricName "default-explain"`,
		"targetSizeFloat 2, targetSize 2",
		"metricValueFloat 7, metricValue 7",
		"IsActive:      true (active means value > activationThreshold 5)",
		`pod="qwen-a"} => 3`,
		`pod="qwen-b"} => 4`,
		"whole query: {} => 7",
		"desired = ceil(V/T) = 4",
	} {
		assert.Contains(t, out, w)
	}
}

// TestExplainUsesLookbackDelta: with both window and lookbackDelta set,
// the series are listed with the trigger's lookbackDelta, as the scaler
// evaluates them, not with its window.
func TestExplainUsesLookbackDelta(t *testing.T) {
	a := startServer(t)
	code, out, errOut := runCLI(t, "explain", "--scaler", a.Scaler, "--server", "http://"+a.HTTP,
		"--metadata", "metricQuery=sum(vllm:num_requests_waiting)", "--metadata", "targetValue=2",
		"--metadata", "window=1m", "--metadata", "lookbackDelta=3m")
	require.Equal(t, 0, code, "stderr: %s\nstdout: %s", errOut, out)
	assert.Contains(t, out, "lookbackDelta:     3m0s")
	assert.Contains(t, out, ", lookback_delta 3m0s)")
	assert.Contains(t, out, "whole query: {} => 7 @")
}

func TestExplainCommandShowsProblems(t *testing.T) {
	a := startServer(t)
	code, out, _ := runCLI(t, "explain", "--scaler", a.Scaler, "--server", "",
		"--metadata", "metricQuery=avg(vllm:num_requests_waiting)", "--metadata", "targetValue=0")
	assert.Equal(t, 1, code, "a target the server rejects fails the command")
	assert.Contains(t, out, "avg(...) under AverageValue under-scales")
	assert.Contains(t, out, "InvalidArgument")

	code, out, _ = runCLI(t, "explain", "--scaler", "", "--server", "", "--metadata", "targetValue=1")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, `error: ScaledObject default/explain: trigger metadata metricQuery "": is required`)
	assert.Contains(t, out, "refused: GetMetricSpec, GetMetrics and IsActive answer InvalidArgument")

	code, out, _ = runCLI(t, "explain", "--scaler", "", "--server", "", "--metadata", "metricQuery=rate(x[1m]) + ", "--metadata", "targetValue=1")
	assert.Equal(t, 1, code)
	assert.True(t, strings.Contains(out, "parse error") || strings.Contains(out, "not supported"), out)
}

func TestDemoCommandRejectsBadFlags(t *testing.T) {
	code, _, errOut := runCLI(t, "demo", "--profile", "tsunami", "--duration", "1s")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `unknown profile "tsunami"`)
	code, _, _ = runCLI(t, "demo", "--no-such-flag")
	assert.Equal(t, 2, code)
}
