package query

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// MatrixPlan is a compiled range selector at the root of a query (x[5m],
// (x[5m] offset 1m)). Prometheus answers an instant query for it with the
// raw samples of every matching series in (t−offset−range, t−offset],
// stale markers dropped; so does Eval. Only the HTTP API serves it: a
// trigger needs one number, so Compile and Query still reject a range
// vector at the root. Like a Plan, it must not be evaluated by two
// goroutines at once.
type MatrixPlan struct {
	set         *seriesSet
	rng, offset int64 // ms
	// at is the selector's @ modifier, or nil: at the root, Prometheus
	// reads (t'−offset−range, t'−offset] for @ t' (start() and end() are
	// the instant query's time).
	at         *atMod
	maxSamples int64
	maxSeries  int
	text       string
	warnings   []string

	ev   evaluator
	win  store.Window
	buf  []store.Sample
	hbuf []store.HSample
}

// CompileMatrix compiles a range selector, possibly in parentheses. Any
// other expression, a subquery included, is an *UnsupportedError; the
// caller picks CompileMatrix when expr.Type() is parser.ValueTypeMatrix.
func (e *Engine) CompileMatrix(expr parser.Expr, opts Options) (*MatrixPlan, error) {
	opts = e.withDefaults(opts)
	root := expr
	for {
		switch p := root.(type) {
		case *parser.ParenExpr:
			root = p.Expr
			continue
		case *parser.StepInvariantExpr:
			root = p.Expr
			continue
		}
		break
	}
	ms, ok := root.(*parser.MatrixSelector)
	switch {
	case !ok:
		if sq, isSub := root.(*parser.SubqueryExpr); isSub {
			return nil, unsupported(sq, "subquery result", "a subquery is only accepted as the argument of a range function, not as the query's result")
		}
		return nil, unsupported(root, nodeName(root), "only a range selector answers a range vector")
	case ms.RangeExpr != nil:
		return nil, unsupported(ms, "range duration expression", "duration expressions are not implemented")
	}
	vs, ok := ms.VectorSelector.(*parser.VectorSelector)
	if !ok {
		return nil, unsupported(ms, "range selector", "")
	}
	c := compiler{store: e.store, lookback: opts.LookbackDelta.Milliseconds(), normalize: !e.exactNumericLabels}
	rng := ms.Range.Milliseconds()
	set, offset, at, err := c.selector(vs, rng, true)
	if err != nil {
		return nil, err
	}
	var warnings []string
	if w := time.Duration(c.window) * time.Millisecond; w > e.store.Retention() {
		warnings = append(warnings, fmt.Sprintf("query reads %v back (range or lookback plus offset) but the store keeps %v; older samples are missing", w, e.store.Retention()))
	}
	return &MatrixPlan{
		set:        set,
		rng:        rng,
		offset:     offset,
		at:         at,
		maxSamples: int64(opts.MaxSamples),
		maxSeries:  opts.MaxSeries,
		text:       expr.String(),
		warnings:   warnings,
	}, nil
}

// String returns the canonical text of the compiled expression.
func (p *MatrixPlan) String() string { return p.text }

// Warnings lists what compiled but may answer differently from Prometheus
// (see Plan.Warnings).
func (p *MatrixPlan) Warnings() []string { return p.warnings }

// Eval calls fn for every matching series that has samples in the window
// ending at t (unix ms), in label order (hidden twins by creation order),
// with its labels, float samples and native histogram samples (each
// oldest first). The samples are valid only during the call; the labels
// are immutable and may be kept. An error from fn stops Eval and is
// returned. Eval honours ctx and the plan's sample budget
// (ErrBudgetExceeded), which counts every series and every sample read (a
// histogram at its size, as Prometheus counts it).
func (p *MatrixPlan) Eval(ctx context.Context, t int64, fn func(lset labels.Labels, samples []store.Sample, hists []store.HSample) error) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	p.ev = evaluator{ctx: ctx, maxSamples: p.maxSamples, maxSeries: p.maxSeries}
	ev := &p.ev
	if err := p.set.refresh(ev); err != nil {
		return err
	}
	rangeEnd := t - p.offset
	if p.at != nil {
		rangeEnd = p.at.ts - p.offset
		if p.at.startOrEnd != 0 {
			rangeEnd = t - p.offset
		}
	}
	rangeStart := rangeEnd - p.rng
	rd := ev.reader(p.set.store)
	for i, h := range p.set.handles {
		p.hbuf = p.hbuf[:0]
		if h.Histograms() {
			p.buf, p.hbuf = rd.RangeHistograms(h, rangeStart, rangeEnd, p.buf[:0], p.hbuf)
			cost := len(p.buf)
			for k := range p.hbuf {
				cost += histCost(&p.hbuf[k].H)
			}
			if err := ev.charge(cost); err != nil {
				return err
			}
		} else {
			// As rangeNode.series: retry a window the writer tore.
			for {
				rd.Window(&p.win, h, rangeStart, rangeEnd)
				p.buf = p.win.AppendTo(p.buf[:0])
				if p.win.Valid() {
					break
				}
			}
			if err := ev.charge(p.win.Len()); err != nil {
				return err
			}
		}
		pts := dropStale(p.buf)
		if len(pts)+len(p.hbuf) == 0 {
			continue
		}
		if err := fn(p.set.lsets[i], pts, p.hbuf); err != nil {
			return err
		}
	}
	return nil
}
