package receiver

import "github.com/prometheus/client_golang/prometheus"

// metrics are the receiver's self-metrics. Per-point counts are summed per
// request and added once, so the hot path touches no shared counter.
type metrics struct {
	accepted   prometheus.Counter
	rejected   [numReasons]prometheus.Counter
	requests   *prometheus.CounterVec
	bytes      *prometheus.CounterVec
	decode     *prometheus.HistogramVec
	nonFinite  prometheus.Counter
	expHist    prometheus.Counter
	overloaded prometheus.Counter
	lag        prometheus.Histogram
	twins      prometheus.Counter
	// startResets is counter_resets_total{cause="start_time"}.
	startResets prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keda_otel_scaler_receiver_points_rejected_total",
		Help: "OTLP data points refused, by reason; each is reported through OTLP partial success.",
	}, []string{"reason"})
	m := &metrics{
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_points_accepted_total",
			Help: "OTLP data points stored (every series they map to appended).",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_requests_total",
			Help: "Export requests by transport and status code.",
		}, []string{"transport", "code"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_bytes_total",
			Help: "Request bytes received after decompression, by transport and encoding.",
		}, []string{"transport", "encoding"}),
		decode: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keda_otel_scaler_receiver_decode_seconds",
			Help:    "Time to decode a request and append its points, by encoding.",
			Buckets: prometheus.ExponentialBuckets(1e-5, 4, 10),
		}, []string{"encoding"}),
		nonFinite: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_non_finite_points_total",
			Help: "Number points stored with a NaN or infinite value.",
		}),
		expHist: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_exponential_histogram_points_total",
			Help: "Exponential histogram points, stored as native histograms plus their _count and _sum.",
		}),
		twins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_series_identical_labels_total",
			Help: "New series whose metric name and visible labels equal a live series': they differ only in resource or scope attributes that are not labels (otlp-contract.md §8.3).",
		}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_overloaded_total",
			Help: "Exports refused with Unavailable because the in-flight bound was reached.",
		}),
	}
	m.lag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "keda_otel_scaler_receiver_sample_lag_seconds",
		Help:    "Receiver clock minus the newest sample time of each request; large or negative values mean sender clock skew or delay.",
		Buckets: []float64{-60, -5, 0, 1, 5, 15, 30, 60, 120, 300, 600},
	})
	resets := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keda_otel_scaler_receiver_counter_resets_total",
		Help: "Cumulative series seen restarting, by cause; start_time: a series' OTLP start time changed while its value did not fall (rate and increase are unaffected: only a falling value is a reset to them).",
	}, []string{"cause"})
	m.startResets = resets.WithLabelValues("start_time")
	for i := range m.rejected {
		if reason(i) != reasonNone {
			m.rejected[i] = rejected.WithLabelValues(reason(i).String())
		} else {
			m.rejected[i] = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"})
		}
	}
	if reg != nil {
		reg.MustRegister(m.accepted, rejected, m.requests, m.bytes, m.decode, m.nonFinite, m.expHist, m.overloaded, m.lag, m.twins, resets)
	}
	return m
}
