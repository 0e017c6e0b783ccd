package status

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/scaler"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	st  *store.Store
	sc  *scaler.Scaler
	h   *Handler
	mux *http.ServeMux
	now time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{now: time.Unix(1_800_000_000, 0)}
	clock := func() time.Time { return f.now }
	f.st = store.New(store.Config{}, store.Settings{Now: clock})
	e := query.NewEngine(f.st)
	f.sc = scaler.New(e, f.st, scaler.Config{}, scaler.Settings{Now: clock})
	t.Cleanup(f.sc.Drain)
	rcv := receiver.New(f.st, receiver.Config{}, receiver.Settings{Now: clock})
	f.h = New(Sources{
		Scaler: f.sc, Receiver: rcv, Store: f.st, Engine: e, Now: clock, Version: "v-test",
		Flags: []Flag{{"http-addr", ":8080"}, {"otlp-bearer-token", "tok"}, {"tls-key-file", "/etc/tls/key.pem"}},
	})
	f.mux = http.NewServeMux()
	f.h.Register(f.mux)
	return f
}

// series stores n series name{pod=i} with value i at the fixture's clock.
func (f *fixture) series(t *testing.T, name string, n int) {
	t.Helper()
	for i := range n {
		lset := labels.FromStrings(labels.MetricName, name, "pod", strconv.Itoa(i))
		ref, err := f.st.Create(lset.Hash(), lset)
		require.NoError(t, err)
		require.NoError(t, f.st.Append(ref, f.now.UnixMilli(), float64(i)))
	}
}

func (f *fixture) get(t *testing.T, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

func (f *fixture) trigger(t *testing.T, name, q string) {
	t.Helper()
	_, err := f.sc.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: &externalscaler.ScaledObjectRef{
		Namespace: "ns", Name: name, ScalerMetadata: map[string]string{"metricQuery": q, "targetValue": "1"},
	}})
	require.NoError(t, err)
}

func decode(t *testing.T, rec *httptest.ResponseRecorder) TriggersData {
	t.Helper()
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var env struct {
		Status string       `json:"status"`
		Data   TriggersData `json:"data"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &env))
	require.Equal(t, "success", env.Status)
	return env.Data
}

// TestSelectorSeries: each selector of the lowered query, range selectors
// with their range as lookback, counted and ranked; a selector over the
// per-selector budget is a lower bound with the error.
func TestSelectorSeries(t *testing.T) {
	f := newFixture(t)
	f.series(t, "x", 15)
	f.series(t, "y", 3)
	f.trigger(t, "a", "sum(x) + sum(rate(y[5m]))")
	d := decode(t, f.get(t, "/api/v1/triggers"))
	require.Len(t, d.Triggers, 1)
	info := d.Triggers[0].Series
	require.NotNil(t, info)
	require.Len(t, info.Selectors, 2)
	assert.Equal(t, "x", info.Selectors[0].Selector)
	assert.Equal(t, 15, info.Selectors[0].Count)
	require.Len(t, info.Selectors[0].Top, topSeries)
	assert.InDelta(t, 14, float64(info.Selectors[0].Top[0].Value), 0)
	assert.InDelta(t, 5, float64(info.Selectors[0].Top[9].Value), 0)
	assert.Equal(t, "y", info.Selectors[1].Selector)
	assert.Equal(t, "5m0s", info.Selectors[1].Lookback)
	assert.Equal(t, 3, info.Selectors[1].Count)

	b := budget{left: 10}
	got := selectSeries(context.Background(), query.NewEngine(f.st), "sum(x)", time.Minute, f.now.UnixMilli(), &b)
	require.Len(t, got.Selectors, 1)
	assert.True(t, got.Selectors[0].AtLeast)
	assert.Equal(t, 10, got.Selectors[0].Count)
	assert.NotEmpty(t, got.Selectors[0].Error)
	got = selectSeries(context.Background(), query.NewEngine(f.st), "sum(x)", time.Minute, f.now.UnixMilli(), &b)
	assert.NotEmpty(t, got.Skipped, "the request's budget is spent")
}

func TestParams(t *testing.T) {
	f := newFixture(t)
	for i := range 5 {
		f.trigger(t, "so"+strconv.Itoa(i), "vector(1)")
	}
	d := decode(t, f.get(t, "/api/v1/triggers?limit=2&series=false"))
	assert.Len(t, d.Triggers, 2)
	assert.Equal(t, 5, d.Total)
	assert.True(t, d.Truncated)
	d = decode(t, f.get(t, "/api/v1/triggers?name=so3"))
	require.Len(t, d.Triggers, 1)
	assert.Equal(t, "so3", d.Triggers[0].Name)
	for _, q := range []string{"limit=0", "limit=x", "limit=100000", "series=maybe"} {
		rec := f.get(t, "/api/v1/triggers?"+q)
		assert.Equal(t, http.StatusBadRequest, rec.Code, q)
		assert.Contains(t, rec.Body.String(), `"errorType":"bad_data"`, q)
		assert.Equal(t, http.StatusBadRequest, f.get(t, "/status?"+q).Code, q)
	}
}

// TestConcurrencyLimit: with every slot taken, a request waits, then gets
// 503 once its context ends.
func TestConcurrencyLimit(t *testing.T) {
	f := newFixture(t)
	for range maxConcurrent {
		require.NoError(t, f.h.acquire(context.Background()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/triggers", nil).WithContext(ctx))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	rec = httptest.NewRecorder()
	f.mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status", nil).WithContext(ctx))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	for range maxConcurrent {
		f.h.release()
	}
	assert.Equal(t, http.StatusOK, f.get(t, "/api/v1/triggers").Code)
}

// TestPageEscapesAndRedacts: names, queries and label values a client
// sent are escaped, secret flags are redacted, paths are not.
func TestPageEscapesAndRedacts(t *testing.T) {
	f := newFixture(t)
	lset := labels.FromStrings(labels.MetricName, "x", "pod", `<script>alert(1)</script>`)
	ref, err := f.st.Create(lset.Hash(), lset)
	require.NoError(t, err)
	require.NoError(t, f.st.Append(ref, f.now.UnixMilli(), 1))
	_, err = f.sc.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: &externalscaler.ScaledObjectRef{
		Namespace: "ns", Name: `so"><img src=x onerror=alert(1)>`,
		ScalerMetadata: map[string]string{"metricQuery": `sum(x{pod!="</td>"})`, "targetValue": "1"},
	}})
	require.NoError(t, err)
	rec := f.get(t, "/status")
	require.Equal(t, http.StatusOK, rec.Code)
	body := rec.Body.String()
	assert.NotContains(t, body, "<script>")
	assert.NotContains(t, body, "<img")
	assert.Contains(t, body, "&lt;script&gt;")
	assert.Contains(t, body, "--otlp-bearer-token</th><td class=\"mono\">&lt;redacted&gt;")
	assert.Contains(t, body, "/etc/tls/key.pem")
	assert.Equal(t, 1, strings.Count(body, `<tr class="trigger"`))
	assert.Contains(t, rec.Header().Get("Content-Security-Policy"), "default-src 'none'")
}

func TestNumberJSON(t *testing.T) {
	for _, f := range []float64{1.5, 0, -2, math.NaN(), math.Inf(1), math.Inf(-1)} {
		b, err := json.Marshal(Number(f))
		require.NoError(t, err)
		var n Number
		require.NoError(t, json.Unmarshal(b, &n))
		if math.IsNaN(f) {
			assert.True(t, math.IsNaN(float64(n)))
		} else {
			assert.InDelta(t, f, float64(n), 0)
		}
	}
}

func TestRateSampler(t *testing.T) {
	var r rateSampler
	t0 := time.Unix(1000, 0)
	_, span := r.perSecond(t0, 0)
	assert.Zero(t, span)
	for i := range 2 * rateSamples {
		r.observe(t0.Add(time.Duration(i)*rateEvery), uint64(i)*500)
	}
	now := t0.Add(time.Duration(2*rateSamples) * rateEvery)
	ps, span := r.perSecond(now, uint64(2*rateSamples)*500)
	assert.Equal(t, time.Duration(rateSamples)*rateEvery, span)
	assert.InDelta(t, 100, ps, 1e-9)
}
