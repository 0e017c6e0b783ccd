package compat

import (
	"fmt"
	"math/rand"
	"strings"

	"github.com/cortexproject/promqlsmith"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// subsetFunctions are the functions of the Must and Should tiers
// (promql-subset.md §2). The generator draws only from these; a function
// the engine has not implemented yet is declined at parse time and counted
// as skipped, never compared.
var subsetFunctions = []string{
	// Must.
	"rate", "irate", "increase",
	"avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "last_over_time",
	"histogram_quantile",
	"vector", "scalar", "clamp", "clamp_min", "clamp_max", "abs", "ceil", "floor", "round", "absent", "time",
	// Should.
	"delta", "idelta", "deriv", "predict_linear", "changes", "resets",
	"quantile_over_time", "stddev_over_time", "stdvar_over_time", "first_over_time", "present_over_time", "absent_over_time",
	"label_replace", "label_join",
	"sqrt", "exp", "ln", "log2", "log10", "sgn", "timestamp", "sort", "sort_desc",
	// Trigonometric and date functions.
	"acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "sin", "sinh", "tan", "tanh",
	"deg", "rad", "pi",
	"days_in_month", "day_of_month", "day_of_week", "day_of_year", "hour", "minute", "month", "year",
	// Experimental.
	"sort_by_label", "sort_by_label_desc", "mad_over_time", "ts_of_first_over_time", "ts_of_last_over_time",
	"ts_of_max_over_time", "ts_of_min_over_time", "double_exponential_smoothing", "integral",
	"min_of", "max_of", "start", "end", "range", "step",
	// Over classic buckets and native histograms.
	"histogram_fraction", "histogram_quantiles",
	// Native histograms.
	"histogram_count", "histogram_sum", "histogram_avg", "histogram_stddev", "histogram_stdvar",
}

// subsetAggrs leaves out topk and bottomk, whose ties make them
// nondeterministic.
var subsetAggrs = []parser.ItemType{
	parser.SUM, parser.AVG, parser.MIN, parser.MAX, parser.COUNT,
	parser.GROUP, parser.STDDEV, parser.STDVAR, parser.QUANTILE,
	parser.COUNT_VALUES, parser.LIMITK, parser.LIMIT_RATIO,
}

var subsetBinops = []parser.ItemType{
	parser.ADD, parser.SUB, parser.MUL, parser.DIV, parser.MOD, parser.POW, parser.ATAN2,
	parser.EQLC, parser.NEQ, parser.LTE, parser.GTE, parser.LSS, parser.GTR,
	parser.LAND, parser.LOR, parser.LUNLESS,
}

// smithSkips are functions promqlsmith cannot write: it leaves integral's
// optional second argument nil. The trigger generator writes them.
var smithSkips = map[string]bool{"integral": true, "histogram_quantiles": true}

func subsetFunctionDefs() []*parser.Function {
	var out []*parser.Function
	for _, name := range subsetFunctions {
		if f, ok := parser.Functions[name]; ok && !smithSkips[name] {
			out = append(out, f)
		}
	}
	return out
}

// newSmith returns promqlsmith restricted to the subset, with subqueries
// (always [1h:1m] there) and @ (start(), end(), or a timestamp drawn from
// [0, the data's end), so mostly before the data: the trigger generator
// writes @ inside the data); offset (negative included) when asked.
func newSmith(rnd *rand.Rand, d *dataset, offset bool) *promqlsmith.PromQLSmith {
	lsets := make([]labels.Labels, len(d.series))
	for i, s := range d.series {
		lsets[i] = s.lset
	}
	return promqlsmith.New(rnd, lsets,
		promqlsmith.WithEnabledFunctions(subsetFunctionDefs()),
		promqlsmith.WithEnabledAggrs(subsetAggrs),
		promqlsmith.WithEnabledBinOps(subsetBinops),
		promqlsmith.WithEnabledExprs([]promqlsmith.ExprType{
			promqlsmith.VectorSelector, promqlsmith.MatrixSelector, promqlsmith.BinaryExpr,
			promqlsmith.AggregateExpr, promqlsmith.CallExpr, promqlsmith.NumberLiteral, promqlsmith.UnaryExpr,
			promqlsmith.SubQueryExpr,
		}),
		promqlsmith.WithEnableOffset(offset),
		promqlsmith.WithEnableAtModifier(true),
		promqlsmith.WithAtModifierMaxTimestamp(d.end),
		promqlsmith.WithEnableVectorMatching(true),
		promqlsmith.WithMaxDepth(4),
	)
}

// smithQuery draws promqlsmith queries until one is an instant vector or
// scalar (it can still return a bare range selector).
func smithQuery(s *promqlsmith.PromQLSmith) string {
	for {
		e := s.WalkInstantQuery()
		if t := e.Type(); t == parser.ValueTypeVector || t == parser.ValueTypeScalar {
			return e.String()
		}
	}
}

// triggerGen writes queries shaped like autoscaling triggers, biased to the
// edges that change scaling numbers: range boundaries, resets, idle
// histograms, empty results, name collisions, vector matching.
type triggerGen struct {
	rnd        *rand.Rand
	start, end int64 // the data's time span, for @ timestamps
}

func newTriggerGen(rnd *rand.Rand, d *dataset) *triggerGen {
	return &triggerGen{rnd: rnd, start: d.start, end: d.end}
}

var (
	gauges   = []string{"vllm:num_requests_waiting", "vllm:num_requests_running", "collide_a", "my.metric", "big_gauge"}
	counters = []string{
		"vllm:prompt_tokens_total", "vllm:generation_tokens_total", "http_requests_total", "collide_b",
		"vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count",
	}
	ranges = []string{"15s", "30s", "37s", "45s", "1m", "90s", "2m", "3m", "5m", "10m"}
)

func (g *triggerGen) pick(xs []string) string { return xs[g.rnd.Intn(len(xs))] }

// name writes a metric name, quoted when it is not a legacy name.
func quoteName(n string) string {
	if strings.ContainsAny(n, ".") {
		return fmt.Sprintf("{%q", n)
	}
	return n + "{"
}

// sel writes a selector for metric name n with random extra matchers.
func (g *triggerGen) sel(n string) string {
	var ms []string
	switch g.rnd.Intn(10) {
	case 0:
		ms = append(ms, fmt.Sprintf(`pod="p%d"`, g.rnd.Intn(4)))
	case 1:
		ms = append(ms, fmt.Sprintf(`pod=~"p[0-%d]"`, g.rnd.Intn(4)))
	case 2:
		ms = append(ms, `model_name!="m1"`)
	case 3:
		ms = append(ms, `pod!~"p1|p2"`)
	case 4:
		ms = append(ms, `model_name=""`)
	case 5:
		ms = append(ms, `model_name=~"m1|"`)
	case 6:
		ms = append(ms, `namespace="ns"`, `model_name="m2"`)
	}
	s := quoteName(n)
	if strings.HasPrefix(s, "{") && len(ms) > 0 {
		s += ","
	}
	s += strings.Join(ms, ",") + "}"
	if s == n+"{}" {
		s = n
	}
	if g.rnd.Intn(12) == 0 {
		s += " offset " + g.pick([]string{"30s", "1m", "-30s", "-1m", "5m"})
	}
	return s
}

func (g *triggerGen) rangeSel(n string) string {
	s := g.sel(n)
	// offset must follow the range.
	if i := strings.Index(s, " offset "); i >= 0 {
		return s[:i] + "[" + g.pick(ranges) + "]" + s[i:]
	}
	return s + "[" + g.pick(ranges) + "]"
}

func (g *triggerGen) grouping() string {
	switch g.rnd.Intn(6) {
	case 0:
		return " by (pod)"
	case 1:
		return " by (model_name)"
	case 2:
		return " without (pod)"
	case 3:
		return " by (pod, model_name)"
	}
	return ""
}

func (g *triggerGen) agg(inner string) string {
	op := g.pick([]string{"sum", "sum", "sum", "avg", "max", "min", "count", "group", "stddev", "stdvar", "quantile"})
	if op == "quantile" {
		return fmt.Sprintf("quantile%s (%s, %s)", g.grouping(), g.quantile(), inner)
	}
	return fmt.Sprintf("%s%s (%s)", op, g.grouping(), inner)
}

func (g *triggerGen) quantile() string {
	return g.pick([]string{"0", "0.5", "0.9", "0.95", "0.99", "1", "-0.5", "1.5", "NaN"})
}

// counterFn applies a range function that fits counters to a selector.
func (g *triggerGen) counterFn(n string) string {
	fn := g.pick([]string{"rate", "rate", "rate", "increase", "irate", "resets", "changes"})
	return fmt.Sprintf("%s(%s)", fn, g.rangeSel(n))
}

func (g *triggerGen) gaugeFn(n string) string {
	switch fn := g.pick([]string{
		"avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time",
		"last_over_time", "stddev_over_time", "present_over_time", "delta", "idelta", "deriv", "quantile_over_time", "predict_linear",
	}); fn {
	case "quantile_over_time":
		return fmt.Sprintf("%s(%s, %s)", fn, g.quantile(), g.rangeSel(n))
	case "predict_linear":
		return fmt.Sprintf("%s(%s, %s)", fn, g.rangeSel(n), g.pick([]string{"0", "60", "-30", "300"}))
	default:
		return fmt.Sprintf("%s(%s)", fn, g.rangeSel(n))
	}
}

// vec writes an instant-vector expression over one metric.
func (g *triggerGen) vec() string {
	switch g.rnd.Intn(4) {
	case 0:
		return g.sel(g.pick(gauges))
	case 1:
		return g.gaugeFn(g.pick(gauges))
	default:
		return g.counterFn(g.pick(counters))
	}
}

func (g *triggerGen) histogramQuantile() string {
	by := g.pick([]string{"le", "le", "le, model_name", "le, pod", "pod, le"})
	inner := fmt.Sprintf("sum by (%s) (rate(%s))", by, g.rangeSel("vllm:time_to_first_token_seconds_bucket"))
	if g.rnd.Intn(5) == 0 {
		inner = fmt.Sprintf("rate(%s)", g.rangeSel("vllm:time_to_first_token_seconds_bucket"))
	}
	if g.rnd.Intn(8) == 0 {
		inner = g.sel("vllm:time_to_first_token_seconds_bucket")
	}
	if g.rnd.Intn(8) == 0 {
		inner = g.pick([]string{"odd_bucket", `sum by (le) (odd_bucket)`, `rate(odd_bucket[2m])`, `odd_bucket{pod="p1"}`})
	}
	switch g.rnd.Intn(6) {
	case 0:
		return fmt.Sprintf("histogram_fraction(%s, %s, %s)", g.pick([]string{"0", "-Inf", "0.1", "0.25", "NaN"}),
			g.pick([]string{"0.5", "1", "+Inf", "2.5", "0.1"}), inner)
	case 1:
		return fmt.Sprintf("histogram_quantiles(%s, %q, %s, %s)", inner, g.pick([]string{"q", "quantile", "pod"}), g.quantile(), g.quantile())
	}
	return fmt.Sprintf("histogram_quantile(%s, %s)", g.quantile(), inner)
}

func (g *triggerGen) match() string {
	switch g.rnd.Intn(5) {
	case 0:
		return " on (pod)"
	case 1:
		return " ignoring (code)"
	case 2:
		return " on ()"
	}
	return ""
}

// native writes a query over native histograms (OTLP exponential
// histograms as the receiver stores them): the trigger shapes over them,
// and every operation PromQL defines on histograms, including the ones
// that drop or ignore them.
func (g *triggerGen) native() string {
	nh := func() string { return g.sel(g.pick(nativeNames[:2])) }
	nhr := func() string { return g.rangeSel(g.pick(nativeNames)) }
	rateish := func() string {
		return fmt.Sprintf("%s(%s)", g.pick([]string{"rate", "rate", "increase", "delta", "irate", "idelta"}), nhr())
	}
	summed := func() string {
		return fmt.Sprintf("%s%s (%s)", g.pick([]string{"sum", "sum", "avg"}), g.pick([]string{"", " by (pod)", " by (model_name)", " without (pod)"}), rateish())
	}
	switch g.rnd.Intn(20) {
	case 0, 1, 2:
		return fmt.Sprintf("histogram_quantile(%s, %s)", g.quantile(), g.pick([]string{summed(), rateish(), nh(), summed()}))
	case 3:
		return fmt.Sprintf("histogram_fraction(%s, %s, %s)", g.pick([]string{"0", "-Inf", "0.01", "0.1", "NaN", "-0.5"}),
			g.pick([]string{"0.05", "0.5", "1", "+Inf", "0"}), g.pick([]string{summed(), nh(), rateish()}))
	case 4:
		return fmt.Sprintf("histogram_quantiles(%s, %q, %s, %s)", g.pick([]string{summed(), nh()}), g.pick([]string{"q", "quantile"}), g.quantile(), g.quantile())
	case 5, 6:
		return fmt.Sprintf("%s(%s)", g.pick([]string{"histogram_count", "histogram_sum", "histogram_avg", "histogram_stddev", "histogram_stdvar"}),
			g.pick([]string{summed(), rateish(), nh(), "sum(" + nh() + ")"}))
	case 7:
		return g.pick([]string{summed(), rateish()})
	case 8:
		return fmt.Sprintf("%s(%s)", g.pick([]string{"sum", "avg", "count", "max", "min", "group", "stddev", "quantile(0.5,"}), nh())
	case 9:
		return fmt.Sprintf("%s(%s)", g.pick([]string{
			"changes", "resets", "sum_over_time", "avg_over_time", "count_over_time", "last_over_time", "first_over_time",
			"present_over_time", "max_over_time", "ts_of_last_over_time", "ts_of_first_over_time", "deriv", "quantile_over_time(0.5,",
		}), nhr())
	case 10:
		return fmt.Sprintf("%s %s %s", nh(), g.pick([]string{"*", "/", "+", "-", "==", "!=", ">", "</", ">/"}), g.pick([]string{"2", "0.5", "-1", "0", "0.1"}))
	case 11:
		x := g.pick(nativeNames[:2])
		return fmt.Sprintf("%s %s %s", x, g.pick([]string{"+", "-", "==", "!=", "*", "/"}), g.pick([]string{x, x + " offset 1m", "2 * " + x, x + " * 0"}))
	case 12:
		return fmt.Sprintf("%s %s %s", g.pick([]string{"2", "-1", "0"}), g.pick([]string{"*", "/", "+"}), nh())
	case 13:
		return fmt.Sprintf("%s(%s)", g.pick([]string{"-", "abs", "sort", "sort_desc", "timestamp", "scalar", "clamp_min", "round", "label_replace"}), nh()) + ""
	case 14:
		fn := g.pick([]string{"max_over_time", "avg_over_time", "rate", "increase", "sum_over_time", "last_over_time", "count_over_time", "resets"})
		inner := g.pick([]string{
			"histogram_quantile(0.9, " + summed() + ")",
			summed(),
			"sum(" + nh() + ")",
			nh(),
			"histogram_count(" + summed() + ")",
		})
		return fmt.Sprintf("%s((%s)%s)", fn, inner, g.subqRange())
	case 15:
		return fmt.Sprintf("histogram_quantile(%s, sum(rate(%s[%s]%s)))", g.quantile(), g.pick(nativeNames[:2]), g.pick(ranges), g.at())
	case 16:
		return fmt.Sprintf("%s(mixed_latency[%s])", g.pick([]string{"rate", "increase", "delta", "irate", "changes", "resets", "sum_over_time", "avg_over_time", "count_over_time", "last_over_time", "max_over_time"}), g.pick(ranges))
	case 17:
		return fmt.Sprintf("%s(%s)", g.pick([]string{"sum", "avg", "count", "histogram_count", "histogram_sum"}), g.pick([]string{"mixed_latency", `{__name__=~"mixed_latency|vllm:e2e_request_latency_seconds"}`}))
	case 18:
		return fmt.Sprintf("label_replace(%s, \"dst\", \"$1\", \"pod\", \"p(.*)\")", g.pick([]string{summed(), nh()}))
	default:
		return fmt.Sprintf("count_values(\"h\", %s)", g.pick([]string{nh(), `vllm:e2e_request_latency_seconds{pod="p0"}`}))
	}
}

// next returns one trigger-shaped query.
func (g *triggerGen) next() string {
	switch n := g.rnd.Intn(44); {
	case n >= 34:
		return g.native()
	case n >= 22 && n < 28:
		return g.subquery()
	case n >= 28 && n < 31:
		return g.atQuery()
	case n >= 31:
		return g.newAggr()
	}
	switch g.rnd.Intn(22) {
	case 0, 1:
		return g.agg(g.sel(g.pick(gauges)))
	case 2, 3, 4:
		return g.agg(g.counterFn(g.pick(counters)))
	case 5:
		return g.agg(g.gaugeFn(g.pick(gauges)))
	case 6:
		return fmt.Sprintf("%s / %s", g.agg(g.vec()), g.agg(g.vec()))
	case 7:
		return fmt.Sprintf("sum(%s) / clamp_min(sum(%s), 1)", g.vec(), g.vec())
	case 8:
		return fmt.Sprintf("%s or vector(%s)", g.agg(g.vec()), g.pick([]string{"0", "1", "NaN"}))
	case 9, 10:
		return g.histogramQuantile()
	case 11:
		return fmt.Sprintf("sum(%s > bool %s)", g.counterFn(g.pick(counters)), g.pick([]string{"0", "1", "0.5"}))
	case 12:
		return fmt.Sprintf("%s %s %s", g.vec(), g.pick([]string{">", "<", ">=", "<=", "==", "!="}), g.pick([]string{"0", "3", "10"}))
	case 13:
		lhs := fmt.Sprintf("sum by (pod) (%s)", g.vec())
		rhs := fmt.Sprintf("sum by (pod) (%s)", g.vec())
		return fmt.Sprintf("%s %s%s %s", lhs, g.pick([]string{"/", "*", "+", "-", "and", "or", "unless", ">"}), g.match(), rhs)
	case 14:
		return fmt.Sprintf("%s * on (pod) group_left (model_name) max by (pod, model_name) (%s)",
			g.agg(g.vec()), g.sel("vllm:num_requests_waiting"))
	case 15:
		return g.pick([]string{
			`sum(rate({__name__=~"collide_a|collide_b"}[1m]))`,
			`rate({__name__=~"collide_.*"}[2m])`,
			`-{__name__=~"collide_a|collide_b"}`,
			`{__name__=~"collide_.*"}`,
			`{__name__=~"collide_.*"} > 0`,
			`{__name__=~"collide_.*"} > bool 0`,
			`last_over_time({__name__=~"collide_.*"}[1m])`,
			`sum by (__name__) ({__name__=~"collide_.*"})`,
			`abs({__name__=~"collide_a|collide_b"}) or vector(1)`,
			`label_replace({__name__=~"collide_.*"}, "__name__", "x", "pod", ".*")`,
		})
	case 16:
		return fmt.Sprintf("absent(%s)", g.sel(g.pick(append(gauges, "nothing_here"))))
	case 17:
		return fmt.Sprintf("absent_over_time(%s)", g.rangeSel(g.pick(append(gauges, "nothing_here"))))
	case 18:
		return fmt.Sprintf("%s(%s)", g.pick([]string{"abs", "ceil", "floor", "round", "-", "sqrt", "ln", "sgn", "exp", "timestamp"}), g.agg(g.vec()))
	case 19:
		return fmt.Sprintf("clamp(%s, %s, %s)", g.vec(), g.pick([]string{"0", "-1", "2"}), g.pick([]string{"1", "5", "-3"}))
	case 20:
		return fmt.Sprintf("scalar(%s) %s %s", g.agg(g.vec()), g.pick([]string{"*", "+", "/", ">= bool"}), g.pick([]string{"2", "time()", "scalar(vector(3))"}))
	default:
		return fmt.Sprintf("label_replace(%s, \"dst\", \"$1\", \"pod\", \"p(.*)\")", g.vec())
	}
}

// at writes an @ modifier: start(), end(), or a timestamp in (or just
// outside) the data, sometimes on a sample's millisecond.
func (g *triggerGen) at() string {
	switch g.rnd.Intn(5) {
	case 0:
		return " @ start()"
	case 1:
		return " @ end()"
	}
	span := g.end - g.start
	ts := g.start - span/10 + g.rnd.Int63n(span+span/5)
	if g.rnd.Intn(3) == 0 {
		ts -= ts % 15_000 // a round time
	}
	return fmt.Sprintf(" @ %.3f", float64(ts)/1000)
}

// subqRange writes a subquery's [range:step] with sometimes an offset and
// an @; steps that divide the range, that do not, the default, and a step
// longer than the range.
func (g *triggerGen) subqRange() string {
	r := g.pick([]string{"1m", "2m", "5m", "90s", "10m", "45s", "30s"})
	step := g.pick([]string{"15s", "10s", "30s", "1m", "", "7s", "20s", "2m"})
	s := "[" + r + ":" + step + "]"
	if g.rnd.Intn(5) == 0 {
		s += " offset " + g.pick([]string{"30s", "1m", "-30s", "7s", "-1m"})
	}
	if g.rnd.Intn(5) == 0 {
		s += g.at()
	}
	return s
}

// inner writes the inside of a subquery: trigger shapes over a window.
func (g *triggerGen) inner() string {
	switch g.rnd.Intn(7) {
	case 0:
		return g.sel(g.pick(gauges))
	case 1:
		return g.agg(g.counterFn(g.pick(counters)))
	case 2:
		return fmt.Sprintf("sum(%s)", g.counterFn(g.pick(counters)))
	case 3:
		return g.agg(g.sel(g.pick(gauges)))
	case 4:
		return g.histogramQuantile()
	case 5:
		// A nested subquery.
		return fmt.Sprintf("%s(%s%s)", g.pick([]string{"max_over_time", "avg_over_time", "rate", "sum_over_time"}), g.inner(), g.subqRange())
	default:
		return g.vec()
	}
}

// subquery writes a range function over a subquery, the way triggers
// smooth a spike: max_over_time(sum(rate(x[1m]))[5m:15s]).
func (g *triggerGen) subquery() string {
	fn := g.pick([]string{
		"max_over_time", "max_over_time", "avg_over_time", "min_over_time", "sum_over_time", "count_over_time",
		"last_over_time", "first_over_time", "rate", "increase", "delta", "deriv", "irate", "idelta", "changes", "resets",
		"stddev_over_time", "present_over_time", "absent_over_time", "quantile_over_time", "predict_linear",
		"mad_over_time", "ts_of_max_over_time", "ts_of_last_over_time", "integral", "double_exponential_smoothing",
	})
	arg := "(" + g.inner() + ")" + g.subqRange()
	if g.rnd.Intn(2) == 0 {
		arg = g.inner() + g.subqRange()
		if strings.ContainsAny(arg[:strings.LastIndex(arg, "[")], " ") && !strings.HasSuffix(strings.TrimSpace(arg[:strings.LastIndex(arg, "[")]), ")") {
			arg = "(" + g.inner() + ")" + g.subqRange()
		}
	}
	var q string
	switch fn {
	case "quantile_over_time":
		q = fmt.Sprintf("%s(%s, %s)", fn, g.quantile(), arg)
	case "predict_linear":
		q = fmt.Sprintf("%s(%s, %s)", fn, arg, g.pick([]string{"0", "60", "-30"}))
	case "double_exponential_smoothing":
		q = fmt.Sprintf("%s(%s, %s, %s)", fn, arg, g.pick([]string{"0.5", "0.1", "0.9", "1"}), g.pick([]string{"0.5", "0.3", "0"}))
	default:
		q = fmt.Sprintf("%s(%s)", fn, arg)
	}
	switch g.rnd.Intn(4) {
	case 0:
		q = g.agg(q)
	case 1:
		q = fmt.Sprintf("%s > bool %s", q, g.pick([]string{"0", "1", "5"}))
	}
	return q
}

// atQuery writes selectors, range selectors and aggregations with @.
func (g *triggerGen) atQuery() string {
	gauge, counter := g.pick(gauges), g.pick(counters)
	switch g.rnd.Intn(8) {
	case 0:
		return g.sel(gauge) + g.at()
	case 1:
		return fmt.Sprintf("sum(rate(%s[%s]%s))", counter, g.pick(ranges), g.at())
	case 2:
		return fmt.Sprintf("%s%s - %s", g.sel(gauge), g.at(), g.sel(gauge))
	case 3:
		return fmt.Sprintf("%s(%s[%s]%s)", g.pick([]string{"max_over_time", "avg_over_time", "last_over_time", "count_over_time"}), gauge, g.pick(ranges), g.at())
	case 4:
		return fmt.Sprintf("timestamp(%s%s)", gauge, g.at())
	case 5:
		return fmt.Sprintf("predict_linear(%s[%s]%s, %s)", gauge, g.pick(ranges), g.at(), g.pick([]string{"60", "time() / 1e9"}))
	case 6:
		return fmt.Sprintf("topk(scalar(sum(%s)), %s%s) or vector(0)", gauge, gauge, g.at())
	default:
		return g.agg(g.sel(gauge) + g.at())
	}
}

// newAggr writes count_values, limitk and limit_ratio.
func (g *triggerGen) newAggr() string {
	switch g.rnd.Intn(6) {
	case 0, 1:
		return fmt.Sprintf("count_values%s (%q, %s)", g.grouping(), g.pick([]string{"value", "v", "pod", "__name__", ""}),
			g.pick([]string{g.sel(g.pick(gauges)), "round(" + g.vec() + ")", g.vec()}))
	case 2, 3:
		return fmt.Sprintf("limitk%s (%s, %s)", g.grouping(), g.pick([]string{"1", "2", "0", "-1", "100", "NaN", "scalar(vllm:num_requests_waiting)"}), g.vec())
	default:
		return fmt.Sprintf("limit_ratio%s (%s, %s)", g.grouping(), g.pick([]string{"0.5", "0.3", "-0.5", "1", "0", "1.5", "-2", "NaN"}), g.vec())
	}
}

// corpus are real autoscaling queries (promql-subset.md §2: vLLM, KServe,
// llm-d and KEDA examples), over the dataset's metric names.
var corpus = []string{
	`sum(vllm:num_requests_waiting{model_name="m1"})`,
	`sum(vllm:num_requests_waiting)`,
	`sum(rate(vllm:prompt_tokens_total[2m]))`,
	`sum(vllm:num_requests_waiting) or vector(0)`,
	`sum(vllm:num_requests_waiting{model_name="none"}) or vector(0)`,
	`sum(vllm:num_requests_waiting) / clamp_min(sum(vllm:num_requests_running), 1)`,
	`histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))`,
	`histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[1m])))`,
	`histogram_quantile(0.99, sum by (le, model_name) (rate(vllm:time_to_first_token_seconds_bucket{model_name="m1"}[2m])))`,
	`sum(avg_over_time(vllm:num_requests_waiting[30s]))`,
	`sum(rate(http_requests_total[1m]) > bool 0)`,
	`sum(rate(http_requests_total{code=~"2.."}[2m]))`,
	`sum(increase(http_requests_total{code="500"}[5m])) / sum(increase(http_requests_total[5m]))`,
	`sum(vllm:num_requests_running{namespace="ns"})`,
	`sum by (model_name) (vllm:num_requests_waiting)`,
	`avg(vllm:num_requests_running)`,
	`max(vllm:num_requests_waiting)`,
	`count(vllm:num_requests_running > 0)`,
	`sum(rate(vllm:generation_tokens_total[1m])) + sum(rate(vllm:prompt_tokens_total[1m]))`,
	`sum(rate(vllm:time_to_first_token_seconds_sum[5m])) / sum(rate(vllm:time_to_first_token_seconds_count[5m]))`,
	`sum(irate(vllm:prompt_tokens_total[1m]))`,
	`avg(max_over_time(vllm:num_requests_waiting[2m]))`,
	`sum(last_over_time(vllm:num_requests_waiting[1m]))`,
	`vllm:num_requests_waiting`,
	`{"vllm:num_requests_waiting", pod="p0"}`,
	`scalar(sum(vllm:num_requests_waiting))`,
	`absent(vllm:num_requests_waiting{pod="gone"})`,
	`sum(vllm:num_requests_waiting) > 10`,
	`ceil(sum(vllm:num_requests_waiting) / 4)`,
	`sum(rate(vllm:prompt_tokens_total[2m])) * 60`,
	`clamp_max(sum(vllm:num_requests_waiting), 100)`,
	`sum by (pod) (rate(vllm:prompt_tokens_total[1m])) / on (pod) sum by (pod) (rate(vllm:generation_tokens_total[1m]))`,
	`sum by (pod) (vllm:num_requests_running) * on (pod) group_left (model_name) max by (pod, model_name) (vllm:num_requests_waiting)`,
	`sum(vllm:num_requests_waiting and on (pod) label_replace(vllm:num_requests_running, "pod", "$1", "pod", "(.*)"))`,
	`sum(rate(vllm:prompt_tokens_total[5m] offset 1m))`,
	`time() - max(timestamp(vllm:num_requests_waiting))`,
	// Smoothing with subqueries (issue #16).
	`max_over_time(sum(rate(vllm:prompt_tokens_total[1m]))[5m:15s])`,
	`avg_over_time(sum(vllm:num_requests_waiting)[2m:15s])`,
	`max_over_time(sum by (model_name) (vllm:num_requests_waiting)[5m:])`,
	`quantile_over_time(0.9, histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[1m])))[5m:30s])`,
	`sum(vllm:num_requests_waiting) - sum(vllm:num_requests_waiting offset 1m)`,
	`sum(vllm:num_requests_waiting @ end())`,
	`count_values("queue", vllm:num_requests_waiting)`,
	`limitk(2, vllm:num_requests_waiting)`,
	`limit_ratio(0.5, vllm:num_requests_running)`,
	// Native histograms (OTLP exponential histograms).
	`histogram_quantile(0.9, sum(rate(vllm:e2e_request_latency_seconds[1m])))`,
	`histogram_quantile(0.99, sum by (model_name) (rate(vllm:e2e_request_latency_seconds[5m])))`,
	`histogram_quantile(0.5, rate(vllm:e2e_request_latency_seconds[2m]))`,
	`histogram_count(sum(rate(vllm:e2e_request_latency_seconds[1m])))`,
	`histogram_sum(sum(rate(vllm:e2e_request_latency_seconds[1m]))) / histogram_count(sum(rate(vllm:e2e_request_latency_seconds[1m])))`,
	`histogram_avg(sum(increase(vllm:e2e_request_latency_seconds[5m])))`,
	`histogram_fraction(0, 0.1, sum(rate(vllm:e2e_request_latency_seconds[2m])))`,
	`histogram_stddev(sum(rate(vllm:e2e_request_latency_seconds[1m])))`,
	`histogram_quantile(0.9, sum(vllm:request_queue_time_seconds))`,
	`sum(rate(vllm:e2e_request_latency_seconds_count[1m]))`,
	`max_over_time(histogram_quantile(0.9, sum(rate(vllm:e2e_request_latency_seconds[1m])))[5m:15s])`,
	`vllm:e2e_request_latency_seconds`,
	`sum by (pod) (vllm:e2e_request_latency_seconds)`,
}
