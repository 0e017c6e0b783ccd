package receiver

import (
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Appends.
//
// Every sample a point maps to is staged: mapped up to its series identity
// and kept with its time, value (a float, or a native histogram held by
// the stage) and start time. A flush looks up every
// staged identity, prefetches every series found, and only then appends
// one by one, in request order, creating the series that do not exist
// yet. At 100k and more series every append costs a few cache misses
// (index slot, series header, ring), and appending sample by sample lets
// only one of them be outstanding at a time; staged, the misses of up to
// stageSize series overlap. A point counts as accepted, or as rejected
// with its first failing reason, once its last sample is appended (a
// point with more samples than a stage holds spans flushes). Rejections
// and their examples stay in request order: a point rejected before it
// stages anything flushes the stage first.
//
// A stage holds samples of one metric only: Resource, Scope and Metric
// flush it before the context it was mapped in changes, and ingestProto
// flushes the last one after the walk. A staged sample keeps its point's
// encoded attributes (aliasing the request, which outlives the walk) to
// rebuild the point's labels when a series must be created or a rejection
// needs an example. A point decoded elsewhere (pdata: JSON, tests) has no
// encoded attributes: Point flushes its samples before returning, while
// it is still the current point.

// stageSize is how many appends a flush overlaps.
const stageSize = 32

// sampleForm is what a staged sample appends.
type sampleForm uint8

const (
	sampleFloat     sampleForm = iota // v
	sampleHistogram                   // the native histogram b.stg.hists[hist]
	sampleRefused                     // nothing: its point is invalid_histogram
)

// staged is one sample waiting in the stage.
type staged struct {
	id         uint64
	t, st      int64 // time and start time (0: none) in unix ms
	v          float64
	raw        []byte // the point's attribute span, when hasRaw
	ref        store.SeriesRef
	extraStart int32 // le or quantile: b.stg.extra[extraStart:extraEnd]
	extraEnd   int32
	hist       int32 // sampleHistogram: its index in b.stg.hists
	variant    uint8
	form       sampleForm
	hasExtra   bool
	hasRaw     bool // else the point is b.stg.live
	stale      bool // a staleness marker: never creates its series
	last       bool // the point's last sample
	found      bool // ref is set
}

type stage struct {
	samples []staged
	extra   []byte                     // le and quantile values of staged samples
	refs    [stageSize]store.SeriesRef // PrefetchAll's argument
	// hists[:nhists] are the native histograms of staged samples; the
	// values, and their slices, are reused from flush to flush.
	hists  []histogram.FloatHistogram
	nhists int
	// pointSamples counts the current point's staged samples, flushed or
	// not; first is the first failing reason of its samples flushed so far.
	pointSamples int
	first        reason
	// live is the point of the staged samples without hasRaw (at most
	// one point: it is flushed before the next one).
	live *otlpwire.Point
	pt   otlpwire.Point // a staged point's attributes, for labels and examples
}

// stageSample stages one sample of point p (the current point: b.pt.base
// and b.pt.start are set) for the series named by variant and extra. It
// flushes a full stage first.
func (b *batch) stageSample(p *otlpwire.Point, variant int, extra []byte, t int64, v float64, stale bool) {
	if len(b.stg.samples) == stageSize {
		b.flushKeep(p)
	}
	st := b.pt.start
	if b.met.kind == kindSummary && variant == variantMain {
		st = 0 // quantiles are not cumulative (§9.3)
	}
	e := staged{
		id: b.seriesID(variant, extra), t: t, st: st, v: v, raw: p.RawAttrs,
		variant: uint8(variant), hasExtra: extra != nil, hasRaw: p.Raw, stale: stale,
	}
	if extra != nil {
		e.extraStart = int32(len(b.stg.extra))
		b.stg.extra = append(b.stg.extra, extra...)
		e.extraEnd = int32(len(b.stg.extra))
	}
	if !p.Raw {
		b.stg.live = p
	}
	b.stg.samples = append(b.stg.samples, e)
	b.stg.pointSamples++
}

// makeRoom flushes the stage if the n samples of point p would not fit
// beside the staged ones but fit alone, so a point is appended in one
// flush where it can be.
func (b *batch) makeRoom(p *otlpwire.Point, n int) {
	if len(b.stg.samples)+n > stageSize && n <= stageSize {
		b.flushKeep(p)
	}
}

// endPoint marks the current point's last staged sample, so flush counts
// the point's outcome there.
func (b *batch) endPoint() {
	if b.stg.pointSamples == 0 {
		b.out.accepted++ // nothing to append (no kind maps a point to none)
		return
	}
	b.stg.samples[len(b.stg.samples)-1].last = true
	b.stg.pointSamples = 0
}

// flushKeep flushes the stage in the middle of mapping point p and makes
// p the current point again (its labels are rebuilt on demand).
func (b *batch) flushKeep(p *otlpwire.Point) {
	if len(b.stg.samples) == 0 {
		return
	}
	b.flush()
	b.pt.cur, b.pt.built = p, false
}

// flush appends the staged samples and counts the outcomes of the points
// whose last sample they include.
func (b *batch) flush() {
	sp := b.stg.samples
	if len(sp) == 0 {
		return
	}
	refs := b.stg.refs[:len(sp)]
	for i := range sp {
		sp[i].ref, sp[i].found = b.st.Lookup(sp[i].id)
		refs[i] = sp[i].ref // 0 when not found
	}
	if len(sp) > 1 { // one miss has nothing to overlap with
		b.st.PrefetchAll(refs)
	}
	for i := range sp {
		e := &sp[i]
		b.stg.first = firstReason(b.stg.first, b.append(e))
		if !e.last {
			continue
		}
		if b.stg.first != reasonNone {
			b.stagedCurrent(e)
			b.reject(b.stg.first, 1, b.pointExample)
		} else {
			b.out.accepted++
		}
		b.stg.first = reasonNone
	}
	b.stg.samples, b.stg.extra, b.stg.nhists = sp[:0], b.stg.extra[:0], 0
}

// append appends one staged sample whose lookup is done, creating its
// series unless the sample is a staleness marker, and notes the metric as
// touched.
func (b *batch) append(e *staged) reason {
	if e.form == sampleRefused {
		return reasonInvalidHistogram
	}
	ref, ok := e.ref, e.found
	if !ok {
		// An earlier sample of the same stage may have created it.
		ref, ok = b.st.Lookup(e.id)
	}
	if !ok {
		if e.stale {
			return reasonNone
		}
		b.pt.arena = b.pt.arena[:0]
		b.stagedCurrent(e)
		b.ensureLabels()
		var extra []byte
		if e.hasExtra {
			extra = b.stg.extra[e.extraStart:e.extraEnd]
		}
		lset := b.buildLabels(b.met.names.names[e.variant], extra)
		var err error
		if e.form == sampleHistogram {
			ref, err = b.st.CreateHistogram(e.id, lset)
		} else {
			ref, err = b.st.Create(e.id, lset)
		}
		if err != nil {
			return appendReason(err)
		}
		b.r.twins.check(b.r, b.st, ref, lset)
	}
	if e.form == sampleHistogram {
		if err := b.app.AppendHistogram(ref, e.t, &b.stg.hists[e.hist]); err != nil {
			return histAppendReason(err)
		}
	} else if err := b.app.Append(ref, e.st, e.t, e.v); err != nil {
		return appendReason(err)
	}
	if !b.met.touched[e.variant] {
		b.touch(int(e.variant), ref)
	}
	return reasonNone
}

// stagedCurrent makes e's point the current point for pointLabels and
// pointExample.
func (b *batch) stagedCurrent(e *staged) {
	if e.hasRaw {
		b.stg.pt.SetRawAttrs(e.raw, b.met.mtype)
		b.pt.cur = &b.stg.pt
	} else {
		b.pt.cur = b.stg.live
	}
	b.pt.built = false
}

// unstage empties the stage and drops its references into the request,
// which is about to be released. getBatch calls it too: a request that
// panicked may have left samples staged.
func (b *batch) unstage() {
	clear(b.stg.samples[:cap(b.stg.samples)])
	b.stg.samples, b.stg.extra, b.stg.nhists = b.stg.samples[:0], b.stg.extra[:0], 0
	b.stg.pointSamples, b.stg.first, b.stg.live = 0, reasonNone, nil
	b.stg.pt.SetRawAttrs(nil, otlpwire.TypeGauge)
}

// stageHistogram stages a histogram point's samples: every bucket, +Inf,
// _count and _sum. A flagged point (NoRecordedValue) carries no bounds: it
// ends every bucket held, +Inf included (staleFamily), then _count and
// _sum.
func (b *batch) stageHistogram(p *otlpwire.Point, t int64, stale bool) {
	if stale {
		b.staleFamily(p, t)
		b.stageSample(p, variantCount, nil, t, staleNaN, true)
		b.stageSample(p, variantSum, nil, t, staleNaN, true)
		return
	}
	b.makeRoom(p, len(p.Bounds)+3)
	var cum uint64
	if len(p.BucketCounts) > 0 {
		for i, bd := range p.Bounds {
			cum += p.BucketCounts[i]
			b.pt.key = labels.AppendOpenMetricsFloat(b.pt.key[:0], bd)
			b.stageSample(p, variantMain, b.pt.key, t, float64(cum), false)
		}
	}
	b.stageSample(p, variantMain, infLE, t, float64(p.Count), false)
	b.stageSample(p, variantCount, nil, t, float64(p.Count), false)
	if p.HasSum {
		b.stageSample(p, variantSum, nil, t, p.Sum, false)
	}
}

var infLE = []byte("+Inf")

// stageNativeHistogram stages an exponential histogram point's native
// histogram sample (exphist.go), for the series named by variantMain,
// after its _count and _sum: converted into the next of the stage's
// histograms. A point the conversion refuses stages a refused sample, so
// that it is rejected as invalid_histogram in its order while its _count
// and _sum are stored. A flagged point stages a float staleness marker,
// which ends the series and never creates it.
func (b *batch) stageNativeHistogram(p *otlpwire.Point, t int64, stale bool) {
	if stale {
		b.stageSample(p, variantMain, nil, t, staleNaN, true)
		return
	}
	if len(b.stg.samples) == stageSize {
		b.flushKeep(p) // before taking a histogram: a flush frees them all
	}
	i := b.stg.nhists
	if i == len(b.stg.hists) {
		b.stg.hists = append(b.stg.hists, histogram.FloatHistogram{})
	}
	form := sampleRefused
	if expToNative(p, b.met.delta, &b.stg.hists[i]) {
		form = sampleHistogram
		b.stg.nhists++
	}
	b.stageSample(p, variantMain, nil, t, 0, false)
	e := &b.stg.samples[len(b.stg.samples)-1]
	e.form, e.hist = form, int32(i)
}
