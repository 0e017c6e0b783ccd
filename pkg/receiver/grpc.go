package receiver

import (
	"context"

	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
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

// Unmarshal implements encoding.CodecV2.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if b, ok := v.(*RawBytes); ok {
		*b = data.Materialize()
		return nil
	}
	return protoCodec.Unmarshal(data, v)
}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return proto.Name }

var metricsServiceDesc = grpc.ServiceDesc{
	ServiceName: "opentelemetry.proto.collector.metrics.v1.MetricsService",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Export",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in RawBytes
			if err := dec(&in); err != nil {
				return nil, err
			}
			return srv.(*Receiver).exportRaw(ctx, in)
		},
	}},
	Metadata: "opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
}

// RegisterGRPC registers MetricsService/Export on s. The server must be
// created with grpc.ForceServerCodecV2(Codec{}).
func (r *Receiver) RegisterGRPC(s *grpc.Server) {
	s.RegisterService(&metricsServiceDesc, r)
}

func (r *Receiver) exportRaw(_ context.Context, in RawBytes) (*RawBytes, error) {
	if r.isDraining() {
		r.m.requests.WithLabelValues("grpc", codes.Unavailable.String()).Inc()
		return nil, status.Error(codes.Unavailable, "server is shutting down; retry against another replica")
	}
	r.m.bytes.WithLabelValues("grpc").Add(float64(len(in)))
	req := pmetricotlp.NewExportRequest()
	if err := req.UnmarshalProto(in); err != nil {
		r.m.requests.WithLabelValues("grpc", codes.InvalidArgument.String()).Inc()
		return nil, status.Errorf(codes.InvalidArgument, "decode OTLP ExportMetricsServiceRequest: %v", err)
	}
	resp := r.ingest(req.Metrics())
	out, err := resp.MarshalProto()
	if err != nil {
		r.m.requests.WithLabelValues("grpc", codes.Internal.String()).Inc()
		return nil, status.Errorf(codes.Internal, "encode response: %v", err)
	}
	r.m.requests.WithLabelValues("grpc", codes.OK.String()).Inc()
	ob := RawBytes(out)
	return &ob, nil
}
