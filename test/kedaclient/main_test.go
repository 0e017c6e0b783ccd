package kedaclient

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that nothing this package starts outlives the tests:
// every KEDA scaler is Closed (which closes KEDA's pooled gRPC
// connection), every push scaler's Run context is cancelled, and the
// server is shut down. The one goroutine ignored is OpenCensus's view
// worker, started by an init function of a library pkg/scalers links; no
// code can stop it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"))
}
