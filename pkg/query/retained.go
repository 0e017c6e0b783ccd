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

// A walkProg says how to count what a value of one type holds beyond its
// own size, compiled once per type (progFor) so that the walk reads
// memory directly instead of going through reflect per field: the walk
// runs after every evaluation.
type walkProg struct {
	kind progKind
	typ  reflect.Type // progMap, progIface: to read the value by reflect
	// progStruct: the fields that hold something.
	fields []fieldProg
	// progSlice, progArray, progPtr: the element (or pointee) and its
	// size; elem is nil when the element holds nothing beyond its size.
	elem  *walkProg
	esize uintptr
	n     int // progArray: its length
	// progMap: the bytes of one key and value, and whether the values
	// are label sets the plan created.
	slot   int
	labels bool
}

type fieldProg struct {
	off uintptr
	p   *walkProg
}

type progKind uint8

const (
	progStruct progKind = iota
	progSlice
	progHistSlice
	progArray
	progPtr
	progHistPtr
	progMap
	progIface
)

var (
	progMu    sync.Mutex
	progCache sync.Map // reflect.Type → *walkProg (nil: the type holds nothing)
)

// progFor returns the walk program of t, or nil when a value of t holds
// nothing the walk counts beyond its own size. The set of types is the
// package's, so the cache is bounded.
func progFor(t reflect.Type) *walkProg {
	if v, ok := progCache.Load(t); ok {
		return v.(*walkProg)
	}
	progMu.Lock()
	defer progMu.Unlock()
	return buildProg(t, map[reflect.Type]*walkProg{})
}

// buildProg builds t's program under progMu; building holds the struct
// programs under construction, so recursive types refer to themselves.
func buildProg(t reflect.Type, building map[reflect.Type]*walkProg) *walkProg {
	if v, ok := progCache.Load(t); ok {
		return v.(*walkProg)
	}
	if p, ok := building[t]; ok {
		return p
	}
	var p *walkProg
	switch {
	case t == labelsType || borrowed(t):
	case t.Kind() == reflect.Slice:
		if t.Elem() == histPtrType {
			p = &walkProg{kind: progHistSlice}
		} else {
			p = &walkProg{kind: progSlice, esize: t.Elem().Size(), elem: buildProg(t.Elem(), building)}
		}
	case t.Kind() == reflect.Map:
		p = &walkProg{kind: progMap, typ: t, slot: int(t.Key().Size() + t.Elem().Size()), labels: t.Elem() == labelsType}
	case t.Kind() == reflect.Pointer:
		switch {
		case t == histPtrType:
			p = &walkProg{kind: progHistPtr}
		case walkable(t.Elem()):
			p = &walkProg{kind: progPtr, esize: t.Elem().Size()}
			building[t] = p
			p.elem = buildProg(t.Elem(), building)
		}
	case t.Kind() == reflect.Interface:
		p = &walkProg{kind: progIface, typ: t}
	case t.Kind() == reflect.Array:
		if e := buildProg(t.Elem(), building); e != nil {
			p = &walkProg{kind: progArray, elem: e, esize: t.Elem().Size(), n: t.Len()}
		}
	case t.Kind() == reflect.Struct && (t.PkgPath() == "" || walkable(t)):
		sp := &walkProg{kind: progStruct}
		building[t] = sp
		for i := range t.NumField() {
			f := t.Field(i)
			if fp := buildProg(f.Type, building); fp != nil {
				sp.fields = append(sp.fields, fieldProg{off: f.Offset, p: fp})
			}
		}
		// A struct that holds nothing has no program (a recursive
		// user may keep the empty one, which walks nothing).
		if len(sp.fields) > 0 {
			p = sp
		}
	}
	progCache.Store(t, p)
	return p
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

var (
	nodeProg   = progFor(reflect.TypeFor[node]())
	timingProg = progFor(reflect.TypeFor[[]timingItem]())
)

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
	w.walk(unsafe.Pointer(&p.root), nodeProg)
	w.walk(unsafe.Pointer(&p.timing), timingProg)
	w.bytes += int64(cap(p.out))*int64(unsafe.Sizeof(Sample{})) + int64(cap(p.scalarOut))*int64(unsafe.Sizeof(sample{}))
	w.maps += mapBytes(reflect.ValueOf(p.dup))
	// Maps keep their table when cleared; their largest size is what
	// they hold.
	p.mapPeak = max(p.mapPeak, w.maps)
	// Label sets the last evaluation created are held by the vectors
	// that carry them; the walker's own set has one entry per node.
	return w.bytes + p.mapPeak + p.ev.labels + mapEstimate(len(w.seen), int(unsafe.Sizeof(unsafe.Pointer(nil))))
}

// sliceHeader is a slice's header as the runtime lays it out.
type sliceHeader struct {
	data     unsafe.Pointer
	len, cap int
}

// walk adds what the value of prog's type at a holds beyond its own size
// (which its container counted).
func (w *retainedWalker) walk(a unsafe.Pointer, p *walkProg) {
	switch p.kind {
	case progStruct:
		for _, f := range p.fields {
			w.walk(unsafe.Add(a, f.off), f.p)
		}
	case progSlice:
		h := (*sliceHeader)(a)
		if h.cap == 0 {
			return
		}
		w.bytes += int64(h.cap) * int64(p.esize)
		if p.elem == nil {
			return
		}
		// Elements past the length keep what earlier evaluations gave
		// them (a reused slot's buffers), so walk to the capacity.
		for i := range h.cap {
			w.walk(unsafe.Add(h.data, uintptr(i)*p.esize), p.elem)
		}
	case progHistSlice:
		// A pool: each histogram has one owner, so histograms need no
		// deduplication.
		h := (*sliceHeader)(a)
		w.bytes += int64(h.cap) * int64(unsafe.Sizeof((*histogram.FloatHistogram)(nil)))
		for _, fh := range unsafe.Slice((**histogram.FloatHistogram)(h.data), h.cap) {
			if fh != nil {
				w.bytes += histBytes(fh)
			}
		}
	case progArray:
		for i := range p.n {
			w.walk(unsafe.Add(a, uintptr(i)*p.esize), p.elem)
		}
	case progPtr:
		w.walkPtr(*(*unsafe.Pointer)(a), p)
	case progHistPtr:
		if fh := *(**histogram.FloatHistogram)(a); fh != nil {
			w.bytes += histBytes(fh)
		}
	case progMap:
		w.maps += mapBytes(reflect.NewAt(p.typ, a).Elem())
	case progIface:
		v := reflect.NewAt(p.typ, a).Elem()
		if v.IsNil() {
			return
		}
		d := v.Elem()
		if d.Kind() != reflect.Pointer {
			return // the plan stores pointers in its interfaces
		}
		if dp := progFor(d.Type()); dp != nil && dp.kind == progPtr {
			w.walkPtr(d.UnsafePointer(), dp)
		}
	}
}

// walkPtr counts the pointee of a pointer of prog p, once per walk.
func (w *retainedWalker) walkPtr(ptr unsafe.Pointer, p *walkProg) {
	if ptr == nil {
		return
	}
	if _, ok := w.seen[ptr]; ok {
		return
	}
	w.seen[ptr] = struct{}{}
	w.bytes += int64(p.esize)
	if p.elem != nil {
		w.walk(ptr, p.elem)
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
