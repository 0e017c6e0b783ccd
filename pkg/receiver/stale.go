package receiver

import (
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
)

// staleFamily implements NoRecordedValue for histograms and summaries
// (otlp-contract.md §9.4): it stages a StaleNaN at t for every series of
// the point's identity under the family's main name (_bucket, or the
// summary's quantile series), whatever its le or quantile. A flagged point
// carries no bounds or quantiles, so the values come from what the store
// holds: the series whose visible labels equal the point's, of which only
// those whose identity hash (resource and scope included) is the one the
// point would give them are ended. It flushes the stage first, so the
// store holds every series earlier points create. It never creates a
// series. It runs only for flagged points, so its matchers may allocate.
func (b *batch) staleFamily(p *otlpwire.Point, t int64) {
	b.flushKeep(p)
	b.ensureLabels()
	ln := "le"
	if b.met.kind == kindSummary {
		ln = "quantile"
	}
	ms := make([]*labels.Matcher, 0, len(b.pt.lbls)+2)
	ms = append(ms, labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, b.met.names.names[variantMain]))
	for _, l := range b.pt.lbls {
		ms = append(ms, labels.MustNewMatcher(labels.MatchEqual, string(l.name), string(l.value)))
	}
	ms = append(ms, labels.MustNewMatcher(labels.MatchNotEqual, ln, ""))
	b.pt.staleRefs = b.st.Select(b.pt.staleRefs[:0], ms...)
	for _, ref := range b.pt.staleRefs {
		v, ok := b.st.LabelValue(ref, ln)
		if !ok {
			continue
		}
		b.pt.key = append(b.pt.key[:0], v...)
		if got, ok := b.st.Lookup(b.seriesID(variantMain, b.pt.key)); !ok || got != ref {
			continue // another resource or scope, or more labels
		}
		b.stageSample(p, variantMain, b.pt.key, t, staleNaN, true)
	}
}
