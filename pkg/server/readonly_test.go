package server

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

// candidatePaths is a superset of every path the HTTP listener could
// serve: ours (docs/interfaces.md), every path of Prometheus's HTTP API
// and lifecycle endpoints (the API we follow, admin and write endpoints
// included), pprof, and the other OTLP signals. The test discovers the
// routes among them, so a route added without being listed in
// wantRoutes fails it.
var candidatePaths = []string{
	"/", "/healthz", "/readyz", "/metrics", "/v1/metrics", "/v1/metrics/", "/v1/traces", "/v1/logs",
	"/api/v1/", "/api/v1/query", "/api/v1/query_range", "/api/v1/query_exemplars", "/api/v1/format_query", "/api/v1/parse_query",
	"/api/v1/series", "/api/v1/labels", "/api/v1/label/job/values", "/api/v1/label/__name__/values",
	"/api/v1/metadata", "/api/v1/targets", "/api/v1/targets/metadata", "/api/v1/targets/relabel_steps", "/api/v1/scrape_pools",
	"/api/v1/alertmanagers", "/api/v1/alerts", "/api/v1/rules", "/api/v1/notifications", "/api/v1/notifications/live",
	"/api/v1/status/buildinfo", "/api/v1/status/config", "/api/v1/status/flags", "/api/v1/status/runtimeinfo",
	"/api/v1/status/tsdb", "/api/v1/status/tsdb/blocks", "/api/v1/status/walreplay", "/api/v1/status/freshness",
	"/api/v1/read", "/api/v1/write", "/api/v1/otlp/v1/metrics",
	"/api/v1/admin/tsdb/delete_series", "/api/v1/admin/tsdb/clean_tombstones", "/api/v1/admin/tsdb/snapshot",
	"/api/v1/triggers", "/status", "/status/",
	"/api/v2/status", "/federate", "/-/reload", "/-/quit", "/-/healthy", "/-/ready",
	"/debug/pprof/", "/debug/pprof/heap", "/debug/vars",
}

// wantRoutes are the paths that exist (docs/interfaces.md, HTTP endpoints).
var wantRoutes = []string{
	"/", "/api/v1/label/__name__/values", "/api/v1/label/job/values", "/api/v1/labels", "/api/v1/metadata",
	"/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/status/buildinfo", "/api/v1/status/freshness", "/api/v1/triggers",
	"/healthz", "/metrics", "/readyz", "/status", "/v1/metrics",
}

var allMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, http.MethodTrace, http.MethodConnect, "PURGE",
}

// TestHTTPReadOnly is issue #13 item 4: the HTTP API, /metrics and the
// health endpoints can never delete, reset or write data. Every candidate
// path gets every method, with an OTLP body and with a form body that
// names a query and a series selector; the store's snapshot is the same
// byte for byte after each request. Only POST /v1/metrics writes, which
// the end of the test checks so the comparison is known to see a write.
func TestHTTPReadOnly(t *testing.T) {
	cfg := servertest.Config()
	s, err := New(cfg, Settings{})
	require.NoError(t, err)
	servertest.Start(t, s)
	pushGauge(t, s, 5)
	snapshot := func() []byte {
		var b bytes.Buffer
		require.NoError(t, s.Store().WriteSnapshot(&b))
		return b.Bytes()
	}
	before := snapshot()
	otlp, err := gaugeRequest("readonly_probe", 1).MarshalProto()
	require.NoError(t, err)
	form := "query=queue_depth&match[]=queue_depth&start=0&end=1&step=1"

	base := "http://" + s.Addrs().HTTP
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path, ct string, body []byte) int {
		req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
		require.NoError(t, err)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := client.Do(req)
		require.NoError(t, err, "%s %s", method, path)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}

	var routes []string
	for _, p := range candidatePaths {
		if do(http.MethodGet, p, "", nil) != http.StatusNotFound {
			routes = append(routes, p)
		}
	}
	slices.Sort(routes)
	require.Equal(t, wantRoutes, routes, "the HTTP listener's routes")

	for _, p := range candidatePaths {
		for _, m := range allMethods {
			if p == ingestPath && m == http.MethodPost {
				continue // the one writer, checked below
			}
			for _, b := range []struct {
				ct   string
				body []byte
			}{{"application/x-protobuf", otlp}, {"application/x-www-form-urlencoded", []byte(form)}, {"", nil}} {
				code := do(m, p, b.ct, b.body)
				require.Equal(t, before, snapshot(), "%s %s (%s) changed the store", m, p, b.ct)
				readMethod := m == http.MethodGet || m == http.MethodHead || (m == http.MethodPost && strings.HasPrefix(p, "/api/v1/"))
				if !readMethod {
					assert.Equal(t, http.StatusMethodNotAllowed, code, "%s %s (%s)", m, p, b.ct)
				}
			}
		}
	}

	code := do(http.MethodPost, ingestPath, "application/x-protobuf", otlp)
	require.Equal(t, http.StatusOK, code)
	assert.NotEqual(t, before, snapshot(), "POST /v1/metrics writes, and the comparison sees it")
}
