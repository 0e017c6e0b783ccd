package store

import (
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var checkpointFigures = flag.Bool("checkpoint-figures", false, "run TestCheckpointFigures (make checkpoint-figures): checkpoint cost at 100k and 1M series")

// TestCheckpointFigures measures what a checkpoint costs (the README's
// figures): a store of n realistic vLLM series, each holding a full
// default window (41 samples: 10 minutes at 15 s), is written as the
// server writes it (bufio, fsync, rename, directory fsync) and read back
// as the server restores it. It reports wall time, process CPU time
// (nothing else runs meanwhile) and the file's size; it asserts only that
// the round trip restores every series. Not part of make test:
//
//	make checkpoint-figures   (go test -run '^TestCheckpointFigures$' -v ./pkg/store -checkpoint-figures)
func TestCheckpointFigures(t *testing.T) {
	if !*checkpointFigures {
		t.Skip("measurement: make checkpoint-figures")
	}
	for _, n := range []int{100_000, 1_000_000} {
		t.Run("series="+seriesName(n), func(t *testing.T) {
			const (
				slots = 41
				iv    = int64(15_000)
				t0    = int64(1_700_000_000_000)
			)
			fleet := newVLLMFleet(t)
			now := fixedClock(t0 + (slots-1)*iv)
			s := New(Config{Freshness: -1, MaxSeries: n, MaxSeriesPerMetric: n}, Settings{Now: now})
			refs := make([]SeriesRef, n)
			for i := range refs {
				lset, h := fleet.series(i)
				ref, err := s.Create(h, lset)
				require.NoError(t, err)
				refs[i] = ref
			}
			for k := range int64(slots) {
				for i, ref := range refs {
					require.NoError(t, s.Append(ref, t0+k*iv, float64(i)+float64(k)*0.25))
				}
			}
			dir := t.TempDir()
			path := filepath.Join(dir, "store.snapshot")
			runtime.GC()
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			c0, w0 := cpuNow(t), time.Now()
			f, err := os.CreateTemp(dir, "store.snapshot.tmp-*")
			require.NoError(t, err)
			require.NoError(t, s.WriteSnapshot(f))
			require.NoError(t, f.Sync())
			require.NoError(t, f.Close())
			require.NoError(t, os.Rename(f.Name(), path))
			d, err := os.Open(dir)
			require.NoError(t, err)
			require.NoError(t, d.Sync())
			require.NoError(t, d.Close())
			wall, cpu := time.Since(w0), cpuNow(t)-c0
			runtime.ReadMemStats(&ms1)
			st, err := os.Stat(path)
			require.NoError(t, err)
			t.Logf("write: series=%d size=%.1f MiB (%.0f B/series) wall=%v cpu=%v allocated=%.1f MiB",
				n, float64(st.Size())/(1<<20), float64(st.Size())/float64(n), wall.Round(time.Millisecond),
				cpu.Round(time.Millisecond), float64(ms1.TotalAlloc-ms0.TotalAlloc)/(1<<20))

			dst := New(Config{Freshness: -1, MaxSeries: n, MaxSeriesPerMetric: n}, Settings{Now: now})
			runtime.GC()
			c0, w0 = cpuNow(t), time.Now()
			rf, err := os.Open(path)
			require.NoError(t, err)
			restored, _, err := dst.ReadSnapshotAt(rf, st.Size())
			require.NoError(t, err)
			require.NoError(t, rf.Close())
			wall, cpu = time.Since(w0), cpuNow(t)-c0
			require.Equal(t, n, restored)
			t.Logf("restore: series=%d wall=%v cpu=%v", n, wall.Round(time.Millisecond), cpu.Round(time.Millisecond))
			runtime.KeepAlive(s)
		})
	}
}
