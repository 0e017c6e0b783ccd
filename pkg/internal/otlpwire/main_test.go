package otlpwire

import (
	"testing"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/fuzzflags"
)

// TestMain bounds fuzz minimisation (fuzzflags).
func TestMain(m *testing.M) {
	fuzzflags.Init()
	m.Run()
}
