package kedaclient

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/kedacore/keda/v2/pkg/scalers"
	"github.com/kedacore/keda/v2/pkg/scalers/scalersconfig"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	v2 "k8s.io/api/autoscaling/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

// Every wait in this package is bounded by one of these.
const (
	callTimeout = 10 * time.Second // one KEDA call or one OTLP POST
	pushTimeout = 10 * time.Second // a pushed true must arrive within this
	quietWindow = 500 * time.Millisecond
)

// Names of the ScaledObject every trigger here belongs to; KEDA asks for
// the metric s<index>-<namespace>-<name>.
const (
	soNamespace = "shop"
	soName      = "checkout"
)

func init() {
	// KEDA's scalers log through controller-runtime's global logger, which
	// otherwise complains that it was never set.
	logf.SetLogger(logr.Discard())
}

// env is one running server.
type env struct {
	srv    *server.Server
	addrs  server.Addrs
	http   *http.Client
	lastMs atomic.Int64 // newest timestamp pushed (unix ms), so every push is newer
}

// startServer runs a real server on 127.0.0.1 ports with warm-up and push
// hold-off off, so the first call and every edge are answered at once.
func startServer(t *testing.T) *env {
	t.Helper()
	s, err := server.New(servertest.Config(), server.Settings{})
	require.NoError(t, err)
	servertest.Start(t, s)
	e := &env{srv: s, addrs: s.Addrs(), http: &http.Client{Timeout: callTimeout}}
	t.Cleanup(e.http.CloseIdleConnections)
	return e
}

// push sends one OTLP/HTTP Export with one gauge point per value, each a
// series of metric name told apart by a pod attribute, and requires that
// every point was accepted.
func (e *env) push(t *testing.T, name string, vals ...float64) {
	t.Helper()
	// The store keeps milliseconds and evaluates at the real now: wait for
	// a millisecond newer than the last push (bounded: at most ~1 ms), so
	// every push is a new sample and none lies in the future.
	for time.Now().UnixMilli() <= e.lastMs.Load() {
		time.Sleep(100 * time.Microsecond)
	}
	ms := time.Now().UnixMilli()
	e.lastMs.Store(ms)
	ts := ms * int64(time.Millisecond)
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "kedaclient-test")
	m := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName(name)
	g := m.SetEmptyGauge()
	for i, v := range vals {
		dp := g.DataPoints().AppendEmpty()
		dp.SetTimestamp(pcommon.Timestamp(ts))
		dp.SetDoubleValue(v)
		dp.Attributes().PutStr("pod", "p"+strconv.Itoa(i))
	}
	rejected, msg := servertest.PostOTLP(t, e.addrs.HTTP, md)
	require.Zero(t, rejected, msg)
}

// selfMetric reads one unlabelled sample of our /metrics; -1 when absent.
func (e *env) selfMetric(t *testing.T, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.addrs.HTTP+"/metrics", nil)
	require.NoError(t, err)
	resp, err := e.http.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err)
			return f
		}
	}
	require.NoError(t, sc.Err())
	return -1
}

// waitFor polls cond until it holds, failing after callTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(callTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// trigger is the metadata of one trigger pointing at e's scaler address;
// kv are further key/value pairs.
func (e *env) trigger(query string, kv ...string) map[string]string {
	md := map[string]string{"scalerAddress": e.addrs.Scaler, "metricQuery": query}
	for i := 0; i+1 < len(kv); i += 2 {
		md[kv[i]] = kv[i+1]
	}
	return md
}

// scalerConfig is what KEDA's scale handler builds for trigger index idx of
// the ScaledObject shop/checkout.
func scalerConfig(md map[string]string, idx int, mt v2.MetricTargetType, triggerType string) *scalersconfig.ScalerConfig {
	return &scalersconfig.ScalerConfig{
		ScalableObjectName:      soName,
		ScalableObjectNamespace: soNamespace,
		ScalableObjectType:      "ScaledObject",
		TriggerType:             triggerType,
		TriggerIndex:            idx,
		TriggerMetadata:         md,
		ResolvedEnv:             map[string]string{},
		AuthParams:              map[string]string{},
		MetricType:              mt,
		GlobalHTTPTimeout:       callTimeout,
	}
}

// newExternal builds KEDA's `external` scaler and closes it (releasing its
// share of KEDA's pooled connection) when the test ends.
func newExternal(t *testing.T, cfg *scalersconfig.ScalerConfig) scalers.Scaler {
	t.Helper()
	s, err := scalers.NewExternalScaler(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close(context.Background())) })
	return s
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// recvActive waits up to d for a value on ch: got is false on timeout,
// closed is true when Run closed ch.
func recvActive(ch <-chan bool, d time.Duration) (v, got, closed bool) {
	tmr := time.NewTimer(d)
	defer tmr.Stop()
	select {
	case v, ok := <-ch:
		return v, ok, !ok
	case <-tmr.C:
		return false, false, false
	}
}
