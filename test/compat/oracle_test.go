package compat

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// fSample implements chunks.Sample for a float sample.
type fSample struct {
	t int64
	f float64
}

func (s fSample) T() int64                    { return s.t }
func (fSample) ST() int64                     { return 0 }
func (s fSample) F() float64                  { return s.f }
func (fSample) H() *histogram.Histogram       { return nil }
func (fSample) FH() *histogram.FloatHistogram { return nil }
func (fSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s fSample) Copy() chunks.Sample         { return s }

// hSample implements chunks.Sample for a native histogram sample: the
// list series hand it to the engine with the hint it was appended with,
// as Prometheus's OTLP receiver appends it (unknown, or gauge for delta
// temporality). FH returns a copy: the list series' iterator returns it
// as is, and the engine later decodes other samples into the histograms
// it got (its pooled points, HistogramStatsIterator's CopyTo), which must
// not be the dataset's.
type hSample struct {
	t int64
	h *histogram.FloatHistogram
}

func (s hSample) T() int64                      { return s.t }
func (hSample) ST() int64                       { return 0 }
func (hSample) F() float64                      { return 0 }
func (hSample) H() *histogram.Histogram         { return nil }
func (s hSample) FH() *histogram.FloatHistogram { return s.h.Copy() }
func (hSample) Type() chunkenc.ValueType        { return chunkenc.ValFloatHistogram }
func (s hSample) Copy() chunks.Sample           { return hSample{t: s.t, h: s.h.Copy()} }

// listSet is a storage.SeriesSet over prepared series (upstream's mock set
// lives in a _test.go file, so we keep our own).
type listSet struct {
	series []storage.Series
	i      int
}

func (s *listSet) Next() bool                      { s.i++; return s.i <= len(s.series) }
func (s *listSet) At() storage.Series              { return s.series[s.i-1] }
func (*listSet) Err() error                        { return nil }
func (*listSet) Warnings() annotations.Annotations { return nil }

// promStorage is the oracle's storage: the dataset as list series, sorted
// by labels, indexed by metric name so a selector with a fixed name does
// not scan everything (as a TSDB head's postings would not).
type promStorage struct {
	all    []*storage.SeriesEntry
	byName map[string][]*storage.SeriesEntry
}

func newPromStorage(d *dataset) *promStorage {
	ps := &promStorage{byName: map[string][]*storage.SeriesEntry{}}
	for _, s := range d.series {
		smpls := make([]chunks.Sample, len(s.samples))
		for i, sm := range s.samples {
			if sm.H != nil {
				smpls[i] = hSample{t: sm.T, h: sm.H}
				continue
			}
			smpls[i] = fSample{t: sm.T, f: sm.F}
		}
		e := storage.NewListSeries(s.lset, smpls)
		ps.all = append(ps.all, e)
		name := s.lset.Get(labels.MetricName)
		ps.byName[name] = append(ps.byName[name], e)
	}
	return ps
}

func (ps *promStorage) queryable() storage.Queryable {
	return &storage.MockQueryable{MockQuerier: &storage.MockQuerier{SelectMockFunction: ps.selectFn}}
}

func (ps *promStorage) selectFn(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	cands := ps.all
	for _, m := range ms {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			cands = ps.byName[m.Value]
			break
		}
	}
	out := &listSet{}
next:
	for _, e := range cands {
		for _, m := range ms {
			if !m.Matches(e.Lset.Get(m.Name)) {
				continue next
			}
		}
		out.series = append(out.series, e)
	}
	return out
}

// newPromEngine returns the reference engine with the options the
// conformance plan fixes (promql-subset.md §6.2), the @ modifier on (as in
// every Prometheus server since 2.33) and subqueries without a step at
// Prometheus's default global evaluation interval, 1m (our
// query.DefaultSubqueryStep).
func newPromEngine() *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{
		MaxSamples:               50_000_000,
		Timeout:                  time.Minute,
		LookbackDelta:            5 * time.Minute,
		EnableDelayedNameRemoval: true,
		EnableNegativeOffset:     true,
		EnableAtModifier:         true,
		NoStepSubqueryIntervalFn: func(int64) int64 { return query.DefaultSubqueryStep.Milliseconds() },
		Parser:                   parser.NewParser(parser.Options{EnableExperimentalFunctions: true}),
	})
}

// outcome is one engine's answer, normalised for comparison.
type outcome struct {
	err    error
	scalar bool
	value  float64
	vector map[string]float64 // labels.String() → value
	// hists holds the elements (or range points) whose value is a native
	// histogram, keyed like vector; the two never share a key.
	hists map[string]*histogram.FloatHistogram
	dups  int // elements whose labels repeat
}

// add records one element's value under k.
func (o *outcome) add(k string, f float64, h *histogram.FloatHistogram) {
	_, dupF := o.vector[k]
	_, dupH := o.hists[k]
	if dupF || dupH {
		o.dups++
	}
	if h == nil {
		o.vector[k] = f
		return
	}
	if o.hists == nil {
		o.hists = map[string]*histogram.FloatHistogram{}
	}
	o.hists[k] = h.Copy() // the engine reuses it
}

func (o outcome) String() string {
	switch {
	case o.err != nil:
		return "error: " + o.err.Error()
	case o.scalar:
		return fmt.Sprintf("scalar %v", o.value)
	}
	s := fmt.Sprintf("vector(%d)", len(o.vector)+len(o.hists))
	for _, k := range sortedKeys(o.vector) {
		s += fmt.Sprintf("\n      %s %v", k, o.vector[k])
	}
	for _, k := range sortedHistKeys(o.hists) {
		s += fmt.Sprintf("\n      %s %s", k, o.hists[k].TestExpression())
	}
	if o.dups > 0 {
		s += fmt.Sprintf("\n      (+%d duplicate label sets)", o.dups)
	}
	return s
}

// evalProm runs q on the reference engine at t (unix ms).
func evalProm(ctx context.Context, ng *promql.Engine, qb storage.Queryable, q string, t int64, lookback time.Duration) outcome {
	qry, err := ng.NewInstantQuery(ctx, qb, promql.NewPrometheusQueryOpts(false, lookback, nil), q, time.UnixMilli(t))
	if err != nil {
		return outcome{err: err}
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil {
		return outcome{err: res.Err}
	}
	switch v := res.Value.(type) {
	case promql.Scalar:
		return outcome{scalar: true, value: v.V}
	case promql.Vector:
		o := outcome{vector: make(map[string]float64, len(v))}
		for _, s := range v {
			o.add(s.Metric.String(), s.F, s.H)
		}
		return o
	default:
		return outcome{err: fmt.Errorf("unexpected result type %s", res.Value.Type())}
	}
}

// evalPromRange runs q as a range query on the reference engine, keyed
// like evalOursRange.
func evalPromRange(ctx context.Context, ng *promql.Engine, qb storage.Queryable, q string, start, end, step int64, lookback time.Duration) outcome {
	qry, err := ng.NewRangeQuery(ctx, qb, promql.NewPrometheusQueryOpts(false, lookback, nil), q,
		time.UnixMilli(start), time.UnixMilli(end), time.Duration(step)*time.Millisecond)
	if err != nil {
		return outcome{err: err}
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil {
		return outcome{err: res.Err}
	}
	mat, ok := res.Value.(promql.Matrix)
	if !ok {
		return outcome{err: fmt.Errorf("unexpected range result type %s", res.Value.Type())}
	}
	o := outcome{vector: map[string]float64{}}
	for _, s := range mat {
		for _, p := range s.Floats {
			o.add(rangeKey(s.Metric.String(), p.T), p.F, nil)
		}
		for _, p := range s.Histograms {
			o.add(rangeKey(s.Metric.String(), p.T), 0, p.H)
		}
	}
	return o
}

// rangeKey names one point of a range result: the series and the step.
func rangeKey(lset string, t int64) string { return fmt.Sprintf("%s @%d", lset, t) }

// ours is our store and engine loaded with one dataset.
type ours struct {
	store  *store.Store
	engine *query.Engine
}

func newOurs(d *dataset) (*ours, error) {
	o := newEmptyOurs(d)
	return o, o.load(d, func(int, sample) bool { return true })
}

// newEmptyOurs returns our store and engine, empty, with the store's clock
// at the end of d.
func newEmptyOurs(d *dataset) *ours {
	return newEmptyOursWith(d, store.Config{
		Retention:           48 * time.Hour,
		Freshness:           -1, // Prometheus has no freshness: compare pure PromQL
		MaxSamplesPerSeries: 1 << 14,
	})
}

func newEmptyOursWith(d *dataset, cfg store.Config) *ours {
	now := time.UnixMilli(d.end)
	st := store.New(cfg, store.Settings{Now: func() time.Time { return now }})
	return &ours{store: st, engine: query.NewEngine(st)}
}

// load creates d's series and appends the samples keep selects (series
// index, sample). Loading in several calls must keep each series' samples
// in time order, as ingestion does.
func (o *ours) load(d *dataset, keep func(i int, s sample) bool) error {
	for i, s := range d.series {
		created := false
		var ref store.SeriesRef
		create := o.store.Create
		for _, sm := range s.samples {
			if sm.H != nil {
				create = o.store.CreateHistogram // as the receiver does for an exponential histogram
			}
		}
		for _, sm := range s.samples {
			if !keep(i, sm) {
				continue
			}
			if !created {
				var err error
				if ref, err = create(uint64(i+1), s.lset); err != nil {
					return fmt.Errorf("create %s: %w", s.lset, err)
				}
				created = true
			}
			var err error
			if sm.H != nil {
				err = o.store.AppendHistogram(ref, sm.T, sm.H)
			} else {
				err = o.store.Append(ref, sm.T, sm.F)
			}
			if err != nil {
				return fmt.Errorf("append %s @%d: %w", s.lset, sm.T, err)
			}
		}
	}
	return nil
}

// compile compiles q for our engine. declined is non-empty when our engine
// does not implement the query (ErrUnsupported, or a function its parser
// does not know); err is any other compile error.
func (o *ours) compile(q string, lookback time.Duration) (plan *query.Plan, declined string, err error) {
	plan, err = o.engine.Query(q, query.Options{LookbackDelta: lookback})
	if err != nil {
		if reason, ok := declineReason(err); ok {
			return nil, reason, nil
		}
		return nil, "", err
	}
	return plan, "", nil
}

// evalRange evaluates a compiled plan as a range query (Plan.EvalRange,
// the HTTP API's query_range), every step's elements keyed by series and
// step, a scalar as the series {}.
func (o *ours) evalRange(ctx context.Context, plan *query.Plan, start, end, step int64) outcome {
	mat, err := plan.EvalRange(ctx, start, end, step, nil)
	if err != nil {
		return outcome{err: err}
	}
	out := outcome{vector: map[string]float64{}}
	for _, s := range mat {
		for _, p := range s.Points {
			out.add(rangeKey(s.Labels.String(), p.T), p.F, nil)
		}
		for _, p := range s.Histograms {
			out.add(rangeKey(s.Labels.String(), p.T), 0, p.H)
		}
	}
	return out
}

// eval evaluates a compiled plan at t.
func (o *ours) eval(ctx context.Context, plan *query.Plan, t int64) outcome {
	res, err := plan.Eval(ctx, t)
	if err != nil {
		return outcome{err: err}
	}
	if res.Scalar {
		return outcome{scalar: true, value: res.Value}
	}
	out := outcome{vector: make(map[string]float64, len(res.Vector))}
	for _, s := range res.Vector {
		out.add(s.Labels.String(), s.F, s.H)
	}
	return out
}
