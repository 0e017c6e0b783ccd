package otlpwire

import (
	"testing"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/synth"
)

type nopHandler struct{ points int }

func (*nopHandler) Resource([]KeyValue)             {}
func (*nopHandler) Scope(_, _ []byte, _ []KeyValue) {}
func (*nopHandler) Metric(*Metric, int) bool        { return true }
func (h *nopHandler) Point(*Point)                  { h.points++ }

// BenchmarkWalk measures the walker alone on 1000-point synth requests:
// pass=validate is the first pass only, pass=both the full Walk with a
// handler that does nothing.
//
// go test -run '^$' -bench '^BenchmarkWalk$' -benchmem -cpu 2 -count 6 ./pkg/internal/otlpwire
func BenchmarkWalk(b *testing.B) {
	p := synth.Config{Seed: 1, Series: 1000}.Cover(1e18)[0]
	for _, pass := range []string{"validate", "both"} {
		b.Run("pass="+pass+"/batch=1000", func(b *testing.B) {
			var w Walker
			h := &nopHandler{}
			b.ReportAllocs()
			b.SetBytes(int64(len(p.Bytes)))
			for b.Loop() {
				var err error
				if pass == "validate" {
					err = w.Validate(p.Bytes)
				} else {
					err = w.Walk(p.Bytes, h)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*p.Points), "ns/dp")
		})
	}
}
