// Package k8s runs keda-otel-scaler under a real Kubernetes control plane:
// etcd, kube-apiserver and kube-controller-manager (kube/), KEDA's operator
// and metrics adapter (keda/), fake vLLM pods with real OpenTelemetry
// Collectors, and the scaler's own binary, all local processes in a network
// namespace of their own. `make e2e-k8s` runs it; README.md describes what it
// proves and what the first build costs.
package k8s
