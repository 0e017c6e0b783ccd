package k8s

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a child process whose combined output goes to a log file. Whoever
// starts it owns it and calls Stop; runIsolated's PID namespace is the
// backstop if the test process dies first.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	once    sync.Once
}

func startProcess(logDir, name, bin string, args, env []string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	return p, nil
}

// startProc starts a process owned by the test: its cleanup stops it and,
// when the test failed, logs the tail of its output.
func startProc(t *testing.T, name, bin string, args, env []string) *proc {
	t.Helper()
	p, err := startProcess(t.TempDir(), name, bin, args, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("--- %s log (tail) ---\n%s", name, p.tail(40))
		}
	})
	return p
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
