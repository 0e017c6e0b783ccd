// Package kedaclient tests keda-otel-scaler with KEDA's own scaler code as
// the client (keda-contract.md §12 item 46): the external and
// external-push scalers of github.com/kedacore/keda/v2/pkg/scalers talk to
// a real in-process server over gRPC, and the test asserts what KEDA makes
// of our answers (HPA metric spec, metric quantity, activity, pushed
// activation).
//
// It is a nested module because pkg/scalers compiles every cloud SDK KEDA
// supports: a cold build takes over ten minutes on two cores, so it is not
// part of `make test`; run it with `make keda-client-test`.
package kedaclient
