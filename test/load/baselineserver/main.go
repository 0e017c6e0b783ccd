// Command baselineserver is the same-run baseline of the load test
// (performance.md T2: "a pdata-codec server, same harness"): an OTLP/gRPC
// metrics server built the way the OpenTelemetry Collector's receiver is,
// with pdata's own gRPC service and codec (pmetricotlp), whose Export
// appends the decoded metrics to the same store through the same mapping
// (receiver.IngestMetrics). Only the decoding differs from the server under
// test. It listens on 127.0.0.1 only and is driven by test/load over the
// harness protocol on stdin/stdout.
//
//	go build -o bin/load-baseline ./test/load/baselineserver   # make load builds it
package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/test/load/harness"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(os.Args[1:]); err != nil {
		logger.Error("Baseline server failed", "err", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("baselineserver", flag.ContinueOnError)
	series := fs.Int("series", 100_000, "expected series (`count`)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measured phases to `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	st, stopStore := harness.NewStore(*series)
	defer stopStore()
	r := receiver.New(st, receiver.Config{}, receiver.Settings{Registerer: reg})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(int(r.MaxRecvSize())))
	pmetricotlp.RegisterGRPCServer(srv, &exporter{r: r})
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	defer func() {
		srv.Stop()
		wg.Wait()
	}()
	return harness.Serve(os.Stdin, os.Stdout, lis.Addr().String(), func() float64 { return harness.Accepted(reg) }, *cpuProfile)
}

// exporter is the pdata MetricsService: the request arrives decoded by
// pdata's codec.
type exporter struct {
	pmetricotlp.UnimplementedGRPCServer
	r *receiver.Receiver
}

func (e *exporter) Export(_ context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	resp := pmetricotlp.NewExportResponse()
	if rejected, msg := e.r.IngestMetrics(req.Metrics()); rejected != 0 || msg != "" {
		ps := resp.PartialSuccess()
		ps.SetRejectedDataPoints(rejected)
		ps.SetErrorMessage(msg)
	}
	return resp, nil
}
