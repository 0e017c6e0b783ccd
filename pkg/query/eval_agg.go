package query

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// aggNode implements sum, avg, min, max, count, group, stddev, stdvar,
// quantile, topk, bottomk, limitk, limit_ratio and count_values with
// by/without (§4.6).
//
// Groups are found by hashing the grouping labels into a reused map; the
// output labels of a group are cached by that hash across evaluations, so
// the steady state allocates nothing.
type aggNode struct {
	vectorNode
	op       parser.ItemType
	child    node
	param    node
	without  bool
	grouping []string // sorted; for without, includes the metadata labels; for count_values by, the value label
	// valueLabel is count_values' label.
	valueLabel string

	buf    []byte
	groups map[uint64]int
	acc    []aggAcc
	out    vector
	lcache map[uint64]labels.Labels
	lb     *labels.Builder
	qvals  [][]float64
	heaps  []sampleHeap
	keys   posCache[aggKey]
	// seqLen is how many leading positions of keys the last complete
	// evaluation wrote; while every element so far matched them (inSeq),
	// groups are being created in the same order as then, so an element's
	// cached group index is valid without a map lookup.
	seqLen, lastLen int
	inSeq           bool
	sum             sumSink
	gsum            groupedSum
	t               int64 // evaluation time, for add
	pos             int   // position of the next element given to add
	// hp holds the histograms sum and avg compute, hcp their Kahan
	// compensations (kept apart: a compensation shares its histogram's
	// spans, so it is never copied into, hist.go's initComp).
	hp, hcp hpool
	// dropped is set when finish must drop groups (hist.go's
	// aggregation rules: floats mixed with histograms, incompatible
	// histograms); histErr is an error histogram arithmetic returned.
	dropped bool
	histErr error
}

type aggAcc struct {
	f, mean, c, count float64
	incremental       bool
	drop              bool
	// Native histograms (sum, avg): the running value, its Kahan
	// compensation and, once the sum overflowed, the incremental mean.
	hv, hc, hmean *histogram.FloatHistogram
	// hasFloat and hasHist tell what the group saw; incompatible that
	// two histograms could not be added (exponential with custom
	// buckets); histIncremental that avg switched to the incremental
	// mean.
	hasFloat, hasHist, incompatible, histIncremental bool
}

// labelCacheSlack bounds a label cache: it is cleared when it holds more
// than twice the live entries plus this many.
const labelCacheSlack = 1024

func (n *aggNode) key(l labels.Labels) uint64 {
	var h uint64
	switch {
	case n.without:
		h, n.buf = l.HashWithoutLabels(n.buf, n.grouping...)
	case len(n.grouping) == 0:
		return 0
	default:
		h, n.buf = l.HashForLabels(n.buf, n.grouping...)
	}
	return h
}

func (n *aggNode) groupLabels(h uint64, l labels.Labels) labels.Labels {
	if n.lcache == nil {
		n.lcache = make(map[uint64]labels.Labels)
	}
	if ls, ok := n.lcache[h]; ok {
		return ls
	}
	var ls labels.Labels
	switch {
	case n.without:
		if n.lb == nil {
			n.lb = labels.NewBuilder(l)
		}
		n.lb.Reset(l)
		n.lb.Del(n.grouping...)
		ls = n.lb.Labels()
	case len(n.grouping) > 0:
		if n.lb == nil {
			n.lb = labels.NewBuilder(l)
		}
		n.lb.Reset(l)
		n.lb.Keep(n.grouping...)
		ls = n.lb.Labels()
	default:
		ls = labels.EmptyLabels()
	}
	n.lcache[h] = ls
	return ls
}

func (n *aggNode) eval(ev *evaluator, t int64) (vector, error) {
	var param float64
	if n.param != nil {
		p, err := n.param.scalar(ev, t)
		if err != nil {
			return nil, err
		}
		param = p
	}
	switch n.op {
	case parser.TOPK, parser.BOTTOMK, parser.LIMITK, parser.LIMIT_RATIO:
		in, err := n.child.eval(ev, t)
		if err != nil {
			return nil, err
		}
		return n.evalK(in, param, t)
	case parser.COUNT_VALUES:
		in, err := n.child.eval(ev, t)
		if err != nil {
			return nil, err
		}
		return n.countValues(ev, in, t)
	}
	if n.groups == nil {
		n.groups = make(map[uint64]int)
	}
	clear(n.groups)
	if len(n.lcache) > 2*len(n.out)+labelCacheSlack {
		clear(n.lcache)
	}
	n.out, n.acc = n.out[:0], n.acc[:0]
	n.t, n.pos = t, 0
	n.seqLen, n.lastLen, n.inSeq = n.lastLen, 0, true
	n.hp.reset()
	n.hcp.reset()
	n.dropped, n.histErr = false, nil
	// A selector or range function child hands its elements over one by
	// one instead of materialising a vector (the append of a 40-byte
	// element was a third of sum(x)'s time).
	if sn, ok := n.child.(streamNode); ok && sn.canStream() {
		// The sum fast paths take floats only: a child over histogram
		// series makes them return errHistFallback, and the elements
		// go through add below.
		if n.op == parser.SUM && !n.without && len(n.grouping) == 0 {
			out, err := n.sumStream(ev, t, sn)
			if err != errHistFallback { //nolint:errorlint // a sentinel never wrapped
				return out, err
			}
			n.out = n.out[:0]
		} else if n.op == parser.SUM {
			var err error
			switch c := sn.(type) {
			case *selectorNode:
				err = c.sumGroups(ev, t, n)
			case *rangeNode:
				err = c.sumGroups(ev, t, n)
			default:
				err = errHistFallback
			}
			if err == nil {
				return n.gsum.result(n, t), nil
			}
			if err != errHistFallback { //nolint:errorlint // a sentinel never wrapped
				return nil, err
			}
		}
		if err := sn.stream(ev, t, n); err != nil {
			return nil, err
		}
	} else {
		in, err := n.child.eval(ev, t)
		if err != nil {
			return nil, err
		}
		for _, s := range in {
			n.add(s)
		}
	}
	n.finish(param)
	n.lastLen = n.pos // the cache's group indices are complete and consistent
	if n.histErr != nil {
		return nil, n.histErr
	}
	return n.out, nil
}

// sumSink is sum without grouping: one Kahan accumulator, no labels.
type sumSink struct {
	f, c float64
	n    int
	drop bool
}

func (s *sumSink) add(x sample) { s.addValue(x.f, x.drop) }

func (s *sumSink) addValue(f float64, drop bool) {
	if s.n == 0 {
		s.f = f // the first element is taken as is, as upstream (-0 stays -0)
	} else {
		s.f, s.c = kahanInc(f, s.f, s.c)
	}
	s.n++
	s.drop = s.drop || drop
}

// groupedSum is sum by/without over a selector or a range function: the
// group of each series is computed when the series set changes (its
// version), not per evaluation, so an element costs an indexed Kahan step
// instead of a labels comparison, a hash or a map lookup.
type groupedSum struct {
	set     *seriesSet
	version int
	gi      []int32         // per series of set: its group
	glabels []labels.Labels // per group: the output labels
	acc     []sumSink
	order   []int32 // groups in order of their first element this evaluation
}

// prepare readies g for one evaluation over set, which the caller has
// just refreshed.
func (g *groupedSum) prepare(n *aggNode, set *seriesSet) {
	if g.set != set || g.version != set.version || len(g.gi) != len(set.lsets) {
		g.set, g.version = set, set.version
		if n.groups == nil {
			n.groups = make(map[uint64]int)
		}
		clear(n.groups)
		if len(n.lcache) > 2*len(g.glabels)+labelCacheSlack {
			clear(n.lcache)
		}
		g.gi, g.glabels = g.gi[:0], g.glabels[:0]
		for _, l := range set.lsets {
			h := n.key(l)
			gi, ok := n.groups[h]
			if !ok {
				gi = len(g.glabels)
				n.groups[h] = gi
				g.glabels = append(g.glabels, n.groupLabels(h, l))
			}
			g.gi = append(g.gi, int32(gi))
		}
	}
	g.acc = slices.Grow(g.acc[:0], len(g.glabels))[:len(g.glabels)]
	clear(g.acc)
	g.order = g.order[:0]
}

// add adds the value of series i.
func (g *groupedSum) add(i int, f float64, drop bool) {
	gi := g.gi[i]
	a := &g.acc[gi]
	if a.n == 0 {
		g.order = append(g.order, gi)
	}
	a.addValue(f, drop)
}

// result writes the groups to n.out in order of first appearance, as
// aggNode.add would have.
func (g *groupedSum) result(n *aggNode, t int64) vector {
	n.out = n.out[:0]
	for _, gi := range g.order {
		a := &g.acc[gi]
		n.out = append(n.out, sample{lset: g.glabels[gi], t: t, f: a.f + a.c, drop: a.drop})
	}
	return n.out
}

// sumStream is sum(x) over a streaming child: the elements go to a
// sumSink, skipping add's grouping and generic accumulator.
func (n *aggNode) sumStream(ev *evaluator, t int64, sn streamNode) (vector, error) {
	// A field, not a local: passed as a sink it would escape.
	n.sum = sumSink{}
	acc := &n.sum
	var err error
	switch c := sn.(type) {
	case *selectorNode:
		err = c.sum(ev, t, acc)
	case *rangeNode:
		err = c.sum(ev, t, acc)
	default:
		err = sn.stream(ev, t, acc)
	}
	if err != nil {
		return nil, err
	}
	if acc.n > 0 {
		n.out = append(n.out, sample{lset: labels.EmptyLabels(), t: t, f: acc.f + acc.c, drop: acc.drop})
	}
	return n.out, nil
}

// aggKey is what aggNode caches per input position: the grouping hash
// and the group index the element had.
type aggKey struct {
	h  uint64
	gi int
}

// add accumulates one input element; elements arrive in the child's order.
func (n *aggNode) add(s sample) {
	i := n.pos
	n.pos++
	// sum(x) without grouping has one group: skip hashing and the map.
	single := !n.without && len(n.grouping) == 0
	var (
		h  uint64
		gi int
		ok bool
	)
	if single {
		ok = len(n.out) > 0
	} else {
		k, hit := n.keys.get(i, s.lset)
		switch {
		case hit && n.inSeq && i < n.seqLen && k.gi <= len(n.out):
			// Same element at the same position, after the same
			// prefix: the last evaluation's group index holds (a new
			// group when it is the next index).
			h, gi, ok = k.h, k.gi, k.gi < len(n.out)
		default:
			n.inSeq = false
			if !hit {
				k.h = n.key(s.lset)
			}
			h = k.h
			gi, ok = n.groups[h]
			if !ok {
				gi = len(n.out)
			}
			if !hit || k.gi != gi {
				n.keys.put(i, s.lset, aggKey{h: h, gi: gi})
			}
		}
	}
	if !ok && s.h != nil {
		switch n.op {
		case parser.MIN, parser.MAX, parser.STDDEV, parser.STDVAR, parser.QUANTILE:
			// Histograms are ignored: a group does not start with one
			// (upstream's seen = false).
			return
		}
	}
	if !ok {
		gi = len(n.out)
		if !single {
			n.groups[h] = gi
		}
		n.out = append(n.out, sample{lset: n.groupLabels(h, s.lset), t: n.t})
		a := aggAcc{f: s.f, mean: s.f, count: 1, drop: s.drop}
		if s.h != nil {
			a.f, a.mean = 0, 0
			if n.op == parser.SUM || n.op == parser.AVG {
				a.hv, a.hasHist = n.hp.copyOf(s.h), true
			}
		} else {
			a.hasFloat = true
		}
		switch n.op {
		case parser.STDDEV, parser.STDVAR:
			if math.IsNaN(s.f) || math.IsInf(s.f, 0) {
				a.f = math.NaN()
			} else {
				a.f = 0
			}
		case parser.GROUP:
			a.f = 1
		case parser.QUANTILE:
			if gi == len(n.qvals) {
				n.qvals = append(n.qvals, nil)
			}
			n.qvals[gi] = append(n.qvals[gi][:0], s.f)
		}
		n.acc = append(n.acc, a)
		return
	}
	a := &n.acc[gi]
	if a.incompatible {
		return
	}
	if s.drop {
		a.drop = true
	}
	if s.h != nil {
		n.addHist(a, s.h)
		return
	}
	switch n.op {
	case parser.SUM:
		a.hasFloat = true
		a.f, a.c = kahanInc(s.f, a.f, a.c)
	case parser.AVG:
		a.hasFloat = true
		a.count++
		if !a.incremental {
			nv, nc := kahanInc(s.f, a.f, a.c)
			if !math.IsInf(nv, 0) {
				a.f, a.c = nv, nc
				break
			}
			a.incremental = true
			a.mean = a.f / (a.count - 1)
			a.c /= a.count - 1
		}
		q := (a.count - 1) / a.count
		a.mean, a.c = kahanInc(s.f/a.count, q*a.mean, q*a.c)
	case parser.MAX:
		if a.f < s.f || math.IsNaN(a.f) {
			a.f = s.f
		}
	case parser.MIN:
		if a.f > s.f || math.IsNaN(a.f) {
			a.f = s.f
		}
	case parser.COUNT:
		a.count++
	case parser.STDDEV, parser.STDVAR:
		a.count++
		delta := s.f - a.mean
		a.mean += delta / a.count
		a.f += delta * (s.f - a.mean)
	case parser.QUANTILE:
		n.qvals[gi] = append(n.qvals[gi], s.f)
	}
}

// finish turns the accumulators into the output values.
func (n *aggNode) finish(param float64) {
	for i := range n.out {
		a := &n.acc[i]
		f := a.f
		if a.hasHist && (n.op == parser.SUM || n.op == parser.AVG) {
			n.out[i].h = n.finishHist(a)
			n.out[i].drop = a.drop
			continue
		}
		switch n.op {
		case parser.SUM:
			f += a.c
		case parser.AVG:
			if a.incremental {
				f = a.mean + a.c
			} else {
				f = a.f/a.count + a.c/a.count
			}
		case parser.COUNT:
			f = a.count
		case parser.STDVAR:
			f = a.f / a.count
		case parser.STDDEV:
			f = math.Sqrt(a.f / a.count)
		case parser.QUANTILE:
			f = quantile(param, n.qvals[i])
		}
		n.out[i].f = f
		n.out[i].drop = a.drop
	}
	if n.dropped {
		// Groups without a result (nil histogram of finishHist): remove
		// them, keeping the order.
		k := 0
		for i, e := range n.out {
			if a := &n.acc[i]; a.hasHist && (n.op == parser.SUM || n.op == parser.AVG) && e.h == nil {
				continue
			}
			n.out[k] = e
			k++
		}
		n.out = n.out[:k]
	}
}

// maxInt64 is the largest float64 below 2^63, Prometheus's bound for k.
const maxInt64 = 9223372036854774784

// evalK is topk, bottomk, limitk and limit_ratio with Prometheus's heap
// operations (aggregationK), so ties resolve and elements come out in the
// same order: topk and bottomk sorted, limitk and limit_ratio in heap
// order; groups in order of first appearance.
func (n *aggNode) evalK(in vector, param float64, t int64) (vector, error) {
	n.out = n.out[:0]
	var ratio float64
	if n.op == parser.LIMIT_RATIO {
		switch {
		case param == 0:
			return n.out, nil
		case math.IsNaN(param):
			return nil, errors.New("Ratio value is NaN") //nolint:staticcheck // Prometheus's exact message
		}
		ratio = max(-1, min(1, param))
	} else {
		switch {
		case param < 1:
			return n.out, nil
		case math.IsNaN(param):
			return nil, errors.New("Parameter value is NaN") //nolint:staticcheck // Prometheus's exact message
		case param >= maxInt64:
			return nil, fmt.Errorf("Scalar value %v overflows int64", param) //nolint:staticcheck // Prometheus's exact message
		}
	}
	if len(in) == 0 {
		return n.out, nil
	}
	k := min(int(param), len(in))
	if n.groups == nil {
		n.groups = make(map[uint64]int)
	}
	clear(n.groups)
	ng := 0
	for _, s := range in {
		if s.h != nil && (n.op == parser.TOPK || n.op == parser.BOTTOMK) {
			continue // ignored, as upstream (with an info annotation)
		}
		h := n.key(s.lset)
		gi, ok := n.groups[h]
		if !ok {
			gi = ng
			ng++
			n.groups[h] = gi
			if gi == len(n.heaps) {
				n.heaps = append(n.heaps, nil)
			}
			n.heaps[gi] = n.heaps[gi][:0]
		}
		hp := &n.heaps[gi]
		s.t = t
		switch n.op {
		case parser.TOPK:
			switch {
			case len(*hp) < k:
				heap.Push(hp, s)
			case (*hp)[0].f < s.f || (math.IsNaN((*hp)[0].f) && !math.IsNaN(s.f)):
				(*hp)[0] = s
				if k > 1 {
					heap.Fix(hp, 0)
				}
			}
		case parser.BOTTOMK:
			rh := (*reverseSampleHeap)(hp)
			switch {
			case len(*hp) < k:
				heap.Push(rh, s)
			case (*hp)[0].f > s.f || (math.IsNaN((*hp)[0].f) && !math.IsNaN(s.f)):
				(*hp)[0] = s
				if k > 1 {
					heap.Fix(rh, 0)
				}
			}
		case parser.LIMITK:
			if len(*hp) < k {
				heap.Push(hp, s)
			}
		case parser.LIMIT_RATIO:
			if ratioSampled(ratio, s.lset) {
				heap.Push(hp, s)
			}
		}
	}
	for gi := range ng {
		hp := n.heaps[gi]
		if len(hp) > 1 {
			switch n.op {
			case parser.TOPK:
				sort.Sort(sort.Reverse(hp))
			case parser.BOTTOMK:
				sort.Sort(sort.Reverse((*reverseSampleHeap)(&hp)))
			}
		}
		n.out = append(n.out, hp...)
	}
	return n.out, nil
}

// ratioSampled is Prometheus's HashRatioSampler: a series is in
// limit_ratio(r, …) when its label hash, as a fraction of the uint64
// range, is below r (r >= 0), or at least 1+r (r < 0). The labels still
// hold __name__ (delayed dropping), as upstream's do.
func ratioSampled(r float64, l labels.Labels) bool {
	offset := float64(l.Hash()) / float64(math.MaxUint64)
	return (r >= 0 && offset < r) || (r < 0 && offset >= 1.0+r)
}

// countValues is count_values (aggregationCountValues): per group of the
// input with the value label set to the value (strconv 'f', -1), the
// number of elements. It builds each element's labels, as upstream does,
// charging them to the label budget; output labels are cached by group.
func (n *aggNode) countValues(ev *evaluator, in vector, t int64) (vector, error) {
	if !model.UTF8Validation.IsValidLabelName(n.valueLabel) {
		return nil, fmt.Errorf("invalid label name %q", n.valueLabel)
	}
	if n.groups == nil {
		n.groups = make(map[uint64]int)
	}
	clear(n.groups)
	if len(n.lcache) > 2*len(n.out)+labelCacheSlack {
		clear(n.lcache)
	}
	if n.lb == nil {
		n.lb = labels.NewBuilder(labels.EmptyLabels())
	}
	n.out = n.out[:0]
	for _, s := range in {
		v := strconv.FormatFloat(s.f, 'f', -1, 64)
		if s.h != nil {
			v = s.h.String() // upstream's value label for a histogram
		}
		if err := ev.chargeLabelSet(s.lset, n.valueLabel, int64(len(v))); err != nil {
			return nil, err
		}
		n.lb.Reset(s.lset)
		n.lb.Set(n.valueLabel, v)
		metric := n.lb.Labels()
		h := n.key(metric)
		if gi, ok := n.groups[h]; ok {
			n.out[gi].f++
			continue
		}
		n.groups[h] = len(n.out)
		n.out = append(n.out, sample{lset: n.groupLabels(h, metric), t: t, f: 1})
	}
	return n.out, nil
}

// sampleHeap orders by value ascending with NaN first (vectorByValueHeap).
type sampleHeap []sample

func (s sampleHeap) Len() int { return len(s) }
func (s sampleHeap) Less(i, j int) bool {
	if math.IsNaN(s[i].f) {
		return true
	}
	return s[i].f < s[j].f
}
func (s sampleHeap) Swap(i, j int) { s[i], s[j] = s[j], s[i] }
func (s *sampleHeap) Push(x any)   { *s = append(*s, x.(sample)) }
func (s *sampleHeap) Pop() any {
	old := *s
	el := old[len(old)-1]
	*s = old[:len(old)-1]
	return el
}

// reverseSampleHeap orders by value descending with NaN first
// (vectorByReverseValueHeap).
type reverseSampleHeap []sample

func (s reverseSampleHeap) Len() int { return len(s) }
func (s reverseSampleHeap) Less(i, j int) bool {
	if math.IsNaN(s[i].f) {
		return true
	}
	return s[i].f > s[j].f
}
func (s reverseSampleHeap) Swap(i, j int) { s[i], s[j] = s[j], s[i] }
func (s *reverseSampleHeap) Push(x any)   { *s = append(*s, x.(sample)) }
func (s *reverseSampleHeap) Pop() any {
	old := *s
	el := old[len(old)-1]
	*s = old[:len(old)-1]
	return el
}
