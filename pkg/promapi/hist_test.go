package promapi

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	jsoniter "github.com/json-iterator/go"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/util/jsonutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestHistogramJSONMatchesPrometheus checks histPoint byte for byte
// against Prometheus's own encoder (jsonutil) on random histograms:
// exponential with both sides, zero buckets and empty buckets, custom
// buckets, NaN and infinite sums.
func TestHistogramJSONMatchesPrometheus(t *testing.T) {
	t.Parallel()
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := range 2000 {
		h := &histogram.FloatHistogram{Schema: int32(rnd.IntN(13)) - 4, Count: float64(rnd.IntN(100)), Sum: rnd.NormFloat64() * 1e3}
		switch rnd.IntN(8) {
		case 0:
			h.Sum = math.NaN()
		case 1:
			h.Sum = math.Inf(1)
		}
		side := func() ([]histogram.Span, []float64) {
			var spans []histogram.Span
			var b []float64
			for range rnd.IntN(3) {
				n := uint32(rnd.IntN(4) + 1)
				spans = append(spans, histogram.Span{Offset: int32(rnd.IntN(30)) - 10, Length: n})
				for range n {
					b = append(b, float64(rnd.IntN(3))*1.5)
				}
			}
			if len(spans) > 1 {
				for k := 1; k < len(spans); k++ {
					spans[k].Offset = int32(rnd.IntN(3))
				}
			}
			return spans, b
		}
		if rnd.IntN(4) == 0 {
			h.Schema = histogram.CustomBucketsSchema
			h.CustomValues = []float64{0.1, 0.5, 1, 5, 10, 50, 100, 500, 1000, 5000, 1e4, 5e4, 1e5, 5e5, 1e6}
			h.PositiveSpans = []histogram.Span{{Offset: int32(rnd.IntN(3)), Length: uint32(rnd.IntN(6))}}
			h.PositiveBuckets = make([]float64, h.PositiveSpans[0].Length)
			for k := range h.PositiveBuckets {
				h.PositiveBuckets[k] = float64(rnd.IntN(3))
			}
		} else {
			h.ZeroThreshold = []float64{0, 1e-128, 0.01, 0.7}[rnd.IntN(4)]
			h.ZeroCount = float64(rnd.IntN(2)) * 2
			h.PositiveSpans, h.PositiveBuckets = side()
			h.NegativeSpans, h.NegativeBuckets = side()
		}
		ts := int64(rnd.IntN(2_000_000_000_000)) - 1000
		var want bytes.Buffer
		stream := jsoniter.NewStream(jsoniter.ConfigCompatibleWithStandardLibrary, &want, 256)
		stream.WriteArrayStart()
		jsonutil.MarshalTimestamp(ts, stream)
		stream.WriteMore()
		jsonutil.MarshalHistogram(h, stream)
		stream.WriteArrayEnd()
		require.NoError(t, stream.Flush())
		var got bytes.Buffer
		j := newJSONWriter(&got)
		j.histPoint(ts, h)
		j.flush()
		require.NoError(t, j.err)
		require.Equal(t, want.String(), got.String(), "case %d: %s", i, h)
	}
}

// TestAPIHistograms checks the query API's native histogram answers:
// "histogram" in an instant vector, "histograms" (and no "values") in a
// range query's series and in a range selector's, mixed with floats as
// Prometheus mixes them, and a histogram's cost charged to
// --query-max-samples.
func TestAPIHistograms(t *testing.T) {
	t.Parallel()
	st := store.New(store.Config{Retention: time.Hour, Freshness: -1}, store.Settings{Now: func() time.Time { return time.UnixMilli(120_000) }})
	ref, err := st.CreateHistogram(1, labels.FromStrings("__name__", "h", "pod", "a"))
	require.NoError(t, err)
	h := func(k float64) *histogram.FloatHistogram {
		return &histogram.FloatHistogram{
			Schema: 0, Count: 3 * k, Sum: 2 * k,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []float64{k, 2 * k},
		}
	}
	require.NoError(t, st.AppendHistogram(ref, 10_000, h(1)))
	require.NoError(t, st.AppendHistogram(ref, 20_000, h(2)))
	require.NoError(t, st.Append(ref, 30_000, 7)) // then a float
	serve := func(cfg Config) *httptest.Server {
		mux := http.NewServeMux()
		New(query.NewEngine(st), st, cfg, Settings{Now: func() time.Time { return time.UnixMilli(100_000) }}).Register(mux)
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		return srv
	}
	srv := serve(Config{})
	get := func(path string, params url.Values) map[string]any {
		t.Helper()
		code, body := doAPI(t, srv, http.MethodGet, path, params)
		require.Equal(t, http.StatusOK, code, body)
		var out map[string]any
		require.NoError(t, json.Unmarshal([]byte(body), &out))
		return out
	}
	vec := get("/api/v1/query", url.Values{"query": {"h"}, "time": {"25"}})
	assert.JSONEq(t, `{"resultType":"vector","result":[{"metric":{"__name__":"h","pod":"a"},
		"histogram":[25,{"count":"6","sum":"4","buckets":[[0,"0.5","1","2"],[0,"1","2","4"]]}]}]}`, mustJSON(t, vec["data"]))
	rng := get("/api/v1/query_range", url.Values{"query": {"h"}, "start": {"10"}, "end": {"30"}, "step": {"10"}})
	assert.JSONEq(t, `{"resultType":"matrix","result":[{"metric":{"__name__":"h","pod":"a"},
		"values":[[30,"7"]],
		"histograms":[[10,{"count":"3","sum":"2","buckets":[[0,"0.5","1","1"],[0,"1","2","2"]]}],[20,{"count":"6","sum":"4","buckets":[[0,"0.5","1","2"],[0,"1","2","4"]]}]]}]}`, mustJSON(t, rng["data"]))
	sel := get("/api/v1/query", url.Values{"query": {"h[15s]"}, "time": {"25"}})
	assert.JSONEq(t, `{"resultType":"matrix","result":[{"metric":{"__name__":"h","pod":"a"},
		"histograms":[[20,{"count":"6","sum":"4","buckets":[[0,"0.5","1","2"],[0,"1","2","4"]]}]]}]}`, mustJSON(t, sel["data"]))

	// Each histogram costs (size+8)/16 = 12 samples here: a budget of
	// 11 refuses one.
	small := serve(Config{MaxSamples: 11})
	code, body := doAPI(t, small, http.MethodGet, "/api/v1/query", url.Values{"query": {"h"}, "time": {"25"}})
	assert.Equal(t, http.StatusUnprocessableEntity, code, body)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
