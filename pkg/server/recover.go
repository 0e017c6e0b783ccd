package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Listener names, the values of the panics counter's listener label.
const (
	listenerOTLP   = "otlp_grpc"
	listenerScaler = "scaler"
	listenerHTTP   = "http"
	// listenerReadyPeers is not a listener: the --ready-peers poller, a
	// goroutine that reads other replicas' answers (peers.go).
	listenerReadyPeers = "ready_peers"
)

// panicBoundary turns a panic in any handler into a failed request: gRPC
// calls end with Internal, HTTP requests with 500 (when nothing was written
// yet), the panic is logged at Error with its stack and counted, and the
// process goes on (issue #12 class 2). Every gRPC server gets its
// interceptors and the HTTP mux is wrapped whole, so a handler added later
// is covered without doing anything.
type panicBoundary struct {
	logger *slog.Logger
	panics *prometheus.CounterVec
}

func newPanicBoundary(logger *slog.Logger, reg prometheus.Registerer) *panicBoundary {
	b := &panicBoundary{
		logger: logger,
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_panics_total",
			Help: "Panics recovered by a handler's panic boundary, by listener and method (gRPC method or HTTP route pattern); the request failed with Internal or 500.",
		}, []string{"listener", "method"}),
	}
	reg.MustRegister(b.panics)
	return b
}

// record logs and counts one recovered panic.
func (b *panicBoundary) record(listener, method string, p any, stack []byte) {
	b.panics.WithLabelValues(listener, method).Inc()
	b.logger.Error("Panic recovered", "listener", listener, "method", method, "panic", fmt.Sprint(p), "stack", string(stack))
}

// grpcMethod is the method name without the service: "GetMetrics".
func grpcMethod(fullMethod string) string { return path.Base(fullMethod) }

func (b *panicBoundary) unary(listener string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				b.record(listener, grpcMethod(info.FullMethod), p, debug.Stack())
				resp, err = nil, status.Errorf(codes.Internal, "internal error in %s: the server recovered from a panic and logged it", grpcMethod(info.FullMethod))
			}
		}()
		return handler(ctx, req)
	}
}

func (b *panicBoundary) stream(listener string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				b.record(listener, grpcMethod(info.FullMethod), p, debug.Stack())
				err = status.Errorf(codes.Internal, "internal error in %s: the server recovered from a panic and logged it", grpcMethod(info.FullMethod))
			}
		}()
		return handler(srv, ss)
	}
}

// serverOptions are the boundary's interceptors for one gRPC server.
func (b *panicBoundary) serverOptions(listener string) []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(b.unary(listener)), grpc.ChainStreamInterceptor(b.stream(listener))}
}

// http wraps h (the whole mux). net/http would recover a panic too, but by
// closing the connection without a response and logging to its own
// logger; here the client gets a 500 with a message, and the panic is
// logged and counted like the gRPC ones. http.ErrAbortHandler is a
// deliberate abort and is re-raised for net/http to handle.
func (b *panicBoundary) http(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler { //nolint:errorlint // net/http panics with this exact value
				panic(p)
			}
			route := r.Pattern // set by the mux on r in place
			if route == "" {
				route = "unmatched"
			}
			b.record(listenerHTTP, route, p, debug.Stack())
			if !tw.wrote {
				http.Error(w, "internal error: the server recovered from a panic in this request's handler and logged it", http.StatusInternalServerError)
			}
		}()
		h.ServeHTTP(tw, r)
	})
}

// trackingWriter records whether a response has started, so the boundary
// does not write a second status line. Unwrap keeps http.ResponseController
// (flush, deadlines) working through it.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *trackingWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

// Flush forwards to the underlying writer's Flush, when it has one.
func (w *trackingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		w.wrote = true
		f.Flush()
	}
}

func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
