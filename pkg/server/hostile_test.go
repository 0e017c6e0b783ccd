package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

// panicScaler is the real ExternalScaler with a switch per method that
// makes the next call of that method panic.
type panicScaler struct {
	externalscaler.ExternalScalerServer
	armed map[string]*atomic.Bool
}

func newPanicScaler(inner externalscaler.ExternalScalerServer) *panicScaler {
	p := &panicScaler{ExternalScalerServer: inner, armed: map[string]*atomic.Bool{}}
	for _, m := range []string{"GetMetricSpec", "GetMetrics", "IsActive", "StreamIsActive", "StreamMetricSpec"} {
		p.armed[m] = &atomic.Bool{}
	}
	return p
}

func (p *panicScaler) maybePanic(method string) {
	if p.armed[method].CompareAndSwap(true, false) {
		panic("injected panic in " + method)
	}
}

func (p *panicScaler) GetMetricSpec(ctx context.Context, r *externalscaler.ScaledObjectRef) (*externalscaler.GetMetricSpecResponse, error) {
	p.maybePanic("GetMetricSpec")
	return p.ExternalScalerServer.GetMetricSpec(ctx, r)
}

func (p *panicScaler) GetMetrics(ctx context.Context, r *externalscaler.GetMetricsRequest) (*externalscaler.GetMetricsResponse, error) {
	p.maybePanic("GetMetrics")
	return p.ExternalScalerServer.GetMetrics(ctx, r)
}

func (p *panicScaler) IsActive(ctx context.Context, r *externalscaler.ScaledObjectRef) (*externalscaler.IsActiveResponse, error) {
	p.maybePanic("IsActive")
	return p.ExternalScalerServer.IsActive(ctx, r)
}

func (p *panicScaler) StreamIsActive(r *externalscaler.ScaledObjectRef, s grpc.ServerStreamingServer[externalscaler.IsActiveResponse]) error {
	p.maybePanic("StreamIsActive")
	return p.ExternalScalerServer.StreamIsActive(r, s)
}

func (p *panicScaler) StreamMetricSpec(r *externalscaler.ScaledObjectRef, s grpc.ServerStreamingServer[externalscaler.GetMetricSpecResponse]) error {
	p.maybePanic("StreamMetricSpec")
	return p.ExternalScalerServer.StreamMetricSpec(r, s)
}

// panicServiceDesc is a test service on the OTLP listener whose unary and
// streaming methods both panic.
var panicServiceDesc = grpc.ServiceDesc{
	ServiceName: "kos.test.Panic",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(healthpb.HealthCheckRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) { panic("injected panic in Unary") }
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/kos.test.Panic/Unary"}, h)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		Handler:       func(any, grpc.ServerStream) error { panic("injected panic in Stream") },
	}},
}

type hostileEnv struct {
	s     *Server
	reg   *prometheus.Registry
	ps    *panicScaler
	conn  *grpc.ClientConn
	keda  externalscaler.ExternalScalerClient
	http  string
	otlpC *grpc.ClientConn

	lastTS atomic.Int64 // the last sample's timestamp (push)
}

func startHostile(t *testing.T, mod func(*config.Config)) *hostileEnv {
	t.Helper()
	cfg := servertest.Config()
	if mod != nil {
		mod(&cfg)
	}
	e := &hostileEnv{reg: prometheus.NewRegistry()}
	set := Settings{Registry: e.reg}
	set.wrapScaler = func(inner externalscaler.ExternalScalerServer) externalscaler.ExternalScalerServer {
		e.ps = newPanicScaler(inner)
		return e.ps
	}
	set.register = func(otlp *grpc.Server, mux *http.ServeMux) {
		otlp.RegisterService(&panicServiceDesc, struct{}{})
		mux.HandleFunc("/test/panic", func(http.ResponseWriter, *http.Request) { panic("injected panic in HTTP") })
		mux.HandleFunc("/test/panic-after-write", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte("partial"))
			panic("injected panic after the response started")
		})
	}
	s, err := New(cfg, set)
	require.NoError(t, err)
	e.s = servertest.Start(t, s)
	e.http = "http://" + s.Addrs().HTTP
	e.conn, err = grpc.NewClient(s.Addrs().Scaler, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	e.keda = externalscaler.NewExternalScalerClient(e.conn)
	e.otlpC, err = grpc.NewClient(s.Addrs().OTLPGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { // before the server's shutdown
		_ = e.conn.Close()
		_ = e.otlpC.Close()
	})
	return e
}

func (e *hostileEnv) panics(listener, method string) float64 {
	return testutil.ToFloat64(e.s.boundary.panics.WithLabelValues(listener, method))
}

// push stores v now for the series x and tells the scaler, as the
// receiver does for an Export.
func (e *hostileEnv) push(t *testing.T, name string, v float64) {
	t.Helper()
	st := e.s.Store()
	lset := labels.FromStrings(labels.MetricName, name)
	ref, err := st.Create(lset.Hash(), lset)
	require.NoError(t, err)
	// One sample per millisecond, never in the future (evaluation reads
	// up to now): a fast test waits for the next millisecond.
	for time.Now().UnixMilli() <= e.lastTS.Load() {
		time.Sleep(50 * time.Microsecond)
	}
	ts := time.Now().UnixMilli()
	e.lastTS.Store(ts)
	require.NoError(t, st.Append(ref, ts, v))
	e.s.scaler.OnIngest([]uint32{st.MetricID(name)})
}

func soRef(md map[string]string) *externalscaler.ScaledObjectRef {
	return &externalscaler.ScaledObjectRef{Name: "so", Namespace: "ns", ScalerMetadata: md}
}

var sumX = map[string]string{"metricQuery": "sum(x)", "targetValue": "1", "activationThreshold": "5"}

// TestPanicBoundaryEveryKEDARPC is issue #12 class 2's boundary: a panic in
// any ExternalScaler handler fails that call with Internal, is logged and
// counted in keda_otel_scaler_panics_total{listener="scaler",method}, and
// the process and every other call go on. Before the interceptors, a panic
// on the KEDA listener ended the process (grpc-go does not recover).
func TestPanicBoundaryEveryKEDARPC(t *testing.T) {
	e := startHostile(t, nil)
	e.push(t, "x", 9)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	calls := map[string]func() error{
		"GetMetricSpec": func() error { _, err := e.keda.GetMetricSpec(ctx, soRef(sumX)); return err },
		"GetMetrics": func() error {
			_, err := e.keda.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: soRef(sumX)})
			return err
		},
		"IsActive": func() error { _, err := e.keda.IsActive(ctx, soRef(sumX)); return err },
		"StreamIsActive": func() error {
			sctx, scancel := context.WithCancel(ctx)
			defer scancel()
			st, err := e.keda.StreamIsActive(sctx, soRef(sumX))
			if err != nil {
				return err
			}
			_, err = st.Recv() // active: true at once, or the panic's status
			return err
		},
		"StreamMetricSpec": func() error {
			sctx, scancel := context.WithCancel(ctx)
			defer scancel()
			st, err := e.keda.StreamMetricSpec(sctx, soRef(sumX))
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		},
	}
	for method, call := range calls {
		t.Run(method, func(t *testing.T) {
			e.ps.armed[method].Store(true)
			err := call()
			require.Equal(t, codes.Internal, status.Code(err), "%v", err)
			assert.Contains(t, status.Convert(err).Message(), "recovered from a panic")
			assert.InDelta(t, 1, e.panics(listenerScaler, method), 0)
			require.NoError(t, call(), "the same call works right after")
			require.NoError(t, healthCheck(e.s.Addrs().Scaler), "the listener still serves")
		})
	}
}

// TestPanicBoundaryOTLPAndHTTP: the OTLP listener's interceptors recover
// unary and streaming panics (Internal, counted), and the HTTP mux is
// wrapped whole: a panicking route answers 500 with a message (or, when
// the response had started, keeps it), counted by route pattern.
func TestPanicBoundaryOTLPAndHTTP(t *testing.T) {
	e := startHostile(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	err := e.otlpC.Invoke(ctx, "/kos.test.Panic/Unary", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	require.Equal(t, codes.Internal, status.Code(err), "%v", err)
	st, err := e.otlpC.NewStream(ctx, &panicServiceDesc.Streams[0], "/kos.test.Panic/Stream")
	require.NoError(t, err)
	require.NoError(t, st.SendMsg(&healthpb.HealthCheckRequest{}))
	require.NoError(t, st.CloseSend())
	err = st.RecvMsg(&healthpb.HealthCheckResponse{})
	require.Equal(t, codes.Internal, status.Code(err), "%v", err)
	assert.InDelta(t, 1, e.panics(listenerOTLP, "Unary"), 0)
	assert.InDelta(t, 1, e.panics(listenerOTLP, "Stream"), 0)
	require.NoError(t, healthCheck(e.s.Addrs().OTLPGRPC))

	code, body := get(t, e.http+"/test/panic")
	assert.Equal(t, http.StatusInternalServerError, code)
	assert.Contains(t, body, "recovered from a panic")
	assert.InDelta(t, 1, e.panics(listenerHTTP, "/test/panic"), 0)
	code, body = get(t, e.http+"/test/panic-after-write")
	assert.Equal(t, http.StatusAccepted, code, "a started response is not rewritten")
	assert.Equal(t, "partial", body)
	assert.InDelta(t, 1, e.panics(listenerHTTP, "/test/panic-after-write"), 0)
	code, _ = get(t, e.http+"/healthz")
	assert.Equal(t, http.StatusOK, code)
}

// nestedLabelReplace is the hostile trigger of issue #12 class 2 (the same
// shape as pkg/query's NestedLabelReplace): depth nested label_replace
// calls, each making label a's value ten times longer; at depth 7 the
// value would be 100 MB, past the 16 MiB Prometheus's label encoder
// panics on.
func nestedLabelReplace(depth int) string {
	q := `label_replace(vector(1), "a", "xxxxxxxxxx", "", "")`
	for range depth {
		q = fmt.Sprintf(`label_replace(%s, "a", "%s", "a", "(.*)")`, q, strings.Repeat("$1", 10))
	}
	return "sum(" + q + ")"
}

// TestNestedLabelReplaceEndToEnd is issue #12 class 2 end to end on the real
// server: the nested label_replace trigger fails with ResourceExhausted on
// GetMetrics and IsActive, leaves StreamIsActive open (overload is "no
// change"), gets 422 (errorType execution) from /api/v1/query, and the
// process keeps answering. On main before this change the first GetMetrics
// killed the process (the label builder's panic, unrecovered on the KEDA
// port).
func TestNestedLabelReplaceEndToEnd(t *testing.T) {
	for _, budget := range []int64{0, 1 << 20} { // the default, and --query-max-label-bytes=1MiB
		t.Run(fmt.Sprintf("budget=%d", budget), func(t *testing.T) {
			e := startHostile(t, func(c *config.Config) {
				if budget > 0 {
					c.Query.MaxLabelBytes = budget
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			md := map[string]string{"metricQuery": nestedLabelReplace(7), "targetValue": "1"}
			_, err := e.keda.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: soRef(md)})
			require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
			assert.Contains(t, status.Convert(err).Message(), "label")
			_, err = e.keda.IsActive(ctx, soRef(md))
			require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)

			sctx, scancel := context.WithCancel(ctx)
			defer scancel()
			stream, err := e.keda.StreamIsActive(sctx, soRef(md))
			require.NoError(t, err)
			e.push(t, "x", 9) // no effect on this trigger; the stream stays
			_, err = e.keda.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: soRef(md)})
			require.Equal(t, codes.ResourceExhausted, status.Code(err), "the same trigger answers again")

			resp, err := http.Get(e.http + "/api/v1/query?query=" + url.QueryEscape(nestedLabelReplace(7)))
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			assert.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode, "%s", body)
			assert.Contains(t, string(body), `"errorType":"execution"`)
			assert.Contains(t, string(body), "label")

			mv, err := e.keda.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: soRef(sumX)})
			require.NoError(t, err, "other triggers are answered")
			assert.InDelta(t, 9, mv.GetMetricValues()[0].GetMetricValueFloat(), 0)
			assert.Zero(t, testutil.CollectAndCount(e.s.boundary.panics), "the budget stopped it: nothing panicked")
			scancel()
			_, err = stream.Recv()
			assert.Equal(t, codes.Canceled, status.Code(err), "the stream was open until cancelled: %v", err)
		})
	}
}

// TestGRPCReflectionFlag: --grpc-reflection=false removes reflection from
// both gRPC listeners; health stays (interfaces.md keeps it on by default).
func TestGRPCReflectionFlag(t *testing.T) {
	e := startHostile(t, func(c *config.Config) { c.Server.GRPCReflection = false })
	for _, addr := range []string{e.s.Addrs().OTLPGRPC, e.s.Addrs().Scaler} {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err == nil {
			_ = rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
			_, err = rs.Recv()
		}
		assert.Equal(t, codes.Unimplemented, status.Code(err), "%s: %v", addr, err)
		require.NoError(t, healthCheck(addr))
		cancel()
		_ = conn.Close()
	}
}

// evaluations is the scaler's evaluation count (its histogram's count).
func (e *hostileEnv) evaluations(t *testing.T) uint64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "keda_otel_scaler_scaler_evaluation_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// edgeLatencies flips x from inactive to active n times and returns, for
// each edge, the time from the store append to the healthy client's Recv
// of true (zero when true did not come within 10 s: the edge was lost).
// The trigger stays active until the true arrives; the flip back waits
// for its evaluation.
func (e *hostileEnv) edgeLatencies(t *testing.T, got <-chan time.Time, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		e.push(t, "x", 9)
		select {
		case t1 := <-got:
			out = append(out, t1.Sub(t0))
		case <-time.After(10 * time.Second):
			out = append(out, 0)
		}
		ev := e.evaluations(t)
		e.push(t, "x", 0)
		for e.evaluations(t) == ev {
			time.Sleep(100 * time.Microsecond)
		}
	}
	return out
}

// recvTimes reads a healthy client's stream, sending each receive time.
func recvTimes(st externalscaler.ExternalScaler_StreamIsActiveClient) <-chan time.Time {
	got := make(chan time.Time, 1)
	go func() {
		defer close(got)
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
			got <- time.Now()
		}
	}()
	return got
}

// Environment of the stalled-client subprocess (stalledClientMain).
const (
	envStalledAddr  = "KOS_TEST_STALLED_CLIENT_ADDR"
	envStalledCount = "KOS_TEST_STALLED_CLIENT_STREAMS"
	envStalledQuery = "KOS_TEST_STALLED_CLIENT_QUERY"
)

// stalledClientMain runs in a child process of the test binary (TestMain):
// it opens the streams on one connection, never reads them, says "opened"
// and holds them until its stdin closes. A separate process keeps the
// client's own memory and goroutines out of the server's measurements.
func stalledClientMain() int {
	n, err := strconv.Atoi(os.Getenv(envStalledCount))
	if err != nil {
		return 2
	}
	conn, err := grpc.NewClient(os.Getenv(envStalledAddr), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 2
	}
	cl := externalscaler.NewExternalScalerClient(conn)
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	md := map[string]string{"metricQuery": os.Getenv(envStalledQuery), "targetValue": "1", "activationThreshold": "5"}
	for range n {
		if _, err := cl.StreamIsActive(ctx, soRef(md)); err != nil {
			return 2
		}
	}
	fmt.Println("opened")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// openStalled starts a child process that opens n StreamIsActive streams
// for query and never reads them; they end when the test ends.
func (e *hostileEnv) openStalled(t *testing.T, query string, n int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envStalledAddr+"="+e.s.Addrs().Scaler, envStalledCount+"="+strconv.Itoa(n), envStalledQuery+"="+query)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "stalled client")
	require.Equal(t, "opened\n", line)
}

func (e *hostileEnv) openStreams(t *testing.T) int {
	t.Helper()
	return int(testutil.ToFloat64(e.gauge(t, "keda_otel_scaler_scaler_open_streams")))
}

func (e *hostileEnv) gauge(t *testing.T, name string) prometheus.Collector {
	t.Helper()
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: name}, func() float64 { return mf.GetMetric()[0].GetGauge().GetValue() })
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func (e *hostileEnv) waitOpen(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); e.openStreams(t) != n; time.Sleep(time.Millisecond) {
		require.True(t, time.Now().Before(deadline), "%d streams open, want %d", e.openStreams(t), n)
	}
}

// TestStalledStreamsDoNotLoseEdges is issue #12 class 7's latency half on
// the real server: one healthy StreamIsActive stream, then 2,000 streams
// on the same trigger from a client that never reads. Every edge still
// reaches the healthy stream (a count, not a time gate), within a bound
// relative to the single-stream latency measured first in the same run.
// Before the shared feed, each stream evaluated the trigger itself, one
// after another under its lock; the healthy stream's evaluation came so
// late that it missed the inactive state in between and sent nothing for
// that edge (edges lost, as in the "never delivered within 2 s").
// It runs in make gates (without -race).
func TestStalledStreamsDoNotLoseEdges(t *testing.T) {
	if raceEnabled {
		t.Skip("timing under the race detector is not representative; make gates runs this test")
	}
	e := startHostile(t, func(c *config.Config) { c.Scaler.MaxStreams = 4000 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs, err := e.keda.StreamIsActive(ctx, soRef(sumX))
	require.NoError(t, err)
	got := recvTimes(hs)
	e.waitOpen(t, 1)
	const edges = 20
	base := e.edgeLatencies(t, got, edges)
	require.NotContains(t, base, time.Duration(0), "every edge delivered to a lone stream")
	slices.Sort(base)

	const stalled = 2000
	e.openStalled(t, "sum(x)", stalled)
	e.waitOpen(t, stalled+1)
	lat := e.edgeLatencies(t, got, edges)
	bound := 1000 * base[edges/2]
	within := 0
	for _, d := range lat {
		if d > 0 && d <= bound {
			within++
		}
	}
	slices.Sort(lat)
	t.Logf("edge latency alone: p50 %v max %v; with %d stalled streams: p50 %v max %v (bound %v)",
		base[edges/2], base[edges-1], stalled, lat[edges/2], lat[edges-1], bound)
	assert.Equal(t, edges, within, "edges delivered within 1000 x the lone stream's median")
}

// TestStalledStreamsMemoryBounded is issue #12 class 7's memory half: a
// client (another process) opens 2,000 StreamIsActive streams and never
// reads them while the trigger flips 20 times. With --max-streams 100, streams past the cap
// are refused with ResourceExhausted, and the heap and stacks grow by less
// than max-streams x 64 KiB (gRPC's per-stream write quota, the most it
// buffers unsent for one stream; the scaler's own state per stream is a
// mailbox word and a goroutine). The bound comes from configuration, not
// from the number of streams the client opened. Before the cap, all 2,000
// streams were served.
func TestStalledStreamsMemoryBounded(t *testing.T) {
	const maxStreams = 100
	e := startHostile(t, func(c *config.Config) { c.Scaler.MaxStreams = maxStreams })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Warm the paths first (trigger compiled, store series, one stream),
	// so the measurement sees only what the stalled streams add.
	e.push(t, "x", 0)
	_, err := e.keda.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: soRef(sumX)})
	require.NoError(t, err)
	var before, after runtime.MemStats
	runtime.GC() // twice: the first only moves sync.Pool contents to the victim cache
	runtime.GC()
	runtime.ReadMemStats(&before)

	e.openStalled(t, "sum(x)", 2000)
	e.waitOpen(t, maxStreams)
	for range 20 {
		ev := e.evaluations(t)
		e.push(t, "x", 9)
		for e.evaluations(t) == ev {
			time.Sleep(100 * time.Microsecond)
		}
		ev = e.evaluations(t)
		e.push(t, "x", 0)
		for e.evaluations(t) == ev {
			time.Sleep(100 * time.Microsecond)
		}
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapAlloc+after.StackInuse) - int64(before.HeapAlloc+before.StackInuse)
	t.Logf("heap %+d KiB, stacks %+d KiB for %d open stalled streams", (int64(after.HeapAlloc)-int64(before.HeapAlloc))>>10,
		(int64(after.StackInuse)-int64(before.StackInuse))>>10, e.openStreams(t))
	assert.Equal(t, maxStreams, e.openStreams(t), "streams past --max-streams were refused")
	assert.Less(t, growth, int64(maxStreams*64<<10), "growth is bounded by --max-streams")
	// Refused streams end with ResourceExhausted.
	st, err := e.keda.StreamIsActive(ctx, soRef(sumX))
	require.NoError(t, err)
	_, err = st.Recv()
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
}
