package query

import (
	"context"
	"testing"
)

var sinkF float64

// BenchmarkEval measures one steady-state evaluation of the hot trigger
// shapes over 1000 series (hq_sum_rate: 100 pods × 11 buckets).
//
// go test -run '^$' -bench '^BenchmarkEval$' -benchmem -cpu 2 -count 6 ./pkg/query
func BenchmarkEval(b *testing.B) {
	for _, expr := range []string{"sum", "sum_rate", "hq_sum_rate"} {
		b.Run("expr="+expr+"/series=1000", func(b *testing.B) {
			plan, ts := evalFixture(b, expr, 1000)
			ctx := context.Background()
			if _, err := plan.Eval(ctx, ts); err != nil { // warm the caches
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				res, err := plan.Eval(ctx, ts)
				if err != nil || len(res.Vector) != 1 {
					b.Fatalf("eval: %v, %d elements", err, len(res.Vector))
				}
				sinkF = res.Vector[0].F
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/series")
		})
	}
}
