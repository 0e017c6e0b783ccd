package query

import (
	"errors"
	"fmt"
	"slices"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// signature hashes the labels two vector elements are matched on: the
// on(…) labels, or every label except the ignoring(…) and metadata labels.
type signature struct {
	on    bool
	names []string // sorted
	buf   []byte
}

func newSignature(on bool, matching []string) signature {
	names := slices.Clone(matching)
	if !on {
		names = append(names, metadataLabels...)
	}
	slices.Sort(names)
	return signature{on: on, names: slices.Compact(names)}
}

func (s *signature) of(l labels.Labels) uint64 {
	var h uint64
	if s.on {
		h, s.buf = l.HashForLabels(s.buf, s.names...)
	} else {
		h, s.buf = l.HashWithoutLabels(s.buf, s.names...)
	}
	return h
}

// vsBinNode is vector ∘ scalar (or scalar ∘ vector when swap) (§4.7).
type vsBinNode struct {
	vectorNode
	op         parser.ItemType
	vec, sc    node
	swap       bool
	returnBool bool
	out        vector
	hp         hpool
}

func (n *vsBinNode) eval(ev *evaluator, t int64) (vector, error) {
	var (
		in  vector
		r   float64
		err error
	)
	// Prometheus evaluates the operands left to right.
	if n.swap {
		if r, err = n.sc.scalar(ev, t); err != nil {
			return nil, err
		}
		if in, err = n.vec.eval(ev, t); err != nil {
			return nil, err
		}
	} else {
		if in, err = n.vec.eval(ev, t); err != nil {
			return nil, err
		}
		if r, err = n.sc.scalar(ev, t); err != nil {
			return nil, err
		}
	}
	cmp := n.op.IsComparisonOperator()
	drop := changesMetricSchema(n.op) || n.returnBool
	n.out = n.out[:0]
	n.hp.reset()
	for _, s := range in {
		if s.h != nil {
			// Only histogram * scalar, scalar * histogram and
			// histogram / scalar are defined; anything else drops the
			// element (upstream adds an info annotation).
			var h *histogram.FloatHistogram
			switch {
			case n.op == parser.MUL:
				h = n.hp.copyOf(s.h).Mul(r).Compact(0)
			case n.op == parser.DIV && !n.swap:
				h = n.hp.copyOf(s.h).Div(r).Compact(0)
			case isTrim(n.op) && !n.swap:
				h = n.hp.copyOf(s.h).TrimBuckets(r, n.op == parser.TRIM_UPPER)
			default:
				continue
			}
			n.out = append(n.out, sample{lset: s.lset, t: t, h: h, drop: s.drop || drop, ref: s.ref})
			continue
		}
		lf, rf := s.f, r
		if n.swap {
			lf, rf = rf, lf
		}
		v, keep := binop(n.op, lf, rf)
		if cmp && n.swap {
			v = rf // a filter keeps the vector's value even on the right
		}
		if n.returnBool {
			v, keep = btos(keep), true
		}
		if keep {
			n.out = append(n.out, sample{lset: s.lset, t: t, f: v, drop: s.drop || drop, ref: s.ref})
		}
	}
	return n.out, nil
}

// vvBinNode is vector ∘ vector for arithmetic and comparisons, one-to-one
// or with group_left/group_right (VectorBinop).
type vvBinNode struct {
	vectorNode
	op         parser.ItemType
	lhs, rhs   node
	sig        signature
	returnBool bool
	card       parser.VectorMatchCardinality
	on         bool
	matching   []string
	include    []string

	rightSigs map[uint64]int
	matched   map[uint64]struct{}
	manySeen  map[[2]uint64]struct{}
	lcache    map[[2]uint64]labels.Labels
	lb        *labels.Builder
	lkeys     []sigKey
	rkeys     []sigKey
	lcacheL   posCache[sigKey]
	lcacheR   posCache[sigKey]
	out       vector
	hp        hpool
}

// sigKey is an element's matching signature and its full label hash.
type sigKey struct{ sig, h uint64 }

func (n *vvBinNode) keys(dst []sigKey, c *posCache[sigKey], in vector) []sigKey {
	dst = dst[:0]
	for i, s := range in {
		k, ok := c.get(i, s.lset)
		if !ok {
			k = sigKey{sig: n.sig.of(s.lset), h: s.lset.Hash()}
			c.put(i, s.lset, k)
		}
		dst = append(dst, k)
	}
	return dst
}

func (n *vvBinNode) eval(ev *evaluator, t int64) (vector, error) {
	lhs, err := n.lhs.eval(ev, t)
	if err != nil {
		return nil, err
	}
	rhs, err := n.rhs.eval(ev, t)
	if err != nil {
		return nil, err
	}
	n.out = n.out[:0]
	if len(lhs) == 0 || len(rhs) == 0 {
		return n.out, nil
	}
	if n.card == parser.CardOneToMany {
		lhs, rhs = rhs, lhs
	}
	if n.rightSigs == nil {
		n.rightSigs = make(map[uint64]int)
		n.matched = make(map[uint64]struct{})
		n.manySeen = make(map[[2]uint64]struct{})
		n.lcache = make(map[[2]uint64]labels.Labels)
	}
	clear(n.rightSigs)
	clear(n.matched)
	clear(n.manySeen)
	if len(n.lcache) > 2*len(lhs)+labelCacheSlack {
		clear(n.lcache)
	}
	// With group_right the sides swap; each position cache follows the
	// side it describes.
	lc, rc := &n.lcacheL, &n.lcacheR
	if n.card == parser.CardOneToMany {
		lc, rc = rc, lc
	}
	n.hp.reset()
	n.rkeys = n.keys(n.rkeys, rc, rhs)
	n.lkeys = n.keys(n.lkeys, lc, lhs)
	for j, rs := range rhs {
		sig := n.rkeys[j].sig
		if i, dup := n.rightSigs[sig]; dup {
			return nil, n.duplicateError(rs.lset, rhs[i].lset)
		}
		n.rightSigs[sig] = j
	}
	for i, ls := range lhs {
		sig := n.lkeys[i].sig
		j, ok := n.rightSigs[sig]
		if !ok {
			continue
		}
		rs := rhs[j]
		fl, fr := ls.f, rs.f
		hl, hr := ls.h, rs.h
		if n.card == parser.CardOneToMany {
			fl, fr = fr, fl
			hl, hr = hr, hl
		}
		var (
			v    float64
			h    *histogram.FloatHistogram
			keep bool
		)
		if hl == nil && hr == nil && !isTrim(n.op) {
			v, keep = binop(n.op, fl, fr)
		} else {
			var dropped bool
			if h, keep, dropped, err = n.histBinop(fl, fr, hl, hr); err != nil {
				return nil, err
			}
			if dropped {
				// An operation histograms do not support, or one that
				// warned: no element, and the match is not recorded
				// (upstream returns before its bookkeeping).
				continue
			}
		}
		if n.returnBool {
			v, h = btos(keep), nil
		}
		metric := n.resultMetric(ls.lset, rs.lset, n.lkeys[i].h, n.rkeys[j].h)
		if n.card == parser.CardOneToOne {
			if _, dup := n.matched[sig]; dup {
				return nil, errors.New("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")
			}
			n.matched[sig] = struct{}{}
		} else {
			k := [2]uint64{sig, metric.Hash()}
			if _, dup := n.manySeen[k]; dup {
				return nil, errors.New("multiple matches for labels: grouping labels must ensure unique matches")
			}
			n.manySeen[k] = struct{}{}
		}
		if !keep && !n.returnBool {
			continue
		}
		n.out = append(n.out, sample{lset: metric, t: t, f: v, h: h, drop: n.returnBool})
	}
	return n.out, nil
}

// histBinop is Prometheus's vectorElemBinop for a pair with a histogram
// (hl or hr set): histogram + and - histogram, * float (either side), /
// float, == and != histogram. dropped is set for any other pair, for
// histograms that cannot be added (exponential with custom buckets) and
// for a counter-reset collision, which upstream reports as a warning
// and drops the element for; err for an invalid bucket layout, which
// fails the query as upstream.
func (n *vvBinNode) histBinop(fl, fr float64, hl, hr *histogram.FloatHistogram) (h *histogram.FloatHistogram, keep, dropped bool, err error) {
	switch {
	case hl == nil && hr == nil:
		return nil, false, true, nil // floats trimmed: incompatible
	case hl == nil:
		if n.op == parser.MUL {
			return n.hp.copyOf(hr).Mul(fl).Compact(0), true, false, nil
		}
		return nil, false, true, nil
	case hr == nil:
		switch n.op {
		case parser.MUL:
			return n.hp.copyOf(hl).Mul(fr).Compact(0), true, false, nil
		case parser.DIV:
			return n.hp.copyOf(hl).Div(fr).Compact(0), true, false, nil
		case parser.TRIM_UPPER, parser.TRIM_LOWER:
			return n.hp.copyOf(hl).TrimBuckets(fr, n.op == parser.TRIM_UPPER), true, false, nil
		}
		return nil, false, true, nil
	}
	switch n.op {
	case parser.ADD, parser.SUB:
		h = n.hp.copyOf(hl)
		var collision bool
		if n.op == parser.ADD {
			_, collision, _, err = h.Add(hr)
		} else {
			_, collision, _, err = h.Sub(hr)
			h.CounterResetHint = histogram.GaugeType
		}
		if err != nil {
			ok, fail := histErr(err)
			return nil, false, !ok, fail
		}
		if collision {
			return nil, false, true, nil
		}
		return h.Compact(0), true, false, nil
	case parser.EQLC:
		return hl, hl.Equals(hr), false, nil
	case parser.NEQ:
		return hl, !hl.Equals(hr), false, nil
	}
	return nil, false, true, nil
}

func (n *vvBinNode) duplicateError(a, b labels.Labels) error {
	names := n.matching
	if !n.on {
		names = append(slices.Clone(metadataLabels), names...)
	}
	matched := a.MatchLabels(n.on, names...)
	side := "right"
	if n.card == parser.CardOneToMany {
		side = "left"
	}
	d1, d2 := a.String(), b.String()
	if d1 > d2 {
		d1, d2 = d2, d1
	}
	return fmt.Errorf("found duplicate series for the match group %s on the %s hand-side of the operation: [%s, %s]"+
		";many-to-many matching not allowed: matching labels must be unique on one side", matched.String(), side, d1, d2)
}

// resultMetric is Prometheus's resultMetric, cached by the operands' label
// hashes so a steady state allocates nothing.
func (n *vvBinNode) resultMetric(l, r labels.Labels, lh, rh uint64) labels.Labels {
	key := [2]uint64{lh, rh}
	if m, ok := n.lcache[key]; ok {
		return m
	}
	if n.lb == nil {
		n.lb = labels.NewBuilder(l)
	}
	lb := n.lb
	lb.Reset(l)
	if changesMetricSchema(n.op) {
		lb.Del(metadataLabels...)
	}
	if n.card == parser.CardOneToOne {
		if n.on {
			lb.Keep(n.matching...)
		} else {
			lb.Del(n.matching...)
		}
	}
	for _, ln := range n.include {
		if v := r.Get(ln); v != "" {
			lb.Set(ln, v)
		} else {
			lb.Del(ln)
		}
	}
	m := lb.Labels()
	n.lcache[key] = m
	return m
}

// setNode is and/or/unless: elements pass unchanged, matched by signature.
type setNode struct {
	vectorNode
	op       parser.ItemType
	lhs, rhs node
	sig      signature
	present  map[uint64]struct{}
	out      vector
}

func (n *setNode) eval(ev *evaluator, t int64) (vector, error) {
	lhs, err := n.lhs.eval(ev, t)
	if err != nil {
		return nil, err
	}
	rhs, err := n.rhs.eval(ev, t)
	if err != nil {
		return nil, err
	}
	n.out = n.out[:0]
	if n.present == nil {
		n.present = make(map[uint64]struct{})
	}
	clear(n.present)
	switch n.op {
	case parser.LAND:
		if len(lhs) == 0 || len(rhs) == 0 {
			return n.out, nil
		}
		for _, s := range rhs {
			n.present[n.sig.of(s.lset)] = struct{}{}
		}
		for _, s := range lhs {
			if _, ok := n.present[n.sig.of(s.lset)]; ok {
				n.out = append(n.out, s)
			}
		}
	case parser.LOR:
		n.out = append(n.out, lhs...)
		if len(lhs) == 0 || len(rhs) == 0 {
			return append(n.out, rhs...), nil
		}
		for _, s := range lhs {
			n.present[n.sig.of(s.lset)] = struct{}{}
		}
		for _, s := range rhs {
			if _, ok := n.present[n.sig.of(s.lset)]; !ok {
				n.out = append(n.out, s)
			}
		}
	case parser.LUNLESS:
		if len(lhs) == 0 || len(rhs) == 0 {
			return append(n.out, lhs...), nil
		}
		for _, s := range rhs {
			n.present[n.sig.of(s.lset)] = struct{}{}
		}
		for _, s := range lhs {
			if _, ok := n.present[n.sig.of(s.lset)]; !ok {
				n.out = append(n.out, s)
			}
		}
	}
	return n.out, nil
}

// isTrim reports whether op is a native histogram trimming operator (</
// and >/): it keeps the buckets below or above a bound.
func isTrim(op parser.ItemType) bool { return op == parser.TRIM_UPPER || op == parser.TRIM_LOWER }
