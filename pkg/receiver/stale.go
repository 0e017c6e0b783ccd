package receiver

import (
	"math"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
)

// staleFamily implements NoRecordedValue for histograms and summaries
// (otlp-contract.md §9.4): it writes a StaleNaN at t to every series of
// the point's identity under the family's main name (_bucket, or the
// summary's quantile series), whatever its le or quantile. A flagged point
// carries no bounds or quantiles, so the values come from what the store
// holds: the series whose visible labels equal the point's, of which only
// those whose identity hash (resource and scope included) is the one the
// point would give them are ended. It never creates a series. It runs
// only for flagged points, so its matchers may allocate.
func (b *batch) staleFamily(t int64) reason {
	b.ensureLabels()
	ln := "le"
	if b.kind == kindSummary {
		ln = "quantile"
	}
	ms := make([]*labels.Matcher, 0, len(b.lbls)+2)
	ms = append(ms, labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, b.names.names[variantMain]))
	for _, l := range b.lbls {
		ms = append(ms, labels.MustNewMatcher(labels.MatchEqual, string(l.name), string(l.value)))
	}
	ms = append(ms, labels.MustNewMatcher(labels.MatchNotEqual, ln, ""))
	b.staleRefs = b.st.Select(b.staleRefs[:0], ms...)
	staleV := math.Float64frombits(value.StaleNaN)
	first := reasonNone
	for _, ref := range b.staleRefs {
		v, ok := b.st.LabelValue(ref, ln)
		if !ok {
			continue
		}
		b.key = append(b.key[:0], v...)
		if got, ok := b.st.Lookup(b.seriesID(variantMain, b.key)); !ok || got != ref {
			continue // another resource or scope, or more labels
		}
		first = firstReason(first, b.appendTo(variantMain, ref, t, staleV))
	}
	return first
}
