package query

import (
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
)

// What a plan keeps between evaluations
//
// Every node keeps the buffers its largest evaluation needed (output
// vectors, selected refs, store handles, label caches, hash maps, pooled
// histograms), so that a warm plan evaluates without allocating. That
// working set grows with the series an evaluation touches, not with the
// query's text, so a cache that bounds plans by their compiled size alone
// is bounded by the data, not by its configuration. RetainedBytes measures
// it and Trim drops it.
//
// RetainedBytes walks the plan's nodes by reflection, so a buffer added to
// a node later is counted without anyone remembering to: every slice
// counts its capacity times its element size, every map an estimate of its
// table (by its largest length, since a cleared map keeps its table), and
// the walk descends into the elements of a slice only when they own memory
// of their own (a subquery's series, a pool's histograms), so for the
// common shapes it visits the nodes and not the series. What the walk
// does not own it does not count: label sets selected from the store
// (the store holds them), matchers and regular expressions (the static
// cost, pkg/scaler's triggerCost, counts those), strings (query texts,
// static too). Label sets the plan creates (label_replace, label_join,
// count_values, histogram_quantiles, aggregation group labels) are
// counted by the bytes the last evaluation charged to the label budget
// plus an allowance per cached group label set (labelCacheEntry).
// TestRetainedBytesBoundsHeap checks the estimate against the heap a plan
// holds after evaluations of each shape.

// labelCacheEntry is the allowance for one label set a group-label cache
// (a map with labels.Labels values) created: the label set's string and
// its allocation rounding, for the short label sets groupings keep.
const labelCacheEntry = 96

var (
	labelsType    = reflect.TypeFor[labels.Labels]()
	histType      = reflect.TypeFor[histogram.FloatHistogram]()
	histPtrType   = reflect.TypeFor[*histogram.FloatHistogram]()
	queryPkgPath  = reflect.TypeFor[Plan]().PkgPath()
	sampleType    = reflect.TypeFor[sample]()
	outSampleType = reflect.TypeFor[Sample]()
	// ownsCache memoises ownsMemory by type; it is filled once per type
	// for the life of the process (a bounded set: the package's types).
	ownsCache sync.Map // reflect.Type → bool
)

// walkable reports whether the walk descends into values of type t when it
// is reached through a pointer or an interface: this package's types and
// the histograms the plan pools. Other packages' values (the store, its
// handles and readers, matchers, regular expressions, contexts) are not
// the plan's to count.
func walkable(t reflect.Type) bool {
	return t == histType || t.PkgPath() == queryPkgPath
}

// borrowed reports whether t's pointers refer to memory that another part
// of the plan owns: vector elements point at the histograms of the node
// that produced them, which that node's pool counts.
func borrowed(t reflect.Type) bool { return t == sampleType || t == outSampleType }

// ownsMemory reports whether a value of type t, beyond its own size, can
// hold memory the walk counts, so a slice of t must be walked element by
// element.
func ownsMemory(t reflect.Type) bool {
	if v, ok := ownsCache.Load(t); ok {
		return v.(bool)
	}
	o := ownsMemoryOf(t, map[reflect.Type]bool{})
	ownsCache.Store(t, o)
	return o
}

func ownsMemoryOf(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] || t == labelsType || borrowed(t) {
		return false
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Slice, reflect.Map:
		return true
	case reflect.Pointer:
		return walkable(t.Elem())
	case reflect.Interface:
		return true
	case reflect.Array:
		return ownsMemoryOf(t.Elem(), seen)
	case reflect.Struct:
		if t.PkgPath() != "" && !walkable(t) {
			return false
		}
		for i := range t.NumField() {
			if ownsMemoryOf(t.Field(i).Type, seen) {
				return true
			}
		}
	}
	return false
}

// retainedWalker is the state of one RetainedBytes walk; the plan keeps it
// so that a warm walk allocates nothing.
type retainedWalker struct {
	seen  map[unsafe.Pointer]struct{}
	bytes int64 // slices, structs behind pointers, histograms
	maps  int64 // map tables at their current length
}

// RetainedBytes estimates the bytes the plan keeps between evaluations
// beyond its compiled form: the working set its nodes grew to. It walks
// the plan's nodes (not its series, for selector, aggregation, binary and
// range-function shapes), allocates nothing once warm, and must not run
// concurrently with Eval or EvalRange (the caller serialises, as for
// Eval). Trim drops what it counts.
func (p *Plan) RetainedBytes() int64 {
	n := p.walk() - p.base
	if n < 0 {
		n = 0
	}
	// What the walk cannot see (allocation rounding, the odd small
	// buffer outside the nodes) measured 0–2% above the walk
	// (TestRetainedBytesBoundsHeap): a margin of 1/16.
	return n + n/16
}

// walk returns what the plan's nodes hold now, their own structs included;
// Compile records it for the fresh plan as base, since the compiled size
// is the static cost's to count.
func (p *Plan) walk() int64 {
	w := &p.walker
	if w.seen == nil {
		w.seen = map[unsafe.Pointer]struct{}{}
	}
	clear(w.seen)
	w.bytes, w.maps = 0, 0
	w.walkValue(reflect.ValueOf(p.root))
	for i := range p.timing {
		w.walkValue(reflect.ValueOf(&p.timing[i]).Elem())
	}
	w.bytes += int64(cap(p.out))*int64(unsafe.Sizeof(Sample{})) + int64(cap(p.scalarOut))*int64(unsafe.Sizeof(sample{}))
	w.maps += mapBytes(reflect.ValueOf(p.dup))
	// Maps keep their table when cleared; their largest size is what
	// they hold.
	p.mapPeak = max(p.mapPeak, w.maps)
	// Label sets the last evaluation created are held by the vectors
	// that carry them; the walker's own set has one entry per node.
	return w.bytes + p.mapPeak + p.ev.labels + mapEstimate(len(w.seen), int(unsafe.Sizeof(unsafe.Pointer(nil))))
}

// walkValue adds what v refers to beyond its own size (which its
// container counted).
func (w *retainedWalker) walkValue(v reflect.Value) {
	t := v.Type()
	if t == labelsType || !v.IsValid() {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() || !walkable(t.Elem()) {
			return
		}
		if t == histPtrType {
			// Each histogram has one owner (a pool, a subquery's
			// points), so histograms need no deduplication.
			w.bytes += histBytes((*histogram.FloatHistogram)(v.UnsafePointer()))
			return
		}
		ptr := v.UnsafePointer()
		if _, ok := w.seen[ptr]; ok {
			return
		}
		w.seen[ptr] = struct{}{}
		w.bytes += int64(t.Elem().Size())
		w.walkValue(v.Elem())
	case reflect.Interface:
		if !v.IsNil() {
			w.walkValue(v.Elem())
		}
	case reflect.Struct:
		if borrowed(t) || (t.PkgPath() != "" && !walkable(t)) {
			return
		}
		for i := range v.NumField() {
			w.walkValue(v.Field(i))
		}
	case reflect.Array:
		if ownsMemory(t.Elem()) {
			for i := range v.Len() {
				w.walkValue(v.Index(i))
			}
		}
	case reflect.Slice:
		c := v.Cap()
		if c == 0 {
			return
		}
		et := t.Elem()
		w.bytes += int64(c) * int64(et.Size())
		if !ownsMemory(et) {
			return
		}
		base := v.UnsafePointer()
		if et == histPtrType { // a pool: typed, it is the common large case
			for _, h := range unsafe.Slice((**histogram.FloatHistogram)(base), c) {
				if h != nil {
					w.bytes += histBytes(h)
				}
			}
			return
		}
		// Elements past the length keep what earlier evaluations gave
		// them (a reused slot's buffers), so walk to the capacity.
		for i := range c {
			w.walkValue(reflect.NewAt(et, unsafe.Add(base, uintptr(i)*et.Size())).Elem())
		}
	case reflect.Map:
		w.maps += mapBytes(v)
	}
}

// histBytes is a histogram's struct and its span and bucket arrays.
func histBytes(h *histogram.FloatHistogram) int64 {
	const span, f = int64(unsafe.Sizeof(histogram.Span{})), int64(unsafe.Sizeof(float64(0)))
	return int64(unsafe.Sizeof(*h)) + span*int64(cap(h.PositiveSpans)+cap(h.NegativeSpans)) +
		f*int64(cap(h.PositiveBuckets)+cap(h.NegativeBuckets)+cap(h.CustomValues))
}

// mapBytes estimates a map's table at its current length, with an
// allowance per entry for created label sets it holds.
func mapBytes(v reflect.Value) int64 {
	if v.IsNil() {
		return 0
	}
	t := v.Type()
	n := mapEstimate(v.Len(), int(t.Key().Size()+t.Elem().Size()))
	if t.Elem() == labelsType {
		n += int64(v.Len()) * labelCacheEntry
	}
	return n
}

// mapEstimate is the size of a Go map (swiss tables: groups of 8 slots
// with a control byte each, at most 7/8 full, capacity a power of two)
// holding n entries of slot bytes, at its largest before it grows again.
func mapEstimate(n, slot int) int64 {
	const header = 48
	if n == 0 {
		return header
	}
	c := 8
	for c*7/8 < n {
		c *= 2
	}
	return header + int64(c)*int64(slot+1)
}

// Trim drops the working set the plan's nodes keep between evaluations
// (RetainedBytes), by replacing its nodes with freshly compiled ones: the
// plan answers exactly as before, and its next evaluation allocates its
// buffers again. The compiled form (text, names, window, budgets) is
// unchanged, so readers of those need no synchronisation with Trim; Trim
// itself must not run concurrently with Eval.
func (p *Plan) Trim() error {
	if p.engine == nil {
		return nil
	}
	expr, err := p.engine.parser.ParseExpr(p.text)
	if err != nil {
		return fmt.Errorf("trim: re-parse %q: %w", clipText(p.text, MaxQueryEcho), err)
	}
	fresh, err := p.engine.Compile(expr, p.opts)
	if err != nil {
		return fmt.Errorf("trim: re-compile: %w", err)
	}
	p.root, p.timing = fresh.root, fresh.timing
	p.ev = evaluator{}
	p.out, p.dup, p.scalarOut = nil, nil, nil
	p.mapPeak = 0
	p.walker = retainedWalker{}
	p.base = fresh.base
	return nil
}
