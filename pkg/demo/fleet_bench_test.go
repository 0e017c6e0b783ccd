package demo

import (
	"fmt"
	"testing"
)

// BenchmarkFleetAdvance measures the simulator's cost per simulated second
// with a saturated fleet, which bounds how fast the demo can run.
//
// go test -run '^$' -bench '^BenchmarkFleetAdvance$' -benchmem -cpu 2 -count 3 ./pkg/demo
func BenchmarkFleetAdvance(b *testing.B) {
	for _, pods := range []int{1, 8} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			cfg := DefaultFleetConfig()
			cfg.StartupDelay = 0
			f := NewFleet(cfg)
			f.Scale(pods)
			rate := func(float64) float64 { return 3 * float64(pods) }
			f.Advance(60, rate) // warm up into a steady state
			b.ReportAllocs()
			for b.Loop() {
				f.Advance(f.Now()+1, rate)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/sim-s")
		})
	}
}
