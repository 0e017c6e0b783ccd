package integration

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// buildBinary compiles cmd/keda-otel-scaler into a temp dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "keda-otel-scaler")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/keda-otel-scaler").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

var servingLine = regexp.MustCompile(`otlp_grpc_addr=(\S+) scaler_addr=(\S+) http_addr=(\S+)`)

// TestBinaryLifecycle runs the real binary: it starts with ports 0 and no
// Kubernetes, logs its bound addresses, turns ready, and on SIGTERM exits 0.
func TestBinaryLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--otlp-grpc-addr", "127.0.0.1:0", "--scaler-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "KOS_HTTP_ADDR=127.0.0.1:0", "KUBECONFIG=/nonexistent")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	lines := bufio.NewScanner(stderr)
	var httpAddr string
	for lines.Scan() {
		if m := servingLine.FindStringSubmatch(lines.Text()); m != nil {
			httpAddr = m[3]
			break
		}
	}
	require.NotEmpty(t, httpAddr, "server must log its bound addresses")
	go func() { _, _ = io.Copy(io.Discard, stderr) }()

	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get("http://" + httpAddr + path)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
	}

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "exit 0 after SIGTERM")
}

func TestBinaryRejectsBadConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	out, err := exec.Command(bin, "--http-addr", "nope", "--log-format", "xml").CombinedOutput()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	assert.Equal(t, 2, exitErr.ExitCode())
	assert.Contains(t, string(out), "--http-addr")
	assert.Contains(t, string(out), "--log-format", "every problem is reported at once")

	out, err = exec.Command(bin, "--help").CombinedOutput()
	require.NoError(t, err)
	assert.Contains(t, string(out), "-otlp-grpc-addr")
}
