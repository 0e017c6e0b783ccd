// Command capacity is the capacity sweep of one replica (README "Scaling
// out", docs/performance.md §6): the real binary (cmd/keda-otel-scaler,
// default flags) under a load generator in a separate process, one step
// per series count, each step a fresh server.
//
// A step with S series pushed every -interval:
//
//  1. fill: S series × -window samples, back-dated so they span the
//     retention, sent as fast as the server takes them (the steady-state
//     memory of a replica that has run for a while, without waiting 10
//     minutes);
//  2. measure: the same series pushed in real time, one sample each per
//     -interval (S / interval data points per second), for -duration, while
//     a KEDA client calls GetMetrics on a 1k-series trigger
//     (sum(rate(m[1m]))) every 50 ms and a push probe flips a
//     StreamIsActive trigger with an Export every 200 ms and times the
//     Export call to the stream's Recv.
//
// Measured per step: points per server CPU-second in a burst after the
// paced phase (user + system CPU of the server process from /proc, not
// wall time: the machine is shared), the cores the paced push rate takes
// (server CPU-seconds per second, probes and GC included), peak and final
// RSS (VmHWM, VmRSS) and the store's memory gauge once every window is
// full, rejected points and failed Exports, GetMetrics client latency
// and the server's mean evaluation time, push latency.
//
// A step meets the targets (docs/performance.md §6) when every point of
// every phase is accepted (no failed Export, no rejected point, every
// series stored), the paced push rate takes at most -cpu-budget cores,
// peak RSS is within -memory-limit, every GetMetrics is answered and every
// flip pushed, and the GetMetrics and push medians under the load are at
// most maxLatencyRatio times their medians on the same server with no
// ingest, measured just before (a same-run ratio: the absolute latency
// targets T7b and T8 hold on a quiet machine only, and the figures are
// printed beside them). Everything listens on 127.0.0.1; every phase is
// bounded by a count and a duration.
//
//	make capacity                                  # builds the binary, default steps
//	go run ./test/load/capacity -bin bin/keda-otel-scaler -steps 10000,100000 -duration 20s
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/synth"
	"github.com/keda-otel-scaler/keda-otel-scaler/test/load/procstat"
)

const exportMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

// seriesPerMetric: every synth metric has this many series, so metric 0 is
// the 1k-series trigger at every step.
const seriesPerMetric = 1000

// defaultMaxSeries is the server's --max-series default.
const defaultMaxSeries = 1_000_000

// burstPoints is about how many points each step's burst phase sends.
const burstPoints = 3_000_000

// idleWindow is how long the probes run with no ingest before each paced
// phase: their same-run latency baseline.
const idleWindow = 5 * time.Second

// maxLatencyRatio: under the paced load, GetMetrics and push medians may be
// at most this many times their idle medians on the same server, same run.
const maxLatencyRatio = 2

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	if len(os.Args) > 1 && os.Args[1] == "gen" {
		err = genMain(os.Args[2:])
	} else {
		err = runMain(os.Args[1:])
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		logger.Error("Capacity sweep failed", "err", err)
		os.Exit(1)
	}
}

// fillWindow is how many samples per series the fill sends: enough to
// span the retention less 30 s (so the oldest sample is still inside it
// when it arrives, however long the generator takes to start), but no
// more than twice what the server's default --max-sample-memory (512 MiB)
// holds at 12 B a sample: past that every ring is thinned in place and the
// store's memory no longer changes, so more samples only lengthen the fill.
func fillWindow(series int, interval time.Duration) int {
	span := int((10*time.Minute - 30*time.Second) / interval)
	budget := 2 * (512 << 20) / (12 * series)
	return max(2, min(span, budget))
}

// step is one server run: series pushed every interval, window samples
// each in the fill.
type step struct {
	series, window int
	interval       time.Duration
}

type opts struct {
	bin                string
	steps              []step
	interval, duration time.Duration
	window, streams    int
	cpuBudget          float64
	memoryLimit        int64
	extraArgs          []string
	goMemLimit         string
}

func runMain(args []string) error {
	fs := flag.NewFlagSet("capacity", flag.ContinueOnError)
	var o opts
	steps := fs.String("steps", "10000,100000,300000,1000000,100000@1s,300000@1s,1000000@1s", "series counts, one step each, optionally @push interval (`list`, multiples of 1000)")
	fs.StringVar(&o.bin, "bin", "bin/keda-otel-scaler", "the scaler binary (`path`; make build)")
	fs.DurationVar(&o.interval, "interval", 5*time.Second, "each series' push interval where a step names none (`duration`; KServe's sidecars scrape every 5s)")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "the measured phase of each step (`duration`)")
	fs.IntVar(&o.window, "window", 0, "samples per series in the fill (`count`; 0: the retention less 30s, at most twice what 512 MiB of samples holds)")
	fs.IntVar(&o.streams, "streams", 4, "concurrent Export streams of the generator (`count`)")
	fs.Float64Var(&o.cpuBudget, "cpu-budget", 1, "cores the step's paced push rate may take, probes and GC included (`cores`)")
	fs.Int64Var(&o.memoryLimit, "memory-limit", 2<<30, "peak RSS allowed (`bytes`; the chart's resources.limits.memory)")
	extra := fs.String("server-args", "", "extra scaler flags, space-separated (`flags`)")
	fs.StringVar(&o.goMemLimit, "gomemlimit", "1740MiB", "GOMEMLIMIT of the server (`size`; the chart's default, 85 % of its 2Gi limit; \"\" inherits)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.interval < 100*time.Millisecond || o.duration < 5*time.Second || o.duration > 10*time.Minute {
		return errors.New("-interval ≥ 100ms and 5s ≤ -duration ≤ 10m")
	}
	for _, s := range strings.Split(*steps, ",") {
		st := step{interval: o.interval}
		num, iv, hasIv := strings.Cut(strings.TrimSpace(s), "@")
		n, err := strconv.Atoi(num)
		if err != nil || n < seriesPerMetric || n%seriesPerMetric != 0 || n > 5_000_000 {
			return fmt.Errorf("-steps %q: want multiples of %d up to 5000000, each optionally @interval", *steps, seriesPerMetric)
		}
		if hasIv {
			if st.interval, err = time.ParseDuration(iv); err != nil || st.interval < 100*time.Millisecond || st.interval > time.Minute {
				return fmt.Errorf("-steps %q: interval %q: want 100ms to 1m", *steps, iv)
			}
		}
		st.series, st.window = n, o.window
		if st.window == 0 {
			st.window = fillWindow(n, st.interval)
		}
		o.steps = append(o.steps, st)
	}
	o.extraArgs = strings.Fields(*extra)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Printf("capacity sweep: %s (GOMEMLIMIT %q), measured %s per step, %d cores, load average %s\n", o.bin, o.goMemLimit, o.duration, numCPU(), procstat.LoadAvg())
	var results []stepResult
	for _, st := range o.steps {
		r, err := runStep(self, o, st)
		if err != nil {
			return fmt.Errorf("step %d series @%s: %w", st.series, st.interval, err)
		}
		results = append(results, r)
		r.print()
	}
	fmt.Println()
	fmt.Printf("%9s %5s %8s %10s %6s %9s %9s %9s %15s %15s %4s\n", "series", "every", "dp/s", "dp/cpu_s", "cores", "rss_peak", "rss_end", "store_mem", "getm_p50(idle)", "push_p50(idle)", "ok")
	var largest stepResult
	for _, r := range results {
		ok := r.failures() == nil
		fmt.Printf("%9d %5s %8.0f %10.0f %6.3f %8.0fM %8.0fM %8.0fM %6.0f(%4.0f)µs %6.0f(%4.0f)µs %4v\n", r.series, r.interval, r.rate, r.dpPerCPU, r.cores,
			procstat.MiB(r.rssPeak), procstat.MiB(r.rssEnd), procstat.MiB(int64(r.storeMem)), procstat.US(r.getP50), procstat.US(r.idleGetP50), procstat.US(r.pushP50), procstat.US(r.idlePushP50), ok)
		if ok && r.rate > largest.rate {
			largest = r
		}
	}
	for _, r := range results {
		if f := r.failures(); f != nil {
			fmt.Printf("step %d series @%s misses: %s\n", r.series, r.interval, strings.Join(f, "; "))
		}
	}
	fmt.Printf("largest push rate meeting the targets: %d series every %s (%.0f dp/s); load average now %s\n", largest.series, largest.interval, largest.rate, procstat.LoadAvg())
	return nil
}

type stepResult struct {
	series, window       int
	interval             time.Duration
	rate                 float64
	fillPoints           int
	fillCPU, fillWall    float64
	points               int
	cpu, wall            float64
	burstPoints          int
	refreshPoints        int
	burstCPU             float64
	dpPerCPU, cores      float64
	cpuBudget            float64
	memoryLimit          int64
	rssPeak, rssEnd      int64
	storeMem             float64
	accepted, rejected   float64
	rejectedBy           map[string]float64
	genErrors            int
	genErrorSample       string
	genLag               time.Duration
	getCalls, getErrors  int
	getP50, getP99       time.Duration
	idleGetP50           time.Duration
	idlePushP50          time.Duration
	evalMean             float64
	pushes, pushMissed   int
	pushP50, pushP99     time.Duration
	seriesStored, expect float64
}

func (r stepResult) failures() []string {
	var f []string
	if r.genErrors > 0 {
		f = append(f, fmt.Sprintf("%d failed Exports (%s)", r.genErrors, r.genErrorSample))
	}
	if sent := r.fillPoints + r.refreshPoints + r.points + r.burstPoints; r.rejected > 0 || r.accepted < float64(sent) {
		f = append(f, fmt.Sprintf("%.0f of %d points accepted, %.0f rejected %v", r.accepted, sent, r.rejected, r.rejectedBy))
	}
	if r.seriesStored != r.expect {
		f = append(f, fmt.Sprintf("%.0f series stored, want %.0f", r.seriesStored, r.expect))
	}
	if r.cores > r.cpuBudget {
		f = append(f, fmt.Sprintf("the push rate takes %.2f cores > %.2f", r.cores, r.cpuBudget))
	}
	if r.getErrors > 0 || r.getCalls == 0 {
		f = append(f, fmt.Sprintf("%d of %d GetMetrics failed", r.getErrors, r.getCalls))
	}
	if r.getP50 > maxLatencyRatio*r.idleGetP50 {
		f = append(f, fmt.Sprintf("GetMetrics p50 %s > %d× its idle p50 %s", r.getP50, maxLatencyRatio, r.idleGetP50))
	}
	if r.pushMissed > 0 || r.pushes == 0 {
		f = append(f, fmt.Sprintf("%d of %d flips not pushed", r.pushMissed, r.pushes))
	}
	if r.genLag > r.interval {
		f = append(f, fmt.Sprintf("the generator fell %s behind the pace (server or machine)", r.genLag.Round(time.Millisecond)))
	}
	if r.pushP50 > maxLatencyRatio*r.idlePushP50 {
		f = append(f, fmt.Sprintf("push p50 %s > %d× its idle p50 %s", r.pushP50, maxLatencyRatio, r.idlePushP50))
	}
	if r.rssPeak > r.memoryLimit {
		f = append(f, fmt.Sprintf("peak RSS %.0f MiB > %.0f MiB", procstat.MiB(r.rssPeak), procstat.MiB(r.memoryLimit)))
	}
	return f
}

func (r stepResult) print() {
	fmt.Printf("step %d series every %s: fill %d points in %.1fs wall, %.1f server CPU-s (%.0f dp/cpu_s, series creation and ring growth included)\n",
		r.series, r.interval, r.fillPoints, r.fillWall, r.fillCPU, float64(r.fillPoints)/r.fillCPU)
	fmt.Printf("  paced: %d points at %.0f dp/s in %.1fs wall, %.2f server CPU-s = %.3f cores (probes and GC included); generator %s behind schedule at the end\n",
		r.points, r.rate, r.wall, r.cpu, r.cores, r.genLag.Round(time.Millisecond))
	fmt.Printf("  burst: %d points, %.2f server CPU-s: %.0f dp/cpu_s steady state\n", r.burstPoints, r.burstCPU, r.dpPerCPU)
	fmt.Printf("  memory: RSS peak %.0f MiB, end %.0f MiB, store gauge %.0f MiB (%.0f B/series); %.0f series stored\n",
		procstat.MiB(r.rssPeak), procstat.MiB(r.rssEnd), procstat.MiB(int64(r.storeMem)), r.storeMem/float64(r.series), r.seriesStored)
	fmt.Printf("  GetMetrics (1k series, sum(rate)): %d calls, %d failed; paced phase client p50 %s p99 %s (idle p50 %s), server evaluation mean %.1f µs\n",
		r.getCalls, r.getErrors, r.getP50, r.getP99, r.idleGetP50, r.evalMean*1e6)
	fmt.Printf("  push: %d flips, %d not pushed within 5s; paced phase Export→Recv p50 %s p99 %s (idle p50 %s); rejected points %.0f, failed Exports %d\n",
		r.pushes, r.pushMissed, r.pushP50, r.pushP99, r.idlePushP50, r.rejected, r.genErrors)
}

func runStep(self string, o opts, st step) (stepResult, error) {
	series := st.series
	o.interval, o.window = st.interval, st.window
	r := stepResult{series: series, window: o.window, interval: o.interval, rate: float64(series) / o.interval.Seconds(), cpuBudget: o.cpuBudget, memoryLimit: o.memoryLimit}
	// Bounds the whole step: start, fill (about a minute per 10M points
	// at worst here), the idle and paced phases, the burst, shutdown.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute+time.Duration(series*o.window/10_000_000+1)*2*time.Minute+o.duration)
	defer cancel()
	args := []string{"--push-holdoff=0", "--warmup=0"}
	if series+1 > defaultMaxSeries {
		// Room for the push probe's series beside the load's.
		args = append(args, fmt.Sprintf("--max-series=%d", series+seriesPerMetric))
	}
	srv, err := startScaler(ctx, o.bin, append(args, o.extraArgs...), o.goMemLimit)
	if err != nil {
		return r, err
	}
	defer srv.stop()
	addErr := func(gs genStats) {
		r.genErrors += gs.Errors
		if gs.ErrorSample != "" {
			r.genErrorSample = gs.ErrorSample
		}
	}

	// Fill: back-dated rounds spanning the retention, as fast as possible.
	cpu0, start := srv.proc.CPU(), time.Now()
	gs, err := runGen(ctx, self, srv.otlp, series, o.streams, o.window, -time.Duration(o.window)*o.interval, o.interval, false, time.Until(deadline(ctx)))
	if err != nil {
		return r, fmt.Errorf("fill: %w", err)
	}
	r.fillPoints, r.fillCPU, r.fillWall = gs.Points, (srv.proc.CPU() - cpu0).Seconds(), time.Since(start).Seconds()
	addErr(gs)

	// One round stamped now: the fill's newest samples are as old as the
	// fill took, and a series silent for --freshness (30s) no longer
	// counts.
	rs, err := runGen(ctx, self, srv.otlp, series, o.streams, 1, 0, o.interval, false, 5*time.Minute)
	if err != nil {
		return r, fmt.Errorf("refresh: %w", err)
	}
	r.refreshPoints = rs.Points
	addErr(rs)

	// Probes: a second to compile and warm their triggers, then an idle
	// window (no ingest: the same-run baseline of their latency), then the
	// paced phase.
	probeCtx, stopProbes := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var get getProbe
	var push pushProbe
	defer func() {
		stopProbes()
		wg.Wait()
	}()
	// The trigger really reads seriesPerMetric series.
	if n, err := srv.count(srv.triggerMetric); err != nil {
		return r, fmt.Errorf("count trigger metric %s: %w", srv.triggerMetric, err)
	} else if n != seriesPerMetric {
		return r, fmt.Errorf("trigger metric %s has %d series, want %d", srv.triggerMetric, n, seriesPerMetric)
	}
	trigger := fmt.Sprintf(`sum(rate({__name__=%q}[1m]))`, srv.triggerMetric)
	wg.Go(func() { get.run(probeCtx, srv.keda, trigger) })
	wg.Go(func() { push.run(probeCtx, srv.keda, srv.otlp) })
	time.Sleep(time.Second)
	get.take()
	push.take()
	time.Sleep(idleWindow)
	idleGet, idleGetErrs := get.take()
	idlePush, idlePushMissed := push.take()
	r.idleGetP50, r.idlePushP50 = procstat.Quantile(idleGet, 0.5), procstat.Quantile(idlePush, 0.5)

	m0, err := srv.metrics()
	if err != nil {
		return r, err
	}
	cpu0, start = srv.proc.CPU(), time.Now()
	rounds := int(o.duration / o.interval)
	gs, err = runGen(ctx, self, srv.otlp, series, o.streams, rounds, 0, o.interval, true, o.duration+o.interval)
	if err != nil {
		return r, fmt.Errorf("paced: %w", err)
	}
	// The last round is sent at (rounds-1) × interval: wait out its
	// interval, so the phase holds rounds intervals of load and probes.
	time.Sleep(time.Until(start.Add(time.Duration(rounds) * o.interval)))
	r.cpu, r.wall = (srv.proc.CPU() - cpu0).Seconds(), time.Since(start).Seconds()
	m1, err := srv.metrics()
	if err != nil {
		return r, err
	}
	lat, getErrs := get.take()
	plat, missed := push.take()
	stopProbes()
	wg.Wait()
	r.points, r.genLag = gs.Points, time.Duration(gs.LagSeconds*float64(time.Second))
	addErr(gs)
	// Cores the step's push rate takes, probes, garbage collection and
	// background work included: CPU-seconds per second of the paced phase
	// (its length is set by the pace; a server that fell behind shows as
	// generator lag and a longer phase).
	r.cores = r.cpu / r.wall
	r.getCalls, r.getErrors = len(lat)+getErrs+len(idleGet)+idleGetErrs, getErrs+idleGetErrs
	r.getP50, r.getP99 = procstat.Quantile(lat, 0.5), procstat.Quantile(lat, 0.99)
	r.pushes, r.pushMissed = len(plat)+missed+len(idlePush)+idlePushMissed, missed+idlePushMissed
	r.pushP50, r.pushP99 = procstat.Quantile(plat, 0.5), procstat.Quantile(plat, 0.99)
	if d := m1.evalCount - m0.evalCount; d > 0 {
		r.evalMean = (m1.evalSum - m0.evalSum) / d
	}
	// Memory now: every series with a full window, steady state.
	r.rssPeak, r.rssEnd = srv.proc.RSS()
	r.storeMem, r.seriesStored = m1.storeMem, m1.series
	r.expect = float64(series + 1) // the push probe's series

	// Burst: rounds as fast as the server takes them, no probes, stamped
	// 1 ms apart after the paced phase: ingest per CPU-second at this
	// series count with full windows, as make load measures it. Dense
	// samples grow small rings, so memory was read before.
	burstRounds := max(3, (burstPoints+series-1)/series)
	cpu0 = srv.proc.CPU()
	bs, err := runGen(ctx, self, srv.otlp, series, o.streams, burstRounds, time.Millisecond, time.Millisecond, false, 5*time.Minute)
	if err != nil {
		return r, fmt.Errorf("burst: %w", err)
	}
	r.burstPoints, r.burstCPU = bs.Points, (srv.proc.CPU() - cpu0).Seconds()
	r.dpPerCPU = float64(bs.Points) / r.burstCPU
	addErr(bs)
	m2, err := srv.metrics()
	if err != nil {
		return r, err
	}
	// Accepted minus the push probe's own points (a few per second).
	var probePoints float64
	if pp := m2.accepted - float64(r.fillPoints+r.refreshPoints+r.points+r.burstPoints); pp > 0 && pp < 1000 {
		probePoints = pp
	}
	r.accepted, r.rejected, r.rejectedBy = m2.accepted-probePoints, m2.rejected, m2.rejectedBy
	return r, nil
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// --- the server under test ---

type scaler struct {
	cmd              *exec.Cmd
	otlp, keda, http string
	triggerMetric    string
	stderrDone       chan struct{}
	stopOnce         sync.Once
	httpClient       *http.Client
	lastLogLines     []string
	lastLogMu        sync.Mutex
	proc             procstat.Proc
}

// startScaler runs the binary on loopback ports with its defaults plus
// args and waits for its "Serving" log line.
func startScaler(ctx context.Context, bin string, args []string, goMemLimit string) (*scaler, error) {
	cmd := exec.CommandContext(ctx, bin, append([]string{
		"--otlp-grpc-addr=127.0.0.1:0", "--scaler-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0", "--log-format=json",
	}, args...)...)
	if goMemLimit != "" {
		cmd.Env = append(os.Environ(), "GOMEMLIMIT="+goMemLimit)
	}
	// Its own process group, and killed with the sweep if the sweep dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (make build): %w", bin, err)
	}
	s := &scaler{
		cmd: cmd, stderrDone: make(chan struct{}), httpClient: &http.Client{Timeout: 10 * time.Second},
		proc: procstat.Of(cmd.Process.Pid),
	}
	serving := make(chan struct{})
	go func() {
		defer close(s.stderrDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var once sync.Once
		for sc.Scan() {
			var line struct {
				Msg   string `json:"msg"`
				Level string `json:"level"`
				OTLP  string `json:"otlp_grpc_addr"`
				KEDA  string `json:"scaler_addr"`
				HTTP  string `json:"http_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line.Msg == "Serving" && line.HTTP != "" {
				once.Do(func() {
					s.otlp, s.keda, s.http = line.OTLP, line.KEDA, line.HTTP
					close(serving)
				})
			}
			if line.Level == "WARN" || line.Level == "ERROR" {
				s.lastLogMu.Lock()
				if len(s.lastLogLines) < 20 {
					s.lastLogLines = append(s.lastLogLines, sc.Text())
				}
				s.lastLogMu.Unlock()
			}
		}
	}()
	select {
	case <-serving:
	case <-s.stderrDone:
		s.stop()
		return nil, errors.New("scaler exited before serving")
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, errors.New("scaler did not log its addresses within 30s")
	}
	s.triggerMetric = synthStoredName(0)
	return s, nil
}

// synthStoredName is the name the receiver stores synth metric m under: a
// monotonic cumulative sum without unit, so Prometheus's OTLP naming
// turns dots into underscores and appends _total.
func synthStoredName(m int) string {
	return strings.ReplaceAll(synth.MetricName(m), ".", "_") + "_total"
}

func (s *scaler) stop() {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
		s.lastLogMu.Lock()
		for _, l := range s.lastLogLines {
			fmt.Fprintln(os.Stderr, "scaler:", l)
		}
		s.lastLogMu.Unlock()
	})
}

// count returns how many series named name the server holds, through its
// query API.
func (s *scaler) count(name string) (int, error) {
	resp, err := s.httpClient.Get("http://" + s.http + "/api/v1/query?query=" + url.QueryEscape(fmt.Sprintf(`count({__name__=%q})`, name)))
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, err
	}
	if body.Status != "success" {
		return 0, fmt.Errorf("query API: %s %q", resp.Status, body.Error)
	}
	if len(body.Data.Result) != 1 {
		return 0, nil
	}
	v, _ := body.Data.Result[0].Value[1].(string)
	n, err := strconv.Atoi(v)
	return n, err
}

type selfMetrics struct {
	accepted, rejected, storeMem, series, evalSum, evalCount float64
	rejectedBy                                               map[string]float64
}

// metrics reads the counters the sweep needs from /metrics.
func (s *scaler) metrics() (selfMetrics, error) {
	resp, err := s.httpClient.Get("http://" + s.http + "/metrics")
	if err != nil {
		return selfMetrics{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	m := selfMetrics{rejectedBy: map[string]float64{}}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		name, val, ok := cutMetric(l)
		if !ok {
			continue
		}
		switch {
		case name == "keda_otel_scaler_receiver_points_accepted_total":
			m.accepted += val
		case strings.HasPrefix(name, "keda_otel_scaler_receiver_points_rejected_total"):
			m.rejected += val
			if val > 0 {
				m.rejectedBy[name] = val
			}
		case name == "keda_otel_scaler_store_memory_bytes":
			m.storeMem = val
		case name == "keda_otel_scaler_store_series":
			m.series = val
		case strings.HasPrefix(name, "keda_otel_scaler_scaler_evaluation_seconds_sum"):
			m.evalSum += val
		case strings.HasPrefix(name, "keda_otel_scaler_scaler_evaluation_seconds_count"):
			m.evalCount += val
		}
	}
	return m, sc.Err()
}

// cutMetric splits an exposition line into its name (with labels) and value.
func cutMetric(l string) (string, float64, bool) {
	i := strings.LastIndexByte(l, ' ')
	if i < 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(l[i+1:], 64)
	if err != nil {
		return "", 0, false
	}
	return l[:i], v, true
}

// --- probes ---

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// getProbe calls GetMetrics on the 1k-series trigger every 50 ms.
type getProbe struct {
	mu     sync.Mutex
	lat    []time.Duration
	errors int
}

// take returns what was recorded since the last take and starts anew.
func (p *getProbe) take() ([]time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	lat, errs := p.lat, p.errors
	p.lat, p.errors = nil, 0
	return lat, errs
}

func (p *getProbe) record(d time.Duration, failed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if failed {
		p.errors++
	} else {
		p.lat = append(p.lat, d)
	}
}

func (p *getProbe) run(ctx context.Context, addr, query string) {
	conn, err := dial(addr)
	if err != nil {
		p.record(0, true)
		return
	}
	defer func() { _ = conn.Close() }()
	c := externalscaler.NewExternalScalerClient(conn)
	ref := &externalscaler.ScaledObjectRef{Name: "capacity", Namespace: "sweep", ScalerMetadata: map[string]string{"metricQuery": query, "targetValue": "1"}}
	spec, err := c.GetMetricSpec(ctx, ref)
	if err != nil || len(spec.GetMetricSpecs()) == 0 {
		p.record(0, true)
		return
	}
	req := &externalscaler.GetMetricsRequest{ScaledObjectRef: ref, MetricName: spec.GetMetricSpecs()[0].GetMetricName()}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		t0 := time.Now()
		_, err := c.GetMetrics(cctx, req)
		d := time.Since(t0)
		cancel()
		switch {
		case err == nil:
			p.record(d, false)
		case ctx.Err() == nil:
			p.record(0, true)
		}
	}
}

// pushProbe holds a StreamIsActive stream on sum(capacity_push_probe) and
// every 200 ms exports 1 (timing the Export call until the stream's true
// arrives), then 0.
type pushProbe struct {
	mu     sync.Mutex
	lat    []time.Duration
	missed int
}

// take returns what was recorded since the last take and starts anew.
func (p *pushProbe) take() ([]time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	lat, missed := p.lat, p.missed
	p.lat, p.missed = nil, 0
	return lat, missed
}

func (p *pushProbe) record(d time.Duration, missed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if missed {
		p.missed++
	} else {
		p.lat = append(p.lat, d)
	}
}

func (p *pushProbe) run(ctx context.Context, kedaAddr, otlpAddr string) {
	kc, err := dial(kedaAddr)
	if err != nil {
		p.record(0, true)
		return
	}
	defer func() { _ = kc.Close() }()
	oc, err := dial(otlpAddr)
	if err != nil {
		p.record(0, true)
		return
	}
	defer func() { _ = oc.Close() }()
	ref := &externalscaler.ScaledObjectRef{Name: "push", Namespace: "sweep", ScalerMetadata: map[string]string{"metricQuery": "sum(capacity_push_probe)", "targetValue": "1"}}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := externalscaler.NewExternalScalerClient(kc).StreamIsActive(sctx, ref)
	if err != nil {
		p.record(0, true)
		return
	}
	trues := make(chan struct{}, 64)
	var recvWG sync.WaitGroup
	defer recvWG.Wait()
	defer cancel()
	recvWG.Go(func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			if m.GetResult() {
				select {
				case trues <- struct{}{}:
				default:
				}
			}
		}
	})
	client := pmetricotlp.NewGRPCClient(oc)
	send := func(v float64) error {
		md := pmetric.NewMetrics()
		m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
		m.SetName("capacity_push_probe")
		dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
		dp.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
		dp.SetDoubleValue(v)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := client.Export(cctx, pmetricotlp.NewExportRequestFromMetrics(md))
		return err
	}
	if send(0) != nil {
		p.record(0, true)
		return
	}
	for ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		for len(trues) > 0 {
			<-trues // a true of the stream's opening, or a late one
		}
		t0 := time.Now()
		if err := send(1); err != nil {
			if ctx.Err() == nil {
				p.record(0, true)
			}
			return
		}
		select {
		case <-trues:
			p.record(time.Since(t0), false)
		case <-time.After(5 * time.Second):
			p.record(0, true)
		case <-ctx.Done():
			return
		}
		time.Sleep(time.Millisecond) // a distinct timestamp for the 0
		if send(0) != nil && ctx.Err() == nil {
			p.record(0, true)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --- the load generator (a separate process) ---

type genStats struct {
	Requests    int     `json:"requests"`
	Points      int     `json:"points"`
	Errors      int     `json:"errors"`
	ErrorSample string  `json:"error_sample,omitempty"`
	Seconds     float64 `json:"seconds"`
	LagSeconds  float64 `json:"lag_seconds"`
}

// runGen runs the generator: rounds rounds over every series, round r
// stamped t0 + r*step, where t0 is offset from the time the generator has
// built its payloads (so a slow start does not age the samples); paced,
// round r starts no earlier than r*step after that.
func runGen(ctx context.Context, self, addr string, series, streams, rounds int, offset, step time.Duration, paced bool, d time.Duration) (genStats, error) {
	gen := exec.CommandContext(ctx, self, "gen", "-addr", addr, "-series", strconv.Itoa(series), "-streams", strconv.Itoa(streams),
		"-rounds", strconv.Itoa(rounds), "-t0-offset", offset.String(), "-step", step.String(),
		"-paced="+strconv.FormatBool(paced), "-duration", d.String())
	gen.Stderr = os.Stderr
	gen.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the sweep
	out, err := gen.Output()
	if err != nil {
		return genStats{}, fmt.Errorf("generator: %w", err)
	}
	var gs genStats
	if err := json.Unmarshal(out, &gs); err != nil {
		return genStats{}, fmt.Errorf("generator output %q: %w", out, err)
	}
	return gs, nil
}

func genMain(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	addr := fs.String("addr", "", "server `host:port` (loopback)")
	series := fs.Int("series", 10_000, "distinct series (`count`)")
	streams := fs.Int("streams", 4, "concurrent Export streams (`count`)")
	rounds := fs.Int("rounds", 1, "samples per series (`count`)")
	offset := fs.Duration("t0-offset", 0, "time of round 0 relative to the start, once the payloads are built (`duration`)")
	step := fs.Duration("step", 5*time.Second, "time between rounds (`duration`)")
	paced := fs.Bool("paced", false, "send round r no earlier than r*step after the start")
	duration := fs.Duration("duration", time.Minute, "stop after this long (`duration`)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || (host != "127.0.0.1" && host != "::1" && host != "localhost") {
		return fmt.Errorf("refusing non-loopback address %q", *addr)
	}
	conn, err := dial(*addr)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	payloads := synth.Config{Seed: 1, Series: *series, Metrics: *series / seriesPerMetric}.Cover(0)
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	t0 := uint64(time.Now().Add(*offset).UnixNano())
	var sent, points, errs atomic.Int64
	var sampleOnce sync.Once
	var sample string
	var lagNs atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for k := range *streams {
		wg.Go(func() {
			// Stream k owns payloads k, k+streams, ...: each series is sent
			// by one stream, so its samples arrive in order.
			var out receiver.RawBytes
			for round := range *rounds {
				if *paced {
					due := start.Add(time.Duration(round) * *step)
					if w := time.Until(due); w > 0 {
						select {
						case <-time.After(w):
						case <-ctx.Done():
							return
						}
					}
				}
				for i := k; i < len(payloads); i += *streams {
					if ctx.Err() != nil {
						return
					}
					p := &payloads[i]
					p.SetTime(t0 + uint64(round)*uint64(*step))
					in := receiver.RawBytes(p.Bytes)
					sent.Add(1)
					if err := conn.Invoke(ctx, exportMethod, &in, &out, grpc.ForceCodecV2(receiver.Codec{})); err != nil {
						if ctx.Err() == nil {
							errs.Add(1)
							sampleOnce.Do(func() { sample = err.Error() })
						}
						continue
					}
					points.Add(int64(p.Points))
				}
				if *paced {
					// How far behind schedule this round finished.
					if l := time.Since(start.Add(time.Duration(round+1) * *step)); l > 0 {
						lagNs.Store(max(lagNs.Load(), int64(l)))
					} else {
						lagNs.Store(0)
					}
				}
			}
		})
	}
	wg.Wait()
	gs := genStats{
		Requests: int(sent.Load()), Points: int(points.Load()), Errors: int(errs.Load()), ErrorSample: sample,
		Seconds: time.Since(start).Seconds(), LagSeconds: time.Duration(lagNs.Load()).Seconds(),
	}
	if ctx.Err() != nil && gs.Points < *series**rounds {
		// Not every round was sent within -duration: the server did not
		// keep up (or the machine did not let the generator run).
		gs.Errors++
		gs.ErrorSample = cmpOr(gs.ErrorSample, fmt.Sprintf("%d of %d points sent within %s", gs.Points, *series**rounds, *duration))
	}
	b, _ := json.Marshal(gs)
	_, err = fmt.Println(string(b))
	return err
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// --- helpers ---

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}
