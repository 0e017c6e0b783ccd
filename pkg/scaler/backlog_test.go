package scaler

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestStreamBacklogDefersPush: while the client has not taken the previous
// push (the stream's gRPC write queue is not empty), a new edge queues
// nothing: the push is deferred, counted once, and later edges coalesce
// into it. When the client takes the queued one, the deferred push is sent
// once, within the backoff; a deferred edge that lapsed (inactive when the
// stream looks again) is dropped, as at the end of a hold-off.
func TestStreamBacklogDefersPush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{})
		quota := new(int32) // stands in for gRPC's write quota
		atomic.StoreInt32(quota, 100)
		e.s.backlogOf = func(context.Context) backlog { return backlog{quota: quota, full: 100} }
		fs, _ := e.open(t, sumX)
		synctest.Wait()
		edge := func() {
			time.Sleep(time.Second)
			e.push(t, "x", 9)
			synctest.Wait()
			time.Sleep(time.Second)
			e.push(t, "x", 0)
			synctest.Wait()
		}
		edge()
		require.Equal(t, []bool{true}, fs.got(), "nothing queued: sent at once")
		deferred := func() float64 { return testutil.ToFloat64(e.s.m.deferred) }

		atomic.StoreInt32(quota, 93) // the first push (7 bytes) still waits for the client
		for range 5 {
			edge()
		}
		assert.Equal(t, []bool{true}, fs.got(), "nothing queued behind an untaken push; lapsed edges are dropped")
		d := deferred()
		assert.True(t, d >= 1 && d <= 5, "each edge deferred (or coalesced into a pending one): %v", d)

		time.Sleep(3 * backlogWaitLongest) // the last edge's deferral has lapsed
		synctest.Wait()
		e.push(t, "x", 9) // active, and stays active
		synctest.Wait()
		time.Sleep(10 * time.Second) // many backoff rounds: the stream keeps looking
		synctest.Wait()
		assert.Equal(t, []bool{true}, fs.got())
		assert.InDelta(t, d+1, deferred(), 0, "one deferred push, however many times the stream looked")

		atomic.StoreInt32(quota, 100) // the client took it
		time.Sleep(2 * backlogWaitLongest)
		synctest.Wait()
		assert.Equal(t, []bool{true, true}, fs.got(), "the deferred push is sent once the client took the previous one")
		assert.InDelta(t, d+1, deferred(), 0)

		e.push(t, "x", 0)
		synctest.Wait()
		edge()
		assert.Equal(t, []bool{true, true, true}, fs.got(), "then edges are pushed at once again")
	})
}

// probeScaler is an ExternalScaler whose StreamIsActive reports what
// streamBacklog finds on the real gRPC server stream.
type probeScaler struct {
	externalscaler.UnimplementedExternalScalerServer
	found chan backlog
}

func (p *probeScaler) StreamIsActive(_ *externalscaler.ScaledObjectRef, st grpc.ServerStreamingServer[externalscaler.IsActiveResponse]) error {
	b := streamBacklog(st.Context())
	queuedBefore := b.queued()
	if err := st.Send(&externalscaler.IsActiveResponse{Result: true}); err != nil {
		return err
	}
	if queuedBefore {
		b = backlog{} // reported as not found: nothing may be queued before the first Send
	}
	p.found <- b
	return nil
}

// TestStreamBacklogProbe pins streamBacklog to the grpc-go this module
// builds with: on a real server stream it finds the write quota, full
// (gRPC's 64 KiB) before the first Send. A grpc-go upgrade that moves the
// quota fails here; without the probe, stalled streams would again queue
// up to gRPC's quota each (backlog.go).
func TestStreamBacklogProbe(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	p := &probeScaler{found: make(chan backlog, 1)}
	externalscaler.RegisterExternalScalerServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	st, err := externalscaler.NewExternalScalerClient(conn).StreamIsActive(t.Context(), ref(sumX))
	require.NoError(t, err)
	_, err = st.Recv()
	require.NoError(t, err)
	b := <-p.found
	require.NotNil(t, b.quota, "streamBacklog found grpc-go's write quota")
	assert.Equal(t, int32(64<<10), b.full, "gRPC's per-stream write quota")
}
