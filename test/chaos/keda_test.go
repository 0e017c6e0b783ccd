package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/status"
)

// ref is a ScaledObject reference with KEDA's usual metadata.
func ref(name, query string, kv ...string) *externalscaler.ScaledObjectRef {
	md := map[string]string{"metricQuery": query, "targetValue": "1", "scalerAddress": "keda-otel-scaler.keda.svc:4318"}
	for i := 0; i+1 < len(kv); i += 2 {
		md[kv[i]] = kv[i+1]
	}
	return &externalscaler.ScaledObjectRef{Namespace: "chaos", Name: name, ScalerMetadata: md}
}

// healthyRef is the polled trigger whose GetMetrics latency is measured:
// a sum over one shard of one exporter's series (about series/10 series),
// the shape of a fleet queue-depth trigger.
func healthyRef() *externalscaler.ScaledObjectRef {
	return ref("healthy", `sum(chaos_ingest{exporter="e0",shard="0"})`)
}

// edgeRef is the external-push trigger whose edges the edge driver makes.
func edgeRef() *externalscaler.ScaledObjectRef {
	return ref("edge", `sum(chaos_edge)`, "activationThreshold", "0.5")
}

// dialer dials loopback and remembers every connection, so a fault can cut
// them abruptly (a TCP close without HTTP/2 GOAWAY or RST_STREAM), and
// refuses new ones once cut.
type dialer struct {
	mu    sync.Mutex
	conns []net.Conn
	cut   bool
	wrap  func(net.Conn) net.Conn
}

func (d *dialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cut {
		return nil, errors.New("abandoned")
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if d.wrap != nil {
		c = d.wrap(c)
	}
	d.conns = append(d.conns, c)
	return c, nil
}

func (d *dialer) cutAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cut = true
	for _, c := range d.conns {
		_ = c.Close()
	}
}

func dialKEDA(addr string, d *dialer) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if d != nil {
		opts = append(opts, grpc.WithContextDialer(d.dial))
	}
	return grpc.NewClient(addr, opts...)
}

// latencies collects durations tagged with the phase they started in.
type latencies struct {
	mu   sync.Mutex
	byPh [maxPhases][]time.Duration
	errs [maxPhases]int
	msgs []string
}

func (l *latencies) add(ph int32, d time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs[ph]++
		if len(l.msgs) < 10 {
			l.msgs = append(l.msgs, err.Error())
		}
		return
	}
	l.byPh[ph] = append(l.byPh[ph], d)
}

// quantile of the durations of phase ph (0 when none).
func (l *latencies) quantile(ph int, q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return quantile(l.byPh[ph], q)
}

func quantile(v []time.Duration, q float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// pollHealthy calls GetMetrics on the healthy trigger every 5 ms, as a
// KEDA with many ScaledObjects would, and records each call's latency.
func pollHealthy(ctx context.Context, r *runState, c externalscaler.ExternalScalerClient, l *latencies) {
	req := &externalscaler.GetMetricsRequest{ScaledObjectRef: healthyRef(), MetricName: "s0-chaos-healthy"}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ph := r.phase.Load()
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := c.GetMetrics(cctx, req)
		cancel()
		if ctx.Err() != nil || r.killed.Load() {
			return
		}
		if err == nil && len(resp.GetMetricValues()) != 1 {
			err = fmt.Errorf("GetMetrics: %d values", len(resp.GetMetricValues()))
		}
		l.add(ph, time.Since(start), err)
	}
}

// edgeDriver makes inactive→active edges on the edge trigger, one at a
// time: it pushes chaos_edge=1 and waits for the healthy stream's true (the
// push latency), then pushes 0 and waits until the server's status shows
// the trigger's stream evaluation inactive at or after that push, so the
// next 1 is an edge the server must see. Every edge it makes must arrive.
type edgeDriver struct {
	p       *proc
	recv    chan time.Time // the healthy stream's trues, as received
	lat     latencies
	made    atomic.Int64
	missed  atomic.Int64 // an edge whose true did not arrive within 30 s
	errMsgs []string
}

// edgeSeries is how many chaos_edge series the driver rotates over: each
// cycle zeroes the previous one and sets the next to 1, so every series
// gains two samples per edgeSeries edges and none is ever thinned.
const edgeSeries = 128

// push sets chaos_edge{driver=k} to v at ts, or every series when k < 0.
func (d *edgeDriver) push(ctx context.Context, k int, v float64, ts int64) error {
	var pts []gaugePoint
	for i := range edgeSeries {
		if k < 0 || i == k {
			pts = append(pts, gaugePoint{attrs: [][2]string{{"driver", strconv.Itoa(i)}}})
		}
	}
	tm := encodeGauge("chaos_edge", "edge", pts)
	for i := range pts {
		tm.set(i, ts, v)
	}
	res := httpSender{url: "http://" + d.p.http + "/v1/metrics", c: d.p.httpc}.send(ctx, tm.body)
	if !res.ok || res.rejected != 0 {
		return fmt.Errorf("edge push: ok=%v rejected=%d %s", res.ok, res.rejected, res.msg)
	}
	return nil
}

func (d *edgeDriver) run(ctx context.Context, r *runState) {
	// Sample times are the wall clock, strictly increasing by waiting for
	// the next millisecond: a time ahead of the server's clock would not
	// be seen by the evaluation the Export triggers (it reads up to now),
	// only by the next one.
	var last int64
	next := func() int64 {
		now := time.Now().UnixMilli()
		for now <= last {
			time.Sleep(time.Millisecond)
			now = time.Now().UnixMilli()
		}
		last = now
		return last
	}
	fail := func(err error) bool {
		if ctx.Err() != nil || r.killed.Load() {
			return true
		}
		if len(d.errMsgs) < 10 {
			d.errMsgs = append(d.errMsgs, err.Error())
		}
		return false
	}
	for c := 1; ctx.Err() == nil; c++ {
		// Inactive first, confirmed by the server's own stream evaluation.
		t0 := time.Now()
		if err := d.push(ctx, (c-1)%edgeSeries, 0, next()); err != nil {
			if fail(err) {
				return
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		inactive := waitFor(30*time.Second, func() bool {
			if ctx.Err() != nil {
				return true
			}
			td, err := status.Fetch(ctx, d.p.httpc, "http://"+d.p.http, "chaos", "edge", 1, false)
			if err != nil || len(td.Triggers) != 1 || td.Triggers[0].Last == nil {
				return false
			}
			l := td.Triggers[0].Last
			return !l.Active && !l.Time.Before(t0.Truncate(time.Millisecond))
		})
		if ctx.Err() != nil {
			return
		}
		if !inactive {
			fail(errors.New("edge trigger not seen inactive within 30 s"))
			continue
		}
		// Drain any late true (none expected) so the next wait is this edge's.
		for len(d.recv) > 0 {
			<-d.recv
		}
		ph := r.phase.Load()
		start := time.Now()
		if err := d.push(ctx, c%edgeSeries, 1, next()); err != nil {
			if fail(err) {
				return
			}
			continue
		}
		d.made.Add(1)
		select {
		case <-d.recv:
			d.lat.add(ph, time.Since(start), nil)
		case <-time.After(30 * time.Second):
			d.missed.Add(1)
			d.lat.add(ph, 0, errors.New("no true within 30 s"))
		case <-ctx.Done():
			return
		}
	}
}

// openStream opens StreamIsActive on ref and returns the stream.
func openStream(ctx context.Context, c externalscaler.ExternalScalerClient, r *externalscaler.ScaledObjectRef) (grpc.ServerStreamingClient[externalscaler.IsActiveResponse], error) {
	return c.StreamIsActive(ctx, r)
}

// stallConn is a client connection whose reads block once stalled: the
// client stops reading its socket, as a hung KEDA operator would, so the
// server's writes to it back up in TCP and HTTP/2 flow control.
type stallConn struct {
	net.Conn
	stalled chan struct{} // closed to stall
	release chan struct{} // closed to end the stall (at close)
	once    sync.Once
}

func (c *stallConn) Read(b []byte) (int, error) {
	select {
	case <-c.stalled:
		<-c.release
		return 0, net.ErrClosed
	default:
	}
	return c.Conn.Read(b)
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.release) })
	return c.Conn.Close()
}

// quietTransport is an HTTP client for the query loop, separate from the
// proc's so its connections are closed when the loop ends.
func quietTransport() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
}
