package query

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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
// it. The API's clock (queries without time) reads 100 s.
func newAPITestServer(t testing.TB, series []apiSeries) *httptest.Server {
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
	NewAPI(NewEngine(st), func() time.Time { return time.UnixMilli(100_000) }).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
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
			name: "unsupported construct", path: "/api/v1/query", params: url.Values{"query": {`histogram_count(x)`}},
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
			params:   url.Values{"query": {`histogram_count(x)`}, "start": {"0"}, "end": {"5"}, "step": {"1"}},
			wantCode: 400, wantType: "bad_data", wantErr: "unsupported PromQL",
		},
	})
}

func TestAPIRangePointLimit(t *testing.T) {
	st := store.New(store.Config{Retention: time.Hour, Freshness: -1}, store.Settings{Now: func() time.Time { return apiStoreNow }})
	for i := range 3 {
		ref, err := st.Create(uint64(i+1), labels.FromStrings(labels.MetricName, "x", "pod", fmt.Sprint(i)))
		require.NoError(t, err)
		require.NoError(t, st.Append(ref, 1000, 1))
	}
	api := NewAPI(NewEngine(st), nil)
	api.maxRangePoints = 10
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	// 3 series × 3 steps fit; 3 × 4 do not.
	code, body := doAPI(t, srv, "", "/api/v1/query_range", url.Values{"query": {"x"}, "start": {"1"}, "end": {"3"}, "step": {"1"}})
	assert.Equal(t, 200, code, body)
	code, body = doAPI(t, srv, "", "/api/v1/query_range", url.Values{"query": {"x"}, "start": {"1"}, "end": {"4"}, "step": {"1"}})
	assert.Equal(t, 422, code, body)
	assert.Contains(t, body, `"errorType":"execution"`)
	assert.Contains(t, body, "too many samples")
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
	NewAPI(NewEngine(st), nil).Register(mux)
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
		b, err := json.Marshal(tc.p)
		require.NoError(t, err)
		assert.Equal(t, tc.want, string(b))
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

// FuzzAPIQuery feeds arbitrary query, time and lookback strings to the
// query endpoints: every answer is well-formed JSON with a status matching
// the HTTP code, and nothing panics.
func FuzzAPIQuery(f *testing.F) {
	f.Add(`sum(x)`, "25", "5m", "10")
	f.Add(`x{pod=~"a|b"}`, "1970-01-01T00:00:25Z", "", "1")
	f.Add(`sum(`, "1e300", "-1", "0")
	f.Add(`{"my.metric"}`, "-5", "NaN", "0.001")
	srv := newAPITestServer(f, apiTestData)
	mux := srv.Config.Handler
	f.Fuzz(func(t *testing.T, q, ts, lookback, step string) {
		for _, target := range []string{
			"/api/v1/query?" + url.Values{"query": {q}, "time": {ts}, "lookback_delta": {lookback}}.Encode(),
			"/api/v1/query_range?" + url.Values{"query": {q}, "start": {ts}, "end": {ts}, "step": {step}}.Encode(),
			"/api/v1/series?" + url.Values{"match[]": {q}, "start": {ts}}.Encode(),
		} {
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
			var r apiResponse
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &r), rec.Body.String())
			if rec.Code == http.StatusOK {
				assert.Equal(t, "success", r.Status)
			} else {
				assert.Equal(t, "error", r.Status)
				assert.NotEmpty(t, r.ErrorType)
			}
		}
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
