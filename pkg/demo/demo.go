package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server"
)

// DefaultQuery is the default scaling signal: requests in the system
// (running plus waiting) summed over the model's pods, scaled with
// AverageValue so the target is per replica.
const DefaultQuery = `sum({__name__=~"vllm:num_requests_(running|waiting)",model_name="qwen"})`

// GatewayQuery is the activation trigger's query: it has a value while no
// pod exists.
const GatewayQuery = `sum(gateway_pending_requests{model_name="qwen"})`

// Options configures a demo run. Zero values take the defaults.
type Options struct {
	// Profile is spike, ramp or diurnal. Default spike.
	Profile string
	// Duration is the wall-clock length of the run: Duration × Speed
	// simulated seconds are played. A busy machine stretches it (the
	// simulated clock never skips more than 5 s per step). Default 60s.
	Duration time.Duration
	// Speed is simulated seconds per wall-clock second. Default 10.
	Speed float64
	// Query and Target are the scaling trigger's metricQuery and
	// targetValue (sent verbatim). Defaults DefaultQuery and "12".
	Query, Target string
	// MetricType is the scaling trigger's metricType. Default AverageValue.
	MetricType string
	// Out is the directory for the timeline pictures. Default "demo-out".
	Out string
	// MaxReplicas bounds the HPA. Default 8.
	MaxReplicas int
	// Cooldown and DownWindow are KEDA's cooldownPeriod and the HPA's
	// scale-down stabilisation window, in simulated seconds. Default 60.
	Cooldown, DownWindow float64
	// Fleet configures the pods and the gateway. Default DefaultFleetConfig.
	Fleet *FleetConfig
	// Stdout receives the live view and the summary. Default os.Stdout.
	Stdout io.Writer
	// Color enables ANSI colour in the live view.
	Color bool
	// Logger receives the server's logs. Default: discarded.
	Logger *slog.Logger
	// Server overrides the server configuration; listener addresses are
	// always forced to 127.0.0.1:0.
	Server *config.Config
}

// Story timings in simulated seconds (see the package documentation).
const (
	exportInterval  = 5.0  // KServe's sidecar pushes every 5 s
	pollingInterval = 15.0 // KEDA pollingInterval as llm-d sets it
	hpaSyncPeriod   = 15.0 // kube-controller-manager default
	sampleInterval  = 2.0  // one point of the timeline
	viewInterval    = 10.0 // one line of the live view
	ttftWindow      = 30.0 // TTFT p90 is computed over the last 30 s
)

func (o *Options) defaults() error {
	if o.Profile == "" {
		o.Profile = "spike"
	}
	if o.Duration <= 0 {
		o.Duration = time.Minute
	}
	if o.Speed <= 0 {
		o.Speed = 10
	}
	if o.Query == "" {
		o.Query = DefaultQuery
	}
	if o.Target == "" {
		o.Target = "12"
	}
	if o.MetricType == "" {
		o.MetricType = AverageValue
	}
	if o.MetricType != AverageValue && o.MetricType != Value {
		return fmt.Errorf("metric type %q: want AverageValue or Value", o.MetricType)
	}
	if o.Out == "" {
		o.Out = "demo-out"
	}
	if o.MaxReplicas <= 0 {
		o.MaxReplicas = 8
	}
	if o.Cooldown <= 0 {
		o.Cooldown = 60
	}
	if o.DownWindow <= 0 {
		o.DownWindow = 60
	}
	if o.Fleet == nil {
		fc := DefaultFleetConfig()
		o.Fleet = &fc
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	_, err := ProfileByName(o.Profile)
	return err
}

// Sample is one point of the timeline.
type Sample struct {
	T        float64 // simulated seconds
	Load     float64 // offered requests per second
	Pending  int     // held by the gateway
	Waiting  int     // in the pods' waiting queues
	Running  int
	KV       float64 // mean KV-cache usage of serving pods (NaN if none)
	TTFTp90  float64 // seconds, over the last ttftWindow (NaN if no data)
	Metric   float64 // last value GetMetrics gave for the scaling trigger
	Desired  int     // the scale target's replicas
	Ready    int
	Starting int
	ttft     Histogram
}

// Queue returns the requests waiting anywhere: at the gateway or in a pod.
func (s Sample) Queue() int { return s.Pending + s.Waiting }

// Result is what a run produced.
type Result struct {
	Profile  Profile
	SimEnd   float64 // simulated seconds covered
	Samples  []Sample
	Events   []Event
	SVGPath  string
	PNGPath  string
	Arrived  int
	Finished float64
	Aborted  float64
	Rejected int
	// MaxGatewayWait is the longest a request waited for a ready pod.
	MaxGatewayWait float64
	Exports        string
	RPCErrors      int
	// Pushes counts the true messages received on StreamIsActive.
	Pushes int
}

// Run runs the demo until opts.Duration has passed or ctx ends, then
// writes the timeline pictures and prints the summary. The server, the
// push stream and every connection are stopped before it returns.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	profile, _ := ProfileByName(opts.Profile)

	cfg := config.Default()
	if opts.Server != nil {
		cfg = *opts.Server
	} else {
		// No warm-up: the demo's store starts empty on purpose.
		cfg.Scaler.Warmup = 0
	}
	cfg.Server.OTLPGRPCAddr = "127.0.0.1:0"
	cfg.Server.ScalerAddr = "127.0.0.1:0"
	cfg.Server.HTTPAddr = "127.0.0.1:0"
	// Freshness stays at the server's setting: a pod that stops sends
	// stale markers, and a short floor would end live series whenever a
	// busy machine delays an export.
	srv, err := server.New(cfg, server.Settings{Logger: opts.Logger, Version: "demo"})
	if err != nil {
		return nil, fmt.Errorf("demo server: %w", err)
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("demo server: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	addrs := srv.Addrs()

	otlpConn, err := grpc.NewClient(addrs.OTLPGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial OTLP: %w", err)
	}
	defer func() { _ = otlpConn.Close() }()
	kedaConn, err := grpc.NewClient(addrs.Scaler, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial scaler: %w", err)
	}
	defer func() { _ = kedaConn.Close() }()
	client := externalscaler.NewExternalScalerClient(kedaConn)

	so := ScaledObject{
		Name: "qwen", Namespace: demoNamespace,
		MinReplicas: 0, MaxReplicas: opts.MaxReplicas,
		PollingInterval: pollingInterval, CooldownPeriod: opts.Cooldown,
		Triggers: []Trigger{
			{Label: "gateway", Push: true, MetricType: AverageValue, Metadata: map[string]string{
				"scalerAddress": addrs.Scaler, "metricQuery": GatewayQuery,
				"targetValue": "50", "activationThreshold": "0",
			}},
			{Label: "load", MetricType: opts.MetricType, Metadata: map[string]string{
				"scalerAddress": addrs.Scaler, "metricQuery": opts.Query, "targetValue": opts.Target,
			}},
		},
	}
	ctl := NewController(client, so, HPABehavior{Tolerance: 0.1, UpWindow: 0, DownWindow: opts.DownWindow})
	initCtx, cancelInit := context.WithTimeout(ctx, 10*time.Second)
	err = ctl.Init(initCtx)
	cancelInit()
	if err != nil {
		return nil, err
	}

	r := &runner{
		opts: opts, profile: profile, ctl: ctl,
		fleet:   NewFleet(*opts.Fleet),
		exp:     newExporter(otlpConn),
		simEnd:  opts.Duration.Seconds() * opts.Speed,
		view:    newView(opts.Stdout, opts.Color),
		started: map[*Pod]time.Time{},
	}
	r.view.header(opts, addrs, so)

	streamCtx, stopStream := context.WithCancel(ctx)
	pushes := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go pushStream(streamCtx, &wg, client, so.ref(0), opts.Speed, pushes)
	r.loop(ctx, pushes)
	stopStream()
	wg.Wait()

	res := r.result()
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return res, fmt.Errorf("create %s: %w", opts.Out, err)
	}
	res.SVGPath = filepath.Join(opts.Out, "keda-otel-scaler-demo.svg")
	res.PNGPath = filepath.Join(opts.Out, "keda-otel-scaler-demo.png")
	tl := timelineOf(res, opts)
	var errs []error
	svg, err := tl.SVG()
	errs = append(errs, writeFile(res.SVGPath, svg, err))
	pngData, err := tl.PNG()
	errs = append(errs, writeFile(res.PNGPath, pngData, err))
	r.view.summary(res)
	return res, errors.Join(errs...)
}

func writeFile(path string, b []byte, err error) error {
	if err != nil {
		return fmt.Errorf("render %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// runner is the state of one run; only the goroutine in loop touches it.
type runner struct {
	opts    Options
	profile Profile
	ctl     *Controller
	fleet   *Fleet
	exp     *exporter
	view    *view
	simEnd  float64

	wallStart time.Time
	lastStamp time.Time
	started   map[*Pod]time.Time
	samples   []Sample
	lastPush  string
	pushes    int
}

// wallTick is how often the loop wakes, and maxCatchUp the most simulated
// time one iteration covers (s): one export interval, so every periodic
// action still runs at most one interval late. At speeds up to 100 the
// simulated clock keeps pace with the wall clock; beyond, or when the
// machine is busy, it falls behind rather than skipping decisions.
//
// pushWait bounds how long the loop waits for StreamIsActive after an
// export that should activate the deployment. On the wall clock the push
// takes about a millisecond, which is no simulated time at all; without
// the wait a lagging loop could run the next KEDA poll first.
const (
	wallTick   = 10 * time.Millisecond
	maxCatchUp = exportInterval
	pushWait   = time.Second
)

func (r *runner) loop(ctx context.Context, pushes <-chan struct{}) {
	r.wallStart = time.Now()
	speed := r.opts.Speed
	rate := func(t float64) float64 { return r.profile.Rate(t / r.simEnd) }
	var nextPoll, nextHPA, nextExport, nextSample, nextView float64
	nextHPA = hpaSyncPeriod
	ticker := time.NewTicker(wallTick)
	defer ticker.Stop()
	lastWall := r.wallStart
	now := 0.0
	for {
		// The simulated clock follows the wall clock at speed, but never
		// jumps more than maxCatchUp per iteration: on a slow or busy
		// machine the story stretches in wall time instead of skipping
		// KEDA polls, HPA syncs and exports.
		w := time.Now()
		now = min(now+min(w.Sub(lastWall).Seconds()*speed, maxCatchUp), r.simEnd)
		lastWall = w
		for _, p := range r.fleet.Advance(now, rate) {
			if p.Exported {
				r.exp.export(ctx, podMetrics(p, r.stamp(), r.podStart(p), true))
			}
			delete(r.started, p)
		}
		if now >= nextPoll {
			r.ctl.Poll(ctx, now)
			nextPoll = next(nextPoll, pollingInterval, now)
		}
		if now >= nextHPA {
			r.ctl.HPASync(ctx, now)
			nextHPA = next(nextHPA, hpaSyncPeriod, now)
		}
		r.fleet.Scale(r.ctl.Replicas())
		if now >= nextExport {
			r.exportAll(ctx)
			nextExport = next(nextExport, exportInterval, now)
			if r.ctl.Replicas() == 0 && r.fleet.Pending() > 0 {
				select {
				case <-pushes:
					r.onPush(now)
				case <-time.After(pushWait):
				case <-ctx.Done():
				}
			}
		}
		if now >= nextSample || now >= nextView {
			r.sample(now)
			nextSample = next(nextSample, sampleInterval, now)
		}
		if now >= nextView {
			r.view.line(r.samples[len(r.samples)-1], r.lastPush, r.ctl.Events())
			nextView = next(nextView, viewInterval, now)
		}
		if now >= r.simEnd {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-pushes:
			r.onPush(now)
		case <-ticker.C:
		}
	}
}

// next returns the next due time after now on a period grid.
func next(due, period, now float64) float64 {
	due += period
	if due <= now {
		due = now + period
	}
	return due
}

func (r *runner) onPush(now float64) {
	r.pushes++
	r.lastPush = "push true @" + clock(now)
	r.ctl.OnPush(now, 0)
	r.fleet.Scale(r.ctl.Replicas())
}

// stamp returns the wall-clock timestamp of an export, at least 1 ms after
// the previous one so that no series gets two samples in one millisecond.
func (r *runner) stamp() time.Time {
	ts := time.Now()
	if !ts.After(r.lastStamp.Add(time.Millisecond)) {
		ts = r.lastStamp.Add(time.Millisecond)
	}
	r.lastStamp = ts
	return ts
}

// podStart is the wall-clock start time of p's counters: when the runner
// first saw it.
func (r *runner) podStart(p *Pod) time.Time {
	t, ok := r.started[p]
	if !ok {
		t = time.Now()
		r.started[p] = t
	}
	return t
}

func (r *runner) exportAll(ctx context.Context) {
	ts := r.stamp()
	for _, p := range r.fleet.Pods() {
		start := r.podStart(p)
		if p.State == PodStarting {
			continue // no /metrics until the server is up
		}
		r.exp.export(ctx, podMetrics(p, ts, start, false))
		p.Exported = true
	}
	r.exp.export(ctx, gatewayMetrics(r.fleet.Pending(), ts))
}

func (r *runner) sample(now float64) {
	starting, ready, _ := r.fleet.Counts()
	s := Sample{
		T:        now,
		Load:     r.profile.Rate(now / r.simEnd),
		Pending:  r.fleet.Pending(),
		Waiting:  r.fleet.Waiting(),
		Running:  r.fleet.Running(),
		KV:       r.fleet.KVUsage(),
		Metric:   r.ctl.Value(1),
		Desired:  r.ctl.Replicas(),
		Ready:    ready,
		Starting: starting,
		ttft:     r.fleet.TTFT(),
	}
	s.TTFTp90 = math.NaN()
	for i := len(r.samples) - 1; i >= 0; i-- {
		if r.samples[i].T <= now-ttftWindow || i == 0 {
			s.TTFTp90 = s.ttft.Sub(r.samples[i].ttft).Quantile(0.9)
			break
		}
	}
	r.samples = append(r.samples, s)
}

func (r *runner) result() *Result {
	fin, ab := r.fleet.Finished()
	return &Result{
		Profile:        r.profile,
		SimEnd:         r.simEnd,
		Samples:        r.samples,
		Events:         r.ctl.Events(),
		Arrived:        r.fleet.Arrived,
		Finished:       fin,
		Aborted:        ab,
		Rejected:       r.fleet.Rejected,
		MaxGatewayWait: r.fleet.MaxGatewayWait,
		Exports:        r.exp.String(),
		RPCErrors:      r.ctl.rpcErrors,
		Pushes:         r.pushes,
	}
}

// clock formats simulated seconds as m:ss.
func clock(t float64) string {
	s := int(math.Round(t))
	return strconv.Itoa(s/60) + ":" + fmt.Sprintf("%02d", s%60)
}
