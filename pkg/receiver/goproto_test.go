package receiver

import (
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
)

// walkGoproto feeds a google.golang.org/protobuf-decoded request to h, the
// impl=goproto baseline of BenchmarkIngest. Only the types the benchmark
// sends (sums, gauges, histograms) are converted.
func walkGoproto(r *colmetricpb.ExportMetricsServiceRequest, h otlpwire.Handler, sc *pdataScratch) {
	for _, rm := range r.GetResourceMetrics() {
		sc.res = appendPbAttrs(sc.res[:0], rm.GetResource().GetAttributes())
		h.Resource(sc.res)
		for _, sm := range rm.GetScopeMetrics() {
			sc.scope = appendPbAttrs(sc.scope[:0], sm.GetScope().GetAttributes())
			h.Scope(strBytes(sm.GetScope().GetName()), strBytes(sm.GetScope().GetVersion()), sc.scope)
			for _, m := range sm.GetMetrics() {
				wm := otlpwire.Metric{Name: strBytes(m.GetName()), Unit: strBytes(m.GetUnit())}
				var dps []*metricspb.NumberDataPoint
				switch d := m.GetData().(type) {
				case *metricspb.Metric_Sum:
					wm.Type, wm.Temporality, wm.Monotonic = otlpwire.TypeSum, int32(d.Sum.GetAggregationTemporality()), d.Sum.GetIsMonotonic()
					dps = d.Sum.GetDataPoints()
				case *metricspb.Metric_Gauge:
					wm.Type = otlpwire.TypeGauge
					dps = d.Gauge.GetDataPoints()
				case *metricspb.Metric_Histogram:
					wm.Type, wm.Temporality = otlpwire.TypeHistogram, int32(d.Histogram.GetAggregationTemporality())
					hdps := d.Histogram.GetDataPoints()
					if !h.Metric(&wm, len(hdps)) {
						continue
					}
					for _, dp := range hdps {
						pt := &sc.pt
						resetPoint(pt)
						pt.Attrs = appendPbAttrs(pt.Attrs, dp.GetAttributes())
						pt.StartTime, pt.Time, pt.Flags = dp.GetStartTimeUnixNano(), dp.GetTimeUnixNano(), dp.GetFlags()
						pt.Count, pt.Sum, pt.HasSum = dp.GetCount(), dp.GetSum(), dp.Sum != nil
						pt.BucketCounts = append(pt.BucketCounts, dp.GetBucketCounts()...)
						pt.Bounds = append(pt.Bounds, dp.GetExplicitBounds()...)
						h.Point(pt)
					}
					continue
				}
				if !h.Metric(&wm, len(dps)) {
					continue
				}
				for _, dp := range dps {
					pt := &sc.pt
					resetPoint(pt)
					pt.Attrs = appendPbAttrs(pt.Attrs, dp.GetAttributes())
					pt.StartTime, pt.Time, pt.Flags = dp.GetStartTimeUnixNano(), dp.GetTimeUnixNano(), dp.GetFlags()
					switch v := dp.GetValue().(type) {
					case *metricspb.NumberDataPoint_AsDouble:
						pt.NumberKind, pt.Double = otlpwire.NumberDouble, v.AsDouble
					case *metricspb.NumberDataPoint_AsInt:
						pt.NumberKind, pt.Int = otlpwire.NumberInt, v.AsInt
					}
					h.Point(pt)
				}
			}
		}
	}
}

func appendPbAttrs(dst []otlpwire.KeyValue, kvs []*commonpb.KeyValue) []otlpwire.KeyValue {
	for _, kv := range kvs {
		v := otlpwire.AnyValue{}
		switch x := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			v = otlpwire.AnyValue{Kind: otlpwire.KindStr, Str: strBytes(x.StringValue)}
		case *commonpb.AnyValue_IntValue:
			v = otlpwire.AnyValue{Kind: otlpwire.KindInt, Int: x.IntValue}
		case *commonpb.AnyValue_DoubleValue:
			v = otlpwire.AnyValue{Kind: otlpwire.KindDouble, Double: x.DoubleValue}
		case *commonpb.AnyValue_BoolValue:
			v = otlpwire.AnyValue{Kind: otlpwire.KindBool, Bool: x.BoolValue}
		case *commonpb.AnyValue_BytesValue:
			v = otlpwire.AnyValue{Kind: otlpwire.KindBytes, Str: x.BytesValue}
		}
		dst = append(dst, otlpwire.KeyValue{Key: strBytes(kv.GetKey()), Value: v})
	}
	return dst
}
