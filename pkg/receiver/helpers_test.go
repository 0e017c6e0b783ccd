package receiver

import (
	"fmt"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// testNow is the fixed clock of receiver tests.
var testNow = time.Unix(1_800_000_000, 0)

// tsNs returns a timestamp sec seconds before testNow, in ns.
func tsNs(sec int) uint64 { return uint64(testNow.Add(-time.Duration(sec) * time.Second).UnixNano()) }

// tsMs is tsNs in ms.
func tsMs(sec int) int64 { return testNow.Add(-time.Duration(sec) * time.Second).UnixMilli() }

type fixture struct {
	st *store.Store
	r  *Receiver
}

func newFixture(t testing.TB, cfg Config, scfg store.Config) *fixture {
	t.Helper()
	now := func() time.Time { return testNow }
	st := store.New(scfg, store.Settings{Now: now})
	return &fixture{st: st, r: New(st, cfg, Settings{Now: now})}
}

// export ingests req through the wire walker and returns the result.
func (f *fixture) export(t testing.TB, req *colmetricpb.ExportMetricsServiceRequest) result {
	t.Helper()
	b, err := proto.Marshal(req)
	require.NoError(t, err)
	res, err := f.r.ingestProto(b)
	require.NoError(t, err)
	return res
}

// dump returns every stored series (labels.String) with its samples;
// NaNs are compared by bits through sampleBits.
func dump(st *store.Store) map[string][]sampleBits {
	out := map[string][]sampleBits{}
	m := labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+")
	for _, ref := range st.Select(nil, m) {
		var ss []sampleBits
		h := st.Handle(ref)
		fs, hs := st.Reader().RangeHistograms(h, math.MinInt64+1, math.MaxInt64, nil, nil)
		for i, k := 0, 0; i < len(fs) || k < len(hs); {
			if k == len(hs) || i < len(fs) && fs[i].T < hs[k].T {
				ss = append(ss, sampleBits{T: fs[i].T, V: math.Float64bits(fs[i].V)})
				i++
				continue
			}
			ss = append(ss, hsb(hs[k].T, histString(&hs[k].H)))
			k++
		}
		out[st.Labels(ref).String()] = ss
	}
	return out
}

// sampleBits is a sample with its value as bits, so NaN compares equal;
// a histogram sample has H set (histString) and V zero.
type sampleBits struct {
	T int64
	V uint64
	H string
}

// hsb is a histogram sample of dump.
func hsb(t int64, h string) sampleBits { return sampleBits{T: t, H: h} }

// histString renders a histogram with its schema, zero threshold, hint
// and layout (spans and buckets as stored, empty buckets included).
func histString(h *histogram.FloatHistogram) string {
	return fmt.Sprintf("schema:%d zt:%g zc:%g count:%g sum:%g hint:%d pos:%v%v neg:%v%v cv:%v",
		h.Schema, h.ZeroThreshold, h.ZeroCount, h.Count, h.Sum, h.CounterResetHint,
		h.PositiveSpans, h.PositiveBuckets, h.NegativeSpans, h.NegativeBuckets, h.CustomValues)
}

func sb(t int64, v float64) sampleBits { return sampleBits{T: t, V: math.Float64bits(v)} }

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// --- request builders (go.opentelemetry.io/proto/otlp) ---

func req(rms ...*metricspb.ResourceMetrics) *colmetricpb.ExportMetricsServiceRequest {
	return &colmetricpb.ExportMetricsServiceRequest{ResourceMetrics: rms}
}

func rm(res []*commonpb.KeyValue, ms ...*metricspb.Metric) *metricspb.ResourceMetrics {
	return &metricspb.ResourceMetrics{
		Resource:     &resourcepb.Resource{Attributes: res},
		ScopeMetrics: []*metricspb.ScopeMetrics{{Scope: &commonpb.InstrumentationScope{Name: "test"}, Metrics: ms}},
	}
}

func kv(k string, v any) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: anyv(v)}
}

func anyv(v any) *commonpb.AnyValue {
	switch x := v.(type) {
	case string:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: x}}
	case int:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(x)}}
	case float64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: x}}
	case bool:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: x}}
	case []byte:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: x}}
	case []any:
		arr := &commonpb.ArrayValue{}
		for _, e := range x {
			arr.Values = append(arr.Values, anyv(e))
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: arr}}
	case map[string]any:
		kvl := &commonpb.KeyValueList{}
		for _, k := range keys(x) {
			kvl.Values = append(kvl.Values, kv(k, x[k]))
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: kvl}}
	default:
		panic("unsupported attribute value")
	}
}

func attrs(kvs ...string) []*commonpb.KeyValue {
	var out []*commonpb.KeyValue
	for i := 0; i+1 < len(kvs); i += 2 {
		out = append(out, kv(kvs[i], kvs[i+1]))
	}
	return out
}

func dpD(at []*commonpb.KeyValue, t uint64, v float64) *metricspb.NumberDataPoint {
	return &metricspb.NumberDataPoint{Attributes: at, TimeUnixNano: t, Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v}}
}

func dpI(at []*commonpb.KeyValue, t uint64, v int64) *metricspb.NumberDataPoint {
	return &metricspb.NumberDataPoint{Attributes: at, TimeUnixNano: t, Value: &metricspb.NumberDataPoint_AsInt{AsInt: v}}
}

func gauge(name, unit string, dps ...*metricspb.NumberDataPoint) *metricspb.Metric {
	return &metricspb.Metric{Name: name, Unit: unit, Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: dps}}}
}

func sum(name, unit string, monotonic bool, temp metricspb.AggregationTemporality, dps ...*metricspb.NumberDataPoint) *metricspb.Metric {
	return &metricspb.Metric{Name: name, Unit: unit, Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{
		DataPoints: dps, IsMonotonic: monotonic, AggregationTemporality: temp,
	}}}
}

const (
	cumulative  = metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	delta       = metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
	unspecified = metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_UNSPECIFIED
)

func counter(name string, dps ...*metricspb.NumberDataPoint) *metricspb.Metric {
	return sum(name, "", true, cumulative, dps...)
}

func hdp(at []*commonpb.KeyValue, t uint64, bounds []float64, counts []uint64, sumV *float64) *metricspb.HistogramDataPoint {
	var c uint64
	for _, n := range counts {
		c += n
	}
	return &metricspb.HistogramDataPoint{Attributes: at, TimeUnixNano: t, ExplicitBounds: bounds, BucketCounts: counts, Count: c, Sum: sumV}
}

func hist(name, unit string, temp metricspb.AggregationTemporality, dps ...*metricspb.HistogramDataPoint) *metricspb.Metric {
	return &metricspb.Metric{Name: name, Unit: unit, Data: &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{
		DataPoints: dps, AggregationTemporality: temp,
	}}}
}

func ptr[T any](v T) *T { return &v }
