package compat

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jsoniter "github.com/json-iterator/go"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/jsonutil"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/promapi"
)

// promJSONFloat and promJSONTime format a value and a timestamp with the
// helpers Prometheus's HTTP API uses (util/jsonutil over jsoniter).
func promJSONFloat(f float64) string {
	s := jsoniter.ConfigCompatibleWithStandardLibrary.BorrowStream(nil)
	defer jsoniter.ConfigCompatibleWithStandardLibrary.ReturnStream(s)
	jsonutil.MarshalFloat(f, s)
	return strings.Trim(string(s.Buffer()), `"`)
}

// promJSONHistogram formats a histogram as Prometheus's HTTP API does.
func promJSONHistogram(h *histogram.FloatHistogram) string {
	s := jsoniter.ConfigCompatibleWithStandardLibrary.BorrowStream(nil)
	defer jsoniter.ConfigCompatibleWithStandardLibrary.ReturnStream(s)
	jsonutil.MarshalHistogram(h, s)
	return string(s.Buffer())
}

func promJSONTime(t int64) string {
	s := jsoniter.ConfigCompatibleWithStandardLibrary.BorrowStream(nil)
	defer jsoniter.ConfigCompatibleWithStandardLibrary.ReturnStream(s)
	jsonutil.MarshalTimestamp(t, s)
	return string(s.Buffer())
}

// apiElem is one element of our API's answer, with the timestamp kept as
// the raw JSON text so its formatting is compared too.
type apiElem struct {
	Metric    map[string]string
	Value     [2]json.RawMessage
	Histogram [2]json.RawMessage
}

// TestAPIMatchesPrometheusJSON asks our /api/v1/query for the corpus
// queries and checks every element against Prometheus's engine, formatted
// as Prometheus's API formats it: same result type, labels, timestamp text
// and value text.
func TestAPIMatchesPrometheusJSON(t *testing.T) {
	ctx := context.Background()
	ng := newPromEngine()
	checked, hists := 0, 0
	for _, seed := range []int64{3, 4} {
		c, err := newDiffCase(seed, ng)
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		promapi.New(c.ours.engine, c.ours.store, promapi.Config{}, promapi.Settings{}).Register(mux)
		srv := httptest.NewServer(mux)
		for _, q := range corpus {
			for _, ts := range c.evalTimes(3, 5*time.Minute) {
				checked++
				qry, err := ng.NewInstantQuery(ctx, c.store, promql.NewPrometheusQueryOpts(false, 5*time.Minute, nil), q, time.UnixMilli(ts))
				if err != nil {
					t.Fatal(err)
				}
				res := qry.Exec(ctx)
				resp, err := srv.Client().Get(srv.URL + "/api/v1/query?" + url.Values{"query": {q}, "time": {promJSONTime(ts)}}.Encode())
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if res.Err != nil {
					if resp.StatusCode != http.StatusUnprocessableEntity {
						t.Errorf("%s @%d: Prometheus fails (%v), our API answers %d: %s", q, ts, res.Err, resp.StatusCode, body)
					}
					qry.Close()
					continue
				}
				if err := compareAPIAnswer(res.Value, body, ts); err != nil {
					t.Errorf("%s @%d: %v\n  body: %s", q, ts, err, body)
				}
				if v, ok := res.Value.(promql.Vector); ok {
					for _, s := range v {
						if s.H != nil {
							hists++
						}
					}
				}
				qry.Close()
			}
		}
		srv.Close()
	}
	t.Logf("compared %d API answers, %d histogram elements among them", checked, hists)
	if hists == 0 {
		t.Error("no histogram was compared: the corpus lost its native-histogram queries")
	}
}

func compareAPIAnswer(want any, body []byte, ts int64) error {
	var r struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return err
	}
	if r.Status != "success" {
		return fmt.Errorf("status %q", r.Status)
	}
	switch v := want.(type) {
	case promql.Scalar:
		if r.Data.ResultType != "scalar" {
			return fmt.Errorf("result type %q, want scalar", r.Data.ResultType)
		}
		var p [2]json.RawMessage
		if err := json.Unmarshal(r.Data.Result, &p); err != nil {
			return err
		}
		return comparePoint(p, ts, v.V)
	case promql.Vector:
		if r.Data.ResultType != "vector" {
			return fmt.Errorf("result type %q, want vector", r.Data.ResultType)
		}
		var got []apiElem
		if err := json.Unmarshal(r.Data.Result, &got); err != nil {
			return err
		}
		if len(got) != len(v) {
			return fmt.Errorf("%d elements, want %d", len(got), len(v))
		}
		byLabels := map[string]apiElem{}
		for _, e := range got {
			b, _ := json.Marshal(e.Metric) // sorted keys: a canonical key
			byLabels[string(b)] = e
		}
		for _, s := range v {
			b, _ := json.Marshal(s.Metric.Map())
			e, ok := byLabels[string(b)]
			if !ok {
				return fmt.Errorf("missing element %s", b)
			}
			if s.H != nil {
				if e.Value[0] != nil {
					return fmt.Errorf("%s: a value, want a histogram", b)
				}
				if err := compareHistPoint(e.Histogram, ts, s.H); err != nil {
					return fmt.Errorf("%s: %w", b, err)
				}
				continue
			}
			if e.Histogram[0] != nil {
				return fmt.Errorf("%s: a histogram, want a value", b)
			}
			if err := comparePoint(e.Value, ts, s.F); err != nil {
				return fmt.Errorf("%s: %w", b, err)
			}
		}
		return nil
	}
	return fmt.Errorf("unexpected Prometheus result %T", want)
}

func comparePoint(p [2]json.RawMessage, ts int64, f float64) error {
	if got, want := string(p[0]), promJSONTime(ts); got != want {
		return fmt.Errorf("timestamp %s, want %s", got, want)
	}
	var v string
	if err := json.Unmarshal(p[1], &v); err != nil {
		return err
	}
	if want := promJSONFloat(f); v != want {
		return fmt.Errorf("value %q, want %q", v, want)
	}
	return nil
}

// compareHistPoint compares a [time, histogram] pair with Prometheus's
// text for both.
func compareHistPoint(p [2]json.RawMessage, ts int64, h *histogram.FloatHistogram) error {
	if got, want := string(p[0]), promJSONTime(ts); got != want {
		return fmt.Errorf("timestamp %s, want %s", got, want)
	}
	if got, want := string(p[1]), promJSONHistogram(h); got != want {
		return fmt.Errorf("histogram %s, want %s", got, want)
	}
	return nil
}

// TestAPIRangeMatchesPrometheus asks our /api/v1/query_range (instant
// evaluation per step) for the corpus queries and compares every series and
// point with Prometheus's range evaluation.
func TestAPIRangeMatchesPrometheus(t *testing.T) {
	ctx := context.Background()
	ng := newPromEngine()
	c, err := newDiffCase(5, ng)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	promapi.New(c.ours.engine, c.ours.store, promapi.Config{}, promapi.Settings{}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	points := 0
	for i, q := range corpus {
		start := c.times[(i*37)%len(c.times)] - 60_000
		end := start + 6*60_000
		step := []time.Duration{15 * time.Second, 37 * time.Second, time.Minute}[i%3]
		qry, err := ng.NewRangeQuery(ctx, c.store, promql.NewPrometheusQueryOpts(false, 5*time.Minute, nil), q, time.UnixMilli(start), time.UnixMilli(end), step)
		if err != nil {
			t.Fatal(err)
		}
		res := qry.Exec(ctx)
		resp, err := srv.Client().Get(srv.URL + "/api/v1/query_range?" + url.Values{
			"query": {q},
			"start": {promJSONTime(start)}, "end": {promJSONTime(end)}, "step": {fmt.Sprint(step.Seconds())},
		}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if res.Err != nil {
			if resp.StatusCode != http.StatusUnprocessableEntity {
				t.Errorf("%s: Prometheus fails (%v), our API answers %d", q, res.Err, resp.StatusCode)
			}
			qry.Close()
			continue
		}
		n, err := compareRangeAnswer(res.Value.(promql.Matrix), body)
		if err != nil {
			t.Errorf("%s [%d, %d] step %s: %v\n  body: %s", q, start, end, step, err, body)
		}
		points += n
		qry.Close()
	}
	t.Logf("compared %d range queries, %d points", len(corpus), points)
}

func compareRangeAnswer(want promql.Matrix, body []byte) (int, error) {
	var r struct {
		Data struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric     map[string]string
				Values     [][2]json.RawMessage
				Histograms [][2]json.RawMessage
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, err
	}
	if r.Data.ResultType != "matrix" {
		return 0, fmt.Errorf("result type %q, want matrix", r.Data.ResultType)
	}
	if len(r.Data.Result) != len(want) {
		return 0, fmt.Errorf("%d series, want %d", len(r.Data.Result), len(want))
	}
	n := 0
	// Both are sorted by labels.
	for i, s := range want {
		got := r.Data.Result[i]
		wb, _ := json.Marshal(s.Metric.Map())
		gb, _ := json.Marshal(got.Metric)
		if string(wb) != string(gb) {
			return n, fmt.Errorf("series %d is %s, want %s", i, gb, wb)
		}
		if len(got.Values) != len(s.Floats) {
			return n, fmt.Errorf("%s: %d points, want %d", wb, len(got.Values), len(s.Floats))
		}
		for j, p := range s.Floats {
			if err := comparePoint(got.Values[j], p.T, p.F); err != nil {
				return n, fmt.Errorf("%s point %d: %w", wb, j, err)
			}
			n++
		}
		if len(got.Histograms) != len(s.Histograms) {
			return n, fmt.Errorf("%s: %d histogram points, want %d", wb, len(got.Histograms), len(s.Histograms))
		}
		for j, p := range s.Histograms {
			if err := compareHistPoint(got.Histograms[j], p.T, p.H); err != nil {
				return n, fmt.Errorf("%s histogram point %d: %w", wb, j, err)
			}
			n++
		}
	}
	return n, nil
}

// TestAPIFloatFormatMatchesPrometheus checks our value and timestamp text
// against Prometheus's formatting helpers on awkward numbers.
func TestAPIFloatFormatMatchesPrometheus(t *testing.T) {
	st := newEmptyOurs(&dataset{end: baseTime})
	mux := http.NewServeMux()
	promapi.New(st.engine, st.store, promapi.Config{}, promapi.Settings{}).Register(mux)
	for _, f := range []float64{
		0, math.Copysign(0, -1), 1, -1, 0.1, 1e-6, 9.99e-7, 1e-7, 123456.789, 1e20, 1e21, 1.5e300, -2.5e-300, 5e-324,
		1 << 53, 1<<53 + 1, 0.30000000000000004, 1.7976931348623157e308,
	} {
		for _, ts := range []int64{0, 1, 10, 100, 999, 1000, 1001, 1_760_000_000_123, 1_760_000_000_010} {
			q := fmt.Sprintf("%v", f)
			if f < 0 {
				q = fmt.Sprintf("-(%v)", -f)
			}
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/query?"+url.Values{"query": {q}, "time": {promJSONTime(ts)}}.Encode(), nil))
			if err := compareAPIAnswer(promql.Scalar{T: ts, V: f}, rec.Body.Bytes(), ts); err != nil {
				t.Errorf("%s @%d: %v (body %s)", q, ts, err, rec.Body.String())
			}
		}
	}
}

// TestAPIRangeSelectorMatchesPrometheus asks our /api/v1/query for range
// selectors at the top of the query (issue #12 class 10) and compares the
// matrix of raw samples with Prometheus's engine: same result type, series,
// timestamp text and value text, stale markers and all.
func TestAPIRangeSelectorMatchesPrometheus(t *testing.T) {
	ctx := context.Background()
	ng := newPromEngine()
	checked := 0
	for _, seed := range []int64{6, 7} {
		c, err := newDiffCase(seed, ng)
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		promapi.New(c.ours.engine, c.ours.store, promapi.Config{}, promapi.Settings{}).Register(mux)
		srv := httptest.NewServer(mux)
		for _, q := range []string{
			`vllm:num_requests_waiting[1m]`,
			`vllm:num_requests_waiting{pod="p0"}[2m] offset 30s`,
			`(http_requests_total{code=~"2.."}[45s])`,
			`{__name__=~"vllm:num_requests_.*"}[30s]`,
			`vllm:time_to_first_token_seconds_bucket{le="1.0"}[1m]`, // as stored: {le="1"} also matches it here, on purpose
		} {
			for _, ts := range c.evalTimes(3, time.Minute) {
				qry, err := ng.NewInstantQuery(ctx, c.store, promql.NewPrometheusQueryOpts(false, 5*time.Minute, nil), q, time.UnixMilli(ts))
				if err != nil {
					t.Fatal(err)
				}
				res := qry.Exec(ctx)
				if res.Err != nil {
					t.Fatalf("%s: %v", q, res.Err)
				}
				want := res.Value.(promql.Matrix)
				resp, err := srv.Client().Get(srv.URL + "/api/v1/query?" + url.Values{"query": {q}, "time": {promJSONTime(ts)}}.Encode())
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if _, err := compareRangeAnswer(want, body); err != nil {
					t.Errorf("%s @%d: %v\n  body: %.500s", q, ts, err, body)
				}
				checked++
				qry.Close()
			}
		}
		srv.Close()
	}
	t.Logf("compared %d range-selector answers", checked)

	// query_range refuses a range vector with Prometheus's own message.
	c, err := newDiffCase(6, ng)
	if err != nil {
		t.Fatal(err)
	}
	_, perr := ng.NewRangeQuery(ctx, c.store, nil, `vllm:num_requests_waiting[1m]`, time.UnixMilli(0), time.UnixMilli(60_000), time.Second)
	if perr == nil {
		t.Fatal("Prometheus accepts a range vector in a range query")
	}
	mux := http.NewServeMux()
	promapi.New(c.ours.engine, c.ours.store, promapi.Config{}, promapi.Settings{}).Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/query_range?"+url.Values{
		"query": {`vllm:num_requests_waiting[1m]`}, "start": {"0"}, "end": {"60"}, "step": {"1"},
	}.Encode(), nil))
	want := fmt.Sprintf(`{"status":"error","errorType":"bad_data","error":%q}`, `invalid parameter "query": `+perr.Error())
	if rec.Code != http.StatusBadRequest || strings.TrimSpace(rec.Body.String()) != want {
		t.Errorf("query_range of a range vector: %d %s, want 400 %s", rec.Code, rec.Body.String(), want)
	}
}
