package query

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// sample is one element of an intermediate instant vector.
type sample struct {
	lset labels.Labels
	// t is the sample's own timestamp for selector output (timestamp()
	// needs it) and the evaluation time otherwise.
	t int64
	f float64
	// h is the element's native histogram, nil for a float (then f is
	// the value). It belongs to the node that produced the element
	// (hist.go).
	h *histogram.FloatHistogram
	// drop marks the element for delayed __name__ removal (§4.9): the
	// metadata labels stay until Plan.Eval produces the final result.
	drop bool
	// ref is the stored series the element is the value of: a selector's
	// element, and what element-wise paths make of it keeping its labels
	// (range functions, vector-scalar arithmetic and filters, functions,
	// sort, topk/bottomk/limitk). It is zero for an element that is no one
	// series' (an aggregation's, a vector-vector operation's, a
	// subquery's, one label_replace/label_join rewrote). EvalRange keys a
	// series by its labels and ref, so hidden twins (otlp-contract.md
	// §8.3) keep their own points when only one has a value at a step;
	// zero falls back to order. It sits in drop's padding: sample does
	// not grow.
	ref store.SeriesRef
}

type vector []sample

// evaluator carries the per-Eval state: context, budget and the query's
// time frame.
type evaluator struct {
	ctx        context.Context
	maxSamples int64
	maxSeries  int
	samples    int64
	// start and end are the query's first and last step (equal for an
	// instant query) and interval its step (1 ms for an instant query, as
	// in Prometheus's engine): @ start()/end() and subquery alignment
	// depend on them. scope identifies the query: per-query caches
	// (step-invariant results, subquery matrices) hold while it is the
	// same.
	start, end, interval int64
	scope                uint64
	// dupLabels is set when a node produced two elements with the same
	// labels that are not hidden twins (histogram_quantiles with a
	// repeated q): they may not share a step of a range query's result.
	dupLabels bool
	// labels counts the bytes of label sets created so far (chargeLabels);
	// maxLabels is its budget.
	labels, maxLabels int64
	// checkAt is the sample count at which charge must look closer: the
	// next context check (nextCtx) or one past the budget.
	checkAt, nextCtx int64
	// rd fixes the store's clock for the whole evaluation (read once, on
	// first use, instead of once per series); rdOK tells it is set.
	rd   store.Reader
	rdOK bool
}

// reader returns the evaluation's store Reader. A plan reads one store.
func (ev *evaluator) reader(st *store.Store) store.Reader {
	if !ev.rdOK {
		ev.rd, ev.rdOK = st.Reader(), true
	}
	return ev.rd
}

// ctxCheckEvery bounds the work between two context checks.
const ctxCheckEvery = 4096

// charge accounts n touched series or samples against the budget and
// checks the context every ctxCheckEvery units. The common case is one
// compare, inlined.
func (ev *evaluator) charge(n int) error {
	ev.samples += int64(n)
	if ev.samples >= ev.checkAt {
		return ev.chargeSlow()
	}
	return nil
}

// chargeSlow runs when the samples reach checkAt: the budget is exceeded,
// a context check is due, or this is the first charge (checkAt 0).
func (ev *evaluator) chargeSlow() error {
	if ev.samples > ev.maxSamples {
		return fmt.Errorf("%w: more than %d series and samples in one evaluation", ErrBudgetExceeded, ev.maxSamples)
	}
	if ev.nextCtx == 0 {
		ev.nextCtx = ctxCheckEvery
	}
	var err error
	if ev.samples >= ev.nextCtx {
		ev.nextCtx = ev.samples + ctxCheckEvery
		err = ctxErr(ev.ctx)
	}
	ev.checkAt = ev.nextCtx
	if ev.maxSamples < ev.checkAt {
		ev.checkAt = ev.maxSamples + 1
	}
	return err
}

// chargeLabels accounts n bytes of label sets about to be created. It runs
// before the allocation, so a query whose labels grow fails once the
// budget is spent instead of after the memory is taken.
func (ev *evaluator) chargeLabels(n int64) error {
	ev.labels += n
	if ev.labels > ev.maxLabels {
		return ev.labelBudgetError()
	}
	return nil
}

// chargeLabelSet accounts the label set that setting dst to a value of
// valueLen bytes on base creates: at most base's encoded size plus the new
// name and value and their length prefixes.
func (ev *evaluator) chargeLabelSet(base labels.Labels, dst string, valueLen int64) error {
	if valueLen > MaxLabelValueBytes {
		return fmt.Errorf("%w: the query would create a %d-byte value of label %q, longer than %d bytes", ErrBudgetExceeded, valueLen, dst, MaxLabelValueBytes)
	}
	return ev.chargeLabels(int64(base.ByteSize()) + int64(len(dst)) + valueLen + 8)
}

func (ev *evaluator) labelBudgetError() error {
	return fmt.Errorf("%w: the query would create more than %d bytes of labels in one evaluation (label_replace, label_join, count_values, histogram_quantiles)", ErrBudgetExceeded, ev.maxLabels)
}

// node is one operator of a compiled plan. Vector nodes implement eval and
// scalar nodes implement scalar; the compiler only wires a node where its
// type fits, which the parser's type checks guarantee. A returned vector is
// owned by the node and valid until its next eval.
type node interface {
	valueType() parser.ValueType
	eval(ev *evaluator, t int64) (vector, error)
	scalar(ev *evaluator, t int64) (float64, error)
}

var errNodeType = errors.New("query: internal error: node evaluated as the wrong type")

type vectorNode struct{}

func (vectorNode) valueType() parser.ValueType { return parser.ValueTypeVector }
func (vectorNode) scalar(*evaluator, int64) (float64, error) {
	return 0, errNodeType
}

type scalarNode struct{}

func (scalarNode) valueType() parser.ValueType { return parser.ValueTypeScalar }
func (scalarNode) eval(*evaluator, int64) (vector, error) {
	return nil, errNodeType
}

type numNode struct {
	scalarNode
	v float64
}

func (n *numNode) scalar(*evaluator, int64) (float64, error) { return n.v, nil }

type timeNode struct{ scalarNode }

func (*timeNode) scalar(_ *evaluator, t int64) (float64, error) { return float64(t) / 1000, nil }

type negScalarNode struct {
	scalarNode
	child node
}

func (n *negScalarNode) scalar(ev *evaluator, t int64) (float64, error) {
	v, err := n.child.scalar(ev, t)
	return -v, err
}

type scalarBinNode struct {
	scalarNode
	op       parser.ItemType
	lhs, rhs node
}

func (n *scalarBinNode) scalar(ev *evaluator, t int64) (float64, error) {
	l, err := n.lhs.scalar(ev, t)
	if err != nil {
		return 0, err
	}
	r, err := n.rhs.scalar(ev, t)
	if err != nil {
		return 0, err
	}
	v, keep := binop(n.op, l, r)
	if n.op.IsComparisonOperator() {
		// Scalar comparisons always carry bool (the parser insists).
		return btos(keep), nil
	}
	return v, nil
}

// scalarFnNode is scalar(v): the single element's value, else NaN.
type scalarFnNode struct {
	scalarNode
	child node
}

func (n *scalarFnNode) scalar(ev *evaluator, t int64) (float64, error) {
	in, err := n.child.eval(ev, t)
	if err != nil {
		return 0, err
	}
	// The single float, histograms ignored (funcScalar).
	v, found := math.NaN(), false
	for _, s := range in {
		if s.h != nil {
			continue
		}
		if found {
			return math.NaN(), nil
		}
		v, found = s.f, true
	}
	return v, nil
}

// seriesSet caches the refs (and labels) a selector matched. It selects
// again only when the store's generation moves, and when the new match is
// the same refs with the same labels (the common case: a series of another
// metric came or went) it keeps everything as is, without sorting or
// allocating. Refs are kept sorted by labels, the order Prometheus's storage
// returns series in, so tie-breaking (sort, topk) matches; hidden twins
// (equal labels) are ordered by ref (compareSeries).
type seriesSet struct {
	store    *store.Store
	matchers []*labels.Matcher

	gen uint64
	// refs and lsets are the matched series, sorted by labels; handles
	// are their resolved series, re-resolved whenever the generation
	// moves (store.Handle's invariant), so evaluation does no table
	// lookup per series.
	refs    []store.SeriesRef
	lsets   []labels.Labels
	handles []store.Handle
	// hasHist is set when a series of the set is a histogram series
	// (store.Handle.Histograms): nodes then take their histogram-aware
	// paths instead of the float-only fast paths.
	hasHist bool
	// sel and selLsets are the last Select result in the store's order
	// and the labels each ref had then.
	sel      []store.SeriesRef
	selLsets []labels.Labels
	scratch  []store.SeriesRef
	created  []store.SeriesRef
	idx      []int
	rebuilds int // how often the match changed, for tests
	// version changes whenever refs and lsets change, so consumers can
	// cache what they derive per series (aggNode's group indices).
	version int
	// incremental counts refreshes answered from the store's creation log
	// (only new series checked), for tests.
	incremental int
}

func (s *seriesSet) refresh(ev *evaluator) error {
	g := s.store.Generation()
	if g == s.gen {
		return s.check(ev)
	}
	if s.gen != ^uint64(0) {
		// Only series created since (no deletion, no log overflow):
		// check just those (issue #5). Handles stay valid: no series was
		// deleted.
		var ok bool
		if s.created, g, ok = s.store.CreatedSince(s.created[:0], s.gen); ok {
			if err := s.addCreated(ev); err != nil {
				return err
			}
			s.gen = g
			return s.check(ev)
		}
	}
	// Read the generation before selecting: a series created meanwhile
	// makes the next Eval select again rather than be missed. Matching
	// honours the context: a regular expression can cost up to its
	// program's size times a value's length per series, uncharged, so a
	// hostile selector over many series stops at the deadline. On error
	// nothing here changed but scratch, and gen makes the next Eval select
	// again.
	var err error
	if s.scratch, err = s.store.SelectContext(ev.ctx, s.scratch[:0], s.matchers...); err != nil {
		return err
	}
	if s.unchanged() {
		s.resolve()
		s.gen = g
		return s.check(ev)
	}
	s.rebuilds++
	s.version++
	s.sel = append(s.sel[:0], s.scratch...)
	s.selLsets = s.selLsets[:0]
	for _, r := range s.sel {
		s.selLsets = append(s.selLsets, s.store.Labels(r))
	}
	s.idx = s.idx[:0]
	for i := range s.sel {
		s.idx = append(s.idx, i)
	}
	slices.SortFunc(s.idx, func(a, b int) int { return compareSeries(s.selLsets[a], s.selLsets[b], s.sel[a], s.sel[b]) })
	s.refs, s.lsets = s.refs[:0], s.lsets[:0]
	for _, j := range s.idx {
		s.refs = append(s.refs, s.sel[j])
		s.lsets = append(s.lsets, s.selLsets[j])
	}
	s.resolve()
	s.gen = g
	return s.check(ev)
}

// compareSeries orders series by labels and hidden twins (equal labels,
// see twins) by ref, so twins keep one order from one evaluation to the
// next and a range query can tell them apart step by step.
func compareSeries(a, b labels.Labels, ra, rb store.SeriesRef) int {
	if c := labels.Compare(a, b); c != 0 {
		return c
	}
	return cmp.Compare(ra, rb)
}

// resolve re-resolves the handles of refs. A ref that was deleted and
// re-created since the last selection names a new series, so this runs on
// every generation change, not only when the match changed.
func (s *seriesSet) resolve() {
	s.handles = s.handles[:0]
	s.hasHist = false
	for _, r := range s.refs {
		h := s.store.Handle(r)
		s.handles = append(s.handles, h)
		s.hasHist = s.hasHist || h.Histograms()
	}
}

// addCreated adds the series of created that match and are not in the
// selection yet (a series created while the last Select ran may be in
// both), keeping sel in ascending ref order and refs in label order. It
// changes nothing when matching stops on the context.
func (s *seriesSet) addCreated(ev *evaluator) error {
	var err error
	if s.scratch, err = s.store.FilterContext(ev.ctx, s.scratch[:0], s.created, s.matchers...); err != nil {
		return err
	}
	for _, r := range s.scratch {
		i, found := slices.BinarySearch(s.sel, r)
		if found {
			continue
		}
		l := s.store.Labels(r)
		s.sel = slices.Insert(s.sel, i, r)
		s.selLsets = slices.Insert(s.selLsets, i, l)
		j := sort.Search(len(s.lsets), func(k int) bool { return compareSeries(s.lsets[k], l, s.refs[k], r) > 0 })
		s.refs = slices.Insert(s.refs, j, r)
		s.lsets = slices.Insert(s.lsets, j, l)
		h := s.store.Handle(r)
		s.handles = slices.Insert(s.handles, j, h)
		s.hasHist = s.hasHist || h.Histograms()
		s.rebuilds++
		s.version++
	}
	s.incremental++
	return nil
}

// unchanged reports whether scratch holds the same refs, with the same
// labels, as the last selection. A deleted series' ref can be reused by a
// new series, hence the labels check (a pointer comparison when equal).
func (s *seriesSet) unchanged() bool {
	if s.gen == ^uint64(0) || len(s.scratch) != len(s.sel) {
		return false
	}
	for i, r := range s.scratch {
		if r != s.sel[i] || !labels.Equal(s.store.Labels(r), s.selLsets[i]) {
			return false
		}
	}
	return true
}

func (s *seriesSet) check(ev *evaluator) error {
	if ev.maxSeries > 0 && len(s.refs) > ev.maxSeries {
		return fmt.Errorf("%w: a selector matched %d series, more than %d", ErrBudgetExceeded, len(s.refs), ev.maxSeries)
	}
	return ev.charge(len(s.refs))
}

// selectorNode is an instant vector selector (§4.1): per series the newest
// sample in (t−offset−lookback, t−offset], absent when it is a stale marker.
type selectorNode struct {
	vectorNode
	set      *seriesSet
	offset   int64
	at       *atMod // nil without @
	lookback int64
	out      vector
	hp       hpool // the histograms it read
	// statsOnly: its histograms keep only their count and sum
	// (statsHistogram).
	statsOnly bool
}

// ref is the selector's reference time at step t: t-offset, or what the
// @ modifier fixed for the query.
func (n *selectorNode) ref(t int64) int64 {
	if n.at != nil {
		return n.at.refAt(t)
	}
	return t - n.offset
}

func (n *selectorNode) eval(ev *evaluator, t int64) (vector, error) {
	n.out = n.out[:0]
	err := n.stream(ev, t, (*vectorSink)(&n.out))
	return n.out, err
}

func (*selectorNode) canStream() bool { return true }

func (n *selectorNode) stream(ev *evaluator, t int64, dst sink) error {
	if err := n.set.refresh(ev); err != nil {
		return err
	}
	ref := n.ref(t)
	rd := ev.reader(n.set.store)
	if n.set.hasHist {
		return n.streamHist(ev, rd, ref, dst)
	}
	for i, h := range n.set.handles {
		s, ok := rd.Latest(h, ref)
		if !ok || s.T <= ref-n.lookback || value.IsStaleNaN(s.V) {
			continue
		}
		dst.add(sample{lset: n.set.lsets[i], t: s.T, f: s.V, ref: n.set.refs[i]})
	}
	return nil
}

// streamHist is stream over a set with histogram series: a histogram
// sample is copied into the node's pool and charged at its size, as
// Prometheus charges a histogram point (histCost).
func (n *selectorNode) streamHist(ev *evaluator, rd store.Reader, ref int64, dst sink) error {
	n.hp.reset()
	for i, h := range n.set.handles {
		fh := n.hp.get()
		s, isHist, ok := rd.LatestHistogram(h, ref, fh)
		if !ok || s.T <= ref-n.lookback || !isHist && value.IsStaleNaN(s.V) {
			n.hp.n--
			continue
		}
		if !isHist {
			n.hp.n--
			dst.add(sample{lset: n.set.lsets[i], t: s.T, f: s.V, ref: n.set.refs[i]})
			continue
		}
		if err := ev.charge(histCost(fh) - 1); err != nil {
			return err
		}
		if n.statsOnly {
			statsHistogram(fh)
		}
		dst.add(sample{lset: n.set.lsets[i], t: s.T, h: fh, ref: n.set.refs[i]})
	}
	return nil
}

// errHistFallback tells an aggregation that a float-only fast path met a
// histogram series: it evaluates its child the general way instead. The
// fast path has refunded what it charged.
var errHistFallback = errors.New("query: internal: histogram series on a float fast path")

// refundSet undoes the charge of a set's refresh (seriesSet.check), for a
// fast path that gives way to the general one.
func refundSet(ev *evaluator, s *seriesSet) error {
	ev.samples -= int64(len(s.refs))
	return errHistFallback
}

// sum is stream into a sumSink without the sink interface and the
// per-element sample: sum(x)'s hot loop.
func (n *selectorNode) sum(ev *evaluator, t int64, acc *sumSink) error {
	if err := n.set.refresh(ev); err != nil {
		return err
	}
	if n.set.hasHist {
		return refundSet(ev, n.set)
	}
	ref := n.ref(t)
	rd := ev.reader(n.set.store)
	// The sum stays in locals: sumSink.addValue, by hand (kahanInc is too
	// big to inline; calling it costs 1.4 % more instructions per
	// evaluation: BenchmarkEval/expr=sum/series=1000, 570k against 578k,
	// callgrind).
	sum, c, cnt := acc.f, acc.c, acc.n
	for _, h := range n.set.handles {
		s, ok := rd.Latest(h, ref)
		if !ok || s.T <= ref-n.lookback || value.IsStaleNaN(s.V) {
			continue
		}
		if f := s.V; cnt == 0 {
			sum = f
		} else {
			ns := sum + f
			switch {
			case math.IsInf(ns, 0):
				c = 0
			case math.Abs(sum) >= math.Abs(f):
				c += (sum - ns) + f
			default:
				c += (f - ns) + sum
			}
			sum = ns
		}
		cnt++
	}
	acc.f, acc.c, acc.n = sum, c, cnt
	return nil
}

// sumGroups is stream into agg's groupedSum: sum by/without's hot loop.
func (n *selectorNode) sumGroups(ev *evaluator, t int64, agg *aggNode) error {
	if err := n.set.refresh(ev); err != nil {
		return err
	}
	if n.set.hasHist {
		return refundSet(ev, n.set)
	}
	g := &agg.gsum
	g.prepare(agg, n.set)
	ref := n.ref(t)
	rd := ev.reader(n.set.store)
	for i, h := range n.set.handles {
		s, ok := rd.Latest(h, ref)
		if !ok || s.T <= ref-n.lookback || value.IsStaleNaN(s.V) {
			continue
		}
		g.add(i, s.V, false)
	}
	return nil
}

// sink receives a node's elements one by one, in order.
type sink interface{ add(s sample) }

// streamNode is a node that can hand its elements to a sink instead of
// returning a vector; aggregations use it to skip the intermediate vector.
type streamNode interface {
	canStream() bool
	stream(ev *evaluator, t int64, dst sink) error
}

// vectorSink appends to a vector.
type vectorSink vector

func (v *vectorSink) add(s sample) { *v = append(*v, s) }

type negVectorNode struct {
	vectorNode
	child node
	out   vector
	hp    hpool
}

func (n *negVectorNode) eval(ev *evaluator, t int64) (vector, error) {
	in, err := n.child.eval(ev, t)
	if err != nil {
		return nil, err
	}
	n.out = n.out[:0]
	n.hp.reset()
	for _, s := range in {
		if s.h != nil {
			// Mul by -1 makes it a gauge, as upstream's Copy().Mul(-1).
			n.out = append(n.out, sample{lset: s.lset, t: t, h: n.hp.copyOf(s.h).Mul(-1), drop: true, ref: s.ref})
			continue
		}
		n.out = append(n.out, sample{lset: s.lset, t: t, f: -s.f, drop: true, ref: s.ref})
	}
	return n.out, nil
}

// kahanInc is Prometheus's Kahan-Babuska-Neumaier step (util/kahansum).
func kahanInc(inc, sum, c float64) (newSum, newC float64) {
	// The explicit conversions forbid fusing across the call, as upstream.
	inc, sum, c = float64(inc), float64(sum), float64(c) //nolint:unconvert // see above
	t := sum + inc
	switch {
	case math.IsInf(t, 0):
		c = 0
	case math.Abs(sum) >= math.Abs(inc):
		c += (sum - t) + inc
	default:
		c += (inc - t) + sum
	}
	return float64(t), float64(c) //nolint:unconvert // see above
}

func btos(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// binop is vectorElemBinop for floats: the value and, for comparisons,
// whether the element is kept (the value is then the left operand).
func binop(op parser.ItemType, l, r float64) (float64, bool) {
	switch op {
	case parser.ADD:
		return l + r, true
	case parser.SUB:
		return l - r, true
	case parser.MUL:
		return l * r, true
	case parser.DIV:
		return l / r, true
	case parser.POW:
		return math.Pow(l, r), true
	case parser.MOD:
		return math.Mod(l, r), true
	case parser.ATAN2:
		return math.Atan2(l, r), true
	case parser.EQLC:
		return l, l == r
	case parser.NEQ:
		return l, l != r
	case parser.GTR:
		return l, l > r
	case parser.LSS:
		return l, l < r
	case parser.GTE:
		return l, l >= r
	case parser.LTE:
		return l, l <= r
	}
	return math.NaN(), false
}

// changesMetricSchema is true for the operators whose result is no longer
// the same metric (Prometheus's changesMetricSchema).
func changesMetricSchema(op parser.ItemType) bool {
	switch op {
	case parser.ADD, parser.SUB, parser.DIV, parser.MUL, parser.POW, parser.MOD, parser.ATAN2:
		return true
	}
	return false
}

// posCache memoizes a value derived from an element's labels (a grouping
// hash, a signature, a parsed le) by the element's position in a child's
// output. Between evaluations a child usually returns the same series in
// the same order, and labels.Equal on the same label set is a pointer
// comparison, so a hit costs a few ns against 30–50 ns for hashing. A miss
// just recomputes. Entries are overwritten in place, so once sized the
// cache allocates nothing.
type posCache[V any] struct {
	lsets []labels.Labels
	vals  []V
}

func (c *posCache[V]) get(i int, l labels.Labels) (V, bool) {
	if i < len(c.lsets) && labels.Equal(c.lsets[i], l) {
		return c.vals[i], true
	}
	var zero V
	return zero, false
}

func (c *posCache[V]) put(i int, l labels.Labels, v V) {
	for len(c.lsets) <= i {
		c.lsets = append(c.lsets, labels.EmptyLabels())
		c.vals = append(c.vals, v)
	}
	c.lsets[i], c.vals[i] = l, v
}
