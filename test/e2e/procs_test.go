package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keda-otel-scaler/keda-otel-scaler/test/bincache"
)

// binCache is the per-user cache of built binaries (test/bincache); tools
// opens it and TestMain closes it.
var binCache *bincache.Cache

// buildCollector returns the path of the test's collector distribution
// (otelcol/, contrib v0.161.0: the newest whose whole module graph the Go
// module proxy serves here), building it into the per-user binary cache
// (test/bincache: ~/.cache/keda-otel-scaler, or $KOS_TEST_CACHE) when no
// binary for these sources, this Go and this platform exists. test/k8s uses
// the same entry. E2E_OTELCOL overrides the path.
func buildCollector(ctx context.Context, logw io.Writer) (string, error) {
	if p := os.Getenv("E2E_OTELCOL"); p != "" {
		return p, nil
	}
	if binCache == nil {
		c, err := bincache.Open(".cache", func(format string, args ...any) {
			_, _ = fmt.Fprintf(logw, "e2e: "+format+"\n", args...)
		})
		if err != nil {
			return "", err
		}
		binCache = c
	}
	dir, err := binCache.Get(ctx, bincache.Collector("otelcol"))
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "otelcol"), nil
}

// buildScaler builds cmd/keda-otel-scaler into dir.
func buildScaler(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "keda-otel-scaler")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/keda-otel-scaler")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build scaler: %w\n%s", err, out)
	}
	return bin, nil
}

// proc is a child process whose combined output goes to a log file. The test
// that starts it owns it: Stop (or the test's cleanup) ends it.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	once    sync.Once
}

func startProc(t *testing.T, name, bin string, args, env []string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("--- %s log (tail) ---\n%s", name, p.tail(40))
		}
	})
	return p
}

// Kill ends the process at once with SIGKILL, like a pod that dies: nothing
// is flushed.
func (p *proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to grace, then kills.
func (p *proc) Stop(grace time.Duration) {
	p.once.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
	})
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *proc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// scalerAddrs are the listeners the scaler reports in its "Serving" log line.
type scalerAddrs struct {
	OTLPGRPC string `json:"otlp_grpc_addr"`
	Scaler   string `json:"scaler_addr"`
	HTTP     string `json:"http_addr"`
}

// waitServing reads the scaler's JSON log until the "Serving" line.
func waitServing(t *testing.T, p *proc, timeout time.Duration) scalerAddrs {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(bytes.NewReader([]byte(p.log())))
		for sc.Scan() {
			var line struct {
				Msg string `json:"msg"`
				scalerAddrs
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "Serving" && line.HTTP != "" {
				return line.scalerAddrs
			}
		}
		if p.exited() {
			t.Fatalf("scaler exited before serving: %v\n%s", p.waitErr, p.tail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("scaler did not report its addresses within %s\n%s", timeout, p.tail(40))
	return scalerAddrs{}
}

// scalerHasFlag reports whether the scaler's --help lists the flag.
func scalerHasFlag(bin, flag string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--help")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return false, err
		}
	}
	for _, l := range strings.Split(out.String(), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && (f[0] == "-"+flag || f[0] == "--"+flag) {
			return true, nil
		}
	}
	return false, nil
}
