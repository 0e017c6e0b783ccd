package query

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// metadataLabels are dropped with __name__ (schema.IsMetadataLabel); sorted.
var metadataLabels = []string{model.MetricNameLabel, "__type__", "__unit__"}

func isMetadataLabel(name string) bool {
	return name == model.MetricNameLabel || name == "__type__" || name == "__unit__"
}

// dropMetadata removes __name__, __type__ and __unit__. It does not allocate
// when they sort first, which they always do ("__n" < "__t" < "__u" and
// every other label starting with "__" is rare).
func dropMetadata(l labels.Labels) labels.Labels {
	return l.DropReserved(isMetadataLabel)
}

type compiler struct {
	store     *store.Store
	lookback  int64
	normalize bool
	names     []string
	anyName   bool
	window    int64 // ms, see Plan.Window
}

func unsupported(expr parser.Node, construct, reason string) error {
	return &UnsupportedError{Pos: expr.PositionRange(), Construct: construct, Reason: reason}
}

func (c *compiler) compile(expr parser.Expr) (node, error) {
	switch e := expr.(type) {
	case *parser.ParenExpr:
		return c.compile(e.Expr)
	case *parser.StepInvariantExpr:
		return c.compile(e.Expr)
	case *parser.NumberLiteral:
		return &numNode{v: e.Val}, nil
	case *parser.StringLiteral:
		return nil, unsupported(e, "string literal", "a string is only accepted as a function argument")
	case *parser.VectorSelector:
		set, offset, err := c.selector(e, c.lookback)
		if err != nil {
			return nil, err
		}
		return &selectorNode{set: set, offset: offset, lookback: c.lookback}, nil
	case *parser.MatrixSelector:
		return nil, unsupported(e, "range vector result", "a range vector is only accepted as the argument of a range function")
	case *parser.SubqueryExpr:
		return nil, unsupported(e, "subquery", "subqueries are not implemented")
	case *parser.UnaryExpr:
		child, err := c.compile(e.Expr)
		if err != nil {
			return nil, err
		}
		if e.Op != parser.SUB {
			return child, nil
		}
		if child.valueType() == parser.ValueTypeScalar {
			return &negScalarNode{child: child}, nil
		}
		return &negVectorNode{child: child}, nil
	case *parser.BinaryExpr:
		return c.binary(e)
	case *parser.AggregateExpr:
		return c.aggregate(e)
	case *parser.Call:
		return c.call(e)
	default:
		return nil, unsupported(expr, nodeName(expr), "")
	}
}

func nodeName(expr parser.Node) string {
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

// selector compiles the matchers of a vector selector into a cached series
// set, and returns its offset in ms. window is the lookback or the range.
func (c *compiler) selector(e *parser.VectorSelector, window int64) (*seriesSet, int64, error) {
	switch {
	case e.Timestamp != nil || e.StartOrEnd != 0:
		return nil, 0, unsupported(e, "@ modifier", "the @ modifier is not implemented")
	case e.Anchored:
		return nil, 0, unsupported(e, "anchored modifier", "anchored selectors are not implemented")
	case e.Smoothed:
		return nil, 0, unsupported(e, "smoothed modifier", "smoothed selectors are not implemented")
	case e.OriginalOffsetExpr != nil:
		return nil, 0, unsupported(e, "offset duration expression", "duration expressions are not implemented")
	}
	offset := e.OriginalOffset.Milliseconds()
	c.window = max(c.window, window+offset)
	ms := make([]*labels.Matcher, 0, len(e.LabelMatchers))
	named := false
	for _, m := range e.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			if !slices.Contains(c.names, m.Value) {
				c.names = append(c.names, m.Value)
			}
			named = true
		}
		if c.normalize {
			m = normalizeNumericMatcher(m)
		}
		ms = append(ms, m)
	}
	if !named {
		c.anyName = true
	}
	return &seriesSet{store: c.store, matchers: ms, gen: ^uint64(0)}, offset, nil
}

// normalizeNumericMatcher rewrites an = or != matcher on le or quantile
// whose value is a float to the OpenMetrics canonical form the receiver
// stores, so {le="1"}, {le="1.0"} and {le="1e0"} select the same series
// (otlp-contract.md §6). Regex matchers are left alone.
func normalizeNumericMatcher(m *labels.Matcher) *labels.Matcher {
	if (m.Name != labels.BucketLabel && m.Name != "quantile") ||
		(m.Type != labels.MatchEqual && m.Type != labels.MatchNotEqual) {
		return m
	}
	f, err := strconv.ParseFloat(m.Value, 64)
	if err != nil {
		return m
	}
	canon := labels.FormatOpenMetricsFloat(f)
	if canon == m.Value {
		return m
	}
	nm, err := labels.NewMatcher(m.Type, m.Name, canon)
	if err != nil {
		return m
	}
	return nm
}

func (c *compiler) binary(e *parser.BinaryExpr) (node, error) {
	if vm := e.VectorMatching; vm != nil && (vm.FillValues.LHS != nil || vm.FillValues.RHS != nil) {
		return nil, unsupported(e, "fill modifier", "fill modifiers are not implemented")
	}
	switch e.Op {
	case parser.ADD, parser.SUB, parser.MUL, parser.DIV, parser.MOD, parser.POW, parser.ATAN2,
		parser.EQLC, parser.NEQ, parser.GTR, parser.LSS, parser.GTE, parser.LTE,
		parser.LAND, parser.LOR, parser.LUNLESS:
	default:
		return nil, unsupported(e, "binary operator "+e.Op.String(), "")
	}
	lhs, err := c.compile(e.LHS)
	if err != nil {
		return nil, err
	}
	rhs, err := c.compile(e.RHS)
	if err != nil {
		return nil, err
	}
	lt, rt := lhs.valueType(), rhs.valueType()
	switch {
	case lt == parser.ValueTypeScalar && rt == parser.ValueTypeScalar:
		return &scalarBinNode{op: e.Op, lhs: lhs, rhs: rhs}, nil
	case lt == parser.ValueTypeVector && rt == parser.ValueTypeScalar:
		return &vsBinNode{op: e.Op, vec: lhs, sc: rhs, returnBool: e.ReturnBool}, nil
	case lt == parser.ValueTypeScalar && rt == parser.ValueTypeVector:
		return &vsBinNode{op: e.Op, vec: rhs, sc: lhs, swap: true, returnBool: e.ReturnBool}, nil
	}
	vm := e.VectorMatching
	if vm == nil {
		vm = &parser.VectorMatching{Card: parser.CardOneToOne}
	}
	sig := newSignature(vm.On, vm.MatchingLabels)
	switch e.Op {
	case parser.LAND, parser.LOR, parser.LUNLESS:
		return &setNode{op: e.Op, lhs: lhs, rhs: rhs, sig: sig}, nil
	}
	if vm.Card == parser.CardManyToMany {
		return nil, unsupported(e, "many-to-many matching", "only set operators match many-to-many")
	}
	return &vvBinNode{
		op: e.Op, lhs: lhs, rhs: rhs, sig: sig, returnBool: e.ReturnBool,
		card: vm.Card, on: vm.On, matching: slices.Clone(vm.MatchingLabels), include: slices.Clone(vm.Include),
	}, nil
}

func (c *compiler) aggregate(e *parser.AggregateExpr) (node, error) {
	switch e.Op {
	case parser.SUM, parser.AVG, parser.MIN, parser.MAX, parser.COUNT, parser.GROUP,
		parser.STDDEV, parser.STDVAR, parser.QUANTILE, parser.TOPK, parser.BOTTOMK:
	default:
		return nil, unsupported(e, "aggregation "+e.Op.String(), "")
	}
	var param node
	if e.Param != nil {
		p, err := c.compile(e.Param)
		if err != nil {
			return nil, err
		}
		param = p
	}
	child, err := c.compile(e.Expr)
	if err != nil {
		return nil, err
	}
	g := slices.Clone(e.Grouping)
	if e.Without {
		g = append(g, metadataLabels...)
	}
	slices.Sort(g)
	g = slices.Compact(g)
	return &aggNode{op: e.Op, child: child, param: param, without: e.Without, grouping: g}, nil
}

// rangeFuncs maps each range-vector function to its kernel.
var rangeFuncs = map[string]rangeKind{
	"rate": fnRate, "increase": fnIncrease, "delta": fnDelta,
	"irate": fnIrate, "idelta": fnIdelta,
	"deriv": fnDeriv, "predict_linear": fnPredictLinear,
	"changes": fnChanges, "resets": fnResets,
	"avg_over_time": fnAvgOverTime, "min_over_time": fnMinOverTime, "max_over_time": fnMaxOverTime,
	"sum_over_time": fnSumOverTime, "count_over_time": fnCountOverTime,
	"last_over_time": fnLastOverTime, "first_over_time": fnFirstOverTime,
	"quantile_over_time": fnQuantileOverTime,
	"stddev_over_time":   fnStddevOverTime, "stdvar_over_time": fnStdvarOverTime,
	"present_over_time": fnPresentOverTime, "absent_over_time": fnAbsentOverTime,
}

// mathFuncs are the element-wise functions without parameters.
var mathFuncs = map[string]mathKind{
	"abs": mathAbs, "ceil": mathCeil, "floor": mathFloor, "sqrt": mathSqrt,
	"exp": mathExp, "ln": mathLn, "log2": mathLog2, "log10": mathLog10, "sgn": mathSgn,
}

func (c *compiler) scalarArgs(args parser.Expressions) ([]node, error) {
	out := make([]node, 0, len(args))
	for _, a := range args {
		n, err := c.compile(a)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func (c *compiler) call(e *parser.Call) (node, error) {
	name := e.Func.Name
	if !supportedFunctions[name] {
		return nil, unsupported(e, "function "+name, "")
	}
	if kind, ok := rangeFuncs[name]; ok {
		return c.rangeCall(e, kind)
	}
	if kind, ok := mathFuncs[name]; ok {
		child, err := c.compile(e.Args[0])
		if err != nil {
			return nil, err
		}
		return &mathNode{kind: kind, child: child}, nil
	}
	switch name {
	case "time":
		return &timeNode{}, nil
	case "vector":
		arg, err := c.compile(e.Args[0])
		if err != nil {
			return nil, err
		}
		return &vectorFnNode{arg: arg}, nil
	case "scalar":
		child, err := c.compile(e.Args[0])
		if err != nil {
			return nil, err
		}
		return &scalarFnNode{child: child}, nil
	case "round":
		args, err := c.scalarArgs(e.Args)
		if err != nil {
			return nil, err
		}
		n := &mathNode{kind: mathRound, child: args[0]}
		if len(args) > 1 {
			n.arg1 = args[1]
		}
		return n, nil
	case "clamp", "clamp_min", "clamp_max":
		args, err := c.scalarArgs(e.Args)
		if err != nil {
			return nil, err
		}
		n := &clampNode{child: args[0]}
		switch name {
		case "clamp":
			n.lo, n.hi = args[1], args[2]
		case "clamp_min":
			n.lo = args[1]
		default:
			n.hi = args[1]
		}
		return n, nil
	case "absent":
		child, err := c.compile(e.Args[0])
		if err != nil {
			return nil, err
		}
		return &absentNode{child: child, lset: absentLabels(e.Args[0])}, nil
	case "histogram_quantile":
		args, err := c.scalarArgs(e.Args)
		if err != nil {
			return nil, err
		}
		return &hqNode{q: args[0], child: args[1]}, nil
	case "sort", "sort_desc":
		child, err := c.compile(e.Args[0])
		if err != nil {
			return nil, err
		}
		return &sortNode{child: child, desc: name == "sort_desc"}, nil
	case "timestamp":
		child, err := c.compile(e.Args[0])
		if err != nil {
			return nil, err
		}
		_, direct := e.Args[0].(*parser.VectorSelector)
		return &timestampNode{child: child, sampleTime: direct}, nil
	case "label_replace":
		return c.labelReplace(e)
	case "label_join":
		return c.labelJoin(e)
	}
	return nil, unsupported(e, "function "+name, "")
}

func (c *compiler) rangeCall(e *parser.Call, kind rangeKind) (node, error) {
	n := &rangeNode{kind: kind, dropName: kind != fnLastOverTime && kind != fnFirstOverTime}
	var msel *parser.MatrixSelector
	for _, a := range e.Args {
		for {
			p, ok := a.(*parser.ParenExpr)
			if !ok || p.Expr.Type() != parser.ValueTypeMatrix {
				break
			}
			a = p.Expr
		}
		switch a := a.(type) {
		case *parser.MatrixSelector:
			msel = a
		case *parser.SubqueryExpr:
			return nil, unsupported(a, "subquery", "subqueries are not implemented")
		default:
			if a.Type() == parser.ValueTypeMatrix {
				return nil, unsupported(a, nodeName(a), "the range argument must be a range selector")
			}
			p, err := c.compile(a)
			if err != nil {
				return nil, err
			}
			n.param = p
		}
	}
	if msel == nil {
		return nil, unsupported(e, "function "+e.Func.Name, "the range argument must be a range selector")
	}
	if msel.RangeExpr != nil {
		return nil, unsupported(msel, "range duration expression", "duration expressions are not implemented")
	}
	vs, ok := msel.VectorSelector.(*parser.VectorSelector)
	if !ok {
		return nil, unsupported(msel, "range selector", "")
	}
	n.rng = msel.Range.Milliseconds()
	set, offset, err := c.selector(vs, n.rng)
	if err != nil {
		return nil, err
	}
	n.set, n.offset = set, offset
	if kind == fnAbsentOverTime {
		n.absent = absentLabels(msel)
	}
	return n, nil
}

// absentLabels is Prometheus's createLabelsForAbsentFunction: the labels of
// the equality matchers that appear once, metadata labels excluded.
func absentLabels(expr parser.Expr) labels.Labels {
	var lm []*labels.Matcher
	switch n := expr.(type) {
	case *parser.VectorSelector:
		lm = n.LabelMatchers
	case *parser.MatrixSelector:
		if vs, ok := n.VectorSelector.(*parser.VectorSelector); ok {
			lm = vs.LabelMatchers
		}
	default:
		return labels.EmptyLabels()
	}
	b := labels.NewBuilder(labels.EmptyLabels())
	has := make(map[string]bool, len(lm))
	for _, m := range lm {
		if isMetadataLabel(m.Name) {
			continue
		}
		if m.Type == labels.MatchEqual && !has[m.Name] {
			b.Set(m.Name, m.Value)
			has[m.Name] = true
		} else {
			b.Del(m.Name)
		}
	}
	return b.Labels()
}

func stringArg(e parser.Expr) string {
	for {
		switch x := e.(type) {
		case *parser.StringLiteral:
			return x.Val
		case *parser.ParenExpr:
			e = x.Expr
		case *parser.StepInvariantExpr:
			e = x.Expr
		default:
			return ""
		}
	}
}

func (c *compiler) labelReplace(e *parser.Call) (node, error) {
	n := &labelNode{
		dst:  stringArg(e.Args[1]),
		repl: stringArg(e.Args[2]),
		src:  stringArg(e.Args[3]),
	}
	re := stringArg(e.Args[4])
	var err error
	if n.re, err = regexp.Compile("^(?s:" + re + ")$"); err != nil {
		return nil, fmt.Errorf("invalid regular expression in label_replace(): %s", re)
	}
	if !model.UTF8Validation.IsValidLabelName(n.dst) {
		return nil, fmt.Errorf("invalid destination label name in label_replace(): %s", n.dst)
	}
	if n.child, err = c.compile(e.Args[0]); err != nil {
		return nil, err
	}
	return n, nil
}

func (c *compiler) labelJoin(e *parser.Call) (node, error) {
	n := &labelNode{join: true, dst: stringArg(e.Args[1]), sep: stringArg(e.Args[2])}
	for _, a := range e.Args[3:] {
		src := stringArg(a)
		if !model.UTF8Validation.IsValidLabelName(src) {
			return nil, fmt.Errorf("invalid source label name in label_join(): %s", src)
		}
		n.srcs = append(n.srcs, src)
	}
	if !model.UTF8Validation.IsValidLabelName(n.dst) {
		return nil, fmt.Errorf("invalid destination label name in label_join(): %s", n.dst)
	}
	var err error
	if n.child, err = c.compile(e.Args[0]); err != nil {
		return nil, err
	}
	return n, nil
}
