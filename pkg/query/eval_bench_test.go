package query

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time. On a shared machine the
// wall-clock ns/op includes time spent waiting for a core; cpu-ns/op does
// not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var sinkF float64

// BenchmarkEval measures one steady-state evaluation of the hot trigger
// shapes over 1000 series (hq_sum_rate: 100 pods × 11 buckets;
// subq_max_sum_rate: max_over_time(sum(rate(x[1m]))[5m:15s]), 20 steps;
// nhq_sum_rate: histogram_quantile over the rate of 1000 native
// histograms of 24 buckets).
//
// go test -run '^$' -bench '^BenchmarkEval$' -benchmem -cpu 2 -count 6 ./pkg/query
func BenchmarkEval(b *testing.B) {
	for _, expr := range []string{"sum", "sum_rate", "hq_sum_rate", "subq_max_sum_rate", "nhq_sum_rate"} {
		b.Run("expr="+expr+"/series=1000", func(b *testing.B) {
			plan, ts := evalFixture(b, expr, 1000)
			ctx := context.Background()
			if _, err := plan.Eval(ctx, ts); err != nil { // warm the caches
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				res, err := plan.Eval(ctx, ts)
				if err != nil || len(res.Vector) != 1 {
					b.Fatalf("eval: %v, %d elements", err, len(res.Vector))
				}
				sinkF = res.Vector[0].F
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/series")
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}
