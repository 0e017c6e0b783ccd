package receiver

import (
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Staged appends.
//
// At 100k and more series every append costs a few cache misses (index
// slot, series header, ring), and appending point by point lets only one
// of them be outstanding at a time. So the number points of a metric that
// arrive from the wire walker (the bulk of any request) are mapped as
// usual, up to their series identity, and then staged; a flush looks up
// every staged identity, prefetches every series found, and only then
// appends one by one, in request order, so the misses of up to stageSize
// series overlap. Everything else an append does is unchanged: creation
// of new series, start times, rejections and their examples (recorded in
// request order: a point rejected before its append flushes the stage
// first), touched metrics.
//
// A stage holds points of one metric only: Resource, Scope and Metric
// flush it before the context it was mapped in changes, and ingestProto
// flushes the last one after the walk. Staged points keep their encoded
// attributes (aliasing the request, which outlives the walk) to rebuild
// their labels when a series must be created or a rejection needs an
// example.

// stageSize is how many appends a flush overlaps.
const stageSize = 32

// reasonStaged is what point returns for a staged point: its outcome is
// counted by flush. It is not a rejection reason (beyond numReasons).
const reasonStaged = numReasons

type stagedPoint struct {
	id    uint64
	t     int64
	v     float64
	start int64  // b.start of the point (§9.3)
	raw   []byte // the point's attribute span
	stale bool
	ref   store.SeriesRef
	found bool
}

type stage struct {
	points []stagedPoint
	mtype  otlpwire.MetricType // of the current metric, to decode raw
	pt     otlpwire.Point      // a staged point's attributes, for labels and examples
}

// stagePoint stages the current number point's append to its main series
// (b.base and b.start are set).
func (b *batch) stagePoint(raw []byte, t int64, v float64, stale bool) reason {
	b.stg.points = append(b.stg.points, stagedPoint{
		id: b.seriesID(variantMain, nil), t: t, v: v, start: b.start, raw: raw, stale: stale,
	})
	return reasonStaged
}

// flush appends the staged points and counts their outcomes.
func (b *batch) flush() {
	sp := b.stg.points
	if len(sp) == 0 {
		return
	}
	for i := range sp {
		sp[i].ref, sp[i].found = b.st.Lookup(sp[i].id)
	}
	for i := range sp {
		if sp[i].found {
			b.st.Prefetch(sp[i].ref)
		}
	}
	for i := range sp {
		e := &sp[i]
		b.start = e.start
		if r := b.appendStaged(e); r != reasonNone {
			b.stagedCurrent(e)
			b.reject(r, 1, b.pointExample)
			continue
		}
		b.accepted++
	}
	b.stg.points = sp[:0]
}

// stagedCurrent makes e the current point for pointLabels and
// pointExample.
func (b *batch) stagedCurrent(e *stagedPoint) {
	b.stg.pt.SetRawAttrs(e.raw, b.stg.mtype)
	b.curPt, b.built = &b.stg.pt, false
}

// unstage empties the stage and drops its references into the request,
// which is about to be released. getBatch calls it too: a request that
// panicked may have left points staged.
func (b *batch) unstage() {
	clear(b.stg.points[:cap(b.stg.points)])
	b.stg.points = b.stg.points[:0]
	b.stg.pt.SetRawAttrs(nil, otlpwire.TypeGauge)
}

// appendStaged is series(variantMain, nil, ...) for a staged point whose
// lookup is done.
func (b *batch) appendStaged(e *stagedPoint) reason {
	ref, ok := e.ref, e.found
	if !ok {
		// An earlier point of the same stage may have created it.
		ref, ok = b.st.Lookup(e.id)
	}
	if !ok {
		if e.stale {
			return reasonNone
		}
		b.arena = b.arena[:0]
		b.stagedCurrent(e)
		b.ensureLabels()
		lset := b.buildLabels(b.names.names[variantMain], nil)
		var err error
		if ref, err = b.st.Create(e.id, lset); err != nil {
			return appendReason(err)
		}
		b.r.twins.check(b.r, b.st, ref, lset)
	}
	return b.appendTo(variantMain, ref, e.t, e.v)
}
