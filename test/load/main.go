// Command load measures OTLP ingest end to end over gRPC loopback
// (performance.md T2): data points stored per server CPU-second, for our
// wire-walking server and, in the same run, for a baseline server that
// decodes with pdata (test/load/baselineserver, a separate binary built the
// way the Collector's OTLP receiver is) and appends through the same
// mapping and store.
//
// Every server and the load generator are separate processes: this binary
// re-executed with the server and gen subcommands, and the baseline
// binary. Both servers start once and are warmed until every series' ring
// is at its steady state (harness.WarmRounds rounds of samples
// harness.Interval apart: each append overwrites an expired sample, not the
// one-time ring growth of a fresh store); then rounds of measured phases
// alternate between them (ABBA order), and the run reports each phase, the
// median per server and the median of the per-round ratios. The generator
// sends pre-encoded
// 1000-point Exports for 100k series through a raw codec, so its own cost
// is small. Everything listens on 127.0.0.1 only, and every phase is
// bounded by a request count and a duration.
//
//	make load                               # builds the baseline, then runs this
//	go run ./test/load -rounds 3 -series 100000 -streams 4 -duration 10s -max-requests 3000
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/synth"
	"github.com/keda-otel-scaler/keda-otel-scaler/test/load/harness"
)

const exportMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "server":
		err = serverMain(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "gen":
		err = genMain(os.Args[2:])
	default:
		err = runMain(os.Args[1:])
	}
	if err != nil {
		logger.Error("Load test failed", "err", err)
		os.Exit(1)
	}
}

// --- orchestrator ---

type genStats struct {
	Requests int     `json:"requests"`
	Points   int     `json:"points"`
	Errors   int     `json:"errors"`
	Seconds  float64 `json:"seconds"`
	// NextRound is the round after the last one any stream began: the
	// next run starts there, so sample times only move forward.
	NextRound int `json:"next_round"`
}

type opts struct {
	series, streams, maxReq int
	duration                time.Duration
}

func runMain(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	var o opts
	fs.IntVar(&o.series, "series", 100_000, "distinct series (`count`)")
	fs.IntVar(&o.streams, "streams", 4, "concurrent Export streams (`count`)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "each measured phase, at most (`duration`)")
	fs.IntVar(&o.maxReq, "max-requests", 3000, "each measured phase, at most (`count` of 1000-point Exports)")
	rounds := fs.Int("rounds", 3, "measured phases per server, interleaved (`count`)")
	profDir := fs.String("cpuprofile-dir", "", "servers write CPU profiles of their measured phases here, as wire.pprof and pdata.pprof (`dir`)")
	baseline := fs.String("baseline", "", "pdata baseline server binary (`path`); empty builds ./test/load/baselineserver with go build")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rounds < 1 || *rounds > 20 {
		return fmt.Errorf("-rounds %d: want 1..20", *rounds)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	if *baseline == "" {
		dir, err := os.MkdirTemp("", "kos-load-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		*baseline = filepath.Join(dir, "baselineserver")
		build := exec.Command("go", "build", "-o", *baseline, "./test/load/baselineserver")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build the baseline server (run from the module root, or pass -baseline): %w", err)
		}
	}
	// Bounds the whole run: start-up and warm-up, then every phase.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute+time.Duration(2**rounds)*(o.duration+time.Minute))
	defer cancel()
	servers := map[string]*server{}
	for _, impl := range []string{"wire", "pdata"} {
		sargs := []string{"-series", fmt.Sprint(o.series)}
		if *profDir != "" {
			sargs = append(sargs, "-cpuprofile", filepath.Join(*profDir, impl+".pprof"))
		}
		cmd := exec.CommandContext(ctx, self, append([]string{"server"}, sargs...)...)
		if impl == "pdata" {
			cmd = exec.CommandContext(ctx, *baseline, sargs...)
		}
		s, err := startServer(cmd)
		if err != nil {
			return fmt.Errorf("start %s server: %w", impl, err)
		}
		defer s.close()
		servers[impl] = s
		// Warm-up: WarmRounds rounds over every series create them all
		// and bring their rings to the steady state.
		gs, err := runGen(ctx, self, s.addr, o, harness.WarmRounds*((o.series+999)/1000), 0, 2*time.Minute)
		if err != nil {
			return fmt.Errorf("warm %s server: %w", impl, err)
		}
		s.round = gs.NextRound
	}
	fmt.Printf("%-6s %5s %12s %10s %14s %12s\n", "impl", "round", "points", "server_cpu", "points/cpu_s", "points/s")
	perCPU := map[string][]float64{}
	var ratios []float64
	for round := range *rounds {
		order := []string{"wire", "pdata"}
		if round%2 == 1 {
			order = []string{"pdata", "wire"} // ABBA: drift in load hits both alike
		}
		got := map[string]float64{}
		for _, impl := range order {
			ss, gs, err := servers[impl].phase(ctx, self, o)
			if err != nil {
				return fmt.Errorf("impl %s round %d: %w", impl, round, err)
			}
			if gs.Errors > 0 || ss.Accepted < float64(gs.Points) {
				return fmt.Errorf("impl %s round %d: %d errors, %.0f of %d points accepted", impl, round, gs.Errors, ss.Accepted, gs.Points)
			}
			if ss.Thinned > 0 {
				return fmt.Errorf("impl %s round %d: the store thinned %.0f samples: rings were not at their steady state", impl, round, ss.Thinned)
			}
			v := ss.Accepted / ss.CPUSeconds
			got[impl] = v
			perCPU[impl] = append(perCPU[impl], v)
			fmt.Printf("%-6s %5d %12.0f %9.2fs %14.0f %12.0f  (gen: %d requests, %.1fs)\n",
				impl, round, ss.Accepted, ss.CPUSeconds, v, float64(gs.Points)/gs.Seconds, gs.Requests, gs.Seconds)
		}
		ratios = append(ratios, got["wire"]/got["pdata"])
	}
	fmt.Printf("median points per server CPU-second: wire %.0f, pdata %.0f; median per-round wire/pdata %.2f\n",
		median(perCPU["wire"]), median(perCPU["pdata"]), median(ratios))
	for _, impl := range []string{"wire", "pdata"} {
		if err := servers[impl].quit(); err != nil {
			return fmt.Errorf("stop %s server: %w", impl, err)
		}
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Sorted(slices.Values(v))
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// server is a running server process speaking the harness protocol.
type server struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	addr  string
	round int // the next generator run's first round
}

func startServer(cmd *exec.Cmd) (*server, error) {
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	if !s.out.Scan() || !strings.HasPrefix(s.out.Text(), "addr ") {
		s.close()
		return nil, errors.New("server printed no address")
	}
	s.addr = strings.TrimPrefix(s.out.Text(), "addr ")
	return s, nil
}

// command sends one protocol line and returns the answer line.
func (s *server) command(c string) (string, error) {
	if _, err := io.WriteString(s.stdin, c+"\n"); err != nil {
		return "", err
	}
	if !s.out.Scan() {
		return "", fmt.Errorf("no answer to %q", c)
	}
	return s.out.Text(), nil
}

// phase measures one bounded generator run against the server. Each phase
// starts where the server's previous run stopped, so no sample is out of
// order and the sample times advance as the server's clock does.
func (s *server) phase(ctx context.Context, self string, o opts) (harness.Stats, genStats, error) {
	if a, err := s.command("start"); err != nil || a != "started" {
		return harness.Stats{}, genStats{}, fmt.Errorf("start measuring: %q %w", a, err)
	}
	gs, err := runGen(ctx, self, s.addr, o, o.maxReq, s.round, o.duration)
	if err != nil {
		return harness.Stats{}, genStats{}, err
	}
	s.round = gs.NextRound
	a, err := s.command("stop")
	if err != nil {
		return harness.Stats{}, genStats{}, err
	}
	var ss harness.Stats
	if err := json.Unmarshal([]byte(a), &ss); err != nil {
		return harness.Stats{}, genStats{}, fmt.Errorf("server output %q: %w", a, err)
	}
	return ss, gs, nil
}

func (s *server) quit() error {
	_, _ = io.WriteString(s.stdin, "quit\n")
	_ = s.stdin.Close()
	return s.cmd.Wait()
}

// close ends the process if quit did not (error paths); Wait after Kill
// reaps it.
func (s *server) close() {
	if s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// runGen runs the generator process: at most maxReq Exports, for at most d,
// with sample rounds starting at round0.
func runGen(ctx context.Context, self, addr string, o opts, maxReq, round0 int, d time.Duration) (genStats, error) {
	gen := exec.CommandContext(ctx, self, "gen", "-addr", addr, "-series", fmt.Sprint(o.series),
		"-streams", fmt.Sprint(o.streams), "-max-requests", fmt.Sprint(maxReq), "-duration", d.String(),
		"-round", fmt.Sprint(round0))
	gen.Stderr = os.Stderr
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

// --- server under test ---

func serverMain(args []string) error {
	return harness.RunServer("server", args, receiver.Config{MaxInFlight: 256}, func(r *receiver.Receiver) *grpc.Server {
		srv := grpc.NewServer(r.ServerOptions()...) // as pkg/server builds it
		r.RegisterGRPC(srv)
		return srv
	})
}

// --- generator ---

func genMain(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	addr := fs.String("addr", "", "server `host:port` (loopback)")
	series := fs.Int("series", 100_000, "distinct series (`count`)")
	streams := fs.Int("streams", 4, "concurrent Export streams (`count`)")
	maxReq := fs.Int("max-requests", 1000, "stop after this many Exports (`count`)")
	duration := fs.Duration("duration", 10*time.Second, "stop after this long (`duration`)")
	round0 := fs.Int("round", 0, "first round number; each round is harness.Interval later (`n`)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || (host != "127.0.0.1" && host != "::1" && host != "localhost") {
		return fmt.Errorf("refusing non-loopback address %q", *addr)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	payloads := synth.Config{Seed: 1, Series: *series}.Cover(harness.RoundTime(*round0))
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var sent, points, errs, next atomic.Int64
	next.Store(int64(*round0))
	// Streams own different numbers of payloads, so they would drift
	// apart in rounds: a stream starts round r only once every stream has
	// started round r-maxLead, keeping every sample within maxLead rounds
	// of the server's clock (the newest sample), far inside the retention.
	const maxLead = 8
	started := make([]atomic.Int64, *streams)
	for k := range started {
		started[k].Store(math.MaxInt64) // a stream with no payloads holds no one back
		if k < len(payloads) {
			started[k].Store(int64(*round0))
		}
	}
	waitFor := func(round int) {
		for ctx.Err() == nil {
			behind := false
			for k := range started {
				behind = behind || started[k].Load() < int64(round-maxLead)
			}
			if !behind {
				return
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	var wg sync.WaitGroup
	start := time.Now()
	for k := range min(*streams, len(payloads)) {
		wg.Go(func() {
			// Stream k owns payloads k, k+streams, ...: each series is sent
			// by one stream, so its samples arrive in order.
			defer started[k].Store(math.MaxInt64) // done: holds no one back
			var out receiver.RawBytes
			for round := *round0; ; round++ {
				waitFor(round)
				started[k].Store(int64(round))
				maxInt64(&next, int64(round+1))
				for i := k; i < len(payloads); i += *streams {
					if ctx.Err() != nil || sent.Add(1) > int64(*maxReq) {
						return
					}
					p := &payloads[i]
					p.SetTime(harness.RoundTime(round))
					in := receiver.RawBytes(p.Bytes)
					if err := conn.Invoke(ctx, exportMethod, &in, &out, grpc.ForceCodecV2(receiver.Codec{})); err != nil {
						if ctx.Err() == nil {
							errs.Add(1)
						}
						continue
					}
					points.Add(int64(p.Points))
				}
			}
		})
	}
	wg.Wait()
	out, _ := json.Marshal(genStats{
		Requests:  int(min(sent.Load(), int64(*maxReq))),
		Points:    int(points.Load()),
		Errors:    int(errs.Load()),
		Seconds:   time.Since(start).Seconds(),
		NextRound: int(next.Load()),
	})
	fmt.Println(string(out))
	return nil
}

// maxInt64 raises v to x if x is larger.
func maxInt64(v *atomic.Int64, x int64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}
