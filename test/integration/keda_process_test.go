package integration

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// TestKEDABinarySIGTERMEndsStreamsWithOK is checklist item 36 (and the
// --warmup flag of item 29) on the real binary: during warm-up GetMetrics
// is Unavailable and /readyz is 200; on SIGTERM every open stream ends
// with status OK (KEDA sees io.EOF and resets its backoff) and the process
// exits 0.
func TestKEDABinarySIGTERMEndsStreamsWithOK(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--otlp-grpc-addr", "127.0.0.1:0", "--scaler-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "KOS_WARMUP=1h") // env twin of --warmup
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := bufio.NewScanner(stderr)
	var m []string
	for lines.Scan() {
		if m = servingLine.FindStringSubmatch(lines.Text()); m != nil {
			break
		}
	}
	require.NotNil(t, m, "server must log its bound addresses")
	go func() { _, _ = io.Copy(io.Discard, stderr) }()

	conn, err := grpc.NewClient(m[2], grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	client := externalscaler.NewExternalScalerClient(conn)
	ref := soRef(md("sum(x)"))
	_, err = client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref})
	require.Equal(t, codes.Unavailable, status.Code(err), "warming up")
	assert.Contains(t, status.Convert(err).Message(), "warming up: receiving metrics for")
	assert.Contains(t, status.Convert(err).Message(), "of 1h0m0s")
	resp, err := http.Get("http://" + m[3] + "/readyz")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "/readyz does not wait for warm-up")

	var streams []*recvLoop
	for range 3 {
		s, err := client.StreamIsActive(ctx, ref)
		require.NoError(t, err)
		streams = append(streams, startRecv(s))
	}
	spec, err := client.StreamMetricSpec(ctx, ref)
	require.NoError(t, err)
	_, err = spec.Recv()
	require.NoError(t, err)
	// The server has seen every stream once a unary call made after them on
	// the same HTTP/2 connection returns; a handler that has not subscribed
	// yet sees the drain and ends with OK as well.
	_, err = client.GetMetricSpec(ctx, ref)
	require.NoError(t, err)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	for _, r := range streams {
		select {
		case err := <-r.end:
			require.ErrorIs(t, err, io.EOF, "ended with status OK")
		case <-time.After(20 * time.Second):
			t.Fatal("stream not ended by SIGTERM")
		}
	}
	_, err = spec.Recv()
	require.ErrorIs(t, err, io.EOF, "StreamMetricSpec ends with OK too")
	require.NoError(t, cmd.Wait(), "exit 0 after SIGTERM")
}
