package promapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// queryContext applies the "timeout" parameter, capped by Config.Timeout.
func (a *API) queryContext(r *http.Request) (context.Context, context.CancelFunc, *apiError) {
	timeout := a.cfg.Timeout
	if s := r.Form.Get("timeout"); s != "" {
		d, err := parseDuration(s)
		if err != nil {
			return nil, nil, invalidParam("timeout", err)
		}
		if d <= 0 {
			return nil, nil, invalidParam("timeout", fmt.Errorf("timeout must be positive, got %s", d))
		}
		timeout = min(timeout, d)
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	return ctx, cancel, nil
}

// parseQuery reads "query" and "lookback_delta": the parsed expression and
// the options to compile it with.
func (a *API) parseQuery(r *http.Request) (parser.Expr, query.Options, *apiError) {
	var opts query.Options
	if s := r.Form.Get("lookback_delta"); s != "" {
		d, err := parseDuration(s)
		if err != nil {
			return nil, opts, badData(fmt.Errorf("error parsing lookback delta duration: %w", err))
		}
		if d < 0 {
			return nil, opts, badData(fmt.Errorf("error parsing lookback delta duration: negative duration %s", d))
		}
		opts.LookbackDelta = d
	}
	// A plan's subqueries hold their points while they are read: the
	// answer's bound bounds them too (16 B × MaxSamples per request).
	opts.MaxSubqueryPoints = a.cfg.MaxSamples
	expr, err := a.engine.Parse(r.Form.Get("query"))
	if err != nil {
		return nil, opts, invalidParam("query", err)
	}
	return expr, opts, nil
}

// prepared is what query and query_range share before evaluating: the
// limit and the request's timeout context, with a slot taken. done gives
// both back.
type prepared struct {
	ctx   context.Context
	limit int
	done  func()
}

// prepare parses "limit" and "timeout" and waits for a slot. compile runs
// before the wait, so a bad query never queues.
func (a *API) prepare(r *http.Request, compile func() *apiError) (prepared, *apiError) {
	limit, err := parseLimit(r.Form.Get("limit"))
	if err != nil {
		return prepared{}, invalidParam("limit", err)
	}
	ctx, cancel, aerr := a.queryContext(r)
	if aerr != nil {
		return prepared{}, aerr
	}
	if aerr := compile(); aerr != nil {
		cancel()
		return prepared{}, aerr
	}
	release, aerr := a.acquire(ctx)
	if aerr != nil {
		cancel()
		return prepared{}, aerr
	}
	return prepared{ctx: ctx, limit: limit, done: func() { release(); cancel() }}, nil
}

func (a *API) query(r *http.Request) result {
	ts := a.now()
	if s := r.Form.Get("time"); s != "" {
		t, err := parseTime(s)
		if err != nil {
			return errResult(invalidParam("time", err))
		}
		ts = t
	}
	expr, opts, aerr := a.parseQuery(r)
	if aerr != nil {
		return errResult(aerr)
	}
	var (
		plan *query.Plan
		mat  *query.MatrixPlan
	)
	ev, aerr := a.prepare(r, func() *apiError {
		var err error
		if expr.Type() == parser.ValueTypeMatrix {
			mat, err = a.engine.CompileMatrix(expr, opts)
		} else {
			plan, err = a.engine.Compile(expr, opts)
		}
		if err != nil {
			return invalidParam("query", err)
		}
		return nil
	})
	if aerr != nil {
		return errResult(aerr)
	}
	t := ts.UnixMilli()
	var res result
	if mat != nil {
		res = a.rangeSelector(ev, mat, t)
	} else {
		res = a.instant(ev, plan, t)
	}
	res.release = ev.done
	return res
}

// instant evaluates a scalar or vector query. The plan is this request's
// own, so its result stays valid until written.
func (a *API) instant(ev prepared, plan *query.Plan, t int64) result {
	res, err := plan.Eval(ev.ctx, t)
	if err != nil {
		return errResult(execError(err))
	}
	// Compile-time warnings (a window longer than the store keeps) go out
	// as Prometheus's "warnings", so Grafana shows them.
	warnings := slices.Clone(plan.Warnings())
	if res.Scalar {
		return result{warnings: warnings, data: func(j *jsonWriter) {
			j.raw(`{"resultType":"scalar","result":`)
			j.point(t, res.Value)
			j.char('}')
		}}
	}
	vec := res.Vector
	cost := len(vec)
	for _, s := range vec {
		if s.H != nil {
			cost += query.HistogramCost(s.H) - 1
		}
	}
	if aerr := a.newBudget().charge(cost); aerr != nil {
		return errResult(aerr)
	}
	if ev.limit > 0 && len(vec) > ev.limit {
		vec = vec[:ev.limit]
		warnings = append(warnings, "results truncated due to limit")
	}
	return result{warnings: warnings, data: func(j *jsonWriter) {
		j.raw(`{"resultType":"vector","result":[`)
		for i, s := range vec {
			if j.err != nil {
				return
			}
			if i > 0 {
				j.char(',')
			}
			j.raw(`{"metric":`)
			j.labelSet(s.Labels)
			if s.H != nil {
				j.raw(`,"histogram":`)
				j.histPoint(t, s.H)
			} else {
				j.raw(`,"value":`)
				j.point(t, s.F)
			}
			j.char('}')
		}
		j.raw("]}")
	}}
}

// rangeSelector answers a range vector at the root (x[5m]) as Prometheus
// does: a matrix of each series' raw samples in the window.
func (a *API) rangeSelector(ev prepared, mat *query.MatrixPlan, t int64) result {
	m := a.newMatrix()
	err := mat.Eval(ev.ctx, t, func(lset labels.Labels, samples []store.Sample, hists []store.HSample) error {
		se, aerr := m.newSeries(lset, len(samples))
		if aerr != nil {
			return aerr
		}
		for _, s := range samples {
			se.points = append(se.points, point{T: s.T, F: s.V})
		}
		for k := range hists {
			// The plan reuses hists: the answer keeps copies, charged.
			h := &hists[k].H
			if aerr := m.b.charge(query.HistogramCost(h)); aerr != nil {
				return aerr
			}
			se.hpoints = append(se.hpoints, query.HPoint{T: hists[k].T, H: h.Copy()})
		}
		return nil
	})
	if err != nil {
		if aerr, ok := errors.AsType[*apiError](err); ok {
			return errResult(aerr)
		}
		return errResult(execError(err))
	}
	// Series come in label order already (hidden twins by creation).
	return m.result(ev.limit, slices.Clone(mat.Warnings()))
}

// queryRange answers a range query with the plan's range evaluation
// (query.Plan.EvalRange): @ start()/end() are the range's bounds,
// step-invariant parts and subqueries are evaluated once for the range,
// and __name__ is dropped per series, as in Prometheus's range evaluation.
func (a *API) queryRange(r *http.Request) result {
	start, err := parseTime(r.Form.Get("start"))
	if err != nil {
		return errResult(invalidParam("start", err))
	}
	end, err := parseTime(r.Form.Get("end"))
	if err != nil {
		return errResult(invalidParam("end", err))
	}
	if end.Before(start) {
		return errResult(invalidParam("end", errors.New("end timestamp must not be before start time")))
	}
	step, err := parseDuration(r.Form.Get("step"))
	if err != nil {
		return errResult(invalidParam("step", err))
	}
	if step <= 0 {
		return errResult(invalidParam("step", errors.New("zero or negative query resolution step widths are not accepted. Try a positive integer")))
	}
	grid, err := newRangeGrid(start, end, step)
	if err != nil {
		return errResult(badData(err))
	}
	expr, opts, aerr := a.parseQuery(r)
	if aerr != nil {
		return errResult(aerr)
	}
	if typ := expr.Type(); typ != parser.ValueTypeVector && typ != parser.ValueTypeScalar {
		return errResult(invalidParam("query", fmt.Errorf("invalid expression type %q for range query, must be Scalar or instant Vector", parser.DocumentedType(typ))))
	}
	var plan *query.Plan
	ev, aerr := a.prepare(r, func() *apiError {
		var err error
		if plan, err = a.engine.Compile(expr, opts); err != nil {
			return invalidParam("query", err)
		}
		return nil
	})
	if aerr != nil {
		return errResult(aerr)
	}
	res := a.evalRange(ev, plan, start.UnixMilli(), end.UnixMilli(), grid)
	res.release = ev.done
	return res
}

// evalRange evaluates plan over the grid's steps from start to end (the
// request's bounds, ms: @ end() is end, not the grid's last step). The
// matrix is assembled by the plan within the answer's budget: every series
// and every growth of its points is charged before it is allocated.
func (a *API) evalRange(ev prepared, plan *query.Plan, start, end int64, grid rangeGrid) result {
	b := a.newBudget()
	mat, err := plan.EvalRange(ev.ctx, start, end, grid.step, func(n int) error {
		if aerr := b.charge(n); aerr != nil {
			return aerr
		}
		return nil
	})
	if err != nil {
		if aerr, ok := errors.AsType[*apiError](err); ok {
			return errResult(aerr)
		}
		return errResult(execError(err))
	}
	return rangeResult(mat, ev.limit, slices.Clone(plan.Warnings()))
}

// rangeResult applies the limit and returns the writer of a range query's
// matrix. Each series' points are dropped once written, so memory falls as
// the answer goes out.
func rangeResult(all []query.RangeSeries, limit int, warnings []string) result {
	if limit > 0 && len(all) > limit {
		all = all[:limit]
		warnings = append(warnings, "results truncated due to limit")
	}
	return result{warnings: warnings, data: func(j *jsonWriter) {
		j.raw(`{"resultType":"matrix","result":[`)
		for i, se := range all {
			if j.err != nil {
				return
			}
			if i > 0 {
				j.char(',')
			}
			j.raw(`{"metric":`)
			j.labelSet(se.Labels)
			writeSeriesPoints(j, se.Points, se.Histograms)
			j.char('}')
			all[i].Points, all[i].Histograms = nil, nil
		}
		j.raw("]}")
	}}
}

// writeSeriesPoints writes a matrix series' "values" (when it has float
// points) and "histograms" (when it has histogram points), as
// Prometheus's marshalSeriesJSON: a series always has one or the other.
func writeSeriesPoints(j *jsonWriter, pts []point, hpts []query.HPoint) {
	if len(pts) > 0 {
		j.raw(`,"values":[`)
		for k, p := range pts {
			if k > 0 {
				j.char(',')
			}
			j.point(p.T, p.F)
		}
		j.char(']')
	}
	writeHistograms(j, hpts)
}

func writeHistograms(j *jsonWriter, hpts []query.HPoint) {
	if len(hpts) == 0 {
		return
	}
	j.raw(`,"histograms":[`)
	for k, p := range hpts {
		if k > 0 {
			j.char(',')
		}
		j.histPoint(p.T, p.H)
	}
	j.char(']')
}

// point is a range-query point: unix ms and value, SampleBytes in memory.
// The engine's own type, so a matrix of raw samples and a range query's
// series are written by one writeSeriesPoints.
type point = query.Point

// series is one series of a matrix answer.
type series struct {
	lset    labels.Labels
	points  []point
	hpoints []query.HPoint
}

// seriesCost is the budget a new series costs for its bookkeeping (the
// struct, its slot in the list: about 100 B), as query.RangeSeriesCost.
const seriesCost = query.RangeSeriesCost

// matrix assembles a range selector's matrix answer within a budget: every
// series with its points is charged before it is allocated, so
// SampleBytes × the budget bounds the points held. (A range query's
// matrix is assembled by query.Plan.EvalRange under the same budget.)
type matrix struct {
	b      *budget
	series []*series
}

func (a *API) newMatrix() *matrix {
	return &matrix{b: a.newBudget()}
}

// newSeries adds a series with room for n points. The labels are kept as
// they are: label sets are immutable, whether the store's or the plan's.
func (m *matrix) newSeries(lset labels.Labels, n int) (*series, *apiError) {
	if aerr := m.b.charge(seriesCost + n); aerr != nil {
		return nil, aerr
	}
	se := &series{lset: lset, points: make([]point, 0, n)}
	m.series = append(m.series, se)
	return se, nil
}

// result applies the limit and returns the writer of the matrix. Each
// series' points are dropped once written, so memory falls as the answer
// goes out.
func (m *matrix) result(limit int, warnings []string) result {
	all := m.series
	if limit > 0 && len(all) > limit {
		all = all[:limit]
		warnings = append(warnings, "results truncated due to limit")
	}
	m.series = nil
	return result{warnings: warnings, data: func(j *jsonWriter) {
		j.raw(`{"resultType":"matrix","result":[`)
		for i, se := range all {
			if j.err != nil {
				return
			}
			if i > 0 {
				j.char(',')
			}
			j.raw(`{"metric":`)
			j.labelSet(se.lset)
			writeSeriesPoints(j, se.points, se.hpoints)
			j.char('}')
			all[i] = nil
		}
		j.raw("]}")
	}}
}
