package receiver

import (
	"github.com/prometheus/prometheus/model/labels"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Staged appends.
//
// At 100k and more series every append costs a few cache misses (index
// slot, series header, ring), and appending point by point lets only one
// of them be outstanding at a time. So the samples of the number and
// histogram points that arrive from the wire walker (the bulk of any
// request) are mapped as usual, up to their series identity, and then
// staged; a flush looks up every staged identity, prefetches every series
// found, and only then appends one by one, in request order, so the
// misses of up to stageSize series overlap. Everything else an append does
// is unchanged: creation of new series, start times, rejections and their
// examples (recorded in request order: a point rejected before its
// appends, or appended at once, flushes the stage first), touched metrics.
// A point counts as accepted or rejected (with its first failing reason)
// once all its samples are appended, as before.
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
	id         uint64
	t          int64
	v          float64
	start      int64  // b.start of the point (§9.3)
	raw        []byte // the point's attribute span
	extraStart int32  // le of a bucket: b.stg.extra[extraStart:extraEnd]
	extraEnd   int32
	variant    uint8
	hasExtra   bool
	stale      bool
	last       bool // the point's last sample
	ref        store.SeriesRef
	found      bool
}

type stage struct {
	points []stagedPoint
	extra  []byte              // le values of staged buckets
	mtype  otlpwire.MetricType // of the current metric, to decode raw
	pt     otlpwire.Point      // a staged point's attributes, for labels and examples
	refs   [stageSize]store.SeriesRef
}

// makeRoom flushes the stage if n more samples do not fit, keeping the
// current point p's state.
func (b *batch) makeRoom(p *otlpwire.Point, n int) {
	if len(b.stg.points)+n > stageSize {
		b.flushKeep(p)
	}
}

// flushKeep flushes the stage in the middle of mapping point p and
// restores what flushing changes of p's state (its start time; its labels
// are rebuilt on demand).
func (b *batch) flushKeep(p *otlpwire.Point) {
	if len(b.stg.points) == 0 {
		return
	}
	start := b.start
	b.flush()
	b.start, b.curPt, b.built = start, p, false
}

// stageSample stages one sample of the current point (b.base and b.start
// are set) for the series named by variant and extra.
func (b *batch) stageSample(p *otlpwire.Point, variant int, extra []byte, t int64, v float64, stale bool) {
	e := stagedPoint{
		id: b.seriesID(variant, extra), t: t, v: v, start: b.start, raw: p.RawAttrs,
		variant: uint8(variant), hasExtra: extra != nil, stale: stale,
	}
	if extra != nil {
		e.extraStart = int32(len(b.stg.extra))
		b.stg.extra = append(b.stg.extra, extra...)
		e.extraEnd = int32(len(b.stg.extra))
	}
	b.stg.points = append(b.stg.points, e)
}

// stagePoint stages the current number point's append to its main series.
func (b *batch) stagePoint(p *otlpwire.Point, t int64, v float64, stale bool) reason {
	b.makeRoom(p, 1)
	b.stageSample(p, variantMain, nil, t, v, stale)
	b.stg.points[len(b.stg.points)-1].last = true
	return reasonStaged
}

// stageHistogram stages what histogram appends for a point without the
// NoRecordedValue flag: every bucket, +Inf, _count and _sum. It reports
// false, staging nothing, when they do not fit in a stage.
func (b *batch) stageHistogram(p *otlpwire.Point, t int64) bool {
	n := len(p.Bounds) + 3
	if n > stageSize {
		return false
	}
	b.makeRoom(p, n)
	var cum uint64
	if len(p.BucketCounts) > 0 {
		for i, bd := range p.Bounds {
			cum += p.BucketCounts[i]
			b.key = labels.AppendOpenMetricsFloat(b.key[:0], bd)
			b.stageSample(p, variantMain, b.key, t, float64(cum), false)
		}
	}
	b.stageSample(p, variantMain, infLE, t, float64(p.Count), false)
	b.stageSample(p, variantCount, nil, t, float64(p.Count), false)
	if p.HasSum {
		b.stageSample(p, variantSum, nil, t, p.Sum, false)
	}
	b.stg.points[len(b.stg.points)-1].last = true
	return true
}

// flush appends the staged points and counts their outcomes.
func (b *batch) flush() {
	sp := b.stg.points
	if len(sp) == 0 {
		return
	}
	refs := b.stg.refs[:len(sp)]
	for i := range sp {
		sp[i].ref, sp[i].found = b.st.Lookup(sp[i].id)
		refs[i] = sp[i].ref // 0 when not found
	}
	b.st.PrefetchAll(refs)
	first := reasonNone
	for i := range sp {
		e := &sp[i]
		b.start = e.start
		first = firstReason(first, b.appendStaged(e))
		if !e.last {
			continue
		}
		if first != reasonNone {
			b.stagedCurrent(e)
			b.reject(first, 1, b.pointExample)
		} else {
			b.accepted++
		}
		first = reasonNone
	}
	b.stg.points, b.stg.extra = sp[:0], b.stg.extra[:0]
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
	b.stg.points, b.stg.extra = b.stg.points[:0], b.stg.extra[:0]
	b.stg.pt.SetRawAttrs(nil, otlpwire.TypeGauge)
}

// appendStaged is series for a staged sample whose lookup is done.
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
		var extra []byte
		if e.hasExtra {
			extra = b.stg.extra[e.extraStart:e.extraEnd]
		}
		lset := b.buildLabels(b.names.names[e.variant], extra)
		var err error
		if ref, err = b.st.Create(e.id, lset); err != nil {
			return appendReason(err)
		}
		b.r.twins.check(b.r, b.st, ref, lset)
	}
	return b.appendTo(int(e.variant), ref, e.t, e.v)
}
