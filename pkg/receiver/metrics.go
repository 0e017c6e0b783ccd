package receiver

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	accepted prometheus.Counter
	rejected *prometheus.CounterVec
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_points_accepted_total",
			Help: "Samples appended to the store.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_points_rejected_total",
			Help: "Points refused, by reason; each is reported through OTLP partial success.",
		}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_requests_total",
			Help: "Export requests by transport and status code.",
		}, []string{"transport", "code"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_bytes_total",
			Help: "Request bytes received, as sent on the wire, by transport.",
		}, []string{"transport"}),
	}
	if reg != nil {
		reg.MustRegister(m.accepted, m.rejected, m.requests, m.bytes)
	}
	return m
}
