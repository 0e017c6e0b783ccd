package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fixturePath is a realistic /metrics body of one vLLM V1 pod (served model
// "qwen", one engine), copied from the project's shared fixture.
const fixturePath = "testdata/vllm-metrics-sample.prom"

// fakeVLLM serves /metrics shaped like vLLM's: the fixture, with the load
// gauges replaced by values the test controls.
type fakeVLLM struct {
	srv     *http.Server
	ln      net.Listener
	lines   []string
	running atomic.Uint64 // float64 bits
	waiting atomic.Uint64
	kv      atomic.Uint64
	scrapes atomic.Int64
	done    chan struct{}
	once    sync.Once
}

func loadFixture(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(fixturePath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// startFakeVLLM listens on 127.0.0.1:0. The test owns it: Close (or the
// test's cleanup) stops it.
func startFakeVLLM(t *testing.T, fixture []string, running, waiting, kv float64) *fakeVLLM {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeVLLM{ln: ln, lines: fixture, done: make(chan struct{})}
	f.Set(running, waiting, kv)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", f.serveMetrics)
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(f.done)
		if err := f.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("fake vLLM: %v", err)
		}
	}()
	t.Cleanup(f.Close)
	return f
}

func (f *fakeVLLM) Addr() string { return f.ln.Addr().String() }

// Set changes the load the next scrape reports.
func (f *fakeVLLM) Set(running, waiting, kv float64) {
	f.running.Store(math.Float64bits(running))
	f.waiting.Store(math.Float64bits(waiting))
	f.kv.Store(math.Float64bits(kv))
}

// Close stops serving at once, as a dead pod would.
func (f *fakeVLLM) Close() {
	f.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = f.srv.Shutdown(ctx)
		<-f.done
	})
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func (f *fakeVLLM) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	f.scrapes.Add(1)
	running := math.Float64frombits(f.running.Load())
	waiting := math.Float64frombits(f.waiting.Load())
	kv := math.Float64frombits(f.kv.Load())
	var b strings.Builder
	for _, l := range f.lines {
		switch {
		case strings.HasPrefix(l, "vllm:num_requests_running{"):
			l = replaceValue(l, running)
		case strings.HasPrefix(l, "vllm:num_requests_waiting{"):
			l = replaceValue(l, waiting)
		case strings.HasPrefix(l, "vllm:num_requests_waiting_by_reason{") && strings.Contains(l, `reason="capacity"`):
			l = replaceValue(l, waiting)
		case strings.HasPrefix(l, "vllm:kv_cache_usage_perc{"):
			l = replaceValue(l, kv)
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = fmt.Fprint(w, b.String())
}

// replaceValue swaps the sample value of a text-format line "name{...} v".
func replaceValue(line string, v float64) string {
	i := strings.LastIndexByte(line, ' ')
	return line[:i+1] + fmtFloat(v)
}

func TestFakeVLLMServesFixture(t *testing.T) {
	f := startFakeVLLM(t, loadFixture(t), 2, 1, 0.5)
	f.Set(4, 6, 0.25)
	resp, err := http.Get("http://" + f.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	body := b.String()
	for _, want := range []string{
		`vllm:num_requests_running{engine="0",model_name="qwen"} 4` + "\n",
		`vllm:num_requests_waiting{engine="0",model_name="qwen"} 6` + "\n",
		`vllm:num_requests_waiting_by_reason{engine="0",model_name="qwen",reason="capacity"} 6` + "\n",
		`vllm:kv_cache_usage_perc{engine="0",model_name="qwen"} 0.25` + "\n",
		`vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="qwen"} 1285.0` + "\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if got := f.scrapes.Load(); got != 1 {
		t.Errorf("scrapes = %d, want 1", got)
	}
}
