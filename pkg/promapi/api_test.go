package promapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// apiStoreNow is the store clock of the API tests: one hour after the epoch,
// so samples at small timestamps are within retention.
var apiStoreNow = time.UnixMilli(3_600_000)

type apiSeries struct {
	desc    string
	samples []store.Sample
}

// newAPITestServer loads series into a real store and serves the API over
// it with the default Config. The API's clock (queries without time) reads
// 100 s.
func newAPITestServer(t testing.TB, series []apiSeries) *httptest.Server {
	t.Helper()
	srv, _ := newAPITestServerConfig(t, series, Config{})
	return srv
}

// newAPITestServerConfig is newAPITestServer with a Config; it also returns
// the API.
func newAPITestServerConfig(t testing.TB, series []apiSeries, cfg Config) (*httptest.Server, *API) {
	t.Helper()
	st := store.New(store.Config{Retention: time.Hour, Freshness: -1}, store.Settings{Now: func() time.Time { return apiStoreNow }})
	p := parser.NewParser(parser.Options{})
	for i, s := range series {
		lset, err := p.ParseMetric(s.desc)
		require.NoError(t, err)
		ref, err := st.Create(uint64(i+1), lset)
		require.NoError(t, err)
		for _, sm := range s.samples {
			require.NoError(t, st.Append(ref, sm.T, sm.V))
		}
	}
	mux := http.NewServeMux()
	api := New(query.NewEngine(st), st, cfg, Settings{Now: func() time.Time { return time.UnixMilli(100_000) }})
	api.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, api
}

// apiResponse is the envelope of every answer, for decoding.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
}

type vectorElem struct {
	Metric map[string]string `json:"metric"`
	Value  apiPoint          `json:"value"`
}

type matrixElem struct {
	Metric map[string]string `json:"metric"`
	Values []apiPoint        `json:"values"`
}

// apiPoint decodes a [seconds, "value"] pair.
type apiPoint struct {
	T int64 // unix ms
	F float64
}

var apiTestData = []apiSeries{
	{`x{job="j1",pod="a"}`, []store.Sample{{T: 10_000, V: 1}, {T: 20_000, V: 2}}},
	{`x{job="j1",pod="b"}`, []store.Sample{{T: 20_000, V: 4}}},
	{`x{job="j2",pod="c"}`, []store.Sample{{T: 20_000, V: 8}, {T: 30_000, V: math.Float64frombits(value.StaleNaN)}}},
	{`y{pod="a",le="0.5"}`, []store.Sample{{T: 50_000, V: 1e-7}, {T: 60_000, V: math.Inf(1)}}},
	{`{"my.metric","utf8.label"="v"}`, []store.Sample{{T: 40_000, V: 3}}},
}

type apiCase struct {
	name     string
	method   string // GET when empty
	path     string
	params   url.Values
	wantCode int
	// wantBody is compared as JSON; wantErr, when set, is a substring of
	// the error message and wantBody is ignored.
	wantBody string
	wantType string
	wantErr  string
}

func runAPICases(t *testing.T, srv *httptest.Server, cases []apiCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := doAPI(t, srv, tc.method, tc.path, tc.params)
			assert.Equal(t, tc.wantCode, code, "body: %s", body)
			if tc.wantErr != "" || tc.wantType != "" {
				var r apiResponse
				require.NoError(t, json.Unmarshal([]byte(body), &r), body)
				assert.Equal(t, "error", r.Status)
				assert.Equal(t, tc.wantType, r.ErrorType)
				assert.Contains(t, r.Error, tc.wantErr)
				return
			}
			assert.JSONEq(t, tc.wantBody, body)
		})
	}
}

func doAPI(t *testing.T, srv *httptest.Server, method, path string, params url.Values) (int, string) {
	t.Helper()
	var req *http.Request
	var err error
	switch method {
	case "", http.MethodGet:
		req, err = http.NewRequest(http.MethodGet, srv.URL+path+"?"+params.Encode(), nil)
	case http.MethodPost:
		req, err = http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(params.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	default:
		req, err = http.NewRequest(method, srv.URL+path, nil)
	}
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	return resp.StatusCode, string(body)
}

func TestAPIQuery(t *testing.T) {
	srv := newAPITestServer(t, apiTestData)
	runAPICases(t, srv, []apiCase{
		{
			name: "vector at unix seconds", path: "/api/v1/query",
			params:   url.Values{"query": {`x{pod="a"}`}, "time": {"25"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"x","job":"j1","pod":"a"},"value":[25,"2"]}]}}`,
		},
		{
			name: "POST form, RFC 3339 time with millis", method: http.MethodPost, path: "/api/v1/query",
			params:   url.Values{"query": {`sum by (job) (x{job="j1"})`}, "time": {"1970-01-01T00:00:25.5Z"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"j1"},"value":[25.500,"6"]}]}}`,
		},
		{
			name: "fractional seconds round to the millisecond", path: "/api/v1/query",
			params:   url.Values{"query": {`x{pod="b"}`}, "time": {"25.0401"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"x","job":"j1","pod":"b"},"value":[25.040,"4"]}]}}`,
		},
		{
			name: "default time is the API clock", path: "/api/v1/query",
			params:   url.Values{"query": {`x{pod="b"}`}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"x","job":"j1","pod":"b"},"value":[100,"4"]}]}}`,
		},
		{
			name: "stale marker ends the series", path: "/api/v1/query",
			params:   url.Values{"query": {`x{pod="c"}`}, "time": {"35"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[]}}`,
		},
		{
			name: "lookback_delta as a duration hides old samples", path: "/api/v1/query",
			params:   url.Values{"query": {`x{pod="b"}`}, "time": {"25"}, "lookback_delta": {"5s"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[]}}`,
		},
		{
			name: "lookback_delta as float seconds", path: "/api/v1/query",
			params:   url.Values{"query": {`x{pod="b"}`}, "time": {"25"}, "lookback_delta": {"5.5"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"x","job":"j1","pod":"b"},"value":[25,"4"]}]}}`,
		},
		{
			name: "scalar", path: "/api/v1/query",
			params:   url.Values{"query": {`2.5`}, "time": {"1.001"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"scalar","result":[1.001,"2.5"]}}`,
		},
		{
			name: "exponent form, +Inf and quoted UTF-8 names", path: "/api/v1/query",
			params:   url.Values{"query": {`y`}, "time": {"55"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"y","le":"0.5","pod":"a"},"value":[55,"1e-07"]}]}}`,
		},
		{
			name: "+Inf value", path: "/api/v1/query",
			params:   url.Values{"query": {`y`}, "time": {"60"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"y","le":"0.5","pod":"a"},"value":[60,"+Inf"]}]}}`,
		},
		{
			name: "UTF-8 metric and label names", path: "/api/v1/query",
			params:   url.Values{"query": {`{"my.metric"}`}, "time": {"40"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"my.metric","utf8.label":"v"},"value":[40,"3"]}]}}`,
		},
		{
			name: "evaluation error is 422 execution", path: "/api/v1/query",
			params:   url.Values{"query": {`x + on () x`}, "time": {"25"}},
			wantCode: 422, wantType: "execution", wantErr: "many-to-many matching not allowed",
		},
		{name: "missing query", path: "/api/v1/query", wantCode: 400, wantType: "bad_data", wantErr: `invalid parameter "query"`},
		{
			name: "parse error", path: "/api/v1/query", params: url.Values{"query": {`sum(`}},
			wantCode: 400, wantType: "bad_data", wantErr: `invalid parameter "query"`,
		},
		{
			name: "100 KB query", method: http.MethodPost, path: "/api/v1/query", params: url.Values{"query": {strings.Repeat("sum(", 25_000)}},
			wantCode: 400, wantType: "bad_data", wantErr: `invalid parameter "query"`,
		},
		{
			name: "regular expression too complex", path: "/api/v1/query", params: url.Values{"query": {`x{pod=~".{0,1000}.{0,1000}"}`}},
			wantCode: 400, wantType: "bad_data", wantErr: `invalid parameter "query": parse "x{pod=~\".{0,1000}.{0,1000}\"}": regular expression too complex`,
		},
		{
			name: "match[] regular expressions too complex together", path: "/api/v1/series",
			params:   url.Values{"match[]": slices.Repeat([]string{`{pod=~"[a-z]{1000}"}`}, 5)},
			wantCode: 400, wantType: "bad_data", wantErr: `invalid parameter "match[]": regular expression too complex`,
		},
		{
			name: "unsupported construct", path: "/api/v1/query", params: url.Values{"query": {`start_timestamp(x)`}},
			wantCode: 400, wantType: "bad_data", wantErr: "unsupported PromQL",
		},
		{
			name: "bad time", path: "/api/v1/query", params: url.Values{"query": {`x`}, "time": {"yesterday"}},
			wantCode: 400, wantType: "bad_data", wantErr: `invalid parameter "time": cannot parse "yesterday" to a valid timestamp`,
		},
		{
			name: "bad lookback_delta", path: "/api/v1/query", params: url.Values{"query": {`x`}, "lookback_delta": {"soon"}},
			wantCode: 400, wantType: "bad_data", wantErr: `error parsing lookback delta duration: cannot parse "soon" to a valid duration`,
		},
		{
			name: "bad limit", path: "/api/v1/query", params: url.Values{"query": {`x`}, "limit": {"-1"}},
			wantCode: 400, wantType: "bad_data", wantErr: `invalid parameter "limit": limit must be non-negative`,
		},
		{
			name: "non-positive timeout", path: "/api/v1/query", params: url.Values{"query": {`x`}, "timeout": {"0"}},
			wantCode: 400, wantType: "bad_data", wantErr: `invalid parameter "timeout": timeout must be positive`,
		},
		{
			name: "expired timeout is a timeout", path: "/api/v1/query", params: url.Values{"query": {`x`}, "timeout": {"0.000001"}},
			wantCode: 503, wantType: "timeout", wantErr: "query timed out",
		},
		{
			name: "PUT is not allowed", method: http.MethodPut, path: "/api/v1/query",
			wantCode: 405, wantType: "bad_data", wantErr: "method PUT not allowed",
		},
	})
}

func TestAPIQueryLimit(t *testing.T) {
	srv := newAPITestServer(t, apiTestData)
	code, body := doAPI(t, srv, "", "/api/v1/query", url.Values{"query": {`count by (pod) (x)`}, "time": {"25"}, "limit": {"1"}})
	require.Equal(t, 200, code, body)
	var r struct {
		Data struct {
			Result []vectorElem `json:"result"`
		} `json:"data"`
		Warnings []string `json:"warnings"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	assert.Len(t, r.Data.Result, 1)
	assert.Equal(t, []string{"results truncated due to limit"}, r.Warnings)
}

func TestAPIPlanWarnings(t *testing.T) {
	srv := newAPITestServer(t, apiTestData) // the store keeps 1h
	for _, path := range []string{"/api/v1/query", "/api/v1/query_range"} {
		code, body := doAPI(t, srv, "", path, url.Values{"query": {`sum(rate(x[2h]))`}, "time": {"30"}, "start": {"20"}, "end": {"30"}, "step": {"10"}})
		require.Equal(t, 200, code, body)
		var r apiResponse
		require.NoError(t, json.Unmarshal([]byte(body), &r))
		require.NotEmpty(t, r.Warnings, path)
		assert.Contains(t, r.Warnings[0], "the store keeps", path)
	}
	_, body := doAPI(t, srv, "", "/api/v1/query", url.Values{"query": {`sum(rate(x[5m]))`}})
	assert.NotContains(t, body, "warnings")
}

func TestAPIQueryRange(t *testing.T) {
	srv := newAPITestServer(t, apiTestData)
	runAPICases(t, srv, []apiCase{
		{
			name: "series appear and end per step, sorted by labels", path: "/api/v1/query_range",
			params:   url.Values{"query": {`x`}, "start": {"5"}, "end": {"35"}, "step": {"10s"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[
				{"metric":{"__name__":"x","job":"j1","pod":"a"},"values":[[15,"1"],[25,"2"],[35,"2"]]},
				{"metric":{"__name__":"x","job":"j1","pod":"b"},"values":[[25,"4"],[35,"4"]]},
				{"metric":{"__name__":"x","job":"j2","pod":"c"},"values":[[25,"8"]]}]}}`,
		},
		{
			name: "aggregation, POST, float step", method: http.MethodPost, path: "/api/v1/query_range",
			params:   url.Values{"query": {`sum(x)`}, "start": {"20"}, "end": {"30"}, "step": {"5"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[
				{"metric":{},"values":[[20,"14"],[25,"14"],[30,"6"]]}]}}`,
		},
		{
			name: "scalar becomes one series without labels", path: "/api/v1/query_range",
			params:   url.Values{"query": {`7`}, "start": {"0"}, "end": {"1"}, "step": {"0.5"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[0,"7"],[0.500,"7"],[1,"7"]]}]}}`,
		},
		{
			name: "empty result", path: "/api/v1/query_range",
			params:   url.Values{"query": {`nothing`}, "start": {"0"}, "end": {"100"}, "step": {"10"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[]}}`,
		},
		{
			name: "end before start", path: "/api/v1/query_range",
			params:   url.Values{"query": {`x`}, "start": {"10"}, "end": {"5"}, "step": {"1"}},
			wantCode: 400, wantType: "bad_data", wantErr: "end timestamp must not be before start time",
		},
		{
			name: "zero step", path: "/api/v1/query_range",
			params:   url.Values{"query": {`x`}, "start": {"0"}, "end": {"5"}, "step": {"0"}},
			wantCode: 400, wantType: "bad_data", wantErr: "zero or negative query resolution step",
		},
		{
			name: "too many steps", path: "/api/v1/query_range",
			params:   url.Values{"query": {`x`}, "start": {"0"}, "end": {"11001"}, "step": {"1"}},
			wantCode: 400, wantType: "bad_data", wantErr: "exceeded maximum resolution of 11,000 points",
		},
		{
			name: "missing start", path: "/api/v1/query_range",
			params:   url.Values{"query": {`x`}, "end": {"5"}, "step": {"1"}},
			wantCode: 400, wantType: "bad_data", wantErr: `invalid parameter "start"`,
		},
		{
			name: "unsupported", path: "/api/v1/query_range",
			params:   url.Values{"query": {`start_timestamp(x)`}, "start": {"0"}, "end": {"5"}, "step": {"1"}},
			wantCode: 400, wantType: "bad_data", wantErr: "unsupported PromQL",
		},
	})
}

// TestAPISampleBudget: every answer that holds samples is refused with
// Prometheus's 422 once it would hold more than Config.MaxSamples, and
// answered within it.
func TestAPISampleBudget(t *testing.T) {
	var data []apiSeries
	for i := range 3 {
		var samples []store.Sample
		for k := range 40 {
			samples = append(samples, store.Sample{T: int64(k+1) * 1000, V: float64(k)})
		}
		data = append(data, apiSeries{fmt.Sprintf(`x{pod="%d"}`, i), samples})
	}
	srv, _ := newAPITestServerConfig(t, data, Config{MaxSamples: 100})
	for _, tc := range []struct {
		name, path string
		params     url.Values
		ok         bool
	}{
		{"range query, 3 series × 3 steps", "/api/v1/query_range", url.Values{"query": {"x"}, "start": {"1"}, "end": {"3"}, "step": {"1"}}, true},
		{"range query, 3 series × 40 steps", "/api/v1/query_range", url.Values{"query": {"x"}, "start": {"1"}, "end": {"40"}, "step": {"1"}}, false},
		{"range query, scalar × 40 steps", "/api/v1/query_range", url.Values{"query": {"1"}, "start": {"1"}, "end": {"40"}, "step": {"1"}}, true},
		{"range query, scalar × 200 steps", "/api/v1/query_range", url.Values{"query": {"1"}, "start": {"1"}, "end": {"200"}, "step": {"1"}}, false},
		{"range selector, 3 × 10 samples", "/api/v1/query", url.Values{"query": {"x[10s]"}, "time": {"40"}}, true},
		{"range selector, 3 × 40 samples", "/api/v1/query", url.Values{"query": {"x[1m]"}, "time": {"40"}}, false},
		{"vector", "/api/v1/query", url.Values{"query": {"x"}, "time": {"40"}}, true},
		{"series", "/api/v1/series", url.Values{"match[]": {"x"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := doAPI(t, srv, "", tc.path, tc.params)
			if tc.ok {
				assert.Equal(t, 200, code, body)
				return
			}
			assert.Equal(t, 422, code, body)
			assert.Contains(t, body, `"errorType":"execution"`)
			assert.Contains(t, body, "query processing would load too many samples")
		})
	}
	srv, _ = newAPITestServerConfig(t, data, Config{MaxSamples: 2})
	for _, target := range []string{"/api/v1/query?query=x&time=40", "/api/v1/series?match[]=x", "/api/v1/label/pod/values"} {
		resp, err := srv.Client().Get(srv.URL + target)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, 422, resp.StatusCode, target)
	}
}

func TestAPIMaxStepsIsAllowed(t *testing.T) {
	srv := newAPITestServer(t, apiTestData)
	code, body := doAPI(t, srv, "", "/api/v1/query_range", url.Values{"query": {`sum(x)`}, "start": {"0"}, "end": {"11000"}, "step": {"1"}})
	require.Equal(t, 200, code, body)
	var r struct {
		Data struct {
			Result []matrixElem `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	require.Len(t, r.Data.Result, 1)
	// From the first sample at 10 s until the 5 m lookback after the last
	// one at 20 s has passed (the window is left-open).
	assert.Len(t, r.Data.Result[0].Values, 319-10+1)
}

func (p *apiPoint) UnmarshalJSON(b []byte) error {
	var raw [2]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	var sec float64
	var v string
	if err := json.Unmarshal(raw[0], &sec); err != nil {
		return err
	}
	if err := json.Unmarshal(raw[1], &v); err != nil {
		return err
	}
	p.T = int64(math.Round(sec * 1000))
	_, err := fmt.Sscan(v, &p.F)
	return err
}

func TestAPISeriesAndLabels(t *testing.T) {
	srv := newAPITestServer(t, apiTestData)
	runAPICases(t, srv, []apiCase{
		{
			name: "series by one matcher set", path: "/api/v1/series",
			params:   url.Values{"match[]": {`x{job="j1"}`}},
			wantCode: 200,
			wantBody: `{"status":"success","data":[{"__name__":"x","job":"j1","pod":"a"},{"__name__":"x","job":"j1","pod":"b"}]}`,
		},
		{
			name: "series union is deduplicated and sorted", method: http.MethodPost, path: "/api/v1/series",
			params:   url.Values{"match[]": {`y`, `x{pod=~"a|c"}`, `{pod="a"}`}},
			wantCode: 200,
			wantBody: `{"status":"success","data":[{"__name__":"x","job":"j1","pod":"a"},{"__name__":"x","job":"j2","pod":"c"},{"__name__":"y","le":"0.5","pod":"a"}]}`,
		},
		{
			name: "series within start and end", path: "/api/v1/series",
			params:   url.Values{"match[]": {`{__name__=~".+"}`}, "start": {"40"}, "end": {"50"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":[{"__name__":"my.metric","utf8.label":"v"},{"__name__":"y","le":"0.5","pod":"a"}]}`,
		},
		{
			name: "series limit", path: "/api/v1/series",
			params:   url.Values{"match[]": {`x`}, "limit": {"1"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":[{"__name__":"x","job":"j1","pod":"a"}],"warnings":["results truncated due to limit"]}`,
		},
		{
			name: "series needs match[]", path: "/api/v1/series",
			wantCode: 400, wantType: "bad_data", wantErr: "no match[] parameter provided",
		},
		{
			name: "series matcher must not match everything", path: "/api/v1/series",
			params:   url.Values{"match[]": {`{job=~".*"}`}},
			wantCode: 400, wantType: "bad_data", wantErr: "at least one non-empty matcher",
		},
		{
			name: "series bad selector", path: "/api/v1/series",
			params:   url.Values{"match[]": {`x{`}},
			wantCode: 400, wantType: "bad_data", wantErr: `invalid parameter "match[]"`,
		},
		{
			name: "series bad end", path: "/api/v1/series",
			params:   url.Values{"match[]": {`x`}, "end": {"later"}},
			wantCode: 400, wantType: "bad_data", wantErr: `invalid parameter "end"`,
		},
		{
			name: "all label names", path: "/api/v1/labels",
			wantCode: 200,
			wantBody: `{"status":"success","data":["__name__","job","le","pod","utf8.label"]}`,
		},
		{
			name: "label names of matched series", method: http.MethodPost, path: "/api/v1/labels",
			params:   url.Values{"match[]": {`y`, `{"my.metric"}`}},
			wantCode: 200,
			wantBody: `{"status":"success","data":["__name__","le","pod","utf8.label"]}`,
		},
		{
			name: "label names in a time range", path: "/api/v1/labels",
			params:   url.Values{"start": {"0"}, "end": {"15"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":["__name__","job","pod"]}`,
		},
		{
			name: "label names limit", path: "/api/v1/labels",
			params:   url.Values{"limit": {"2"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":["__name__","job"],"warnings":["results truncated due to limit"]}`,
		},
		{
			name: "metric names", path: "/api/v1/label/__name__/values",
			wantCode: 200,
			wantBody: `{"status":"success","data":["my.metric","x","y"]}`,
		},
		{
			name: "label values of matched series", path: "/api/v1/label/pod/values",
			params:   url.Values{"match[]": {`x{job="j1"}`}},
			wantCode: 200,
			wantBody: `{"status":"success","data":["a","b"]}`,
		},
		{
			name: "label values, escaped UTF-8 name", path: "/api/v1/label/U__utf8_2e_label/values",
			wantCode: 200,
			wantBody: `{"status":"success","data":["v"]}`,
		},
		{
			name: "label values of an unknown label", path: "/api/v1/label/nope/values",
			wantCode: 200,
			wantBody: `{"status":"success","data":[]}`,
		},
		{
			name: "label values: POST is not allowed", method: http.MethodPost, path: "/api/v1/label/pod/values",
			wantCode: 405, wantType: "bad_data", wantErr: "not allowed",
		},
		{
			name: "invalid label name", path: "/api/v1/label/" + url.PathEscape("\xff") + "/values",
			wantCode: 400, wantType: "bad_data", wantErr: "invalid label name",
		},
	})
}

func TestAPIMetadataIsEmpty(t *testing.T) {
	srv := newAPITestServer(t, apiTestData)
	code, body := doAPI(t, srv, "", "/api/v1/metadata", nil)
	assert.Equal(t, 200, code)
	assert.JSONEq(t, `{"status":"success","data":{}}`, body)
}

func TestAPIBuildInfo(t *testing.T) {
	srv := newAPITestServer(t, nil)
	code, body := doAPI(t, srv, "", "/api/v1/status/buildinfo", nil)
	require.Equal(t, 200, code)
	var r struct {
		Status string        `json:"status"`
		Data   buildInfoData `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	assert.Equal(t, "success", r.Status)
	assert.Equal(t, compatVersion, r.Data.Version)
	assert.True(t, strings.HasPrefix(r.Data.GoVersion, "go"), r.Data.GoVersion)
}

func TestAPIEmptyStore(t *testing.T) {
	srv := newAPITestServer(t, nil)
	runAPICases(t, srv, []apiCase{
		{name: "labels", path: "/api/v1/labels", wantCode: 200, wantBody: `{"status":"success","data":[]}`},
		{name: "values", path: "/api/v1/label/job/values", wantCode: 200, wantBody: `{"status":"success","data":[]}`},
		{name: "series", path: "/api/v1/series", params: url.Values{"match[]": {`x`}}, wantCode: 200, wantBody: `{"status":"success","data":[]}`},
		{
			name: "query", path: "/api/v1/query", params: url.Values{"query": {`sum(x)`}},
			wantCode: 200, wantBody: `{"status":"success","data":{"resultType":"vector","result":[]}}`,
		},
	})
}

func TestAPIExecErrorClassification(t *testing.T) {
	for _, tc := range []struct {
		err      error
		wantType string
		wantCode int
	}{
		{context.DeadlineExceeded, "timeout", 503},
		{fmt.Errorf("eval: %w", context.DeadlineExceeded), "timeout", 503},
		{context.Canceled, "canceled", 499},
		{errors.New("vector cannot contain metrics with the same labelset"), "execution", 422},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			e := execError(tc.err)
			assert.Equal(t, tc.wantType, e.typ)
			assert.Equal(t, tc.wantCode, e.code())
			assert.ErrorIs(t, e.err, tc.err)
		})
	}
}

func TestAPICanceledRequest(t *testing.T) {
	st := store.New(store.Config{}, store.Settings{})
	mux := http.NewServeMux()
	New(query.NewEngine(st), st, Config{}, Settings{}).Register(mux)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/v1/query?query=x", nil)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	assert.Equal(t, 499, rec.Code, rec.Body.String())
	assert.Contains(t, rec.Body.String(), `"errorType":"canceled"`)
}

func TestPointJSON(t *testing.T) {
	for _, tc := range []struct {
		p    apiPoint
		want string
	}{
		{apiPoint{T: 1_435_781_451_781, F: 1}, `[1435781451.781,"1"]`},
		{apiPoint{T: 1500, F: 0.1}, `[1.500,"0.1"]`},
		{apiPoint{T: 1005, F: -2}, `[1.005,"-2"]`},
		{apiPoint{T: 1050, F: 0}, `[1.050,"0"]`},
		{apiPoint{T: -1500, F: 1e21}, `[-1.500,"1e+21"]`},
		{apiPoint{T: 0, F: 123456789012345678}, `[0,"123456789012345680"]`},
		{apiPoint{T: 0, F: 1e-6}, `[0,"0.000001"]`},
		{apiPoint{T: 0, F: 9.9e-7}, `[0,"9.9e-07"]`},
		{apiPoint{T: 0, F: math.NaN()}, `[0,"NaN"]`},
		{apiPoint{T: 0, F: math.Inf(-1)}, `[0,"-Inf"]`},
	} {
		assert.Equal(t, tc.want, string(appendPoint(nil, tc.p.T, tc.p.F)))
	}
}

func TestParseTimeAndDuration(t *testing.T) {
	for _, tc := range []struct {
		in     string
		wantMs int64
		ok     bool
	}{
		{"1", 1000, true},
		{"1.2346", 1235, true},
		{"-1.5", -1500, true},
		{"1970-01-01T00:00:01.5Z", 1500, true},
		{"2026-01-02T03:04:05+01:00", time.Date(2026, 1, 2, 2, 4, 5, 0, time.UTC).UnixMilli(), true},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"1e300", 0, false},
		{"", 0, false},
		{"now", 0, false},
	} {
		got, err := parseTime(tc.in)
		if !tc.ok {
			require.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.wantMs, got.UnixMilli(), tc.in)
	}
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"5m", 5 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"0.5", 500 * time.Millisecond, true},
		{"30", 30 * time.Second, true},
		{"1e30", 0, false},
		{"NaN", 0, false},
		{"5 minutes", 0, false},
	} {
		got, err := parseDuration(tc.in)
		if !tc.ok {
			require.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
}

// FuzzAPIQuery feeds arbitrary query, time, range and lookback strings to
// the query endpoints: every answer is well-formed JSON with a status
// matching the HTTP code, a range query never answers more than 11,001
// points per series (issue #12 class 6: far-apart times once slipped past
// that check), and nothing panics.
func FuzzAPIQuery(f *testing.F) {
	f.Add(`sum(x)`, "25", "35", "5m", "10")
	f.Add(`x{pod=~"a|b"}`, "1970-01-01T00:00:25Z", "1970-01-01T00:01:25Z", "", "1")
	f.Add(`sum(`, "1e300", "1e301", "-1", "0")
	f.Add(`{"my.metric"}`, "-5", "5", "NaN", "0.001")
	f.Add(`x[1m]`, "30", "60", "1m", "15s")
	f.Add(`vector(1)`, "-9e14", "9e14", "", "1e6")
	f.Add(`vector(1)`, minTimeFormatted, maxTimeFormatted, "", "1e9")
	f.Add(`time()`, "0", maxTimeFormatted, "", "1e12")
	f.Add(`x offset -1h`, "9e15", "9e15", "1h", "1")
	// The query length and token limits, which only kilobyte inputs
	// reach, in the baseline coverage (limitSeeds in pkg/query).
	f.Add(strings.Repeat("x ", query.MaxQueryTokens)+"x", "25", "35", "5m", "10")
	f.Add(strings.Repeat(" ", query.MaxQueryLength)+"x", "25", "35", "5m", "10")
	srv := newAPITestServer(f, apiTestData)
	mux := srv.Config.Handler
	f.Fuzz(func(t *testing.T, q, start, end, lookback, step string) {
		for _, target := range []string{
			"/api/v1/query?" + url.Values{"query": {q}, "time": {start}, "lookback_delta": {lookback}, "timeout": {"1s"}}.Encode(),
			"/api/v1/query_range?" + url.Values{"query": {q}, "start": {start}, "end": {end}, "step": {step}, "timeout": {"1s"}}.Encode(),
			"/api/v1/series?" + url.Values{"match[]": {q}, "start": {start}, "end": {end}}.Encode(),
		} {
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
			var r apiResponse
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &r), rec.Body.String())
			if rec.Code != http.StatusOK {
				assert.Equal(t, "error", r.Status)
				assert.NotEmpty(t, r.ErrorType)
				continue
			}
			assert.Equal(t, "success", r.Status)
			var d struct {
				ResultType string            `json:"resultType"`
				Result     []json.RawMessage `json:"result"`
			}
			if strings.HasPrefix(target, "/api/v1/query_range") {
				require.NoError(t, json.Unmarshal(r.Data, &d))
				assert.Equal(t, "matrix", d.ResultType)
				for _, raw := range d.Result {
					var m matrixElem
					require.NoError(t, json.Unmarshal(raw, &m))
					assert.LessOrEqual(t, len(m.Values), maxRangeSteps+1)
				}
			}
		}
	})
}

// FuzzAppendString: the streaming encoder writes strings byte for byte as
// encoding/json does (which the API used before it streamed).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"u\o`, "<a&b>", "\x00\x1f\t\n\r\b\f", "\xff\xfe", "\u2028\u2029", "é✓𝄞"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(appendString(nil, s)))
	})
}

// TestAPIConcurrentRequests runs every endpoint from many goroutines at
// once (run it with -race): the API shares its parser, engine, store and
// evaluation slots between requests.
func TestAPIConcurrentRequests(t *testing.T) {
	srv := newAPITestServer(t, apiTestData)
	targets := []string{
		"/api/v1/query?" + url.Values{"query": {`sum by (job) (x)`}, "time": {"25"}}.Encode(),
		"/api/v1/query_range?" + url.Values{"query": {`x`}, "start": {"0"}, "end": {"60"}, "step": {"5"}}.Encode(),
		"/api/v1/series?" + url.Values{"match[]": {`x`}}.Encode(),
		"/api/v1/labels",
		"/api/v1/label/pod/values",
	}
	const workers, perWorker = 8, 10
	errs := make(chan error, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				target := targets[(w+i)%len(targets)]
				resp, err := srv.Client().Get(srv.URL + target)
				if err != nil {
					errs <- err
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("%s: status %d", target, resp.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestAPIRangeStepCountDoesNotSaturate is issue #12 class 6's second
// half: start and end so far apart that time.Time.Sub saturates must still
// be refused by the step-count check instead of evaluating billions of
// steps. The timeout only bounds the test when the check is slipped past.
func TestAPIRangeStepCountDoesNotSaturate(t *testing.T) {
	srv := newAPITestServer(t, apiTestData)
	const tooMany = "exceeded maximum resolution of 11,000 points per timeseries"
	for _, tc := range []struct {
		name             string
		start, end, step string
	}{
		{"float seconds 57 million years apart", "-9e14", "9e14", "1e6"},
		{"Prometheus's MinTime and MaxTime", "-292273086-05-16T16:47:06Z", "292277025-08-18T07:12:54.999999999Z", "1e9"},
		{"MaxTime end, huge step", "0", "292277025-08-18T07:12:54.999999999Z", "1e8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := doAPI(t, srv, "", "/api/v1/query_range", url.Values{
				"query": {`vector(1)`}, "start": {tc.start}, "end": {tc.end}, "step": {tc.step}, "timeout": {"2s"},
			})
			assert.Equal(t, http.StatusBadRequest, code, body)
			assert.Contains(t, body, tooMany)
		})
	}
}

// TestAPIRangeVectorQuery is issue #12 class 10's second half: a range
// selector at the top of an instant query answers Prometheus's matrix of
// raw samples in (t−offset−range, t−offset], stale markers dropped, and a
// range query refuses it with Prometheus's error.
func TestAPIRangeVectorQuery(t *testing.T) {
	srv := newAPITestServer(t, apiTestData)
	runAPICases(t, srv, []apiCase{
		{
			name: "raw samples, left-open window", path: "/api/v1/query",
			params:   url.Values{"query": {`x[20s]`}, "time": {"30"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[
				{"metric":{"__name__":"x","job":"j1","pod":"a"},"values":[[20,"2"]]},
				{"metric":{"__name__":"x","job":"j1","pod":"b"},"values":[[20,"4"]]},
				{"metric":{"__name__":"x","job":"j2","pod":"c"},"values":[[20,"8"]]}]}}`,
		},
		{
			name: "closed end, parentheses, offset, POST", method: http.MethodPost, path: "/api/v1/query",
			params:   url.Values{"query": {`(x{job="j1"}[15s] offset 5s)`}, "time": {"25"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[
				{"metric":{"__name__":"x","job":"j1","pod":"a"},"values":[[10,"1"],[20,"2"]]},
				{"metric":{"__name__":"x","job":"j1","pod":"b"},"values":[[20,"4"]]}]}}`,
		},
		{
			name: "series without samples in the window are left out", path: "/api/v1/query",
			params:   url.Values{"query": {`{__name__=~"x|y"}[5s]`}, "time": {"60"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[
				{"metric":{"__name__":"y","le":"0.5","pod":"a"},"values":[[60,"+Inf"]]}]}}`,
		},
		{
			name: "limit truncates series", path: "/api/v1/query",
			params:   url.Values{"query": {`x[1m]`}, "time": {"30"}, "limit": {"1"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[
				{"metric":{"__name__":"x","job":"j1","pod":"a"},"values":[[10,"1"],[20,"2"]]}]},"warnings":["results truncated due to limit"]}`,
		},
		{
			name: "range query refuses a range vector", path: "/api/v1/query_range",
			params:   url.Values{"query": {`x[1m]`}, "start": {"0"}, "end": {"60"}, "step": {"10"}},
			wantCode: 400, wantType: "bad_data",
			wantErr: `invalid parameter "query": invalid expression type "range vector" for range query, must be Scalar or instant Vector`,
		},
		{
			name: "subquery stays unsupported", path: "/api/v1/query",
			params:   url.Values{"query": {`x[1m:10s]`}, "time": {"30"}},
			wantCode: 400, wantType: "bad_data", wantErr: "unsupported PromQL subquery",
		},
	})
}

// twinData holds two series with the same visible labels that the receiver
// kept apart by hidden resource attributes (otlp-contract.md §8.3: two
// sidecars both reporting instance="localhost:8000", no pod label).
var twinData = []apiSeries{
	{`w{instance="localhost:8000",job="vllm"}`, []store.Sample{{T: 10_000, V: 1}, {T: 20_000, V: 2}, {T: 30_000, V: 3}}},
	{`w{instance="localhost:8000",job="vllm"}`, []store.Sample{{T: 10_000, V: 10}, {T: 20_000, V: 20}, {T: 30_000, V: 30}}},
	{`w{instance="other:8000",job="vllm"}`, []store.Sample{{T: 10_000, V: 100}}},
	{`v{instance="localhost:8000",job="vllm"}`, []store.Sample{{T: 10_000, V: 5}, {T: 20_000, V: 6}}},
}

// TestAPIHiddenTwinSeries is issue #12 class 10's first half: series that
// differ only in hidden resource attributes are each answered, with the
// same labels, by a plain selector and by functions that keep labels
// (instead of "vector cannot contain metrics with the same labelset");
// aggregations count both; a range query keeps them apart step by step;
// /api/v1/series lists both. Collisions PromQL itself creates stay errors.
func TestAPIHiddenTwinSeries(t *testing.T) {
	srv := newAPITestServer(t, twinData)
	twin := `"metric":{"__name__":"w","instance":"localhost:8000","job":"vllm"}`
	runAPICases(t, srv, []apiCase{
		{
			name: "plain selector answers both twins", path: "/api/v1/query",
			params:   url.Values{"query": {`w{instance="localhost:8000"}`}, "time": {"25"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[
				{` + twin + `,"value":[25,"2"]},{` + twin + `,"value":[25,"20"]}]}}`,
		},
		{
			name: "a function that drops the name keeps both", path: "/api/v1/query",
			params:   url.Values{"query": {`rate(w{instance="localhost:8000"}[30s])`}, "time": {"30"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[
				{"metric":{"instance":"localhost:8000","job":"vllm"},"value":[30,"0.1"]},
				{"metric":{"instance":"localhost:8000","job":"vllm"},"value":[30,"1"]}]}}`,
		},
		{
			name: "label_replace keeps both", path: "/api/v1/query",
			params:   url.Values{"query": {`label_replace(w{instance="localhost:8000"}, "port", "$1", "instance", ".*:(.*)")`}, "time": {"25"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[
				{"metric":{"__name__":"w","instance":"localhost:8000","job":"vllm","port":"8000"},"value":[25,"2"]},
				{"metric":{"__name__":"w","instance":"localhost:8000","job":"vllm","port":"8000"},"value":[25,"20"]}]}}`,
		},
		{
			name: "aggregations count both", path: "/api/v1/query",
			params:   url.Values{"query": {`sum by (instance) (w)`}, "time": {"25"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"vector","result":[
				{"metric":{"instance":"localhost:8000"},"value":[25,"22"]},
				{"metric":{"instance":"other:8000"},"value":[25,"100"]}]}}`,
		},
		{
			name: "a collision dropping the name creates is still an error", path: "/api/v1/query",
			params:   url.Values{"query": {`rate({__name__=~"v|w",instance="localhost:8000"}[1m])`}, "time": {"30"}},
			wantCode: 422, wantType: "execution", wantErr: "vector cannot contain metrics with the same labelset",
		},
		{
			name: "one-to-one matching cannot pick a twin", path: "/api/v1/query",
			params:   url.Values{"query": {`w / on (instance) v`}, "time": {"25"}},
			wantCode: 422, wantType: "execution", wantErr: "many-to-one matching must be explicit",
		},
		{
			name: "range query keeps the twins apart", path: "/api/v1/query_range",
			params:   url.Values{"query": {`w{instance="localhost:8000"}`}, "start": {"10"}, "end": {"30"}, "step": {"10"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[
				{` + twin + `,"values":[[10,"1"],[20,"2"],[30,"3"]]},
				{` + twin + `,"values":[[10,"10"],[20,"20"],[30,"30"]]}]}}`,
		},
		{
			name: "range query keeps each twin's points when one has none at a step", path: "/api/v1/query_range",
			params:   url.Values{"query": {`w{instance="localhost:8000"} > 2`}, "start": {"10"}, "end": {"30"}, "step": {"10"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[
				{` + twin + `,"values":[[30,"3"]]},
				{` + twin + `,"values":[[10,"10"],[20,"20"],[30,"30"]]}]}}`,
		},
		{
			name: "series lists both", path: "/api/v1/series",
			params:   url.Values{"match[]": {`w{instance="localhost:8000"}`}},
			wantCode: 200,
			wantBody: `{"status":"success","data":[
				{"__name__":"w","instance":"localhost:8000","job":"vllm"},
				{"__name__":"w","instance":"localhost:8000","job":"vllm"}]}`,
		},
	})
}

// TestRangeGrid checks the step-count limit at its edges and the grid near
// the ends of time, where start + k·step would overflow an int64 if
// computed step by step.
func TestRangeGrid(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := parseTime(s)
		require.NoError(t, err, s)
		return tm
	}
	const maxStep = 9e9 * time.Second // about the largest Duration
	for _, tc := range []struct {
		name       string
		start, end string
		step       time.Duration
		wantN      int // 0: refused
	}{
		{"11,000 steps", "0", "11000", time.Second, 11001},
		{"11,001 steps", "0", "11001", time.Second, 0},
		{"one point", "5", "5", time.Minute, 1},
		{"sub-millisecond step runs every millisecond", "0", "0.005", 500 * time.Microsecond, 6},
		{"1.9 ms step, 11,000 points but 20,900 on the 1 ms grid", "0", "20.9", 1900 * time.Microsecond, 0},
		{"up to MaxTime", "9.2e15", maxTimeFormatted, maxStep, 2590},
		{"from MinTime", minTimeFormatted, "-9.2e15", maxStep, 2590},
		{"MinTime to MaxTime", minTimeFormatted, maxTimeFormatted, maxStep, 0},
		{"0 to MaxTime", "0", maxTimeFormatted, maxStep, 0},
		{"Sub saturates", "-9e14", "9e14", 1e6 * time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := newRangeGrid(at(tc.start), at(tc.end), tc.step)
			if tc.wantN == 0 {
				require.ErrorIs(t, err, errTooManySteps)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantN, g.n)
			first, last := at(tc.start).UnixMilli(), g.at(g.n-1)
			assert.Equal(t, first, g.at(0))
			assert.Equal(t, first+int64(g.n-1)*max(tc.step.Milliseconds(), 1), last)
			assert.LessOrEqual(t, last, at(tc.end).UnixMilli())
		})
	}
}

// TestAPIRangeQueryAtTheEndOfTime: a range query whose next step would
// overflow an int64 of milliseconds ends at its last step.
func TestAPIRangeQueryAtTheEndOfTime(t *testing.T) {
	srv := newAPITestServer(t, apiTestData)
	code, body := doAPI(t, srv, "", "/api/v1/query_range", url.Values{"query": {`time()`}, "start": {"9.2e15"}, "end": {maxTimeFormatted}, "step": {"9e9"}})
	require.Equal(t, 200, code, "%.300s", body)
	var r struct {
		Data struct {
			Result []matrixElem `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	require.Len(t, r.Data.Result, 1)
	v := r.Data.Result[0].Values
	require.Equal(t, 2590, len(v)) //nolint:testifylint // Len would print every point
	assert.Equal(t, int64(9_223_301_000_000_000_000), v[len(v)-1].T)
}

// TestAPIRangeQueryAtAndSubqueries: a range query runs as one
// Prometheus range query (query.Plan.EvalRange): @ start() and @ end() are
// the request's bounds at every step (end() is the requested end, not the
// grid's last step), and a subquery's steps align to absolute time.
func TestAPIRangeQueryAtAndSubqueries(t *testing.T) {
	var samples []store.Sample
	for ts := int64(0); ts <= 100_000; ts += 10_000 {
		samples = append(samples, store.Sample{T: ts, V: float64(ts / 1000)})
	}
	srv := newAPITestServer(t, []apiSeries{{`x{job="a"}`, samples}})
	runAPICases(t, srv, []apiCase{
		{
			name: "@ start() and @ end() are the range's bounds", path: "/api/v1/query_range",
			params:   url.Values{"query": {`x @ end() - x @ start()`}, "start": {"20"}, "end": {"75"}, "step": {"20"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[
				{"metric":{"job":"a"},"values":[[20,"50"],[40,"50"],[60,"50"]]}]}}`,
		},
		{
			name: "a subquery per step", path: "/api/v1/query_range",
			params:   url.Values{"query": {`sum_over_time(x[30s:10s])`}, "start": {"30"}, "end": {"50"}, "step": {"10"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[
				{"metric":{"job":"a"},"values":[[30,"60"],[40,"90"],[50,"120"]]}]}}`,
		},
		{
			name: "an @ subquery is the same window at every step", path: "/api/v1/query_range",
			params:   url.Values{"query": {`sum_over_time(x[30s:10s] @ 50)`}, "start": {"30"}, "end": {"50"}, "step": {"10"}},
			wantCode: 200,
			wantBody: `{"status":"success","data":{"resultType":"matrix","result":[
				{"metric":{"job":"a"},"values":[[30,"120"],[40,"120"],[50,"120"]]}]}}`,
		},
	})
}
