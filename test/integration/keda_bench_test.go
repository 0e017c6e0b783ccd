package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// BenchmarkKEDAPushLatencyClient is performance.md T7b: a real server on
// loopback, N open StreamIsActive streams from KEDA's generated client on
// one pooled connection, and an OTLP/gRPC Export per iteration that flips
// one ScaledObject from inactive to active. Latency is from just before the
// Export call to the client's Recv of true. Each iteration then flips the
// same ScaledObject back (unmeasured) and waits for that evaluation.
//
//	go test -run '^$' -bench 'BenchmarkKEDAPushLatencyClient' -benchmem -cpu 2 -benchtime 2000x ./test/integration/
func BenchmarkKEDAPushLatencyClient(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) { benchClientPush(b, n) })
	}
}

func benchClientPush(b *testing.B, n int) {
	e := startKEDA(b, true, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recvs := make([]*recvLoop, n)
	for i := range n {
		s, err := e.client.StreamIsActive(ctx, soRef(md(fmt.Sprintf("sum(x_%d)", i))))
		if err != nil {
			b.Fatal(err)
		}
		recvs[i] = startRecv(s)
	}
	e.waitStreams(b, n)

	send := func(i int, v float64) time.Time {
		e.clock.Add(1)
		in := rawMessage(encodeExport(e.now(), point{name: fmt.Sprintf("x_%d", i), v: v}))
		var out rawMessage
		t0 := time.Now()
		if err := e.otlp.Invoke(ctx, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", &in, &out, grpc.ForceCodecV2(rawCodec{})); err != nil {
			b.Fatal(err)
		}
		return t0
	}
	var lat []time.Duration
	k := 0
	b.ReportAllocs()
	for b.Loop() {
		i := k % n
		t0 := send(i, 1)
		if v, ok := recvs[i].next(10 * time.Second); !ok || !v {
			b.Fatalf("no true for so %d", i)
		}
		lat = append(lat, time.Since(t0))
		evals := e.selfMetric(b, "keda_otel_scaler_scaler_evaluation_seconds_count")
		send(i, 0)
		// Exact: the true was received, so the only evaluation left is
		// the one for this Export.
		e.evaluationCountAbove(b, evals)
		k++
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Nanoseconds()) }
	b.ReportMetric(q(0.5), "p50-ns")
	b.ReportMetric(q(0.99), "p99-ns")
	b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), "max-ns")
}
