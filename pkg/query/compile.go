package query

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// node is one operator of a compiled plan.
type node interface {
	valueType() parser.ValueType
	// evalVector returns the node's instant vector at t. Labels keep
	// __name__ here; Plan.Eval drops it from the final result.
	evalVector(ctx context.Context, t int64) ([]Sample, error)
	// evalScalar returns the node's scalar value at t.
	evalScalar(t int64) float64
}

type compiler struct {
	store    *store.Store
	lookback int64
	names    []string
	anyName  bool
}

func (c *compiler) compile(expr parser.Expr) (node, error) {
	switch e := expr.(type) {
	case *parser.ParenExpr:
		return c.compile(e.Expr)
	case *parser.NumberLiteral:
		return &constNode{v: e.Val}, nil
	case *parser.VectorSelector:
		return c.compileSelector(e)
	case *parser.AggregateExpr:
		return c.compileAggregate(e)
	default:
		return nil, &UnsupportedError{Pos: expr.PositionRange(), Construct: nodeName(expr)}
	}
}

func nodeName(expr parser.Expr) string {
	switch e := expr.(type) {
	case *parser.Call:
		return "function " + e.Func.Name
	case *parser.BinaryExpr:
		return "binary operator " + e.Op.String()
	case *parser.MatrixSelector:
		return "range selector"
	case *parser.SubqueryExpr:
		return "subquery"
	case *parser.StringLiteral:
		return "string literal"
	case *parser.UnaryExpr:
		return "unary operator"
	default:
		return strings.ToLower(strings.TrimPrefix(fmt.Sprintf("%T", expr), "*parser."))
	}
}

type constNode struct{ v float64 }

func (*constNode) valueType() parser.ValueType { return parser.ValueTypeScalar }
func (n *constNode) evalScalar(int64) float64  { return n.v }
func (*constNode) evalVector(context.Context, int64) ([]Sample, error) {
	return nil, nil
}

// selectorNode is an instant vector selector. It caches the refs it matched
// and re-selects only when the store's generation moves.
type selectorNode struct {
	store    *store.Store
	matchers []*labels.Matcher
	offset   int64
	lookback int64

	gen  uint64
	refs []store.SeriesRef
	out  []Sample
}

func (c *compiler) compileSelector(e *parser.VectorSelector) (node, error) {
	if e.Timestamp != nil || e.StartOrEnd != 0 {
		return nil, &UnsupportedError{Pos: e.PositionRange(), Construct: "@ modifier"}
	}
	if e.OriginalOffset != 0 {
		return nil, &UnsupportedError{Pos: e.PositionRange(), Construct: "offset modifier"}
	}
	if e.Anchored || e.Smoothed {
		return nil, &UnsupportedError{Pos: e.PositionRange(), Construct: "anchored/smoothed selector"}
	}
	named := false
	for _, m := range e.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			c.names = append(c.names, m.Value)
			named = true
		}
	}
	if !named {
		c.anyName = true
	}
	return &selectorNode{store: c.store, matchers: e.LabelMatchers, lookback: c.lookback, gen: math.MaxUint64}, nil
}

func (*selectorNode) valueType() parser.ValueType { return parser.ValueTypeVector }
func (*selectorNode) evalScalar(int64) float64    { return math.NaN() }

func (n *selectorNode) evalVector(_ context.Context, t int64) ([]Sample, error) {
	if g := n.store.Generation(); g != n.gen {
		n.refs = n.store.Select(n.refs[:0], n.matchers...)
		n.gen = g
	}
	ref := t - n.offset
	n.out = n.out[:0]
	for _, r := range n.refs {
		s, ok := n.store.Latest(r, ref)
		if !ok || s.T <= ref-n.lookback || value.IsStaleNaN(s.V) {
			continue
		}
		n.out = append(n.out, Sample{Labels: n.store.Labels(r), F: s.V})
	}
	return n.out, nil
}

// aggNode implements sum, avg, min, max and count with by/without.
type aggNode struct {
	op       parser.ItemType
	child    node
	by       bool
	grouping []string

	out    []Sample
	groups map[uint64]int
	counts []float64
	comp   []float64 // Kahan compensation per group
	buf    []byte
}

func (c *compiler) compileAggregate(e *parser.AggregateExpr) (node, error) {
	switch e.Op {
	case parser.SUM, parser.AVG, parser.MIN, parser.MAX, parser.COUNT:
	default:
		return nil, &UnsupportedError{Pos: e.PositionRange(), Construct: "aggregation " + e.Op.String()}
	}
	child, err := c.compile(e.Expr)
	if err != nil {
		return nil, err
	}
	g := slices.Clone(e.Grouping)
	slices.Sort(g)
	return &aggNode{op: e.Op, child: child, by: !e.Without, grouping: g, groups: map[uint64]int{}}, nil
}

func (*aggNode) valueType() parser.ValueType { return parser.ValueTypeVector }
func (*aggNode) evalScalar(int64) float64    { return math.NaN() }

func (n *aggNode) evalVector(ctx context.Context, t int64) ([]Sample, error) {
	in, err := n.child.evalVector(ctx, t)
	if err != nil {
		return nil, err
	}
	n.out, n.counts, n.comp = n.out[:0], n.counts[:0], n.comp[:0]
	clear(n.groups)
	for _, s := range in {
		var h uint64
		var lset labels.Labels
		if n.by {
			h, n.buf = s.Labels.HashForLabels(n.buf, n.grouping...)
		} else {
			h, n.buf = s.Labels.HashWithoutLabels(n.buf, n.grouping...)
		}
		i, ok := n.groups[h]
		if !ok {
			if n.by {
				lset = s.Labels.MatchLabels(true, n.grouping...)
			} else {
				lset = s.Labels.MatchLabels(false, append(slices.Clone(n.grouping), labels.MetricName)...)
			}
			i = len(n.out)
			n.groups[h] = i
			n.out = append(n.out, Sample{Labels: lset, F: s.F})
			n.counts = append(n.counts, 1)
			n.comp = append(n.comp, 0)
			if n.op == parser.COUNT {
				n.out[i].F = 1
			}
			continue
		}
		n.counts[i]++
		cur := &n.out[i]
		switch n.op {
		case parser.SUM, parser.AVG:
			cur.F, n.comp[i] = kahanInc(s.F, cur.F, n.comp[i])
		case parser.COUNT:
			cur.F++
		case parser.MIN:
			if cur.F > s.F || math.IsNaN(cur.F) {
				cur.F = s.F
			}
		case parser.MAX:
			if cur.F < s.F || math.IsNaN(cur.F) {
				cur.F = s.F
			}
		}
	}
	for i := range n.out {
		switch n.op {
		case parser.SUM:
			if !math.IsInf(n.out[i].F, 0) {
				n.out[i].F += n.comp[i]
			}
		case parser.AVG:
			if !math.IsInf(n.out[i].F, 0) {
				n.out[i].F += n.comp[i]
			}
			n.out[i].F /= n.counts[i]
		}
	}
	return n.out, nil
}

// kahanInc is Prometheus's Kahan-Babuska-Neumaier step (util/kahansum).
func kahanInc(inc, sum, c float64) (newSum, newC float64) {
	t := sum + inc
	switch {
	case math.IsInf(t, 0):
		c = 0
	case math.Abs(sum) >= math.Abs(inc):
		c += (sum - t) + inc
	default:
		c += (inc - t) + sum
	}
	return t, c
}
