package promapi

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/fuzzflags"
)

// TestMain bounds fuzz minimisation (fuzzflags) and checks for leaked
// goroutines.
func TestMain(m *testing.M) {
	fuzzflags.Init()
	goleak.VerifyTestMain(m)
}
