package server

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// pushGauge posts one OTLP/HTTP gauge point queue_depth{pod="a"} = v at now.
func pushGauge(t *testing.T, s *Server, v float64) {
	t.Helper()
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("queue_depth")
	dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.Attributes().PutStr("pod", "a")
	dp.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
	dp.SetDoubleValue(v)
	body, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	require.NoError(t, err)
	resp, err := http.Post("http://"+s.Addrs().HTTP+"/v1/metrics", "application/x-protobuf", bytes.NewReader(body))
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// getMetrics asks the scaler over real gRPC with KEDA's generated client.
func getMetrics(t *testing.T, s *Server) (float64, error) {
	t.Helper()
	conn, err := grpc.NewClient(s.Addrs().Scaler, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := externalscaler.NewExternalScalerClient(conn).GetMetrics(ctx, &externalscaler.GetMetricsRequest{
		ScaledObjectRef: &externalscaler.ScaledObjectRef{Name: "so", Namespace: "ns", ScalerMetadata: map[string]string{
			"metricQuery": "sum(queue_depth)", "targetValue": "1",
		}},
		MetricName: "s0-queue-depth",
	})
	if err != nil {
		return 0, err
	}
	require.Len(t, resp.GetMetricValues(), 1)
	return resp.GetMetricValues()[0].GetMetricValueFloat(), nil
}

func startWithState(t *testing.T, dir string) *Server {
	t.Helper()
	cfg := loopbackConfig()
	cfg.Server.StateDir = dir
	cfg.Scaler.Warmup = 30 * time.Second
	s, err := New(cfg, Settings{})
	require.NoError(t, err)
	require.NoError(t, s.Start())
	return s
}

// TestStateDirRestart is keda-contract.md §12 item 30: after a restart
// from a fresh --state-dir, the first GetMetrics returns the pre-restart
// value without Unavailable, and the receiver's next push of the same
// series lands on the restored series.
func TestStateDirRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // created by the first shutdown
	a := startWithState(t, dir)
	_, err := getMetrics(t, a)
	require.Equal(t, codes.Unavailable, status.Code(err), "a first start warms up")
	pushGauge(t, a, 7)
	require.Equal(t, 1, a.Store().NumSeries())
	require.NoError(t, a.Shutdown(context.Background()))
	require.FileExists(t, filepath.Join(dir, snapshotFile))
	tmps, err := filepath.Glob(filepath.Join(dir, snapshotFile+".tmp-*"))
	require.NoError(t, err)
	assert.Empty(t, tmps, "no temporary file left behind")

	b := startWithState(t, dir)
	defer func() { require.NoError(t, b.Shutdown(context.Background())) }()
	v, err := getMetrics(t, b)
	require.NoError(t, err, "no warm-up after a fresh restore")
	assert.InDelta(t, 7, v, 0)
	require.Equal(t, 1, b.Store().NumSeries())

	time.Sleep(2 * time.Millisecond) // a later timestamp than the restored sample
	pushGauge(t, b, 9)
	assert.Equal(t, 1, b.Store().NumSeries(), "the push lands on the restored series")
	v, err = getMetrics(t, b)
	require.NoError(t, err)
	assert.InDelta(t, 9, v, 0)
}

// TestStateDirBadSnapshot: a corrupt snapshot is ignored (the server
// starts empty and warms up); a missing directory is a first start.
func TestStateDirBadSnapshot(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, snapshotFile), []byte("KOSSNAP\ngarbage that is no snapshot"), 0o600))
	s := startWithState(t, dir)
	assert.Zero(t, s.Store().NumSeries())
	_, err := getMetrics(t, s)
	assert.Equal(t, codes.Unavailable, status.Code(err), "warm-up applies after an ignored snapshot")
	require.NoError(t, s.Shutdown(context.Background()))

	// The shutdown replaced the corrupt file with a valid (empty) snapshot.
	f, err := os.Open(filepath.Join(dir, snapshotFile))
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	n, _, err := s.Store().ReadSnapshot(f)
	require.NoError(t, err)
	assert.Zero(t, n)
}

// TestStateDirStaleSnapshotWarmsUp: samples older than the freshness
// window are restored but do not skip warm-up.
func TestStateDirStaleSnapshotWarmsUp(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	cfg := loopbackConfig()
	cfg.Server.StateDir = dir
	cfg.Scaler.Warmup = 30 * time.Second
	past := func() time.Time { return now.Add(-time.Minute) }
	a, err := New(cfg, Settings{Now: past})
	require.NoError(t, err)
	require.NoError(t, a.Start())
	ref, err := a.Store().Create(1, mustLabels("__name__", "queue_depth"))
	require.NoError(t, err)
	require.NoError(t, a.Store().Append(ref, past().UnixMilli(), 3))
	require.NoError(t, a.Shutdown(context.Background()))

	b := startWithState(t, dir)
	defer func() { require.NoError(t, b.Shutdown(context.Background())) }()
	assert.Equal(t, 1, b.Store().NumSeries(), "restored within the retention")
	_, err = getMetrics(t, b)
	assert.Equal(t, codes.Unavailable, status.Code(err), "a minute-old sample does not skip warm-up")
}

func mustLabels(kv ...string) labels.Labels { return labels.FromStrings(kv...) }
