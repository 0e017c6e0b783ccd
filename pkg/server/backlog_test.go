package server

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
)

// TestStalledStreamBacklogBounded is issue #12's "stalled KEDA stream
// readers still buffer up to gRPC's per-stream write quota": a client
// opens --max-streams StreamIsActive streams on one connection with a
// zero stream window (it answers pings, so the connection stays healthy,
// but no stream data can ever leave the server), beside one healthy
// stream on the same trigger. Over many edges the server's heap must not
// grow with the number of edges: each stalled stream holds at most one
// queued push, so the growth from the 10th to the last edge stays under
// 1 KiB per stream. Before, every edge queued another push (about 140 B of
// queue entries) on every stalled stream until gRPC's 64 KiB quota of
// them: 1.3 MB per stream, 13 GB at the default --max-streams. The
// healthy stream gets every edge, and a stalled stream that opens its
// window receives what it missed (its queued push and the deferred one).
func TestStalledStreamBacklogBounded(t *testing.T) {
	const stalled, warm, edges = 200, 10, 210
	e := startHostile(t, func(c *config.Config) { c.Scaler.MaxStreams = stalled + 1 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs, err := e.keda.StreamIsActive(ctx, soRef(sumX))
	require.NoError(t, err)
	got := recvTimes(hs)
	e.waitOpen(t, 1)

	req, err := proto.Marshal(soRef(sumX))
	require.NoError(t, err)
	raw := dialRawH2(t, e.s.Addrs().Scaler, 0)
	for i := range stalled {
		raw.call(t, uint32(2*i+1), "/externalscaler.ExternalScaler/StreamIsActive", req) //nolint:gosec // i < stalled
	}
	e.waitOpen(t, stalled+1)

	// The heap alone: goroutine stacks are bounded by the streams' count
	// and, under the race detector, grow by a few KiB here and there.
	lat := e.edgeLatencies(t, got, warm)
	mid := heapBytes()
	lat = append(lat, e.edgeLatencies(t, got, edges-warm)...)
	growth := heapBytes() - mid
	delivered := 0
	for _, d := range lat {
		if d > 0 {
			delivered++
		}
	}
	deferred := counter(t, e.reg, "keda_otel_scaler_scaler_pushes_deferred_total", nil)
	t.Logf("%d stalled streams, edges %d to %d: server heap %+d KiB (%+.0f B per stream); pushes deferred %v",
		stalled, warm, edges, growth>>10, float64(growth)/stalled, deferred)
	assert.Equal(t, edges, delivered, "the healthy stream got every edge")
	assert.Zero(t, raw.data.Load(), "no stream data passed the zero window")
	assert.GreaterOrEqual(t, deferred, float64(stalled), "every stalled stream deferred pushes")
	assert.Less(t, growth, int64(stalled<<10), "heap does not grow with edges: at most one queued push per stalled stream")

	// Leave the trigger active and let one stalled stream read: it gets its
	// queued push, then the deferred one (7 bytes each on the wire).
	e.push(t, "x", 9)
	<-got
	raw.grant(t, 1, 1<<10)
	for deadline := time.Now().Add(30 * time.Second); raw.data.Load() < 14; time.Sleep(time.Millisecond) {
		require.True(t, time.Now().Before(deadline), "stream 1 received %d bytes after opening its window", raw.data.Load())
	}
}

// heapBytes is the live heap after a full collection.
func heapBytes() int64 {
	runtime.GC() // twice: the first only moves sync.Pool contents to the victim cache
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc) //nolint:gosec // far below 2^63
}
