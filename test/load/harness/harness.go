// Package harness is what the load test's servers share (performance.md
// T2): the store they append to and the line protocol through which the
// orchestrator measures them, so the wire-walking server and the pdata
// baseline server differ only in how they decode.
//
// Protocol, one command per line on the server's stdin: the server first
// prints "addr <host:port>"; "start" records the process's CPU time and
// counters and answers "started"; "stop" answers one JSON Stats
// line covering the time since the last start; "quit" or end of input
// stops the server. Several start/stop phases may follow each other, so
// rounds can interleave two servers that stay warm.
package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// RunServer is the main of a load-test server: it parses the server flags
// (args), appends to NewStore through a receiver on the load test's clock
// (Clock), serves OTLP/gRPC on 127.0.0.1 with the server newServer builds
// (the only part in which the servers differ) and runs the protocol on
// stdin/stdout until "quit".
func RunServer(name string, args []string, cfg receiver.Config, newServer func(*receiver.Receiver) *grpc.Server) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	series := fs.Int("series", 100_000, "expected series (`count`)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measured phases to `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	clk := &Clock{}
	st, stopStore := NewStore(*series, clk.Now, reg)
	defer stopStore()
	r := receiver.New(st, cfg, receiver.Settings{Registerer: reg, Now: clk.Now, OnStored: clk.Saw})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := newServer(r)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	defer func() {
		srv.Stop()
		wg.Wait()
	}()
	return Serve(os.Stdin, os.Stdout, lis.Addr().String(), reg, *cpuProfile)
}

// Interval is the spacing of sample times. The generator stamps round r
// of its payloads (every series once) with RoundTime(r): Interval apart,
// the usual export interval, so with the store's default 10-minute
// retention every ring settles at 42 slots and each append overwrites an
// expired sample, as in a scaler that has been running for a while.
// (Samples 1 ms apart, as the load test used to send, make the store thin
// rings at their bound instead: a regime production only sees from a
// misconfigured sender.) Rounds follow each other far faster than
// Interval, so the servers run on Clock, which follows the samples,
// instead of the wall clock.
const Interval = 15 * time.Second

// epoch is the time of round 0.
var epoch = time.Unix(1_800_000_000, 0)

// RoundTime returns the sample time of round r in unix ns.
func RoundTime(r int) uint64 { return uint64(epoch.Add(time.Duration(r) * Interval).UnixNano()) }

// WarmRounds is how many rounds the run sends each server before
// measuring: past the 43 that bring a ring to its steady state (2 slots,
// grown up to 4-fold per step to 42, then full with its oldest sample
// expired), with a margin.
const WarmRounds = 50

// Clock is a load-test server's clock: the newest sample time the
// receiver stored (as Prometheus's head block keeps time), starting at
// round 0. Streams run in step, so every sample stays within the
// retention behind it and far inside the future limit ahead of it.
type Clock struct{ ms atomic.Int64 }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	if ms := c.ms.Load(); ms != 0 {
		return time.UnixMilli(ms)
	}
	return epoch
}

// Saw advances the clock to ms if that is later (receiver.Settings.OnStored).
func (c *Clock) Saw(ms int64) {
	for {
		old := c.ms.Load()
		if ms <= old || c.ms.CompareAndSwap(old, ms) {
			return
		}
	}
}

// Stats is what a server reports for one measured phase.
type Stats struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	Accepted   float64 `json:"accepted"`
	// Thinned counts samples the store thinned: not zero, the phase did
	// not measure rings at their steady state.
	Thinned float64 `json:"thinned"`
}

// NewStore returns the store every load-test server appends to, running
// as in production (Start: the sweeper and the cached clock) on the clock
// now, with room for twice the expected series and otherwise the
// production defaults, registering its metrics in reg. stop ends its
// background loop.
func NewStore(series int, now func() time.Time, reg prometheus.Registerer) (st *store.Store, stop func()) {
	st = store.New(store.Config{MaxSeries: 2 * series}, store.Settings{Now: now, Registerer: reg})
	_ = st.Start(context.Background()) // returns at once; never fails
	return st, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = st.Shutdown(ctx)
	}
}

// Serve runs the protocol until "quit" or the end of in, reading the
// receiver's and the store's counters from g. A non-empty cpuProfile names a file
// that receives a CPU profile from the first "start" on (warm-up
// excluded, the gaps between phases included: they are idle).
func Serve(in io.Reader, out io.Writer, addr string, g prometheus.Gatherer, cpuProfile string) error {
	if _, err := fmt.Fprintf(out, "addr %s\n", addr); err != nil {
		return fmt.Errorf("print address: %w", err)
	}
	profiling := false
	defer func() {
		if profiling {
			pprof.StopCPUProfile()
		}
	}()
	sc := bufio.NewScanner(in)
	var cpu0 time.Duration
	var acc0, thin0 float64
	for sc.Scan() {
		var err error
		switch sc.Text() {
		case "start":
			if cpuProfile != "" && !profiling {
				if err := startProfile(cpuProfile); err != nil {
					return err
				}
				profiling = true
			}
			cpu0, acc0, thin0 = ProcessCPU(), Counter(g, acceptedTotal), Counter(g, thinnedTotal)
			_, err = fmt.Fprintln(out, "started")
		case "stop":
			b, _ := json.Marshal(Stats{
				CPUSeconds: (ProcessCPU() - cpu0).Seconds(),
				Accepted:   Counter(g, acceptedTotal) - acc0,
				Thinned:    Counter(g, thinnedTotal) - thin0,
			})
			_, err = fmt.Fprintln(out, string(b))
		case "quit":
			return nil
		default:
			err = fmt.Errorf("unknown command %q", sc.Text())
		}
		if err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read commands: %w", err)
	}
	return errors.New("commands ended without quit")
}

// startProfile starts a CPU profile into path; StopCPUProfile flushes it
// (the file stays open until the process exits).
func startProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("start CPU profile: %w", err)
	}
	return nil
}

// Counters the protocol reports.
const (
	acceptedTotal = "keda_otel_scaler_receiver_points_accepted_total"
	thinnedTotal  = "keda_otel_scaler_store_samples_thinned_total"
)

// Counter sums every series of the counter name in g (0 when absent).
func Counter(g prometheus.Gatherer, name string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// ProcessCPU returns the user+system CPU time of the process so far.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
