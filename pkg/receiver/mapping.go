package receiver

import (
	"errors"
	"math"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Rejection reasons, the fixed label set of points_rejected_total.
const (
	reasonUnsupportedType  = "unsupported_type"
	reasonDeltaTemporality = "delta_temporality"
	reasonInvalidTemp      = "invalid_temporality"
	reasonEmptyName        = "empty_name"
	reasonMissingValue     = "missing_value"
	reasonMissingTimestamp = "missing_timestamp"
	reasonTooOld           = "too_old"
	reasonOutOfOrder       = "out_of_order"
	reasonDuplicate        = "duplicate_timestamp"
	reasonSeriesLimit      = "series_limit"
	reasonSeriesPerMetric  = "series_per_metric_limit"
	reasonInvalidLabelName = "invalid_label_name"
)

// batch is the per-request scratch state of ingest. Pooled; one request at
// a time.
type batch struct {
	r *Receiver

	// Per resource: labels promoted from resource attributes and a hash of
	// all resource attributes plus the scope (part of series identity).
	resLabels []labels.Label
	resHash   uint64
	scopeHash uint64

	builder labels.ScratchBuilder
	lbls    []labels.Label

	touched       []uint32
	rejected      map[string]int
	examples      map[string]string
	rejectedTotal int
}

func (b *batch) reset(r *Receiver) {
	b.r = r
	b.touched = b.touched[:0]
	b.rejectedTotal = 0
	if b.rejected == nil {
		b.rejected = map[string]int{}
		b.examples = map[string]string{}
	}
	clear(b.rejected)
	clear(b.examples)
}

func (b *batch) reject(reason string, n int, example string) {
	b.rejected[reason] += n
	b.rejectedTotal += n
	if _, ok := b.examples[reason]; !ok {
		b.examples[reason] = example
	}
	b.r.m.rejected.WithLabelValues(reason).Add(float64(n))
}

func (b *batch) resource(rm pmetric.ResourceMetrics) {
	attrs := rm.Resource().Attributes()
	b.resLabels = b.resLabels[:0]
	h := xxhash.New()
	keys := make([]string, 0, attrs.Len())
	attrs.Range(func(k string, _ pcommon.Value) bool { keys = append(keys, k); return true })
	sortStrings(keys)
	for _, k := range keys {
		v, _ := attrs.Get(k)
		_, _ = h.WriteString(k)
		_, _ = h.Write([]byte{0xff})
		_, _ = h.WriteString(v.AsString())
		_, _ = h.Write([]byte{0xfe})
	}
	b.resHash = h.Sum64()
	if v, ok := attrs.Get("service.name"); ok && v.AsString() != "" {
		job := v.AsString()
		if ns, ok := attrs.Get("service.namespace"); ok && ns.AsString() != "" {
			job = ns.AsString() + "/" + job
		}
		b.resLabels = append(b.resLabels, labels.Label{Name: "job", Value: job})
	}
	if v, ok := attrs.Get("service.instance.id"); ok && v.AsString() != "" {
		b.resLabels = append(b.resLabels, labels.Label{Name: "instance", Value: v.AsString()})
	}
	sms := rm.ScopeMetrics()
	for i := range sms.Len() {
		sm := sms.At(i)
		b.scopeHash = xxhash.Sum64String(sm.Scope().Name() + "\xff" + sm.Scope().Version())
		ms := sm.Metrics()
		for j := range ms.Len() {
			b.metric(ms.At(j), attrs)
		}
	}
}

// k8sPromoted are resource attributes also offered as labels under short
// names when the point has no such label (the labels KServe filters on).
var k8sPromoted = [...]struct{ attr, label string }{
	{"k8s.namespace.name", "namespace"},
	{"k8s.pod.name", "pod"},
	{"k8s.deployment.name", "deployment"},
}

func (b *batch) metric(m pmetric.Metric, resAttrs pcommon.Map) {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		name := promName(m.Name(), m.Unit(), false)
		if name == "" {
			b.reject(reasonEmptyName, m.Gauge().DataPoints().Len(), m.Name())
			return
		}
		b.numberPoints(name, m.Gauge().DataPoints(), resAttrs)
	case pmetric.MetricTypeSum:
		s := m.Sum()
		switch s.AggregationTemporality() {
		case pmetric.AggregationTemporalityCumulative:
		case pmetric.AggregationTemporalityDelta:
			b.reject(reasonDeltaTemporality, s.DataPoints().Len(), m.Name())
			return
		default:
			b.reject(reasonInvalidTemp, s.DataPoints().Len(), m.Name())
			return
		}
		name := promName(m.Name(), m.Unit(), s.IsMonotonic())
		if name == "" {
			b.reject(reasonEmptyName, s.DataPoints().Len(), m.Name())
			return
		}
		b.numberPoints(name, s.DataPoints(), resAttrs)
	default:
		b.reject(reasonUnsupportedType, max(1, dataPointCount(m)), m.Name())
	}
}

func (b *batch) numberPoints(name string, dps pmetric.NumberDataPointSlice, resAttrs pcommon.Map) {
	for i := range dps.Len() {
		dp := dps.At(i)
		var v float64
		switch {
		case dp.Flags().NoRecordedValue():
			v = math.Float64frombits(value.StaleNaN)
		case dp.ValueType() == pmetric.NumberDataPointValueTypeDouble:
			v = dp.DoubleValue()
		case dp.ValueType() == pmetric.NumberDataPointValueTypeInt:
			v = float64(dp.IntValue())
		default:
			b.reject(reasonMissingValue, 1, name)
			continue
		}
		if dp.Timestamp() == 0 {
			b.reject(reasonMissingTimestamp, 1, name)
			continue
		}
		lset, ok := b.pointLabels(name, dp.Attributes(), resAttrs)
		if !ok {
			continue
		}
		b.append(lset, int64(dp.Timestamp())/1e6, v, dp.Flags().NoRecordedValue())
	}
}

// pointLabels builds the sorted label set of a point: sanitised point
// attributes, then job/instance (which overwrite), then promoted k8s
// attributes (which do not).
func (b *batch) pointLabels(name string, attrs, resAttrs pcommon.Map) (labels.Labels, bool) {
	b.lbls = b.lbls[:0]
	b.lbls = append(b.lbls, labels.Label{Name: labels.MetricName, Value: name})
	ok := true
	attrs.Range(func(k string, v pcommon.Value) bool {
		ln := sanitizeLabelName(k)
		if ln == "" {
			b.reject(reasonInvalidLabelName, 1, name)
			ok = false
			return false
		}
		if ln == labels.MetricName {
			return true
		}
		if s := v.AsString(); s != "" {
			b.lbls = append(b.lbls, labels.Label{Name: ln, Value: s})
		}
		return true
	})
	if !ok {
		return labels.EmptyLabels(), false
	}
	for _, rl := range b.resLabels {
		b.lbls = setLabel(b.lbls, rl, true)
	}
	for _, p := range k8sPromoted {
		if v, found := resAttrs.Get(p.attr); found && v.AsString() != "" {
			b.lbls = setLabel(b.lbls, labels.Label{Name: p.label, Value: v.AsString()}, false)
		}
	}
	b.builder.Reset()
	for _, l := range b.lbls {
		b.builder.Add(l.Name, l.Value)
	}
	b.builder.Sort()
	return b.builder.Labels(), true
}

func setLabel(ls []labels.Label, l labels.Label, overwrite bool) []labels.Label {
	for i := range ls {
		if ls[i].Name == l.Name {
			if overwrite {
				ls[i].Value = l.Value
			}
			return ls
		}
	}
	return append(ls, l)
}

func (b *batch) append(lset labels.Labels, t int64, v float64, stale bool) {
	st := b.r.store
	h := xxhash.New()
	_, _ = h.Write(u64(lset.Hash()))
	_, _ = h.Write(u64(b.resHash))
	_, _ = h.Write(u64(b.scopeHash))
	id := h.Sum64()
	ref, ok := st.Lookup(id)
	if !ok {
		if stale {
			return // a marker never creates a series
		}
		var err error
		ref, err = st.Create(id, lset)
		if err != nil {
			b.rejectAppend(err, lset)
			return
		}
	}
	if err := st.Append(ref, t, v); err != nil {
		b.rejectAppend(err, lset)
		return
	}
	b.r.m.accepted.Inc()
	if mid, ok := st.SeriesMetricID(ref); ok {
		for _, t := range b.touched {
			if t == mid {
				return
			}
		}
		b.touched = append(b.touched, mid)
	}
}

func (b *batch) rejectAppend(err error, lset labels.Labels) {
	reason := "internal"
	switch {
	case errors.Is(err, store.ErrOutOfOrder):
		reason = reasonOutOfOrder
	case errors.Is(err, store.ErrDuplicateTimestamp):
		reason = reasonDuplicate
	case errors.Is(err, store.ErrTooOld):
		reason = reasonTooOld
	case errors.Is(err, store.ErrSeriesLimit):
		reason = reasonSeriesLimit
	case errors.Is(err, store.ErrSeriesPerMetricLimit):
		reason = reasonSeriesPerMetric
	}
	b.reject(reason, 1, lset.String())
}

func u64(v uint64) []byte {
	return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24), byte(v >> 32), byte(v >> 40), byte(v >> 48), byte(v >> 56)}
}

// promName returns the name Prometheus's OTLP endpoint stores a metric under
// for the common cases: tokens outside [a-zA-Z0-9:] become "_", and a
// monotonic sum ends in "_total".
func promName(name, _ string, monotonic bool) string {
	var sb strings.Builder
	lastSep := false
	for _, r := range name {
		if r == ':' || r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			sb.WriteRune(r)
			lastSep = false
			continue
		}
		if !lastSep && sb.Len() > 0 {
			sb.WriteByte('_')
			lastSep = true
		}
	}
	out := strings.TrimSuffix(sb.String(), "_")
	if out == "" {
		return ""
	}
	if monotonic && !strings.HasSuffix(out, "_total") && out != "total" {
		out += "_total"
	}
	if out[0] >= '0' && out[0] <= '9' {
		out = "_" + out
	}
	return out
}

// sanitizeLabelName maps an attribute key to a Prometheus label name.
func sanitizeLabelName(k string) string {
	if k == "" {
		return ""
	}
	b := []byte(k)
	onlyUnderscore := true
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
		if b[i] != '_' {
			onlyUnderscore = false
		}
	}
	if onlyUnderscore {
		return ""
	}
	s := string(b)
	switch {
	case s[0] >= '0' && s[0] <= '9':
		s = "key_" + s
	case s[0] == '_' && !strings.HasPrefix(s, "__"):
		s = "key" + s
	}
	return s
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func dataPointCount(m pmetric.Metric) int {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return m.Gauge().DataPoints().Len()
	case pmetric.MetricTypeSum:
		return m.Sum().DataPoints().Len()
	case pmetric.MetricTypeHistogram:
		return m.Histogram().DataPoints().Len()
	case pmetric.MetricTypeExponentialHistogram:
		return m.ExponentialHistogram().DataPoints().Len()
	case pmetric.MetricTypeSummary:
		return m.Summary().DataPoints().Len()
	default:
		return 0
	}
}
