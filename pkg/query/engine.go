// Package query evaluates the PromQL subset that autoscaling triggers use,
// with Prometheus's exact semantics, over the in-memory store.
//
// Queries are parsed by Prometheus's own parser, compiled once into a plan
// and evaluated as instant queries at a given time. A query that uses
// anything the compiler does not implement is rejected at compile time with
// an *UnsupportedError carrying the construct and its position; it is never
// answered approximately.
//
// # Plans
//
// Compile turns the AST into a tree of typed nodes (selectors, range
// functions, aggregations, binary and set operators, functions) and keeps
// no AST. Everything static is resolved then: offsets and ranges in ms,
// sorted grouping and matching labels, whether a node drops __name__.
//
// Each node owns its output buffer: the vector it returns is valid until
// the node is evaluated again, and Plan.Eval's Result until the next Eval.
// Selectors cache the series they matched, with their resolved store
// handles; when the store's generation moves they check only the series
// created since (the store's creation log), and select again only after a
// deletion or when the log overflowed. Group labels, join result labels,
// signatures and parsed le bounds are cached by hash or by input position.
// So a warm plan evaluates without allocating (TestEvalSteadyStateAllocs),
// which is why a Plan must not be evaluated by two goroutines at once.
//
// # Hot paths
//
// The trigger shapes of performance.md T6 avoid per-element overheads: the
// clock is read once per Eval (store.Reader); rate, increase and delta
// summarise each ring in place (store.Reader.ScanRange, which reuses the
// previous series' range length as a checked guess), with the
// value-independent half of the extrapolation memoized across series
// sampled at the same times, and sum and sum by take that common case
// inline, without a call per series; sum over a selector or a range
// function accumulates in registers without building elements; sum by and
// sum without index each series' group once per series-set change. Every
// fast path computes exactly what the general path does (bit for bit:
// TestRateWindowMatchesSlices, TestGroupedSumMatchesGenericPath, and the
// differential test in test/compat).
//
// __name__ is dropped the delayed way, as Prometheus does with
// EnableDelayedNameRemoval (promql-subset.md §4.9): nodes mark elements,
// and Plan.Eval removes the metadata labels and checks for collisions.
//
// # Conformance
//
// TestUpstreamConformance runs Prometheus's own promqltest corpus from the
// pinned module (make conformance); TestScripts runs testdata/*.test.
package query

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/parser/posrange"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// DefaultLookbackDelta is Prometheus's default lookback for instant selectors.
const DefaultLookbackDelta = 5 * time.Minute

// ErrUnsupported matches every *UnsupportedError.
var ErrUnsupported = errors.New("unsupported PromQL construct")

// UnsupportedError reports a construct the evaluator does not implement.
type UnsupportedError struct {
	Pos       posrange.PositionRange
	Construct string
	Reason    string
}

func (e *UnsupportedError) Error() string {
	msg := fmt.Sprintf("unsupported PromQL %s at position %d", e.Construct, e.Pos.Start)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Is makes errors.Is(err, ErrUnsupported) true.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// ParseError wraps a parser error; it carries the parser's position text.
type ParseError struct {
	Query string
	Err   error
}

// MaxQueryEcho is how much of the query a ParseError's message repeats:
// a longer query (up to MaxQueryLength, or anything a client sent past
// it) is cut there, with its length stated. Err's positions are in the
// whole query.
const MaxQueryEcho = 128

func (e *ParseError) Error() string {
	if len(e.Query) <= MaxQueryEcho {
		return fmt.Sprintf("parse %q: %v", e.Query, e.Err)
	}
	return fmt.Sprintf("parse %q (%d bytes): %v", clipText(e.Query, MaxQueryEcho), len(e.Query), e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// clipText returns s, or its first n bytes (fewer if n would split a
// UTF-8 sequence) followed by "…" when s is longer.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// ErrBudgetExceeded means an evaluation touched more series and samples
// than Options.MaxSamples allows, or created more label bytes than
// Options.MaxLabelBytes allows. The scaler maps it to ResourceExhausted,
// the HTTP API to Prometheus's execution error (422).
var ErrBudgetExceeded = errors.New("query budget exceeded")

// MaxQueryLength bounds the text of a query. Prometheus's parser and
// expr.String() are quadratic on long chains of operators: a 100 KB query
// takes about 8 s to parse and print on a 2-core machine, 16 KiB about
// 0.2 s. Real triggers are well under 1 KiB.
const MaxQueryLength = 16 << 10

// ErrQueryTooLong means a query is longer than MaxQueryLength. It arrives
// wrapped in a *ParseError.
var ErrQueryTooLong = fmt.Errorf("query longer than %d bytes", MaxQueryLength)

// MaxQueryTokens bounds the tokens (names, numbers, operators and
// brackets, counted by a cheap scan that skips string literals) of a query.
// Deep nesting is quadratic too: 16,000 unary minus signs take 3 s to
// parse, 8,000 nested parentheses 1.5 s; at 2,048 tokens the worst shape
// parses in tens of milliseconds. Real triggers have a few dozen.
const MaxQueryTokens = 2048

// ErrQueryTooComplex means a query has more than MaxQueryTokens tokens. It
// arrives wrapped in a *ParseError.
var ErrQueryTooComplex = fmt.Errorf("query has more than %d tokens", MaxQueryTokens)

// countTokens approximates the lexer: each run of name or number
// characters is one token, each other non-space character outside a string
// literal is one token, and a string literal is one token.
func countTokens(q string) int {
	n := 0
	inWord := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			// Skip the literal, honouring backslash escapes except in
			// raw strings.
			for i++; i < len(q) && q[i] != c; i++ {
				if q[i] == '\\' && c != '`' {
					i++
				}
			}
			n++
			inWord = false
		case c == '_' || c == ':' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80:
			if !inWord {
				n++
			}
			inWord = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			inWord = false
		default:
			n++
			inWord = false
		}
	}
	return n
}

// DefaultMaxSamples is the per-evaluation budget when Options.MaxSamples is
// zero: Prometheus's default --query.max-samples.
const DefaultMaxSamples = 50_000_000

// DefaultMaxLabelBytes is the per-evaluation label budget when neither
// Options.MaxLabelBytes nor the engine's default sets one: 8 MiB of label
// sets created by label_replace and label_join. A label_replace over 20,000
// series with 400-byte label sets creates 8 MB; a query whose labels grow
// with each nested call (each level multiplying a value) fails here, after
// a few MiB of allocation, instead of growing until Prometheus's label
// encoder panics at a 16 MiB value (MaxLabelValueBytes).
const DefaultMaxLabelBytes = 8 << 20

// MaxLabelValueBytes is the longest label value an evaluation may create,
// whatever the budget: Prometheus's label encoding (stringlabels) panics
// on longer strings. A longer value fails with ErrBudgetExceeded.
const MaxLabelValueBytes = 1 << 24

// DefaultSubqueryStep is the resolution of a subquery that sets none
// (`x[5m:]`): Prometheus's default global evaluation interval, which is
// what its engine uses unless the server's configuration changes it.
const DefaultSubqueryStep = time.Minute

// supportedFunctions lists the PromQL functions the compiler implements.
// The parser is restricted to them, so any other call fails at parse time
// with the parser's own `unknown function with name "…"` message and
// position. docs/promql-functions.md lists every function of Prometheus
// v0.316.0 with its status here.
var supportedFunctions = map[string]bool{
	// Must.
	"rate": true, "irate": true, "increase": true,
	"avg_over_time": true, "min_over_time": true, "max_over_time": true,
	"sum_over_time": true, "count_over_time": true, "last_over_time": true,
	"histogram_quantile": true, "vector": true, "scalar": true,
	"clamp": true, "clamp_min": true, "clamp_max": true,
	"abs": true, "ceil": true, "floor": true, "round": true,
	"absent": true, "time": true,
	// Should.
	"label_replace": true, "label_join": true,
	"delta": true, "idelta": true, "deriv": true, "predict_linear": true,
	"changes": true, "resets": true,
	"quantile_over_time": true, "stddev_over_time": true, "stdvar_over_time": true,
	"first_over_time": true, "present_over_time": true, "absent_over_time": true,
	"sqrt": true, "exp": true, "ln": true, "log2": true, "log10": true, "sgn": true,
	"timestamp": true, "sort": true, "sort_desc": true,
	// Trigonometric and date functions.
	"acos": true, "acosh": true, "asin": true, "asinh": true, "atan": true, "atanh": true,
	"cos": true, "cosh": true, "sin": true, "sinh": true, "tan": true, "tanh": true,
	"deg": true, "rad": true, "pi": true,
	"days_in_month": true, "day_of_month": true, "day_of_week": true, "day_of_year": true,
	"hour": true, "minute": true, "month": true, "year": true,
	// Experimental (parser.Options.EnableExperimentalFunctions).
	"sort_by_label": true, "sort_by_label_desc": true,
	"mad_over_time": true, "ts_of_first_over_time": true, "ts_of_last_over_time": true,
	"ts_of_max_over_time": true, "ts_of_min_over_time": true,
	"double_exponential_smoothing": true, "integral": true, "histogram_quantiles": true,
	"start": true, "end": true, "range": true, "step": true, "min_of": true, "max_of": true,
	// Native histograms (and histogram_fraction over classic buckets too).
	"histogram_fraction": true, "histogram_count": true, "histogram_sum": true, "histogram_avg": true,
	"histogram_stddev": true, "histogram_stdvar": true,
}

// Engine compiles and evaluates queries over one store. It is safe for
// concurrent use; each Plan is not.
type Engine struct {
	parser parser.Parser
	// full has every function; it only explains why parser failed.
	full  parser.Parser
	store *store.Store
	// defaults fill the zero fields of a plan's Options (SetDefaults).
	defaults Options
	// exactNumericLabels disables the le/quantile matcher normalisation.
	// Only the upstream conformance runner sets it: it loads Prometheus's
	// test data verbatim, without the receiver's ingest normalisation.
	exactNumericLabels bool
}

// NewEngine returns an engine reading from st. Its parser accepts
// Prometheus's experimental functions and aggregations (limitk,
// limit_ratio, sort_by_label, …: what Prometheus enables with
// --enable-feature=promql-experimental-functions), otherwise has the
// server defaults (no unquoted UTF-8 names, no fill modifiers), and knows
// only the functions the compiler implements.
func NewEngine(st *store.Store) *Engine {
	return newEngine(st, parser.Options{EnableExperimentalFunctions: true})
}

func newEngine(st *store.Store, opts parser.Options) *Engine {
	fns := maps.Clone(parser.Functions)
	for name := range fns {
		if !supportedFunctions[name] {
			delete(fns, name)
		}
	}
	fullOpts := opts
	fullOpts.EnableExperimentalFunctions = true
	full := parser.NewParser(fullOpts)
	opts.Functions = fns
	return &Engine{
		parser: parser.NewParser(opts),
		full:   full,
		store:  st,
	}
}

// SetDefaults sets the budgets a plan gets when its Options leave them zero
// (MaxSamples, MaxSeries, MaxLabelBytes), so every caller of Compile and
// Query, the HTTP API included, is bounded by the operator's settings. It
// must be called before the engine is shared; zero fields keep the
// package defaults.
func (e *Engine) SetDefaults(o Options) {
	e.defaults = Options{MaxSamples: o.MaxSamples, MaxSeries: o.MaxSeries, MaxLabelBytes: o.MaxLabelBytes}
}

// Parse parses q with the engine's restricted parser. Callers may rewrite the
// returned AST (trigger lowering) before compiling it.
func (e *Engine) Parse(q string) (parser.Expr, error) {
	if len(q) > MaxQueryLength {
		return nil, &ParseError{Query: q, Err: ErrQueryTooLong}
	}
	if countTokens(q) > MaxQueryTokens {
		return nil, &ParseError{Query: q, Err: ErrQueryTooComplex}
	}
	// Before the parser compiles the matchers' regular expressions.
	if err := checkMatcherRegexes(q, &regexBudget{}); err != nil {
		return nil, &ParseError{Query: q, Err: err}
	}
	expr, err := e.parser.ParseExpr(q)
	if err != nil {
		if ue := e.unsupportedFunction(q); ue != nil {
			return nil, ue
		}
		return nil, &ParseError{Query: q, Err: err}
	}
	return expr, nil
}

// unsupportedFunction reports the first function the restricted parser does
// not know, when that is the only reason q failed to parse. It runs only on
// the error path.
func (e *Engine) unsupportedFunction(q string) *UnsupportedError {
	expr, err := e.full.ParseExpr(q)
	if err != nil {
		return nil
	}
	var ue *UnsupportedError
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if c, ok := n.(*parser.Call); ok && ue == nil && !supportedFunctions[c.Func.Name] {
			ue = &UnsupportedError{Pos: c.PositionRange(), Construct: "function " + c.Func.Name, Reason: "not implemented by this evaluator"}
		}
		return nil
	})
	return ue
}

// Options tune one compiled plan.
type Options struct {
	// LookbackDelta bounds how far back an instant selector looks for a
	// sample. Zero means DefaultLookbackDelta.
	LookbackDelta time.Duration
	// MaxSamples caps the series and samples one evaluation may touch
	// (every selected series counts one, every sample read in a range
	// counts one). Past it, Eval returns an error matching
	// ErrBudgetExceeded. Zero means DefaultMaxSamples.
	MaxSamples int
	// MaxSeries caps the series one selector may match; past it, Eval
	// returns an error matching ErrBudgetExceeded instead of touching them
	// all. Zero means no cap beyond MaxSamples.
	MaxSeries int
	// SubqueryStep is the resolution of a subquery written without one
	// (`x[5m:]`). Below 1ms (zero included) means DefaultSubqueryStep,
	// Prometheus's default.
	SubqueryStep time.Duration
	// MaxSubqueryPoints caps the points (16 B each) the plan's subqueries
	// hold at once, so a plan's memory is bounded whatever the sample
	// budget lets one step read; past it, Eval returns an error matching
	// ErrBudgetExceeded. Zero means MaxSamples.
	MaxSubqueryPoints int
	// MaxLabelBytes caps the bytes of label sets one evaluation may create
	// (label_replace and label_join: every label set they build counts its
	// encoded size, and a replacement is checked at its upper bound before
	// it is expanded; count_values and histogram_quantiles: every label
	// set with their added label). Past it, Eval returns an error matching
	// ErrBudgetExceeded. Other operators only build subsets or merges of
	// label sets they were given, so they cannot grow labels. Zero means
	// the engine's default (SetDefaults), then DefaultMaxLabelBytes.
	MaxLabelBytes int64
}

// withDefaults fills the zero fields every plan uses (lookback, samples
// and series bounds) from the engine's defaults (SetDefaults), then the
// package's.
func (e *Engine) withDefaults(opts Options) Options {
	if opts.LookbackDelta <= 0 {
		opts.LookbackDelta = DefaultLookbackDelta
	}
	if opts.MaxSamples <= 0 {
		opts.MaxSamples = e.defaults.MaxSamples
	}
	if opts.MaxSamples <= 0 {
		opts.MaxSamples = DefaultMaxSamples
	}
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = e.defaults.MaxSeries
	}
	return opts
}

// Compile turns a parsed expression into a plan. The expression is not kept
// or modified.
func (e *Engine) Compile(expr parser.Expr, opts Options) (*Plan, error) {
	opts = e.withDefaults(opts)
	if opts.MaxLabelBytes <= 0 {
		opts.MaxLabelBytes = e.defaults.MaxLabelBytes
	}
	if opts.MaxLabelBytes <= 0 {
		opts.MaxLabelBytes = DefaultMaxLabelBytes
	}
	if opts.SubqueryStep < time.Millisecond {
		opts.SubqueryStep = DefaultSubqueryStep
	}
	if opts.MaxSubqueryPoints <= 0 {
		opts.MaxSubqueryPoints = opts.MaxSamples
	}
	c := compiler{
		store: e.store, lookback: opts.LookbackDelta.Milliseconds(), normalize: !e.exactNumericLabels,
		subqStep: opts.SubqueryStep.Milliseconds(), wrap: map[parser.Expr]bool{},
		held:      &heldPoints{max: int64(opts.MaxSubqueryPoints)},
		statsOnly: histogramStatsSelectors(expr),
	}
	if _, wrapRoot := stepInvariance(expr, c.wrap); wrapRoot {
		c.wrap[expr] = true
	}
	root, err := c.compile(expr)
	if err != nil {
		return nil, err
	}
	var warnings []string
	if w := time.Duration(c.window) * time.Millisecond; w > e.store.Retention() {
		warnings = append(warnings, fmt.Sprintf("query reads %v back (range or lookback plus offset) but the store keeps %v; older samples are missing", w, e.store.Retention()))
	}
	p := &Plan{
		timing:     c.timing,
		warnings:   warnings,
		root:       root,
		text:       expr.String(),
		names:      c.names,
		anyName:    c.anyName,
		window:     time.Duration(c.window) * time.Millisecond,
		maxSamples: int64(opts.MaxSamples),
		maxSeries:  opts.MaxSeries,
		maxLabels:  opts.MaxLabelBytes,
		engine:     e,
		opts:       opts,
	}
	p.base = p.walk()
	return p, nil
}

// Query parses and compiles q.
func (e *Engine) Query(q string, opts Options) (*Plan, error) {
	expr, err := e.Parse(q)
	if err != nil {
		return nil, err
	}
	return e.Compile(expr, opts)
}

// Plan is a compiled query. Eval must not be called concurrently on one
// plan: it owns the scratch buffers that make evaluation allocation-free.
type Plan struct {
	root       node
	text       string
	names      []string
	anyName    bool
	window     time.Duration
	maxSamples int64
	maxSeries  int
	maxLabels  int64
	warnings   []string
	// timing lists the nodes whose behaviour depends on the query's time
	// frame, in evaluation order (see eval_subquery.go).
	timing []timingItem

	ev    evaluator
	scope uint64 // counts the queries evaluated, see evaluator.scope
	out   []Sample
	// dup maps an output label set's hash to the index of the element
	// that has it, for the final same-labelset check.
	dup       map[uint64]int
	scalarOut vector

	// engine and opts recompile the plan's nodes (Trim); walker and
	// mapPeak are RetainedBytes' state (retained.go).
	engine  *Engine
	opts    Options
	walker  retainedWalker
	mapPeak int64
	base    int64 // walk() of the plan as compiled
}

// String returns the canonical text of the compiled expression.
func (p *Plan) String() string { return p.text }

// MetricNames returns the metric names the plan reads. all is true when a
// selector has no fixed name (a regex on __name__), so every append matters.
func (p *Plan) MetricNames() (names []string, all bool) { return p.names, p.anyName }

// Window is how far back from the evaluation time the plan reads: the
// maximum of range+offset over range selectors and lookback+offset over
// instant selectors. A store keeping less retention answers differently
// from Prometheus.
func (p *Plan) Window() time.Duration { return p.window }

// Warnings lists what compiled but may answer differently from Prometheus,
// such as a window longer than the store's retention (promql-subset.md
// §4.2). Callers log them once per trigger.
func (p *Plan) Warnings() []string { return p.warnings }

// Sample is one element of an instant vector: a float F, or a native
// histogram H (then F is meaningless). H belongs to the plan and is valid
// until its next Eval; the caller must not modify or retain it.
type Sample struct {
	Labels labels.Labels
	F      float64
	H      *histogram.FloatHistogram
}

// Result is the value of an instant query. Vector is valid until the next
// Eval of the same plan; the caller must not retain it.
type Result struct {
	// Scalar is true when the query returned a scalar in Value.
	Scalar bool
	Value  float64
	Vector []Sample
}

// ctxErr is ctx.Err, plus a deadline that has passed although its timer
// has not fired yet (on a busy machine the timer goroutine can lag, and a
// tiny timeout would otherwise let a whole evaluation run). Deadlines are
// wall-clock by definition, hence time.Now here.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// errSameLabelset is Prometheus's message for a result with two elements
// that have the same labels once __name__ is dropped.
const errSameLabelset = "vector cannot contain metrics with the same labelset"

// Eval evaluates the plan at t, in unix milliseconds, as an instant
// query: @ start() and @ end() are t. It honours ctx cancellation and the
// plan's sample and label budgets.
func (p *Plan) Eval(ctx context.Context, t int64) (Result, error) {
	if err := ctxErr(ctx); err != nil {
		return Result{}, err
	}
	// Prometheus runs an instant query as one step with interval 1 ms.
	p.beginQuery(t, t, 1)
	defer p.endQuery()
	return p.evalStep(ctx, t)
}

// endQuery releases what the query's subqueries hold beyond what a warm
// plan keeps.
func (p *Plan) endQuery() {
	for _, it := range p.timing {
		if it.sub != nil {
			it.sub.release()
		}
	}
}

// MaxRangeSteps bounds (end-start)/step of one EvalRange: Prometheus's
// HTTP API limit of 11,000 points per series.
const MaxRangeSteps = 11_000

// ErrTooManySteps means an EvalRange's (end-start)/step exceeds
// MaxRangeSteps.
var ErrTooManySteps = errors.New("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")

// Point is one step of a range query's series.
type Point struct {
	T int64 // unix ms
	F float64
}

// HPoint is one step of a range query's series whose value is a native
// histogram.
type HPoint struct {
	T int64 // unix ms
	H *histogram.FloatHistogram
}

// RangeSeries is one series of a range query's result: its float points
// and its histogram points (each in time order; a series may have both,
// at different steps, as in Prometheus's Series). Its labels are
// immutable (the store's or the plan's) and may be kept, and so may its
// histograms, which are its own.
type RangeSeries struct {
	Labels     labels.Labels
	Points     []Point
	Histograms []HPoint
}

// RangeSeriesCost is what EvalRange charges for a new series, in the
// units of its charge function (16 B, a point): the series' bookkeeping.
const RangeSeriesCost = 8

// EvalRange evaluates the plan as a Prometheus range query: at start,
// start+step, …, up to end (unix milliseconds; step >= 1), and returns the
// series, sorted by labels (hidden twins by stored series, in creation
// order, each with only its own points), each with its
// points in time order. @ start() and @ end() are start and end;
// step-invariant parts (an @ selector, and what Prometheus's
// PreprocessExpr wraps) are evaluated once, at start, and subqueries
// evaluate each of their steps once for the whole range, as Prometheus
// does. Each step gets the plan's sample and label budgets.
//
// charge, when not nil, is told the memory the result is about to take, in
// units of 16 B (one point), before it is allocated: RangeSeriesCost per
// new series and every growth of a series' points (by a quarter, so spare
// capacity is charged too). Its error stops the evaluation and is
// returned, so the caller bounds the result's memory.
//
// As in Prometheus's range evaluation, whether a series loses __name__ is
// decided once per output series (by its first step, or for an
// aggregation by its last), not per step.
func (p *Plan) EvalRange(ctx context.Context, start, end, step int64, charge func(units int) error) ([]RangeSeries, error) {
	if step <= 0 || end < start {
		return nil, fmt.Errorf("invalid range: start %d, end %d, step %d", start, end, step)
	}
	// end >= start, so the span fits a uint64 even where it overflows an
	// int64; the grid's last time is at most end.
	steps := (uint64(end) - uint64(start)) / uint64(step)
	if steps > MaxRangeSteps {
		return nil, ErrTooManySteps
	}
	if charge == nil {
		charge = func(int) error { return nil }
	}
	p.beginQuery(start, end, step)
	defer p.endQuery()
	type series struct {
		lset  labels.Labels // full labels
		drop  bool
		ref   store.SeriesRef // the stored series of its first point, zero for none
		pts   []Point
		hpts  []HPoint
		lastT int64   // the newest step with a point, float or histogram
		next  *series // the next series with the same labels' hash
	}
	var (
		all     []*series
		byHash  = map[uint64]*series{}
		chained bool // a chain has two series: there are hidden twins
	)
	grow := func(pts []Point, n int) ([]Point, error) {
		if len(pts)+n <= cap(pts) {
			return pts, nil
		}
		extra := max(cap(pts)/4+4, len(pts)+n-cap(pts))
		if err := charge(extra); err != nil {
			return nil, err
		}
		np := make([]Point, len(pts), cap(pts)+extra)
		copy(np, pts)
		return np, nil
	}
	dropLast := p.rootDropLast()
	for k := range steps + 1 {
		t := int64(uint64(start) + k*uint64(step))
		if err := ctxErr(ctx); err != nil {
			return nil, err
		}
		vec, scalar, err := p.evalRaw(ctx, t)
		if err != nil {
			return nil, err
		}
		if p.root.valueType() == parser.ValueTypeScalar {
			p.scalarOut = append(p.scalarOut[:0], sample{lset: labels.EmptyLabels(), f: scalar})
			vec = p.scalarOut
		}
		for _, e := range vec {
			// Elements with the same labels (hidden twins,
			// otlp-contract.md §8.3) go to a chain of series: an element
			// with a stored series' identity (sample.ref) to the series
			// of that ref, or else to the first series without one; an
			// element without (an aggregation's) to the first series
			// with no point at this step, by order. The final check below
			// tells twins from a clash.
			h := e.lset.Hash()
			s, prev := byHash[h], (*series)(nil)
			var free *series // the first series without a point at t
			for ; s != nil; s, prev = s.next, s {
				if s.lastT == t {
					if p.ev.dupLabels {
						return nil, errors.New(errSameLabelset)
					}
					continue
				}
				if e.ref == 0 || s.ref == e.ref {
					break
				}
				if free == nil && s.ref == 0 {
					free = s
				}
			}
			if s == nil {
				s = free
			}
			if s == nil {
				if err := charge(RangeSeriesCost); err != nil {
					return nil, err
				}
				s = &series{lset: e.lset, drop: e.drop, ref: e.ref, lastT: math.MinInt64}
				all = append(all, s)
				if prev == nil {
					byHash[h] = s
				} else {
					prev.next = s
					chained = true
				}
			}
			if dropLast {
				s.drop = e.drop
			}
			s.lastT = t
			if e.h != nil {
				// The step's histogram is the plan's until the next step:
				// the result keeps a copy, charged at its size.
				if err := charge(histCost(e.h)); err != nil {
					return nil, err
				}
				s.hpts = append(s.hpts, HPoint{T: t, H: e.h.Copy()})
				continue
			}
			if s.pts, err = grow(s.pts, 1); err != nil {
				return nil, err
			}
			s.pts = append(s.pts, Point{T: t, F: e.f})
		}
	}
	if chained {
		// Hidden twins in the order of their stored series (their
		// creation order, as an instant query answers them), not of
		// their first point in the range; twins without a ref first, in
		// the order they appeared.
		slices.SortStableFunc(all, func(a, b *series) int {
			if c := labels.Compare(a.lset, b.lset); c != 0 {
				return c
			}
			return cmp.Compare(a.ref, b.ref)
		})
	}
	// Prometheus's cleanupMetricLabels and mergeSeriesWithSameLabelset:
	// series that meet once their metadata labels are dropped merge,
	// unless they share a step. Series that had the same labels before
	// (hidden twins) stay apart.
	out := make([]RangeSeries, 0, len(all))
	merged := make(map[uint64]int, len(all))
	full := make([]labels.Labels, 0, len(all)) // out[i]'s labels before dropping
	for _, s := range all {
		l := s.lset
		if s.drop {
			l = dropMetadata(l)
		}
		h := l.Hash()
		i, ok := merged[h]
		if !ok || labels.Equal(full[i], s.lset) {
			if !ok {
				merged[h] = len(out)
			}
			out = append(out, RangeSeries{Labels: l, Points: s.pts, Histograms: s.hpts})
			full = append(full, s.lset)
			continue
		}
		m := &out[i]
		var err error
		if m.Points, err = grow(m.Points, len(s.pts)); err != nil {
			return nil, err
		}
		m.Points = append(m.Points, s.pts...)
		slices.SortFunc(m.Points, func(a, b Point) int { return cmpInt(a.T, b.T) })
		m.Histograms = append(m.Histograms, s.hpts...)
		slices.SortFunc(m.Histograms, func(a, b HPoint) int { return cmpInt(a.T, b.T) })
		if sameStep(m.Points, m.Histograms) {
			return nil, errors.New(errSameLabelset)
		}
	}
	// Stable: hidden twins keep the order they got above.
	slices.SortStableFunc(out, func(a, b RangeSeries) int { return labels.Compare(a.Labels, b.Labels) })
	return out, nil
}

// sameStep reports whether two points of a merged series (floats and
// histograms, each sorted by time) share a step.
func sameStep(pts []Point, hpts []HPoint) bool {
	for k := 1; k < len(pts); k++ {
		if pts[k].T == pts[k-1].T {
			return true
		}
	}
	for k := 1; k < len(hpts); k++ {
		if hpts[k].T == hpts[k-1].T {
			return true
		}
	}
	for i, j := 0, 0; i < len(pts) && j < len(hpts); {
		switch {
		case pts[i].T == hpts[j].T:
			return true
		case pts[i].T < hpts[j].T:
			i++
		default:
			j++
		}
	}
	return false
}

// rootDropLast tells how Prometheus's range evaluation of the root decides
// a series' __name__ dropping: by the last step for an aggregation (its
// result series take each step's group mark), else by the first.
func (p *Plan) rootDropLast() bool {
	a, ok := p.root.(*aggNode)
	if !ok {
		return false
	}
	switch a.op {
	case parser.TOPK, parser.BOTTOMK, parser.LIMITK, parser.LIMIT_RATIO, parser.COUNT_VALUES:
		return false
	}
	return true
}

// beginQuery starts a query over [start, end] with interval: per-query
// caches (step-invariant results, subquery matrices) are invalidated by a
// new scope, and the time-frame-dependent values are computed.
func (p *Plan) beginQuery(start, end, interval int64) {
	p.scope++
	p.ev = evaluator{start: start, end: end, interval: interval, scope: p.scope}
	if len(p.timing) > 0 {
		p.prepareScope(&p.ev)
	}
}

// evalStep evaluates one step of the current query at t.
func (p *Plan) evalStep(ctx context.Context, t int64) (Result, error) {
	vec, v, err := p.evalRaw(ctx, t)
	if err != nil {
		return Result{}, err
	}
	if p.root.valueType() == parser.ValueTypeScalar {
		return Result{Scalar: true, Value: v}, nil
	}
	// Delayed __name__ dropping (promql-subset.md §4.9): elements marked
	// "drop" lose their metadata labels only now, and a collision that
	// survives is an error, as in Prometheus's cleanupMetricLabels.
	p.out = p.out[:0]
	for _, s := range vec {
		l := s.lset
		if s.drop {
			l = dropMetadata(l)
		}
		p.out = append(p.out, Sample{Labels: l, F: s.f, H: s.h})
	}
	if len(p.out) > 1 {
		if p.dup == nil {
			p.dup = make(map[uint64]int, len(p.out))
		}
		clear(p.dup)
		for i, s := range p.out {
			h := s.Labels.Hash()
			if j, ok := p.dup[h]; ok && (p.ev.dupLabels || !twins(vec[i].lset, vec[j].lset)) {
				return Result{}, errors.New(errSameLabelset)
			}
			p.dup[h] = i
		}
	}
	return Result{Vector: p.out}, nil
}

// evalRaw evaluates the root at t within the current query: a vector
// root's elements (labels not yet cleaned up) or a scalar root's value.
func (p *Plan) evalRaw(ctx context.Context, t int64) (vector, float64, error) {
	// A fresh budget and store clock per step; the query's frame stays.
	p.ev = evaluator{
		ctx: ctx, maxSamples: p.maxSamples, maxSeries: p.maxSeries, maxLabels: p.maxLabels,
		start: p.ev.start, end: p.ev.end, interval: p.ev.interval, scope: p.ev.scope,
	}
	if p.root.valueType() == parser.ValueTypeScalar {
		v, err := p.root.scalar(&p.ev, t)
		return nil, v, err
	}
	vec, err := p.root.eval(&p.ev, t)
	return vec, 0, err
}

// twins reports whether two elements that ended with the same labels
// already had the same labels before __name__ was dropped: then they are
// hidden twins, series the store keeps apart by resource attributes that
// are not labels (otlp-contract.md §8.3), and both are answered. Prometheus
// never sees such a pair (its storage would hold one series), so every
// collision it reports is one where the labels differed before: dropping
// __name__ made x{a="1"} and y{a="1"} equal, or label_replace rewrote two
// different series alike. Those stay errors. Only a collision pays for the
// comparison.
func twins(a, b labels.Labels) bool { return labels.Equal(a, b) }
