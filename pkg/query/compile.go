package query

import (
	"fmt"
	"math"
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
	subqStep  int64 // ms, the resolution of a subquery that sets none

	// wrap holds the subexpressions Prometheus's PreprocessExpr wraps in
	// a StepInvariantExpr (stepInvariance).
	wrap   map[parser.Expr]bool
	timing []timingItem
	// subqs are the timing items of the subqueries enclosing the node
	// being compiled, outermost first.
	subqs []int
	// frozen is set inside a step-invariant node below the innermost
	// enclosing subquery (or the top).
	frozen bool
	// unprocessed is set inside an aggregation's parameter, which
	// Prometheus's PreprocessExpr does not visit: @ start()/end() there
	// resolve to nothing and nothing is wrapped.
	unprocessed bool
	// extra is the range plus offset of the enclosing subqueries, ms, for
	// the window.
	extra int64
	// held is the plan's bound on the points its subqueries hold.
	held *heldPoints
	// statsOnly holds the selectors whose histograms only need their
	// count and sum (histogramStatsSelectors).
	statsOnly map[*parser.VectorSelector]bool
	// regexes sums the sizes of the plan's regular expressions (regex.go).
	regexes regexBudget
}

func (c *compiler) parent() int {
	if len(c.subqs) == 0 {
		return -1
	}
	return c.subqs[len(c.subqs)-1]
}

func unsupported(expr parser.Node, construct, reason string) error {
	return &UnsupportedError{Pos: expr.PositionRange(), Construct: construct, Reason: reason}
}

// compile compiles expr, wrapped in a step-invariant node where
// Prometheus wraps it.
func (c *compiler) compile(expr parser.Expr) (node, error) {
	if !c.wrap[expr] || c.unprocessed {
		return c.compileNode(expr)
	}
	inv := &invNode{}
	c.timing = append(c.timing, timingItem{inv: inv, parent: c.parent(), frozen: c.frozen})
	frozen := c.frozen
	c.frozen = true
	child, err := c.compileNode(expr)
	c.frozen = frozen
	if err != nil {
		return nil, err
	}
	if _, ok := child.(*numNode); ok {
		return child, nil
	}
	inv.child = child
	return inv, nil
}

func (c *compiler) compileNode(expr parser.Expr) (node, error) {
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
		set, offset, at, err := c.selector(e, c.lookback, false)
		if err != nil {
			return nil, err
		}
		return &selectorNode{set: set, offset: offset, at: at, lookback: c.lookback, statsOnly: c.statsOnly[e]}, nil
	case *parser.MatrixSelector:
		return nil, unsupported(e, "range vector result", "a range vector is only accepted as the argument of a range function")
	case *parser.SubqueryExpr:
		return nil, unsupported(e, "range vector result", "a subquery is only accepted as the argument of a range function")
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
// set, and returns its offset in ms and its @ modifier. window is the
// lookback or the range; inMatrix tells a range selector's.
func (c *compiler) selector(e *parser.VectorSelector, window int64, inMatrix bool) (*seriesSet, int64, *atMod, error) {
	switch {
	case e.Anchored:
		return nil, 0, nil, unsupported(e, "anchored modifier", "anchored selectors are not implemented")
	case e.Smoothed:
		return nil, 0, nil, unsupported(e, "smoothed modifier", "smoothed selectors are not implemented")
	case e.OriginalOffsetExpr != nil:
		return nil, 0, nil, unsupported(e, "offset duration expression", "duration expressions are not implemented")
	}
	offset := e.OriginalOffset.Milliseconds()
	at := c.atModifier(e.Timestamp, e.StartOrEnd, offset)
	if at != nil {
		// Prometheus neither wraps nor preprocesses a selector in an
		// aggregation parameter: it reads at each step minus the offset
		// fixed for the query. A range selector is fetched once anyway.
		at.perStep = c.unprocessed && !inMatrix
		c.timing = append(c.timing, timingItem{at: at, parent: c.parent(), frozen: c.frozen})
	}
	c.window = max(c.window, window+offset+c.extra)
	ms := make([]*labels.Matcher, 0, len(e.LabelMatchers))
	named := false
	for _, m := range e.LabelMatchers {
		if m.Type == labels.MatchRegexp || m.Type == labels.MatchNotRegexp {
			if err := c.regexes.add(m.Value, int(e.PosRange.Start), true); err != nil {
				return nil, 0, nil, err
			}
		}
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
	return &seriesSet{store: c.store, matchers: ms, gen: ^uint64(0)}, offset, at, nil
}

// atModifier returns the @ modifier of a selector or subquery, or nil.
// In an aggregation parameter Prometheus never resolves start()/end(),
// which then have no effect.
func (c *compiler) atModifier(ts *int64, startOrEnd parser.ItemType, offset int64) *atMod {
	if c.unprocessed {
		startOrEnd = 0
	}
	if ts == nil && startOrEnd != parser.START && startOrEnd != parser.END {
		return nil
	}
	a := &atMod{startOrEnd: startOrEnd, orig: offset, chain: slices.Clone(c.subqs)}
	if ts != nil {
		a.ts, a.startOrEnd = *ts, 0
	}
	return a
}

// subquery compiles expr[range:step] offset o @ ts.
func (c *compiler) subquery(e *parser.SubqueryExpr) (*subqueryNode, error) {
	if e.RangeExpr != nil || e.StepExpr != nil || e.OriginalOffsetExpr != nil {
		return nil, unsupported(e, "subquery duration expression", "duration expressions are not implemented")
	}
	s := &subqueryNode{rng: e.Range.Milliseconds(), step: e.Step.Milliseconds(), offset: e.OriginalOffset.Milliseconds(), held: c.held}
	switch {
	case e.Step != 0 && s.step <= 0:
		return nil, unsupported(e, "subquery resolution", "the step must be at least 1ms")
	case s.step <= 0:
		s.step = c.subqStep
	}
	s.at = c.atModifier(e.Timestamp, e.StartOrEnd, s.offset)
	idx := len(c.timing)
	c.timing = append(c.timing, timingItem{sub: s, parent: c.parent(), frozen: c.frozen})
	c.subqs = append(c.subqs, idx)
	frozen, extra := c.frozen, c.extra
	c.frozen, c.extra = false, c.extra+s.rng+s.offset
	child, err := c.compile(e.Expr)
	c.subqs = c.subqs[:len(c.subqs)-1]
	c.frozen, c.extra = frozen, extra
	if err != nil {
		return nil, err
	}
	s.child = child
	if a, ok := child.(*aggNode); ok && a.op == parser.SUM && !a.without && len(a.grouping) == 0 {
		if r, ok := a.child.(*rangeNode); ok && r.at == nil {
			if fused, _, _ := r.fused(); fused {
				s.fused = r
			}
		}
	}
	// Prometheus's range evaluation marks a series for __name__ dropping
	// from its first point, an aggregation's from its last.
	if a, ok := unparen(e.Expr).(*parser.AggregateExpr); ok {
		switch a.Op {
		case parser.TOPK, parser.BOTTOMK, parser.LIMITK, parser.LIMIT_RATIO, parser.COUNT_VALUES:
		default:
			s.dropLast = !c.wrap[e.Expr] && !c.wrap[unparen(e.Expr)]
		}
	}
	return s, nil
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
		parser.LAND, parser.LOR, parser.LUNLESS, parser.TRIM_UPPER, parser.TRIM_LOWER:
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
	if isTrim(e.Op) && lt == parser.ValueTypeScalar && rt == parser.ValueTypeScalar {
		return nil, unsupported(e, "binary operator "+e.Op.String(), "histogram trimming needs a histogram on the left")
	}
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
		parser.STDDEV, parser.STDVAR, parser.QUANTILE, parser.TOPK, parser.BOTTOMK,
		parser.LIMITK, parser.LIMIT_RATIO, parser.COUNT_VALUES:
	default:
		return nil, unsupported(e, "aggregation "+e.Op.String(), "")
	}
	n := &aggNode{op: e.Op, without: e.Without}
	if e.Op == parser.COUNT_VALUES {
		n.valueLabel = stringArg(e.Param)
	} else if e.Param != nil {
		// Prometheus does not preprocess the parameter (no @ start()/end()
		// resolution, no step-invariant wrapping inside it).
		unprocessed := c.unprocessed
		c.unprocessed = true
		p, err := c.compile(e.Param)
		c.unprocessed = unprocessed
		if err != nil {
			return nil, err
		}
		n.param = p
	}
	child, err := c.compile(e.Expr)
	if err != nil {
		return nil, err
	}
	n.child = child
	g := slices.Clone(e.Grouping)
	if e.Without {
		g = append(g, metadataLabels...)
	} else if e.Op == parser.COUNT_VALUES {
		g = append(g, n.valueLabel)
	}
	slices.Sort(g)
	n.grouping = slices.Compact(g)
	return n, nil
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
	"mad_over_time": fnMadOverTime, "ts_of_first_over_time": fnTsOfFirstOverTime,
	"ts_of_last_over_time": fnTsOfLastOverTime, "ts_of_max_over_time": fnTsOfMaxOverTime,
	"ts_of_min_over_time": fnTsOfMinOverTime, "double_exponential_smoothing": fnDoubleExpSmoothing,
	"integral": fnIntegral,
}

// mathFuncs are the element-wise functions without parameters.
var mathFuncs = map[string]mathKind{
	"abs": mathAbs, "ceil": mathCeil, "floor": mathFloor, "sqrt": mathSqrt,
	"exp": mathExp, "ln": mathLn, "log2": mathLog2, "log10": mathLog10, "sgn": mathSgn,
	"acos": mathAcos, "acosh": mathAcosh, "asin": mathAsin, "asinh": mathAsinh, "atan": mathAtan, "atanh": mathAtanh,
	"cos": mathCos, "cosh": mathCosh, "sin": mathSin, "sinh": mathSinh, "tan": mathTan, "tanh": mathTanh,
	"deg": mathDeg, "rad": mathRad,
}

// dateFuncs are the date functions of a timestamp vector (or of time()).
var dateFuncs = map[string]dateKind{
	"days_in_month": dateDaysInMonth, "day_of_month": dateDayOfMonth, "day_of_week": dateDayOfWeek,
	"day_of_year": dateDayOfYear, "hour": dateHour, "minute": dateMinute, "month": dateMonth, "year": dateYear,
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
	if kind, ok := histFns[name]; ok {
		child, err := c.compile(e.Args[0])
		if err != nil {
			return nil, err
		}
		return &histFnNode{kind: kind, child: child}, nil
	}
	if kind, ok := dateFuncs[name]; ok {
		n := &dateNode{kind: kind}
		if len(e.Args) > 0 {
			child, err := c.compile(e.Args[0])
			if err != nil {
				return nil, err
			}
			n.child = child
		}
		return n, nil
	}
	switch name {
	case "time":
		return &timeNode{}, nil
	case "pi":
		return &numNode{v: math.Pi}, nil
	case "start", "end", "range", "step":
		return &frameNode{fn: name}, nil
	case "min_of", "max_of":
		args, err := c.scalarArgs(e.Args)
		if err != nil {
			return nil, err
		}
		return &minMaxNode{max: name == "max_of", a: args[0], b: args[1]}, nil
	case "sort_by_label", "sort_by_label_desc":
		child, err := c.compile(e.Args[0])
		if err != nil {
			return nil, err
		}
		n := &sortByLabelNode{child: child, desc: name == "sort_by_label_desc"}
		for _, a := range e.Args[1:] {
			n.labels = append(n.labels, stringArg(a))
		}
		return n, nil
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
	case "histogram_fraction":
		args, err := c.scalarArgs(e.Args)
		if err != nil {
			return nil, err
		}
		return &hqNode{fraction: true, lo: args[0], hi: args[1], child: args[2]}, nil
	case "histogram_quantiles":
		child, err := c.compile(e.Args[0])
		if err != nil {
			return nil, err
		}
		n := &hqNode{quantiles: true, child: child, qlabel: stringArg(e.Args[1])}
		if n.qs, err = c.scalarArgs(e.Args[2:]); err != nil {
			return nil, err
		}
		c.timing = append(c.timing, timingItem{hq: n, parent: c.parent(), frozen: c.frozen})
		return n, nil
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
		// Upstream special-cases a selector argument (parentheses removed
		// by PreprocessExpr, which skips aggregation parameters): the
		// samples' own times, and with @ the sample at the @ time itself,
		// the offset ignored (rangeEvalTimestampFunctionOverVectorSelector).
		arg := e.Args[0]
		if !c.unprocessed {
			arg = unparen(arg)
		}
		_, direct := arg.(*parser.VectorSelector)
		if sn, ok := child.(*selectorNode); ok && direct && sn.at != nil {
			sn.at.atOnly = true
		}
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
	var (
		msel *parser.MatrixSelector
		subq *parser.SubqueryExpr
	)
	var params []node
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
			subq = a
		default:
			if a.Type() == parser.ValueTypeMatrix {
				return nil, unsupported(a, nodeName(a), "the range argument must be a range selector or a subquery")
			}
			p, err := c.compile(a)
			if err != nil {
				return nil, err
			}
			params = append(params, p)
		}
	}
	if len(params) > 0 {
		n.param = params[0]
	}
	if len(params) > 1 {
		n.param2 = params[1]
	}
	if subq != nil {
		sub, err := c.subquery(subq)
		if err != nil {
			return nil, err
		}
		n.rng = sub.rng
		return &subqFnNode{k: *n, sub: sub}, nil
	}
	if msel == nil {
		return nil, unsupported(e, "function "+e.Func.Name, "the range argument must be a range selector or a subquery")
	}
	if msel.RangeExpr != nil {
		return nil, unsupported(msel, "range duration expression", "duration expressions are not implemented")
	}
	vs, ok := msel.VectorSelector.(*parser.VectorSelector)
	if !ok {
		return nil, unsupported(msel, "range selector", "")
	}
	n.rng = msel.Range.Milliseconds()
	set, offset, at, err := c.selector(vs, n.rng, true)
	if err != nil {
		return nil, err
	}
	n.set, n.offset, n.at, n.statsOnly = set, offset, at, c.statsOnly[vs]
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
	if err := c.regexes.add(re, int(e.Args[4].PositionRange().Start), false); err != nil {
		return nil, err
	}
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
