// Package harness is what the load test's servers share (performance.md
// T2): the store they append to and the line protocol through which the
// orchestrator measures them, so the wire-walking server and the pdata
// baseline server differ only in how they decode.
//
// Protocol, one command per line on the server's stdin: the server first
// prints "addr <host:port>"; "start" records the process's CPU time and
// accepted points and answers "started"; "stop" answers one JSON Stats
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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// RunServer is the main of a load-test server: it parses the server flags
// (args), appends to NewStore through a receiver, serves OTLP/gRPC on
// 127.0.0.1 with the server newServer builds (the only part in which the
// servers differ) and runs the protocol on stdin/stdout until "quit".
func RunServer(name string, args []string, cfg receiver.Config, newServer func(*receiver.Receiver) *grpc.Server) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	series := fs.Int("series", 100_000, "expected series (`count`)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measured phases to `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	st, stopStore := NewStore(*series)
	defer stopStore()
	r := receiver.New(st, cfg, receiver.Settings{Registerer: reg})
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
	return Serve(os.Stdin, os.Stdout, lis.Addr().String(), func() float64 { return Accepted(reg) }, *cpuProfile)
}

// WindowSamples is every load-test series' window (MaxSamplesPerSeries).
// The run warms each server with that many samples per series, so the
// measured phases see full rings, as in a scaler that has been running
// for a while, rather than the one-time growth of new ones.
const WindowSamples = 64

// Stats is what a server reports for one measured phase.
type Stats struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	Accepted   float64 `json:"accepted"`
}

// NewStore returns the store every load-test server appends to, running
// as in production (Start: the sweeper and the cached clock), with room
// for twice the expected series and a WindowSamples window. stop ends its
// background loop.
func NewStore(series int) (st *store.Store, stop func()) {
	st = store.New(store.Config{MaxSeries: 2 * series, MaxSamplesPerSeries: WindowSamples}, store.Settings{})
	_ = st.Start(context.Background()) // returns at once; never fails
	return st, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = st.Shutdown(ctx)
	}
}

// Serve runs the protocol until "quit" or the end of in. accepted returns
// the server's accepted points so far. A non-empty cpuProfile names a file
// that receives a CPU profile from the first "start" on (warm-up
// excluded, the gaps between phases included: they are idle).
func Serve(in io.Reader, out io.Writer, addr string, accepted func() float64, cpuProfile string) error {
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
	var acc0 float64
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
			cpu0, acc0 = ProcessCPU(), accepted()
			_, err = fmt.Fprintln(out, "started")
		case "stop":
			b, _ := json.Marshal(Stats{CPUSeconds: (ProcessCPU() - cpu0).Seconds(), Accepted: accepted() - acc0})
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

// Accepted reads keda_otel_scaler_receiver_points_accepted_total from g.
func Accepted(g prometheus.Gatherer) float64 {
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

// ProcessCPU returns the user+system CPU time of the process so far.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
