package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// EnvPrefix is prepended to the upper-cased flag name to form its env twin.
const EnvPrefix = "KOS_"

// EnvName returns the environment variable that backs a flag:
// "otlp-grpc-addr" becomes "KOS_OTLP_GRPC_ADDR".
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// NewFlagSet binds every field of c to a flag. The returned set writes into c
// when parsed. Usage strings carry the unit; defaults come from c.
func NewFlagSet(name string, c *Config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.Server.OTLPGRPCAddr, "otlp-grpc-addr", c.Server.OTLPGRPCAddr, "OTLP/gRPC metrics receiver `host:port` (port 0 picks a free port)")
	fs.StringVar(&c.Server.ScalerAddr, "scaler-addr", c.Server.ScalerAddr, "KEDA external scaler gRPC `host:port`")
	fs.StringVar(&c.Server.HTTPAddr, "http-addr", c.Server.HTTPAddr, "HTTP `host:port`: OTLP/HTTP /v1/metrics, query API, /metrics, /healthz, /readyz")
	fs.StringVar(&c.Server.TLSCertFile, "tls-cert-file", c.Server.TLSCertFile, "PEM certificate `file` for TLS on the KEDA scaler listener (with --tls-key-file; empty: plaintext; reloaded on change)")
	fs.StringVar(&c.Server.TLSKeyFile, "tls-key-file", c.Server.TLSKeyFile, "PEM private key `file` for --tls-cert-file")
	fs.StringVar(&c.Server.TLSClientCAFile, "tls-client-ca-file", c.Server.TLSClientCAFile, "PEM CA `file`: when set, the KEDA scaler listener requires client certificates signed by it")
	for _, l := range []struct {
		prefix, what string
		files        *TLSFiles
	}{
		{"otlp-tls", "the OTLP/gRPC listener", &c.Server.OTLPTLS},
		{"http-tls", "the HTTP listener (OTLP/HTTP, query API, /metrics, health)", &c.Server.HTTPTLS},
	} {
		fs.StringVar(&l.files.CertFile, l.prefix+"-cert-file", l.files.CertFile, "PEM certificate `file` for TLS on "+l.what+" (with --"+l.prefix+"-key-file; empty: plaintext; reloaded on change)")
		fs.StringVar(&l.files.KeyFile, l.prefix+"-key-file", l.files.KeyFile, "PEM private key `file` for --"+l.prefix+"-cert-file")
		fs.StringVar(&l.files.ClientCAFile, l.prefix+"-client-ca-file", l.files.ClientCAFile, "PEM CA `file`: when set, "+l.what+" requires client certificates signed by it (mutual TLS)")
	}
	fs.Var((*durationValue)(&c.Server.ReloadInterval), "reload-interval", "how often certificate, key, client-CA and bearer-token files are checked for changes; 0 reads them once at start (`duration`)")
	fs.StringVar(&c.Receiver.BearerTokenFile, "otlp-bearer-token-file", c.Receiver.BearerTokenFile, "`file` of accepted bearer tokens, one a line: OTLP Exports on gRPC and HTTP must carry one (empty: no authentication; reloaded on change)")
	fs.StringVar(&c.Server.StateDir, "state-dir", c.Server.StateDir, "`dir` where the store's window is written on shutdown and every --checkpoint-interval and read on start, so a restart skips warm-up; must be writable (empty: off)")
	fs.Var((*durationValue)(&c.Server.CheckpointInterval), "checkpoint-interval", "with --state-dir, also write the store's window this often, so a crash loses at most this much; 0 writes only on shutdown (`duration`)")
	fs.BoolVar(&c.Server.GRPCReflection, "grpc-reflection", c.Server.GRPCReflection, "serve gRPC server reflection on the OTLP and KEDA listeners; --grpc-reflection=false turns it off (health is always served) (`bool`)")
	fs.IntVar(&c.Server.OTLPMaxConnections, "otlp-max-connections", c.Server.OTLPMaxConnections, "TCP connections open at once on the OTLP/gRPC listener; more are closed at accept and counted (`count`)")
	fs.IntVar(&c.Server.ScalerMaxConnections, "scaler-max-connections", c.Server.ScalerMaxConnections, "TCP connections open at once on the KEDA scaler listener; more are closed at accept and counted (`count`)")
	fs.IntVar(&c.Server.HTTPMaxConnections, "http-max-connections", c.Server.HTTPMaxConnections, "TCP connections open at once on the HTTP listener; more are closed at accept and counted (`count`)")
	fs.Var((*durationValue)(&c.Server.ShutdownTimeout), "shutdown-timeout", "grace period for in-flight calls after SIGTERM (`duration`, e.g. 15s)")
	fs.Var((*sizeValue)(&c.Receiver.MaxRecvSize), "otlp-max-recv-size", "largest OTLP request after decompression (`bytes`; suffixes KiB, MiB, GiB)")
	fs.Var((*sizeValue)(&c.Receiver.MaxInFlightBytes), "otlp-max-inflight-bytes", "memory OTLP requests may hold at once (bodies, decompressed bytes, JSON trees); beyond it Export answers Unavailable/503, which exporters retry (`bytes`; suffixes KiB, MiB, GiB; 0 = 2 × --otlp-max-recv-size)")
	fs.StringVar(&c.Receiver.Delta, "otlp-delta", c.Receiver.Delta, "delta temporality policy: reject (as Prometheus) or ingest (each delta point stored as raw samples; query with sum_over_time) (`policy`)")
	fs.Var((*listValue)(&c.Receiver.PromoteResourceAttributes), "otlp-promote-resource-attributes", "resource attributes also added as labels when the point has none of that name, e.g. k8s.node.name (comma-separated `list`)")
	fs.IntVar(&c.Receiver.MaxLabelsPerSeries, "max-labels-per-series", c.Receiver.MaxLabelsPerSeries, "labels per series after promotion; points with more are rejected (`count`)")
	fs.IntVar(&c.Receiver.MaxLabelNameLength, "max-label-name-length", c.Receiver.MaxLabelNameLength, "longest label name; longer points are rejected, never truncated (`bytes`)")
	fs.IntVar(&c.Receiver.MaxLabelValueLength, "max-label-value-length", c.Receiver.MaxLabelValueLength, "longest label value; longer points are rejected, never truncated (`bytes`)")
	fs.IntVar(&c.Receiver.MaxMetricNameLength, "max-metric-name-length", c.Receiver.MaxMetricNameLength, "longest OTLP metric name; longer metrics are rejected (`bytes`)")
	fs.StringVar(&c.Receiver.MetricAllowList, "metric-allow-list", c.Receiver.MetricAllowList, "store only metric families with a name matching this RE2 `regex` (whole name: stored name, OTLP name or legacy alias; empty: all)")
	fs.BoolVar(&c.Receiver.LazyIngest, "lazy-ingest", c.Receiver.LazyIngest, "store only metric families a cached trigger or a recent API query reads; a trigger asking for a new family answers Unavailable for --warmup (`bool`)")
	fs.Var((*durationValue)(&c.Store.Retention), "retention", "how long samples are kept in memory (`duration`)")
	fs.Var((*durationValue)(&c.Store.Freshness), "freshness", "floor of the per-series freshness window: a silent series stops counting this long after its last sample (`duration`)")
	fs.IntVar(&c.Store.MaxSeries, "max-series", c.Store.MaxSeries, "maximum active series; new series beyond it are rejected (`count`)")
	fs.IntVar(&c.Store.MaxSeriesPerMetric, "max-series-per-metric", c.Store.MaxSeriesPerMetric, "maximum active series per metric name; new series beyond it are rejected (`count`)")
	fs.IntVar(&c.Store.MaxSamplesPerSeries, "max-samples-per-series", c.Store.MaxSamplesPerSeries, "most samples one series keeps (12 B each, a native histogram 8 B more per bucket); a faster sender is thinned so its window still covers --retention, with samples retention/(this-1) to twice that apart; 4 to 4095 (`count`)")
	fs.Var((*sizeValue)(&c.Store.MaxSampleMemory), "max-sample-memory", "memory for all series' samples together; rings that would grow beyond it are thinned instead (`bytes`; suffixes KiB, MiB, GiB)")
	fs.Var((*durationValue)(&c.Store.SeriesTTL), "series-ttl", "delete a series after this long without a sample (`duration`; 0 = --retention)")
	fs.Var((*durationValue)(&c.Scaler.DefaultWindow), "default-window", "trigger window when the ScaledObject sets none (`duration`)")
	fs.Var((*durationValue)(&c.Scaler.Warmup), "warmup", "after start, GetMetrics and IsActive answer Unavailable for this long; 0 disables (`duration`)")
	fs.BoolVar(&c.Scaler.ReadyAfterFresh, "ready-after-fresh", c.Scaler.ReadyAfterFresh, "start the --warmup clock at the first stored sample no older than --freshness instead of at start; /readyz is 503 until warm-up ends (for HA replicas behind a fan-out) (`bool`)")
	fs.Var((*listValue)(&c.Scaler.ReadyPeers), "ready-peers", "with --ready-after-fresh: base `urls` (comma-separated http(s)://host:port) of the other replicas' HTTP listeners; after --warmup this replica stays not ready until it holds as many fresh series as every ready peer, less max(1, 0.5 %) (may list itself; unreachable and not-ready peers are ignored)")
	fs.Var((*durationValue)(&c.Scaler.ReadyPeersTimeout), "ready-peers-timeout", "with --ready-peers: turn ready anyway this long after --warmup ended, logged at warn and counted (`duration`)")
	fs.StringVar(&c.Scaler.ReadyPeersTLS.CAFile, "ready-peers-ca-file", c.Scaler.ReadyPeersTLS.CAFile, "PEM CA `file` that verifies the --ready-peers' HTTPS certificates (empty: system roots)")
	fs.StringVar(&c.Scaler.ReadyPeersTLS.CertFile, "ready-peers-cert-file", c.Scaler.ReadyPeersTLS.CertFile, "PEM client certificate `file` presented to --ready-peers that require one (with --ready-peers-key-file)")
	fs.StringVar(&c.Scaler.ReadyPeersTLS.KeyFile, "ready-peers-key-file", c.Scaler.ReadyPeersTLS.KeyFile, "PEM private key `file` for --ready-peers-cert-file")
	fs.StringVar(&c.Scaler.ReadyPeersTLS.ServerName, "ready-peers-server-name", c.Scaler.ReadyPeersTLS.ServerName, "`name` verified in the --ready-peers' certificates (empty: each URL's host)")
	fs.Var((*durationValue)(&c.Scaler.PushHoldoff), "push-holdoff", "at most one true per StreamIsActive stream per this period; 0 disables (`duration`)")
	fs.Var((*durationValue)(&c.Scaler.TriggerTTL), "trigger-ttl", "a compiled trigger unused this long is dropped from the cache (`duration`)")
	fs.IntVar(&c.Scaler.MaxTriggers, "max-triggers", c.Scaler.MaxTriggers, "compiled triggers cached at most; the least recently used is evicted (`count`)")
	fs.Var((*sizeValue)(&c.Scaler.MaxTriggerBytes), "max-trigger-bytes", "largest estimated memory of one compiled trigger; larger triggers are refused with InvalidArgument, and a plan whose working set between evaluations makes it larger drops that working set (`bytes`; suffixes KiB, MiB, GiB)")
	fs.Var((*sizeValue)(&c.Scaler.TriggerCacheBytes), "trigger-cache-bytes", "estimated memory of all cached triggers, their plans' working sets included, at most; the least recently used are evicted (`bytes`; suffixes KiB, MiB, GiB)")
	fs.IntVar(&c.Scaler.MaxStreams, "max-streams", c.Scaler.MaxStreams, "open StreamIsActive and StreamMetricSpec streams together; more are refused with ResourceExhausted (`count`)")
	fs.IntVar(&c.Scaler.MaxEvaluations, "max-evaluations", c.Scaler.MaxEvaluations, "GetMetrics and IsActive evaluations running at once, all triggers together; a call waits up to 1s for a slot, then gets ResourceExhausted; 0: max(4, 2 x GOMAXPROCS) (`count`)")
	fs.Var((*sizeValue)(&c.Query.MaxLabelBytes), "query-max-label-bytes", "label bytes one query evaluation may create with label_replace, label_join, count_values or histogram_quantiles; over it the evaluation fails (`bytes`; suffixes KiB, MiB, GiB)")
	fs.IntVar(&c.Query.MaxConcurrency, "query-max-concurrency", c.Query.MaxConcurrency, "query API requests evaluated and written at once; others wait (`count`)")
	fs.IntVar(&c.Query.MaxSamples, "query-max-samples", c.Query.MaxSamples, "samples (16 B each) one query API answer may hold; larger answers fail with 422 (`count`)")
	fs.Var((*durationValue)(&c.Query.Timeout), "query-timeout", "query API limit on waiting plus evaluating, and separately on writing the answer (`duration`)")
	fs.StringVar(&c.Log.Format, "log-format", c.Log.Format, "log format: text or json (`format`)")
	fs.StringVar(&c.Log.Level, "log-level", c.Log.Level, "log level: debug, info, warn or error (`level`)")
	return fs
}

// Load builds a Config from Default, then the environment, then args (the
// command line wins over the environment). It returns flag.ErrHelp for -h.
// Parse and validation problems are all reported together.
func Load(name string, args []string, getenv func(string) string, out io.Writer) (Config, error) {
	c := Default()
	fs := NewFlagSet(name, &c, out)
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(EnvName(f.Name)); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		errs = append(errs, err)
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	if len(errs) == 0 {
		errs = append(errs, c.Validate())
	}
	return c, errors.Join(errs...)
}

// durationValue accepts Prometheus durations ("1m30s", "2m") and Go
// durations ("1.5s", "500ms").
type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }

func (d *durationValue) Set(s string) error {
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}

// ParseDuration parses a Prometheus duration ("30s", "2m", "1m30s", "1d"),
// a Go duration ("1.5s") or plain seconds ("30"). "0" is zero.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return d, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 && f < 1e9 {
		return time.Duration(f * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("invalid duration %q (want e.g. 30s, 2m, 1m30s)", s)
}

// listValue is a comma-separated list; empty items are dropped.
type listValue []string

func (l *listValue) String() string { return strings.Join(*l, ",") }

func (l *listValue) Set(s string) error {
	*l = (*l)[:0]
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

type sizeValue int64

func (s *sizeValue) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *sizeValue) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeValue(n)
	return nil
}

// sizeUnits are ParseSize's suffixes, each with the most digits its number
// may have: every accepted size is below 2^62 bytes, and the grammar is one
// a regular expression states exactly (the Helm chart's values.schema.json
// carries it as sizePattern; test/helm checks the two agree).
var sizeUnits = []struct {
	suffix string
	mult   int64
	digits int
}{{"KiB", 1 << 10, 15}, {"MiB", 1 << 20, 12}, {"GiB", 1 << 30, 9}, {"", 1, 18}}

// ParseSize parses a byte count with an optional binary suffix: "1048576",
// "64MiB", "512KiB", "1GiB". The number is decimal digits without a sign,
// spaces or leading zeros ("0" itself is fine), at most 18 digits without a
// suffix, 15 with KiB, 12 with MiB and 9 with GiB.
func ParseSize(s string) (int64, error) {
	for _, u := range sizeUnits {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		if plainDigits(num, u.digits) {
			n, err := strconv.ParseInt(num, 10, 64)
			if err == nil {
				return n * u.mult, nil
			}
		}
		break
	}
	return 0, fmt.Errorf("invalid size %q (want a whole number of bytes, optionally with a KiB, MiB or GiB suffix, e.g. 64MiB)", s)
}

// plainDigits reports whether s is "0" or 1 to most decimal digits with no
// leading zero.
func plainDigits(s string, most int) bool {
	if s == "0" {
		return true
	}
	if s == "" || len(s) > most || s[0] == '0' {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
