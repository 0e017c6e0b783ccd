// Command load measures OTLP ingest end to end over gRPC loopback
// (performance.md T2): data points stored per server CPU-second, for our
// wire-walking receiver and, in the same run, for a baseline server that
// decodes the same bytes with pdata (receiver.Config.ReferenceDecoder).
//
// The server and the load generator are separate processes (this binary
// re-executed with the server and gen subcommands); the generator sends
// pre-encoded 1000-point Exports for 100k series through a raw codec, so
// its own cost is small. Everything listens on 127.0.0.1 only, and every
// run is bounded by a request count and a duration.
//
//	go run ./test/load                      # make load
//	go run ./test/load -series 100000 -streams 4 -duration 10s -max-requests 3000
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
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/synth"
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

type serverStats struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	Accepted   float64 `json:"accepted"`
}

type genStats struct {
	Requests int     `json:"requests"`
	Points   int     `json:"points"`
	Errors   int     `json:"errors"`
	Seconds  float64 `json:"seconds"`
}

func runMain(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	series := fs.Int("series", 100_000, "distinct series (`count`)")
	streams := fs.Int("streams", 4, "concurrent Export streams (`count`)")
	duration := fs.Duration("duration", 10*time.Second, "measured phase per server, at most (`duration`)")
	maxReq := fs.Int("max-requests", 3000, "measured phase per server, at most (`count` of 1000-point Exports)")
	impls := fs.String("impls", "wire,pdata", "servers to measure, in order (`list`)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	results := map[string]float64{}
	fmt.Printf("%-6s %12s %10s %14s %12s\n", "impl", "points", "server_cpu", "points/cpu_s", "points/s")
	for _, impl := range strings.Split(*impls, ",") {
		srv, gen, err := measure(self, impl, *series, *streams, *duration, *maxReq)
		if err != nil {
			return fmt.Errorf("impl %s: %w", impl, err)
		}
		perCPU := srv.Accepted / srv.CPUSeconds
		results[impl] = perCPU
		fmt.Printf("%-6s %12.0f %9.2fs %14.0f %12.0f  (gen: %d requests, %d errors, %.1fs)\n",
			impl, srv.Accepted, srv.CPUSeconds, perCPU, float64(gen.Points)/gen.Seconds, gen.Requests, gen.Errors, gen.Seconds)
	}
	if w, p := results["wire"], results["pdata"]; w > 0 && p > 0 {
		fmt.Printf("wire/pdata points per server CPU-second: %.2f\n", w/p)
	}
	return nil
}

// measure starts a server, warms it with one round over every series,
// then measures one bounded generator run.
func measure(self, impl string, series, streams int, d time.Duration, maxReq int) (serverStats, genStats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "server", "-impl", impl, "-series", fmt.Sprint(series))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return serverStats{}, genStats{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return serverStats{}, genStats{}, err
	}
	if err := cmd.Start(); err != nil {
		return serverStats{}, genStats{}, err
	}
	defer func() { _ = cmd.Wait() }()
	defer func() { _ = stdin.Close() }()
	out := bufio.NewScanner(stdout)
	if !out.Scan() {
		return serverStats{}, genStats{}, errors.New("server printed no address")
	}
	addr := strings.TrimPrefix(out.Text(), "addr ")
	rounds := (series + 999) / 1000
	warm := exec.CommandContext(ctx, self, "gen", "-addr", addr, "-series", fmt.Sprint(series),
		"-streams", fmt.Sprint(streams), "-max-requests", fmt.Sprint(rounds), "-duration", "2m", "-round", "0")
	warm.Stderr = os.Stderr
	if _, err := warm.Output(); err != nil {
		return serverStats{}, genStats{}, fmt.Errorf("warm-up: %w", err)
	}
	if _, err := io.WriteString(stdin, "start\n"); err != nil {
		return serverStats{}, genStats{}, err
	}
	if !out.Scan() || out.Text() != "started" {
		return serverStats{}, genStats{}, errors.New("server did not start measuring")
	}
	gen := exec.CommandContext(ctx, self, "gen", "-addr", addr, "-series", fmt.Sprint(series),
		"-streams", fmt.Sprint(streams), "-max-requests", fmt.Sprint(maxReq), "-duration", d.String(), "-round", "1")
	gen.Stderr = os.Stderr
	gout, err := gen.Output()
	if err != nil {
		return serverStats{}, genStats{}, fmt.Errorf("generator: %w", err)
	}
	var gs genStats
	if err := json.Unmarshal(gout, &gs); err != nil {
		return serverStats{}, genStats{}, fmt.Errorf("generator output %q: %w", gout, err)
	}
	if _, err := io.WriteString(stdin, "stop\n"); err != nil {
		return serverStats{}, genStats{}, err
	}
	if !out.Scan() {
		return serverStats{}, genStats{}, errors.New("server printed no stats")
	}
	var ss serverStats
	if err := json.Unmarshal(out.Bytes(), &ss); err != nil {
		return serverStats{}, genStats{}, fmt.Errorf("server output %q: %w", out.Text(), err)
	}
	return ss, gs, nil
}

// --- server ---

func serverMain(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	impl := fs.String("impl", "wire", "decoder: wire or pdata (`name`)")
	series := fs.Int("series", 100_000, "expected series (`count`)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	st := store.New(store.Config{MaxSeries: 2 * *series, MaxSamplesPerSeries: 64}, store.Settings{})
	r := receiver.New(st, receiver.Config{ReferenceDecoder: *impl == "pdata", MaxInFlight: 256}, receiver.Settings{Registerer: reg})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(receiver.Codec{}), grpc.MaxRecvMsgSize(int(r.MaxRecvSize())))
	r.RegisterGRPC(srv)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	defer func() {
		srv.Stop()
		wg.Wait()
	}()
	fmt.Printf("addr %s\n", lis.Addr())
	in := bufio.NewScanner(os.Stdin)
	var cpu0 time.Duration
	var acc0 float64
	for in.Scan() {
		switch in.Text() {
		case "start":
			cpu0, acc0 = processCPU(), accepted(reg)
			fmt.Println("started")
		case "stop":
			out, _ := json.Marshal(serverStats{
				CPUSeconds: (processCPU() - cpu0).Seconds(),
				Accepted:   accepted(reg) - acc0,
			})
			fmt.Println(string(out))
			return nil
		}
	}
	return errors.New("stdin closed before stop")
}

func accepted(g prometheus.Gatherer) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "keda_otel_scaler_receiver_points_accepted_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// --- generator ---

func genMain(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	addr := fs.String("addr", "", "server `host:port` (loopback)")
	series := fs.Int("series", 100_000, "distinct series (`count`)")
	streams := fs.Int("streams", 4, "concurrent Export streams (`count`)")
	maxReq := fs.Int("max-requests", 1000, "stop after this many Exports (`count`)")
	duration := fs.Duration("duration", 10*time.Second, "stop after this long (`duration`)")
	round0 := fs.Int("round", 0, "first round number; each round is 1 ms later (`n`)")
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
	// Sample times start a minute ago (well inside retention) and advance
	// 1 ms per round over the payloads.
	base := uint64(time.Now().Add(-time.Minute).UnixNano())
	payloads := synth.Config{Seed: 1, Series: *series}.Cover(base)
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var sent, points, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for k := range *streams {
		wg.Go(func() {
			// Stream k owns payloads k, k+streams, ...: each series is sent
			// by one stream, so its samples arrive in order.
			var out receiver.RawBytes
			for round := *round0; ; round++ {
				for i := k; i < len(payloads); i += *streams {
					if ctx.Err() != nil || sent.Add(1) > int64(*maxReq) {
						return
					}
					p := &payloads[i]
					p.SetTime(base + uint64(round)*1e6)
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
		Requests: int(min(sent.Load(), int64(*maxReq))),
		Points:   int(points.Load()),
		Errors:   int(errs.Load()),
		Seconds:  time.Since(start).Seconds(),
	})
	fmt.Println(string(out))
	return nil
}
