package receiver

import (
	"context"
	"encoding/binary"
	"math"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/otlptranslator"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// ser renders a series key as dump does.
func ser(name string, kvs ...string) string {
	return labels.FromStrings(append([]string{model.MetricNameLabel, name}, kvs...)...).String()
}

// TestGolden checks, per metric type and mapping rule, the exact series and
// samples stored for a request built with go.opentelemetry.io/proto/otlp
// (otlp-contract.md §14 items 12–25).
func TestGolden(t *testing.T) {
	t.Parallel()
	m := attrs("model_name", "qwen")
	for _, tc := range []struct {
		name         string
		cfg          Config
		req          *colmetricpb.ExportMetricsServiceRequest
		want         map[string][]sampleBits
		wantRejected map[reason]int
	}{{
		name: "gauge_double_and_int",
		req: req(rm(nil, gauge("vllm:num_requests_running", "",
			dpD(m, tsNs(20), 7.5), dpI(m, tsNs(10), 9007199254740993)))),
		want: map[string][]sampleBits{
			ser("vllm:num_requests_running", "model_name", "qwen"): {sb(tsMs(20), 7.5), sb(tsMs(10), 9007199254740992)},
		},
	}, {
		name: "counters_and_updown",
		req: req(rm(nil,
			sum("requests.count", "1", true, cumulative, dpD(nil, tsNs(10), 5)),
			counter("vllm:prompt_tokens_total", dpD(m, tsNs(10), 1241454)),
			counter("vllm:prompt_tokens", dpD(m, tsNs(10), 3)),
			sum("vllm.num_requests_running", "", false, cumulative, dpI(nil, tsNs(10), -2)),
		)),
		want: map[string][]sampleBits{
			ser("requests_count_total"):                           {sb(tsMs(10), 5)},
			ser("vllm:prompt_tokens_total", "model_name", "qwen"): {sb(tsMs(10), 1241454)},
			ser("vllm_num_requests_running"):                      {sb(tsMs(10), -2)},
		},
		// vllm:prompt_tokens (trim_metric_suffixes) maps onto the same
		// series at the same time with another value.
		wantRejected: map[reason]int{reasonDuplicateTimestamp: 1},
	}, {
		name: "histogram_with_sum",
		req: req(rm(nil, hist("vllm:time_to_first_token_seconds", "", cumulative,
			hdp(m, tsNs(10), []float64{0.5, 1, 2560}, []uint64{3, 2, 1, 4}, ptr(12.5))))),
		want: map[string][]sampleBits{
			ser("vllm:time_to_first_token_seconds_bucket", "le", "0.5", "model_name", "qwen"):    {sb(tsMs(10), 3)},
			ser("vllm:time_to_first_token_seconds_bucket", "le", "1.0", "model_name", "qwen"):    {sb(tsMs(10), 5)},
			ser("vllm:time_to_first_token_seconds_bucket", "le", "2560.0", "model_name", "qwen"): {sb(tsMs(10), 6)},
			ser("vllm:time_to_first_token_seconds_bucket", "le", "+Inf", "model_name", "qwen"):   {sb(tsMs(10), 10)},
			ser("vllm:time_to_first_token_seconds_count", "model_name", "qwen"):                  {sb(tsMs(10), 10)},
			ser("vllm:time_to_first_token_seconds_sum", "model_name", "qwen"):                    {sb(tsMs(10), 12.5)},
		},
	}, {
		name: "histogram_without_sum_unit_and_le_attribute",
		req: req(rm(nil, hist("http.server.request.duration", "s", cumulative,
			hdp(attrs("le", "bogus"), tsNs(10), []float64{1e6}, []uint64{1, 1}, nil)))),
		want: map[string][]sampleBits{
			ser("http_server_request_duration_seconds_bucket", "le", "1e+06"): {sb(tsMs(10), 1)},
			ser("http_server_request_duration_seconds_bucket", "le", "+Inf"):  {sb(tsMs(10), 2)},
			ser("http_server_request_duration_seconds_count"):                 {sb(tsMs(10), 2)},
		},
	}, {
		name: "histogram_no_buckets",
		req: req(rm(nil, hist("h", "", cumulative,
			&metricspb.HistogramDataPoint{TimeUnixNano: tsNs(10), Count: 4, Sum: ptr(2.0)}))),
		want: map[string][]sampleBits{
			ser("h_bucket", "le", "+Inf"): {sb(tsMs(10), 4)},
			ser("h_count"):                {sb(tsMs(10), 4)},
			ser("h_sum"):                  {sb(tsMs(10), 2)},
		},
	}, {
		name: "iteration_tokens_total_histogram_keeps_total",
		req: req(rm(nil, hist("vllm:iteration_tokens_total", "", cumulative,
			hdp(nil, tsNs(10), []float64{1}, []uint64{1, 0}, ptr(1.0))))),
		want: map[string][]sampleBits{
			ser("vllm:iteration_tokens_total_bucket", "le", "1.0"):  {sb(tsMs(10), 1)},
			ser("vllm:iteration_tokens_total_bucket", "le", "+Inf"): {sb(tsMs(10), 1)},
			ser("vllm:iteration_tokens_total_count"):                {sb(tsMs(10), 1)},
			ser("vllm:iteration_tokens_total_sum"):                  {sb(tsMs(10), 1)},
		},
	}, {
		name: "summary",
		req: req(rm(nil, &metricspb.Metric{Name: "http_request_duration_seconds", Data: &metricspb.Metric_Summary{Summary: &metricspb.Summary{
			DataPoints: []*metricspb.SummaryDataPoint{{
				Attributes: attrs("quantile", "x", "handler", "/v1"), TimeUnixNano: tsNs(10), Count: 7, Sum: 3.5,
				QuantileValues: []*metricspb.SummaryDataPoint_ValueAtQuantile{{Quantile: 0.5, Value: 0.2}, {Quantile: 0.99, Value: math.NaN()}},
			}},
		}}})),
		want: map[string][]sampleBits{
			ser("http_request_duration_seconds", "handler", "/v1", "quantile", "0.5"):  {sb(tsMs(10), 0.2)},
			ser("http_request_duration_seconds", "handler", "/v1", "quantile", "0.99"): {sb(tsMs(10), math.NaN())},
			ser("http_request_duration_seconds_sum", "handler", "/v1"):                 {sb(tsMs(10), 3.5)},
			ser("http_request_duration_seconds_count", "handler", "/v1"):               {sb(tsMs(10), 7)},
		},
	}, {
		name: "exponential_histogram_native_count_and_sum",
		req: req(rm(nil, &metricspb.Metric{Name: "latency", Unit: "ms", Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: &metricspb.ExponentialHistogram{
			AggregationTemporality: cumulative,
			DataPoints: []*metricspb.ExponentialHistogramDataPoint{{
				TimeUnixNano: tsNs(10), Count: 5, Sum: ptr(9.0), Scale: 2, ZeroCount: 1,
				Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: 1, BucketCounts: []uint64{2, 2}},
			}},
		}}})),
		want: map[string][]sampleBits{
			// OTLP bucket 1 is Prometheus's bucket 2; the zero threshold
			// is Prometheus's 1e-128 whatever the point says.
			ser("latency_milliseconds"):       {hsb(tsMs(10), "schema:2 zt:1e-128 zc:1 count:5 sum:9 hint:0 pos:[{2 2}][2 2] neg:[][] cv:[]")},
			ser("latency_milliseconds_count"): {sb(tsMs(10), 5)},
			ser("latency_milliseconds_sum"):   {sb(tsMs(10), 9)},
		},
	}, {
		name: "delta_rejected_by_default_unspecified_rejected",
		req: req(rm(nil,
			sum("d", "", true, delta, dpD(nil, tsNs(10), 1), dpD(nil, tsNs(5), 2)),
			hist("dh", "", delta, hdp(nil, tsNs(10), nil, nil, nil)),
			sum("u", "", true, unspecified, dpD(nil, tsNs(10), 1)),
			gauge("ok", "", dpD(nil, tsNs(10), 1)),
		)),
		want:         map[string][]sampleBits{ser("ok"): {sb(tsMs(10), 1)}},
		wantRejected: map[reason]int{reasonDeltaTemporality: 3, reasonInvalidTemporality: 1},
	}, {
		name: "delta_ingested",
		cfg:  Config{IngestDelta: true},
		req: req(rm(nil,
			sum("d", "", true, delta, dpD(nil, tsNs(10), 1), dpD(nil, tsNs(5), 2)),
			hist("dh", "", delta, hdp(nil, tsNs(10), []float64{1}, []uint64{1, 2}, nil)),
		)),
		want: map[string][]sampleBits{
			ser("d_total"):                 {sb(tsMs(10), 1), sb(tsMs(5), 2)},
			ser("dh_bucket", "le", "1.0"):  {sb(tsMs(10), 1)},
			ser("dh_bucket", "le", "+Inf"): {sb(tsMs(10), 3)},
			ser("dh_count"):                {sb(tsMs(10), 3)},
		},
	}, {
		name: "unknown_type_rest_stored",
		req: req(rm(nil,
			&metricspb.Metric{Name: "empty"},
			gauge("g", "", dpD(nil, tsNs(10), 1)),
		)),
		want:         map[string][]sampleBits{ser("g"): {sb(tsMs(10), 1)}},
		wantRejected: map[reason]int{reasonUnsupportedType: 1},
	}, {
		name: "label_names",
		req: req(rm(nil, gauge("g", "", dpD([]*commonpb.KeyValue{
			kv("http.method", "GET"), kv("0abc", "1"), kv("_x", "2"), kv("a..b", "3"),
			kv("a_b", "v2"), kv("a.b", "v1"), kv("__name__", "ignored"), kv("__reserved", "r"),
		}, tsNs(10), 1)))),
		want: map[string][]sampleBits{
			ser("g", "__reserved", "r", "a__b", "3", "a_b", "v1;v2", "http_method", "GET", "key_0abc", "1", "key_x", "2"): {sb(tsMs(10), 1)},
		},
	}, {
		name: "label_values",
		req: req(rm(nil, gauge("g", "", dpD([]*commonpb.KeyValue{
			kv("i", 200), kv("d", 0.5), kv("e", 1e-7), kv("b", true), kv("y", []byte("hi")),
			kv("arr", []any{"a", 1, true}), kv("map", map[string]any{"k": "v", "n": 2}),
			kv("empty", ""),
		}, tsNs(10), 1)))),
		want: map[string][]sampleBits{
			ser("g", "arr", `["a",1,true]`, "b", "true", "d", "0.5", "e", "1e-7", "i", "200",
				"map", `{"k":"v","n":2}`, "y", "aGk="): {sb(tsMs(10), 1)},
		},
	}, {
		name: "job_instance_and_k8s_promotion",
		cfg:  Config{PromoteResourceAttributes: []string{"k8s.node.name"}},
		req: req(
			rm([]*commonpb.KeyValue{
				kv("service.name", "vllm"), kv("service.namespace", "ml"), kv("service.instance.id", "localhost:8000"),
				kv("k8s.namespace.name", "ns1"), kv("k8s.pod.name", "p-1"), kv("k8s.deployment.name", "d"),
				kv("k8s.node.name", "n1"), kv("host.arch", "amd64"),
			}, gauge("g", "", dpD(attrs("job", "pointjob", "instance", "pi", "pod", "point-pod"), tsNs(10), 1))),
		),
		want: map[string][]sampleBits{
			ser("g", "deployment", "d", "instance", "localhost:8000", "job", "ml/vllm", "k8s_node_name", "n1",
				"namespace", "ns1", "pod", "point-pod"): {sb(tsMs(10), 1)},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.cfg, store.Config{})
			res := f.export(t, tc.req)
			got := dump(f.st)
			assert.Equal(t, keys(tc.want), keys(got))
			for k, want := range tc.want {
				assert.Equal(t, want, got[k], k)
			}
			wantTotal := 0
			for r, n := range tc.wantRejected {
				wantTotal += n
				assert.InDelta(t, float64(n), counterValue(t, f.r.m.rejected[r]), 0, r.String())
			}
			assert.Equal(t, int64(wantTotal), res.rejected, res.message)
			assert.LessOrEqual(t, len(res.message), maxMessage)
		})
	}
}

// TestNameTable reproduces every row of otlp-contract.md §5's name table.
func TestNameTable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		m    *metricspb.Metric
		want []string
	}{
		{gauge("vllm:num_requests_running", "", dpD(nil, tsNs(1), 1)), []string{"vllm:num_requests_running"}},
		{counter("vllm:prompt_tokens_total", dpD(nil, tsNs(1), 1)), []string{"vllm:prompt_tokens_total"}},
		{counter("vllm:prompt_tokens", dpD(nil, tsNs(1), 1)), []string{"vllm:prompt_tokens_total"}},
		{
			hist("vllm:time_to_first_token_seconds", "", cumulative, hdp(nil, tsNs(1), nil, nil, ptr(1.0))),
			[]string{"vllm:time_to_first_token_seconds_bucket", "vllm:time_to_first_token_seconds_count", "vllm:time_to_first_token_seconds_sum"},
		},
		{
			hist("vllm:iteration_tokens_total", "", cumulative, hdp(nil, tsNs(1), nil, nil, ptr(1.0))),
			[]string{"vllm:iteration_tokens_total_bucket", "vllm:iteration_tokens_total_count", "vllm:iteration_tokens_total_sum"},
		},
		{
			hist("http.server.request.duration", "s", cumulative, hdp(nil, tsNs(1), nil, nil, ptr(1.0))),
			[]string{"http_server_request_duration_seconds_bucket", "http_server_request_duration_seconds_count", "http_server_request_duration_seconds_sum"},
		},
		{gauge("memory.usage", "By", dpD(nil, tsNs(1), 1)), []string{"memory_usage_bytes"}},
		{gauge("system.cpu.utilization", "1", dpD(nil, tsNs(1), 1)), []string{"system_cpu_utilization_ratio"}},
		{counter("total.requests", dpD(nil, tsNs(1), 1)), []string{"requests_total"}},
		{sum("2xx.responses", "{request}", true, cumulative, dpD(nil, tsNs(1), 1)), []string{"_2xx_responses_total"}},
		{sum("vllm.num_requests_running", "", false, cumulative, dpD(nil, tsNs(1), 1)), []string{"vllm_num_requests_running"}},
		{sum("net.io", "By/s", false, cumulative, dpD(nil, tsNs(1), 1)), []string{"net_io_bytes_per_second"}},
	} {
		t.Run(tc.m.Name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{}, store.Config{})
			res := f.export(t, req(rm(nil, tc.m)))
			require.Zero(t, res.rejected, res.message)
			var got []string
			for k := range dump(f.st) {
				got = append(got, k)
			}
			var want []string
			for _, n := range tc.want {
				if n[len(n)-7:] == "_bucket" {
					want = append(want, ser(n, "le", "+Inf"))
				} else {
					want = append(want, ser(n))
				}
			}
			assert.ElementsMatch(t, want, got)
		})
	}
}

// TestInstrumentationLibraryMetrics checks that the deprecated field 1000
// is ingested like scope_metrics, and ignored when scope_metrics exist
// (pdata's MigrateMetrics) (§14 item 11).
func TestInstrumentationLibraryMetrics(t *testing.T) {
	t.Parallel()
	scope := func(name string) []byte {
		b, err := proto.Marshal(&metricspb.ScopeMetrics{Metrics: []*metricspb.Metric{gauge(name, "", dpD(nil, tsNs(10), 1))}})
		require.NoError(t, err)
		return b
	}
	build := func(fields ...protowire.Number) []byte {
		var rmb []byte
		for i, f := range fields {
			rmb = protowire.AppendTag(rmb, f, protowire.BytesType)
			rmb = protowire.AppendBytes(rmb, scope("m"+strconv.Itoa(i)))
		}
		out := protowire.AppendTag(nil, 1, protowire.BytesType)
		return protowire.AppendBytes(out, rmb)
	}
	for _, tc := range []struct {
		name   string
		fields []protowire.Number
		want   []string
	}{
		{"deprecated_only", []protowire.Number{1000, 1000}, []string{ser("m0"), ser("m1")}},
		{"both", []protowire.Number{1000, 2}, []string{ser("m1")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{}, store.Config{})
			_, err := f.r.ingestProto(build(tc.fields...))
			require.NoError(t, err)
			assert.Equal(t, tc.want, keys(dump(f.st)))
			// pdata agrees.
			f2 := newFixture(t, Config{}, store.Config{})
			er := pmetricotlp.NewExportRequest()
			require.NoError(t, er.UnmarshalProto(build(tc.fields...)))
			f2.r.ingestPdata(er.Metrics())
			assert.Equal(t, tc.want, keys(dump(f2.st)))
		})
	}
}

// TestIdentityIncludesResource checks §14 item 25: two resources that
// differ only in an attribute that is not promoted, with identical points
// and instance="localhost:8000", give two series, both counted by sum.
func TestIdentityIncludesResource(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, store.Config{})
	res := func(uid string) []*commonpb.KeyValue {
		return []*commonpb.KeyValue{kv("service.name", "vllm"), kv("service.instance.id", "localhost:8000"), kv("k8s.pod.uid", uid)}
	}
	r := f.export(t, req(
		rm(res("a"), gauge("vllm:num_requests_waiting", "", dpD(attrs("model_name", "m"), tsNs(10), 3))),
		rm(res("b"), gauge("vllm:num_requests_waiting", "", dpD(attrs("model_name", "m"), tsNs(10), 4))),
	))
	require.Zero(t, r.rejected, r.message)
	assert.Equal(t, 2, f.st.NumSeries())
	plan, err := query.NewEngine(f.st).Query(`sum(vllm:num_requests_waiting{instance="localhost:8000"})`, query.Options{})
	require.NoError(t, err)
	out, err := plan.Eval(context.Background(), testNow.UnixMilli())
	require.NoError(t, err)
	require.Len(t, out.Vector, 1)
	assert.InDelta(t, 7.0, out.Vector[0].F, 0)
}

// TestNonFiniteValues checks §7 and §14 item 32: NaN, ±Inf and the
// StaleNaN bit pattern are stored bit-exact and counted.
func TestNonFiniteValues(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, store.Config{})
	oddNaN := math.Float64frombits(0x7ff8000000000123)
	r := f.export(t, req(rm(nil,
		gauge("nan", "", dpD(nil, tsNs(10), oddNaN)),
		gauge("inf", "", dpD(nil, tsNs(10), math.Inf(1)), dpD(nil, tsNs(9), math.Inf(-1))),
	)))
	require.Zero(t, r.rejected, r.message)
	got := dump(f.st)
	assert.Equal(t, []sampleBits{{T: tsMs(10), V: 0x7ff8000000000123}}, got[ser("nan")])
	assert.Equal(t, []sampleBits{sb(tsMs(10), math.Inf(1)), sb(tsMs(9), math.Inf(-1))}, got[ser("inf")])
	assert.InDelta(t, 3.0, counterValue(t, f.r.m.nonFinite), 0)
}

// TestLabelNameMatchesOTLPTranslator checks the in-place sanitiser against
// otlptranslator's LabelNamer with Prometheus's defaults.
func TestLabelNameMatchesOTLPTranslator(t *testing.T) {
	t.Parallel()
	namer := otlptranslator.LabelNamer{UnderscoreLabelSanitization: true, PreserveMultipleUnderscores: true} //nolint:staticcheck // Prometheus's default
	b := newBatch()
	for _, k := range []string{
		"http.method", "0abc", "_x", "a..b", "__reserved", "_", "__", "___", "a", "9", "_9", "__9",
		"k8s.pod.name", "ünï.cödé", "a-b/c d", "é", "_é", "0é", "ok_name", "A1_", ".", "..x", "x\xff",
	} {
		want, err := namer.Build(k)
		b.pt.arena = b.pt.arena[:0]
		got, ok := b.labelName([]byte(k))
		if err != nil {
			assert.False(t, ok, "%q: want invalid", k)
			continue
		}
		if assert.True(t, ok, "%q", k) {
			assert.Equal(t, want, string(got), "%q", k)
		}
	}
}

// TestIdentityReusesBuffer checks identity, which rewrites only the base
// when its buffer already holds the name, against the hash of the bytes
// spelled out, over a sequence that switches names, bases and extras (so
// the buffer is reused, rebuilt and invalidated in every order).
func TestIdentityReusesBuffer(t *testing.T) {
	want := func(base uint64, name string, extra []byte) uint64 {
		h := binary.LittleEndian.AppendUint64(nil, base)
		h = append(h, name...)
		if extra != nil {
			h = append(append(h, 0xfd), extra...)
		}
		return xxhash.Sum64(h)
	}
	b := newBatch()
	for i, c := range []struct {
		base  uint64
		name  string
		extra []byte
	}{
		{1, "http_requests_total", nil},
		{2, "http_requests_total", nil},
		{2, "http_requests_total_count", nil},
		{3, "latency_bucket", []byte("0.5")},
		{3, "latency_bucket", []byte("+Inf")},
		{4, "latency_bucket", nil},
		{4, "", nil},
		{5, "", []byte{}},
		{5, "", nil},
		{6, "abcdefgh", nil},
		{6, "abcdefgi", nil},
		{7, "abcdefgi", nil},
	} {
		b.pt.base = c.base
		require.Equal(t, want(c.base, c.name, c.extra), b.identity(c.name, c.extra), "step %d", i)
	}
}
