package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/scaler"
	kosstatus "github.com/keda-otel-scaler/keda-otel-scaler/pkg/status"
)

// secretValues are trigger metadata values that must never leave the
// server: keys KEDA resolves from a TriggerAuthentication (tlsClientCert,
// tlsClientKey, caCert), FromEnv twins KEDA sends resolved, and anything
// named like a token, password or key.
var secretValues = map[string]string{
	"tlsClientKey":    "-----BEGIN PRIVATE KEY-----\nSECRET-TLS-KEY-MATERIAL\n-----END PRIVATE KEY-----",
	"tlsClientCert":   "-----BEGIN CERTIFICATE-----\nSECRET-CLIENT-CERT\n-----END CERTIFICATE-----",
	"caCert":          "-----BEGIN CERTIFICATE-----\nSECRET-CA-CERT\n-----END CERTIFICATE-----",
	"bearerToken":     "SECRET-BEARER-abc123",
	"passwordFromEnv": "SECRET-RESOLVED-PASSWORD",
	"apiKey":          "SECRET-API-KEY",
	"clientSecret":    "SECRET-CLIENT-SECRET",
}

// triggers fetches GET /api/v1/triggers and returns the decoded data and
// the raw body.
func (e *kedaEnv) triggers(t *testing.T, query string) (kosstatus.TriggersData, string) {
	t.Helper()
	resp, err := http.Get("http://" + e.srv.Addrs().HTTP + "/api/v1/triggers" + query)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var env struct {
		Status string                 `json:"status"`
		Data   kosstatus.TriggersData `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &env), string(body))
	require.Equal(t, "success", env.Status)
	return env.Data, string(body)
}

func findStatus(t *testing.T, d kosstatus.TriggersData, q string) kosstatus.Trigger {
	t.Helper()
	tr, ok := lookupStatus(d, q)
	require.True(t, ok, "no trigger with query %q in %d triggers", q, len(d.Triggers))
	return tr
}

func lookupStatus(d kosstatus.TriggersData, q string) (kosstatus.Trigger, bool) {
	for _, tr := range d.Triggers {
		if tr.Query == q {
			return tr, true
		}
	}
	return kosstatus.Trigger{}, false
}

// TestTriggerStatusAfterKEDATraffic drives the real server with KEDA's
// generated client (GetMetricSpec, IsActive during warm-up, GetMetrics,
// IsActive, StreamIsActive with a push, a failing trigger and one that does
// not compile) and checks that GET /api/v1/triggers shows each answer as
// it happened, the series the query selects, and never a secret.
func TestTriggerStatusAfterKEDATraffic(t *testing.T) {
	e := startKEDA(t, true, func(c *config.Config) { c.Scaler.Warmup = 30 * time.Second })
	good := md("sum(queue_depth)", "activationThreshold", "5")
	for k, v := range secretValues {
		good[k] = v
	}
	_, err := e.client.GetMetricSpec(e.ctx(t), soRef(good))
	require.NoError(t, err)
	_, err = e.active(t, good)
	require.Equal(t, codes.Unavailable, status.Code(err), "warm-up")

	d, body := e.triggers(t, "")
	assert.NotContains(t, body, "SECRET", "no secret during warm-up either")
	tr := findStatus(t, d, "sum(queue_depth)")
	require.NotNil(t, tr.LastError)
	assert.True(t, tr.LastError.WarmingUp)
	assert.Equal(t, "Unavailable", tr.LastError.Code)
	assert.Equal(t, "IsActive", tr.LastError.Method)
	assert.Equal(t, base.UnixMilli(), tr.LastError.Time.UnixMilli())
	assert.Nil(t, tr.Last)
	assert.Equal(t, "ns-so", tr.MetricName)
	assert.Equal(t, "2m0s", tr.Window)
	assert.InDelta(t, 1, tr.Target, 0)
	assert.InDelta(t, 5, tr.Activation, 0)
	assert.Equal(t, "external", tr.Type)

	// After warm-up: values and activity as they happened.
	e.at(31 * time.Second)
	e.export(t, point{name: "queue_depth", v: 1, kv: []string{"pod", "a"}}, point{name: "queue_depth", v: 2, kv: []string{"pod", "b"}})
	v, _, err := e.value(t, good)
	require.NoError(t, err)
	require.InDelta(t, 3, v, 0)
	tr = findStatus(t, must(e.triggers(t, "")), "sum(queue_depth)")
	require.NotNil(t, tr.Last)
	assert.InDelta(t, 3, tr.Last.Value, 0)
	assert.False(t, tr.Last.Active)
	assert.Equal(t, base.Add(31*time.Second).UnixMilli(), tr.Last.Time.UnixMilli())
	assert.Equal(t, "s0-ns-so", tr.RequestedMetricName)
	assert.Equal(t, uint64(1), tr.Evaluations)

	e.at(32 * time.Second)
	e.export(t, point{name: "queue_depth", v: 7, kv: []string{"pod", "a"}})
	act, err := e.active(t, good)
	require.NoError(t, err)
	require.True(t, act)
	tr = findStatus(t, must(e.triggers(t, "")), "sum(queue_depth)")
	assert.InDelta(t, 9, tr.Last.Value, 0)
	assert.True(t, tr.Last.Active)
	assert.Equal(t, base.Add(32*time.Second).UnixMilli(), tr.Last.Time.UnixMilli())

	// The series the query selects, largest first.
	require.NotNil(t, tr.Series)
	require.Len(t, tr.Series.Selectors, 1)
	sel := tr.Series.Selectors[0]
	assert.Equal(t, "queue_depth", sel.Selector)
	assert.Equal(t, 2, sel.Count)
	require.Len(t, sel.Top, 2)
	assert.Contains(t, sel.Top[0].Labels, `pod="a"`)
	assert.InDelta(t, 7, float64(sel.Top[0].Value), 0)
	assert.InDelta(t, 2, float64(sel.Top[1].Value), 0)

	// A push: an external-push trigger's stream, an inactive-to-active edge.
	push := md("sum(gateway_queue)", "activationThreshold", "0", "tlsClientKey", secretValues["tlsClientKey"])
	e.export(t, point{name: "gateway_queue", v: 0})
	stream, err := e.client.StreamIsActive(e.ctx(t), soRef(push))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		tr, ok := lookupStatus(must(e.triggers(t, "")), "sum(gateway_queue)")
		return ok && tr.OpenStreams == 1
	}, 10*time.Second, 10*time.Millisecond)
	e.at(33 * time.Second)
	e.export(t, point{name: "gateway_queue", v: 4})
	got, err := stream.Recv()
	require.NoError(t, err)
	require.True(t, got.GetResult())
	require.Eventually(t, func() bool {
		tr, ok := lookupStatus(must(e.triggers(t, "")), "sum(gateway_queue)")
		return ok && tr.Pushes == 1
	}, 10*time.Second, 10*time.Millisecond)
	tr = findStatus(t, must(e.triggers(t, "")), "sum(gateway_queue)")
	assert.Equal(t, "external-push", tr.Type)
	assert.Equal(t, uint64(1), tr.Edges)
	require.NotNil(t, tr.LastPush)
	assert.Equal(t, base.Add(33*time.Second).UnixMilli(), tr.LastPush.UnixMilli())
	assert.InDelta(t, 4, tr.Last.Value, 0)

	// An error answer with its code, and a trigger that does not compile.
	two := md("queue_depth * 1") // two series: not one value
	_, _, err = e.value(t, two)
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	bad := md("sum(rate(queue_depth[1m])", "password", "hunter2-SECRET")
	_, err = e.client.GetMetricSpec(e.ctx(t), soRef(bad))
	require.Equal(t, codes.InvalidArgument, status.Code(err))

	d, body = e.triggers(t, "")
	tr = findStatus(t, d, "queue_depth * 1")
	require.NotNil(t, tr.LastError)
	assert.Equal(t, "FailedPrecondition", tr.LastError.Code)
	assert.Equal(t, "GetMetrics", tr.LastError.Method)
	assert.Contains(t, tr.LastError.Message, "more than one series")
	assert.Nil(t, tr.Last)
	tr = findStatus(t, d, "sum(rate(queue_depth[1m])")
	assert.False(t, tr.Compiled)
	assert.Equal(t, "InvalidArgument", tr.LastError.Code)
	assert.Equal(t, 4, d.Total)

	// Secrets: redacted by key, never in the body.
	for k, v := range secretValues {
		for _, line := range strings.Split(v, "\n") {
			assert.NotContains(t, body, line, k)
		}
	}
	assert.NotContains(t, body, "hunter2")
	shown := map[string]string{}
	for _, m := range findStatus(t, d, "sum(queue_depth)").Metadata {
		shown[m.Key] = m.Value
	}
	for k := range secretValues {
		assert.Equal(t, scaler.Redacted, shown[k], k)
	}
	assert.Equal(t, "keda-otel-scaler.keda.svc:4318", shown["scalerAddress"])

	// Filters and the size bound.
	d, _ = e.triggers(t, "?namespace=ns&name=so&limit=1&series=false")
	assert.Len(t, d.Triggers, 1)
	assert.Equal(t, 4, d.Total)
	assert.True(t, d.Truncated)
	assert.Nil(t, d.Triggers[0].Series)
	d, _ = e.triggers(t, "?namespace=other")
	assert.Empty(t, d.Triggers)
	require.NoError(t, stream.CloseSend())
}

// TestStatusPageReadOnly: the page renders the triggers and the JSON
// endpoint and page refuse every method but GET and HEAD.
func TestStatusPageReadOnly(t *testing.T) {
	e := startKEDA(t, true, nil)
	e.export(t, point{name: "queue_depth", v: 3})
	_, _, err := e.value(t, md("sum(queue_depth)", "caCert", secretValues["caCert"]))
	require.NoError(t, err)
	for _, path := range []string{"/status", "/"} {
		resp, err := http.Get("http://" + e.srv.Addrs().HTTP + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'none'")
		assert.Contains(t, string(body), `data-namespace="ns" data-name="so"`)
		assert.Contains(t, string(body), "sum(queue_depth)")
		assert.NotContains(t, string(body), "SECRET-CA-CERT")
		assert.NotContains(t, string(body), "<script")
	}
	for _, path := range []string{"/status", "/", "/api/v1/triggers"} {
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			req, err := http.NewRequest(m, "http://"+e.srv.Addrs().HTTP+path, strings.NewReader("x"))
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			_ = resp.Body.Close()
			assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "%s %s", m, path)
		}
	}
	resp, err := http.Get("http://" + e.srv.Addrs().HTTP + "/nothing-here")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "/ serves only the root")
}

func must[T any](v T, _ string) T { return v }
