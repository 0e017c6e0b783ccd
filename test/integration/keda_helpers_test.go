package integration

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

// kedaEnv is a real server on 127.0.0.1:0 with KEDA's generated client,
// a raw OTLP/gRPC client and a fake clock shared by the whole server.
type kedaEnv struct {
	srv    *server.Server
	client externalscaler.ExternalScalerClient
	conn   *grpc.ClientConn
	otlp   *grpc.ClientConn
	clock  atomic.Int64 // unix ms
	fake   bool
	lastMs atomic.Int64 // real clock: the last exported ms, kept unique
	logs   *servertest.Logs
}

// base is the fake clock's start: a round time so tests can place samples.
var base = time.Unix(1_800_000_000, 0)

// startKEDA starts a server with warm-up and hold-off off unless mod sets
// them. The clock is fake (fakeClock) unless realClock.
func startKEDA(t testing.TB, fakeClock bool, mod func(*config.Config)) *kedaEnv {
	t.Helper()
	cfg := servertest.Config()
	if mod != nil {
		mod(&cfg)
	}
	e := &kedaEnv{logs: &servertest.Logs{}}
	e.clock.Store(base.UnixMilli())
	e.fake = fakeClock
	set := server.Settings{Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	if fakeClock {
		set.Now = func() time.Time { return time.UnixMilli(e.clock.Load()) }
	}
	s, err := server.New(cfg, set)
	require.NoError(t, err)
	e.srv = servertest.Start(t, s)
	e.conn, err = grpc.NewClient(s.Addrs().Scaler, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.conn.Close() })
	e.client = externalscaler.NewExternalScalerClient(e.conn)
	e.otlp, err = grpc.NewClient(s.Addrs().OTLPGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.otlp.Close() })
	return e
}

// at sets the fake clock to base + d.
func (e *kedaEnv) at(d time.Duration) { e.clock.Store(base.Add(d).UnixMilli()) }

func (e *kedaEnv) now() time.Time {
	if !e.fake {
		return time.Now()
	}
	return time.UnixMilli(e.clock.Load())
}

// point is one OTLP data point; kv are point attributes.
type point struct {
	name    string
	v       float64
	t       time.Time // zero: the clock's now
	counter bool
	kv      []string
}

// export sends the points in one OTLP/gRPC Export and requires that all
// were accepted.
func (e *kedaEnv) export(t testing.TB, pts ...point) {
	t.Helper()
	if !e.fake {
		// One timestamp per Export, so repeated values of a series are
		// never duplicate samples.
		for time.Now().UnixMilli() <= e.lastMs.Load() {
			time.Sleep(100 * time.Microsecond)
		}
	}
	now := e.now()
	e.lastMs.Store(now.UnixMilli())
	body := encodeExport(now, pts...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out rawMessage
	in := rawMessage(body)
	require.NoError(t, e.otlp.Invoke(ctx, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", &in, &out, grpc.ForceCodecV2(rawCodec{})))
	resp := pmetricotlp.NewExportResponse()
	require.NoError(t, resp.UnmarshalProto(out))
	require.Zero(t, resp.PartialSuccess().RejectedDataPoints(), resp.PartialSuccess().ErrorMessage())
}

func encodeExport(now time.Time, pts ...point) []byte {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "otel-collector")
	sm := rm.ScopeMetrics().AppendEmpty()
	for _, p := range pts {
		m := sm.Metrics().AppendEmpty()
		m.SetName(p.name)
		var dp pmetric.NumberDataPoint
		if p.counter {
			sum := m.SetEmptySum()
			sum.SetIsMonotonic(true)
			sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
			dp = sum.DataPoints().AppendEmpty()
			dp.SetStartTimestamp(pcommon.Timestamp(base.Add(-time.Hour).UnixNano()))
		} else {
			dp = m.SetEmptyGauge().DataPoints().AppendEmpty()
		}
		ts := p.t
		if ts.IsZero() {
			ts = now
		}
		dp.SetTimestamp(pcommon.Timestamp(ts.UnixNano()))
		dp.SetDoubleValue(p.v)
		for i := 0; i+1 < len(p.kv); i += 2 {
			dp.Attributes().PutStr(p.kv[i], p.kv[i+1])
		}
	}
	body, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	if err != nil {
		panic(err)
	}
	return body
}

func soRef(md map[string]string) *externalscaler.ScaledObjectRef {
	return &externalscaler.ScaledObjectRef{Name: "so", Namespace: "ns", ScalerMetadata: md}
}

// md builds trigger metadata with targetValue 1 unless given.
func md(query string, kv ...string) map[string]string {
	m := map[string]string{"metricQuery": query, "targetValue": "1", "scalerAddress": "keda-otel-scaler.keda.svc:4318"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func (e *kedaEnv) ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// value is GetMetrics' one value (float and int) for m.
func (e *kedaEnv) value(t testing.TB, m map[string]string) (float64, int64, error) {
	t.Helper()
	resp, err := e.client.GetMetrics(e.ctx(t), &externalscaler.GetMetricsRequest{ScaledObjectRef: soRef(m), MetricName: "s0-ns-so"})
	if err != nil {
		return 0, 0, err
	}
	require.Len(t, resp.GetMetricValues(), 1, "exactly one MetricValue")
	mv := resp.GetMetricValues()[0]
	return mv.GetMetricValueFloat(), mv.GetMetricValue(), nil
}

func (e *kedaEnv) active(t testing.TB, m map[string]string) (bool, error) {
	t.Helper()
	resp, err := e.client.IsActive(e.ctx(t), soRef(m))
	return resp.GetResult(), err
}

// promValue evaluates q through the HTTP query API at the fake clock's now
// with lookback lb (0: the API default) and returns the single value, or
// ok=false for an empty result.
func (e *kedaEnv) promValue(t testing.TB, q string, lb time.Duration) (v float64, ok bool) {
	t.Helper()
	return servertest.Query(t, e.srv.Addrs().HTTP, q, time.UnixMilli(e.clock.Load()), lb)
}

// selfMetric reads one unlabelled sample (or the _count of a histogram)
// from /metrics.
func (e *kedaEnv) selfMetric(t testing.TB, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + e.srv.Addrs().HTTP + "/metrics")
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err)
			return f
		}
	}
	return 0
}

// waitFor polls cond every millisecond for at most 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// recvLoop reads a StreamIsActive stream into a channel; the channel is
// closed with the final error sent on end.
type recvLoop struct {
	msgs chan bool
	end  chan error
}

func startRecv(s externalscaler.ExternalScaler_StreamIsActiveClient) *recvLoop {
	r := &recvLoop{msgs: make(chan bool, 1024), end: make(chan error, 1)}
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				r.end <- err
				close(r.msgs)
				return
			}
			r.msgs <- m.GetResult()
		}
	}()
	return r
}

// next returns the next message within d, or ok=false.
func (r *recvLoop) next(d time.Duration) (v, ok bool) {
	select {
	case v, ok := <-r.msgs:
		return v, ok
	case <-time.After(d):
		return false, false
	}
}
