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
	"log/slog"
	"os"

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
	return harness.RunServer("baselineserver", args, receiver.Config{MaxInFlight: 256}, func(r *receiver.Receiver) *grpc.Server {
		srv := grpc.NewServer(grpc.MaxRecvMsgSize(int(r.MaxRecvSize())))
		pmetricotlp.RegisterGRPCServer(srv, &exporter{r: r})
		return srv
	})
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
