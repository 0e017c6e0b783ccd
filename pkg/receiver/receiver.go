// Package receiver accepts pushed OTLP metrics over gRPC
// (MetricsService/Export) and HTTP (POST /v1/metrics), maps every point to
// the series Prometheus would create when ingesting the same OTLP, and
// appends it to the store.
//
// A bad point never affects its neighbours: rejected points are counted by
// reason and reported through OTLP partial success; only undecodable bytes
// fail a whole request.
package receiver

import (
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	_ "google.golang.org/grpc/encoding/gzip" // collectors compress with gzip by default

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Config configures the receiver.
type Config struct {
	// MaxRecvSize is the largest accepted request after decompression, in
	// bytes. Default 64 MiB.
	MaxRecvSize int64
}

// Settings carries what the developer provides.
type Settings struct {
	// Logger receives the receiver's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the receiver's self-metrics; nil skips them.
	Registerer prometheus.Registerer
	// OnIngest, when set, is called after every request that appended at
	// least one sample, with the metric IDs (store.MetricID) it touched.
	// The slice is valid only during the call; it must not block.
	OnIngest func(metricIDs []uint32)
}

// Receiver is the OTLP metrics receiver. It is safe for concurrent use.
type Receiver struct {
	cfg    Config
	store  *store.Store
	set    Settings
	logger *slog.Logger
	m      *metrics

	mu       sync.RWMutex // guards draining
	draining bool

	scratch sync.Pool // *batch
}

// New returns a receiver appending to st.
func New(st *store.Store, cfg Config, set Settings) *Receiver {
	if cfg.MaxRecvSize <= 0 {
		cfg.MaxRecvSize = 64 << 20
	}
	if set.Logger == nil {
		set.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Receiver{
		cfg:    cfg,
		store:  st,
		set:    set,
		logger: set.Logger.With("component", "receiver"),
		m:      newMetrics(set.Registerer),
	}
	r.scratch.New = func() any { return &batch{} }
	return r
}

// MaxRecvSize returns the receive limit in bytes; the gRPC server that
// hosts the receiver must use it as its MaxRecvMsgSize.
func (r *Receiver) MaxRecvSize() int64 { return r.cfg.MaxRecvSize }

// Drain makes every later Export answer Unavailable, so senders retry
// against whichever replica is serving.
func (r *Receiver) Drain() {
	r.mu.Lock()
	r.draining = true
	r.mu.Unlock()
}

func (r *Receiver) isDraining() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.draining
}

// ingest appends every point of md and returns the OTLP response, with
// partial success set when points were rejected.
func (r *Receiver) ingest(md pmetric.Metrics) pmetricotlp.ExportResponse {
	b := r.scratch.Get().(*batch)
	defer r.scratch.Put(b)
	b.reset(r)
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		b.resource(rms.At(i))
	}
	if len(b.touched) > 0 && r.set.OnIngest != nil {
		r.set.OnIngest(b.touched)
	}
	resp := pmetricotlp.NewExportResponse()
	if b.rejectedTotal > 0 {
		ps := resp.PartialSuccess()
		ps.SetRejectedDataPoints(int64(b.rejectedTotal))
		ps.SetErrorMessage(b.rejectionMessage())
	}
	return resp
}

// rejectionMessage summarises rejections per reason with one example each,
// at most 1 KiB, e.g. "3 points rejected: out_of_order=2 (first: x{a="b"}), ...".
func (b *batch) rejectionMessage() string {
	reasons := make([]string, 0, len(b.rejected))
	for r := range b.rejected {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d points rejected:", b.rejectedTotal)
	for i, r := range reasons {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, " %s=%d", r, b.rejected[r])
		if ex := b.examples[r]; ex != "" {
			fmt.Fprintf(&sb, " (first: %s)", ex)
		}
	}
	msg := sb.String()
	if len(msg) > 1024 {
		msg = msg[:1021] + "..."
	}
	return msg
}
