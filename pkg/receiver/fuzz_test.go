package receiver

import (
	"bytes"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/synth"
)

// fuzzSeeds are encoded requests covering every metric type and mapping
// rule.
func fuzzSeeds(t testing.TB) [][]byte {
	t.Helper()
	summary := &metricspb.Metric{Name: "sm", Data: &metricspb.Metric_Summary{Summary: &metricspb.Summary{
		DataPoints: []*metricspb.SummaryDataPoint{{
			Attributes: attrs("quantile", "x"), TimeUnixNano: tsNs(10), Count: 7, Sum: 3.5,
			QuantileValues: []*metricspb.SummaryDataPoint_ValueAtQuantile{{Quantile: 0.5, Value: 0.2}, {Quantile: 0.99, Value: math.NaN()}},
		}},
	}}}
	exp := &metricspb.Metric{Name: "eh", Unit: "ms", Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: &metricspb.ExponentialHistogram{
		AggregationTemporality: cumulative,
		DataPoints: []*metricspb.ExponentialHistogramDataPoint{{
			TimeUnixNano: tsNs(10), Count: 5, Sum: ptr(9.0), Scale: -2, ZeroCount: 1,
			Positive:  &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: -1, BucketCounts: []uint64{2, 2}},
			Exemplars: []*metricspb.Exemplar{{TimeUnixNano: 1, TraceId: make([]byte, 16), SpanId: make([]byte, 8), Value: &metricspb.Exemplar_AsInt{AsInt: 3}}},
		}, {
			// Scale above 8 (merged), both sides, a zero threshold.
			TimeUnixNano: tsNs(9), Count: 40, Sum: ptr(-1.0), Scale: 11, ZeroCount: 2, ZeroThreshold: 0.5,
			Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: 13, BucketCounts: []uint64{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 3}},
			Negative: &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: -20, BucketCounts: []uint64{5, 0, 0, 20}},
		}, {
			TimeUnixNano: tsNs(8), Flags: 1,
		}, {
			TimeUnixNano: tsNs(7), Count: 1, Scale: -9, Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{BucketCounts: []uint64{1}},
		}},
	}}}
	reqs := []*colmetricpb.ExportMetricsServiceRequest{
		baseline(),
		req(rm([]*commonpb.KeyValue{kv("service.name", "s"), kv("service.namespace", "n"), kv("k8s.pod.name", "p"), kv("arr", []any{"a", 1.5})},
			gauge("g", "1", dpD([]*commonpb.KeyValue{kv("a.b", "1"), kv("a_b", 2), kv("m", map[string]any{"k": true}), kv("y", []byte{1})}, tsNs(10), 1), dpI(nil, tsNs(9), 2)),
			sum("s.total", "By/s", true, cumulative, dpD(attrs("0x", "v", "_y", "w"), tsNs(10), 1)),
			sum("d", "", true, delta, dpD(nil, tsNs(10), 1)),
			hist("h", "s", cumulative, hdp(attrs("le", "z"), tsNs(10), []float64{0.5, 1}, []uint64{1, 2, 3}, ptr(1.5)),
				&metricspb.HistogramDataPoint{TimeUnixNano: tsNs(9), Flags: 1}),
			summary, exp, &metricspb.Metric{Name: "empty"},
			// Points of other types after an exponential histogram's: the
			// walker's reused point must not carry its fields on.
			hist("h.after.exp", "s", cumulative, hdp(nil, tsNs(10), []float64{1}, []uint64{1, 2}, ptr(2.0))),
			gauge("g.after.exp", "", dpD(nil, tsNs(10), 1)),
		)),
		// Legacy aliases, start times, and markers after real points of
		// histograms and summaries (every bucket and quantile held ends).
		req(rm(attrs("k8s.pod.uid", "u"),
			counter("app.frontend/requests", &metricspb.NumberDataPoint{Attributes: attrs("r", "/"), StartTimeUnixNano: tsNs(60), TimeUnixNano: tsNs(10), Value: &metricspb.NumberDataPoint_AsInt{AsInt: 3}}),
			hist("lat.ency", "s", cumulative, hdp(attrs("r", "/"), tsNs(10), []float64{0.5, 1}, []uint64{1, 2, 3}, ptr(1.5)),
				&metricspb.HistogramDataPoint{Attributes: attrs("r", "/"), TimeUnixNano: tsNs(5), Flags: 1}),
			&metricspb.Metric{Name: "sum.mary", Data: &metricspb.Metric_Summary{Summary: &metricspb.Summary{DataPoints: []*metricspb.SummaryDataPoint{
				{TimeUnixNano: tsNs(10), StartTimeUnixNano: tsNs(20), Count: 2, Sum: 1, QuantileValues: []*metricspb.SummaryDataPoint_ValueAtQuantile{{Quantile: 0.5, Value: 0.2}}},
				{TimeUnixNano: tsNs(5), Flags: 1},
			}}}},
		)),
	}
	// Attribute values at and past otlpwire.MaxValueDepth: in points, in a
	// resource, in a scope, arrays and maps, and a too-deep array that a
	// later field of the same value replaces.
	deep := func(n int, asMap bool) *commonpb.KeyValue { return kv("d", nested(n, "x", asMap)) }
	deepScope := rm(nil, gauge("ds", "", dpD(nil, tsNs(10), 1)))
	deepScope.ScopeMetrics[0].Scope.Attributes = []*commonpb.KeyValue{deep(otlpwire.MaxValueDepth+1, true)}
	replaced := deep(otlpwire.MaxValueDepth+1, false)
	replacedBy := anyv("later")
	reqs = append(reqs, req(
		rm(nil, gauge("dp", "", dpD([]*commonpb.KeyValue{deep(otlpwire.MaxValueDepth, false)}, tsNs(10), 1),
			dpD([]*commonpb.KeyValue{deep(otlpwire.MaxValueDepth+1, false)}, tsNs(10), 2),
			dpD([]*commonpb.KeyValue{deep(otlpwire.MaxValueDepth+1, true)}, tsNs(9), 3),
			dpD(attrs("ok", "1"), tsNs(10), 4))),
		rm([]*commonpb.KeyValue{deep(otlpwire.MaxValueDepth+1, false)}, gauge("dr", "", dpD(nil, tsNs(10), 1))),
		deepScope,
	))
	var out [][]byte
	// A too-deep value followed by a string in the same AnyValue: the
	// string wins, in pdata and in the walker.
	{
		b := mustMarshal(t, replaced.Value)
		b = append(b, mustMarshal(t, replacedBy)...)
		var v commonpb.AnyValue
		require.NoError(t, proto.Unmarshal(b, &v))
		out = append(out, mustMarshal(t, req(rm(nil, gauge("dl", "", dpD([]*commonpb.KeyValue{{Key: "d", Value: &v}}, tsNs(10), 1))))))
	}
	for _, r := range reqs {
		out = append(out, mustMarshal(t, r))
	}
	// An exponential histogram point with its positive side twice: pdata
	// merges them (the later offset, the counts appended), so must the
	// walker.
	{
		a := &metricspb.ExponentialHistogramDataPoint{
			TimeUnixNano: tsNs(10), Count: 7, Scale: 1,
			Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: 1, BucketCounts: []uint64{1, 2}},
		}
		b := &metricspb.ExponentialHistogramDataPoint{Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: -3, BucketCounts: []uint64{4}}}
		dpb := append(mustMarshal(t, a), mustMarshal(t, b)...)
		msg := func(dst []byte, num protowire.Number, v []byte) []byte {
			return protowire.AppendBytes(protowire.AppendTag(dst, num, protowire.BytesType), v)
		}
		eh := msg(nil, 1, dpb)                                                           // ExponentialHistogram.data_points
		eh = protowire.AppendVarint(protowire.AppendTag(eh, 2, protowire.VarintType), 2) // cumulative
		m := msg(msg(nil, 1, []byte("merged")), 10, eh)                                  // Metric.name, .exponential_histogram
		out = append(out, msg(nil, 1, msg(nil, 2, msg(nil, 2, m))))                      // request ← resource_metrics ← scope_metrics ← metrics
	}
	fx, _ := promToOTLP(t, fixturePath, tsNs(5))
	out = append(out, mustMarshal(t, fx))
	for _, h := range []bool{false, true} {
		p := synth.Config{Seed: 3, Series: 20, PointsPerRequest: 20, Metrics: 4, Histogram: h}.Cover(tsNs(5))[0]
		out = append(out, p.Bytes)
	}
	return out
}

// ingestBoth decodes b with the wire walker and with pdata, each into its
// own store, and requires the same outcome: an error from both, or the
// same stored series and samples and the same partial success.
func ingestBoth(t *testing.T, b []byte) {
	var w otlpwire.Walker
	errW := w.Validate(b)
	er := pmetricotlp.NewExportRequest()
	errP := er.UnmarshalProto(b)
	if errW == nil && errP != nil && w.ValuesTooDeep() > 0 {
		// A documented difference: the walker does not validate bytes
		// below otlpwire.MaxValueDepth, pdata (which has no limit) does.
		// The values the walker cut reject their points instead.
		return
	}
	if (errW == nil) != (errP == nil) {
		t.Fatalf("decoders disagree: wire err=%v, pdata err=%v", errW, errP)
	}
	if errW != nil {
		return
	}
	fw := newFixture(t, Config{}, store.Config{})
	resW, err := fw.r.ingestProto(b)
	require.NoError(t, err)
	fp := newFixture(t, Config{}, store.Config{})
	resP := fp.r.ingestPdata(er.Metrics())
	require.Equal(t, dump(fp.st), dump(fw.st), "stored series and samples")
	require.Equal(t, resP, resW, "partial success")
}

// FuzzWalkVsPdata feeds arbitrary bytes to the wire walker and to pdata
// (otlp-contract.md §14 item 43): never a panic, and the same accepted
// series and samples, or an error from both.
//
// go test -run '^$' -fuzz '^FuzzWalkVsPdata$' -fuzztime 30s ./pkg/receiver
func FuzzWalkVsPdata(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(ingestBoth)
}

// TestWalkVsPdataSeeds runs the fuzz seeds and truncations of each through
// both decoders on every test run.
func TestWalkVsPdataSeeds(t *testing.T) {
	t.Parallel()
	for _, s := range fuzzSeeds(t) {
		ingestBoth(t, s)
		for _, cut := range []int{1, 2, 7, len(s) / 3, len(s) / 2} {
			if cut < len(s) {
				ingestBoth(t, s[:len(s)-cut])
			}
		}
	}
}

// FuzzHTTP feeds arbitrary bodies to POST /v1/metrics as protobuf and as
// JSON (including attribute values nested past every limit): never a
// panic, never a status outside the contract, every 400 with a message
// (a google.rpc.Status in the request's encoding) and every 200 with a
// response that decodes; the in-flight byte budget is whole afterwards.
//
// go test -run '^$' -fuzz '^FuzzHTTP$' -fuzztime 30s ./pkg/receiver
func FuzzHTTP(f *testing.F) {
	for _, s := range fuzzSeeds(f)[:2] {
		f.Add(s, false)
	}
	f.Add([]byte(`{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{"timeUnixNano":"1","asDouble":"NaN"}]}}]}]}]}`), true)
	for _, levels := range []int{otlpwire.MaxValueDepth, otlpwire.MaxValueDepth + 1, jsonValueCut} {
		f.Add(deepJSONBody(levels), true)
	}
	f.Add([]byte(`{"resourceMetrics":[{"resource":{"attributes":[{"key":"k","value":{"kvlistValue":{"values":[{"key":"a","value":`+
		strings.Repeat(`{"kvlistValue":{"values":[{"key":"a","value":`, 80)+`{}`+strings.Repeat(`}]}}`, 80)+`}]}}}]}}]}`), true)
	f.Add([]byte("{\"resourceMetrics\":[{\"x\xff\":1,}]}"), true)
	fx := newFixture(f, Config{}, store.Config{})
	f.Fuzz(func(t *testing.T, body []byte, asJSON bool) {
		ct := "application/x-protobuf"
		if asJSON {
			ct = "application/json"
		}
		hr := httptest.NewRequest(http.MethodPost, "/v1/metrics", bytes.NewReader(body))
		hr.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		fx.r.ServeHTTP(rec, hr)
		switch rec.Code {
		case http.StatusOK:
			var resp colmetricpb.ExportMetricsServiceResponse
			if asJSON {
				require.NoError(t, protojson.Unmarshal(rec.Body.Bytes(), &resp))
			} else {
				require.NoError(t, proto.Unmarshal(rec.Body.Bytes(), &resp))
			}
		case http.StatusBadRequest:
			var st spb.Status
			if asJSON {
				require.NoError(t, protojson.Unmarshal(rec.Body.Bytes(), &st), "body %q", rec.Body.Bytes())
			} else {
				require.NoError(t, proto.Unmarshal(rec.Body.Bytes(), &st), "body %q", rec.Body.Bytes())
			}
			require.NotEmpty(t, st.GetMessage())
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		require.Zero(t, fx.r.inflightBytes.Load(), "every charge returned")
	})
}

// FuzzScanJSON checks scanJSON on arbitrary bodies: it never panics and
// rewrites only in place; a body it leaves alone is unchanged; what it
// returns nests at most jsonStructDepth levels outside attribute values
// and jsonValueCut inside them, so pdata's recursion is bounded; scanning
// again changes nothing; and it never makes a body pdata accepts
// undecodable, nor changes how a body without a replaced value decodes.
//
// go test -run '^$' -fuzz '^FuzzScanJSON$' -fuzztime 30s ./pkg/receiver
func FuzzScanJSON(f *testing.F) {
	for _, levels := range []int{1, otlpwire.MaxValueDepth + 1, jsonValueCut - 1, jsonValueCut, 3000} {
		f.Add(deepJSONBody(levels))
	}
	f.Add([]byte(`{"a":[{"value":{"b":` + strings.Repeat("[", 1100) + strings.Repeat("]", 1100) + `}},"\"value\":{["]}`))
	f.Add([]byte(`{"value" : {"value":{"value":{}}}, "x": "\\"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		b := append([]byte(nil), in...)
		sc, err := scanJSON(b)
		require.Len(t, b, len(in))
		if err != nil {
			return
		}
		if sc.replaced == 0 {
			require.Equal(t, string(in), string(b))
		}
		again := append([]byte(nil), b...)
		sc2, err := scanJSON(again)
		require.NoError(t, err)
		require.Zero(t, sc2.replaced)
		require.Equal(t, string(b), string(again))
		require.LessOrEqual(t, maxJSONDepth(b), jsonStructDepth+jsonValueCut)
		orig := pmetricotlp.NewExportRequest()
		if orig.UnmarshalJSON(in) != nil {
			return
		}
		scanned := pmetricotlp.NewExportRequest()
		require.NoError(t, scanned.UnmarshalJSON(b), "the scan broke a body pdata accepts")
	})
}

// maxJSONDepth is the deepest bracket nesting of b outside strings.
func maxJSONDepth(b []byte) int {
	depth, deepest, inStr := 0, 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}
