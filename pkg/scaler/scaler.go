// Package scaler serves KEDA's externalscaler.ExternalScaler: it lowers each
// trigger's metadata to a compiled query, answers GetMetricSpec, GetMetrics
// and IsActive from it, and pushes activation over StreamIsActive the moment
// data that a subscribed trigger reads arrives.
package scaler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql/parser"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Errors of the evaluation pipeline, mapped to gRPC codes in toStatus.
var (
	// ErrEmptyResult means the query matched nothing and ignoreNullValues is false.
	ErrEmptyResult = errors.New("query returned no data")
	// ErrMultipleSeries means the query returned more than one element.
	ErrMultipleSeries = errors.New("query returned more than one series")
	// ErrNotFinite means the value is NaN or ±Inf and ignoreNullValues is false.
	ErrNotFinite = errors.New("query value is not finite")
	// ErrDraining means the server is shutting down.
	ErrDraining = errors.New("server is shutting down")
)

// Config configures the scaler.
type Config struct {
	// DefaultWindow is the trigger window when metadata sets none. Default 2m.
	DefaultWindow time.Duration
}

// Settings carries what the developer provides.
type Settings struct {
	// Logger receives the scaler's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives self-metrics; nil skips them.
	Registerer prometheus.Registerer
	// Now is the evaluation clock; nil means time.Now.
	Now func() time.Time
}

// Scaler implements externalscaler.ExternalScalerServer.
type Scaler struct {
	externalscaler.UnimplementedExternalScalerServer

	cfg    Config
	engine *query.Engine
	store  *store.Store
	now    func() time.Time
	logger *slog.Logger
	m      *metrics

	mu       sync.Mutex // guards the fields below
	triggers map[string]*trigger
	subs     map[*subscription]struct{}
	drained  bool
	drainCh  chan struct{}
}

// New returns a scaler evaluating with engine over st.
func New(engine *query.Engine, st *store.Store, cfg Config, set Settings) *Scaler {
	if cfg.DefaultWindow <= 0 {
		cfg.DefaultWindow = 2 * time.Minute
	}
	if set.Logger == nil {
		set.Logger = slog.New(slog.DiscardHandler)
	}
	if set.Now == nil {
		set.Now = time.Now
	}
	return &Scaler{
		cfg:      cfg,
		engine:   engine,
		store:    st,
		now:      set.Now,
		logger:   set.Logger.With("component", "scaler"),
		m:        newMetrics(set.Registerer),
		triggers: map[string]*trigger{},
		subs:     map[*subscription]struct{}{},
		drainCh:  make(chan struct{}),
	}
}

// Register registers the ExternalScaler service on s.
func (s *Scaler) Register(srv *grpc.Server) {
	externalscaler.RegisterExternalScalerServer(srv, s)
}

// trigger is the compiled form of one trigger's metadata.
type trigger struct {
	namespace, name string
	metricName      string
	target          float64
	activation      float64
	ignoreNull      bool
	metricIDs       []uint32
	anyMetric       bool

	mu   sync.Mutex // serialises plan evaluation; a plan is single-threaded
	plan *query.Plan
}

// compile returns the cached trigger for ref, compiling it on first use.
func (s *Scaler) compile(ref *externalscaler.ScaledObjectRef) (*trigger, error) {
	key := cacheKey(ref)
	s.mu.Lock()
	t, ok := s.triggers[key]
	s.mu.Unlock()
	if ok {
		return t, nil
	}
	t, err := s.newTrigger(ref)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if prev, ok := s.triggers[key]; ok {
		t = prev
	} else {
		s.triggers[key] = t
		s.m.triggers.Set(float64(len(s.triggers)))
	}
	s.mu.Unlock()
	return t, nil
}

func (s *Scaler) newTrigger(ref *externalscaler.ScaledObjectRef) (*trigger, error) {
	md := ref.GetScalerMetadata()
	ns, name := ref.GetNamespace(), ref.GetName()
	bad := func(key, val, problem string) error {
		return &metadataError{namespace: ns, name: name, key: key, value: val, problem: problem}
	}
	t := &trigger{namespace: ns, name: name, metricName: metricName(ns, name), ignoreNull: true}

	q, _, ok := lookup(md, "metricQuery", "query")
	if !ok {
		return nil, bad("metricQuery", "", "is required: set it to a PromQL query such as sum(vllm:num_requests_waiting)")
	}
	tv, tkey, ok := lookup(md, "targetValue", "threshold")
	if !ok {
		return nil, bad("targetValue", "", "is required: the per-replica target, e.g. 4")
	}
	target, err := parseNumber(tv)
	switch {
	case err != nil:
		return nil, bad(tkey, tv, err.Error())
	case target <= 0:
		return nil, bad(tkey, tv, "must be > 0")
	case target < 0.001:
		return nil, bad(tkey, tv, "must be >= 0.001: KEDA passes targets at milli precision")
	}
	t.target = target
	if av, akey, ok := lookup(md, "activationThreshold", "activationTargetValue"); ok {
		if t.activation, err = parseNumber(av); err != nil {
			return nil, bad(akey, av, err.Error())
		}
	}

	expr, err := s.engine.Parse(q)
	if err != nil {
		return nil, bad("metricQuery", q, err.Error())
	}
	// A bare selector at the root is summed, as the older add-on did.
	if vs, ok := expr.(*parser.VectorSelector); ok {
		expr = &parser.AggregateExpr{Op: parser.SUM, Expr: vs, PosRange: vs.PosRange}
	}
	plan, err := s.engine.Compile(expr, query.Options{LookbackDelta: s.cfg.DefaultWindow})
	if err != nil {
		return nil, bad("metricQuery", q, err.Error())
	}
	t.plan = plan
	names, all := plan.MetricNames()
	t.anyMetric = all
	for _, n := range names {
		t.metricIDs = append(t.metricIDs, s.store.MetricID(n))
	}
	return t, nil
}

// evaluate runs the trigger's query now and reduces it to one value that
// KEDA can use (never negative, NaN or infinite).
func (s *Scaler) evaluate(ctx context.Context, t *trigger) (float64, error) {
	start := time.Now()
	t.mu.Lock()
	res, err := t.plan.Eval(ctx, s.now().UnixMilli())
	var v float64
	if err == nil {
		v, err = t.reduce(res)
	}
	t.mu.Unlock()
	s.m.evalSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return 0, err
	}
	return max(v, 0), nil
}

func (t *trigger) reduce(res query.Result) (float64, error) {
	var v float64
	switch {
	case res.Scalar:
		v = res.Value
	case len(res.Vector) == 1:
		v = res.Vector[0].F
	case len(res.Vector) == 0:
		if t.ignoreNull {
			return 0, nil
		}
		return 0, fmt.Errorf("ScaledObject %s/%s: %w", t.namespace, t.name, ErrEmptyResult)
	default:
		return 0, fmt.Errorf("ScaledObject %s/%s: %w: got %d; aggregate them, e.g. sum(...)", t.namespace, t.name, ErrMultipleSeries, len(res.Vector))
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		if t.ignoreNull {
			return 0, nil
		}
		return 0, fmt.Errorf("ScaledObject %s/%s: %w (%v)", t.namespace, t.name, ErrNotFinite, v)
	}
	return v, nil
}

// GetMetricSpec returns the trigger's one metric with its target.
func (s *Scaler) GetMetricSpec(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.GetMetricSpecResponse, error) {
	t, err := s.compile(ref)
	if err != nil {
		return nil, s.toStatus("GetMetricSpec", err)
	}
	s.m.rpcs.WithLabelValues("GetMetricSpec", codes.OK.String()).Inc()
	return &externalscaler.GetMetricSpecResponse{MetricSpecs: []*externalscaler.MetricSpec{{
		MetricName:      t.metricName,
		TargetSize:      ceilInt(t.target),
		TargetSizeFloat: t.target,
	}}}, nil
}

// GetMetrics returns exactly one value for the trigger.
func (s *Scaler) GetMetrics(ctx context.Context, req *externalscaler.GetMetricsRequest) (*externalscaler.GetMetricsResponse, error) {
	t, err := s.compile(req.GetScaledObjectRef())
	if err != nil {
		return nil, s.toStatus("GetMetrics", err)
	}
	if s.isDraining() {
		return nil, s.toStatus("GetMetrics", ErrDraining)
	}
	v, err := s.evaluate(ctx, t)
	if err != nil {
		return nil, s.toStatus("GetMetrics", err)
	}
	name := req.GetMetricName()
	if name == "" {
		name = t.metricName
	}
	s.m.rpcs.WithLabelValues("GetMetrics", codes.OK.String()).Inc()
	return &externalscaler.GetMetricsResponse{MetricValues: []*externalscaler.MetricValue{{
		MetricName:       name,
		MetricValue:      ceilInt(v),
		MetricValueFloat: v,
	}}}, nil
}

// IsActive reports value > activationThreshold.
func (s *Scaler) IsActive(ctx context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.IsActiveResponse, error) {
	t, err := s.compile(ref)
	if err != nil {
		return nil, s.toStatus("IsActive", err)
	}
	if s.isDraining() {
		return nil, s.toStatus("IsActive", ErrDraining)
	}
	v, err := s.evaluate(ctx, t)
	if err != nil {
		return nil, s.toStatus("IsActive", err)
	}
	s.m.rpcs.WithLabelValues("IsActive", codes.OK.String()).Inc()
	return &externalscaler.IsActiveResponse{Result: v > t.activation}, nil
}

// ceilInt is ceil(v) saturated to the int64 range; v is never negative.
func ceilInt(v float64) int64 {
	c := math.Ceil(v)
	if c >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(c)
}

// toStatus maps pipeline errors to gRPC codes, once, at the boundary.
func (s *Scaler) toStatus(method string, err error) error {
	var c codes.Code
	switch {
	case errors.Is(err, ErrBadMetadata), errors.Is(err, query.ErrUnsupported):
		c = codes.InvalidArgument
	case errors.Is(err, ErrEmptyResult):
		c = codes.NotFound
	case errors.Is(err, ErrMultipleSeries), errors.Is(err, ErrNotFinite):
		c = codes.FailedPrecondition
	case errors.Is(err, ErrDraining):
		c = codes.Unavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		st := status.FromContextError(err)
		s.m.rpcs.WithLabelValues(method, st.Code().String()).Inc()
		return st.Err()
	default:
		c = codes.Internal
	}
	s.m.rpcs.WithLabelValues(method, c.String()).Inc()
	return status.Error(c, err.Error())
}
