package chaos

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// buildBinary compiles cmd/keda-otel-scaler (without -race: the suite
// measures the binary as it ships) into a temp dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "keda-otel-scaler")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/keda-otel-scaler")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

var servingLine = regexp.MustCompile(`otlp_grpc_addr=(\S+) scaler_addr=(\S+) http_addr=(\S+)`)

// proc is the real binary running on loopback ports.
type proc struct {
	cmd                  *exec.Cmd
	otlp, scaler, http   string
	logs                 *tailBuffer
	waitOnce             sync.Once
	waitErr              error
	httpc                *http.Client
	exited               chan struct{}
	startedAt, servingAt time.Time
}

// tailBuffer keeps the last 64 KiB of the server's log for failure
// messages.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - 64<<10; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// startProc runs bin with args and the extra environment env on ports 0 and returns once it logs its
// bound addresses. The process is killed when the test ends.
func startProc(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{logs: &tailBuffer{}, exited: make(chan struct{}), startedAt: time.Now()}
	p.cmd = exec.Command(bin, append([]string{"--otlp-grpc-addr", "127.0.0.1:0", "--scaler-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	dieWithParent(p.cmd)
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.wait()
	})
	// A server that never logs its addresses is killed, which ends the scan.
	started := make(chan struct{})
	defer close(started)
	go func() {
		select {
		case <-started:
		case <-time.After(2 * time.Minute):
			_ = p.cmd.Process.Kill()
		}
	}()
	lines := bufio.NewScanner(stderr)
	var m []string
	for lines.Scan() {
		_, _ = p.logs.Write(append(lines.Bytes(), '\n'))
		if m = servingLine.FindStringSubmatch(lines.Text()); m != nil {
			break
		}
	}
	require.NotNil(t, m, "server must log its bound addresses; it logged:\n%s", p.logs.String())
	p.servingAt = time.Now()
	go func() {
		_, _ = io.Copy(p.logs, stderr)
		close(p.exited)
	}()
	p.otlp, p.scaler, p.http = m[1], m[2], m[3]
	p.httpc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	t.Cleanup(p.httpc.CloseIdleConnections)
	return p
}

// wait reaps the process once; the log copier has finished when it returns.
func (p *proc) wait() error {
	p.waitOnce.Do(func() {
		<-p.exited
		p.waitErr = p.cmd.Wait()
	})
	return p.waitErr
}

// kill sends SIGKILL and reaps the process.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	var exitErr *exec.ExitError
	require.ErrorAs(t, p.wait(), &exitErr, "killed")
}

// metrics reads /metrics into a map from the exact series text to its value.
func (p *proc) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	resp, err := p.httpc.Get("http://" + p.http + "/metrics")
	require.NoError(t, err)
	return scrape(resp)
}

// scrape parses a /metrics answer (and closes it) into a map from the
// exact series text to its value; unparsable lines are skipped.
func scrape(resp *http.Response) map[string]float64 {
	defer func() { _ = resp.Body.Close() }()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if f, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = f
		}
	}
	return out
}

// sigterm asks the server to shut down gracefully.
var sigterm = syscall.SIGTERM

func numCPU() int { return runtime.NumCPU() }

// machineCPU reads /proc/stat's aggregate line: busy (user, nice, system,
// irq, softirq) and steal seconds of the whole machine since boot (0 where
// there is no /proc/stat). Busy minus the server's and the generator's CPU
// is what other processes took during a phase.
func machineCPU() (busy, steal float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	var v [8]float64
	for i := range v {
		v[i], _ = strconv.ParseFloat(f[i+1], 64)
	}
	const hz = 100 // USER_HZ on Linux
	return (v[0] + v[1] + v[2] + v[5] + v[6]) / hz, v[7] / hz
}

// selfCPU is this test process's CPU time (user + system) in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// get fetches path and returns status and body.
func (p *proc) get(path string) (int, []byte, error) {
	resp, err := p.httpc.Get("http://" + p.http + path)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// lastCheckpointStart is the start of the last successful checkpoint
// (keda_otel_scaler_state_checkpoint_last_success_timestamp_seconds, unix
// ms): every sample acknowledged before it is in the checkpoint.
func lastCheckpointStart(m map[string]float64) time.Time {
	s := m["keda_otel_scaler_state_checkpoint_last_success_timestamp_seconds"]
	if s == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(math.Round(s * 1000)))
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// postForm posts an /api/v1 form query and returns the status and body.
func (p *proc) query(ctx context.Context, path string, form string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.http+path, strings.NewReader(form))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.httpc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return resp.StatusCode, buf.Bytes(), nil
}
