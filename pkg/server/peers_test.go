package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

// seriesMetrics are n fresh series of queue_depth (pods p0 … pn-1).
func seriesMetrics(n int) pmetric.Metrics {
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("queue_depth")
	g := m.SetEmptyGauge()
	for i := range n {
		dp := g.DataPoints().AppendEmpty()
		dp.Attributes().PutStr("pod", fmt.Sprintf("p%d", i))
		dp.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
		dp.SetDoubleValue(1)
	}
	return md
}

// pushSeries stores n fresh series over OTLP/HTTP.
func pushSeries(t *testing.T, s *Server, n int) {
	t.Helper()
	rejected, msg := servertest.PostOTLP(t, s.Addrs().HTTP, seriesMetrics(n))
	require.Zero(t, rejected, msg)
}

// freshness reads a server's freshness endpoint.
func freshness(t *testing.T, s *Server) freshnessData {
	t.Helper()
	code, body := get(t, "http://"+s.Addrs().HTTP+freshnessPath)
	require.Equal(t, http.StatusOK, code, body)
	var env struct {
		Status string        `json:"status"`
		Data   freshnessData `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &env), body)
	require.Equal(t, "success", env.Status)
	return env.Data
}

// TestFreshnessEndpoint: GET /api/v1/status/freshness reports readiness
// and the fresh series, in Prometheus's envelope.
func TestFreshnessEndpoint(t *testing.T) {
	cfg := servertest.Config()
	cfg.Scaler.ReadyAfterFresh = true
	cfg.Scaler.Warmup = time.Hour
	s := servertest.Start(t, mustNew(t, cfg, Settings{}))
	assert.Equal(t, freshnessData{Ready: false, FreshSeries: 0}, freshness(t, s))
	pushSeries(t, s, 3)
	require.Eventually(t, func() bool { return freshness(t, s).FreshSeries == 3 }, 5*time.Second, 10*time.Millisecond,
		"the count is refreshed within freshCacheFor")
	assert.False(t, freshness(t, s).Ready, "warming up")

	cfg = servertest.Config()
	s = servertest.Start(t, mustNew(t, cfg, Settings{}))
	pushSeries(t, s, 2)
	assert.Equal(t, freshnessData{Ready: true, FreshSeries: 2}, freshness(t, s))
}

func mustNew(t *testing.T, cfg config.Config, set Settings) *Server {
	t.Helper()
	s, err := New(cfg, set)
	require.NoError(t, err)
	return s
}

// fakePeer is a peer's HTTP listener on 127.0.0.1:0 answering the
// freshness endpoint with what answer returns; it counts the polls.
type fakePeer struct {
	*httptest.Server
	polls atomic.Int64
}

func newFakePeer(t *testing.T, answer func(w http.ResponseWriter)) *fakePeer {
	t.Helper()
	p := &fakePeer{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != freshnessPath {
			http.NotFound(w, r)
			return
		}
		p.polls.Add(1)
		answer(w)
	}))
	t.Cleanup(p.Close)
	return p
}

func peerJSON(ready bool, n int) string {
	return fmt.Sprintf(`{"status":"success","data":{"ready":%v,"freshSeries":%d}}`, ready, n)
}

// closedURL is an http:// URL nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr
}

// peerConfig is a replica with --ready-after-fresh, no warm-up (its clock
// runs out at the first fresh sample) and peers.
func peerConfig(peers ...string) config.Config {
	cfg := servertest.Config()
	cfg.Scaler.ReadyAfterFresh = true
	cfg.Scaler.ReadyPeers = peers
	return cfg
}

// TestReadyPeers: after its warm-up clock a replica stays not ready (503,
// GetMetrics Unavailable) while a ready peer holds more fresh series than
// it, less the tolerance, and turns ready after two polls in a row find it
// caught up. Peers that are unreachable, not ready, answer an error,
// garbage or an oversized answer are ignored and counted.
func TestReadyPeers(t *testing.T) {
	var ahead atomic.Int64
	ahead.Store(10)
	var afterCatchUp atomic.Int64 // polls answered since the peer stopped being ahead
	leader := newFakePeer(t, func(w http.ResponseWriter) {
		n := ahead.Load()
		if n <= 4 {
			afterCatchUp.Add(1)
		}
		_, _ = fmt.Fprint(w, peerJSON(true, int(n)))
	})
	notReady := newFakePeer(t, func(w http.ResponseWriter) { _, _ = fmt.Fprint(w, peerJSON(false, 1000)) })
	failing := newFakePeer(t, func(w http.ResponseWriter) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprint(w, peerJSON(true, 1000))
	})
	garbage := newFakePeer(t, func(w http.ResponseWriter) { _, _ = fmt.Fprint(w, `{"status":"success","data":`) })
	huge := newFakePeer(t, func(w http.ResponseWriter) {
		// A well-formed answer behind 1 MiB of padding: over the cap.
		_, _ = fmt.Fprint(w, strings.Repeat(" ", 1<<20)+peerJSON(true, 1000))
	})
	reg := newRegistry()
	cfg := peerConfig(leader.URL, notReady.URL+"/", failing.URL, garbage.URL, huge.URL, closedURL(t))
	s := servertest.Start(t, mustNew(t, cfg, Settings{Registry: reg, peerInterval: 20 * time.Millisecond, peerPollTimeout: 500 * time.Millisecond}))
	readyz := func() int { c, _ := get(t, "http://"+s.Addrs().HTTP+"/readyz"); return c }

	pushSeries(t, s, 3) // the clock (no warm-up) runs out at once
	require.Eventually(t, func() bool { return leader.polls.Load() >= 5 }, 10*time.Second, 10*time.Millisecond, "the gate polls")
	assert.Equal(t, http.StatusServiceUnavailable, readyz(), "3 fresh series against a ready peer's 10")
	_, err := getMetrics(t, s)
	require.Equal(t, codes.Unavailable, status.Code(err))
	assert.Contains(t, err.Error(), "--ready-peers")

	ahead.Store(4) // 3 >= 4 - max(1, 0.5 %): caught up
	require.Eventually(t, func() bool { return readyz() == http.StatusOK }, 10*time.Second, 5*time.Millisecond)
	assert.GreaterOrEqual(t, afterCatchUp.Load(), int64(2), "ready only after two polls found it caught up")
	v, err := getMetrics(t, s)
	require.NoError(t, err)
	assert.InDelta(t, 3, v, 0)
	assert.True(t, freshness(t, s).Ready)

	for _, p := range []*fakePeer{notReady, failing, garbage, huge} {
		assert.Positive(t, p.polls.Load(), p.URL)
	}
	for _, reason := range []string{"unreachable", "status", "body"} {
		assert.Positive(t, counter(t, reg, "keda_otel_scaler_ready_peer_poll_failures_total", map[string]string{"reason": reason}), reason)
	}
	assert.Zero(t, counter(t, reg, "keda_otel_scaler_ready_peers_timeouts_total", nil))

	// The gate stopped once ready: no poll reaches the peers any more.
	n := leader.polls.Load()
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, n, leader.polls.Load(), "the poller stopped")
}

// TestReadyPeersTimeout: a replica that never catches up turns ready
// --ready-peers-timeout after its clock ran out, logged and counted.
func TestReadyPeersTimeout(t *testing.T) {
	leader := newFakePeer(t, func(w http.ResponseWriter) { _, _ = fmt.Fprint(w, peerJSON(true, 1000)) })
	reg := newRegistry()
	var logs servertest.Logs
	cfg := peerConfig(leader.URL)
	cfg.Scaler.ReadyPeersTimeout = 300 * time.Millisecond
	s := servertest.Start(t, mustNew(t, cfg, Settings{Registry: reg, Logger: slogTo(&logs), peerInterval: 20 * time.Millisecond}))
	pushSeries(t, s, 1)
	require.Eventually(t, func() bool { return freshness(t, s).Ready }, 10*time.Second, 10*time.Millisecond)
	assert.GreaterOrEqual(t, leader.polls.Load(), int64(5), "it polled until the timeout")
	assert.InDelta(t, 1, counter(t, reg, "keda_otel_scaler_ready_peers_timeouts_total", nil), 0)
	assert.Contains(t, logs.String(), "level=WARN msg=\"Not caught up with the ready peers within --ready-peers-timeout; ready anyway\"")
}

// TestReadyPeersHangingPeer: a peer that accepts and never answers holds
// a poll for the poll timeout only; the gate still decides.
func TestReadyPeersHangingPeer(t *testing.T) {
	release := make(chan struct{})
	hang := newFakePeer(t, func(http.ResponseWriter) { <-release })
	t.Cleanup(func() { close(release) }) // before the server closes (cleanups run last-in first-out)
	cfg := peerConfig(hang.URL)
	s := servertest.Start(t, mustNew(t, cfg, Settings{peerInterval: 20 * time.Millisecond, peerPollTimeout: 100 * time.Millisecond}))
	pushSeries(t, s, 1)
	require.Eventually(t, func() bool { return freshness(t, s).Ready }, 10*time.Second, 10*time.Millisecond)
	assert.GreaterOrEqual(t, hang.polls.Load(), int64(2))
}

// TestReadyPeersTogether: replicas that all start together list every
// replica, themselves included; none is ready when the others poll it,
// so each turns ready after its own warm-up, and a replica started later
// then waits until it holds the ready ones' series.
func TestReadyPeersTogether(t *testing.T) {
	addrs := make([]string, 3)
	for i := range addrs {
		addrs[i] = strings.TrimPrefix(closedURL(t), "http://")
	}
	var urls []string
	for _, a := range addrs {
		urls = append(urls, "http://"+a)
	}
	start := func(i int) *Server {
		cfg := peerConfig(urls...)
		cfg.Server.HTTPAddr = addrs[i]
		return servertest.Start(t, mustNew(t, cfg, Settings{peerInterval: 20 * time.Millisecond}))
	}
	a, b := start(0), start(1)
	pushSeries(t, a, 4)
	pushSeries(t, b, 4)
	for _, s := range []*Server{a, b} {
		require.Eventually(t, func() bool { return freshness(t, s).Ready }, 10*time.Second, 10*time.Millisecond)
	}
	late := start(2)
	pushSeries(t, late, 1)
	time.Sleep(200 * time.Millisecond) // ten polling rounds
	assert.False(t, freshness(t, late).Ready, "1 fresh series against the ready replicas' 4")
	pushSeries(t, late, 4)
	require.Eventually(t, func() bool { return freshness(t, late).Ready }, 10*time.Second, 10*time.Millisecond)
}

// TestReadyPeersTLS: peers whose HTTP listener requires client
// certificates are polled with --ready-peers-ca-file, -cert-file and
// -key-file; without the client certificate the poll fails and the peer
// is ignored (the replica turns ready although it is behind).
func TestReadyPeersTLS(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(caFile, ca.pem, 0o600))
	srvCert, srvKey := ca.issue(t, dir, "server", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.issue(t, dir, "client", x509.ExtKeyUsageClientAuth)

	leaderCfg := servertest.Config()
	leaderCfg.Server.HTTPTLS = config.TLSFiles{CertFile: srvCert, KeyFile: srvKey, ClientCAFile: caFile}
	leader := servertest.Start(t, mustNew(t, leaderCfg, Settings{}))
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{ca.clientCert(t, "feeder")}, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	rejected, msg := servertest.PostOTLPWith(t, &http.Client{Transport: tr}, "https://"+leader.Addrs().HTTP, seriesMetrics(5))
	require.Zero(t, rejected, msg)

	for _, withCert := range []bool{true, false} {
		t.Run(fmt.Sprintf("client certificate=%v", withCert), func(t *testing.T) {
			cfg := peerConfig("https://" + leader.Addrs().HTTP)
			cfg.Scaler.ReadyPeersTLS = config.PeerTLS{CAFile: caFile}
			if withCert {
				cfg.Scaler.ReadyPeersTLS.CertFile, cfg.Scaler.ReadyPeersTLS.KeyFile = cliCert, cliKey
			}
			reg := newRegistry()
			s := servertest.Start(t, mustNew(t, cfg, Settings{Registry: reg, peerInterval: 20 * time.Millisecond}))
			pushSeries(t, s, 1)
			if !withCert {
				require.Eventually(t, func() bool { return freshness(t, s).Ready }, 10*time.Second, 10*time.Millisecond)
				assert.Positive(t, counter(t, reg, "keda_otel_scaler_ready_peer_poll_failures_total", map[string]string{"reason": "unreachable"}))
				return
			}
			time.Sleep(200 * time.Millisecond)
			assert.False(t, freshness(t, s).Ready, "behind the TLS peer's 5 series")
			pushSeries(t, s, 5)
			require.Eventually(t, func() bool { return freshness(t, s).Ready }, 10*time.Second, 10*time.Millisecond)
		})
	}
}

// TestReadyPeersBadTLSFiles: an unreadable file fails New with its flag.
func TestReadyPeersBadTLSFiles(t *testing.T) {
	cfg := peerConfig("https://127.0.0.1:1")
	cfg.Scaler.ReadyPeersTLS.CAFile = filepath.Join(t.TempDir(), "missing.crt")
	_, err := New(cfg, Settings{})
	require.ErrorContains(t, err, "--ready-peers-ca-file")
}

// TestFreshCounterBoundsWalks: however often the endpoint is asked, the
// store is walked at most once per freshCacheFor; the gate's own count is
// always new.
func TestFreshCounterBoundsWalks(t *testing.T) {
	now := time.Unix(1000, 0)
	walks := 0
	c := &freshCounter{count: func() int { walks++; return walks }, now: func() time.Time { return now }}
	for range 1000 {
		assert.Equal(t, 1, c.get())
	}
	now = now.Add(freshCacheFor - time.Millisecond)
	assert.Equal(t, 1, c.get())
	now = now.Add(time.Millisecond)
	assert.Equal(t, 2, c.get())
	assert.Equal(t, 3, c.fresh(), "uncached")
	assert.Equal(t, 3, c.get(), "fresh refreshed the cache")
	now = now.Add(-time.Hour) // a clock stepped back recounts
	assert.Equal(t, 4, c.get())
	assert.Equal(t, 4, walks)
}

// TestReadyPeersPanicFailsOpen: the poller is a goroutine no handler's
// boundary covers. A panic while counting our own series ends the check
// as the timeout does (ready, so a broken check cannot keep the replica
// out of service), and is handed to onPanic (the panics counter in the
// server). Before, the panic ended the process.
func TestReadyPeersPanicFailsOpen(t *testing.T) {
	leader := newFakePeer(t, func(w http.ResponseWriter) { _, _ = fmt.Fprint(w, peerJSON(true, 1000)) })
	var logs servertest.Logs
	g, err := newPeerGate(peerConfig(leader.URL), func() int { panic("injected count panic") },
		Settings{Logger: slogTo(&logs), peerInterval: 10 * time.Millisecond}, newRegistry())
	require.NoError(t, err)
	var recovered atomic.Int32
	g.onPanic = func(p any, stack []byte) {
		assert.Equal(t, "injected count panic", p)
		assert.NotEmpty(t, stack)
		recovered.Add(1)
	}
	done := make(chan struct{})
	g.begin(func() { close(done) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a panicking check never ended warm-up")
	}
	g.close()
	assert.Equal(t, int32(1), recovered.Load())
	assert.Contains(t, logs.String(), "Ready-peers check failed; ready anyway")
}
