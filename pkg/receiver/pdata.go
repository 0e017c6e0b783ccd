package receiver

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
)

// pdataScratch is the reusable scratch of walkPdata.
type pdataScratch struct {
	res, scope []otlpwire.KeyValue
	pt         otlpwire.Point
}

// walkPdata feeds decoded pdata metrics to h exactly as otlpwire.Walker
// feeds the same request's bytes. It serves OTLP/HTTP JSON and is the
// reference path in tests and benchmarks.
func walkPdata(md pmetric.Metrics, h otlpwire.Handler, sc *pdataScratch) {
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		rm := rms.At(i)
		sc.res = appendAttrs(sc.res[:0], rm.Resource().Attributes())
		h.Resource(sc.res)
		sms := rm.ScopeMetrics()
		for j := range sms.Len() {
			sm := sms.At(j)
			s := sm.Scope()
			sc.scope = appendAttrs(sc.scope[:0], s.Attributes())
			h.Scope(strBytes(s.Name()), strBytes(s.Version()), sc.scope)
			ms := sm.Metrics()
			for k := range ms.Len() {
				pdataMetric(ms.At(k), h, sc)
			}
		}
	}
}

func pdataMetric(m pmetric.Metric, h otlpwire.Handler, sc *pdataScratch) {
	wm := otlpwire.Metric{Name: strBytes(m.Name()), Unit: strBytes(m.Unit())}
	pt := &sc.pt
	switch m.Type() {
	case pmetric.MetricTypeGauge, pmetric.MetricTypeSum:
		var dps pmetric.NumberDataPointSlice
		if m.Type() == pmetric.MetricTypeGauge {
			wm.Type = otlpwire.TypeGauge
			dps = m.Gauge().DataPoints()
		} else {
			wm.Type = otlpwire.TypeSum
			wm.Temporality = int32(m.Sum().AggregationTemporality())
			wm.Monotonic = m.Sum().IsMonotonic()
			dps = m.Sum().DataPoints()
		}
		if !h.Metric(&wm, dps.Len()) {
			return
		}
		for i := range dps.Len() {
			dp := dps.At(i)
			setPoint(pt, dp)
			switch dp.ValueType() {
			case pmetric.NumberDataPointValueTypeDouble:
				pt.NumberKind, pt.Double = otlpwire.NumberDouble, dp.DoubleValue()
			case pmetric.NumberDataPointValueTypeInt:
				pt.NumberKind, pt.Int = otlpwire.NumberInt, dp.IntValue()
			}
			h.Point(pt)
		}
	case pmetric.MetricTypeHistogram:
		wm.Type = otlpwire.TypeHistogram
		wm.Temporality = int32(m.Histogram().AggregationTemporality())
		dps := m.Histogram().DataPoints()
		if !h.Metric(&wm, dps.Len()) {
			return
		}
		for i := range dps.Len() {
			dp := dps.At(i)
			setPoint(pt, dp)
			pt.Count, pt.Sum, pt.HasSum = dp.Count(), dp.Sum(), dp.HasSum()
			pt.BucketCounts = append(pt.BucketCounts, dp.BucketCounts().AsRaw()...)
			pt.Bounds = append(pt.Bounds, dp.ExplicitBounds().AsRaw()...)
			h.Point(pt)
		}
	case pmetric.MetricTypeExponentialHistogram:
		wm.Type = otlpwire.TypeExponentialHistogram
		wm.Temporality = int32(m.ExponentialHistogram().AggregationTemporality())
		dps := m.ExponentialHistogram().DataPoints()
		if !h.Metric(&wm, dps.Len()) {
			return
		}
		for i := range dps.Len() {
			dp := dps.At(i)
			setPoint(pt, dp)
			pt.Count, pt.Sum, pt.HasSum = dp.Count(), dp.Sum(), dp.HasSum()
			pt.Scale, pt.ZeroCount, pt.ZeroThreshold = dp.Scale(), dp.ZeroCount(), dp.ZeroThreshold()
			pt.PosOffset, pt.NegOffset = dp.Positive().Offset(), dp.Negative().Offset()
			pos, neg := dp.Positive().BucketCounts(), dp.Negative().BucketCounts()
			pt.BucketsOverflow = pos.Len() > otlpwire.MaxExpBuckets || neg.Len() > otlpwire.MaxExpBuckets
			for i := range min(pos.Len(), otlpwire.MaxExpBuckets) {
				pt.BucketCounts = append(pt.BucketCounts, pos.At(i))
			}
			for i := range min(neg.Len(), otlpwire.MaxExpBuckets) {
				pt.NegCounts = append(pt.NegCounts, neg.At(i))
			}
			h.Point(pt)
		}
	case pmetric.MetricTypeSummary:
		wm.Type = otlpwire.TypeSummary
		dps := m.Summary().DataPoints()
		if !h.Metric(&wm, dps.Len()) {
			return
		}
		for i := range dps.Len() {
			dp := dps.At(i)
			setPoint(pt, dp)
			pt.Count, pt.Sum, pt.HasSum = dp.Count(), dp.Sum(), true
			qs := dp.QuantileValues()
			for j := range qs.Len() {
				q := qs.At(j)
				pt.Quantiles = append(pt.Quantiles, otlpwire.Quantile{Quantile: q.Quantile(), Value: q.Value()})
			}
			h.Point(pt)
		}
	default:
		h.Metric(&wm, 0)
	}
}

// pdataPoint is what every pdata data point type has.
type pdataPoint interface {
	Attributes() pcommon.Map
	StartTimestamp() pcommon.Timestamp
	Timestamp() pcommon.Timestamp
	Flags() pmetric.DataPointFlags
}

// setPoint resets pt to dp's attributes, times and flags; the caller sets
// the values of dp's type.
func setPoint[P pdataPoint](pt *otlpwire.Point, dp P) {
	resetPoint(pt)
	pt.Attrs = appendAttrs(pt.Attrs, dp.Attributes())
	pt.StartTime, pt.Time, pt.Flags = uint64(dp.StartTimestamp()), uint64(dp.Timestamp()), uint32(dp.Flags())
}

func resetPoint(pt *otlpwire.Point) {
	attrs, counts, bounds, qs, neg := pt.Attrs[:0], pt.BucketCounts[:0], pt.Bounds[:0], pt.Quantiles[:0], pt.NegCounts[:0]
	*pt = otlpwire.Point{Attrs: attrs, BucketCounts: counts, Bounds: bounds, Quantiles: qs, NegCounts: neg}
}

func appendAttrs(dst []otlpwire.KeyValue, m pcommon.Map) []otlpwire.KeyValue {
	for k, v := range m.All() {
		dst = append(dst, otlpwire.KeyValue{Key: strBytes(k), Value: pdataValue(v)})
	}
	return dst
}

func pdataValue(v pcommon.Value) otlpwire.AnyValue {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return otlpwire.AnyValue{Kind: otlpwire.KindStr, Str: strBytes(v.Str())}
	case pcommon.ValueTypeInt:
		return otlpwire.AnyValue{Kind: otlpwire.KindInt, Int: v.Int()}
	case pcommon.ValueTypeDouble:
		return otlpwire.AnyValue{Kind: otlpwire.KindDouble, Double: v.Double()}
	case pcommon.ValueTypeBool:
		return otlpwire.AnyValue{Kind: otlpwire.KindBool, Bool: v.Bool()}
	case pcommon.ValueTypeBytes:
		return otlpwire.AnyValue{Kind: otlpwire.KindBytes, Str: v.Bytes().AsRaw()}
	case pcommon.ValueTypeMap, pcommon.ValueTypeSlice:
		if valueTooDeep(v, 0) {
			return otlpwire.AnyValue{Kind: otlpwire.KindTooDeep}
		}
		return otlpwire.AnyValue{Kind: otlpwire.KindPreformatted, Str: []byte(v.AsString())}
	default:
		return otlpwire.AnyValue{Kind: otlpwire.KindEmpty}
	}
}

// valueTooDeep applies otlpwire's nesting rule to a pdata value at depth
// (0 for an attribute's own value): a non-empty array or map whose
// elements would sit deeper than otlpwire.MaxValueDepth is too deep. It
// recurses at most MaxValueDepth+1 levels whatever v holds.
func valueTooDeep(v pcommon.Value, depth int) bool {
	switch v.Type() {
	case pcommon.ValueTypeSlice:
		s := v.Slice()
		if s.Len() > 0 && depth+1 > otlpwire.MaxValueDepth {
			return true
		}
		for i := range s.Len() {
			if valueTooDeep(s.At(i), depth+1) {
				return true
			}
		}
	case pcommon.ValueTypeMap:
		m := v.Map()
		if m.Len() > 0 && depth+1 > otlpwire.MaxValueDepth {
			return true
		}
		for _, e := range m.All() {
			if valueTooDeep(e, depth+1) {
				return true
			}
		}
	}
	return false
}

// strBytes views a string as bytes without copying; the mapper never
// writes to its inputs.
func strBytes(s string) []byte { return unsafeBytes(s) }

// nestedValueString renders an array or map attribute value exactly as
// pdata's Value.AsString would. It wraps the encoded value in a minimal
// request and lets pdata decode it: rare (arrays and maps as labels are
// unusual), so allocation is fine here, and identical by construction.
func nestedValueString(v *otlpwire.AnyValue) string {
	field := protowire.Number(5) // AnyValue.array_value
	if v.Kind == otlpwire.KindMap {
		field = 6 // AnyValue.kvlist_value
	}
	anyV := protowire.AppendTag(nil, field, protowire.BytesType)
	anyV = protowire.AppendBytes(anyV, v.Str)
	kv := protowire.AppendTag(nil, 2, protowire.BytesType) // KeyValue.value
	kv = protowire.AppendBytes(kv, anyV)
	res := protowire.AppendTag(nil, 1, protowire.BytesType) // Resource.attributes
	res = protowire.AppendBytes(res, kv)
	rm := protowire.AppendTag(nil, 1, protowire.BytesType) // ResourceMetrics.resource
	rm = protowire.AppendBytes(rm, res)
	req := protowire.AppendTag(nil, 1, protowire.BytesType) // request.resource_metrics
	req = protowire.AppendBytes(req, rm)
	er := pmetricotlp.NewExportRequest()
	if err := er.UnmarshalProto(req); err != nil {
		return ""
	}
	rms := er.Metrics().ResourceMetrics()
	if rms.Len() == 0 {
		return ""
	}
	for _, val := range rms.At(0).Resource().Attributes().All() {
		return val.AsString()
	}
	return ""
}
