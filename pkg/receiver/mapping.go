package receiver

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/otlptranslator"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// reason is a rejection reason of otlp-contract.md §10, a fixed set.
type reason uint8

// Rejection reasons. Their names are the values of the reason label of
// keda_otel_scaler_receiver_points_rejected_total.
const (
	reasonNone reason = iota
	reasonDeltaTemporality
	reasonInvalidTemporality
	reasonUnsupportedType
	reasonEmptyName
	reasonNameTooLong
	reasonInvalidLabelName
	reasonDuplicateLabel
	reasonInvalidUTF8
	reasonMissingValue
	reasonInvalidHistogram
	reasonMissingTimestamp
	reasonTooFarInFuture
	reasonTooOld
	reasonOutOfOrder
	reasonDuplicateTimestamp
	reasonTooManyLabels
	reasonLabelNameTooLong
	reasonLabelValueTooLong
	reasonSeriesLimit
	reasonSeriesPerMetricLimit
	reasonAttributeTooDeep
	reasonTypeConflict
	reasonSampleMemory
	numReasons
)

var reasonNames = [numReasons]string{
	reasonNone:                 "",
	reasonDeltaTemporality:     "delta_temporality",
	reasonInvalidTemporality:   "invalid_temporality",
	reasonUnsupportedType:      "unsupported_type",
	reasonEmptyName:            "empty_name",
	reasonNameTooLong:          "name_too_long",
	reasonInvalidLabelName:     "invalid_label_name",
	reasonDuplicateLabel:       "duplicate_label",
	reasonInvalidUTF8:          "invalid_utf8",
	reasonMissingValue:         "missing_value",
	reasonInvalidHistogram:     "invalid_histogram",
	reasonMissingTimestamp:     "missing_timestamp",
	reasonTooFarInFuture:       "too_far_in_future",
	reasonTooOld:               "too_old",
	reasonOutOfOrder:           "out_of_order",
	reasonDuplicateTimestamp:   "duplicate_timestamp",
	reasonTooManyLabels:        "too_many_labels",
	reasonLabelNameTooLong:     "label_name_too_long",
	reasonLabelValueTooLong:    "label_value_too_long",
	reasonSeriesLimit:          "series_limit",
	reasonSeriesPerMetricLimit: "series_per_metric_limit",
	// An attribute value (of the point, its scope or its resource) nests
	// arrays or maps deeper than otlpwire.MaxValueDepth.
	reasonAttributeTooDeep: "attribute_too_deep",
	// A native histogram for a series that holds floats: a gauge or
	// counter with the histogram's name, labels and resource (§6).
	reasonTypeConflict: "type_conflict",
	// A native histogram sample --max-sample-memory cannot hold at all.
	reasonSampleMemory: "sample_memory",
}

func (r reason) String() string { return reasonNames[r] }

// futureLimitMs is how far ahead of the receiver's clock a sample may be
// (Prometheus's limit).
const futureLimitMs = 10 * 60 * 1000

// kind is how a metric maps to series (otlp-contract.md §6).
type kind uint8

const (
	kindGauge kind = iota // gauges and non-monotonic sums
	kindCounter
	kindHistogram
	kindExpHistogram
	kindSummary
)

// Series-name variants of a family: index into nameEntry.names.
const (
	variantMain   = 0 // n (number, summary quantiles) or n_bucket (histogram)
	variantCount  = 1
	variantSum    = 2
	numVariants   = 3
	nameCacheSize = 4096
)

// nameEntry is a cached metric-name translation.
type nameEntry struct {
	names  [numVariants]string
	reject reason
	// aliases holds, per variant, the metric ID of the legacy alias
	// registered for it (legacy.go), reported to OnIngest with the stored
	// name's ID; hasAlias says which are set. aliasNames are the aliases
	// (empty: none), and aliasEpoch the store's AliasEpoch read before
	// they were registered: once it moves, the sweeper may have dropped
	// them and freed their IDs, and touch registers them again.
	aliases    [numVariants]uint32
	hasAlias   [numVariants]bool
	aliasNames [numVariants]string
	aliasEpoch uint64
	// admit caches the ingest filter's decision for the family (admit.go).
	admit admitCache
}

// slabel is a label under construction. name and value alias the request,
// a cache or the batch arena. ki is the index of the attribute it came
// from (point labels) or, for resource labels, 1 when it overwrites a
// point label of the same name and 0 when it is added only if absent.
type slabel struct {
	name, value []byte
	ki          int32
}

// batch is the per-request state of ingest and the otlpwire.Handler that
// maps decoded OTLP onto store series. Batches are pooled; one request
// uses one batch at a time. Everything it keeps between points is scratch
// that is reused, so points of series that already exist cost no
// allocation. Its state is grouped by scope, each group reset where its
// scope begins: the request (getBatch, reset), the resource (Resource),
// the scope (Scope), the metric (Metric), the point (point); the caches
// outlive requests.
type batch struct {
	r          *Receiver
	st         *store.Store
	app        store.Appender // the request's appends; finish commits them
	minT, maxT int64          // the sample times accepted, from the request's clock
	out        outcome        // what the request reports (finish)

	walker otlpwire.Walker
	pd     pdataScratch
	res    resourceCtx
	scope  scopeCtx
	met    metricCtx
	pt     pointCtx
	stg    stage // samples waiting to be appended (stage.go)
	cache  labelCache
}

// resourceCtx is the current resource's labels and hash.
type resourceCtx struct {
	lbls   []slabel            // sorted by name; ki 1 = overwrite (job, instance)
	sorted []otlpwire.KeyValue // the attributes sorted by key, for resGet
	arena  []byte
	hash   uint64
	bad    reason        // rejects every point of the resource
	digest xxhash.Digest // hashing scratch of Resource and Scope
}

// scopeCtx is the current scope's hash.
type scopeCtx struct {
	sorted   []otlpwire.KeyValue
	arena    []byte
	hash     uint64
	bad      reason   // attribute_too_deep for every point of the scope
	idSuffix [16]byte // the resource and scope hashes, hashed into every identity
}

// metricCtx is the current metric's type and names.
type metricCtx struct {
	skip     bool // its points are not mapped (rejected as a whole)
	kind     kind
	mtype    otlpwire.MetricType
	delta    bool // delta temporality (--otlp-delta=ingest)
	names    *nameEntry
	otlpName []byte
	touched  [numVariants]bool // variants reported to OnIngest already
	rawCtx   uint64            // context of raw attribute keys (rawKey)
}

// pointCtx is the current point's labels and identity, and their scratch.
// lbls is the point's final sorted label set without __name__; hbuf holds
// the same labels flattened for hashing, then the resource and scope
// hashes.
type pointCtx struct {
	cur       *otlpwire.Point
	built     bool   // lbls holds cur's labels
	base      uint64 // hash of cur's labels and context
	start     int64  // cur's start time in ms for cumulative series, else 0
	attrLbls  []slabel
	lbls      []slabel
	hbuf      []byte
	arena     []byte
	builder   labels.ScratchBuilder
	key       []byte // le, quantile and name-cache keys
	kbuf      []byte // attrKey and rawContext input
	ibuf      []byte // identity input: base, then a series name
	ibufName  string // the name ibuf holds after its base
	staleRefs []store.SeriesRef
}

// labelCache holds translations that repeat across points and requests;
// bounded, and per batch so they need no lock.
type labelCache struct {
	names map[string]*nameEntry
	// points memoises the label pipeline: a hash of the point's raw
	// attributes in their context (resource, scope, metric kind) maps to
	// the hash of the resulting label set, or to the rejection it causes.
	// A repeat point then costs one hash and one map lookup instead of
	// sanitising, sorting and merging its labels. A 64-bit collision is
	// the same risk class as the 64-bit series identity the store keys on.
	points map[uint64]pointEntry
	hits   int // over the current window of cacheWindow lookups
	looks  int
	off    int // points left to process without the cache
}

// outcome is what a request reports: its counters, the partial success
// and the metrics it touched.
type outcome struct {
	touchedIDs []uint32
	aliasIDs   []uint32 // legacy-alias metric IDs of touchedIDs' names
	accepted   int
	rejected   [numReasons]int
	examples   [numReasons]string
	total      int            // rejected points
	filtered   filteredCounts // points the ingest filter did not store (admit.go)
	nonFinite  int
	expHist    int
	newestT    int64 // newest accepted-looking sample time, for the lag histogram
}

// pointCacheSize bounds labelCache.points: about 40 B per entry, so 650 KB per
// batch at most.
const pointCacheSize = 1 << 14

type pointEntry struct {
	base   uint64
	reject reason
}

func newBatch() *batch {
	return &batch{cache: labelCache{
		names:  make(map[string]*nameEntry),
		points: make(map[uint64]pointEntry),
	}}
}

func (b *batch) reset(r *Receiver) {
	b.app.Commit() // counts left by a request that panicked before finish
	b.r, b.st, b.app = r, r.store, r.store.Appender()
	now := r.now().UnixMilli()
	b.maxT = now + futureLimitMs
	b.minT = now - r.store.Retention().Milliseconds()
	b.out = outcome{touchedIDs: b.out.touchedIDs[:0], aliasIDs: b.out.aliasIDs[:0]}
	b.met.skip = true
}

func (b *batch) reject(r reason, n int, example func() string) {
	if n <= 0 {
		return
	}
	b.out.rejected[r] += n
	b.out.total += n
	if b.out.examples[r] == "" && example != nil {
		b.out.examples[r] = example()
	}
}

// --- resource and scope ---

// k8sPromoted are resource attributes offered as labels under short names
// when the point has no such label (interfaces.md).
var k8sPromoted = [...]struct{ attr, label string }{
	{"k8s.namespace.name", "namespace"},
	{"k8s.pod.name", "pod"},
	{"k8s.deployment.name", "deployment"},
}

// Resource implements otlpwire.Handler.
func (b *batch) Resource(attrs []otlpwire.KeyValue) {
	b.flush()
	b.res.arena = b.res.arena[:0]
	b.res.lbls = b.res.lbls[:0]
	b.res.bad = reasonNone
	b.res.sorted, b.res.hash = b.hashAttrs(attrs, b.res.sorted, &b.res.arena)
	if name, ok := b.resGet("service.name"); ok {
		job := name
		if ns, ok := b.resGet("service.namespace"); ok {
			start := len(b.res.arena)
			b.res.arena = append(b.res.arena, ns...)
			b.res.arena = append(b.res.arena, '/')
			b.res.arena = append(b.res.arena, name...)
			job = b.res.arena[start:]
		}
		b.addResLabel(slabel{name: nameJob, value: job, ki: 1})
	}
	if v, ok := b.resGet("service.instance.id"); ok {
		b.addResLabel(slabel{name: nameInstance, value: v, ki: 1})
	}
	for _, p := range k8sPromoted {
		if v, ok := b.resGet(p.attr); ok {
			b.addResLabel(slabel{name: unsafeBytes(p.label), value: v})
		}
	}
	for i, attr := range b.r.cfg.PromoteResourceAttributes {
		if b.r.promotedNames[i] == "" {
			continue
		}
		if v, ok := b.resGet(attr); ok {
			b.addResLabel(slabel{name: unsafeBytes(b.r.promotedNames[i]), value: v})
		}
	}
	for _, l := range b.res.lbls {
		if !utf8.Valid(l.value) {
			b.res.bad = reasonInvalidUTF8
		}
	}
	if tooDeep(attrs) {
		b.res.bad = reasonAttributeTooDeep
	}
}

// tooDeep reports whether an attribute value nests deeper than
// otlpwire.MaxValueDepth.
func tooDeep(attrs []otlpwire.KeyValue) bool {
	for i := range attrs {
		if attrs[i].Value.Kind == otlpwire.KindTooDeep {
			return true
		}
	}
	return false
}

// addResLabel inserts l into the sorted b.res.lbls; the first label of a
// name wins (job and instance come first).
func (b *batch) addResLabel(l slabel) {
	i, found := slices.BinarySearchFunc(b.res.lbls, l.name, func(x slabel, n []byte) int { return bytes.Compare(x.name, n) })
	if !found {
		b.res.lbls = slices.Insert(b.res.lbls, i, l)
	}
}

// resGet renders the first resource attribute named key (as
// pcommon.Map.Get finds it); b.res.sorted is sorted stably by key.
func (b *batch) resGet(key string) ([]byte, bool) {
	for i := range b.res.sorted {
		if string(b.res.sorted[i].Key) == key {
			return b.valueString(&b.res.sorted[i].Value, &b.res.arena), true
		}
	}
	return nil, false
}

// hashAttrs hashes attributes in key order (stable, so duplicates keep
// their order) and returns them sorted in dst.
func (b *batch) hashAttrs(attrs, dst []otlpwire.KeyValue, arena *[]byte) ([]otlpwire.KeyValue, uint64) {
	dst = append(dst[:0], attrs...)
	slices.SortStableFunc(dst, func(x, y otlpwire.KeyValue) int { return bytes.Compare(x.Key, y.Key) })
	d := &b.res.digest
	d.Reset()
	for i := range dst {
		kv := &dst[i]
		_, _ = d.Write(kv.Key)
		_, _ = d.Write(sepFF)
		start := len(*arena)
		v := b.valueString(&kv.Value, arena)
		_, _ = d.Write(v)
		_, _ = d.Write(sepFE)
		*arena = (*arena)[:start] // label values are re-rendered on demand
	}
	return dst, d.Sum64()
}

var (
	nameJob      = []byte("job")
	nameInstance = []byte("instance")
)

// Separators in identity hashes: bytes that never occur in valid UTF-8.
var (
	sepFF = []byte{0xff}
	sepFE = []byte{0xfe}
)

// Scope implements otlpwire.Handler.
func (b *batch) Scope(name, version []byte, attrs []otlpwire.KeyValue) {
	b.flush()
	// Scope attributes are hashed with their own sorted copy; keep the
	// resource's sorted attributes intact for promotion lookups.
	b.scope.arena = b.scope.arena[:0]
	b.scope.bad = reasonNone
	if tooDeep(attrs) {
		b.scope.bad = reasonAttributeTooDeep
	}
	var ah uint64
	b.scope.sorted, ah = b.hashAttrs(attrs, b.scope.sorted, &b.scope.arena)
	d := &b.res.digest
	d.Reset()
	_, _ = d.Write(name)
	_, _ = d.Write(sepFF)
	_, _ = d.Write(version)
	_, _ = d.Write(sepFF)
	var u [8]byte
	putU64(u[:], ah)
	_, _ = d.Write(u[:])
	b.scope.hash = d.Sum64()
	putU64(b.scope.idSuffix[:8], b.res.hash)
	putU64(b.scope.idSuffix[8:], b.scope.hash)
}

// --- metric ---

// Metric implements otlpwire.Handler.
func (b *batch) Metric(m *otlpwire.Metric, points int) bool {
	b.flush()
	b.met.skip = true
	b.met.mtype = m.Type
	b.met.delta = m.Temporality == 1
	b.met.touched = [numVariants]bool{}
	b.met.otlpName = m.Name
	n := max(points, 1)
	var k kind
	var mt otlptranslator.MetricType
	switch m.Type {
	case otlpwire.TypeGauge:
		k, mt = kindGauge, otlptranslator.MetricTypeGauge
	case otlpwire.TypeSum:
		if r := b.temporality(m.Temporality); r != reasonNone {
			b.reject(r, points, b.metricExample)
			return false
		}
		k, mt = kindGauge, otlptranslator.MetricTypeNonMonotonicCounter
		if m.Monotonic {
			k, mt = kindCounter, otlptranslator.MetricTypeMonotonicCounter
		}
	case otlpwire.TypeHistogram, otlpwire.TypeExponentialHistogram:
		if r := b.temporality(m.Temporality); r != reasonNone {
			b.reject(r, points, b.metricExample)
			return false
		}
		k, mt = kindHistogram, otlptranslator.MetricTypeHistogram
		if m.Type == otlpwire.TypeExponentialHistogram {
			k, mt = kindExpHistogram, otlptranslator.MetricTypeExponentialHistogram
		}
	case otlpwire.TypeSummary:
		k, mt = kindSummary, otlptranslator.MetricTypeSummary
	default:
		b.reject(reasonUnsupportedType, n, b.metricExample)
		return false
	}
	if points == 0 {
		return false
	}
	e := b.metricNames(m.Name, m.Unit, k, mt)
	if e.reject != reasonNone {
		b.reject(e.reject, points, b.metricExample)
		return false
	}
	if b.res.bad != reasonNone {
		b.reject(b.res.bad, points, b.metricExample)
		return false
	}
	if b.scope.bad != reasonNone {
		b.reject(b.scope.bad, points, b.metricExample)
		return false
	}
	if b.r.filter != nil && !b.admit(e, m.Name, k, points) {
		return false
	}
	b.met.kind, b.met.names, b.met.skip = k, e, false
	b.met.rawCtx = b.rawContext()
	return true
}

func (b *batch) temporality(t int32) reason {
	switch t {
	case 2: // cumulative
		return reasonNone
	case 1: // delta
		if b.r.cfg.IngestDelta {
			return reasonNone
		}
		return reasonDeltaTemporality
	default:
		return reasonInvalidTemporality
	}
}

func (b *batch) metricExample() string { return exampleString(b.met.otlpName) }

// metricNames returns the cached translation of a metric name (§5).
func (b *batch) metricNames(name, unit []byte, k kind, mt otlptranslator.MetricType) *nameEntry {
	b.pt.key = append(b.pt.key[:0], byte(k), byte(mt))
	b.pt.key = append(b.pt.key, unit...)
	b.pt.key = append(b.pt.key, 0)
	b.pt.key = append(b.pt.key, name...)
	if e, ok := b.cache.names[string(b.pt.key)]; ok {
		return e
	}
	e := &nameEntry{}
	switch {
	case !utf8.Valid(name) || !utf8.Valid(unit):
		e.reject = reasonInvalidUTF8
	case len(name) > b.r.cfg.MaxMetricNameLength:
		e.reject = reasonNameTooLong
	case len(name) == 0:
		e.reject = reasonEmptyName
	default:
		namer := otlptranslator.MetricNamer{WithMetricSuffixes: true}
		n, err := namer.Build(otlptranslator.Metric{Name: string(name), Unit: string(unit), Type: mt})
		if err != nil || n == "" {
			e.reject = reasonEmptyName
			break
		}
		switch k {
		case kindHistogram:
			e.names = [numVariants]string{n + "_bucket", n + "_count", n + "_sum"}
		case kindExpHistogram:
			e.names = [numVariants]string{n, n + "_count", n + "_sum"}
		case kindSummary:
			e.names = [numVariants]string{n, n + "_count", n + "_sum"}
		default:
			e.names[variantMain] = n
		}
		b.registerAliases(e, name, k)
	}
	if len(b.cache.names) >= nameCacheSize {
		clear(b.cache.names)
	}
	b.cache.names[string(b.pt.key)] = e
	return e
}

// --- points ---

// Point implements otlpwire.Handler.
func (b *batch) Point(p *otlpwire.Point) {
	if b.met.skip {
		return
	}
	if r := b.point(p); r != reasonNone {
		// Earlier points first, so rejections are recorded in request
		// order.
		b.flushKeep(p)
		b.reject(r, 1, b.pointExample)
		return
	}
	b.endPoint()
	if !p.Raw {
		b.flush() // its attributes are not kept past this call (stage.go)
	}
}

func (b *batch) pointExample() string {
	if !b.pt.built {
		// A cached point or an early rejection: render the labels now
		// (left empty when the labels themselves are what is wrong).
		b.pt.built = b.pointLabels(b.pt.cur.Attributes()) == reasonNone
	}
	s := b.met.names.names[variantMain]
	if s == "" {
		s = b.met.names.names[variantCount]
	}
	if len(b.pt.lbls) > 0 {
		var sb []byte
		sb = append(sb, s...)
		sb = append(sb, '{')
		for i, l := range b.pt.lbls {
			if i > 0 {
				sb = append(sb, ',')
			}
			sb = append(sb, l.name...)
			sb = append(sb, '=')
			sb = strconv.AppendQuote(sb, string(truncate(l.value, 64)))
			if len(sb) > 200 {
				sb = append(sb, "..."...)
				break
			}
		}
		sb = append(sb, '}')
		return exampleString(sb)
	}
	return exampleString([]byte(s))
}

func (b *batch) point(p *otlpwire.Point) reason {
	b.pt.cur, b.pt.built = p, false
	b.pt.lbls = b.pt.lbls[:0]
	if p.Time == 0 {
		return reasonMissingTimestamp
	}
	t := int64(p.Time / 1e6) // truncated to ms, as Prometheus does
	if t > b.maxT {
		return reasonTooFarInFuture
	}
	if t < b.minT {
		return reasonTooOld
	}
	b.out.newestT = max(b.out.newestT, t)
	stale := p.Flags&1 != 0 // NoRecordedValue
	b.pt.start = 0
	if p.StartTime != 0 && !stale && b.met.kind != kindGauge {
		// §9.3: recorded for cumulative series; one after T is ignored.
		if st := int64(p.StartTime / 1e6); st <= t {
			b.pt.start = st
		}
	}
	var v float64
	if !stale {
		if r := b.validate(p, &v); r != reasonNone {
			return r
		}
	}
	b.pt.arena = b.pt.arena[:0]
	var e pointEntry
	var key uint64
	ok, useCache := false, b.useCache()
	if useCache {
		if p.Raw {
			key = b.rawKey(p.RawAttrs)
		} else {
			key = b.attrKey(p.Attrs)
		}
		if e, ok = b.cache.points[key]; ok {
			b.cache.hits++
		}
	}
	if !ok {
		if e.reject = b.pointLabels(p.Attributes()); e.reject == reasonNone {
			b.pt.built = true
			// hbuf holds the labels; the identity adds resource and scope.
			b.pt.hbuf = append(b.pt.hbuf, b.scope.idSuffix[:]...)
			e.base = xxhash.Sum64(b.pt.hbuf)
		}
		if useCache {
			if len(b.cache.points) >= pointCacheSize {
				clear(b.cache.points)
			}
			b.cache.points[key] = e
		}
	}
	if e.reject != reasonNone {
		return e.reject
	}
	b.pt.base = e.base
	b.stagePoint(p, t, v, stale)
	return reasonNone
}

// stagePoint stages the samples of the current point p (stage.go), whose
// labels are mapped and whose value fields are valid.
func (b *batch) stagePoint(p *otlpwire.Point, t int64, v float64, stale bool) {
	switch b.met.kind {
	case kindGauge, kindCounter:
		if stale {
			v = staleNaN
		}
		b.stageSample(p, variantMain, nil, t, v, stale)
	case kindHistogram:
		b.stageHistogram(p, t, stale)
	case kindExpHistogram:
		b.out.expHist++
		c, s := float64(p.Count), p.Sum
		if stale {
			c, s = staleNaN, staleNaN
		}
		b.makeRoom(p, 3)
		b.stageSample(p, variantCount, nil, t, c, stale)
		if p.HasSum || stale {
			b.stageSample(p, variantSum, nil, t, s, stale)
		}
		b.stageNativeHistogram(p, t, stale)
	case kindSummary:
		if stale {
			// A flagged point lists no quantiles: end every one held.
			b.staleFamily(p, t)
		}
		b.makeRoom(p, len(p.Quantiles)+2)
		for _, q := range p.Quantiles {
			qv := q.Value
			if stale {
				qv = staleNaN
			}
			b.pt.key = labels.AppendOpenMetricsFloat(b.pt.key[:0], q.Quantile)
			b.stageSample(p, variantMain, b.pt.key, t, qv, stale)
		}
		c, s := float64(p.Count), p.Sum
		if stale {
			c, s = staleNaN, staleNaN
		}
		b.stageSample(p, variantSum, nil, t, s, stale)
		b.stageSample(p, variantCount, nil, t, c, stale)
	}
}

// staleNaN is the value of a staleness marker.
var staleNaN = math.Float64frombits(value.StaleNaN)

func firstReason(a, b reason) reason {
	if a != reasonNone {
		return a
	}
	return b
}

// validate checks a point's value fields and sets v for number points.
func (b *batch) validate(p *otlpwire.Point, v *float64) reason {
	switch b.met.kind {
	case kindGauge, kindCounter:
		switch p.NumberKind {
		case otlpwire.NumberDouble:
			*v = p.Double
		case otlpwire.NumberInt:
			*v = float64(p.Int)
		default:
			return reasonMissingValue
		}
		if math.IsNaN(*v) || math.IsInf(*v, 0) {
			b.out.nonFinite++
		}
	case kindHistogram:
		if len(p.BucketCounts) != 0 && len(p.BucketCounts) != len(p.Bounds)+1 {
			return reasonInvalidHistogram
		}
		for i, bd := range p.Bounds {
			if math.IsNaN(bd) || math.IsInf(bd, 0) || (i > 0 && bd <= p.Bounds[i-1]) {
				return reasonInvalidHistogram
			}
		}
		if len(p.BucketCounts) > 0 {
			var sum uint64
			for _, c := range p.BucketCounts {
				if sum+c < sum {
					return reasonInvalidHistogram
				}
				sum += c
			}
			if sum != p.Count {
				return reasonInvalidHistogram
			}
		}
	case kindSummary:
		for _, q := range p.Quantiles {
			if !(q.Quantile >= 0 && q.Quantile <= 1) {
				return reasonInvalidHistogram
			}
		}
	}
	return reasonNone
}

// seriesID is the identity hash of the series named by variant (plus le
// or quantile when extra is set) with the current point's labels and
// context.
func (b *batch) seriesID(variant int, extra []byte) uint64 {
	return b.identity(b.met.names.names[variant], extra)
}

// identity hashes the current point's base (labels and context) with the
// series name, plus 0xfd and extra when extra is set. Consecutive points
// of one metric hash the same name, so when b.pt.ibuf already holds it only
// the base is rewritten; the bytes hashed, and so the identities the
// store and its snapshots key on, are the same either way.
func (b *batch) identity(name string, extra []byte) uint64 {
	// Invariant: b.pt.ibuf is the 8-byte base followed by b.pt.ibufName, or
	// b.pt.ibufName is "" and b.pt.ibuf is longer than 8 bytes (it holds an
	// extra) or empty.
	if extra == nil && len(b.pt.ibuf) == 8+len(name) && b.pt.ibufName == name {
		binary.LittleEndian.PutUint64(b.pt.ibuf, b.pt.base)
		return xxhash.Sum64(b.pt.ibuf)
	}
	h := binary.LittleEndian.AppendUint64(b.pt.ibuf[:0], b.pt.base)
	h = append(h, name...)
	b.pt.ibufName = name
	if extra != nil {
		h = append(h, 0xfd)
		h = append(h, extra...)
		b.pt.ibufName = ""
	}
	b.pt.ibuf = h
	return xxhash.Sum64(h)
}

// ensureLabels fills b.pt.lbls for the current point if a cache hit skipped
// it; it succeeds because it did when the entry was cached.
func (b *batch) ensureLabels() {
	if !b.pt.built {
		b.pointLabels(b.pt.cur.Attributes())
		b.pt.built = true
	}
}

// touch notes the metric of variant as touched by the request (OnIngest),
// once per metric, and its legacy alias with it.
func (b *batch) touch(variant int, ref store.SeriesRef) {
	b.met.touched[variant] = true
	if mid, ok := b.st.SeriesMetricID(ref); ok && !slices.Contains(b.out.touchedIDs, mid) {
		b.out.touchedIDs = append(b.out.touchedIDs, mid)
		b.refreshAliases(b.met.names)
		if b.met.names.hasAlias[variant] {
			// Kept apart so the scan above stays over stored names;
			// finish reports both. Once per stored name and request.
			b.out.aliasIDs = append(b.out.aliasIDs, b.met.names.aliases[variant])
		}
	}
}

// buildLabels builds the series' label set; called only for new series.
func (b *batch) buildLabels(name string, extra []byte) labels.Labels {
	bl := &b.pt.builder
	bl.Reset()
	bl.Add(model.MetricNameLabel, name)
	for _, l := range b.pt.lbls {
		bl.Add(string(l.name), string(l.value))
	}
	if extra != nil {
		ln := "le"
		if b.met.kind == kindSummary {
			ln = "quantile"
		}
		bl.Add(ln, string(extra))
	}
	bl.Sort()
	return bl.Labels()
}

func appendReason(err error) reason {
	switch {
	case errors.Is(err, store.ErrOutOfOrder):
		return reasonOutOfOrder
	case errors.Is(err, store.ErrDuplicateTimestamp):
		return reasonDuplicateTimestamp
	case errors.Is(err, store.ErrTooOld):
		return reasonTooOld
	case errors.Is(err, store.ErrSeriesLimit):
		return reasonSeriesLimit
	case errors.Is(err, store.ErrSeriesPerMetricLimit):
		return reasonSeriesPerMetricLimit
	case errors.Is(err, store.ErrTooManyLabels):
		return reasonTooManyLabels
	case errors.Is(err, store.ErrLabelNameTooLong):
		return reasonLabelNameTooLong
	case errors.Is(err, store.ErrLabelValueTooLong):
		return reasonLabelValueTooLong
	default:
		// ErrUnknownSeries: the series was deleted between Lookup and
		// Append (retention sweep); the sender's retry re-creates it.
		return reasonOutOfOrder
	}
}

// Adaptive use of labelCache.points: when fewer than a quarter of a window's
// lookups hit (far more distinct label sets per batch than the cache
// holds, e.g. 1M series), the cache only costs a hash and an insert per
// point, so it is bypassed for cacheBackoff points and then tried again.
const (
	cacheWindow  = 4096
	cacheBackoff = 1 << 16
)

func (b *batch) useCache() bool {
	if b.cache.off > 0 {
		b.cache.off--
		return false
	}
	if b.cache.looks++; b.cache.looks >= cacheWindow {
		if b.cache.hits*4 < b.cache.looks {
			b.cache.off = cacheBackoff
		}
		b.cache.hits, b.cache.looks = 0, 0
	}
	return true
}

// --- labels ---

// attrKey hashes a point's attributes as decoded (length-prefixed keys,
// value kinds and values) with the context the label pipeline depends on:
// the resource (its labels), the scope (identity) and the metric kind
// (which drops le or quantile).
func (b *batch) attrKey(attrs []otlpwire.KeyValue) uint64 {
	k := b.pt.kbuf[:0]
	k = append(k, byte(b.met.kind))
	k = binary.LittleEndian.AppendUint64(k, b.res.hash)
	k = binary.LittleEndian.AppendUint64(k, b.scope.hash)
	for i := range attrs {
		kv := &attrs[i]
		k = binary.LittleEndian.AppendUint32(k, uint32(len(kv.Key)))
		k = append(k, kv.Key...)
		k = append(k, byte(kv.Value.Kind))
		switch kv.Value.Kind {
		case otlpwire.KindInt:
			k = binary.LittleEndian.AppendUint64(k, uint64(kv.Value.Int))
		case otlpwire.KindDouble:
			k = binary.LittleEndian.AppendUint64(k, math.Float64bits(kv.Value.Double))
		case otlpwire.KindBool:
			if kv.Value.Bool {
				k = append(k, 1)
			} else {
				k = append(k, 0)
			}
		case otlpwire.KindEmpty:
		default:
			k = binary.LittleEndian.AppendUint32(k, uint32(len(kv.Value.Str)))
			k = append(k, kv.Value.Str...)
		}
	}
	b.pt.kbuf = k
	return xxhash.Sum64(k)
}

// rawContext hashes what rawKey's keys depend on besides the attribute
// bytes: the resource, the scope and the metric kind (which fixes the
// attribute field number and drops le or quantile). A leading 0xff keeps
// its keys apart from attrKey's, whose first byte is a kind.
func (b *batch) rawContext() uint64 {
	b.pt.kbuf = append(b.pt.kbuf[:0], 0xff, byte(b.met.kind))
	b.pt.kbuf = binary.LittleEndian.AppendUint64(b.pt.kbuf, b.res.hash)
	b.pt.kbuf = binary.LittleEndian.AppendUint64(b.pt.kbuf, b.scope.hash)
	return xxhash.Sum64(b.pt.kbuf)
}

// rawKey is attrKey for a point that carries its encoded attributes
// (otlpwire.Point.RawAttrs): byte-identical spans decode to identical
// attributes, so their hash, combined with the context, keys labelCache.points
// without decoding anything. XOR with the context is a bijection for a
// fixed context, so two keys collide only when the 64-bit hashes do. The
// hash is the runtime's (AES-based where the CPU has it, about 3× faster
// than xxhash here) with a per-process random seed, so a sender cannot
// aim for collisions; cache keys, unlike series identities, are never
// stored, so their values may differ between processes.
func (b *batch) rawKey(raw []byte) uint64 { return maphash.Bytes(rawSeed, raw) ^ b.met.rawCtx }

// rawSeed seeds rawKey's hash for the life of the process.
var rawSeed = maphash.MakeSeed()

// pointLabels fills b.pt.lbls with the point's sorted label set without
// __name__ (§8), and b.pt.hbuf with the same labels flattened for hashing:
// sanitised attribute names, colliding names joined with ";" in key
// order, job/instance overwriting, promoted resource attributes added when
// absent, empty values dropped, limits checked. It is one sort of the
// point's attributes and one merge with the resource's sorted labels.
func (b *batch) pointLabels(attrs []otlpwire.KeyValue) reason {
	cfg := &b.r.cfg
	b.pt.lbls = b.pt.lbls[:0]
	al := b.pt.attrLbls[:0]
	for i := range attrs {
		kv := &attrs[i]
		if kv.Value.Kind == otlpwire.KindTooDeep {
			return reasonAttributeTooDeep
		}
		if !utf8.Valid(kv.Key) {
			return reasonInvalidUTF8
		}
		name, ok := b.labelName(kv.Key)
		if !ok {
			return reasonInvalidLabelName
		}
		if string(name) == model.MetricNameLabel ||
			(b.met.kind == kindHistogram && string(name) == "le") ||
			(b.met.kind == kindSummary && string(name) == "quantile") {
			continue // generated labels win (§6)
		}
		val := b.valueString(&kv.Value, &b.pt.arena)
		if kv.Value.Kind == otlpwire.KindStr && !utf8.Valid(val) {
			return reasonInvalidUTF8
		}
		al = append(al, slabel{name: name, value: val, ki: int32(i)})
	}
	b.pt.attrLbls = al
	if len(al) <= 16 {
		// Insertion sort by name, then original key: a handful of labels.
		for i := 1; i < len(al); i++ {
			for j := i; j > 0 && labelLess(&al[j], &al[j-1], attrs); j-- {
				al[j], al[j-1] = al[j-1], al[j]
			}
		}
	} else {
		slices.SortFunc(al, func(x, y slabel) int {
			if labelLess(&x, &y, attrs) {
				return -1
			}
			if labelLess(&y, &x, attrs) {
				return 1
			}
			return 0
		})
	}
	out, res, hb := b.pt.lbls[:0], b.res.lbls, b.pt.hbuf[:0]
	emit := func(out []slabel, hb []byte, name, val []byte) ([]slabel, []byte) {
		if len(val) == 0 {
			return out, hb
		}
		out = append(out, slabel{name: name, value: val})
		hb = append(hb, name...)
		hb = append(hb, 0xff)
		hb = append(hb, val...)
		return out, append(hb, 0xfe)
	}
	j := 0
	for i := 0; i < len(al); {
		name, val := al[i].name, al[i].value
		k := i + 1
		for ; k < len(al) && bytes.Equal(al[k].name, name); k++ {
			if bytes.Equal(attrs[al[k].ki].Key, attrs[al[k-1].ki].Key) {
				return reasonDuplicateLabel
			}
			start := len(b.pt.arena)
			b.pt.arena = append(b.pt.arena, val...)
			b.pt.arena = append(b.pt.arena, ';')
			b.pt.arena = append(b.pt.arena, al[k].value...)
			val = b.pt.arena[start:]
		}
		i = k
		for ; j < len(res) && bytes.Compare(res[j].name, name) < 0; j++ {
			out, hb = emit(out, hb, res[j].name, res[j].value)
		}
		if j < len(res) && bytes.Equal(res[j].name, name) {
			if res[j].ki == 1 {
				val = res[j].value
			}
			j++
		}
		out, hb = emit(out, hb, name, val)
	}
	for ; j < len(res); j++ {
		out, hb = emit(out, hb, res[j].name, res[j].value)
	}
	b.pt.lbls, b.pt.hbuf = out, hb
	if len(out) > cfg.MaxLabelsPerSeries {
		return reasonTooManyLabels
	}
	for i := range out {
		if len(out[i].name) > cfg.MaxLabelNameLength {
			return reasonLabelNameTooLong
		}
		if len(out[i].value) > cfg.MaxLabelValueLength {
			return reasonLabelValueTooLong
		}
	}
	return reasonNone
}

// labelLess orders point labels by sanitised name, then by original key,
// so colliding names join in key order (Prometheus sorts by key first).
func labelLess(x, y *slabel, attrs []otlpwire.KeyValue) bool {
	if c := bytes.Compare(x.name, y.name); c != 0 {
		return c < 0
	}
	return bytes.Compare(attrs[x.ki].Key, attrs[y.ki].Key) < 0
}

// labelName sanitises an attribute key (§8.1) exactly as otlptranslator's
// LabelNamer with Prometheus's defaults (UnderscoreLabelSanitization,
// PreserveMultipleUnderscores): every rune outside [a-zA-Z0-9_] becomes
// "_", a leading digit gets "key_", a leading single "_" gets "key", and a
// result made only of underscores is invalid. Keys that are already valid
// are returned as they are; others are written to the point arena.
// TestLabelNameMatchesOTLPTranslator checks the equivalence.
func (b *batch) labelName(key []byte) ([]byte, bool) {
	if validLabelName(key) {
		return key, true
	}
	if len(key) == 0 {
		return nil, false
	}
	start := len(b.pt.arena)
	b.pt.arena = append(b.pt.arena, "key"...)
	body := len(b.pt.arena)
	for i := 0; i < len(key); {
		c := key[i]
		if c < utf8.RuneSelf {
			if !isLabelChar(c) {
				c = '_'
			}
			b.pt.arena = append(b.pt.arena, c)
			i++
			continue
		}
		_, size := utf8.DecodeRune(key[i:])
		b.pt.arena = append(b.pt.arena, '_')
		i += size
	}
	n := b.pt.arena[body:]
	switch {
	case n[0] >= '0' && n[0] <= '9':
		// "key_" + n: open a byte after "key".
		b.pt.arena = append(b.pt.arena, 0)
		copy(b.pt.arena[body+1:], b.pt.arena[body:len(b.pt.arena)-1])
		b.pt.arena[body] = '_'
		return b.pt.arena[start:], true
	case n[0] == '_' && (len(n) == 1 || n[1] != '_'):
		return b.pt.arena[start:], true // "key" + n
	}
	for _, c := range n {
		if c != '_' {
			return n, true
		}
	}
	return nil, false
}

func isLabelChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// validLabelName reports whether LabelNamer would return key unchanged.
func validLabelName(key []byte) bool {
	if len(key) == 0 || key[0] >= '0' && key[0] <= '9' {
		return false
	}
	if key[0] == '_' && (len(key) == 1 || key[1] != '_') {
		return false
	}
	onlyUnderscores := true
	for _, c := range key {
		switch {
		case c == '_':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			onlyUnderscores = false
		default:
			return false
		}
	}
	return !onlyUnderscores
}

// valueString renders an attribute value as pcommon.Value.AsString does,
// appending to *arena when it has to format.
func (b *batch) valueString(v *otlpwire.AnyValue, arena *[]byte) []byte {
	start := len(*arena)
	switch v.Kind {
	case otlpwire.KindStr, otlpwire.KindPreformatted:
		return v.Str
	case otlpwire.KindInt:
		*arena = strconv.AppendInt(*arena, v.Int, 10)
	case otlpwire.KindDouble:
		*arena = appendFloatAsString(*arena, v.Double)
	case otlpwire.KindBool:
		*arena = strconv.AppendBool(*arena, v.Bool)
	case otlpwire.KindBytes:
		*arena = base64.StdEncoding.AppendEncode(*arena, v.Str)
	case otlpwire.KindArray, otlpwire.KindMap:
		*arena = append(*arena, nestedValueString(v)...)
	default:
		return nil
	}
	return (*arena)[start:]
}

// appendFloatAsString formats like pcommon's float64AsString (ES6 number
// to string).
func appendFloatAsString(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	}
	abs := math.Abs(f)
	fmt := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		fmt = 'e'
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, fmt, -1, 64)
	if fmt == 'e' {
		n := len(dst) - start
		b := dst[start:]
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			dst = dst[:len(dst)-1]
		}
	}
	return dst
}

func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return b[:n]
}

// exampleString makes a partial-success example: valid UTF-8 (the message
// is a proto string) and short.
func exampleString(b []byte) string {
	s := string(truncate(b, 200))
	return toValidUTF8(s)
}

func toValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	out := make([]rune, 0, len(s))
	for _, r := range s {
		out = append(out, r) // invalid bytes decode as utf8.RuneError
	}
	return string(out)
}

func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func putU64(b []byte, v uint64) {
	_ = b[7]
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}
