package promapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// boundsStore holds n series "x" with a sample every second from 2000 s to
// 3000 s (a ring holds about a thousand), values with long decimal forms, so a range query's JSON is about
// 30 bytes per point (as real timestamps and values are).
func boundsStore(t testing.TB, n int) *store.Store {
	t.Helper()
	st := store.New(store.Config{Retention: time.Hour, Freshness: -1}, store.Settings{Now: func() time.Time { return time.Unix(3600, 0) }})
	for p := range n {
		ref, err := st.Create(uint64(p+1), labels.FromStrings(labels.MetricName, "x", "pod", fmt.Sprintf("pod-%03d", p)))
		require.NoError(t, err)
		for s := int64(2000); s <= 3000; s++ {
			require.NoError(t, st.Append(ref, s*1000, float64(s)*0.1+float64(p)*0.01))
		}
	}
	return st
}

// parkedWriter is a ResponseWriter whose Write blocks until release is
// closed: a client that does not read. entered counts the writers that
// reached their first Write.
type parkedWriter struct {
	header  http.Header
	code    int
	body    []byte
	release <-chan struct{}
	entered *atomic.Int64
	once    sync.Once
}

func (w *parkedWriter) Header() http.Header  { return w.header }
func (w *parkedWriter) WriteHeader(code int) { w.code = code }

func (w *parkedWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { w.entered.Add(1) })
	<-w.release
	w.body = append(w.body, p...)
	return len(p), nil
}

// TestAPIQueryMemoryBounded is issue #12 class 6: eight clients that do
// not read their large range-query answers must not make the API hold
// eight answers. The heap growth while they are parked is bounded by the
// configuration: MaxConcurrency × (MaxSamples × SampleBytes + the write
// buffer + the plan), plus a fixed allowance for the requests themselves.
// Before the fix every request buffered its whole JSON and gave its slot
// back before writing, so all eight held their JSON (~1.5 MB, in a buffer
// grown by doubling) here.
func TestAPIQueryMemoryBounded(t *testing.T) {
	const (
		clients   = 8
		nSeries   = 50
		steps     = 1000 // 50,000 points per answer, ~1.5 MB of JSON
		planSlack = 64 << 10
		fixed     = 1 << 20 // requests, goroutines' heap objects, GC noise
	)
	cfg := Config{MaxConcurrency: 2, MaxSamples: 60_000, Timeout: time.Minute}
	st := boundsStore(t, nSeries)
	api := New(query.NewEngine(st), st, cfg, Settings{})
	mux := http.NewServeMux()
	api.Register(mux)
	target := "/api/v1/query_range?" + url.Values{
		"query": {"x"}, "start": {"2000.123"}, "end": {fmt.Sprint(2000.123 + steps - 1)}, "step": {"1"},
	}.Encode()

	heap := func() int64 {
		runtime.GC()
		runtime.GC() // a second cycle frees what sync.Pools held
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	before := heap()

	release := make(chan struct{})
	var entered atomic.Int64
	writers := make([]*parkedWriter, clients)
	var wg sync.WaitGroup
	for i := range writers {
		w := &parkedWriter{header: http.Header{}, release: release, entered: &entered}
		writers[i] = w
		wg.Go(func() { mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil)) })
	}
	// Parked: every client is either blocked writing or waiting for a
	// slot. Bounded by a count of polls, not by time.
	parked := func() bool {
		n := entered.Load()
		return n == clients || n == int64(cfg.MaxConcurrency) && api.waiting.Load() == clients-int64(cfg.MaxConcurrency)
	}
	for i := 0; !parked(); i++ {
		if i == 20_000 {
			close(release)
			wg.Wait()
			t.Fatalf("clients never parked: %d writing, %d waiting", entered.Load(), api.waiting.Load())
		}
		time.Sleep(time.Millisecond)
	}
	growth := heap() - before
	close(release)
	wg.Wait()

	perQuery := int64(cfg.MaxSamples)*SampleBytes + 2*flushSize + planSlack
	bound := int64(cfg.MaxConcurrency)*perQuery + fixed
	t.Logf("heap growth with %d clients parked: %.2f MB (bound %.2f MB = %d slots × %.2f MB + %.2f MB)",
		clients, float64(growth)/1e6, float64(bound)/1e6, cfg.MaxConcurrency, float64(perQuery)/1e6, float64(fixed)/1e6)
	assert.LessOrEqual(t, growth, bound, "the API held more than its configured bound")

	// Every client got the whole answer (the same bytes); decode one.
	for _, w := range writers {
		require.Equal(t, http.StatusOK, w.code, "%.300s", w.body)
		require.Equal(t, writers[0].body, w.body)
	}
	var r struct {
		Data struct {
			Result []struct {
				Values []json.RawMessage `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(writers[0].body, &r))
	require.Len(t, r.Data.Result, nSeries)
	for _, se := range r.Data.Result {
		require.Equal(t, steps, len(se.Values)) //nolint:testifylint // Len would print 1000 points
	}
}

// smallBufListener shrinks the send buffer of every accepted connection, so
// a client that does not read blocks the server's writes after a few KB
// instead of megabytes of kernel buffers.
type smallBufListener struct{ net.Listener }

func (l smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

// TestAPISlowReaderGivesSlotBack: the slot is held until the answer is
// written (so memory stays bounded), but a client that never reads cannot
// hold it forever: the write has a deadline of Config.Timeout, after which
// the handler returns and the next request is served.
func TestAPISlowReaderGivesSlotBack(t *testing.T) {
	// The timeout bounds evaluation as well as writing: under -race on a
	// loaded 2-core machine 2 s did not always cover the evaluation.
	cfg := Config{MaxConcurrency: 1, Timeout: 6 * time.Second}
	st := boundsStore(t, 50)
	api := New(query.NewEngine(st), st, cfg, Settings{})
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = smallBufListener{srv.Listener}
	srv.Start()
	defer srv.Close()

	// ~1.5 MB of JSON that the client never reads.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4 << 10)
	}
	target := "/api/v1/query_range?" + url.Values{"query": {"x"}, "start": {"2000.123"}, "end": {"3000.123"}, "step": {"1"}}.Encode()
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", target)
	require.NoError(t, err)

	// The stalled answer holds the only slot, then gives it back at its
	// write deadline. Polls are bounded by count.
	waitSlots := func(want int) {
		t.Helper()
		for i := 0; len(api.slots) != want; i++ {
			require.Less(t, i, 30_000, "slots in use stayed %d, want %d", len(api.slots), want)
			time.Sleep(time.Millisecond)
		}
	}
	waitSlots(1)
	waitSlots(0)
	// The slot was held while a 200 answer was being written (not while
	// evaluating, nor for an error).
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
	status := make([]byte, len("HTTP/1.1 200 OK"))
	_, err = io.ReadFull(conn, status)
	require.NoError(t, err)
	assert.Equal(t, "HTTP/1.1 200 OK", string(status))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/labels", nil)
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	assert.JSONEq(t, `{"status":"success","data":["__name__","pod"]}`, string(body))
}
