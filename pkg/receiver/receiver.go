// Package receiver accepts pushed OTLP metrics over gRPC
// (MetricsService/Export) and HTTP (POST /v1/metrics), maps every point to
// the series Prometheus would create when ingesting the same OTLP
// (otlp-contract.md §5–§8), and appends it to the store.
//
// Protobuf requests are walked in place by pkg/internal/otlpwire and
// appended straight into the store: a point of a series that already
// exists costs no allocation. Repeated attribute sets are recognised by
// their encoded bytes (no decoding), and every sample is appended through
// one path, in small groups whose cache misses overlap (stage.go). JSON
// requests are scanned first so that no value nests past a fixed depth
// (json.go), then decoded by pdata and fed to the same mapper, which is
// also how tests use pdata as the reference.
//
// Hostile input costs bounded memory and time: bodies are charged to an
// in-flight byte budget as they are read and inflated, and a request
// takes one of a bounded number of slots only once its body is complete
// (body.go); attribute values nested too deep reject their point.
//
// A bad point never affects its neighbours: rejected points are counted by
// reason and reported through OTLP partial success; only undecodable bytes
// fail a whole request.
package receiver

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/collector/pdata/pmetric"
	_ "google.golang.org/grpc/encoding/gzip" // collectors compress with gzip by default
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/interest"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Config configures the receiver. Zero fields take their defaults.
type Config struct {
	// MaxRecvSize is the largest accepted request after decompression, in
	// bytes. Default DefaultMaxRecvSize.
	MaxRecvSize int64
	// IngestDelta stores delta-temporality points as raw samples instead of
	// rejecting them (--otlp-delta=ingest).
	IngestDelta bool
	// PromoteResourceAttributes are resource attributes added as labels
	// (sanitised names) when the point has no such label.
	PromoteResourceAttributes []string
	// MaxLabelsPerSeries caps labels per series after promotion. Default 64.
	MaxLabelsPerSeries int
	// MaxLabelNameLength caps a label name in bytes. Default 1 KiB.
	MaxLabelNameLength int
	// MaxLabelValueLength caps a label value in bytes. Default 4 KiB.
	MaxLabelValueLength int
	// MaxMetricNameLength caps an OTLP metric name in bytes. Default 1 KiB.
	MaxMetricNameLength int
	// MaxInFlight caps concurrently processed Exports (decoded and
	// appended; a request takes its slot once its body is complete).
	// Default 64.
	MaxInFlight int
	// MaxInFlightBytes caps the memory that requests hold at once: bodies
	// as they are read, their decompressed form, decompressor state and
	// JSON object trees (body.go). Default 2 × MaxRecvSize.
	MaxInFlightBytes int64
	// Filter, when set, decides which metric families are stored
	// (--metric-allow-list, --lazy-ingest; admit.go). Nil stores all.
	Filter *interest.Filter
}

// DefaultMaxRecvSize is the default receive limit: 64 MiB, what the OTLP
// specification recommends as the receiver's limit and as the senders'
// own cap (opentelemetry-proto docs/specification.md), so no conforming
// exporter is refused for size, which it would not retry (data loss).
// Memory is bounded by MaxInFlightBytes, not by this limit.
const DefaultMaxRecvSize = 64 << 20

func (c Config) withDefaults() Config {
	if c.MaxRecvSize <= 0 {
		c.MaxRecvSize = DefaultMaxRecvSize
	}
	if c.MaxLabelsPerSeries <= 0 {
		c.MaxLabelsPerSeries = store.DefaultMaxLabelsPerSeries
	}
	if c.MaxLabelNameLength <= 0 {
		c.MaxLabelNameLength = store.DefaultMaxLabelNameLength
	}
	if c.MaxLabelValueLength <= 0 {
		c.MaxLabelValueLength = store.DefaultMaxLabelValueLength
	}
	if c.MaxMetricNameLength <= 0 {
		c.MaxMetricNameLength = 1 << 10
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 64
	}
	if c.MaxInFlightBytes <= 0 {
		c.MaxInFlightBytes = 2 * c.MaxRecvSize
	}
	return c
}

// DefaultConfig returns the receiver's defaults, the one place they are
// written (the label limits are the store's, which enforces them for every
// writer): New fills every zero field from them, and pkg/config's flags
// start from them. MaxInFlightBytes holds the value derived from the
// default MaxRecvSize.
func DefaultConfig() Config { return Config{}.withDefaults() }

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
	// Now is the clock for timestamp checks; nil means time.Now.
	Now func() time.Time
	// OnStored, when set, is called after every request that stored at
	// least one sample, with the newest sample time in unix ms (readiness
	// after fresh data, pkg/scaler/ready.go). It must not block.
	OnStored func(newestMs int64)
}

// Receiver is the OTLP metrics receiver. It is safe for concurrent use.
type Receiver struct {
	// Fields above draining are immutable after New.
	cfg           Config
	store         *store.Store
	set           Settings
	now           func() time.Time
	logger        *slog.Logger
	m             *metrics
	promotedNames []string
	filter        *interest.Filter
	fm            *filterMetrics
	slots         chan struct{} // in-flight Exports; a send acquires
	testHook      func()        // called with a slot held; tests only
	gz            *grpcGzip     // the OTLP gRPC server's decompressor

	draining      atomic.Bool
	limitLogged   [numReasons]atomic.Int64 // unix seconds of the last limit warning
	inflightBytes atomic.Int64
	// batches is a free list of per-request scratch. A bounded channel,
	// not a sync.Pool: a pool is emptied by every GC, and each batch
	// carries name caches whose rebuild would cost allocations.
	batches chan *batch
	// twins detects series that differ only in hidden identity (§8.3).
	twins twinDetector
	// rejections keeps the last rejection examples (rejections.go).
	rejections rejectionLog
}

// New returns a receiver appending to st.
func New(st *store.Store, cfg Config, set Settings) *Receiver {
	cfg = cfg.withDefaults()
	if set.Logger == nil {
		set.Logger = slog.New(slog.DiscardHandler)
	}
	if set.Now == nil {
		set.Now = time.Now
	}
	r := &Receiver{
		cfg:    cfg,
		store:  st,
		set:    set,
		now:    set.Now,
		logger: set.Logger.With("component", "receiver"),
		m:      newMetrics(set.Registerer),
		slots:  make(chan struct{}, cfg.MaxInFlight),
		filter: cfg.Filter,
	}
	if r.filter != nil {
		r.fm = newFilterMetrics(set.Registerer)
	}
	namer := otlptranslator.LabelNamer{UnderscoreLabelSanitization: true, PreserveMultipleUnderscores: true} //nolint:staticcheck // Prometheus's default label_name_underscore_sanitization (otlp-contract.md §8.1)
	for _, a := range cfg.PromoteResourceAttributes {
		n, err := namer.Build(a)
		if err != nil {
			n = "" // an unusable name promotes nothing
		}
		r.promotedNames = append(r.promotedNames, n)
	}
	r.batches = make(chan *batch, cfg.MaxInFlight)
	r.gz = &grpcGzip{r: r, held: make(map[*byte]charge)}
	return r
}

// MaxRecvSize returns the receive limit in bytes; the gRPC server that
// hosts the receiver must use it as its MaxRecvMsgSize.
func (r *Receiver) MaxRecvSize() int64 { return r.cfg.MaxRecvSize }

// Drain makes every later Export answer Unavailable, so senders retry
// against whichever replica is serving.
func (r *Receiver) Drain() { r.draining.Store(true) }

// errOverloaded and errDraining make the transports answer Unavailable
// with a retry hint.
var (
	errOverloaded = errors.New("too many concurrent exports or bytes in flight; retry later")
	errDraining   = errors.New("server is shutting down; retry against another replica")
)

// acquire takes an in-flight slot, or fails at once: queueing without
// bound is what the bound prevents. The request's body must be complete:
// a slot is never held while waiting for a sender.
func (r *Receiver) acquire() error {
	if r.draining.Load() {
		return errDraining
	}
	select {
	case r.slots <- struct{}{}:
		return nil
	default:
		r.m.overloaded.Inc()
		return errOverloaded
	}
}

func (r *Receiver) releaseSlot() { <-r.slots }

// result is the outcome of one request.
type result struct {
	rejected int64
	message  string
}

// ingestProto walks an encoded ExportMetricsServiceRequest into the store.
func (r *Receiver) ingestProto(buf []byte) (result, error) {
	b := r.getBatch()
	defer r.putBatch(b)
	start := time.Now()
	err := b.walker.Walk(buf, b)
	b.flush() // the last metric's staged points; nothing is staged on error
	b.unstage()
	r.m.decode.WithLabelValues("protobuf").Observe(time.Since(start).Seconds())
	if err != nil {
		return result{}, err
	}
	return r.finish(b), nil
}

// IngestMetrics maps metrics decoded elsewhere into the store exactly as
// an Export carrying them would, and returns what the OTLP partial success
// reports: the rejected points and a message (zero and empty when every
// point was accepted). It is for servers that decode with pdata
// themselves, such as the load test's baseline; it does not count against
// the in-flight bounds.
func (r *Receiver) IngestMetrics(md pmetric.Metrics) (rejected int64, message string) {
	res := r.ingestPdata(md)
	return res.rejected, res.message
}

// ingestPdata maps decoded pdata metrics into the store.
func (r *Receiver) ingestPdata(md pmetric.Metrics) result {
	b := r.getBatch()
	defer r.putBatch(b)
	walkPdata(md, b, &b.pd)
	return r.finish(b)
}

func (r *Receiver) getBatch() *batch {
	var b *batch
	select {
	case b = <-r.batches:
	default:
		b = newBatch()
	}
	b.reset(r)
	b.unstage()
	return b
}

func (r *Receiver) putBatch(b *batch) {
	select {
	case r.batches <- b:
	default:
	}
}

// finish publishes a request's counters and notifies subscribers.
func (r *Receiver) finish(b *batch) result {
	stats := b.app.Commit()
	if stats.Appended > 0 && b.out.newestT > 0 && r.set.OnStored != nil {
		r.set.OnStored(b.out.newestT)
	}
	if b.out.accepted > 0 {
		r.m.accepted.Add(float64(b.out.accepted))
	}
	r.flushFiltered(b)
	if b.out.nonFinite > 0 {
		r.m.nonFinite.Add(float64(b.out.nonFinite))
	}
	if b.out.expHist > 0 {
		r.m.expHist.Add(float64(b.out.expHist))
	}
	if stats.StartResets > 0 {
		r.m.startResets.Add(float64(stats.StartResets))
	}
	for i, n := range b.out.rejected {
		if n > 0 {
			r.m.rejected[i].Add(float64(n))
			r.rejections.record(r.now(), reason(i), n, b.out.examples[i])
		}
	}
	if b.out.newestT > 0 {
		r.m.lag.Observe(float64(r.now().UnixMilli()-b.out.newestT) / 1e3)
	}
	r.logLimits(b)
	if len(b.out.touchedIDs) > 0 && r.set.OnIngest != nil {
		b.out.touchedIDs = append(b.out.touchedIDs, b.out.aliasIDs...)
		r.set.OnIngest(b.out.touchedIDs)
	}
	if b.out.total == 0 {
		return result{}
	}
	return result{rejected: int64(b.out.total), message: b.rejectionMessage()}
}

// limitReasons are the rejections that mean an operator-set limit was hit.
var limitReasons = [...]reason{
	reasonSeriesLimit, reasonSeriesPerMetricLimit, reasonTooManyLabels,
	reasonLabelNameTooLong, reasonLabelValueTooLong, reasonNameTooLong,
}

// logLimits warns at most once a minute per limit that rejected points
// (the counter has every one).
func (r *Receiver) logLimits(b *batch) {
	now := r.now().Unix()
	for _, reason := range limitReasons {
		n := b.out.rejected[reason]
		if n == 0 {
			continue
		}
		last := r.limitLogged[reason].Load()
		if now-last < 60 || !r.limitLogged[reason].CompareAndSwap(last, now) {
			continue
		}
		r.logger.Warn("OTLP points rejected by a limit", "limit", reason.String(), "points", n, "example", b.out.examples[reason])
	}
}

// maxMessage is the partial-success message limit (otlp-contract.md §3).
const maxMessage = 1024

// rejectionMessage summarises rejections per reason with one example each,
// at most 1 KiB, e.g. "3 points rejected: out_of_order=2 (first: x{a="b"}), ...".
func (b *batch) rejectionMessage() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d points rejected:", b.out.total)
	sep := " "
	for i, n := range b.out.rejected {
		if n == 0 {
			continue
		}
		fmt.Fprintf(&sb, "%s%s=%d", sep, reason(i), n)
		if ex := b.out.examples[i]; ex != "" {
			fmt.Fprintf(&sb, " (first: %s)", ex)
		}
		sep = ", "
	}
	return truncateUTF8(sb.String(), maxMessage)
}

// truncateUTF8 cuts s to at most n bytes on a rune boundary, marking the cut.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func isRuneStart(c byte) bool { return c&0xC0 != 0x80 }

// encodeResponse encodes an ExportMetricsServiceResponse: empty on full
// success, partial_success otherwise.
func encodeResponse(res result) []byte {
	if res.rejected == 0 && res.message == "" {
		return nil
	}
	var ps []byte
	ps = protowire.AppendTag(ps, 1, protowire.VarintType)
	ps = protowire.AppendVarint(ps, uint64(res.rejected))
	ps = protowire.AppendTag(ps, 2, protowire.BytesType)
	ps = protowire.AppendString(ps, res.message)
	out := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendBytes(out, ps)
}
