package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gateProxy forwards TCP connections from a fixed loopback address to
// target; while closed it accepts and drops every connection at once, as
// an unreachable replica does, so the collector behind it backs off.
type gateProxy struct {
	addr, target string
	closed       atomic.Bool
	lis          net.Listener
	wg           sync.WaitGroup
	mu           sync.Mutex
	conns        map[net.Conn]struct{}
}

func newGateProxy(t *testing.T, target string) *gateProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &gateProxy{addr: lis.Addr().String(), target: target, lis: lis, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		_ = lis.Close()
		p.dropAll()
		p.wg.Wait()
	})
	return p
}

func (p *gateProxy) serve() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		if p.closed.Load() {
			_ = c.Close()
			continue
		}
		p.wg.Go(func() { p.pipe(c) })
	}
}

func (p *gateProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *gateProxy) pipe(c net.Conn) {
	b, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.track(c, true)
	p.track(b, true)
	var wg sync.WaitGroup
	for _, d := range [][2]net.Conn{{c, b}, {b, c}} {
		wg.Go(func() {
			_, _ = io.Copy(d[0], d[1])
			_ = d[0].Close()
			_ = d[1].Close()
		})
	}
	wg.Wait()
	p.track(c, false)
	p.track(b, false)
}

// dropAll closes every forwarded connection.
func (p *gateProxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// TestHAFanoutLateCollector makes the reconnect gap of TestHAFanout
// deterministic: the second pod's fan-out collector reaches replica 1
// through a proxy that refuses connections for lateBy after replica 1
// restarts, far longer than its 2 s warm-up. Without --ready-peers the
// restarted replica turns ready with the first collector's half of the
// load (E2E_HA_NO_PEERS=1 shows it: this test then fails); with it the
// replica stays not ready (KEDA gets Unavailable) until the late collector
// has delivered, and its first answers equal the survivor's.
func TestHAFanoutLateCollector(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an OpenTelemetry Collector and runs real processes")
	}
	colBin, scalerBin := tools(t)
	const warmup, lateBy = 2 * time.Second, 8 * time.Second
	reps := []*replica{
		newReplica(t, "keda-otel-scaler-0", "--ready-after-fresh", "--warmup="+warmup.String()),
		newReplica(t, "keda-otel-scaler-1", "--ready-after-fresh", "--warmup="+warmup.String()),
	}
	withPeers := os.Getenv("E2E_HA_NO_PEERS") == ""
	if withPeers {
		for _, r := range reps {
			r.args = append(r.args, "--ready-peers=http://"+reps[0].http+",http://"+reps[1].http)
		}
	}
	for _, r := range reps {
		r.start(t, scalerBin, r.name)
	}
	survivor, victim := reps[0], reps[1]
	late := newGateProxy(t, victim.otlp)
	var fanoutAddrs []string
	for i, ep := range []string{victim.otlp, late.addr} {
		addr := freeAddr(t)
		cfg := layerConfig(t, fanoutGolden, addr, map[string]string{"otlp/keda-otel-scaler-0": survivor.otlp, "otlp/keda-otel-scaler-1": ep})
		startProc(t, fmt.Sprintf("fanout-%d", i), colBin, []string{"--config=file:" + cfg}, []string{"PATH=" + os.Getenv("PATH")})
		fanoutAddrs = append(fanoutAddrs, addr)
	}
	const ns, deploy = "ns", "d"
	running := kserveRef(ns, deploy, "vllm:num_requests_running", "4", nil)
	sidecar := sidecarConfig(t, "none")
	fixture := loadFixture(t)
	pods := []*pod{
		startPod(t, colBin, sidecar, fanoutAddrs[0], ns, deploy, "d-1", fixture, 2),
		startPod(t, colBin, sidecar, fanoutAddrs[1], ns, deploy, "d-2", fixture, 3),
	}
	waitScraped(t, pods, 60*time.Second)
	for _, r := range reps {
		r.waitReady(t, 60*time.Second)
		r.client.waitValue(t, running, 2+3, 30*time.Second)
	}

	// Replica 1 dies; the second collector's path to it stays shut for
	// lateBy after it is back.
	victim.p.Kill()
	late.closed.Store(true)
	late.dropAll()
	time.Sleep(2 * scrapeInterval)
	restarted := time.Now()
	victim.start(t, scalerBin, victim.name+"-restarted")
	reopen := time.AfterFunc(lateBy, func() { late.closed.Store(false) })
	defer reopen.Stop()

	var unavailable int
	for victim.readyz() != http.StatusOK {
		require.Less(t, time.Since(restarted), 90*time.Second, "restarted replica not ready\n%s", victim.p.tail(20))
		ctx, cancel := ctx5s()
		_, err := victim.client.value(ctx, running)
		cancel()
		if err != nil {
			require.Equal(t, codes.Unavailable, status.Code(err), "a warming replica answers Unavailable: %v", err)
			unavailable++
		}
		time.Sleep(50 * time.Millisecond)
	}
	readyAfter := time.Since(restarted)
	for range 10 {
		ctx, cancel := ctx5s()
		v, err := victim.client.value(ctx, running)
		cancel()
		require.NoError(t, err, "a ready replica answers")
		ctx, cancel = ctx5s()
		sv, serr := survivor.client.value(ctx, running)
		cancel()
		require.NoError(t, serr)
		require.InDelta(t, sv, v, 0, "the restarted replica answers part of the load once ready (ready %s after its restart, the late collector's path shut for %s)",
			readyAfter.Round(10*time.Millisecond), lateBy)
		time.Sleep(50 * time.Millisecond)
	}
	assert.GreaterOrEqual(t, readyAfter, lateBy, "ready only after the late collector could reach it")
	gate := "--ready-peers off (E2E_HA_NO_PEERS)"
	if withPeers {
		log := victim.p.log()
		clock := logTime(t, log, "Warm-up clock ended; waiting to catch up with ready peers")
		caught := logTime(t, log, "Caught up with the ready peers; warm-up ended")
		require.False(t, clock.IsZero() || caught.IsZero(), "caught up, not by timeout\n%s", victim.p.tail(20))
		gate = fmt.Sprintf("--ready-peers held it %s after its warm-up clock ended", caught.Sub(clock).Round(10*time.Millisecond))
	}
	line := fmt.Sprintf("HA: with one collector's path shut for %s, the restarted replica was ready %s after its start (%s); %d calls answered Unavailable before",
		lateBy, readyAfter.Round(10*time.Millisecond), gate, unavailable)
	t.Log(line)
	fmt.Fprintln(os.Stderr, "E2E REPORT: "+line)
}
