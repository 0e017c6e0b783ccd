package receiver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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

// Unmarshal implements encoding.CodecV2. RawBytes are copied into a
// pooled buffer (grpc-go frees data after Unmarshal); the Export handler
// returns it to the pool when the request is done.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if b, ok := v.(*RawBytes); ok {
		buf := getBuf(data.Len())
		for _, d := range data {
			buf = append(buf, d.ReadOnlyData()...)
		}
		*b = buf
		return nil
	}
	return protoCodec.Unmarshal(data, v)
}

// maxPooledBuf is the largest request buffer kept for reuse; rarer,
// bigger requests are left to the GC so the pool never pins 64 MiB.
const maxPooledBuf = 4 << 20

var bufPool sync.Pool // *[]byte

func getBuf(n int) []byte {
	if n <= maxPooledBuf {
		if p, ok := bufPool.Get().(*[]byte); ok && cap(*p) >= n {
			return (*p)[:0]
		}
	}
	return make([]byte, 0, n)
}

func putBuf(b []byte) {
	if cap(b) > 0 && cap(b) <= maxPooledBuf {
		bufPool.Put(&b)
	}
}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return proto.Name }

var metricsServiceDesc = grpc.ServiceDesc{
	ServiceName: "opentelemetry.proto.collector.metrics.v1.MetricsService",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Export",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			var in RawBytes
			if err := dec(&in); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return srv.(*Receiver).exportRaw(ctx, in)
			}
			// The server's interceptors (pkg/server's panic boundary) run
			// around Export as around any generated handler.
			return interceptor(ctx, &in, exportInfo(srv), func(ctx context.Context, req any) (any, error) {
				return srv.(*Receiver).exportRaw(ctx, *req.(*RawBytes))
			})
		},
	}},
	Metadata: "opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
}

func exportInfo(srv any) *grpc.UnaryServerInfo {
	return &grpc.UnaryServerInfo{Server: srv, FullMethod: exportMethod}
}

// ServerOptions are the options the OTLP gRPC server needs: the Codec and
// the receive limit. The server (pkg/server) and the load test's server
// (test/load) both build theirs from them, so the load test measures the
// transport production runs.
func (r *Receiver) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(Codec{}),
		grpc.MaxRecvMsgSize(int(min(r.MaxRecvSize(), 1<<31-1))),
	}
}

// RegisterGRPC registers MetricsService/Export on s. The server must be
// created with grpc.ForceServerCodecV2(Codec{}) (ServerOptions).
func (r *Receiver) RegisterGRPC(s *grpc.Server) {
	s.RegisterService(&metricsServiceDesc, r)
}

func (r *Receiver) exportRaw(_ context.Context, in RawBytes) (out *RawBytes, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.logger.Error("Export panicked", "panic", fmt.Sprint(p))
			out, err = nil, status.Error(codes.Internal, "internal error while ingesting")
		}
		r.m.requests.WithLabelValues("grpc", status.Code(err).String()).Inc()
	}()
	if err := r.acquire(); err != nil {
		return nil, unavailable(err)
	}
	n := int64(len(in))
	if err := r.addBytes(n); err != nil {
		<-r.slots
		return nil, unavailable(err)
	}
	defer r.release(n)
	if r.testHook != nil {
		r.testHook()
	}
	r.m.bytes.WithLabelValues("grpc", "protobuf").Add(float64(n))
	res, err := r.ingestProto(in)
	putBuf(in) // nothing retains the request bytes past ingestProto
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decode OTLP ExportMetricsServiceRequest: %v", err)
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
