package scaler_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/scaler"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// BenchmarkGetMetrics is performance.md T8: the GetMetrics handler called
// directly (no transport) for a trigger summing 1k fresh series.
//
//	go test -run '^$' -bench 'BenchmarkGetMetrics' -benchmem -cpu 2 -benchtime 200ms ./pkg/scaler/
func BenchmarkGetMetrics(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("series=%d", n), func(b *testing.B) {
			now := time.Now()
			st := store.New(store.Config{}, store.Settings{Now: func() time.Time { return now }})
			for i := range n {
				lset := labels.FromStrings(labels.MetricName, "x", "pod", strconv.Itoa(i))
				ref, err := st.Create(lset.Hash(), lset)
				if err != nil {
					b.Fatal(err)
				}
				if err := st.Append(ref, now.UnixMilli()-1000, 1); err != nil {
					b.Fatal(err)
				}
			}
			s := scaler.New(query.NewEngine(st), st, scaler.Config{}, scaler.Settings{Now: func() time.Time { return now }})
			defer s.Drain()
			req := &externalscaler.GetMetricsRequest{MetricName: "s0-ns-so", ScaledObjectRef: &externalscaler.ScaledObjectRef{
				Name: "so", Namespace: "ns", ScalerMetadata: map[string]string{"metricQuery": "sum(x)", "targetValue": "4", "scalerAddress": "keda-otel-scaler.keda.svc:4318"},
			}}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := s.GetMetrics(ctx, req)
				if err != nil || resp.GetMetricValues()[0].GetMetricValueFloat() != float64(n) {
					b.Fatalf("GetMetrics = %v, %v; want %d", resp, err, n)
				}
			}
		})
	}
}

// BenchmarkGetMetricSpec measures the hot, cached GetMetricSpec path.
//
//	go test -run '^$' -bench 'BenchmarkGetMetricSpec' -benchmem -cpu 2 -benchtime 200ms ./pkg/scaler/
func BenchmarkGetMetricSpec(b *testing.B) {
	st := store.New(store.Config{}, store.Settings{})
	s := scaler.New(query.NewEngine(st), st, scaler.Config{}, scaler.Settings{})
	defer s.Drain()
	ref := &externalscaler.ScaledObjectRef{Name: "so", Namespace: "ns", ScalerMetadata: map[string]string{
		"metricQuery": `sum(vllm:num_requests_running{namespace="ns", deployment="d"})`, "targetValue": "4", "scalerAddress": "keda-otel-scaler.keda.svc:4318",
	}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetMetricSpec(ctx, ref); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPushLatency is performance.md T7a, server side: from the entry
// of the OTLP/HTTP Export handler (receiver.ServeHTTP) to the return of
// StreamIsActive's Send, with N open streams over one gRPC connection
// (bufconn; KEDA pools one connection) and one affected ScaledObject per
// Export. Each iteration flips one ScaledObject from inactive to active,
// then (unmeasured) back to inactive, waiting for that evaluation. p50/p99/max are reported.
//
//	go test -run '^$' -bench 'BenchmarkPushLatency' -benchmem -cpu 2 -benchtime 10000x ./pkg/scaler/
func BenchmarkPushLatency(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) { benchPush(b, n) })
	}
}

func benchPush(b *testing.B, n int) {
	// One clock, advanced 1 ms per Export, so every sample is new and
	// visible at evaluation time.
	var clock atomic.Int64
	clock.Store(time.Now().UnixMilli())
	now := func() time.Time { return time.UnixMilli(clock.Load()) }
	pushed := make(chan time.Time, 1)
	st := store.New(store.Config{}, store.Settings{Now: now})
	reg := prometheus.NewRegistry()
	s := scaler.New(query.NewEngine(st), st, scaler.Config{}, scaler.Settings{Now: now, Registerer: reg, OnPush: func() { pushed <- time.Now() }})
	rcv := receiver.New(st, receiver.Config{}, receiver.Settings{OnIngest: s.OnIngest})

	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	s.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	defer s.Drain()
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	client := externalscaler.NewExternalScalerClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range n {
		stream, err := client.StreamIsActive(ctx, &externalscaler.ScaledObjectRef{
			Name: fmt.Sprintf("so-%d", i), Namespace: "ns",
			ScalerMetadata: map[string]string{"metricQuery": fmt.Sprintf("sum(x_%d)", i), "targetValue": "1"},
		})
		if err != nil {
			b.Fatal(err)
		}
		go func() { // a KEDA client draining its stream
			for {
				if _, err := stream.Recv(); err != nil {
					return
				}
			}
		}()
	}
	// Every stream is open once the scaler reports them.
	waitStreams(b, reg, n)

	export := func(i int, v float64) {
		body := exportBody(fmt.Sprintf("x_%d", i), clock.Add(1), v)
		req := httptest.NewRequest(http.MethodPost, "/v1/metrics", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		rec := httptest.NewRecorder()
		t0 := time.Now()
		rcv.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("export: %d %s", rec.Code, rec.Body)
		}
		if v > 0 {
			select {
			case t1 := <-pushed:
				lat = append(lat, t1.Sub(t0))
			case <-time.After(10 * time.Second):
				b.Fatalf("no push for so-%d", i)
			}
		}
	}
	lat = lat[:0]
	k := 0
	b.ReportAllocs()
	for b.Loop() {
		i := k % n
		export(i, 2) // inactive -> active: measured
		e0 := evaluations(reg)
		export(i, 0) // back to inactive for its next turn; wait for that evaluation
		for evaluations(reg) == e0 {
			time.Sleep(10 * time.Microsecond)
		}
		k++
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Nanoseconds()) }
	b.ReportMetric(q(0.5), "p50-ns")
	b.ReportMetric(q(0.99), "p99-ns")
	b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), "max-ns")
}

var lat []time.Duration

// waitStreams waits until the scaler reports n open streams.
func waitStreams(b *testing.B, reg *prometheus.Registry, n int) {
	b.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if openStreams(reg) == n {
			return
		}
	}
	b.Fatalf("only %d of %d streams opened", openStreams(reg), n)
}

func evaluations(reg *prometheus.Registry) uint64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "keda_otel_scaler_scaler_evaluation_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func openStreams(reg *prometheus.Registry) int {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "keda_otel_scaler_scaler_open_streams" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	return -1
}

// exportBody encodes one OTLP gauge point as an ExportMetricsServiceRequest.
func exportBody(name string, tMs int64, v float64) []byte {
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName(name)
	dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetTimestamp(pcommon.Timestamp(tMs * 1e6))
	dp.SetDoubleValue(v)
	body, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	if err != nil {
		panic(err)
	}
	return body
}
