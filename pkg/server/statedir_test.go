package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus/testutil"
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

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
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
	cfg := servertest.Config()
	cfg.Server.StateDir = dir
	cfg.Scaler.Warmup = 30 * time.Second
	s, err := New(cfg, Settings{})
	require.NoError(t, err)
	return servertest.Start(t, s) // the tests shut it down themselves too (restarts)
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

// validCheckpoint returns the bytes of a checkpoint holding
// queue_depth{pod="a"} = 5 at now.
func validCheckpoint(t *testing.T) []byte {
	t.Helper()
	st := store.New(store.Config{}, store.Settings{})
	ref, err := st.Create(1, mustLabels("__name__", "queue_depth", "pod", "a"))
	require.NoError(t, err)
	require.NoError(t, st.Append(ref, time.Now().UnixMilli(), 5))
	var buf bytes.Buffer
	require.NoError(t, st.WriteSnapshot(&buf))
	return buf.Bytes()
}

// TestStateDirBadCheckpoint (issue #12 class 8, #13 item 5): a truncated,
// corrupt, future-version or unreadable checkpoint is logged, counted
// under its result and kept aside as store.snapshot.corrupt, byte for
// byte; the server starts empty and warms up, and its shutdown writes a
// new checkpoint beside the one kept aside. (It used to be overwritten by
// the next shutdown's empty snapshot.)
func TestStateDirBadCheckpoint(t *testing.T) {
	good := validCheckpoint(t)
	future := bytes.Clone(good)
	binary.LittleEndian.PutUint32(future[8:], 99)
	flipped := bytes.Clone(good)
	flipped[20] ^= 0x10
	for _, tc := range []struct {
		name, result string
		content      []byte // nil: store.snapshot is a directory
	}{
		{"truncated", restoreTruncated, good[:len(good)/2]},
		{"corrupt", restoreCorrupt, flipped},
		{"garbage", restoreCorrupt, []byte("garbage that is no checkpoint at all")},
		{"future version", restoreVersion, future},
		{"not a file", restoreUnreadable, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, snapshotFile)
			if tc.content == nil {
				require.NoError(t, os.Mkdir(path, 0o750))
			} else {
				require.NoError(t, os.WriteFile(path, tc.content, 0o600))
			}
			s := startWithState(t, dir)
			assert.Zero(t, s.Store().NumSeries())
			assert.InDelta(t, 1, testutil.ToFloat64(s.state.restores.WithLabelValues(tc.result)), 0, "counted as %s", tc.result)
			_, err := getMetrics(t, s)
			assert.Equal(t, codes.Unavailable, status.Code(err), "warm-up applies after a checkpoint that was not restored")
			if tc.content == nil {
				assert.DirExists(t, path+corruptSuffix)
			} else {
				kept, err := os.ReadFile(path + corruptSuffix)
				require.NoError(t, err, "kept aside")
				assert.Equal(t, tc.content, kept, "kept aside unchanged")
			}
			require.NoError(t, s.Shutdown(context.Background()))

			// The shutdown wrote a valid (empty) checkpoint; the bad one stays aside.
			f, err := os.Open(path)
			require.NoError(t, err)
			defer func() { _ = f.Close() }()
			n, _, err := store.New(store.Config{}, store.Settings{}).ReadSnapshot(f)
			require.NoError(t, err)
			assert.Zero(t, n)
			_, err = os.Stat(path + corruptSuffix)
			assert.NoError(t, err, "still kept aside")
		})
	}
}

// TestStateDirMissingCheckpoint: a first start counts as missing.
func TestStateDirMissingCheckpoint(t *testing.T) {
	s := startWithState(t, filepath.Join(t.TempDir(), "new"))
	assert.InDelta(t, 1, testutil.ToFloat64(s.state.restores.WithLabelValues(restoreMissing)), 0)
}

// TestStateDirUnwritable (issue #12 class 8): a --state-dir where no
// checkpoint can be written stops the start with an error naming it,
// before anything listens, instead of failing the shutdown.
func TestStateDirUnwritable(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	cases := []struct{ name, dir string }{
		{"under a file", filepath.Join(file, "state")},
		{"a file", file},
	}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := filepath.Join(base, "ro")
		require.NoError(t, os.Mkdir(ro, 0o500))
		cases = append(cases, struct{ name, dir string }{"read-only", ro})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := servertest.Config()
			cfg.Server.StateDir = tc.dir
			s, err := New(cfg, Settings{})
			require.NoError(t, err)
			err = s.Start()
			require.ErrorContains(t, err, "--state-dir "+tc.dir)
			assert.Nil(t, s.otlpLis, "nothing listens")
			require.NoError(t, s.Shutdown(context.Background()))
		})
	}
}

// TestStateDirRemovesInterruptedCheckpoints (issue #12 class 8): the
// temporary files a kill during a checkpoint leaves are removed at start;
// other files are left alone.
func TestStateDirRemovesInterruptedCheckpoints(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{snapshotFile + ".tmp-123", snapshotFile + ".tmp-9", "notes.txt"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600))
	}
	startWithState(t, dir)
	tmps, err := filepath.Glob(filepath.Join(dir, tmpPattern))
	require.NoError(t, err)
	assert.Empty(t, tmps)
	assert.FileExists(t, filepath.Join(dir, "notes.txt"))
}

// TestStateDirPeriodicCheckpoint (issue #13 item 5): with
// --checkpoint-interval the checkpoint is written while serving, holds
// what was pushed before it started, and is counted and timed; pushes go
// on meanwhile.
func TestStateDirPeriodicCheckpoint(t *testing.T) {
	dir := t.TempDir()
	cfg := servertest.Config()
	cfg.Server.StateDir = dir
	cfg.Server.CheckpointInterval = 100 * time.Millisecond
	s, err := New(cfg, Settings{})
	require.NoError(t, err)
	servertest.Start(t, s)
	pushGauge(t, s, 11)
	ok := s.state.checkpoints.WithLabelValues(checkpointOK)
	first := testutil.ToFloat64(ok)
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(ok) < first+2 && time.Now().Before(deadline) {
		pushGauge(t, s, 11) // same value later: stored, and racing the checkpoint
		time.Sleep(20 * time.Millisecond)
	}
	require.GreaterOrEqual(t, testutil.ToFloat64(ok), first+2, "two checkpoints within 10 s")
	assert.Positive(t, testutil.ToFloat64(s.state.size))
	assert.Positive(t, testutil.ToFloat64(s.state.lastOK))

	f, err := os.Open(filepath.Join(dir, snapshotFile))
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	dst := store.New(store.Config{}, store.Settings{})
	n, _, err := dst.ReadSnapshot(f)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "the pushed series is in the checkpoint written while serving")
}

// TestStateDirStaleSnapshotWarmsUp: samples older than the freshness
// window are restored but do not skip warm-up.
func TestStateDirStaleSnapshotWarmsUp(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	cfg := servertest.Config()
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
	assert.Equal(t, 1, b.Store().NumSeries(), "restored within the retention")
	_, err = getMetrics(t, b)
	assert.Equal(t, codes.Unavailable, status.Code(err), "a minute-old sample does not skip warm-up")
}

func mustLabels(kv ...string) labels.Labels { return labels.FromStrings(kv...) }

// TestStateDirShutdownDeadlineKeepsCheckpoint: a shutdown out of grace
// abandons its checkpoint without reporting it as a failure; the last periodic
// checkpoint stays intact and restorable, and no temporary file remains.
func TestStateDirShutdownDeadlineKeepsCheckpoint(t *testing.T) {
	dir := t.TempDir()
	cfg := servertest.Config()
	cfg.Server.StateDir = dir
	cfg.Server.CheckpointInterval = 100 * time.Millisecond
	s, err := New(cfg, Settings{})
	require.NoError(t, err)
	require.NoError(t, s.Start())
	pushGauge(t, s, 3)
	ok := s.state.checkpoints.WithLabelValues(checkpointOK)
	first := testutil.ToFloat64(ok)
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(ok) < first+2 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	require.GreaterOrEqual(t, testutil.ToFloat64(ok), first+2)

	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if err := s.Shutdown(ctx); err != nil { // the store's sweeper may report the deadline
		assert.NotContains(t, err.Error(), "checkpoint", "an abandoned checkpoint is not a failure")
	}
	f, err := os.Open(filepath.Join(dir, snapshotFile))
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	n, _, err := store.New(store.Config{}, store.Settings{}).ReadSnapshot(f)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "the periodic checkpoint stays")
	tmps, err := filepath.Glob(filepath.Join(dir, tmpPattern))
	require.NoError(t, err)
	assert.Empty(t, tmps)
}
