package query

import (
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// This file holds what depends on the query's time frame rather than on
// one evaluation time: the @ modifier, subqueries and step-invariant
// subexpressions. It follows Prometheus's engine (promql/engine.go) step
// by step, because the observable numbers depend on its mechanics:
//
//   - Prometheus evaluates a query as a range of steps (an instant query is
//     one step at t with interval 1 ms) and a subquery in a child evaluator
//     whose steps are the multiples of the subquery's step in
//     (start-offset-range, end-offset] (subqueryEvaluationTimes): step
//     alignment to absolute time.
//   - An @ modifier becomes an offset relative to the evaluator's start
//     (setOffsetForAtModifier), computed once for the whole query and again
//     for the inside of every subquery whose child evaluator starts
//     elsewhere than its parent.
//   - PreprocessExpr wraps the largest step-invariant subexpressions in
//     StepInvariantExpr, which is evaluated once, at the evaluator's start,
//     and repeated for every step.
//
// We evaluate one step at a time (node.eval(ev, t)). Every value the steps
// above fix per query (the child evaluators' starts and ends, the @
// offsets, the time a step-invariant node is evaluated at) is computed once
// per query by Plan.prepareScope, from the query's start, end and interval,
// walking the plan's timing items in evaluation order; nodes read them from
// their fields. Within one query, a step-invariant node evaluates its child
// once and a subquery keeps the points it has evaluated while its window
// slides forward, so a subquery evaluates its child at each absolute step
// time once per query, as Prometheus's child evaluator does.

// timingItem is a node whose behaviour depends on the query's time frame,
// listed in evaluation order (an enclosing subquery before what it holds).
type timingItem struct {
	sub *subqueryNode
	at  *atMod // a selector's or range selector's @ (a subquery's is sub.at)
	inv *invNode
	hq  *hqNode // histogram_quantiles, which needs to know its evaluator's mode
	// parent is the index of the innermost enclosing subquery's item, or
	// -1 at the top of the query.
	parent int
	// frozen is set when a step-invariant node lies between the item and
	// its parent: its evaluator runs one step (end = start).
	frozen bool
}

// atMod is an @ modifier (`@ <ts>`, `@ start()`, `@ end()`) of a selector,
// range selector or subquery.
type atMod struct {
	ts         int64           // the fixed timestamp, ms, unless startOrEnd is set
	startOrEnd parser.ItemType // parser.START, parser.END or 0
	orig       int64           // the node's original offset, ms
	chain      []int           // timing items of the enclosing subqueries, outermost first
	// perStep is set for a selector inside an aggregation parameter, which
	// Prometheus neither preprocesses nor wraps: it is evaluated at every
	// step with the offset fixed for the query, so it reads at t-off.
	perStep bool
	// atOnly is set for timestamp(sel @ t offset o), which upstream reads
	// at t itself, ignoring the offset.
	atOnly bool

	// Per query (prepareScope).
	at  int64 // the resolved timestamp
	off int64 // Prometheus's adjusted offset
	ref int64 // the window end: the evaluator's start minus off
}

// refAt is the reference time (window end) at step t.
func (a *atMod) refAt(t int64) int64 {
	if a.atOnly {
		return a.at
	}
	if a.perStep {
		return t - a.off
	}
	return a.ref
}

// subqueryEvaluationTimes is Prometheus's: the first and last step of a
// subquery's child evaluator in a parent evaluator (start, end, interval),
// aligned to multiples of the subquery's step. Integer division truncates
// towards zero, as in Go upstream, so the first step is the smallest
// multiple of subqInterval above start-offset-range for any sign.
func subqueryEvaluationTimes(start, end, interval, offset, rangeMillis, subqInterval int64, fixed bool) (int64, int64) {
	if fixed {
		end = start
	} else if interval > 0 {
		end = start + ((end-start)/interval)*interval
	}
	subqStart := subqInterval * ((start - offset - rangeMillis) / subqInterval)
	if subqStart <= start-offset-rangeMillis {
		subqStart += subqInterval
	}
	return subqStart, end - offset
}

// alignUp is the first step of a window (lo, …] on a grid of step: the
// smallest multiple of step above lo, computed as subqueryEvaluationTimes.
func alignUp(lo, step int64) int64 {
	s := step * (lo / step)
	if s <= lo {
		s += step
	}
	return s
}

// prepareScope computes, for the query whose first and last steps are
// start and end with the given interval (1 for an instant query), the
// per-query values of every timing item, as Prometheus's engine fixes
// them before and while it evaluates.
func (p *Plan) prepareScope(ev *evaluator) {
	for i := range p.timing {
		it := &p.timing[i]
		pStart, pEnd, pInterval := ev.start, ev.end, ev.interval
		if it.parent >= 0 {
			ps := p.timing[it.parent].sub
			pStart, pEnd, pInterval = ps.cs, ps.ce, ps.step
		}
		if it.frozen {
			pEnd = pStart
		}
		switch {
		case it.sub != nil:
			s := it.sub
			s.p = pStart
			off := s.offset
			fixed := s.at != nil
			if fixed {
				p.resolveAt(ev, s.at, pStart)
				off = s.at.off
			}
			s.cs, s.ce = subqueryEvaluationTimes(pStart, pEnd, pInterval, off, s.rng, s.step, fixed)
			s.changed = s.cs != pStart
		case it.at != nil:
			p.resolveAt(ev, it.at, pStart)
		case it.inv != nil:
			it.inv.r = pStart
		case it.hq != nil:
			it.hq.rangeMode = pStart != pEnd
		}
	}
}

// resolveAt fixes a's timestamp, offset and reference time for the query,
// for a node evaluated in an evaluator starting at pStart. The offset is
// Prometheus's getOffset in the last setOffsetForAtModifier call that
// covers the node: the one for the innermost enclosing subquery whose
// child evaluator starts elsewhere than its parent's, or the top one.
func (p *Plan) resolveAt(ev *evaluator, a *atMod, pStart int64) {
	a.at = p.atTime(ev, a)
	base, evalTime := -1, ev.start
	for k := len(a.chain) - 1; k >= 0; k-- {
		if s := p.timing[a.chain[k]].sub; s.changed {
			base, evalTime = k, s.cs
			break
		}
	}
	// subqueryTimes over the subqueries between the call's root and the
	// node: their offsets add up; an @ subquery restarts the sum.
	var subqOffset, subqTs int64
	hasTs := false
	for _, i := range a.chain[base+1:] {
		s := p.timing[i].sub
		subqOffset += s.offset
		if s.at != nil {
			subqOffset, subqTs, hasTs = s.offset, s.at.at, true
		}
	}
	if hasTs {
		subqOffset += evalTime - subqTs
	}
	a.off = a.orig + (evalTime - a.at) - subqOffset
	a.ref = pStart - a.off
}

func (*Plan) atTime(ev *evaluator, a *atMod) int64 {
	switch a.startOrEnd {
	case parser.START:
		return ev.start
	case parser.END:
		return ev.end
	}
	return a.ts
}

// invNode is Prometheus's StepInvariantExpr: its child is evaluated once
// per query, at the start of the evaluator it sits in, and that result is
// every step's. The compiler places it where PreprocessExpr would.
type invNode struct {
	child node
	r     int64 // per query: the evaluator's start (prepareScope)

	scope uint64 // the query the cached result belongs to
	vec   vector
	f     float64
	err   error
}

func (n *invNode) valueType() parser.ValueType { return n.child.valueType() }

func (n *invNode) eval(ev *evaluator, _ int64) (vector, error) {
	if n.scope != ev.scope {
		n.scope = ev.scope
		// The child's output buffer is valid until its next eval, which
		// only this node calls, in the next query.
		n.vec, n.err = n.child.eval(ev, n.r)
	}
	return n.vec, n.err
}

func (n *invNode) scalar(ev *evaluator, _ int64) (float64, error) {
	if n.scope != ev.scope {
		n.scope = ev.scope
		n.f, n.err = n.child.scalar(ev, n.r)
	}
	return n.f, n.err
}

// subqueryNode is expr[range:step] offset o (@ ts): the child evaluated at
// every multiple of step in the window, held as a matrix of series keyed
// by their full labels (delayed __name__ dropping keeps the name until
// the end, as Prometheus's range evaluation does).
//
// Within one query the window only moves forward (the steps of a range
// query, the steps of an enclosing subquery), so the node keeps the points
// it has evaluated: points that leave the window are dropped, and the
// child is evaluated only at the new step times. Series stay known for the
// whole query, so a series' drop mark is decided by its first point in the
// query, as Prometheus's child evaluator decides it over its whole range
// (its last point when the child is an aggregation, as there).
type subqueryNode struct {
	child             node
	rng, step, offset int64
	at                *atMod
	dropLast          bool // the child is an aggregation: the last point's drop mark wins

	// Per query (prepareScope).
	p       int64 // the start of the evaluator the subquery sits in
	cs, ce  int64 // its child evaluator's first and last step
	changed bool  // cs != p: Prometheus re-bases the @ offsets inside

	scope  uint64 // the query the matrix belongs to
	series []subqSeries
	byHash map[uint64]int32
	keys   posCache[subqKey]
	gen    uint32 // bumped when the matrix is reset, invalidates keys
	// first and last are the step times the matrix holds (first > last:
	// none).
	first, last int64
	// fused is the range function of a child sum(rate|increase|delta(…)),
	// which evaluates all new steps in one pass (rangeNode.sumSteps);
	// accs and one are its scratch.
	fused *rangeNode
	accs  []sumSink
	one   vector
	// held counts the points all subqueries of the plan hold, against the
	// plan's bound (Options.MaxSubqueryPoints).
	held *heldPoints
	// hfree holds histograms no point uses any more, reused by add: a
	// histogram point owns its copy for as long as it is in the matrix.
	hfree []*histogram.FloatHistogram
}

// getH returns a histogram for a new point.
func (s *subqueryNode) getH() *histogram.FloatHistogram {
	if n := len(s.hfree); n > 0 {
		h := s.hfree[n-1]
		s.hfree = s.hfree[:n-1]
		return h
	}
	return &histogram.FloatHistogram{}
}

// dropH removes the histogram points of sr before index k (all with k
// < 0), returning their histograms to the free list and their cost to
// held.
func (s *subqueryNode) dropH(sr *subqSeries, k int) {
	if k < 0 {
		k = len(sr.hpts)
	}
	for _, p := range sr.hpts[:k] {
		s.held.n -= int64(histCost(p.h))
		s.hfree = append(s.hfree, p.h)
	}
	n := copy(sr.hpts, sr.hpts[k:])
	sr.hpts = sr.hpts[:n]
}

// heldPoints bounds the memory of a plan's subquery matrices: the points
// they hold at once (16 B each), whatever the sample budget allows a step
// to read.
type heldPoints struct{ n, max int64 }

// subqueryRetainPoints is the point capacity (16 B each) a subquery keeps
// between queries, so that a warm plan evaluates without allocating. A
// larger matrix is released when its query ends: a cached trigger or plan
// does not hold a large subquery's memory while it is idle.
const subqueryRetainPoints = 4096

// release frees the matrix's buffers if they exceed subqueryRetainPoints;
// the next query starts afresh (its scope differs).
func (s *subqueryNode) release() {
	c := len(s.hfree)
	all := s.series[:cap(s.series)] // slots of earlier queries keep capacity too
	for i := range all {
		c += cap(all[i].pts) + cap(all[i].hpts)
	}
	if c <= subqueryRetainPoints {
		return
	}
	for i := range s.series {
		s.held.n -= int64(len(s.series[i].pts))
		s.dropH(&s.series[i], -1)
	}
	s.series, s.byHash, s.keys, s.hfree = nil, nil, posCache[subqKey]{}, nil
	s.scope = 0
	s.first, s.last = 1, 0
}

type subqSeries struct {
	lset  labels.Labels
	drop  bool
	lastT int64 // the newest point's time: a second element at it goes on
	// head and next chain the series with the same labels' hash (hidden
	// twins): the first of them, and the next or -1.
	head, next int32
	pts        []store.Sample
	hpts       []hpoint // histogram points, each histogram the matrix's own
}

type subqKey struct {
	h   uint64
	idx int32
	gen uint32
}

// window advances the matrix to the grid window (lo, hi]: afterwards
// every series holds exactly its points in the window. empty reports a
// window without steps (the series then hold stale points to ignore).
func (s *subqueryNode) window(ev *evaluator, lo, hi int64) (empty bool, err error) {
	if s.scope != ev.scope {
		s.scope = ev.scope
		s.reset()
	}
	first := alignUp(lo, s.step)
	if hi < first {
		return true, nil
	}
	steps := (hi-first)/s.step + 1
	if steps <= 0 || steps > ev.maxSamples {
		return false, fmt.Errorf("%w: a subquery of %d steps exceeds the budget of %d samples", ErrBudgetExceeded, steps, ev.maxSamples)
	}
	last := first + (steps-1)*s.step
	k := int64(0)
	if s.first <= s.last && first >= s.first && first <= s.last+s.step && last >= s.last {
		// Slide: keep the points of the overlap.
		k = (s.last + s.step - first) / s.step
		s.trim(first)
	} else {
		s.trim(math.MaxInt64) // nothing held is in the new window
	}
	s.first, s.last = first, last
	if s.fused != nil && k < steps {
		err := s.evalFused(ev, first+k*s.step, int(steps-k))
		if err == nil {
			return false, nil
		}
		if err != errHistFallback { //nolint:errorlint // a sentinel never wrapped
			s.first, s.last = 1, 0
			return false, err
		}
		// Histogram series: step by step below.
	}
	// Counted, so that a step overflowing int64 cannot loop.
	for ; k < steps; k++ {
		if err := s.evalStep(ev, first+k*s.step); err != nil {
			s.first, s.last = 1, 0 // the matrix is incomplete
			return false, err
		}
	}
	return false, nil
}

// evalFused evaluates a sum(rate(…)) child at nsteps steps from t0 in one
// pass and adds each step's element, as evalStep would.
func (s *subqueryNode) evalFused(ev *evaluator, t0 int64, nsteps int) error {
	if err := ev.charge(nsteps); err != nil {
		return err
	}
	s.accs = slices.Grow(s.accs[:0], nsteps)[:nsteps]
	clear(s.accs)
	if err := s.fused.sumSteps(ev, t0, s.step, nsteps, s.accs); err != nil {
		if err == errHistFallback { //nolint:errorlint // a sentinel never wrapped
			ev.samples -= int64(nsteps) // evalStep charges each step itself
		}
		return err
	}
	for k := range nsteps {
		a := &s.accs[k]
		in := s.one[:0]
		if a.n > 0 {
			in = append(in, sample{lset: labels.EmptyLabels(), t: t0 + int64(k)*s.step, f: a.f + a.c, drop: a.drop})
		}
		s.one = in
		if err := s.add(ev, t0+int64(k)*s.step, in); err != nil {
			return err
		}
	}
	return nil
}

func (s *subqueryNode) reset() {
	for i := range s.series {
		s.held.n -= int64(len(s.series[i].pts))
		s.series[i].pts = s.series[i].pts[:0]
		s.dropH(&s.series[i], -1)
	}
	s.series = s.series[:0]
	if s.byHash == nil {
		s.byHash = make(map[uint64]int32)
	}
	clear(s.byHash)
	s.gen++
	s.first, s.last = 1, 0
}

// trim drops the points before first.
func (s *subqueryNode) trim(first int64) {
	if first == math.MaxInt64 {
		for i := range s.series {
			s.held.n -= int64(len(s.series[i].pts))
			s.series[i].pts = s.series[i].pts[:0]
			s.dropH(&s.series[i], -1)
		}
		return
	}
	for i := range s.series {
		pts := s.series[i].pts
		k := 0
		for k < len(pts) && pts[k].T < first {
			k++
		}
		if k > 0 {
			n := copy(pts, pts[k:])
			s.series[i].pts = pts[:n]
			s.held.n -= int64(k)
		}
		if hp := s.series[i].hpts; len(hp) > 0 && hp[0].t < first {
			k := 0
			for k < len(hp) && hp[k].t < first {
				k++
			}
			s.dropH(&s.series[i], k)
		}
	}
}

// evalStep evaluates the child at ts and adds its elements to the matrix.
func (s *subqueryNode) evalStep(ev *evaluator, ts int64) error {
	if err := ev.charge(1); err != nil {
		return err
	}
	in, err := s.child.eval(ev, ts)
	if err != nil {
		return err
	}
	return s.add(ev, ts, in)
}

// add adds the child's elements at ts to the matrix, charging every point
// to the budget.
func (s *subqueryNode) add(ev *evaluator, ts int64, in vector) error {
	if err := ev.charge(len(in)); err != nil {
		return err
	}
	// Two elements with the same labels in one step (hidden twins,
	// otlp-contract.md §8.3, which the store keeps apart by attributes
	// that are not labels) go to two series: the k-th to the k-th series
	// of its labels' chain. Prometheus's storage never holds such a pair.
	for i, e := range in {
		k, hit := s.keys.get(i, e.lset)
		if !hit || k.gen != s.gen || int(k.idx) >= len(s.series) {
			k = subqKey{h: e.lset.Hash(), idx: -1, gen: s.gen}
			if idx, ok := s.byHash[k.h]; ok {
				k.idx = idx
			}
			hit = false
		}
		if k.idx >= 0 {
			// Within a chain of twins, the k-th element of the step
			// takes the k-th series: start from the chain's head.
			if sr := &s.series[k.idx]; sr.head != k.idx || sr.next >= 0 {
				k.idx, hit = sr.head, false
			}
		}
		for k.idx >= 0 && s.series[k.idx].lastT == ts {
			next := s.series[k.idx].next
			if next < 0 {
				next = s.newSeries(e, ts)
				s.series[k.idx].next = next
				s.series[next].head = s.series[k.idx].head
			}
			k.idx, hit = next, false
		}
		if k.idx < 0 {
			k.idx = s.newSeries(e, ts)
			s.series[k.idx].head = k.idx
			s.byHash[k.h] = k.idx
			hit = false
		}
		if !hit {
			s.keys.put(i, e.lset, k)
		}
		sr := &s.series[k.idx]
		sr.lastT = ts
		if s.dropLast {
			sr.drop = e.drop
		}
		if e.h != nil {
			cost := int64(histCost(e.h))
			if s.held.n+cost > s.held.max {
				return fmt.Errorf("%w: subqueries would hold more than %d points at once", ErrBudgetExceeded, s.held.max)
			}
			s.held.n += cost
			h := s.getH()
			e.h.CopyTo(h)
			// As upstream: a subquery's points are no longer consecutive
			// samples, so their reset hints no longer hold.
			if h.CounterResetHint == histogram.NotCounterReset || h.CounterResetHint == histogram.CounterReset {
				h.CounterResetHint = histogram.UnknownCounterReset
			}
			sr.hpts = append(sr.hpts, hpoint{t: ts, h: h})
			continue
		}
		// Prometheus's matrixIterSlice skips stale markers; a computed
		// value can carry that payload only by negating a negative one.
		if !value.IsStaleNaN(e.f) {
			if s.held.n >= s.held.max {
				return fmt.Errorf("%w: subqueries would hold more than %d points at once", ErrBudgetExceeded, s.held.max)
			}
			s.held.n++
			sr.pts = append(sr.pts, store.Sample{T: ts, V: e.f})
		}
	}
	return nil
}

// newSeries adds a series first seen in e at ts, reusing a slot (and its
// points' capacity) of an earlier query when there is one.
func (s *subqueryNode) newSeries(e sample, ts int64) int32 {
	idx := int32(len(s.series))
	if len(s.series) < cap(s.series) {
		s.series = s.series[:len(s.series)+1]
		s.series[idx].pts = s.series[idx].pts[:0]
		s.series[idx].hpts = s.series[idx].hpts[:0] // dropH emptied it when the slot left
	} else {
		s.series = append(s.series, subqSeries{})
	}
	sr := &s.series[idx]
	sr.lset, sr.drop, sr.lastT, sr.next = e.lset, e.drop, ts-1, -1
	return idx
}

// subqFnNode is a range function over a subquery.
type subqFnNode struct {
	vectorNode
	k   rangeNode // the kernel: kind, rng, param, dropName (reads no store)
	sub *subqueryNode
	out vector
}

func (n *subqFnNode) eval(ev *evaluator, t int64) (vector, error) {
	param, param2, err := n.k.params(ev, t)
	if err != nil {
		return nil, err
	}
	s := n.sub
	// The grid window the child is evaluated on, the window the function
	// reads from the matrix, and the one it extrapolates over. Without @
	// the three are (t-o-range, t-o]. With @ the matrix is fetched once,
	// at the evaluator's start, and rate extrapolates from the step time,
	// as upstream's matrix-argument loop does; a step-invariant parent
	// (the usual case) evaluates at the start, where they coincide.
	gHi, fHi, eHi := t-s.offset, t-s.offset, t-s.offset
	if s.at != nil {
		gHi = s.p - s.at.off
		voff := s.offset + (s.p - s.at.at) // upstream's vs.Offset for the matrix
		fHi, eHi = s.p-voff, t-voff
	}
	empty, err := s.window(ev, gHi-s.rng, gHi)
	if err != nil {
		return nil, err
	}
	n.out = n.out[:0]
	if empty {
		if n.k.kind == fnAbsentOverTime {
			n.out = append(n.out, sample{lset: labels.EmptyLabels(), t: t, f: 1, drop: true})
		}
		return n.out, nil
	}
	fLo, eLo := fHi-s.rng, eHi-s.rng
	n.k.hp.reset()
	n.k.hcp.reset()
	for i := range s.series {
		sr := &s.series[i]
		pts, hps := sr.pts, sr.hpts
		if gHi != fHi {
			pts, hps = windowOf(pts, fLo, fHi), hwindowOf(hps, fLo, fHi)
		}
		if len(pts)+len(hps) == 0 {
			continue
		}
		if n.k.kind == fnAbsentOverTime {
			n.out = n.out[:0]
			return n.out, nil
		}
		f, fh, ok, err := n.k.applyMixed(pts, hps, t, eLo, eHi, param, param2)
		if err != nil {
			return nil, err
		}
		if ok {
			n.out = append(n.out, sample{lset: sr.lset, t: t, f: f, h: fh, drop: n.k.dropName || sr.drop})
		}
	}
	if n.k.kind == fnAbsentOverTime {
		// Upstream labels it from the argument, which for a subquery has
		// no matchers.
		n.out = append(n.out, sample{lset: labels.EmptyLabels(), t: t, f: 1, drop: true})
	}
	return n.out, nil
}

// windowOf is the points of pts in (lo, hi].
func windowOf(pts []store.Sample, lo, hi int64) []store.Sample {
	i, _ := slices.BinarySearchFunc(pts, lo+1, func(s store.Sample, t int64) int { return cmpInt(s.T, t) })
	j, _ := slices.BinarySearchFunc(pts, hi+1, func(s store.Sample, t int64) int { return cmpInt(s.T, t) })
	return pts[i:j]
}

// hwindowOf is windowOf for histogram points.
func hwindowOf(pts []hpoint, lo, hi int64) []hpoint {
	i, _ := slices.BinarySearchFunc(pts, lo+1, func(s hpoint, t int64) int { return cmpInt(s.t, t) })
	j, _ := slices.BinarySearchFunc(pts, hi+1, func(s hpoint, t int64) int { return cmpInt(s.t, t) })
	return pts[i:j]
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return +1
	}
	return 0
}

// stepInvariance mirrors Prometheus's preprocessExprHelper: it records in
// wrap the subexpressions PreprocessExpr wraps in a StepInvariantExpr and
// reports whether expr is step invariant and whether its parent should
// wrap it. The AST is not modified: parentheses upstream removes are
// looked through, and a wrapped expression is recorded as the one the
// compiler will reach (the argument without its parentheses).
func stepInvariance(expr parser.Expr, wrap map[parser.Expr]bool) (inv, shouldWrap bool) {
	switch n := expr.(type) {
	case *parser.VectorSelector:
		at := n.Timestamp != nil || n.StartOrEnd != 0
		return at, at
	case *parser.AggregateExpr:
		// Upstream looks at the aggregated expression only; the parameter
		// is neither checked nor preprocessed.
		return stepInvariance(unparen(n.Expr), wrap)
	case *parser.BinaryExpr:
		l, wl := stepInvariance(n.LHS, wrap)
		r, wr := stepInvariance(n.RHS, wrap)
		if l && r {
			return true, true
		}
		if wl {
			wrap[n.LHS] = true
		}
		if wr {
			wrap[n.RHS] = true
		}
		return false, false
	case *parser.Call:
		switch n.Func.Name {
		case "start", "end", "range", "step":
			// Upstream folds them into number literals first.
			return true, false
		}
		_, unsafe := atModifierUnsafeFunctions[n.Func.Name]
		isInv := !unsafe
		// timestamp(sel @ t) is invariant though timestamp is unsafe.
		tsSafe := n.Func.Name == "timestamp"
		wrapArg := make([]bool, len(n.Args))
		for i, a := range n.Args {
			a = unparen(a)
			argInv, sw := stepInvariance(a, wrap)
			isInv = isInv && argInv
			if _, isVS := a.(*parser.VectorSelector); !argInv || !isVS {
				tsSafe = false
			}
			wrapArg[i] = sw
		}
		if isInv || tsSafe {
			return true, true
		}
		for i, a := range n.Args {
			if wrapArg[i] {
				wrap[unparen(a)] = true
			}
		}
		return false, false
	case *parser.MatrixSelector:
		inv, _ := stepInvariance(n.VectorSelector, wrap)
		return inv, false
	case *parser.SubqueryExpr:
		if inv, _ := stepInvariance(n.Expr, wrap); inv {
			wrap[n.Expr] = true
		}
		return n.Timestamp != nil || n.StartOrEnd != 0, false
	case *parser.ParenExpr:
		return stepInvariance(n.Expr, wrap)
	case *parser.UnaryExpr:
		return stepInvariance(n.Expr, wrap)
	case *parser.StringLiteral, *parser.NumberLiteral:
		return true, false
	case *parser.StepInvariantExpr:
		return stepInvariance(n.Expr, wrap)
	}
	return false, false
}

// atModifierUnsafeFunctions is Prometheus's AtModifierUnsafeFunctions:
// functions whose result depends on the evaluation time or on the
// samples' timestamps even when their arguments are step invariant.
var atModifierUnsafeFunctions = map[string]struct{}{
	"days_in_month": {}, "day_of_month": {}, "day_of_week": {}, "day_of_year": {},
	"end": {}, "hour": {}, "minute": {}, "month": {}, "year": {},
	"predict_linear": {}, "range": {}, "start": {}, "step": {}, "time": {},
	"timestamp": {},
}

func unparen(e parser.Expr) parser.Expr {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			return e
		}
		e = p.Expr
	}
}
