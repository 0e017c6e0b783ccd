package scaler

import (
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// RPC method names, the values of the method label.
const (
	methodGetMetricSpec    = "GetMetricSpec"
	methodGetMetrics       = "GetMetrics"
	methodIsActive         = "IsActive"
	methodStreamIsActive   = "StreamIsActive"
	methodStreamMetricSpec = "StreamMetricSpec"
)

// Reasons a compiled trigger leaves the cache, the values of the reason
// label.
const (
	evictExpired = "expired" // unused for the trigger TTL
	evictLRU     = "lru"     // least recently used, to make room
)

type metrics struct {
	rpcs        *prometheus.CounterVec
	ok          map[string]prometheus.Counter // resolved once: the hot path does no label lookup
	evalSeconds prometheus.Histogram
	streams     prometheus.Gauge
	pushes      prometheus.Counter
	deferred    prometheus.Counter
	triggers    prometheus.Gauge
	// triggerBytes and evicted watch the compiled-trigger cache's bounds.
	triggerBytes prometheus.Gauge
	evicted      map[string]prometheus.Counter
	// trimmed counts plans whose working set was dropped to keep the
	// cache's byte bounds (Scaler.account).
	trimmed prometheus.Counter
	// triggerWarnings counts the warnings of compiled triggers;
	// triggerWarningsUnlogged those the log limiter dropped.
	triggerWarnings, triggerWarningsUnlogged prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_scaler_rpcs_total",
			Help: "ExternalScaler calls by method and gRPC code; streams are counted when they end.",
		}, []string{"method", "code"}),
		evalSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keda_otel_scaler_scaler_evaluation_seconds",
			Help:    "Time to evaluate a trigger's query and reduce it to one value.",
			Buckets: prometheus.ExponentialBuckets(5e-6, 4, 10),
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keda_otel_scaler_scaler_open_streams",
			Help: "Open StreamIsActive streams.",
		}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_scaler_pushes_total",
			Help: "true messages sent on StreamIsActive streams.",
		}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_scaler_pushes_deferred_total",
			Help: "true messages held back on a StreamIsActive stream because the client had not yet taken the previous one; each is sent, latest state wins, once it has.",
		}),
		triggers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keda_otel_scaler_scaler_triggers_cached",
			Help: "Compiled triggers in the cache.",
		}),
		triggerBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keda_otel_scaler_scaler_trigger_cache_bytes",
			Help: "Estimated bytes held by the compiled triggers in the cache: each compiled plan plus the working set it kept from its last evaluation (bounded by --trigger-cache-bytes).",
		}),
		trimmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_scaler_trigger_plans_trimmed_total",
			Help: "Evaluations after which a trigger's plan dropped its working set because it did not fit --max-trigger-bytes, or --trigger-cache-bytes beside held triggers; its next evaluation allocates it again.",
		}),
		triggerWarnings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_scaler_trigger_warnings_total",
			Help: "Warnings of triggers entering the cache (alias conflicts, unknown operationOverTime, KServe v0.15 signature, query plan warnings); each is logged once unless the log limit dropped it.",
		}),
		triggerWarningsUnlogged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_scaler_trigger_warnings_unlogged_total",
			Help: "Trigger warnings not logged because more arrived than the log limit (a burst of 20, then one a second) allows.",
		}),
	}
	evicted := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keda_otel_scaler_scaler_triggers_evicted_total",
		Help: "Compiled triggers removed from the cache: expired (unused for --trigger-ttl) or lru (to make room).",
	}, []string{"reason"})
	m.evicted = map[string]prometheus.Counter{}
	for _, r := range []string{evictExpired, evictLRU} {
		m.evicted[r] = evicted.WithLabelValues(r)
	}
	m.ok = map[string]prometheus.Counter{}
	for _, meth := range []string{methodGetMetricSpec, methodGetMetrics, methodIsActive, methodStreamIsActive, methodStreamMetricSpec} {
		m.ok[meth] = m.rpcs.WithLabelValues(meth, codes.OK.String())
	}
	if reg != nil {
		reg.MustRegister(m.rpcs, m.evalSeconds, m.streams, m.pushes, m.deferred, m.triggers, m.triggerBytes, evicted, m.trimmed, m.triggerWarnings, m.triggerWarningsUnlogged)
	}
	return m
}

func (m *metrics) rpc(method string, c codes.Code) {
	m.rpcs.WithLabelValues(method, c.String()).Inc()
}
