// Package servertest runs the real server on loopback ports for tests, as
// net/http/httptest runs a handler: Config is a configuration whose
// listeners bind 127.0.0.1:0, Start runs a server built from it for the
// length of a test, PostOTLP and PushVLLMWaiting send it metrics over
// OTLP/HTTP (their With forms through a given client, for TLS), Query
// evaluates PromQL through its query API, and Logs collects what it logs. It is test support: only tests
// import it, in this module and in the test modules under test/ (which
// cannot import pkg/internal).
//
// It imports pkg/config but not pkg/server, so that pkg/server's own tests
// use it too: Start takes the server New built.
package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
)

// Timeout bounds every call of this package: a server's start-up is
// immediate, its shutdown and a push take milliseconds.
const Timeout = 10 * time.Second

// Config returns the embedded defaults with the three listeners on
// 127.0.0.1:0 (the kernel picks free ports; Addrs reports them) and the
// warm-up and the push hold-off off, so the first call and every edge are
// answered at once. Tests of the warm-up or the hold-off set them again.
func Config() config.Config {
	cfg := config.Default()
	cfg.Server.OTLPGRPCAddr, cfg.Server.ScalerAddr, cfg.Server.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Scaler.Warmup, cfg.Scaler.PushHoldoff = 0, 0
	return cfg
}

// Server is what Start runs: a *server.Server.
type Server interface {
	Start() error
	Shutdown(ctx context.Context) error
}

// Start starts s and returns it. When the test and its subtests end, s
// is shut down, which must succeed within Timeout; Shutdown is
// idempotent, so a test may also shut s down itself.
func Start[S Server](tb testing.TB, s S) S {
	tb.Helper()
	require.NoError(tb, s.Start())
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		require.NoError(tb, s.Shutdown(ctx))
	})
	return s
}

// Logs is a log sink for a server under test, safe for its goroutines:
// the writer of the slog handler in its Settings.Logger.
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Count is how many times sub occurs in what was logged so far.
func (l *Logs) Count(sub string) int { return strings.Count(l.String(), sub) }

// PostOTLP sends md as one protobuf Export to the OTLP/HTTP endpoint of
// the server at httpAddr, requires the status 200 and returns its partial
// success: the points rejected and the message (0 and "" when every point
// was accepted). The connection is closed after the call, so no client
// goroutine outlives it.
func PostOTLP(tb testing.TB, httpAddr string, md pmetric.Metrics) (rejected int64, message string) {
	tb.Helper()
	return PostOTLPWith(tb, http.DefaultClient, "http://"+httpAddr, md)
}

// PostOTLPWith is PostOTLP through client to the server at the base URL
// given (scheme://host:port): for an HTTP listener that serves TLS.
func PostOTLPWith(tb testing.TB, client *http.Client, base string, md pmetric.Metrics) (rejected int64, message string) {
	tb.Helper()
	body, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	require.NoError(tb, err)
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/metrics", bytes.NewReader(body))
	require.NoError(tb, err)
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Close = true
	resp, err := client.Do(req)
	require.NoError(tb, err)
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	require.Equal(tb, http.StatusOK, resp.StatusCode, string(out))
	er := pmetricotlp.NewExportResponse()
	require.NoError(tb, er.UnmarshalProto(out))
	return er.PartialSuccess().RejectedDataPoints(), er.PartialSuccess().ErrorMessage()
}

// PushVLLMWaiting pushes, as a vLLM pod's collector would, the gauge
// vllm:num_requests_waiting{model_name="qwen"} with the value given for
// each pod, at the real now, and requires every point accepted. Each pod
// is a resource with service.name "vllm", its k8s.pod.name (so its series
// carry pod) and the resource attributes given.
func PushVLLMWaiting(tb testing.TB, httpAddr string, perPod map[string]float64, resource map[string]string) {
	tb.Helper()
	PushVLLMWaitingWith(tb, http.DefaultClient, "http://"+httpAddr, perPod, resource)
}

// PushVLLMWaitingWith is PushVLLMWaiting through client to the base URL
// given, as PostOTLPWith.
func PushVLLMWaitingWith(tb testing.TB, client *http.Client, base string, perPod map[string]float64, resource map[string]string) {
	tb.Helper()
	md := pmetric.NewMetrics()
	now := pcommon.NewTimestampFromTime(time.Now())
	for pod, v := range perPod {
		rm := md.ResourceMetrics().AppendEmpty()
		attrs := rm.Resource().Attributes()
		attrs.PutStr("service.name", "vllm")
		attrs.PutStr("k8s.pod.name", pod)
		for k, v := range resource {
			attrs.PutStr(k, v)
		}
		m := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
		m.SetName("vllm:num_requests_waiting")
		dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
		dp.SetTimestamp(now)
		dp.SetDoubleValue(v)
		dp.Attributes().PutStr("model_name", "qwen")
	}
	rejected, msg := PostOTLPWith(tb, client, base, md)
	require.Zero(tb, rejected, msg)
}

// Query evaluates q at the time at through the Prometheus query API of the
// server at httpAddr, with the lookback given (0: the API's default), and
// returns the one value: a scalar, or the single sample of a vector;
// ok=false for an empty vector. An error answer, or more than one sample,
// fails the test.
func Query(tb testing.TB, httpAddr, q string, at time.Time, lookback time.Duration) (v float64, ok bool) {
	tb.Helper()
	form := url.Values{"query": {q}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	if lookback > 0 {
		form.Set("lookback_delta", lookback.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+"/api/v1/query", strings.NewReader(form.Encode()))
	require.NoError(tb, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	require.NoError(tb, err)
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	require.NoError(tb, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(tb, "success", body.Status, "%s: %s", q, body.Error)
	var sample [2]any
	if body.Data.ResultType == "scalar" {
		require.NoError(tb, json.Unmarshal(body.Data.Result, &sample))
	} else {
		var vec []struct {
			Value [2]any `json:"value"`
		}
		require.NoError(tb, json.Unmarshal(body.Data.Result, &vec))
		require.LessOrEqual(tb, len(vec), 1, "%s returned %d series", q, len(vec))
		if len(vec) == 0 {
			return 0, false
		}
		sample = vec[0].Value
	}
	s, isString := sample[1].(string)
	require.True(tb, isString, "%s: value %v", q, sample[1])
	v, err = strconv.ParseFloat(s, 64)
	require.NoError(tb, err)
	return v, true
}
