package scaler

import (
	"context"
	"reflect"
	"sync/atomic"
	"unsafe"

	"google.golang.org/grpc"
)

// Push backlog (issue #12, "stalled KEDA stream readers still buffer up to
// gRPC's per-stream write quota"). Send on a server stream returns once
// gRPC has queued the message; the message leaves the process only when
// the client's HTTP/2 stream window lets it, which for a client that
// stopped reading (or advertised a zero window) is never. gRPC blocks
// Send only after 64 KiB of queued messages: 9,362 pushes of 7 bytes, each
// holding about 140 B of queue entries, so 1.3 MB per stalled stream and
// 13 GB at --max-streams 10,000 (measured: TestStalledStreamsMemoryBounded
// in pkg/server). Every push says the same thing ("active now"), so the
// stream goroutine does not queue a second one behind one the client has
// not taken: it defers the push, keeping the mailbox's latest state, and
// looks again with backoff. A stalled stream then holds at most one queued
// push, whatever the number of edges.
//
// gRPC exposes no per-stream signal for "the last message was written",
// but its write quota is exactly that: the stream's quota (64 KiB) less
// the bytes queued and not yet handed to the connection, replenished by
// the transport's writer as it writes them. The quota is not exported, so
// streamBacklog finds it by reflection on grpc-go's server stream
// (internal/transport.ServerStream.Stream.wq.quota, an int32 that grpc-go
// reads and writes only atomically) and reads it atomically. If a grpc-go
// upgrade moves it, streamBacklog finds nothing and pushes behave as
// before (bounded by gRPC's own quota); TestStreamBacklogProbe fails on
// such an upgrade so the change is seen.

// backlog observes one server stream's queued, unwritten bytes.
type backlog struct {
	quota *int32 // the stream's write quota; nil when it was not found
	full  int32  // its value with nothing queued, read before the first Send
}

// transportStreamType is grpc-go's server stream type, as named by reflect.
const transportStreamType = "google.golang.org/grpc/internal/transport.ServerStream"

// streamBacklog returns the backlog of the gRPC server stream whose
// context is ctx. Call it before the stream's first Send.
func streamBacklog(ctx context.Context) backlog {
	ts := grpc.ServerTransportStreamFromContext(ctx)
	if ts == nil {
		return backlog{}
	}
	v := reflect.ValueOf(ts)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return backlog{}
	}
	v = v.Elem()
	if v.Kind() != reflect.Struct || v.Type().PkgPath()+"."+v.Type().Name() != transportStreamType {
		return backlog{}
	}
	for _, name := range []string{"Stream", "wq", "quota"} {
		if v.Kind() != reflect.Struct {
			return backlog{}
		}
		if v = v.FieldByName(name); !v.IsValid() {
			return backlog{}
		}
	}
	if v.Kind() != reflect.Int32 || !v.CanAddr() {
		return backlog{}
	}
	q := (*int32)(unsafe.Pointer(v.UnsafeAddr())) //nolint:gosec // grpc-go's atomic write quota, read atomically; see above
	return backlog{quota: q, full: atomic.LoadInt32(q)}
}

// queued reports whether an earlier message is still waiting for the
// client's window. It is false when the quota was not found.
func (b backlog) queued() bool { return b.quota != nil && atomic.LoadInt32(b.quota) < b.full }
