// Package e2e runs keda-otel-scaler end to end the way a cluster does: a real
// OpenTelemetry Collector (built from the Go module proxy, see otelcol/) per
// fake vLLM pod scrapes /metrics and pushes OTLP to the real scaler binary,
// and KEDA's generated ExternalScaler client asks for KServe-shaped triggers.
// It is a nested module so the collector and its dependencies never touch
// the scaler's go.mod. Run it with `make e2e`.
package e2e
