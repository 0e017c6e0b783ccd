// Package config holds the user-facing configuration of keda-otel-scaler:
// one Config value with defaults that need no Kubernetes and no files, a
// Validate that reports every problem at once, and flag/env binding where
// every flag has a KOS_ environment twin.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/promapi"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/scaler"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Config is everything an operator can set. It is passed by value.
type Config struct {
	Server   Server
	Receiver Receiver
	Store    Store
	Scaler   Scaler
	Query    Query
	Log      Log
}

// Server configures the listeners and the process lifecycle.
type Server struct {
	// OTLPGRPCAddr is the OTLP/gRPC metrics receiver address. Default ":4317".
	OTLPGRPCAddr string
	// ScalerAddr is the KEDA external scaler gRPC address. Default ":4318".
	ScalerAddr string
	// HTTPAddr serves OTLP/HTTP, the query API, /metrics and health. Default ":8080".
	HTTPAddr string
	// ShutdownTimeout bounds graceful shutdown after SIGTERM. Default 15s.
	ShutdownTimeout time.Duration
	// TLSCertFile and TLSKeyFile, when both set, make the KEDA scaler
	// listener serve TLS (1.2 or newer). They are not a default for the
	// other listeners: turning TLS on for KEDA must not switch collectors
	// that export with tls.insecure (KServe's sidecars) or the kubelet's
	// HTTP probes to TLS behind their back. Default off.
	TLSCertFile, TLSKeyFile string
	// TLSClientCAFile, when set, makes the scaler listener require client
	// certificates signed by this CA (KEDA's tlsClientCert/tlsClientKey).
	TLSClientCAFile string
	// OTLPTLS is TLS on the OTLP/gRPC listener. Default off (plaintext).
	OTLPTLS TLSFiles
	// HTTPTLS is TLS on the HTTP listener (OTLP/HTTP, query API, /metrics,
	// health). Default off (plaintext).
	HTTPTLS TLSFiles
	// ReloadInterval is how often certificate, key, client-CA and
	// bearer-token files are checked for changes; a change is applied to
	// new connections and requests without a restart. 0 reads them once at
	// start. Default 5s.
	ReloadInterval time.Duration
	// StateDir, when set, is where the store's window is written on
	// shutdown and every CheckpointInterval (store.snapshot) and read back
	// on start, so a restart needs no warm-up. It must be writable at
	// start. Default empty: off.
	StateDir string
	// CheckpointInterval is how often, with StateDir, the store's window
	// is also written while running, so a crash or SIGKILL loses at most
	// this much. 0 writes only on shutdown. Default 1m.
	CheckpointInterval time.Duration
	// GRPCReflection serves gRPC server reflection on the OTLP and KEDA
	// listeners (interfaces.md: both serve health and reflection). Turning
	// it off hides the service list from grpcurl-style discovery; health
	// stays. Default true.
	GRPCReflection bool
	// OTLPMaxConnections caps the TCP connections open at once on the
	// OTLP/gRPC listener; one more is closed as soon as it is accepted and
	// counted (keda_otel_scaler_connections_rejected_total). An idle one
	// costs the server about 47 KiB, 55 KiB with TLS (README, Resource
	// bounds), so the default holds at most about 94 MiB. A collector keeps
	// one connection per otlp exporter (a few at most): 2,048 admits a
	// sidecar collector on every pod of a large vLLM fleet. Default 2048.
	OTLPMaxConnections int
	// ScalerMaxConnections caps the TCP connections open at once on the
	// KEDA listener, as OTLPMaxConnections (about 43 KiB each idle, 55 KiB
	// with TLS). KEDA pools one connection per operator for every trigger
	// (one per distinct TLS settings), so a few KEDA installations and a
	// grpcurl fit many times over. Default 64.
	ScalerMaxConnections int
	// HTTPMaxConnections caps the TCP connections open at once on the HTTP
	// listener, as OTLPMaxConnections (about 14 KiB each idle, 24 KiB with
	// TLS): OTLP/HTTP senders (a Collector's otlphttp exporter opens up to
	// one per sending consumer, 10 by default), Prometheus, Grafana and the
	// kubelet's probes share it. Default 1024.
	HTTPMaxConnections int
}

// TLSFiles are one listener's TLS material: with CertFile and KeyFile set
// it serves TLS 1.2 or newer; with ClientCAFile also set it requires client
// certificates that chain to that CA (mutual TLS). Paths to PEM files.
type TLSFiles struct {
	CertFile, KeyFile, ClientCAFile string
}

// PeerTLS is how a replica connects to its peers' HTTPS listeners
// (--ready-peers). Paths to PEM files.
type PeerTLS struct {
	// CAFile verifies the peers' certificates; empty uses the system's
	// roots.
	CAFile string
	// CertFile and KeyFile, set together, are the client certificate
	// presented to peers that require one (--http-tls-client-ca-file).
	CertFile, KeyFile string
	// ServerName is the name verified in the peers' certificates; empty
	// verifies each URL's host.
	ServerName string
}

// Enabled reports whether the listener serves TLS.
func (t TLSFiles) Enabled() bool { return t.CertFile != "" }

// minReloadInterval bounds how often the files are stat'ed.
const minReloadInterval = 100 * time.Millisecond

// Receiver configures OTLP ingestion.
type Receiver struct {
	// MaxRecvSize is the largest accepted request after decompression, in
	// bytes. Default 64 MiB: what the OTLP specification recommends for
	// receivers and as senders' own cap, so no conforming exporter is
	// refused for size (413 / ResourceExhausted are not retried).
	MaxRecvSize int64
	// MaxInFlightBytes bounds the memory OTLP requests hold at once, in
	// bytes: bodies as they are read, decompressed bytes as they are
	// produced, JSON object trees. A request that does not fit is refused
	// with Unavailable / 503, which exporters retry. 0 means
	// 2 × MaxRecvSize (128 MiB by default); otherwise at least
	// MaxRecvSize. Default 0.
	MaxInFlightBytes int64
	// Delta is the delta-temporality policy: "reject" (default, as
	// Prometheus) or "ingest" (each delta point stored as raw samples).
	Delta string
	// PromoteResourceAttributes are resource attributes added as labels
	// (sanitised names) when the point has no such label. Default none.
	PromoteResourceAttributes []string
	// MaxLabelsPerSeries caps labels per series after promotion. Default 64.
	MaxLabelsPerSeries int
	// MaxLabelNameLength caps a label name in bytes. Default 1 KiB.
	MaxLabelNameLength int
	// MaxLabelValueLength caps a label value in bytes. Default 4 KiB.
	MaxLabelValueLength int
	// MaxMetricNameLength caps an OTLP metric name in bytes. Default 1 KiB.
	MaxMetricNameLength int
	// MetricAllowList, when set, is a regular expression (RE2, matched
	// against whole names): only metric families with a name that matches
	// (a stored name such as x_bucket, the OTLP name or its legacy alias)
	// are stored. Default empty: every family.
	MetricAllowList string
	// LazyIngest stores only the metric families that a cached trigger or,
	// for --trigger-ttl after it asked, an HTTP API query reads
	// (pkg/interest). A trigger asking for a family not stored before
	// answers Unavailable for --warmup. Default false.
	LazyIngest bool
	// BearerTokenFile, when set, names a file of accepted bearer tokens
	// (one a line; blank lines ignored): OTLP Exports on both transports
	// must carry one (`authorization: Bearer <token>`) or are refused with
	// Unauthenticated / 401. Reloaded every Server.ReloadInterval.
	// Default empty: no authentication.
	BearerTokenFile string
}

// Store configures the in-memory series store.
type Store struct {
	// Retention is how long samples are kept. Default 10m.
	Retention time.Duration
	// Freshness is the floor of the per-series freshness window: a series
	// with no newer sample is ended this long after its last one. Default 30s.
	Freshness time.Duration
	// MaxSeries caps active series; new series beyond it are rejected. Default 1,000,000.
	MaxSeries int
	// MaxSeriesPerMetric caps active series per metric name. Default 200,000.
	MaxSeriesPerMetric int
	// SeriesTTL is how long a series may go without a sample before it is
	// deleted (pods that die send no staleness marker). 0 means Retention.
	SeriesTTL time.Duration
	// MaxSamplesPerSeries caps one series' ring of samples (12 B each; a
	// native histogram sample also 8 B per bucket and span in its log). A
	// series pushed more often than MaxSamplesPerSeries times per
	// Retention is thinned: its window keeps covering the retention with
	// samples Retention/(MaxSamplesPerSeries−1) to twice that apart.
	// From 4 to 4095; default 1024.
	MaxSamplesPerSeries int
	// MaxSampleMemory caps the bytes of all series' samples together,
	// native histograms' logs included; rings that would grow beyond it
	// are thinned instead. Every series'
	// first two samples (48 B) are always granted. Default 512 MiB.
	MaxSampleMemory int64
}

// Scaler configures the KEDA external scaler.
type Scaler struct {
	// DefaultWindow is the window used when a trigger sets none. Default 2m.
	DefaultWindow time.Duration
	// Warmup is how long after start GetMetrics and IsActive answer
	// Unavailable instead of a premature value (keda-contract.md §8.2). Zero
	// disables it. Default 30s.
	Warmup time.Duration
	// PushHoldoff is the least time between two true messages on one
	// StreamIsActive stream (keda-contract.md §7.2). Zero disables it.
	// Default 5s.
	PushHoldoff time.Duration
	// ReadyAfterFresh starts the Warmup clock at the first stored sample
	// no older than Store.Freshness instead of at start; until then the
	// scaler is warming up, and /readyz answers 503 for the whole warm-up
	// (keda-contract.md §8.2). For HA replicas fed by a fan-out layer, so
	// a replica never answers KEDA from an empty store. Default false.
	ReadyAfterFresh bool
	// ReadyPeers are the base URLs (http:// or https://host:port) of the
	// other HA replicas' HTTP listeners. With ReadyAfterFresh, once the
	// Warmup clock has run out the replica stays warming up until, on two
	// polls in a row about a second apart, it holds at least as many
	// fresh series as every peer that answers and is itself ready, less a
	// tolerance of max(1, 0.5 %) of the peer's count (pkg/server/peers.go).
	// Unreachable, failing and not-ready peers are ignored, so the list
	// may name this replica too. Default empty: no peer check.
	ReadyPeers []string
	// ReadyPeersTimeout bounds that wait, from the end of the Warmup
	// clock: after it the replica turns ready anyway, logged at warn and
	// counted. Default 3m.
	ReadyPeersTimeout time.Duration
	// ReadyPeersTLS is the client side of the peer polls, for peers whose
	// HTTP listener serves TLS (https:// URLs).
	ReadyPeersTLS PeerTLS
	// TriggerTTL is how long a compiled trigger stays cached unused.
	// Default 10m.
	TriggerTTL time.Duration
	// MaxTriggers bounds the compiled-trigger cache in entries. Default
	// 10,000.
	MaxTriggers int
	// MaxTriggerBytes bounds one compiled trigger's estimated memory
	// (kept metadata, query texts, plan, interned metric names), in bytes;
	// a trigger over it is refused with InvalidArgument, and a plan whose
	// working set (what it keeps between evaluations) takes it over drops
	// that working set after each evaluation. Default 2 MiB.
	MaxTriggerBytes int64
	// TriggerCacheBytes bounds the estimated memory of every cached
	// trigger, held ones included, with its plan's working set, in bytes;
	// least recently used
	// triggers are evicted to stay under it. Default 64 MiB.
	TriggerCacheBytes int64
	// MaxStreams caps open StreamIsActive and StreamMetricSpec streams
	// together; one more is refused with ResourceExhausted and KEDA retries.
	// KEDA opens both for each external-push trigger. It also sets the KEDA
	// listener's per-connection concurrent-stream limit (MaxStreams + 1,024
	// for calls in flight): KEDA pools one connection for every trigger.
	// Default 10,000.
	MaxStreams int
	// MaxEvaluations bounds the GetMetrics/IsActive evaluations running at
	// once, all triggers together; a call waits at most the evaluation
	// budget (1 s) for a slot, then gets ResourceExhausted. It bounds the
	// memory of evaluations in flight (each within its sample and label
	// budgets) by configuration, not by concurrent calls. 0: max(4,
	// 2 × GOMAXPROCS).
	MaxEvaluations int
}

// Query configures query evaluation (KEDA triggers and /api/v1/*) and
// bounds the Prometheus HTTP query API: its memory is at most
// MaxConcurrency × MaxSamples × 16 B plus the plans being evaluated.
type Query struct {
	// MaxLabelBytes caps the bytes of label sets one evaluation may create
	// with label_replace and label_join; over it the evaluation fails
	// (ResourceExhausted for KEDA, 422 for the HTTP API) before the memory
	// is taken. Default 8 MiB.
	MaxLabelBytes int64
	// MaxConcurrency is how many API requests that read the store are
	// evaluated and written at once; others wait for a slot. Default 4.
	MaxConcurrency int
	// MaxSamples caps the samples (16 B each) one API answer holds: range
	// query points, vector elements, raw samples, listed series. Larger
	// answers fail with 422. Default 5,000,000 (80 MB).
	MaxSamples int
	// Timeout bounds an API request's wait for a slot and its evaluation,
	// and separately the writing of its answer to a slow client. Default 2m.
	Timeout time.Duration
}

// MaxConnectionsLimit is the largest --*-max-connections: far above any
// process's file-descriptor limit, so a typo cannot read as "unbounded".
const MaxConnectionsLimit = 1 << 20

// MaxStreamsLimit is the largest --max-streams: the per-connection stream
// limit derived from it must fit gRPC's uint32 with room to spare.
const MaxStreamsLimit = 1 << 24

// Log configures logging.
type Log struct {
	// Format is "text" or "json". Default "text".
	Format string
	// Level is "debug", "info", "warn" or "error". Default "info".
	Level string
}

// Default returns the configuration used when nothing is set. The
// components' settings come from their own DefaultConfig, the one place
// each default is written (TestDefaultsAreTheComponents); the listeners,
// the delta policy and logging are this package's.
func Default() Config {
	rd, sd, cd, ad := receiver.DefaultConfig(), store.DefaultConfig(), scaler.DefaultConfig(), promapi.DefaultConfig()
	return Config{
		Server: Server{
			OTLPGRPCAddr:       ":4317",
			ScalerAddr:         ":4318",
			HTTPAddr:           ":8080",
			ShutdownTimeout:    15 * time.Second,
			CheckpointInterval: time.Minute,
			ReloadInterval:     5 * time.Second,
			GRPCReflection:     true,

			OTLPMaxConnections:   2048,
			ScalerMaxConnections: 64,
			HTTPMaxConnections:   1024,
		},
		Receiver: Receiver{
			MaxRecvSize:         rd.MaxRecvSize,
			Delta:               "reject",
			MaxLabelsPerSeries:  rd.MaxLabelsPerSeries,
			MaxLabelNameLength:  rd.MaxLabelNameLength,
			MaxLabelValueLength: rd.MaxLabelValueLength,
			MaxMetricNameLength: rd.MaxMetricNameLength,
		},
		Store: Store{
			Retention:           sd.Retention,
			Freshness:           sd.Freshness,
			MaxSeries:           sd.MaxSeries,
			MaxSeriesPerMetric:  sd.MaxSeriesPerMetric,
			MaxSamplesPerSeries: sd.MaxSamplesPerSeries,
			MaxSampleMemory:     sd.MaxSampleMemory,
			// SeriesTTL stays 0: it follows --retention.
		},
		Scaler: Scaler{
			DefaultWindow:     cd.DefaultWindow,
			Warmup:            cd.Warmup,
			PushHoldoff:       cd.PushHoldoff,
			MaxStreams:        cd.MaxStreams,
			TriggerTTL:        cd.TriggerTTL,
			MaxTriggers:       cd.MaxTriggers,
			MaxTriggerBytes:   cd.MaxTriggerBytes,
			TriggerCacheBytes: cd.TriggerCacheBytes,
			ReadyPeersTimeout: 3 * time.Minute,
		},
		Query: Query{MaxLabelBytes: query.DefaultMaxLabelBytes, MaxConcurrency: ad.MaxConcurrency, MaxSamples: ad.MaxSamples, Timeout: ad.Timeout},
		Log:   Log{Format: "text", Level: "info"},
	}
}

// Validate reports every problem at once, joined.
func (c Config) Validate() error {
	var errs []error
	for _, a := range []struct{ flag, addr string }{
		{"otlp-grpc-addr", c.Server.OTLPGRPCAddr},
		{"scaler-addr", c.Server.ScalerAddr},
		{"http-addr", c.Server.HTTPAddr},
	} {
		if err := validateAddr(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", a.flag, a.addr, err))
		}
	}
	for _, t := range []struct {
		prefix string
		files  TLSFiles
	}{
		{"tls", TLSFiles{c.Server.TLSCertFile, c.Server.TLSKeyFile, c.Server.TLSClientCAFile}},
		{"otlp-tls", c.Server.OTLPTLS},
		{"http-tls", c.Server.HTTPTLS},
	} {
		errs = append(errs, t.files.validate(t.prefix)...)
	}
	if strings.ContainsRune(c.Receiver.BearerTokenFile, 0) {
		errs = append(errs, fmt.Errorf("--otlp-bearer-token-file %q: not a path (contains NUL)", c.Receiver.BearerTokenFile))
	}
	if c.Server.ReloadInterval < 0 || (c.Server.ReloadInterval > 0 && c.Server.ReloadInterval < minReloadInterval) {
		errs = append(errs, fmt.Errorf("--reload-interval %v must be 0 (off) or >= %v", c.Server.ReloadInterval, minReloadInterval))
	}
	// Only the form is checked here; the directory may not exist until
	// the volume is mounted, and Start reports access problems.
	if strings.ContainsRune(c.Server.StateDir, 0) {
		errs = append(errs, fmt.Errorf("--state-dir %q: not a path (contains NUL)", c.Server.StateDir))
	}
	for _, l := range []struct {
		flag string
		v    int
	}{
		{"otlp-max-connections", c.Server.OTLPMaxConnections},
		{"scaler-max-connections", c.Server.ScalerMaxConnections},
		{"http-max-connections", c.Server.HTTPMaxConnections},
	} {
		if l.v <= 0 || l.v > MaxConnectionsLimit {
			errs = append(errs, fmt.Errorf("--%s %d must be > 0 and <= %d", l.flag, l.v, MaxConnectionsLimit))
		}
	}
	if c.Server.CheckpointInterval != 0 && c.Server.CheckpointInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("--checkpoint-interval %v must be 0 (only on shutdown) or >= 100ms", c.Server.CheckpointInterval))
	}
	if c.Server.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %v must be > 0", c.Server.ShutdownTimeout))
	}
	if c.Receiver.MaxRecvSize <= 0 {
		errs = append(errs, fmt.Errorf("--otlp-max-recv-size %d must be > 0", c.Receiver.MaxRecvSize))
	}
	if c.Receiver.MetricAllowList != "" {
		if _, err := regexp.Compile("^(?:" + c.Receiver.MetricAllowList + ")$"); err != nil {
			errs = append(errs, fmt.Errorf("--metric-allow-list %q: %w", c.Receiver.MetricAllowList, err))
		}
	}
	if b := c.Receiver.MaxInFlightBytes; b < 0 || (b > 0 && b < c.Receiver.MaxRecvSize) {
		errs = append(errs, fmt.Errorf("--otlp-max-inflight-bytes %d must be 0 (2 × --otlp-max-recv-size) or >= --otlp-max-recv-size %d",
			b, c.Receiver.MaxRecvSize))
	}
	switch c.Receiver.Delta {
	case "reject", "ingest":
	default:
		errs = append(errs, fmt.Errorf("--otlp-delta %q: must be reject or ingest", c.Receiver.Delta))
	}
	for _, l := range []struct {
		flag string
		v    int
	}{
		{"max-labels-per-series", c.Receiver.MaxLabelsPerSeries},
		{"max-label-name-length", c.Receiver.MaxLabelNameLength},
		{"max-label-value-length", c.Receiver.MaxLabelValueLength},
		{"max-metric-name-length", c.Receiver.MaxMetricNameLength},
	} {
		if l.v <= 0 {
			errs = append(errs, fmt.Errorf("--%s %d must be > 0", l.flag, l.v))
		}
	}
	if c.Store.Retention <= 0 {
		errs = append(errs, fmt.Errorf("--retention %v must be > 0", c.Store.Retention))
	}
	if c.Store.Freshness <= 0 || c.Store.Freshness > c.Store.Retention {
		errs = append(errs, fmt.Errorf("--freshness %v must be > 0 and <= --retention %v", c.Store.Freshness, c.Store.Retention))
	}
	if c.Store.MaxSeries <= 0 {
		errs = append(errs, fmt.Errorf("--max-series %d must be > 0", c.Store.MaxSeries))
	}
	if c.Store.MaxSeriesPerMetric <= 0 {
		errs = append(errs, fmt.Errorf("--max-series-per-metric %d must be > 0", c.Store.MaxSeriesPerMetric))
	}
	if c.Store.Retention > 24*time.Hour {
		errs = append(errs, fmt.Errorf("--retention %v must be <= 24h (the store keeps a short window in memory)", c.Store.Retention))
	}
	if c.Store.MaxSamplesPerSeries < 4 || c.Store.MaxSamplesPerSeries > 4095 {
		errs = append(errs, fmt.Errorf("--max-samples-per-series %d must be from 4 to 4095", c.Store.MaxSamplesPerSeries))
	}
	if c.Store.MaxSampleMemory <= 0 {
		errs = append(errs, fmt.Errorf("--max-sample-memory %d must be > 0", c.Store.MaxSampleMemory))
	}
	if c.Store.SeriesTTL < 0 {
		errs = append(errs, fmt.Errorf("--series-ttl %v must be >= 0", c.Store.SeriesTTL))
	}
	if c.Scaler.DefaultWindow <= 0 || c.Scaler.DefaultWindow > c.Store.Retention {
		errs = append(errs, fmt.Errorf("--default-window %v must be > 0 and <= --retention %v", c.Scaler.DefaultWindow, c.Store.Retention))
	}
	if c.Scaler.Warmup < 0 {
		errs = append(errs, fmt.Errorf("--warmup %v must be >= 0", c.Scaler.Warmup))
	}
	errs = append(errs, c.Scaler.validatePeers()...)
	if c.Scaler.PushHoldoff < 0 {
		errs = append(errs, fmt.Errorf("--push-holdoff %v must be >= 0", c.Scaler.PushHoldoff))
	}
	if c.Scaler.TriggerTTL <= 0 {
		errs = append(errs, fmt.Errorf("--trigger-ttl %v must be > 0", c.Scaler.TriggerTTL))
	}
	if c.Scaler.MaxTriggers <= 0 {
		errs = append(errs, fmt.Errorf("--max-triggers %d must be > 0", c.Scaler.MaxTriggers))
	}
	if c.Scaler.MaxTriggerBytes <= 0 {
		errs = append(errs, fmt.Errorf("--max-trigger-bytes %d must be > 0", c.Scaler.MaxTriggerBytes))
	}
	if c.Scaler.TriggerCacheBytes < c.Scaler.MaxTriggerBytes {
		errs = append(errs, fmt.Errorf("--trigger-cache-bytes %d must be >= --max-trigger-bytes %d", c.Scaler.TriggerCacheBytes, c.Scaler.MaxTriggerBytes))
	}
	if c.Scaler.MaxEvaluations < 0 || c.Scaler.MaxEvaluations > 1<<16 {
		errs = append(errs, fmt.Errorf("--max-evaluations %d must be >= 0 (0: max(4, 2 x GOMAXPROCS)) and <= 65536", c.Scaler.MaxEvaluations))
	}
	if c.Scaler.MaxStreams <= 0 || c.Scaler.MaxStreams > MaxStreamsLimit {
		errs = append(errs, fmt.Errorf("--max-streams %d must be > 0 and <= %d", c.Scaler.MaxStreams, MaxStreamsLimit))
	}
	if c.Query.MaxLabelBytes < 1<<10 {
		errs = append(errs, fmt.Errorf("--query-max-label-bytes %d must be >= 1KiB (a label set of a few labels)", c.Query.MaxLabelBytes))
	}
	if c.Query.MaxConcurrency <= 0 {
		errs = append(errs, fmt.Errorf("--query-max-concurrency %d must be > 0", c.Query.MaxConcurrency))
	}
	if c.Query.MaxSamples <= 0 {
		errs = append(errs, fmt.Errorf("--query-max-samples %d must be > 0", c.Query.MaxSamples))
	}
	if c.Query.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--query-timeout %v must be > 0", c.Query.Timeout))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("--log-format %q: must be text or json", c.Log.Format))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level %q: must be debug, info, warn or error", c.Log.Level))
	}
	return errors.Join(errs...)
}

// validate checks one listener's TLS flags, named --<prefix>-cert-file etc.
func (t TLSFiles) validate(prefix string) []error {
	var errs []error
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, fmt.Errorf("--%[1]s-cert-file and --%[1]s-key-file must be set together", prefix))
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		errs = append(errs, fmt.Errorf("--%[1]s-client-ca-file needs --%[1]s-cert-file and --%[1]s-key-file", prefix))
	}
	for _, f := range []struct{ flag, path string }{{"cert-file", t.CertFile}, {"key-file", t.KeyFile}, {"client-ca-file", t.ClientCAFile}} {
		if strings.ContainsRune(f.path, 0) {
			errs = append(errs, fmt.Errorf("--%s-%s %q: not a path (contains NUL)", prefix, f.flag, f.path))
		}
	}
	return errs
}

// validatePeers checks --ready-peers and its TLS flags.
func (c Scaler) validatePeers() []error {
	var errs []error
	if len(c.ReadyPeers) > 0 && !c.ReadyAfterFresh {
		errs = append(errs, errors.New("--ready-peers needs --ready-after-fresh (the peer check extends its warm-up)"))
	}
	if len(c.ReadyPeers) > MaxReadyPeers {
		errs = append(errs, fmt.Errorf("--ready-peers lists %d URLs; at most %d", len(c.ReadyPeers), MaxReadyPeers))
	}
	for _, p := range c.ReadyPeers {
		u, err := url.Parse(p)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("--ready-peers %q: %w", p, err))
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			errs = append(errs, fmt.Errorf("--ready-peers %q: want http://host:port or https://host:port", p))
		}
	}
	if c.ReadyPeersTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--ready-peers-timeout %v must be > 0", c.ReadyPeersTimeout))
	}
	t := c.ReadyPeersTLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("--ready-peers-cert-file and --ready-peers-key-file must be set together"))
	}
	for _, f := range []struct{ flag, path string }{{"ca-file", t.CAFile}, {"cert-file", t.CertFile}, {"key-file", t.KeyFile}} {
		if strings.ContainsRune(f.path, 0) {
			errs = append(errs, fmt.Errorf("--ready-peers-%s %q: not a path (contains NUL)", f.flag, f.path))
		}
	}
	return errs
}

// MaxReadyPeers is the most --ready-peers URLs: every poll asks each of
// them, so the list bounds the poller's work; far above any HA replica
// count.
const MaxReadyPeers = 64

func validateAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	return nil
}
