package server

import (
	"log/slog"
	"net"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Connection bounds (issue #12, "connections are unbounded on every
// listener"). Every accepted TCP connection costs the process goroutines
// and buffers before it sends a byte: an idle gRPC connection holds a
// transport with its read buffer, HTTP/2 state and two goroutines, an idle
// HTTP keep-alive connection a goroutine and its bufio buffers (README,
// Resource bounds, has the measured figures). So each listener admits at
// most its configured number of connections at once (--otlp-max-connections,
// --scaler-max-connections, --http-max-connections).
//
// Beyond the cap a new connection is closed as soon as it is accepted and
// counted in keda_otel_scaler_connections_rejected_total{listener}, rather
// than left waiting in the kernel's accept queue (what
// golang.org/x/net/netutil.LimitListener does by not accepting). Closing
// keeps the queue drained, so a client learns at once that it was refused
// (gRPC clients reconnect with backoff, a probe fails fast instead of
// timing out), and the counter says why. Each listener has its own cap, so
// collectors flooding 4317 never take KEDA's connection on 4318 or the
// kubelet's probes on 8080.
//
// How long a connection that sends nothing may hold its slot is bounded
// separately: handshakeTimeout for the gRPC handshake (grpc.ConnectionTimeout)
// and for the HTTP request header and TLS handshake (ReadHeaderTimeout),
// keepalive pings for silent gRPC connections, IdleTimeout for idle HTTP
// keep-alive connections.

// connLimit counts one listener's open connections.
type connLimit struct {
	max      int64
	open     atomic.Int64
	rejected prometheus.Counter
}

// connMetrics are the connection gauges and counters of every listener.
type connMetrics struct {
	rejected *prometheus.CounterVec
	reg      prometheus.Registerer
}

func newConnMetrics(reg prometheus.Registerer) *connMetrics {
	m := &connMetrics{
		reg: reg,
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_connections_rejected_total",
			Help: "TCP connections closed at accept because the listener already had its --*-max-connections open, by listener.",
		}, []string{"listener"}),
	}
	reg.MustRegister(m.rejected)
	return m
}

// limit returns the bound for one listener and registers its open gauge.
func (m *connMetrics) limit(listener string, maxConns int) *connLimit {
	l := &connLimit{max: int64(maxConns), rejected: m.rejected.WithLabelValues(listener)}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "keda_otel_scaler_connections_open",
		Help:        "TCP connections open on a listener (at most its --*-max-connections), by listener.",
		ConstLabels: prometheus.Labels{"listener": listener},
	}, func() float64 { return float64(l.open.Load()) }))
	return l
}

// wrap returns lis bounded by l.
func (l *connLimit) wrap(lis net.Listener) net.Listener { return &limitListener{Listener: lis, l: l} }

// limitListener is a net.Listener whose Accept closes connections past the
// cap and returns only admitted ones.
type limitListener struct {
	net.Listener
	l *connLimit
}

// Accept returns the next admitted connection. A refused one is closed and
// counted, and Accept goes on waiting, so the server's accept loop never
// sees the refusal (grpc-go and net/http would treat an error as temporary
// and back off, delaying the connections that do fit).
func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ll.l.open.Add(1) > ll.l.max {
			ll.l.open.Add(-1)
			ll.l.rejected.Inc()
			_ = c.Close()
			continue
		}
		return &limitConn{Conn: c, l: ll.l}, nil
	}
}

// limitConn gives its slot back on the first Close; servers may close a
// connection more than once.
type limitConn struct {
	net.Conn
	l      *connLimit
	closed atomic.Bool
}

func (c *limitConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.open.Add(-1)
	}
	return c.Conn.Close()
}

// httpErrorLog takes net/http's own messages (a failed TLS handshake, a
// silent connection timed out, a malformed request) into the server's log
// at Debug: a client can cause one per connection, so at the default
// level they would let it flood the log (net/http writes them to stderr).
type httpErrorLog struct{ logger *slog.Logger }

func (w httpErrorLog) Write(p []byte) (int, error) {
	w.logger.Debug("HTTP connection error", "listener", listenerHTTP, "err", strings.TrimSpace(string(p)))
	return len(p), nil
}
