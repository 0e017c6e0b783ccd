package chaos

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// A fault runs until stop is called; stop returns once every goroutine
// the fault started has ended, and reports what the fault saw.
type fault interface {
	start(ctx context.Context)
	stop() error
}

// counter counts outcomes by name, for the report.
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) inc(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k]++
}

func (c *counter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprint(c.m)
}

// loopFault runs fn in n goroutines until stopped; an error from fn ends
// the fault and is reported by stop.
type loopFault struct {
	n      int
	pause  time.Duration // between two calls of fn by one goroutine
	fn     func(ctx context.Context, worker int) error
	cancel context.CancelFunc
	wg     sync.WaitGroup
	err    atomic.Pointer[error]
}

func (f *loopFault) start(ctx context.Context) {
	ctx, f.cancel = context.WithCancel(ctx)
	for w := range f.n {
		f.wg.Go(func() {
			for ctx.Err() == nil {
				if err := f.fn(ctx, w); err != nil && ctx.Err() == nil {
					f.err.CompareAndSwap(nil, &err)
					return
				}
				if f.pause > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(f.pause):
					}
				}
			}
		})
	}
}

func (f *loopFault) stop() error {
	f.cancel()
	f.wg.Wait()
	if e := f.err.Load(); e != nil {
		return *e
	}
	return nil
}

// ---- 500 StreamIsActive streams, opened and abandoned ----

// abandonFault opens n StreamIsActive streams over 5 connections on 50
// triggers that read the ingested metric (so every Export marks their
// feeds), never reads them, and at stop abandons them: the streams of two
// connections by cancelling (RST_STREAM), the other three connections by
// closing their sockets without a word (as a crashed or partitioned KEDA
// would look once the kernel notices).
type abandonFault struct {
	p       *proc
	n       int
	tag     string
	dialers []*dialer
	conns   []*grpc.ClientConn
	cancels []context.CancelFunc
	opened  int
}

func (f *abandonFault) start(ctx context.Context) {
	const nConn = 5
	for range nConn {
		d := &dialer{}
		conn, err := dialKEDA(f.p.scaler, d)
		if err != nil {
			continue
		}
		f.dialers, f.conns = append(f.dialers, d), append(f.conns, conn)
	}
	for i := range f.n {
		c := externalscaler.NewExternalScalerClient(f.conns[i%len(f.conns)])
		trig := i % 50
		var q string
		if trig < 40 {
			q = fmt.Sprintf(`sum(chaos_ingest{exporter="e%d",shard="%d"})`, trig%4, trig/4)
		} else {
			q = fmt.Sprintf(`max(max_over_time(chaos_ingest{exporter="e%d",shard="%d"}[30s]))`, trig%4, trig-40)
		}
		sctx, cancel := context.WithCancel(ctx)
		if _, err := openStream(sctx, c, ref(fmt.Sprintf("abandon-%s-%d", f.tag, trig), q)); err != nil {
			cancel()
			continue
		}
		f.cancels = append(f.cancels, cancel)
		f.opened++
	}
}

func (f *abandonFault) stop() error {
	for i, cancel := range f.cancels {
		if i%5 < 2 {
			cancel()
		}
	}
	for i, d := range f.dialers {
		if i >= 2 {
			d.cutAll()
		}
	}
	for _, c := range f.conns {
		_ = c.Close()
	}
	for _, cancel := range f.cancels {
		cancel()
	}
	if f.opened != f.n {
		return fmt.Errorf("opened %d of %d streams", f.opened, f.n)
	}
	return nil
}

// ---- one stalled stream reader ----

// stallFault opens a StreamIsActive stream on the edge trigger (the one
// whose pushes are measured) over a connection whose client then stops
// reading its socket: the server's sends to it back up while the healthy
// stream on the same trigger must still get every edge.
type stallFault struct {
	p      *proc
	d      *dialer
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	sc     *stallConn
	err    error
}

func (f *stallFault) start(ctx context.Context) {
	f.d = &dialer{wrap: func(c net.Conn) net.Conn {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4 << 10) // back up sooner
		}
		f.sc = &stallConn{Conn: c, stalled: make(chan struct{}), release: make(chan struct{})}
		return f.sc
	}}
	conn, err := dialKEDA(f.p.scaler, f.d)
	if err != nil {
		f.err = err
		return
	}
	f.conn = conn
	sctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	st, err := openStream(sctx, externalscaler.NewExternalScalerClient(conn), edgeRef())
	if err != nil {
		f.err = err
		return
	}
	// Headers arrive once the server has accepted the stream; from then
	// on the client reads nothing more.
	if _, err := st.Header(); err != nil {
		f.err = err
		return
	}
	f.d.mu.Lock()
	close(f.sc.stalled)
	f.d.mu.Unlock()
}

func (f *stallFault) stop() error {
	if f.d != nil {
		f.d.cutAll()
	}
	if f.conn != nil {
		_ = f.conn.Close()
	}
	if f.cancel != nil {
		f.cancel()
	}
	return f.err
}

// ---- Exports cut mid-body, both transports ----

// cutBody is a valid Export of 10,000 chaos_cut points (about 1 MiB): were
// it stored, chaos_cut series would exist. None may.
func cutBody() []byte {
	pts := make([]gaugePoint, 10_000)
	for i := range pts {
		pts[i] = gaugePoint{attrs: [][2]string{{"i", strconv.Itoa(i)}, {"pad", "0123456789abcdef0123456789abcdef"}}}
	}
	tm := encodeGauge("chaos_cut", "cut", pts)
	now := time.Now().UnixMilli()
	for i := range pts {
		tm.set(i, now, float64(i))
	}
	return tm.body
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// httpCut sends the head of an OTLP/HTTP request whose body is cut at
// half its declared length, then closes the socket. mode: "length"
// (Content-Length), "gzip" (a gzip body, Content-Length), "chunked" (no
// last chunk).
func httpCut(ctx context.Context, addr, mode string, body []byte) error {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	head := "POST /v1/metrics HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/x-protobuf\r\n"
	switch mode {
	case "gzip":
		body = gzipBytes(body)
		head += "Content-Encoding: gzip\r\n"
		fallthrough
	case "length":
		head += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
		_, err = io.WriteString(c, head)
		if err == nil {
			_, err = c.Write(body[:len(body)/2])
		}
	case "chunked":
		head += "Transfer-Encoding: chunked\r\n\r\n"
		_, err = io.WriteString(c, head)
		half := body[:len(body)/2]
		for len(half) > 0 && err == nil {
			n := min(len(half), 64<<10)
			_, err = fmt.Fprintf(c, "%x\r\n%s\r\n", n, half[:n])
			half = half[n:]
		}
	}
	return err
}

// h2Conn is a minimal HTTP/2 client over one TCP connection, for gRPC
// requests a gRPC client library would never send: bodies cut mid-message
// and hand-made compressed messages.
type h2Conn struct {
	c  net.Conn
	fr *http2.Framer
}

func dialH2(ctx context.Context, addr string) (*h2Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		_ = c.Close()
		return nil, err
	}
	h := &h2Conn{c: c, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := h.fr.WriteSettings(); err != nil {
		_ = c.Close()
		return nil, err
	}
	return h, nil
}

// request writes the headers of an Export on stream 1 and then msg (a gRPC
// length-prefixed message) up to limit bytes, ending the stream if the
// whole message was written.
func (h *h2Conn) request(addr string, gzipped bool, msg []byte, limit int) error {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{
		{":method", "POST"},
		{":scheme", "http"},
		{":path", exportMethod},
		{":authority", addr},
		{"content-type", "application/grpc"},
		{"te", "trailers"},
	} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if gzipped {
		_ = enc.WriteField(hpack.HeaderField{Name: "grpc-encoding", Value: "gzip"})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	out := msg[:min(limit, len(msg))]
	for len(out) > 0 {
		n := min(len(out), 16<<10)
		end := n == len(out) && limit >= len(msg)
		if err := h.fr.WriteData(1, end, out[:n]); err != nil {
			return err
		}
		out = out[n:]
	}
	return nil
}

// status reads frames until stream 1 ends and returns its grpc-status.
func (h *h2Conn) status() (string, error) {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return "", err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = h.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = h.fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			if v := f.PseudoValue("status"); v != "" && v != "200" {
				return "", fmt.Errorf("HTTP/2 status %s", v)
			}
			for _, hf := range f.Fields {
				if hf.Name == "grpc-status" {
					return hf.Value, nil
				}
			}
			if f.StreamEnded() {
				return "", errors.New("stream ended without grpc-status")
			}
		case *http2.RSTStreamFrame:
			return "", fmt.Errorf("stream reset: %v", f.ErrCode)
		case *http2.GoAwayFrame:
			return "", fmt.Errorf("goaway: %v", f.ErrCode)
		}
	}
}

func grpcFrame(compressed bool, msg []byte) []byte {
	out := make([]byte, 5, 5+len(msg))
	if compressed {
		out[0] = 1
	}
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg))) //nolint:gosec // < 4 GiB
	return append(out, msg...)
}

// grpcCut sends an Export whose message is cut at 48 KiB of its ~1 MiB
// (within the stream's first flow-control window), then either closes the
// socket ("close") or resets the stream and then closes ("reset").
func grpcCut(ctx context.Context, addr, mode string, body []byte) error {
	h, err := dialH2(ctx, addr)
	if err != nil {
		return err
	}
	defer func() { _ = h.c.Close() }()
	if err := h.request(addr, false, grpcFrame(false, body), 48<<10); err != nil {
		return err
	}
	if mode == "reset" {
		return h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	}
	return nil
}

// ---- gzip bombs ----

// bombs holds a gzip stream of 32 MiB of zeros (4× --otlp-max-recv-size
// in the suite's configuration; 32 KiB compressed) and the same stream
// with a trailer that claims 1,000 bytes.
type bombs struct{ honest, lying []byte }

func makeBombs() bombs {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for range 32 {
		_, _ = zw.Write(zero)
	}
	_ = zw.Close()
	b := bombs{honest: buf.Bytes()}
	b.lying = append([]byte(nil), b.honest...)
	binary.LittleEndian.PutUint32(b.lying[len(b.lying)-4:], 1000)
	return b
}

// httpBomb posts a bomb to /v1/metrics; it must be refused with 4xx (413
// over the size limit, 400 for a body that is not OTLP) or 503 (the
// in-flight budget).
func httpBomb(ctx context.Context, c *http.Client, addr string, bomb []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/metrics", bytes.NewReader(bomb))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// grpcBomb sends a bomb as a gzip-compressed gRPC message and returns the
// grpc-status.
func grpcBomb(ctx context.Context, addr string, bomb []byte) (string, error) {
	h, err := dialH2(ctx, addr)
	if err != nil {
		return "", err
	}
	defer func() { _ = h.c.Close() }()
	if err := h.request(addr, true, grpcFrame(true, bomb), 1<<30); err != nil {
		return "", err
	}
	return h.status()
}

// ---- 300k new series past --max-series ----

// floodReq is one flood Export's bookkeeping: its points are series
// chaos_flood{round, req, i} for i < 1000; the first accepted of them were
// stored (the receiver appends in order and only the flood creates series).
type floodReq struct {
	round, req int
	tsMs       int64
	acked      bool
	accepted   int
	ackedAt    int64
	msg        string
}

const floodPerReq = 1000

func floodValue(round, req, i int) float64 { return sampleValue(1000+round, req, i) }

// floodFault sends 300 Exports of 1,000 new series each, alternating
// transports, as fast as the server answers.
type floodFault struct {
	p       *proc
	round   int
	n       int
	grpcS   sender
	httpS   sender
	reqs    []floodReq
	partial bool // stopped when its phase ends, whatever it has sent
	done    chan struct{}
	cancel  context.CancelFunc
}

func (f *floodFault) start(ctx context.Context) {
	ctx, f.cancel = context.WithCancel(ctx)
	f.done = make(chan struct{})
	conn, err := grpc.NewClient(f.p.otlp, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		close(f.done)
		return
	}
	f.grpcS = grpcSender{conn: conn}
	f.httpS = httpSender{url: "http://" + f.p.http + "/v1/metrics", c: quietTransport()}
	go func() {
		defer close(f.done)
		defer f.grpcS.close()
		defer f.httpS.close()
		pts := make([]gaugePoint, floodPerReq)
		for r := 0; r < f.n && ctx.Err() == nil; r++ {
			for i := range pts {
				pts[i] = gaugePoint{attrs: [][2]string{{"round", strconv.Itoa(f.round)}, {"req", strconv.Itoa(r)}, {"i", strconv.Itoa(i)}}}
			}
			tm := encodeGauge("chaos_flood", "flood", pts)
			ts := time.Now().UnixMilli() - 1000
			for i := range pts {
				tm.set(i, ts, floodValue(f.round, r, i))
			}
			snd := f.grpcS
			if r%2 == 1 {
				snd = f.httpS
			}
			res := snd.send(ctx, tm.body)
			fr := floodReq{round: f.round, req: r, tsMs: ts, msg: res.msg}
			if res.ok {
				fr.acked, fr.accepted, fr.ackedAt = true, floodPerReq-int(res.rejected), time.Now().UnixNano()
			}
			f.reqs = append(f.reqs, fr)
		}
	}()
}

// wait blocks until every flood request was answered or d passed.
func (f *floodFault) wait(d time.Duration) {
	select {
	case <-f.done:
	case <-time.After(d):
	}
}

func (f *floodFault) stop() error {
	f.cancel()
	<-f.done
	if len(f.reqs) < f.n && !f.partial {
		return fmt.Errorf("flood round %d: %d of %d requests sent", f.round, len(f.reqs), f.n)
	}
	return nil
}

// ---- all-series queries through the HTTP API, in a loop ----

// expensiveQueries are the query loop's requests, every one over all series.
var expensiveQueries = []struct{ path, query string }{
	{"/api/v1/query", `{__name__=~".+"}`},                       // every series
	{"/api/v1/query", `count_over_time({__name__=~".+"}[10m])`}, // every sample
	{"/api/v1/query", `{__name__=~".+"}[10m]`},                  // every raw sample: over --query-max-samples
	{"/api/v1/series", `{__name__=~".+"}`},
	{"/api/v1/query_range", `sum by (shard) (rate(chaos_ingest[1m]))`}, // 61 steps over every ingest series
}

// queryFault runs the expensive queries back to back in 2 loops (one more
// than --query-max-concurrency in the suite, so one always waits for a
// slot).
type queryFault struct {
	loopFault
	c *http.Client
}

func newQueryFault(p *proc, outcomes *counter) *queryFault {
	f := &queryFault{c: quietTransport()}
	var iter [2]int
	f.n = len(iter)
	f.fn = func(ctx context.Context, w int) error {
		q := expensiveQueries[(iter[w]+w)%len(expensiveQueries)]
		iter[w]++
		form := url.Values{"query": {q.query}}
		switch q.path {
		case "/api/v1/series":
			form = url.Values{"match[]": {q.query}}
		case "/api/v1/query_range":
			now := time.Now()
			form.Set("start", strconv.FormatInt(now.Add(-time.Minute).Unix(), 10))
			form.Set("end", strconv.FormatInt(now.Unix(), 10))
			form.Set("step", "1")
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.http+q.path, bytes.NewReader([]byte(form.Encode())))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := f.c.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("query %s %s: %w", q.path, q.query, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK, http.StatusUnprocessableEntity, http.StatusServiceUnavailable:
			outcomes.inc(q.path + " " + strconv.Itoa(resp.StatusCode))
		default:
			return fmt.Errorf("query %s %s: %s", q.path, q.query, resp.Status)
		}
		return nil
	}
	return f
}

func (f *queryFault) stop() error {
	err := f.loopFault.stop()
	f.c.CloseIdleConnections()
	return err
}
