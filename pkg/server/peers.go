package server

// The --ready-peers gate (README "Scaling out", docs/operations.md "High
// availability"). An HA replica is fed by every pod's fan-out collector,
// and after the replica restarts each collector reconnects on its own
// schedule (gRPC's reconnect backoff, up to 2 minutes, plus the exporter's
// retry interval). --ready-after-fresh starts the warm-up clock at the
// first fresh sample, which the FIRST collector to reconnect delivers; a
// replica whose clock ran out before the others reconnected would answer
// KEDA with part of the load. With --ready-peers the scaler holds warm-up
// open when its clock runs out (scaler.Settings.CatchUp) and this gate
// polls the peers' GET /api/v1/status/freshness about once a second: warm-up
// ends when, on two polls in a row, this replica's count of fresh series is
// at least every ready peer's count less max(1, 0.5 %) of it. A peer that
// is unreachable, answers an error or garbage, or is not ready itself (the
// replica itself, if listed; peers that restarted together) is ignored, so
// with no ready peer the gate passes on its second poll. After
// --ready-peers-timeout it passes anyway, logged at warn and counted.
//
// Bounds: one poll of a peer takes at most peerPollTimeout and reads at
// most peerMaxBody bytes; a round polls the peers (at most
// config.MaxReadyPeers) in parallel and waits for all of them. The gate's
// goroutine is started by the scaler's CatchUp call, ends when the gate
// passes, and is stopped and waited for by Shutdown (close).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
)

// freshnessPath is the read-only endpoint the peers poll.
const freshnessPath = "/api/v1/status/freshness"

const (
	// peerPollInterval is the time between two rounds of polls.
	peerPollInterval = time.Second
	// peerPollTimeout bounds one poll of one peer: connect, TLS, answer.
	peerPollTimeout = 2 * time.Second
	// peerMaxBody is the most bytes read of a peer's answer (a real one
	// is under 100 B); a longer one is ignored as garbage.
	peerMaxBody = 64 << 10
	// peerPasses is how many rounds in a row must find this replica
	// caught up: one round could fall between two collectors' batches.
	peerPasses = 2
	// freshCacheFor is how long a fresh-series count is reused by the
	// endpoint: counting walks every series, so however often the
	// endpoint is asked the store is walked at most once per period.
	freshCacheFor = 500 * time.Millisecond
)

// peerTolerance is how many fewer fresh series than a ready peer this
// replica may hold and still count as caught up: max(1, 0.5 %) of the
// peer's count, for series that begin or end between the two counts.
func peerTolerance(peer int) int { return max(1, peer/200) }

// freshnessData is the endpoint's data, in Prometheus's envelope
// {"status":"success","data":{...}}.
type freshnessData struct {
	Ready       bool `json:"ready"`
	FreshSeries int  `json:"freshSeries"`
}

// freshCounter counts the store's fresh series at most once per
// freshCacheFor.
type freshCounter struct {
	count func() int
	now   func() time.Time

	mu sync.Mutex // serialises counting; guards at and n
	at time.Time
	n  int
}

func (c *freshCounter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.at.IsZero() || now.Sub(c.at) >= freshCacheFor || now.Before(c.at) {
		c.n, c.at = c.count(), now
	}
	return c.n
}

// fresh returns the count without the cache, for the gate's own side.
func (c *freshCounter) fresh() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n, c.at = c.count(), c.now()
	return c.n
}

// freshnessHandler serves GET freshnessPath: whether this replica is
// ready and how many fresh series it holds.
func (s *Server) freshnessHandler(w http.ResponseWriter, _ *http.Request) {
	body, _ := json.Marshal(struct {
		Status string        `json:"status"`
		Data   freshnessData `json:"data"`
	}{"success", freshnessData{Ready: s.ready.Load(), FreshSeries: s.fresh.get()}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(body, '\n'))
}

// peerMetrics are the gate's counters.
type peerMetrics struct {
	timeouts prometheus.Counter
	failures *prometheus.CounterVec
}

func newPeerMetrics(reg prometheus.Registerer) *peerMetrics {
	m := &peerMetrics{
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_ready_peers_timeouts_total",
			Help: "Times this replica turned ready after --ready-peers-timeout without having caught up with its ready peers.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_ready_peer_poll_failures_total",
			Help: "Polls of a --ready-peers peer that were ignored because they failed, by reason (unreachable, status, body).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.timeouts, m.failures)
	return m
}

// peerGate polls the peers once the scaler's warm-up clock ran out.
type peerGate struct {
	peers    []string // freshness URLs
	client   *http.Client
	self     func() int
	timeout  time.Duration
	interval time.Duration
	// pollTimeout bounds one poll (peerPollTimeout).
	pollTimeout time.Duration
	logger      *slog.Logger
	m           *peerMetrics
	// onPanic records a panic the gate recovered (the server's panic
	// boundary counter); nil in tests that do not look.
	onPanic func(p any, stack []byte)

	// ctx ends the polls and the goroutine; close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex // guards started and closed
	started bool
	closed  bool
	wg      sync.WaitGroup
}

// newPeerGate builds the gate for cfg's --ready-peers; nil when none are
// set or --ready-after-fresh is off. TLS files are read here, so a
// missing one fails the start with its flag.
func newPeerGate(cfg config.Config, self func() int, set Settings, reg prometheus.Registerer) (*peerGate, error) {
	if len(cfg.Scaler.ReadyPeers) == 0 || !cfg.Scaler.ReadyAfterFresh {
		return nil, nil
	}
	tlsCfg, err := peerTLSConfig(cfg.Scaler.ReadyPeersTLS)
	if err != nil {
		return nil, err
	}
	interval, pollTimeout := peerPollInterval, peerPollTimeout
	if set.peerInterval > 0 {
		interval = set.peerInterval
	}
	if set.peerPollTimeout > 0 {
		pollTimeout = set.peerPollTimeout
	}
	g := &peerGate{
		client: &http.Client{
			Transport: &http.Transport{
				TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true,
				TLSHandshakeTimeout: pollTimeout, ResponseHeaderTimeout: pollTimeout,
				MaxIdleConnsPerHost: 1, IdleConnTimeout: 2 * interval,
			},
			Timeout:       pollTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		self: self, timeout: cfg.Scaler.ReadyPeersTimeout, interval: interval, pollTimeout: pollTimeout,
		logger: set.Logger.With("component", "ready_peers"), m: newPeerMetrics(reg),
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	for _, p := range cfg.Scaler.ReadyPeers {
		g.peers = append(g.peers, strings.TrimSuffix(p, "/")+freshnessPath)
	}
	return g, nil
}

// peerTLSConfig is the client TLS of the polls; nil (Go's defaults: the
// system roots, each URL's host) when no flag is set.
func peerTLSConfig(t config.PeerTLS) (*tls.Config, error) {
	if t == (config.PeerTLS{}) {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--ready-peers-ca-file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ready-peers-ca-file %s: no PEM certificate", t.CAFile)
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--ready-peers-cert-file/--ready-peers-key-file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// begin is the scaler's CatchUp: it starts the polling goroutine once,
// unless the gate was closed.
func (g *peerGate) begin(done func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started || g.closed {
		return
	}
	g.started = true
	g.wg.Go(func() { g.run(done) })
}

// close stops the goroutine and waits for it; idempotent.
func (g *peerGate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
	g.client.CloseIdleConnections()
}

func (g *peerGate) run(done func()) {
	defer g.client.CloseIdleConnections()
	// A panic in the check (counting our own series, say) fails open, as
	// the timeout does: a broken check must not keep the replica out of
	// service. The polls recover their own (poll's caller in round).
	finished := false
	defer func() {
		if p := recover(); p != nil {
			g.recovered(p)
			if !finished {
				g.logger.Warn("Ready-peers check failed; ready anyway")
				done()
			}
		}
	}()
	ctx := g.ctx
	deadline := time.NewTimer(g.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(g.interval)
	defer tick.Stop()
	passes := 0
	for {
		behind := g.round(ctx)
		if ctx.Err() != nil {
			return
		}
		if behind == "" {
			passes++
		} else {
			passes = 0
		}
		if passes >= peerPasses {
			g.logger.Info("Caught up with the ready peers; warm-up ended")
			finished = true
			done()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			g.m.timeouts.Inc()
			g.logger.Warn("Not caught up with the ready peers within --ready-peers-timeout; ready anyway", "timeout", g.timeout, "behind", behind)
			finished = true
			done()
			return
		case <-tick.C:
		}
	}
}

// peerAnswer is one poll's outcome.
type peerAnswer struct {
	url   string
	data  freshnessData
	err   error
	fails string // failure reason label
}

// round polls every peer in parallel and returns "" when this replica is
// caught up with every ready one, else a description of the first it is
// behind.
func (g *peerGate) round(ctx context.Context) string {
	answers := make([]peerAnswer, len(g.peers))
	var wg sync.WaitGroup
	for i, u := range g.peers {
		wg.Go(func() {
			// A panic while reading a peer's answer ignores that peer.
			defer func() {
				if p := recover(); p != nil {
					g.recovered(p)
					answers[i] = peerAnswer{url: u, err: fmt.Errorf("poll panicked: %v", p), fails: "panic"}
				}
			}()
			answers[i] = g.poll(ctx, u)
		})
	}
	wg.Wait()
	own := g.self() // after the peers answered: theirs are no newer than ours
	for _, a := range answers {
		switch {
		case a.err != nil:
			if ctx.Err() == nil {
				g.m.failures.WithLabelValues(a.fails).Inc()
				g.logger.Debug("Peer ignored", "peer", a.url, "err", a.err)
			}
		case !a.data.Ready:
		case own < a.data.FreshSeries-peerTolerance(a.data.FreshSeries):
			return fmt.Sprintf("%d fresh series here, %d on %s", own, a.data.FreshSeries, a.url)
		}
	}
	return ""
}

// recovered hands a recovered panic to onPanic with its stack.
func (g *peerGate) recovered(p any) {
	if g.onPanic != nil {
		g.onPanic(p, debug.Stack())
	}
}

// poll asks one peer, bounded by peerPollTimeout and peerMaxBody.
func (g *peerGate) poll(ctx context.Context, u string) peerAnswer {
	a := peerAnswer{url: u}
	ctx, cancel := context.WithTimeout(ctx, g.pollTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		a.err, a.fails = err, "unreachable"
		return a
	}
	resp, err := g.client.Do(req)
	if err != nil {
		a.err, a.fails = err, "unreachable"
		return a
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		a.err, a.fails = fmt.Errorf("status %d", resp.StatusCode), "status"
		return a
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, peerMaxBody+1))
	switch {
	case err != nil:
		a.err, a.fails = err, "unreachable"
		return a
	case len(body) > peerMaxBody:
		a.err, a.fails = fmt.Errorf("answer over %d bytes", peerMaxBody), "body"
		return a
	}
	var env struct {
		Status string         `json:"status"`
		Data   *freshnessData `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		a.err, a.fails = fmt.Errorf("decode: %w", err), "body"
		return a
	}
	if env.Status != "success" || env.Data == nil || env.Data.FreshSeries < 0 {
		a.err, a.fails = errors.New("not a freshness answer"), "body"
		return a
	}
	a.data = *env.Data
	return a
}
