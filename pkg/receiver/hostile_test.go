package receiver

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/synth"
)

// nested returns leaf under n arrays (or maps, key "k"): an attribute
// value whose leaf is at depth n.
func nested(n int, leaf any, asMap bool) any {
	v := leaf
	for range n {
		if asMap {
			v = map[string]any{"k": v}
		} else {
			v = []any{v}
		}
	}
	return v
}

// tenGoodAndOne is a request of ten good gauge points (series g{i="0"} to
// g{i="9"}) and one more whose attribute "deep" holds bad.
func tenGoodAndOne(bad *commonpb.AnyValue) *colmetricpb.ExportMetricsServiceRequest {
	var dps []*metricspb.NumberDataPoint
	for i := range 10 {
		dps = append(dps, dpD(attrs("i", fmt.Sprint(i)), tsNs(10), float64(i)))
	}
	dps = append(dps, dpD([]*commonpb.KeyValue{kv("i", "10"), {Key: "deep", Value: bad}}, tsNs(10), 10))
	return req(rm(nil, gauge("g", "", dps...)))
}

// wantTenGood checks a partial success of one attribute_too_deep point and
// the ten good series stored.
func wantTenGood(t *testing.T, st *store.Store, rejected int64, msg string) {
	t.Helper()
	assert.Equal(t, int64(1), rejected)
	assert.Contains(t, msg, "attribute_too_deep=1")
	got := dump(st)
	for i := range 10 {
		assert.Contains(t, got, ser("g", "i", fmt.Sprint(i)))
	}
	assert.NotContains(t, got, ser("g", "i", "10"))
}

// TestAttributeTooDeep is the regression test of issue #12 class 1 on the
// protobuf path: a point whose attribute nests deeper than
// otlpwire.MaxValueDepth is rejected as attribute_too_deep (partial
// success) and the other points of the request are stored, over gRPC and
// HTTP, plain and gzip. Before, the whole Export failed with
// InvalidArgument, which exporters do not retry. A value nested exactly
// MaxValueDepth deep is still a label.
func TestAttributeTooDeep(t *testing.T) {
	t.Parallel()
	for _, asMap := range []bool{false, true} {
		deep := anyv(nested(otlpwire.MaxValueDepth+1, "x", asMap))
		t.Run(fmt.Sprintf("map=%v", asMap), func(t *testing.T) {
			t.Run("grpc", func(t *testing.T) {
				for _, opts := range [][]grpc.CallOption{nil, {grpc.UseCompressor(grpcgzip.Name)}} {
					f := newFixture(t, Config{}, store.Config{})
					client := colmetricpb.NewMetricsServiceClient(grpcServer(t, f.r))
					resp, err := client.Export(t.Context(), tenGoodAndOne(deep), opts...)
					require.NoError(t, err)
					wantTenGood(t, f.st, resp.GetPartialSuccess().GetRejectedDataPoints(), resp.GetPartialSuccess().GetErrorMessage())
				}
			})
			t.Run("http_json", func(t *testing.T) {
				f := newFixture(t, Config{}, store.Config{})
				srv := httptest.NewServer(f.r)
				t.Cleanup(srv.Close)
				body, err := protojson.Marshal(tenGoodAndOne(deep))
				require.NoError(t, err)
				resp, out := post(t, srv.URL+"/v1/metrics", "application/json", "", body)
				require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
				var got colmetricpb.ExportMetricsServiceResponse
				require.NoError(t, protojson.Unmarshal(out, &got))
				wantTenGood(t, f.st, got.GetPartialSuccess().GetRejectedDataPoints(), got.GetPartialSuccess().GetErrorMessage())
			})
		})
	}
	t.Run("at_the_limit_is_a_label", func(t *testing.T) {
		f := newFixture(t, Config{}, store.Config{})
		res := f.export(t, tenGoodAndOne(anyv(nested(otlpwire.MaxValueDepth, "x", false))))
		assert.Zero(t, res.rejected, res.message)
	})
	t.Run("resource_and_scope", func(t *testing.T) {
		f := newFixture(t, Config{}, store.Config{})
		deep := &commonpb.KeyValue{Key: "deep", Value: anyv(nested(otlpwire.MaxValueDepth+1, "x", false))}
		badRes := rm([]*commonpb.KeyValue{deep}, gauge("r", "", dpD(nil, tsNs(10), 1), dpD(nil, tsNs(9), 1)))
		badScope := rm(nil, gauge("s", "", dpD(nil, tsNs(10), 1)))
		badScope.ScopeMetrics[0].Scope.Attributes = []*commonpb.KeyValue{deep}
		res := f.export(t, req(badRes, badScope, rm(nil, gauge("ok", "", dpD(nil, tsNs(10), 1)))))
		assert.Equal(t, int64(3), res.rejected)
		assert.Contains(t, res.message, "attribute_too_deep=3")
		assert.Equal(t, []string{ser("ok")}, keys(dump(f.st)))
	})
}

// deepJSONBody is an OTLP/JSON request of ten good points and one whose
// attribute value nests levels arrayValues deep (written without
// building a tree, so a million levels cost only their bytes).
func deepJSONBody(levels int) []byte {
	good, err := protojson.Marshal(tenGoodAndOne(anyv("placeholder")))
	if err != nil {
		panic(err)
	}
	deep := strings.Repeat(`{"arrayValue":{"values":[`, levels) + `{"stringValue":"x"}` + strings.Repeat("]}}", levels)
	return bytes.Replace(good, []byte(`{"stringValue":"placeholder"}`), []byte(deep), 1)
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	require.NoError(t, err)
	_, err = zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// TestJSONDeepNesting is the regression test of issue #12 class 1 on the
// OTLP/JSON path: a point whose attribute value is an arrayValue nested a
// million levels deep (a 25 MB body, about 40 KB gzip'd) is rejected as
// attribute_too_deep and the ten other points are stored, with bounded
// memory: the bytes allocated while serving it are under twice the
// decompressed body plus what it is charged for decoding. Before, pdata recursed once per
// level: a fatal stack overflow (the test binary dies), and at 200k levels
// seconds and hundreds of MiB. Values deep enough to be too deep but
// short of the scan's cut take pdata's path and get the same answer.
func TestJSONDeepNesting(t *testing.T) {
	for _, levels := range []int{otlpwire.MaxValueDepth + 1, jsonValueCut / 3, 1_000_000} {
		t.Run(fmt.Sprint(levels), func(t *testing.T) {
			body := deepJSONBody(levels)
			zbody := gzipped(t, body)
			f := newFixture(t, Config{}, store.Config{})
			srv := httptest.NewServer(f.r)
			t.Cleanup(srv.Close)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			resp, out := post(t, srv.URL+"/v1/metrics", "application/json", "gzip", zbody)
			runtime.ReadMemStats(&after)
			require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
			var got colmetricpb.ExportMetricsServiceResponse
			require.NoError(t, protojson.Unmarshal(out, &got))
			wantTenGood(t, f.st, got.GetPartialSuccess().GetRejectedDataPoints(), got.GetPartialSuccess().GetErrorMessage())
			allocated := after.TotalAlloc - before.TotalAlloc
			sc, err := scanJSON(append([]byte(nil), body...))
			require.NoError(t, err)
			bound := uint64(2*len(body)) + uint64(sc.treeBytes(int64(len(body)))) + 16<<20
			t.Logf("levels %d: body %d B (gzip %d B), allocated %d B, bound %d B", levels, len(body), len(zbody), allocated, bound)
			assert.LessOrEqual(t, allocated, bound)
		})
	}
}

// TestScanJSON checks the scan itself: values nested past the cut
// are replaced by a too-deep value of the same decoded meaning, values
// short of it and everything outside values are left alone, and bodies
// that nest deeply outside values or do not balance fail.
func TestScanJSON(t *testing.T) {
	t.Parallel()
	require.LessOrEqual(t, len(tooDeepJSON), 2*jsonValueCut, "the replacement fits in any value it replaces")
	short := deepJSONBody(jsonValueCut / 3)
	long := deepJSONBody(jsonValueCut)
	for _, tc := range []struct {
		name     string
		in       string
		replaced int
		err      string
	}{
		{"short_value_untouched", string(short), 0, ""},
		{"long_value_replaced", string(long), 1, ""},
		{"two_long_values", `{"a":[{"value":{"b":` + strings.Repeat("[", 2000) + strings.Repeat("]", 2000) + `}},{"value" :` + strings.Repeat("{", 1100) + strings.Repeat("}", 1100) + `}]}`, 2, ""},
		{"brackets_in_strings_ignored", `{"value":{"k":"` + strings.Repeat("[", 3000) + `\"]"}}`, 0, ""},
		{"deep_outside_values", `{"a":` + strings.Repeat("[", jsonStructDepth+1) + strings.Repeat("]", jsonStructDepth+1) + `}`, 0, "nested deeper than 64 levels outside an attribute value"},
		{"unclosed", `{"resourceMetrics":[{"value":{"a":` + strings.Repeat("[", 3000), 0, "ends inside"},
		{"unbalanced", `{}}`, 0, "unbalanced"},
		{"mismatched_value_close", `{"value":{` + strings.Repeat("[", 1100) + strings.Repeat("]", 1100) + `]}`, 0, "closed with ']'"},
		{"unterminated_string", `{"value":"abc`, 0, "unterminated string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := []byte(tc.in)
			sc, err := scanJSON(b)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.replaced, sc.replaced)
			assert.Len(t, b, len(tc.in), "in place")
			if sc.replaced == 0 {
				assert.Equal(t, tc.in, string(b))
			}
		})
	}
	t.Run("replacement_decodes_as_too_deep", func(t *testing.T) {
		b := append([]byte(nil), long...)
		_, err := scanJSON(b)
		require.NoError(t, err)
		er := pmetricotlp.NewExportRequest()
		require.NoError(t, er.UnmarshalJSON(b))
		f := newFixture(t, Config{}, store.Config{})
		res := f.r.ingestPdata(er.Metrics())
		wantTenGood(t, f.st, res.rejected, res.message)
	})
}

// TestJSONTreeBytes measures what pdata allocates to decode a JSON body
// and the receiver to map it, on honest shapes (synthetic counters and
// histograms, the vLLM fixture) and hostile ones (empty points, long
// number arrays, empty attributes and values, nested values up to the
// cut), and checks that jsonScan.treeBytes, what the request is charged,
// covers it.
func TestJSONTreeBytes(t *testing.T) {
	fx, _ := promToOTLP(t, fixturePath, tsNs(5))
	many := func(item string, n int) string { return strings.Repeat(item+",", n-1) + item }
	point := func(fields string) string {
		return `{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[` + fields + `]}}]}]}]}`
	}
	ts := `"timeUnixNano":"` + itoa(tsNs(5)) + `","asDouble":1`
	bodies := map[string][]byte{
		"deep_values":  deepJSONBody(jsonValueCut / 3),
		"empty_points": []byte(point(many("{}", 100_000))),
		"empty_attrs":  []byte(point(`{` + ts + `,"attributes":[` + many("{}", 100_000) + `]}`)),
		"empty_values": []byte(point(`{` + ts + `,"attributes":[{"key":"a","value":{"arrayValue":{"values":[` + many("{}", 100_000) + `]}}}]}`)),
		"buckets": []byte(`{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h","histogram":{"aggregationTemporality":2,"dataPoints":[{` +
			ts + `,"count":"1","bucketCounts":[` + many("1", 200_000) + `]}]}}]}]}]}`),
		"empty_quantiles": []byte(`{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"s","summary":{"dataPoints":[{` +
			ts + `,"quantileValues":[` + many("{}", 100_000) + `]}]}}]}]}]}`),
	}
	for name, pb := range map[string][]byte{
		"vllm":      mustMarshal(t, fx),
		"counters":  synth.Config{Seed: 1, Series: 1000, PointsPerRequest: 1000, Metrics: 10}.Cover(tsNs(5))[0].Bytes,
		"histogram": synth.Config{Seed: 1, Series: 100, PointsPerRequest: 100, Metrics: 10, Histogram: true}.Cover(tsNs(5))[0].Bytes,
	} {
		er := pmetricotlp.NewExportRequest()
		require.NoError(t, er.UnmarshalProto(pb))
		js, err := er.MarshalJSON()
		require.NoError(t, err)
		bodies[name] = js
	}
	f := newFixture(t, Config{}, store.Config{})
	for name, body := range bodies {
		b := make([]byte, len(body))
		ingest := func() jsonScan {
			copy(b, body)
			sc, err := scanJSON(b)
			require.NoError(t, err)
			_, err = f.r.ingestJSON(b)
			require.NoError(t, err)
			return sc
		}
		ingest() // the store's new series are not the request's
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		sc := ingest()
		runtime.ReadMemStats(&after)
		allocated := after.TotalAlloc - before.TotalAlloc
		charged := sc.treeBytes(int64(len(body)))
		t.Logf("%s: %d B body, %d B allocated (%.1f per body byte), %d B charged", name, len(body), allocated,
			float64(allocated)/float64(len(body)), charged)
		assert.LessOrEqual(t, allocated, uint64(charged), name)
	}
}

// keep proto imported for helpers in this file's later tests.
var _ = proto.Size
