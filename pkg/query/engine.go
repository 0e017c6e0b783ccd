// Package query evaluates the PromQL subset that autoscaling triggers use,
// with Prometheus's exact semantics, over the in-memory store.
//
// Queries are parsed by Prometheus's own parser, compiled once into a plan
// and evaluated as instant queries at a given time. A query that uses
// anything the compiler does not implement is rejected at compile time with
// an *UnsupportedError carrying the construct and its position; it is never
// answered approximately.
package query

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

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

func (e *ParseError) Error() string { return fmt.Sprintf("parse %q: %v", e.Query, e.Err) }
func (e *ParseError) Unwrap() error { return e.Err }

// supportedFunctions lists the PromQL functions the compiler implements. The
// parser is restricted to them so an unknown call fails at parse time.
var supportedFunctions = map[string]bool{}

// Engine compiles and evaluates queries over one store. It is safe for
// concurrent use; each Plan is not.
type Engine struct {
	parser parser.Parser
	store  *store.Store
}

// NewEngine returns an engine reading from st.
func NewEngine(st *store.Store) *Engine {
	fns := maps.Clone(parser.Functions)
	for name := range fns {
		if !supportedFunctions[name] {
			delete(fns, name)
		}
	}
	return &Engine{
		parser: parser.NewParser(parser.Options{Functions: fns}),
		store:  st,
	}
}

// Parse parses q with the engine's restricted parser. Callers may rewrite the
// returned AST (trigger lowering) before compiling it.
func (e *Engine) Parse(q string) (parser.Expr, error) {
	expr, err := e.parser.ParseExpr(q)
	if err != nil {
		return nil, &ParseError{Query: q, Err: err}
	}
	return expr, nil
}

// Options tune one compiled plan.
type Options struct {
	// LookbackDelta bounds how far back an instant selector looks for a
	// sample. Zero means DefaultLookbackDelta.
	LookbackDelta time.Duration
}

// Compile turns a parsed expression into a plan. The expression is not kept.
func (e *Engine) Compile(expr parser.Expr, opts Options) (*Plan, error) {
	if opts.LookbackDelta <= 0 {
		opts.LookbackDelta = DefaultLookbackDelta
	}
	c := compiler{store: e.store, lookback: opts.LookbackDelta.Milliseconds()}
	root, err := c.compile(expr)
	if err != nil {
		return nil, err
	}
	if root.valueType() != parser.ValueTypeVector && root.valueType() != parser.ValueTypeScalar {
		return nil, &UnsupportedError{Pos: expr.PositionRange(), Construct: "result type " + string(root.valueType()), Reason: "a query must return a vector or a scalar"}
	}
	return &Plan{root: root, text: expr.String(), names: c.names, anyName: c.anyName}, nil
}

// Query parses and compiles q.
func (e *Engine) Query(q string, opts Options) (*Plan, error) {
	expr, err := e.Parse(q)
	if err != nil {
		return nil, err
	}
	return e.Compile(expr, opts)
}

// Plan is a compiled query. Eval must not be called concurrently on one plan.
type Plan struct {
	root    node
	text    string
	names   []string
	anyName bool
}

// String returns the canonical text of the compiled expression.
func (p *Plan) String() string { return p.text }

// MetricNames returns the metric names the plan reads. all is true when a
// selector has no fixed name (a regex on __name__), so every append matters.
func (p *Plan) MetricNames() (names []string, all bool) { return p.names, p.anyName }

// Sample is one element of an instant vector.
type Sample struct {
	Labels labels.Labels
	F      float64
}

// Result is the value of an instant query. Vector is valid until the next
// Eval of the same plan.
type Result struct {
	// Scalar is true when the query returned a scalar in Value.
	Scalar bool
	Value  float64
	Vector []Sample
}

// Eval evaluates the plan at t, in unix milliseconds.
func (p *Plan) Eval(ctx context.Context, t int64) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if p.root.valueType() == parser.ValueTypeScalar {
		return Result{Scalar: true, Value: p.root.evalScalar(t)}, nil
	}
	vec, err := p.root.evalVector(ctx, t)
	if err != nil {
		return Result{}, err
	}
	for i := range vec {
		vec[i].Labels = vec[i].Labels.DropMetricName()
	}
	return Result{Vector: vec}, nil
}
