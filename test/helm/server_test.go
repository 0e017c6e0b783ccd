package helm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildServer builds cmd/keda-otel-scaler once per test binary;
// E2E_SCALER names a prebuilt binary instead (e.g. from another branch).
func buildServer(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("E2E_SCALER"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "kos-helm-test-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "keda-otel-scaler")
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/keda-otel-scaler")
		cmd.Dir = "../.."
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return buildBin
}

var httpAddrRE = regexp.MustCompile(`http_addr[=":]+\s*"?(127\.0\.0\.1:[0-9]+)`)

// TestRenderedConfigStartsServer runs the real server with the env and args
// the chart renders (listeners moved to 127.0.0.1:0), so a value the server
// cannot parse fails here rather than in a cluster. When the values enable
// the PrometheusRule, it also checks that every metric the alerts query is
// on the server's /metrics.
func TestRenderedConfigStartsServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	bin := buildServer(t)
	for _, f := range []string{"default-values.yaml", "all-optional-values.yaml"} {
		t.Run("values="+f, func(t *testing.T) {
			o := mustRender(t, readValues(t, f))
			c := container(t, o)
			env := []string{"PATH=" + os.Getenv("PATH")}
			for _, e := range c.Env {
				if e.ValueFrom != nil {
					continue
				}
				v := e.Value
				if e.Name == "KOS_STATE_DIR" {
					v = t.TempDir()
				}
				env = append(env, e.Name+"="+v)
			}
			args := append(append([]string{}, c.Args...),
				"--otlp-grpc-addr=127.0.0.1:0", "--scaler-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = env
			stderr, err := cmd.StderrPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())

			addrc := make(chan string, 1)
			logs := make(chan string, 256)
			go func() {
				defer close(logs)
				sc := bufio.NewScanner(stderr)
				sent := false
				for sc.Scan() {
					line := sc.Text()
					select {
					case logs <- line:
					default:
					}
					if m := httpAddrRE.FindStringSubmatch(line); m != nil && !sent {
						addrc <- m[1]
						sent = true
					}
				}
				_, _ = io.Copy(io.Discard, stderr)
			}()
			var addr string
			select {
			case addr = <-addrc:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				var all []string
				for l := range logs {
					all = append(all, l)
				}
				t.Fatalf("server did not report its HTTP address; output:\n%v", all)
			}
			// /readyz turns 200 once every listener serves.
			require.Eventually(t, func() bool {
				resp, err := http.Get("http://" + addr + "/readyz")
				if err != nil {
					return false
				}
				_ = resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			}, 10*time.Second, 50*time.Millisecond)
			resp, err := http.Get("http://" + addr + "/healthz")
			require.NoError(t, err)
			_ = resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)

			if _, ok := o["PrometheusRule/keda-otel-scaler"]; ok {
				// Every metric the chart's alerts query is one the server
				// exposes, under that name.
				resp, err := http.Get("http://" + addr + "/metrics")
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				require.NoError(t, err)
				names := ruleMetricNames(t, o)
				require.NotEmpty(t, names)
				for _, name := range names {
					assert.Contains(t, string(body), "\n# TYPE "+name+" ", "the alerts query %s, which /metrics does not expose", name)
				}
			}

			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			err = cmd.Wait()
			assert.NoError(t, err, "server exits cleanly on SIGTERM")
		})
	}
}
