// Command peer runs the same OTLP load against keda-otel-scaler and
// kedify/otel-add-on (the scaler KServe's documentation installs) in the
// same run, one after the other, and prints for each its server CPU per
// data point, RSS and GetMetrics latency side by side (README "Scaling
// out"). `make peer` runs it.
//
// The load is test/load/capacity's generator (its `gen` mode, a separate
// process): S synth series (1,000 per metric name, 3 point attributes)
// pushed once every -interval, paced. Each server in turn:
//
//  1. idle: -idle with only the GetMetrics probe: its idle CPU;
//  2. warm: the paced load for -warm, so that otel-add-on's window
//     (METRIC_STORE_RETENTION_SECONDS=60) is full;
//  3. measure: the paced load for -measure while a KEDA client calls
//     GetMetrics every 50 ms on a 1k-series trigger: server CPU (user +
//     system from /proc: the machine is shared, wall time would measure
//     the neighbours), RSS (VmHWM, VmRSS), GetMetrics latency.
//
// The trigger. Ours: sum(rate(synth_requests_000_total[1m])). otel-add-on
// has no PromQL: metricQuery "sum(synth_requests_000)" with
// operationOverTime "rate" and a 60 s retention is its closest equivalent,
// the per-second increase of each series over its samples of the last
// minute, summed over the 1,000 series (it divides by the span of the
// samples it holds, where Prometheus's rate extrapolates to the range's
// edges). Both walk the same 1,000 series on every call.
//
// otel-add-on is not served by the Go module proxy this project builds
// from (github.com/kedify/otel-add-on: its version list, @latest and
// @v0.1.4, its newest tag, all answer 403 "not available"), so it is built
// from a checkout named by -peer-src
// ($KOS_PEER_SRC), with its own go.mod, its dependencies from the module
// proxy, into the per-user binary cache (test/bincache). Its code is never
// part of this repository.
//
// otel-add-on listens on 0.0.0.0 at fixed ports (4317, 4318, 8080, 9090;
// it has no address setting), so the measurement runs in a network
// namespace of its own (unshare --net, loopback only; root): nothing it
// opens is reachable from outside, and its ports collide with nothing.
// Every phase is bounded by a count and a duration.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keda-otel-scaler/keda-otel-scaler/test/bincache"
	"github.com/keda-otel-scaler/keda-otel-scaler/test/load/procstat"
)

// envNetns marks the child that runs inside the private network namespace.
const envNetns = "KOS_PEER_NETNS"

// peerRetention is otel-add-on's METRIC_STORE_RETENTION_SECONDS here: the
// window of its rate, as [1m] is ours.
const peerRetention = 60

type opts struct {
	bin, gen, peerSrc, peerBin string
	series                     []int
	interval, idle, warm       time.Duration
	measure                    time.Duration
	rounds                     int
}

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		logger.Error("Peer comparison failed", "err", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fset := flag.NewFlagSet("peer", flag.ContinueOnError)
	var o opts
	fset.StringVar(&o.bin, "bin", "../../bin/keda-otel-scaler", "our scaler binary (`path`; make build)")
	fset.StringVar(&o.gen, "gen", "../../bin/capacity", "test/load/capacity built (`path`): its gen mode is the load")
	fset.StringVar(&o.peerSrc, "peer-src", os.Getenv("KOS_PEER_SRC"), "a checkout of github.com/kedify/otel-add-on (`dir`; $KOS_PEER_SRC)")
	fset.StringVar(&o.peerBin, "peer-bin", "", "a built otel-add-on (`path`; instead of -peer-src)")
	seriesList := fset.String("series", "10000,100000", "series counts, one comparison each (`list`, multiples of 1000)")
	fset.DurationVar(&o.interval, "interval", 5*time.Second, "each series' push interval (`duration`; KServe's sidecars scrape every 5s)")
	fset.DurationVar(&o.idle, "idle", 5*time.Second, "probe-only phase before the load (`duration`)")
	fset.DurationVar(&o.warm, "warm", (peerRetention+5)*time.Second, "paced load before the measurement: fills otel-add-on's 60 s window (`duration`)")
	fset.DurationVar(&o.measure, "measure", 30*time.Second, "the measured paced phase (`duration`)")
	fset.IntVar(&o.rounds, "rounds", 1, "repetitions per series count, the order of the two servers alternating (`count`)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	for _, s := range strings.Split(*seriesList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1000 || n%1000 != 0 || n > 1_000_000 {
			return fmt.Errorf("-series %q: want multiples of 1000 up to 1000000", *seriesList)
		}
		o.series = append(o.series, n)
	}
	if o.interval < time.Second || o.measure < 5*time.Second || o.measure > 5*time.Minute || o.warm > 10*time.Minute || o.rounds < 1 || o.rounds > 5 {
		return errors.New("-interval ≥ 1s, 5s ≤ -measure ≤ 5m, -warm ≤ 10m, 1 ≤ -rounds ≤ 5")
	}
	for _, p := range []*string{&o.bin, &o.gen} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("%s (make build; go build -o bin/capacity ./test/load/capacity): %w", *p, err)
		}
		*p = abs
	}
	if os.Getenv(envNetns) == "1" {
		return measure(o)
	}
	if o.peerBin == "" {
		if o.peerSrc == "" {
			return errors.New("no -peer-src: otel-add-on is not served by the Go module proxy (403 for github.com/kedify/otel-add-on); " +
				"give a checkout of github.com/kedify/otel-add-on (make peer KOS_PEER_SRC=dir)")
		}
		bin, closeCache, err := buildPeer(o.peerSrc)
		if err != nil {
			return err
		}
		defer closeCache()
		o.peerBin = bin
	}
	return inNetns(o)
}

// buildPeer builds otel-add-on from the checkout into the binary cache.
func buildPeer(src string) (string, func(), error) {
	src, err := filepath.Abs(src)
	if err != nil {
		return "", nil, err
	}
	var files []string
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && rel != "." || d.Name() == "e2e-tests" || d.Name() == "examples" || d.Name() == "helmchart") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".go") || rel == "go.mod" || rel == "go.sum") {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	if !slices.Contains(files, "go.mod") || !slices.Contains(files, "main.go") {
		return "", nil, fmt.Errorf("%s is not a checkout of github.com/kedify/otel-add-on (no go.mod or main.go)", src)
	}
	c, err := bincache.Open(".cache", func(format string, args ...any) { fmt.Fprintf(os.Stderr, "peer: "+format+"\n", args...) })
	if err != nil {
		return "", nil, err
	}
	dir, err := c.Get(context.Background(), bincache.Spec{
		Tool: "otel-add-on", Dir: src, Files: files, LDFlags: "-s -w", Pkgs: []string{"."}, Bins: []string{"otel-add-on"},
		Nice: true, Expect: "a few CPU-minutes (Kubernetes client, controller-runtime, the collector's OTLP receiver)",
	})
	if err != nil {
		_ = c.Close()
		return "", nil, err
	}
	return filepath.Join(dir, "otel-add-on"), func() { _ = c.Close() }, nil
}

// inNetns runs this command again inside a new network namespace whose
// only interface is loopback.
func inNetns(o opts) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var series []string
	for _, n := range o.series {
		series = append(series, strconv.Itoa(n))
	}
	args := []string{
		"--net", "--", "/bin/sh", "-c", `ip link set lo up && exec "$0" "$@"`, self,
		"-bin", o.bin, "-gen", o.gen, "-peer-bin", o.peerBin, "-series", strings.Join(series, ","),
		"-interval", o.interval.String(), "-idle", o.idle.String(), "-warm", o.warm.String(), "-measure", o.measure.String(),
		"-rounds", strconv.Itoa(o.rounds),
	}
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), envNetns+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("unshare --net (needs root and util-linux): %w", err)
	}
	return nil
}

// result is one server's figures at one series count.
type result struct {
	system            string
	series            int
	rate              float64
	points            int
	cpu, wall         float64
	idleCores         float64
	rssPeak, rssEnd   int64
	getP50, getP99    time.Duration
	getCalls, getErrs int
	value             float64
	stored            float64
	genLag            time.Duration
	genErrs           int
	sent              int
}

func (r result) nsPerPoint() float64 { return r.cpu / float64(r.points) * 1e9 }

// netNsPerPoint leaves out the idle phase's CPU rate (the GetMetrics probe
// and background work with no ingest): what ingesting a point costs.
func (r result) netNsPerPoint() float64 {
	return max(0, r.cpu-r.idleCores*r.wall) / float64(r.points) * 1e9
}

func measure(o opts) error {
	if _, err := os.Stat(o.peerBin); err != nil {
		return fmt.Errorf("-peer-bin: %w", err)
	}
	fmt.Printf("peer comparison: %s vs %s, %s push interval, idle %s, warm %s, measured %s, load average %s\n",
		o.bin, o.peerBin, o.interval, o.idle, o.warm, o.measure, procstat.LoadAvg())
	var results []result
	for _, n := range o.series {
		for round := range o.rounds {
			order := []string{"keda-otel-scaler", "otel-add-on"}
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, sys := range order {
				r, err := runOne(o, sys, n)
				if err != nil {
					return fmt.Errorf("%s at %d series: %w", sys, n, err)
				}
				fmt.Printf("  %s %d series: %d points in %.1fs, %.2f CPU-s; idle %.3f cores; RSS peak %.0f MiB end %.0f MiB; GetMetrics %d calls %d failed p50 %s p99 %s value %.4g; stored %.0f of %d points sent; generator lag %s, %d failed Exports\n",
					r.system, r.series, r.points, r.wall, r.cpu, r.idleCores, procstat.MiB(r.rssPeak), procstat.MiB(r.rssEnd), r.getCalls, r.getErrs, r.getP50, r.getP99, r.value, r.stored, r.sent, r.genLag, r.genErrs)
				results = append(results, r)
			}
		}
	}
	fmt.Println()
	fmt.Printf("%-17s %8s %7s %10s %9s %7s %10s %9s %9s %10s %10s %8s\n", "server", "series", "dp/s", "ns_cpu/dp", "net_ns/dp", "cores", "idle_cores", "rss_peak", "rss_end", "getm_p50", "getm_p99", "get_errs")
	var failed []string
	for _, r := range results {
		fmt.Printf("%-17s %8d %7.0f %10.0f %9.0f %7.3f %10.3f %8.0fM %8.0fM %9.0fµs %9.0fµs %8d\n", r.system, r.series, r.rate, r.nsPerPoint(), r.netNsPerPoint(), r.cpu/r.wall, r.idleCores,
			procstat.MiB(r.rssPeak), procstat.MiB(r.rssEnd), procstat.US(r.getP50), procstat.US(r.getP99), r.getErrs)
		if r.genErrs > 0 || r.getCalls == 0 {
			failed = append(failed, fmt.Sprintf("%s at %d series: %d failed Exports, %d GetMetrics calls", r.system, r.series, r.genErrs, r.getCalls))
		}
	}
	fmt.Printf("load average now %s\n", procstat.LoadAvg())
	if failed != nil {
		return fmt.Errorf("the load was not delivered: %s", strings.Join(failed, "; "))
	}
	return nil
}

func runOne(o opts, system string, series int) (result, error) {
	r := result{system: system, series: series, rate: float64(series) / o.interval.Seconds()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+o.idle+o.warm+o.measure)
	defer cancel()
	var srv *server
	var err error
	if system == "otel-add-on" {
		srv, err = startPeer(ctx, o.peerBin)
	} else {
		srv, err = startOurs(ctx, o.bin)
	}
	if err != nil {
		return r, err
	}
	defer srv.stop()

	probeCtx, stopProbe := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var get getProbe
	defer func() {
		stopProbe()
		wg.Wait()
	}()
	wg.Go(func() { get.run(probeCtx, srv.keda, srv.trigger) })
	cpu0, t0 := srv.proc.CPU(), time.Now()
	time.Sleep(o.idle)
	r.idleCores = (srv.proc.CPU() - cpu0).Seconds() / time.Since(t0).Seconds()

	warmRounds := max(1, int(o.warm/o.interval))
	if _, err := pace(ctx, o, srv.otlp, series, warmRounds, &r); err != nil {
		return r, fmt.Errorf("warm: %w", err)
	}
	get.take()
	rounds := max(1, int(o.measure/o.interval))
	cpu0, t0 = srv.proc.CPU(), time.Now()
	points, err := pace(ctx, o, srv.otlp, series, rounds, &r)
	if err != nil {
		return r, fmt.Errorf("measure: %w", err)
	}
	r.cpu, r.wall, r.points = (srv.proc.CPU() - cpu0).Seconds(), time.Since(t0).Seconds(), points
	lat, errs := get.take()
	stopProbe()
	wg.Wait()
	r.getP50, r.getP99, r.getCalls, r.getErrs = procstat.Quantile(lat, 0.5), procstat.Quantile(lat, 0.99), len(lat)+errs, errs
	r.value = get.lastValue()
	r.rssPeak, r.rssEnd = srv.proc.RSS()
	r.stored, err = srv.pointsStored()
	return r, err
}

// pace runs the generator for rounds rounds of every series, one round per
// interval, and waits out the last round's interval.
func pace(ctx context.Context, o opts, addr string, series, rounds int, r *result) (int, error) {
	start := time.Now()
	gen := exec.CommandContext(ctx, o.gen, "gen", "-addr", addr, "-series", strconv.Itoa(series), "-streams", "4",
		"-rounds", strconv.Itoa(rounds), "-step", o.interval.String(), "-paced=true",
		"-duration", (time.Duration(rounds+1) * o.interval).String())
	gen.Stderr = os.Stderr
	gen.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := gen.Output()
	if err != nil {
		return 0, fmt.Errorf("generator: %w", err)
	}
	var gs struct {
		Points      int     `json:"points"`
		Errors      int     `json:"errors"`
		ErrorSample string  `json:"error_sample"`
		LagSeconds  float64 `json:"lag_seconds"`
	}
	if err := json.Unmarshal(out, &gs); err != nil {
		return 0, fmt.Errorf("generator output %q: %w", out, err)
	}
	if gs.Errors > 0 {
		fmt.Fprintf(os.Stderr, "peer: %s: %d failed Exports: %s\n", r.system, gs.Errors, gs.ErrorSample)
	}
	r.genErrs += gs.Errors
	r.sent += gs.Points
	r.genLag = max(r.genLag, time.Duration(gs.LagSeconds*float64(time.Second)))
	time.Sleep(time.Until(start.Add(time.Duration(rounds) * o.interval)))
	return gs.Points, nil
}

// --- the servers ---

type server struct {
	cmd                 *exec.Cmd
	otlp, keda, metrics string
	trigger             map[string]string
	storedMetric        string
	proc                procstat.Proc
	logPath             string
	stopOnce            sync.Once
}

// startOurs runs keda-otel-scaler on loopback port 0 with its defaults
// (no warm-up, so the probe is answered from the first call) and reads
// its addresses from its "Serving" log line.
func startOurs(ctx context.Context, bin string) (*server, error) {
	cmd := exec.CommandContext(ctx, bin, "--otlp-grpc-addr=127.0.0.1:0", "--scaler-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0",
		"--log-format=json", "--warmup=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := newServer(cmd)
	s.trigger = map[string]string{"metricQuery": `sum(rate(synth_requests_000_total[1m]))`, "targetValue": "1"}
	s.storedMetric = "keda_otel_scaler_receiver_points_accepted_total"
	serving := make(chan [3]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				OTLP string `json:"otlp_grpc_addr"`
				KEDA string `json:"scaler_addr"`
				HTTP string `json:"http_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "Serving" && line.HTTP != "" {
				select {
				case serving <- [3]string{line.OTLP, line.KEDA, line.HTTP}:
				default:
				}
			}
		}
	}()
	select {
	case a := <-serving:
		s.otlp, s.keda, s.metrics = a[0], a[1], "http://"+a[2]+"/metrics"
		return s, nil
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, errors.New("keda-otel-scaler did not log its addresses within 30s")
	}
}

// startPeer runs otel-add-on with its defaults but a 60 s retention, its
// log in a temporary file, and waits for its OTLP and KEDA ports.
func startPeer(ctx context.Context, bin string) (*server, error) {
	logf, err := os.CreateTemp("", "otel-add-on-*.log")
	if err != nil {
		return nil, err
	}
	defer func() { _ = logf.Close() }()
	// Its internal metrics server is a controller-runtime manager, which
	// insists on a Kubernetes client configuration but makes no call with
	// it: a kubeconfig naming a closed loopback port.
	kubeconfig := logf.Name() + ".kubeconfig"
	if err := os.WriteFile(kubeconfig, []byte(noClusterKubeconfig), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "KUBERNETES_SERVICE_HOST=", "OTLP_RECEIVER_PORT=4317", "KEDA_EXTERNAL_SCALER_PORT=4318", "REST_API_PORT=9090",
		"INTERNAL_METRICS_PORT=8080", "METRIC_STORE_RETENTION_SECONDS="+strconv.Itoa(peerRetention), "NO_COLOR=true", "NO_BANNER=true")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := newServer(cmd)
	s.logPath = logf.Name()
	s.otlp, s.keda, s.metrics = "127.0.0.1:4317", "127.0.0.1:4318", "http://127.0.0.1:8080/metrics"
	s.trigger = map[string]string{"metricQuery": "sum(synth_requests_000)", "operationOverTime": "rate", "targetValue": "1"}
	s.storedMetric = "keda_otel_scaler_metric_points_written"
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range []string{s.otlp, s.keda, "127.0.0.1:8080"} {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				_ = c.Close()
				break
			}
			if time.Now().After(deadline) {
				logTail, _ := os.ReadFile(s.logPath)
				s.stop()
				return nil, fmt.Errorf("otel-add-on did not listen on %s within 30s; its log:\n%s", a, logTail[max(0, len(logTail)-4096):])
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return s, nil
}

func newServer(cmd *exec.Cmd) *server {
	return &server{cmd: cmd, proc: procstat.Of(cmd.Process.Pid)}
}

func (s *server) stop() {
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
		if s.logPath != "" {
			_ = os.Remove(s.logPath)
			_ = os.Remove(s.logPath + ".kubeconfig")
		}
	})
}

// pointsStored sums the server's own count of stored points over its
// label sets (ours: accepted by the receiver; otel-add-on: written to its
// store, per metric name).
func (s *server) pointsStored() (float64, error) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(s.metrics)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, s.storedMetric) {
			continue
		}
		if rest := l[len(s.storedMetric):]; rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			sum += v
		}
	}
	return sum, sc.Err()
}

const noClusterKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: none
  cluster:
    server: http://127.0.0.1:1
contexts:
- name: none
  context: {cluster: none, user: none}
current-context: none
users:
- name: none
  user: {}
`

// --- the KEDA client ---

// getProbe calls GetMetrics every 50 ms, as test/load/capacity's does.
type getProbe struct {
	mu     sync.Mutex
	lat    []time.Duration
	errors int
	value  float64
}

func (p *getProbe) take() ([]time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	lat, errs := p.lat, p.errors
	p.lat, p.errors = nil, 0
	return lat, errs
}

func (p *getProbe) lastValue() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.value
}

func (p *getProbe) record(d time.Duration, v float64, failed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if failed {
		p.errors++
		return
	}
	p.lat = append(p.lat, d)
	p.value = v
}

func (p *getProbe) run(ctx context.Context, addr string, metadata map[string]string) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		p.record(0, 0, true)
		return
	}
	defer func() { _ = conn.Close() }()
	c := externalscaler.NewExternalScalerClient(conn)
	ref := &externalscaler.ScaledObjectRef{Name: "peer", Namespace: "compare", ScalerMetadata: metadata}
	spec, err := c.GetMetricSpec(ctx, ref)
	if err != nil || len(spec.GetMetricSpecs()) == 0 {
		p.record(0, 0, true)
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
		resp, err := c.GetMetrics(cctx, req)
		d := time.Since(t0)
		cancel()
		switch {
		case err == nil && len(resp.GetMetricValues()) == 1:
			p.record(d, resp.GetMetricValues()[0].GetMetricValueFloat(), false)
		case ctx.Err() == nil:
			p.record(0, 0, true)
		}
	}
}

// --- helpers ---
