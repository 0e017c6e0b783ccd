package store

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkAppendStart is BenchmarkAppend through one Appender, as the
// receiver appends a request: start=none passes no start time (Append's
// cost plus a compare), start=steady the same start time every time, as a
// counter that carries its _created time does (one table load and compare
// more per sample).
//
// go test -run '^$' -bench '^BenchmarkAppendStart$' -benchmem -cpu 1 -benchtime 2000000x -count 3 ./pkg/store
func BenchmarkAppendStart(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		for _, start := range []string{"none", "steady"} {
			benchAppendStart(b, n, start)
		}
	}
}

func benchAppendStart(b *testing.B, n int, start string) {
	b.Run("series="+seriesName(n)+"/start="+start, func(b *testing.B) {
		if n >= 1_000_000 && testing.Short() {
			b.Skip("1M series: not under -short")
		}
		s, refs, t := appendFixture(b, n)
		st := int64(0)
		if start == "steady" {
			st = benchT0 - 60_000
			a := s.Appender()
			for _, ref := range refs {
				if err := a.Append(ref, st, t, 1); err != nil {
					b.Fatal(err)
				}
			}
			a.Commit()
			t += 15_000
		}
		perm := rand.New(rand.NewPCG(1, 2)).Perm(n)
		before := s.m.samples.load()
		b.ReportAllocs()
		a := s.Appender()
		i := 0
		for b.Loop() {
			if err := a.Append(refs[perm[i]], st, t, 1); err != nil {
				b.Fatal(err)
			}
			if i++; i == n {
				i, t = 0, t+15_000
			}
		}
		a.Commit()
		if got := s.m.samples.load() - before; got != uint64(b.N) {
			b.Fatalf("store took %d samples, want %d", got, b.N)
		}
	})
}
