package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

// binaryProc is the real binary running on loopback ports.
type binaryProc struct {
	cmd      *exec.Cmd
	httpAddr string
}

// startBinary runs bin with args on ports 0 and returns once it logs its
// bound addresses. The process is killed when the test ends.
func startBinary(t *testing.T, bin string, args ...string) *binaryProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bin, append([]string{"--otlp-grpc-addr", "127.0.0.1:0", "--scaler-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := bufio.NewScanner(stderr)
	var m []string
	var log strings.Builder
	for lines.Scan() {
		log.WriteString(lines.Text() + "\n")
		if m = servingLine.FindStringSubmatch(lines.Text()); m != nil {
			break
		}
	}
	require.NotNil(t, m, "server must log its bound addresses; it logged:\n%s", log.String())
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	return &binaryProc{cmd: cmd, httpAddr: m[3]}
}

// metric reads one sample of /metrics by its exact series text.
func (p *binaryProc) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.httpAddr + "/metrics")
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err)
			return f
		}
	}
	require.NoError(t, sc.Err())
	return 0
}

// instant evaluates q at ts (ms) through /api/v1/query and returns the one
// value, or ok=false for an empty result.
func (p *binaryProc) instant(t *testing.T, q string, ts int64) (float64, bool) {
	t.Helper()
	return servertest.Query(t, p.httpAddr, q, time.UnixMilli(ts), 0)
}

// export posts the points over OTLP/HTTP and requires that every one was
// accepted: after it returns, they are acknowledged.
func (p *binaryProc) export(t *testing.T, pts ...point) {
	t.Helper()
	resp, err := http.Post("http://"+p.httpAddr+"/v1/metrics", "application/x-protobuf", bytes.NewReader(encodeExport(time.Now(), pts...)))
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	er := pmetricotlp.NewExportResponse()
	require.NoError(t, er.UnmarshalProto(body))
	require.Zero(t, er.PartialSuccess().RejectedDataPoints(), er.PartialSuccess().ErrorMessage())
}

// TestBinaryCheckpointSurvivesSIGKILL (issue #13 item 5) on the real
// binary: samples are pushed and acknowledged, the test waits until a
// checkpoint that started after the last acknowledgement has completed
// (two more successful checkpoints), SIGKILLs the process, starts it again
// on the same --state-dir, and every acknowledged sample is queryable at
// its timestamp with its exact value. Samples pushed after that point may
// or may not survive (at most one --checkpoint-interval is lost).
func TestBinaryCheckpointSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	args := []string{"--state-dir", dir, "--checkpoint-interval", "200ms", "--warmup", "0"}
	a := startBinary(t, bin, args...)

	type sample struct {
		series string
		t      int64
		v      float64
	}
	var acked []sample
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	for k := range 12 {
		ts := t0.Add(time.Duration(k) * 5 * time.Second)
		var pts []point
		for i := range 3 {
			// Values that only round-trip exactly as full float64s.
			v := float64(k*10+i) + 1.0/3 + float64(i)*1e-9
			s := strconv.Itoa(i)
			pts = append(pts, point{name: "ckpt_gauge", v: v, t: ts, kv: []string{"series", s}})
			acked = append(acked, sample{s, ts.UnixMilli(), v})
		}
		a.export(t, pts...)
	}
	const okSeries = `keda_otel_scaler_state_checkpoints_total{result="ok"}`
	n0 := a.metric(t, okSeries)
	deadline := time.Now().Add(30 * time.Second)
	for a.metric(t, okSeries) < n0+2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	require.GreaterOrEqual(t, a.metric(t, okSeries), n0+2, "two checkpoints after the last acknowledged push")
	// A push after the checkpoint: it may be lost, but must not break the restart.
	a.export(t, point{name: "ckpt_gauge", v: -1, t: time.Now(), kv: []string{"series", "late"}})
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGKILL))
	err := a.cmd.Wait()
	require.Error(t, err, "killed")

	b := startBinary(t, bin, args...)
	assert.InDelta(t, 1, b.metric(t, `keda_otel_scaler_state_restores_total{result="restored"}`), 0)
	for _, s := range acked {
		v, ok := b.instant(t, fmt.Sprintf(`ckpt_gauge{series=%q}`, s.series), s.t)
		require.True(t, ok, "series %s at %d restored", s.series, s.t)
		require.Equal(t, math.Float64bits(s.v), math.Float64bits(v), "series %s at %d: exact value (%v, want %v)", s.series, s.t, v, s.v)
	}
	require.NoError(t, b.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, b.cmd.Wait(), "exit 0 after SIGTERM")
}
