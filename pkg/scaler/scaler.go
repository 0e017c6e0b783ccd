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
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/interest"
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
	// ErrHistogramResult means the query's one element is a native
	// histogram, which has no single value to scale on.
	ErrHistogramResult = errors.New("query returned a native histogram")
	// ErrDraining means the server is shutting down.
	ErrDraining = errors.New("server is shutting down")
	// ErrWarmingUp means the scaler has not yet received metrics for the
	// whole warm-up period (keda-contract.md §8.2).
	ErrWarmingUp = errors.New("warming up")
	// ErrBudget means an evaluation exceeded its time budget.
	ErrBudget = errors.New("evaluation exceeded its budget")
	// ErrTooManyStreams means Config.MaxStreams streams are already open.
	ErrTooManyStreams = errors.New("too many open streams")
	// ErrEvalsBusy means Config.MaxEvaluations polled evaluations kept every
	// slot for the whole wait (EvalBudget).
	ErrEvalsBusy = errors.New("every evaluation slot is busy")
	// ErrEvalPanic means an evaluation panicked; it was recovered.
	ErrEvalPanic = errors.New("evaluation panicked")
)

// Config configures the scaler.
type Config struct {
	// DefaultWindow is the trigger window when metadata sets none. Default 2m.
	DefaultWindow time.Duration
	// Warmup is how long after Start GetMetrics and IsActive answer
	// Unavailable. Zero disables it; DefaultConfig has 30s.
	Warmup time.Duration
	// PushHoldoff is the least time between two true messages on one
	// stream. Zero disables it; DefaultConfig has 5s.
	PushHoldoff time.Duration
	// ReadyAfterFresh makes the warm-up clock start at the first fresh
	// sample (SawSample) instead of at Start: until one is stored the
	// scaler stays warming up however long that takes (ready.go).
	ReadyAfterFresh bool
	// FreshWindow is how old a sample may be and still count as fresh for
	// ReadyAfterFresh (the store's --freshness). Default 30s.
	FreshWindow time.Duration
	// EvalBudget bounds the time of one evaluation; the engine checks it
	// while evaluating. Default 1s.
	EvalBudget time.Duration
	// MaxLabelBytes bounds the bytes of label sets one evaluation creates
	// (label_replace, label_join); over it, ResourceExhausted. Zero means
	// query.DefaultMaxLabelBytes (8 MiB).
	MaxLabelBytes int64
	// MaxStreams bounds the open StreamIsActive and StreamMetricSpec
	// streams together; one more is refused with ResourceExhausted (KEDA
	// retries). Default 10,000: KEDA opens both for each external-push
	// trigger, so 5,000 such triggers.
	MaxStreams int
	// MaxSamples bounds the series and samples one evaluation touches
	// (keda-contract.md §8.1: over it, ResourceExhausted). Default 500,000:
	// a KServe histogram_quantile over 1,000 pods × 11 buckets × 21 samples
	// touches 231k, while a selector matching 1M series fails fast instead
	// of stalling its ScaledObject's loop.
	MaxSamples int
	// TriggerTTL is how long an unused compiled trigger stays cached.
	// Default 10m.
	TriggerTTL time.Duration
	// MaxTriggers bounds the compiled-trigger cache in entries. Default
	// 10,000.
	MaxTriggers int
	// MaxTriggerBytes bounds one compiled trigger's estimated bytes
	// (triggerCost: kept metadata, query texts, plan, interned names);
	// a larger one is refused with InvalidArgument. A plan whose working
	// set takes it over the bound drops that working set after each
	// evaluation (account). Default 2 MiB.
	MaxTriggerBytes int64
	// MaxStreamEvals bounds the shared StreamIsActive evaluations (one per
	// trigger with open streams, stream.go) running at once, all triggers
	// together; beyond a 50 ms burst they also share a budget of a quarter
	// of MaxStreamEvals cores (evalPacer). Each Export marks every push
	// trigger reading its metrics, so without a bound N such triggers over
	// a metric ingested at full speed evaluate back to back on N
	// goroutines and take every core from ingestion and GetMetrics (issue
	// #13 item 7, test/chaos). A feed waiting keeps coalescing its marks,
	// so its next evaluation still reads the newest data. Default
	// max(1, GOMAXPROCS/2).
	MaxStreamEvals int
	// TriggerCacheBytes bounds the estimated bytes of all cached
	// triggers, held ones included, with their plans' working sets
	// (account); least recently used ones are evicted
	// to stay under it. Raised to MaxTriggerBytes if lower. Default 64 MiB.
	TriggerCacheBytes int64
	// MaxEvaluations bounds the polled evaluations (GetMetrics, IsActive)
	// running at once, all triggers together. Each holds up to its
	// budgets (MaxSamples, MaxLabelBytes) while it runs, so without a
	// bound the memory of evaluations in flight grew with the number of
	// concurrent KEDA calls on distinct triggers, which a client chooses.
	// A call waits at most EvalBudget for a slot, then fails with
	// ErrEvalsBusy (ResourceExhausted); evaluation is CPU work, so more
	// slots than cores buy only overlap. Stream evaluations have their own
	// bound (MaxStreamEvals). Default max(4, 2 × GOMAXPROCS).
	MaxEvaluations int
}

// Settings carries what the developer provides.
type Settings struct {
	// Logger receives the scaler's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives self-metrics; nil skips them.
	Registerer prometheus.Registerer
	// Now is the evaluation clock; nil means time.Now.
	Now func() time.Time
	// OnPush is a test hook: when set, it is called on the stream's
	// goroutine right after a true message's Send returned.
	OnPush func()
	// OnPanic is told about a panic the scaler recovered on a goroutine no
	// RPC boundary covers (a trigger's shared push evaluation), with the
	// method it served and the stack; the server logs and counts it. Nil
	// logs it at Error.
	OnPanic func(method string, recovered any, stack []byte)
	// OnWarm, when set, is called each time warm-up ends (possibly more
	// than once, from any goroutine; it must not block): the server turns
	// KEDA's health and, with ReadyAfterFresh, /readyz on. It may run
	// during New.
	OnWarm func()
	// CatchUp, when set with ReadyAfterFresh, holds warm-up open after
	// its clock has run out: the scaler calls it once, with a function
	// that ends warm-up, and keeps answering Unavailable until that is
	// called (the server's --ready-peers gate, ready.go). It must return
	// at once and call done later, from another goroutine.
	CatchUp func(done func())
	// Interest, when set, is the lazy-ingest registry (--lazy-ingest):
	// every cached trigger holds the metric names it reads (lazy.go).
	Interest *interest.Registry
}

// Scaler implements externalscaler.ExternalScalerServer.
//
// Fields above mu are immutable after New and need no lock.
type Scaler struct {
	externalscaler.UnimplementedExternalScalerServer

	cfg     Config
	engine  *query.Engine
	store   *store.Store
	now     func() time.Time
	onPush  func()
	onPanic func(method string, recovered any, stack []byte)
	logger  *slog.Logger
	m       *metrics
	cache   *triggerCache
	subs    *subIndex
	// warnLimit bounds the trigger warnings logged (logLimiter).
	warnLimit *logLimiter
	drainCh   chan struct{}
	// evalSlots holds a token per running stream evaluation
	// (Config.MaxStreamEvals); pacer is their budget of evaluation time.
	evalSlots chan struct{}
	// pollSlots holds a token per running polled evaluation
	// (Config.MaxEvaluations); see acquirePoll.
	pollSlots chan struct{}
	pacer     *evalPacer
	// evalHook, when set (by tests, before any call), runs inside every
	// evaluation with the trigger's lock held, e.g. to inject a panic.
	evalHook func(*trigger)
	// backlogOf finds a stream's unwritten-push backlog (backlog.go);
	// tests replace it before any call.
	backlogOf func(context.Context) backlog
	// rejected keeps the last triggers that failed to compile (stats.go).
	rejected *rejectedTriggers

	mu        sync.Mutex // guards warmTimer, drained and warmEnded
	warmTimer *time.Timer
	drained   bool
	warmEnded bool // EndWarmup was called: Start ends warm-up at once

	draining    atomic.Bool
	openStreams atomic.Int64 // StreamIsActive and StreamMetricSpec streams, against cfg.MaxStreams
	warmStart   atomic.Int64 // unix ns of the warm-up start
	warmIsDone  atomic.Bool
	awaitFresh  atomic.Bool // ReadyAfterFresh: the warm-up clock waits for a fresh sample (ready.go)
	catchingUp  atomic.Bool // the clock ran out; CatchUp has not called done yet (ready.go)
	onWarm      func()
	catchUp     func(done func()) // nil unless ReadyAfterFresh and Settings.CatchUp
	interest    *interest.Registry
}

// Defaults of the features that a zero Config field turns off.
const (
	defaultWarmup      = 30 * time.Second
	defaultPushHoldoff = 5 * time.Second
)

// DefaultConfig returns the scaler's defaults, the one place they are
// written: New fills a zero field from them, except Warmup and
// PushHoldoff, where zero turns the feature off, and pkg/config's flags
// start from them.
func DefaultConfig() Config {
	return Config{Warmup: defaultWarmup, PushHoldoff: defaultPushHoldoff}.withDefaults()
}

// withDefaults fills the zero fields that have a default.
func (c Config) withDefaults() Config {
	if c.DefaultWindow <= 0 {
		c.DefaultWindow = 2 * time.Minute
	}
	if c.FreshWindow <= 0 {
		c.FreshWindow = 30 * time.Second
	}
	if c.EvalBudget <= 0 {
		c.EvalBudget = time.Second
	}
	if c.MaxLabelBytes <= 0 {
		c.MaxLabelBytes = query.DefaultMaxLabelBytes
	}
	if c.MaxSamples <= 0 {
		c.MaxSamples = 500_000
	}
	if c.TriggerTTL <= 0 {
		c.TriggerTTL = 10 * time.Minute
	}
	if c.MaxTriggers <= 0 {
		c.MaxTriggers = 10_000
	}
	if c.MaxTriggerBytes <= 0 {
		c.MaxTriggerBytes = DefaultMaxTriggerBytes
	}
	if c.TriggerCacheBytes <= 0 {
		c.TriggerCacheBytes = DefaultTriggerCacheBytes
	}
	c.TriggerCacheBytes = max(c.TriggerCacheBytes, c.MaxTriggerBytes)
	if c.MaxStreams <= 0 {
		c.MaxStreams = 10_000
	}
	if c.MaxStreamEvals <= 0 {
		c.MaxStreamEvals = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if c.MaxEvaluations <= 0 {
		c.MaxEvaluations = max(4, 2*runtime.GOMAXPROCS(0))
	}
	return c
}

// New returns a scaler evaluating with engine over st. Warm-up starts now;
// Start restarts it when the listeners begin serving.
func New(engine *query.Engine, st *store.Store, cfg Config, set Settings) *Scaler {
	cfg = cfg.withDefaults()
	if set.Logger == nil {
		set.Logger = slog.New(slog.DiscardHandler)
	}
	if set.Now == nil {
		set.Now = time.Now
	}
	s := &Scaler{
		cfg:       cfg,
		engine:    engine,
		store:     st,
		now:       set.Now,
		onPush:    set.OnPush,
		onPanic:   set.OnPanic,
		logger:    set.Logger.With("component", "scaler"),
		m:         newMetrics(set.Registerer),
		subs:      newSubIndex(),
		drainCh:   make(chan struct{}),
		warnLimit: &logLimiter{burst: warnBurst, every: int64(warnEvery)},
		onWarm:    set.OnWarm,
		interest:  set.Interest,

		evalSlots: make(chan struct{}, cfg.MaxStreamEvals),
		pollSlots: make(chan struct{}, cfg.MaxEvaluations),
		pacer:     newEvalPacer(cfg.MaxStreamEvals),
		rejected:  newRejectedTriggers(),
		backlogOf: streamBacklog,
	}
	if cfg.ReadyAfterFresh {
		s.catchUp = set.CatchUp
	}
	if s.onPanic == nil {
		s.onPanic = func(method string, p any, stack []byte) {
			s.logger.Error("Panic recovered", "method", method, "panic", fmt.Sprint(p), "stack", string(stack))
		}
	}
	s.cache = newTriggerCache(cfg.TriggerTTL.Nanoseconds(), cfg.MaxTriggers, cfg.TriggerCacheBytes, s.m)
	s.Start()
	return s
}

// Start (re)starts the warm-up clock; the server calls it once its
// listeners serve. When warm-up ends every open stream evaluates its
// trigger.
func (s *Scaler) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drained {
		return
	}
	s.warmStart.Store(s.now().UnixNano())
	if s.warmTimer != nil {
		s.warmTimer.Stop()
		s.warmTimer = nil
	}
	if s.warmEnded || (s.cfg.Warmup <= 0 && !s.cfg.ReadyAfterFresh) {
		s.awaitFresh.Store(false)
		s.warmIsDone.Store(true)
		s.notifyWarm()
		return
	}
	s.warmIsDone.Store(false)
	if s.cfg.ReadyAfterFresh {
		s.awaitFresh.Store(true) // SawSample starts the clock
		return
	}
	s.startWarmClockLocked()
}

// startWarmClockLocked runs warm-up for cfg.Warmup from now; s.mu is held.
func (s *Scaler) startWarmClockLocked() {
	s.warmStart.Store(s.now().UnixNano())
	if s.cfg.Warmup <= 0 {
		s.clockRanOut()
		return
	}
	s.warmTimer = time.AfterFunc(s.cfg.Warmup, s.clockRanOut)
}

// clockRanOut ends warm-up when its clock has run out, or with a CatchUp
// gate hands the end to it (ready.go).
func (s *Scaler) clockRanOut() {
	if s.catchUp != nil {
		s.logger.Info("Warm-up clock ended; waiting to catch up with ready peers", "warmup", s.cfg.Warmup)
		s.catchingUp.Store(true)
		s.catchUp(s.caughtUp)
		return
	}
	s.warmIsDone.Store(true)
	s.logger.Info("Warm-up ended", "warmup", s.cfg.Warmup)
	s.subs.markAll()
	s.notifyWarm()
}

// EndWarmup ends warm-up now and makes later Start calls skip it: the
// server calls it when the store was restored from --state-dir with
// samples younger than the freshness window (keda-contract.md §8.2), so
// the store already holds what a warm-up would have waited for. Open
// streams evaluate their triggers.
func (s *Scaler) EndWarmup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.warmEnded = true
	s.awaitFresh.Store(false)
	s.catchingUp.Store(false)
	if s.warmTimer != nil {
		s.warmTimer.Stop()
		s.warmTimer = nil
	}
	if !s.warmIsDone.Swap(true) {
		s.logger.Info("Warm-up skipped", "reason", "store_restored")
	}
	s.subs.markAll()
	s.notifyWarm()
}

// Register registers the ExternalScaler service on s.
func (s *Scaler) Register(srv *grpc.Server) {
	externalscaler.RegisterExternalScalerServer(srv, s)
}

// warmingUp returns an ErrWarmingUp error during warm-up, else nil.
func (s *Scaler) warmingUp() error {
	if s.warmIsDone.Load() {
		return nil
	}
	if s.awaitFresh.Load() {
		return fmt.Errorf("%w: no fresh sample stored yet (--ready-after-fresh); KEDA keeps the current replicas meanwhile", ErrWarmingUp)
	}
	if s.catchingUp.Load() {
		return fmt.Errorf("%w: waiting until this replica holds as many fresh series as its ready peers (--ready-peers); KEDA keeps the current replicas meanwhile", ErrWarmingUp)
	}
	elapsed := time.Duration(s.now().UnixNano() - s.warmStart.Load())
	// With a CatchUp gate only caughtUp ends warm-up.
	if elapsed >= s.cfg.Warmup && s.catchUp == nil {
		s.warmIsDone.Store(true)
		return nil
	}
	return fmt.Errorf("%w: receiving metrics for %s of %s; KEDA keeps the current replicas meanwhile",
		ErrWarmingUp, elapsed.Truncate(time.Second), s.cfg.Warmup)
}

// compile returns the cached trigger for ref, compiling it on a miss. A
// hit does not allocate.
func (s *Scaler) compile(ref *externalscaler.ScaledObjectRef) (*trigger, error) {
	return s.lookupTrigger(ref, false)
}

// hold is compile for a caller that keeps the trigger for a while (a
// StreamIsActive stream, whose subscription uses the trigger's metric
// IDs): the trigger stays cached, and its names interned, until unhold.
func (s *Scaler) hold(ref *externalscaler.ScaledObjectRef) (*trigger, error) {
	return s.lookupTrigger(ref, true)
}

// unhold releases a trigger returned by hold.
func (s *Scaler) unhold(t *trigger) { s.cache.unhold(t, s.now().UnixNano()) }

func (s *Scaler) lookupTrigger(ref *externalscaler.ScaledObjectRef, hold bool) (*trigger, error) {
	ns, name, md := ref.GetNamespace(), ref.GetName(), ref.GetScalerMetadata()
	var k triggerKey
	h, ok := k.fill(s.cache.seed, ns, name, md)
	if !ok {
		return nil, limitErrors(ns, name, md)
	}
	now := s.now().UnixNano()
	t, expired := s.cache.get(&k, h, now, hold)
	if expired != nil {
		s.release(expired)
	}
	if t != nil {
		return t, nil
	}
	nt, warnings, err := s.newTrigger(k.clone())
	if err != nil {
		return nil, err
	}
	nt.stats = newTriggerStats(md, now/int64(time.Millisecond))
	nt.cost += nt.stats.cost()
	t, inserted, evicted, err := s.cache.add(nt, now, hold)
	for _, e := range evicted {
		s.release(e)
	}
	if !inserted {
		s.release(nt) // an equal trigger won a race, or nt did not fit
		if err != nil {
			return nil, err
		}
		return t, nil
	}
	for _, w := range warnings {
		s.m.triggerWarnings.Inc()
		if !s.warnLimit.allow(now) {
			s.m.triggerWarningsUnlogged.Inc()
			continue
		}
		//nolint:sloglint // w.msg is one of the constant messages recorded where the warning arose.
		s.logger.Warn(w.msg, append([]any{"namespace", ns, "scaled_object", name}, w.args...)...)
	}
	if t.rewritten != "" {
		s.logger.Info("Trigger query rewritten", "namespace", ns, "scaled_object", name, "evaluated", t.rewritten)
	}
	return t, nil
}

// release frees what a trigger that left the cache (or never entered it)
// held in the store: the metric names its query reads, which the store
// frees unless series or other triggers use them.
func (s *Scaler) release(t *trigger) {
	s.store.ReleaseMetricIDs(t.metricIDs)
	t.interest.Release()
}

// newTrigger validates the key's metadata and compiles its query
// (compileTrigger, the path Describe shares), then holds the query's
// metric names in the store (AcquireMetricID; the caller releases them
// through release); it runs only on a cache miss. Everything the trigger
// keeps comes from k, whose strings are private copies. The warnings are
// logged once, by the caller, if the trigger is cached.
func (s *Scaler) newTrigger(k triggerKey) (*trigger, []warning, error) {
	t, lw, err := compileTrigger(s.engine, s.store.Retention(), s.cfg, k)
	if err != nil {
		return nil, nil, err
	}
	warnings := t.warnings
	t.warnings = nil // logged once; not kept
	names, _ := t.plan.MetricNames()
	t.metricIDs = make([]uint32, 0, len(names))
	for _, n := range names {
		t.metricIDs = append(t.metricIDs, s.store.AcquireMetricID(n))
	}
	if err := s.holdInterest(t, lw.expr); err != nil {
		s.store.ReleaseMetricIDs(t.metricIDs)
		return nil, nil, err
	}
	return t, warnings, nil
}

// evaluate runs the trigger's query now and reduces it to one value that
// KEDA can use (never negative, NaN or infinite).
func (s *Scaler) evaluate(ctx context.Context, t *trigger) (float64, error) {
	start := time.Now()
	v, err := s.evalLocked(ctx, t)
	took := time.Since(start)
	s.m.evalSeconds.Observe(took.Seconds())
	if err != nil {
		if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || isQueryBudget(err)) {
			return 0, fmt.Errorf("ScaledObject %s/%s: %w (%w, took %s): narrow the query's selectors", t.namespace, t.name, ErrBudget, err, took)
		}
		return 0, err
	}
	if took > s.cfg.EvalBudget {
		// The engine does not abort mid-evaluation; report the overrun so
		// KEDA sees the problem instead of a late value.
		return 0, fmt.Errorf("ScaledObject %s/%s: %w (took %s of %s): narrow the query's selectors", t.namespace, t.name, ErrBudget, took, s.cfg.EvalBudget)
	}
	return v, nil
}

// evalLocked evaluates t's plan under its lock. The unlock is deferred so a
// panic inside the evaluation (recovered by the RPC's boundary or the
// feed's) never leaves the trigger locked for the next caller.
func (s *Scaler) evalLocked(ctx context.Context, t *trigger) (float64, error) {
	bctx, cancel := context.WithTimeout(ctx, s.cfg.EvalBudget)
	defer cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.evalHook != nil {
		s.evalHook(t)
	}
	ts := s.now().UnixMilli()
	res, err := t.plan.Eval(bctx, ts)
	var v float64
	if err == nil {
		v, err = t.reduce(res)
	}
	t.stats.evaluated(ts, v, v > t.activation, err == nil)
	s.account(t)
	return v, err
}

// account charges the working set t's plan kept from the evaluation that
// just ran (failed ones too: a budget error stops after buffers grew) to
// the cache's byte bound, under t.mu. The cache evicts least recently used
// triggers to make room; when it cannot, or the trigger alone is over
// --max-trigger-bytes, the plan's working set is dropped (query.Plan.Trim:
// it answers the same, and its next evaluation allocates its buffers
// again) and the smaller size is charged. So memory between evaluations is
// bounded by --trigger-cache-bytes whatever the triggers select. The
// common case (nothing grew) is a walk of the plan's nodes and one
// locked compare, without allocating.
func (s *Scaler) account(t *trigger) {
	r := t.plan.RetainedBytes()
	if r == t.retained { // read under t.mu (cache.go); the warm case
		return
	}
	evicted, trim := s.cache.resize(t, r, s.cfg.MaxTriggerBytes)
	for _, e := range evicted {
		s.release(e)
	}
	if !trim {
		return
	}
	if err := t.plan.Trim(); err != nil {
		// Not expected: the plan's text came from a parsed expression.
		// The trigger keeps its buffers and its previous charge.
		s.logger.Error("Trigger plan not trimmed", "namespace", t.namespace, "scaled_object", t.name, "error", err)
		return
	}
	s.m.trimmed.Inc()
	// A fresh plan keeps (nearly) nothing, so this cannot ask again.
	evicted, _ = s.cache.resize(t, t.plan.RetainedBytes(), s.cfg.MaxTriggerBytes)
	for _, e := range evicted {
		s.release(e)
	}
}

// reduce turns a query result into the one value of keda-contract.md §5,
// steps 4 to 8.
func (t *trigger) reduce(res query.Result) (float64, error) {
	sp := &t.spec
	var v float64
	switch {
	case res.Scalar:
		v = res.Value
	case len(res.Vector) == 1 && res.Vector[0].H != nil:
		return 0, fmt.Errorf("ScaledObject %s/%s: %w; reduce it to a number, e.g. histogram_quantile(0.9, %s) or histogram_count(%s)",
			t.namespace, t.name, ErrHistogramResult, t.queryText(), t.queryText())
	case len(res.Vector) == 1:
		v = res.Vector[0].F
	case len(res.Vector) == 0:
		switch {
		case sp.hasIfEmpty:
			v = sp.ifEmpty
		case sp.ignoreNull:
			v = 0
		default:
			return 0, fmt.Errorf("ScaledObject %s/%s: %w: no series matched %s; check the selectors, or set valueIfEmpty or ignoreNullValues: \"true\"",
				t.namespace, t.name, ErrEmptyResult, t.queryText())
		}
	default:
		return 0, fmt.Errorf("ScaledObject %s/%s: %w: query returned %d series; aggregate them, e.g. sum(%s)",
			t.namespace, t.name, ErrMultipleSeries, len(res.Vector), t.queryText())
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		if !sp.ignoreNull {
			return 0, fmt.Errorf("ScaledObject %s/%s: %w: %v; set ignoreNullValues: \"true\" to read it as 0", t.namespace, t.name, ErrNotFinite, v)
		}
		v = 0
	}
	if sp.hasMin {
		v = max(v, sp.clampMin)
	}
	if sp.hasMax {
		v = min(v, sp.clampMax)
	}
	return max(v, 0), nil
}

// GetMetricSpec returns the trigger's one metric with its target. It does
// no parsing and no store access for a cached trigger.
func (s *Scaler) GetMetricSpec(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.GetMetricSpecResponse, error) {
	t, err := s.compile(ref)
	if err != nil {
		return nil, s.fail(methodGetMetricSpec, nil, ref, err)
	}
	t.stats.specMs.Store(s.now().UnixMilli())
	s.m.ok[methodGetMetricSpec].Inc()
	return t.specResponse(), nil
}

func (t *trigger) specResponse() *externalscaler.GetMetricSpecResponse {
	return &externalscaler.GetMetricSpecResponse{MetricSpecs: []*externalscaler.MetricSpec{{
		MetricName:      t.metricName,
		TargetSize:      ceilInt(t.target),
		TargetSizeFloat: t.target,
	}}}
}

// value runs the pipeline GetMetrics and IsActive share. The trigger is
// returned with an error too once it compiled, so the error is recorded on
// it.
func (s *Scaler) value(ctx context.Context, ref *externalscaler.ScaledObjectRef) (*trigger, float64, error) {
	t, err := s.compile(ref)
	if err != nil {
		return nil, 0, err
	}
	if err := s.warmingUp(); err != nil {
		return t, 0, err
	}
	if err := s.lazyWarming(t); err != nil {
		return t, 0, err
	}
	if s.draining.Load() {
		return t, 0, ErrDraining
	}
	v, err := s.evaluatePolled(ctx, t)
	return t, v, err
}

// evaluatePolled evaluates t within one of Config.MaxEvaluations slots. The slot
// is given back by a defer: a panicking evaluation (recovered at the RPC's
// boundary) must not keep it.
func (s *Scaler) evaluatePolled(ctx context.Context, t *trigger) (float64, error) {
	if err := s.acquirePoll(ctx, t); err != nil {
		return 0, err
	}
	defer func() { <-s.pollSlots }()
	return s.evaluate(ctx, t)
}

// acquirePoll takes one of Config.MaxEvaluations slots for a polled evaluation,
// waiting at most EvalBudget or until ctx ends. The uncontended path is a
// channel send: no timer, no allocation.
func (s *Scaler) acquirePoll(ctx context.Context, t *trigger) error {
	select {
	case s.pollSlots <- struct{}{}:
		return nil
	default:
	}
	timer := time.NewTimer(s.cfg.EvalBudget)
	defer timer.Stop()
	select {
	case s.pollSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("ScaledObject %s/%s: %w: %d evaluations ran for the whole %s wait (--max-evaluations); KEDA retries", t.namespace, t.name, ErrEvalsBusy, s.cfg.MaxEvaluations, s.cfg.EvalBudget)
	}
}

// GetMetrics returns exactly one value for the trigger.
func (s *Scaler) GetMetrics(ctx context.Context, req *externalscaler.GetMetricsRequest) (*externalscaler.GetMetricsResponse, error) {
	t, v, err := s.value(ctx, req.GetScaledObjectRef())
	if err != nil {
		return nil, s.fail(methodGetMetrics, t, req.GetScaledObjectRef(), err)
	}
	name := req.GetMetricName()
	t.stats.noteKEDAName(name)
	switch {
	case name == "":
		name = t.metricName
	case len(name) < len(t.metricName) || !strings.EqualFold(name[len(name)-len(t.metricName):], t.metricName):
		// KEDA asks for s<index>-<our name>; another name still gets this
		// trigger's value, so HPAs made by other versions keep working.
		s.logger.Debug("Requested metric name differs", "namespace", t.namespace, "scaled_object", t.name,
			"requested", name, "metric_name", t.metricName)
	}
	s.m.ok[methodGetMetrics].Inc()
	return &externalscaler.GetMetricsResponse{MetricValues: []*externalscaler.MetricValue{{
		MetricName:       name,
		MetricValue:      ceilInt(v),
		MetricValueFloat: v,
	}}}, nil
}

// IsActive reports value > activationThreshold.
func (s *Scaler) IsActive(ctx context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.IsActiveResponse, error) {
	t, v, err := s.value(ctx, ref)
	if err != nil {
		return nil, s.fail(methodIsActive, t, ref, err)
	}
	s.m.ok[methodIsActive].Inc()
	return &externalscaler.IsActiveResponse{Result: v > t.activation}, nil
}

// StreamMetricSpec sends the trigger's spec once on open, then holds the
// stream silently until the client goes away or the server drains; the
// spec is a pure function of the metadata (keda-contract.md §4).
func (s *Scaler) StreamMetricSpec(ref *externalscaler.ScaledObjectRef, stream grpc.ServerStreamingServer[externalscaler.GetMetricSpecResponse]) error {
	t, err := s.compile(ref)
	if err != nil {
		return s.fail(methodStreamMetricSpec, nil, ref, err)
	}
	if err := s.acquireStream(); err != nil {
		return s.fail(methodStreamMetricSpec, t, ref, err)
	}
	defer s.releaseStream()
	t.stats.specMs.Store(s.now().UnixMilli())
	if err := stream.Send(t.specResponse()); err != nil {
		s.m.rpc(methodStreamMetricSpec, codes.OK)
		return nil
	}
	select {
	case <-stream.Context().Done():
		s.m.rpc(methodStreamMetricSpec, codes.Canceled)
	case <-s.drainCh:
		s.m.rpc(methodStreamMetricSpec, codes.OK)
	}
	return nil
}

// ceilInt is ceil(v) saturated to the int64 range; v is never negative.
func ceilInt(v float64) int64 {
	c := math.Ceil(v)
	if c >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(c)
}

// isQueryBudget reports whether err is the query engine's sample budget.
func isQueryBudget(err error) bool { return errors.Is(err, query.ErrBudgetExceeded) }

// toStatus maps pipeline errors to gRPC codes, once, at the boundary.
func (s *Scaler) toStatus(method string, err error) error {
	c := codeOf(err)
	if c == codes.Canceled || c == codes.DeadlineExceeded {
		st := status.FromContextError(err)
		s.m.rpc(method, st.Code())
		return st.Err()
	}
	s.m.rpc(method, c)
	return status.Error(c, err.Error())
}

// codeOf is the gRPC code of a pipeline error.
func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, ErrBadMetadata), errors.Is(err, query.ErrUnsupported):
		return codes.InvalidArgument
	case errors.Is(err, ErrWarmingUp), errors.Is(err, ErrDraining):
		return codes.Unavailable
	case errors.Is(err, ErrEmptyResult):
		return codes.NotFound
	case errors.Is(err, ErrMultipleSeries), errors.Is(err, ErrNotFinite), errors.Is(err, ErrHistogramResult):
		return codes.FailedPrecondition
	case errors.Is(err, ErrBudget), errors.Is(err, query.ErrBudgetExceeded), errors.Is(err, ErrTooManyStreams), errors.Is(err, ErrTriggerCacheFull), errors.Is(err, ErrEvalsBusy):
		return codes.ResourceExhausted
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	return codes.Internal
}
