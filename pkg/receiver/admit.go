package receiver

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/interest"
)

// Ingest filter (--metric-allow-list, --lazy-ingest; pkg/interest).
//
// The decision is per metric family, made in Metric before any point is
// mapped, and cached in the family's name-cache entry together with the
// filter's generation: a family costs one atomic load and a compare per
// Metric while the wanted set is unchanged, and points of a family that
// is not stored cost nothing but the wire walk. Filtered points are not
// rejections (the collector did nothing wrong): they are not reported in
// partial success, only counted in
// keda_otel_scaler_receiver_points_filtered_total{reason}.

// admitCache is a family's cached decision.
type admitCache struct {
	gen    uint64
	valid  bool
	reason interest.Reason
}

// filteredCounts are per-request counts of filtered points by reason.
type filteredCounts [3]int

type filterMetrics struct {
	filtered [3]prometheus.Counter
}

func newFilterMetrics(reg prometheus.Registerer) *filterMetrics {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keda_otel_scaler_receiver_points_filtered_total",
		Help: "OTLP data points not stored because no name of their metric family matches --metric-allow-list (not_allowed) or, with --lazy-ingest, no query asked for it (not_requested).",
	}, []string{"reason"})
	fm := &filterMetrics{}
	fm.filtered[interest.NotAllowed] = v.WithLabelValues("not_allowed")
	fm.filtered[interest.NotRequested] = v.WithLabelValues("not_requested")
	if reg != nil {
		reg.MustRegister(v)
	}
	return fm
}

// admit reports whether the current metric's family is stored, counting
// its points when it is not.
func (b *batch) admit(e *nameEntry, raw []byte, k kind, points int) bool {
	f := b.r.filter
	gen := f.Gen((b.maxT - futureLimitMs) * 1e6) // b.maxT is the request's clock + the future limit
	if !e.admit.valid || e.admit.gen != gen {
		e.admit = admitCache{gen: gen, valid: true, reason: f.Admit(familyNames(e, raw, k))}
	}
	if e.admit.reason == interest.Admitted {
		return true
	}
	b.out.filtered[e.admit.reason] += points
	return false
}

// familyNames lists every name a query may use for the family: the stored
// names, the raw OTLP name and its legacy aliases (legacy.go). It runs only
// when the decision is not cached.
func familyNames(e *nameEntry, raw []byte, k kind) []string {
	names := make([]string, 0, numVariants+4)
	for _, n := range e.names {
		if n != "" {
			names = append(names, n)
		}
	}
	base := legacyName(raw)
	names = append(names, string(raw), base)
	switch k {
	case kindHistogram, kindExpHistogram, kindSummary:
		names = append(names, base+"_count", base+"_sum")
	}
	return names
}

// flushFiltered publishes a request's filtered counts.
func (r *Receiver) flushFiltered(b *batch) {
	if r.fm == nil {
		return
	}
	for i, n := range b.out.filtered {
		if n > 0 {
			r.fm.filtered[i].Add(float64(n))
		}
	}
}
