package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
	"unsafe"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The OTLP gRPC service is registered with a hand-written descriptor whose
// handler receives the request's raw bytes: the receiver decodes them
// itself, so malformed bytes get InvalidArgument (grpc-go's own codec would
// answer Internal, which senders do not retry either but which reads as
// our bug) and the hot path can walk the wire format without building an
// object tree.
const exportMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

// RawBytes is a message the Codec passes through unchanged.
type RawBytes []byte

// Codec is the server codec for the OTLP listener: RawBytes pass through
// unchanged, every other message (health, reflection) uses protobuf.
type Codec struct{}

var protoCodec = encoding.GetCodecV2(proto.Name)

// Marshal implements encoding.CodecV2.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(*RawBytes); ok {
		return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
	}
	return protoCodec.Marshal(v)
}

// Unmarshal implements encoding.CodecV2: RawBytes get a copy of data.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if b, ok := v.(*RawBytes); ok {
		*b = data.Materialize()
		return nil
	}
	return protoCodec.Unmarshal(data, v)
}

// maxPooledBuf is the largest request buffer kept for reuse; rarer,
// bigger requests are left to the GC so the pool never pins 64 MiB.
const maxPooledBuf = 4 << 20

var bufPool sync.Pool // *[]byte

// getBuf returns an empty buffer of capacity at least n, pooled when one
// of about that size is free (at most twice n, so a small request is not
// handed, and charged for, a big buffer).
func getBuf(n int) []byte {
	if n <= maxPooledBuf {
		if p, ok := bufPool.Get().(*[]byte); ok {
			if c := cap(*p); c >= n && c <= 2*n+minBodyBuf {
				return (*p)[:0]
			}
			bufPool.Put(p)
		}
	}
	return make([]byte, 0, n)
}

func putBuf(b []byte) {
	if cap(b) > 0 && cap(b) <= maxPooledBuf {
		bufPool.Put(&b)
	}
}

// exportMsg is the Export request as the server codec hands it to the
// handler: the encoded request in one contiguous buffer and the share of
// the in-flight byte budget it holds, or why it was refused before it
// was decoded.
type exportMsg struct {
	buf     []byte
	ch      charge
	pooled  bool       // buf came from alloc: free it
	ref     mem.Buffer // buf is this transport buffer: Free it
	refused error      // errOverloaded or errTooLarge
}

// done returns everything the request holds.
func (m *exportMsg) done() {
	switch {
	case m.pooled:
		free(m.buf, &m.ch)
	case m.ref != nil:
		m.ref.Free()
	}
	if m.ch.r != nil {
		m.ch.release()
	}
	*m = exportMsg{}
}

// serverCodec is the OTLP gRPC server's codec (ServerOptions): Export
// requests are passed to the handler undecoded, without a copy where the
// transport's buffer can be kept, and charged to the in-flight byte
// budget; every other message (health, reflection) uses protobuf.
type serverCodec struct{ r *Receiver }

// Marshal implements encoding.CodecV2.
func (serverCodec) Marshal(v any) (mem.BufferSlice, error) { return Codec{}.Marshal(v) }

// Unmarshal implements encoding.CodecV2. It never fails for an Export:
// a refusal is recorded in the message for the handler to answer with
// the right status (a codec error would reach the client as Internal).
func (c serverCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*exportMsg)
	if !ok {
		if len(data) == 1 { // a gzip-compressed health or reflection request
			if ch := c.r.gz.take(data[0].ReadOnlyData()); ch.r != nil {
				ch.release()
			}
		}
		return protoCodec.Unmarshal(data, v)
	}
	m.ch.r = c.r
	if len(data) == 1 {
		b := data[0].ReadOnlyData()
		if m.refused = c.r.gz.refusal(b); m.refused != nil {
			return nil
		}
		if ch := c.r.gz.take(b); ch.r != nil {
			// Inflated by grpcGzip into a buffer of its own: keep it.
			m.buf, m.ch, m.pooled = b, ch, true
			return nil
		}
		// One transport buffer: keep a reference instead of a copy.
		if m.refused = m.ch.add(int64(len(b))); m.refused != nil {
			return nil
		}
		data[0].Ref()
		m.buf, m.ref = b, data[0]
		return nil
	}
	// Several transport buffers (one per HTTP/2 frame): the walker needs
	// the request in one piece.
	n := int64(data.Len())
	buf, err := alloc(n, &m.ch)
	if err != nil {
		m.refused = err
		return nil
	}
	for _, d := range data {
		buf = append(buf, d.ReadOnlyData()...)
	}
	m.buf, m.pooled = buf, true
	return nil
}

// Name implements encoding.CodecV2.
func (serverCodec) Name() string { return proto.Name }

// grpcGzip is the OTLP gRPC server's gzip decompressor (installed with
// grpc.RPCDecompressor, which applies to that server only and takes
// precedence over the process-wide registry that the KEDA listener and
// clients keep using). grpc-go's own inflates every message to the
// receive limit before any handler runs; this one inflates against the
// in-flight byte budget (body.go), and hands its output to serverCodec
// without a copy. The legacy Decompressor interface cannot return a
// status, so a refusal is returned as a sentinel message that
// serverCodec turns back into the error; corrupt input is an error, which
// grpc-go answers with Internal.
type grpcGzip struct {
	r  *Receiver
	mu sync.Mutex
	// held maps each output buffer (its first byte) that Do returned to
	// its charge, until serverCodec.Unmarshal, which grpc-go calls right
	// after Do, takes it.
	held map[*byte]charge
}

// Sentinel outputs of grpcGzip.Do; never decoded.
var (
	overloadedMsg = []byte{0}
	tooLargeMsg   = []byte{0}
)

// Type implements grpc.Decompressor.
func (*grpcGzip) Type() string { return "gzip" }

// Do implements grpc.Decompressor.
func (d *grpcGzip) Do(rd io.Reader) ([]byte, error) {
	ch := charge{r: d.r}
	// grpc-go's own limit (ServerOptions): an output past it would be
	// refused before serverCodec takes it, and its charge lost.
	limit := min(d.r.cfg.MaxRecvSize, 1<<31-1)
	hint := int64(-1)
	if rr, ok := rd.(interface{ Remaining() int }); ok {
		hint = int64(rr.Remaining())
	}
	// The compressed message in one piece (grpc-go's is in frames), for
	// inflate's size hint; gRPC bounds it by MaxRecvSize already.
	src, err := readAll(rd, gzipLimit(limit), hint, true, &ch)
	if err == nil {
		var out []byte
		out, err = inflate(src, limit, &ch)
		free(src, &ch)
		if err == nil {
			if len(out) == 0 {
				free(out, &ch)
				return nil, nil
			}
			d.mu.Lock()
			d.held[&out[0]] = ch
			d.mu.Unlock()
			return out, nil
		}
	}
	ch.release()
	switch {
	case errors.Is(err, errOverloaded):
		return overloadedMsg, nil
	case errors.Is(err, errTooLarge):
		return tooLargeMsg, nil
	}
	return nil, err
}

// take returns the charge of b if Do produced it (the zero charge
// otherwise), and forgets it.
func (d *grpcGzip) take(b []byte) charge {
	if len(b) == 0 {
		return charge{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p := unsafe.SliceData(b)
	ch, ok := d.held[p]
	if ok {
		delete(d.held, p)
	}
	return ch
}

// refusal maps Do's sentinel outputs back to their errors.
func (*grpcGzip) refusal(b []byte) error {
	switch unsafe.SliceData(b) {
	case unsafe.SliceData(overloadedMsg):
		return errOverloaded
	case unsafe.SliceData(tooLargeMsg):
		return errTooLarge
	}
	return nil
}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return proto.Name }

var metricsServiceDesc = grpc.ServiceDesc{
	ServiceName: "opentelemetry.proto.collector.metrics.v1.MetricsService",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Export",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			var in exportMsg
			defer in.done()
			if err := dec(&in); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return srv.(*Receiver).exportRaw(ctx, &in)
			}
			// The server's interceptors (pkg/server's panic boundary) run
			// around Export as around any generated handler.
			return interceptor(ctx, &in, exportInfo(srv), func(ctx context.Context, req any) (any, error) {
				return srv.(*Receiver).exportRaw(ctx, req.(*exportMsg))
			})
		},
	}},
	Metadata: "opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
}

func exportInfo(srv any) *grpc.UnaryServerInfo {
	return &grpc.UnaryServerInfo{Server: srv, FullMethod: exportMethod}
}

// maxConcurrentStreams bounds the Exports one OTLP connection carries at
// once (grpc-go allows 2^32 by default). An exporter runs 10 at a time
// (the Collector's sending queue consumers); more wait at the client.
const maxConcurrentStreams = 100

// ServerOptions are the options the OTLP gRPC server needs: the codec,
// the gzip decompressor that charges the in-flight byte budget, the
// receive limit and the per-connection stream bound. The server
// (pkg/server) and the load test's server (test/load) both build theirs
// from them, so the load test measures the transport production runs.
//
// grpc-go (v1.85) runs the handler first and receives the message when
// the handler asks for it, so the Export handler receives before it
// takes an in-flight slot: a slow sender holds its stream and the bytes
// it has sent, never a slot.
func (r *Receiver) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(serverCodec{r}),
		grpc.RPCDecompressor(r.gz), //nolint:staticcheck // the only per-server decompressor hook; "supported throughout 1.x"
		grpc.MaxRecvMsgSize(int(min(r.MaxRecvSize(), 1<<31-1))),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
	}
}

// RegisterGRPC registers MetricsService/Export on s. The server must be
// created with ServerOptions.
func (r *Receiver) RegisterGRPC(s *grpc.Server) {
	s.RegisterService(&metricsServiceDesc, r)
}

func (r *Receiver) exportRaw(_ context.Context, in *exportMsg) (out *RawBytes, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.logger.Error("Export panicked", "panic", fmt.Sprint(p))
			out, err = nil, status.Error(codes.Internal, "internal error while ingesting")
		}
		r.m.requests.WithLabelValues("grpc", status.Code(err).String()).Inc()
	}()
	if errors.Is(in.refused, errTooLarge) {
		return nil, status.Errorf(codes.ResourceExhausted, "request exceeds the receive limit of %d bytes after decompression", r.cfg.MaxRecvSize)
	}
	if in.refused != nil {
		return nil, unavailable(in.refused)
	}
	if err := r.acquire(); err != nil {
		return nil, unavailable(err)
	}
	defer r.releaseSlot()
	if r.testHook != nil {
		r.testHook()
	}
	r.m.bytes.WithLabelValues("grpc", "protobuf").Add(float64(len(in.buf)))
	res, err := r.ingestProto(in.buf) // nothing retains the request bytes past it
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, validMessage("decode OTLP ExportMetricsServiceRequest: "+err.Error()))
	}
	ob := RawBytes(encodeResponse(res))
	return &ob, nil
}

// unavailable maps overload and draining to Unavailable with RetryInfo,
// which every OTLP exporter retries.
func unavailable(err error) error {
	delay := time.Second
	if errors.Is(err, errDraining) {
		delay = 5 * time.Second
	}
	st := status.New(codes.Unavailable, err.Error())
	if ds, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)}); derr == nil {
		st = ds
	}
	return st.Err()
}
