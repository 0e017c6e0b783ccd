package store

import (
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMetricNamesFreedWithTheirSeries is issue #12's "metric names of
// deleted series are pinned for the life of the process": a sender keeps
// inventing metric names (1 KiB each, the default --max-metric-name-length),
// each with a series and a legacy alias, and the series die. After the
// sweeps, the symbol table, the alias table and the heap are back where
// they were after the first cycle, while a live series' name and alias, a
// name a trigger holds, and the IDs both report keep working. A name
// registered as an alias target that never gets a series goes too. Before,
// every name and alias stayed pinned: the table grew by one name per
// series ever created (and the heap by its bytes), and the alias table
// filled up.
func TestMetricNamesFreedWithTheirSeries(t *testing.T) {
	const cycles, perCycle = 40, 100
	clk := &movingClock{}
	clk.ms.Store(1_000_000)
	s := New(Config{Retention: time.Minute, Freshness: -1, SeriesTTL: 10 * time.Second}, Settings{Now: clk.now})
	steady := mustCreate(t, s, 1<<62, "__name__", "steady_total", "pod", "p")
	steadyID, _ := s.SeriesMetricID(steady)
	steadyAlias, ok := s.AddAlias("steady", "steady_total")
	require.True(t, ok)
	held := s.AcquireMetricID("trigger_only") // a compiled trigger's name
	defer s.ReleaseMetricIDs([]uint32{held})

	long := strings.Repeat("x", 1000)
	hash := uint64(1)
	var syms0, aliases0 int
	var heap0 int64
	epoch0 := s.AliasEpoch()
	for c := range cycles {
		for i := range perCycle {
			base := "churn_" + strconv.Itoa(c) + "_" + strconv.Itoa(i) + "_" + long
			ref := mustCreate(t, s, hash, "__name__", base+"_total", "pod", "p")
			hash++
			require.NoError(t, s.Append(ref, clk.ms.Load(), 1))
			_, ok := s.AddAlias(base, base+"_total")
			require.True(t, ok, "cycle %d: the alias table has room", c)
		}
		_, ok := s.AddAlias("never_"+strconv.Itoa(c), "never_stored_"+strconv.Itoa(c)) // no series ever
		require.True(t, ok)
		clk.ms.Add(11_000)
		require.NoError(t, s.Append(steady, clk.ms.Load(), 1))
		require.Equal(t, perCycle, s.Sweep(), "cycle %d", c)
		s.Sweep() // rotates the freed IDs through quarantine
		if c == 0 {
			syms0, _ = s.syms.stats()
			aliases0 = s.Aliases()
			heap0 = liveHeap()
		}
	}
	n, b := s.syms.stats()
	growth := liveHeap() - heap0
	t.Logf("%d unique 1 KiB metric names with aliases: symbols %d (%d B), aliases %d, heap %+d KiB after the first cycle; without freeing: %d more symbols",
		cycles*perCycle, n, b, s.Aliases(), growth>>10, 2*(cycles-1)*perCycle)
	assert.Equal(t, syms0, n, "symbols back to the first cycle's")
	assert.Equal(t, 6, n, "__name__, pod, p, steady_total, its alias steady, trigger_only")
	assert.Equal(t, aliases0, s.Aliases())
	assert.Equal(t, 1, s.Aliases(), "only the live series' alias")
	assert.Less(t, growth, int64(256<<10), "heap back to the first cycle's (without freeing: +8 MB of names)")
	assert.Greater(t, s.AliasEpoch(), epoch0, "deletions moved the alias epoch")

	got, ok := s.SeriesMetricID(steady)
	require.True(t, ok)
	assert.Equal(t, steadyID, got, "a live series keeps its name's ID")
	id, ok := s.AddAlias("steady", "steady_total")
	require.True(t, ok)
	assert.Equal(t, steadyAlias, id, "a live alias keeps its ID")
	assert.Equal(t, []SeriesRef{steady}, s.Select(nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "steady")), "the alias still selects")
	assert.Equal(t, held, s.AcquireMetricID("trigger_only"), "a held name keeps its ID")
	s.ReleaseMetricIDs([]uint32{held})
	assert.Equal(t, "trigger_only", s.syms.str(held))
	assert.Equal(t, []string{"steady_total"}, s.LabelValues(nil, "__name__"))
}

// TestAliasOfNewNameSurvivesSweep: a sweep between an alias's registration
// and its name's first series drops the alias and moves the epoch; the
// receiver, seeing the epoch move, registers again and the alias works.
func TestAliasOfNewNameSurvivesSweep(t *testing.T) {
	clk := &movingClock{}
	clk.ms.Store(1_000_000)
	s := New(Config{Retention: time.Minute, Freshness: -1, SeriesTTL: 10 * time.Second}, Settings{Now: clk.now})
	e := s.AliasEpoch()
	id, ok := s.AddAlias("req", "req_total")
	require.True(t, ok)
	s.Sweep()
	assert.NotEqual(t, e, s.AliasEpoch(), "the sweep dropped the alias of a name without series")
	ref := mustCreate(t, s, 1, "__name__", "req_total")
	require.NoError(t, s.Append(ref, clk.ms.Load(), 1))
	assert.Empty(t, s.Select(nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "req")))
	id2, ok := s.AddAlias("req", "req_total") // what the receiver does when the epoch moved
	require.True(t, ok)
	assert.Equal(t, "req", s.syms.str(id2))
	_ = id
	s.Sweep()
	s.Sweep()
	assert.Equal(t, []SeriesRef{ref}, s.Select(nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "req")), "kept while its name has series")
}

func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc) //nolint:gosec // far below 2^63
}

// TestAliasPruneConcurrent races alias registrations against series
// creation and sweeps that prune the aliases: when every series is gone,
// the sweeps leave no alias and no symbol but __name__ (no hold leaked,
// none released twice), and an ID AddAlias returns always names its alias
// unless the epoch moved since it was read. Run with -race.
func TestAliasPruneConcurrent(t *testing.T) {
	clk := &movingClock{}
	clk.ms.Store(1_000_000)
	s := New(Config{Retention: time.Minute, Freshness: -1, SeriesTTL: 10 * time.Second}, Settings{Now: clk.now})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := range 500 {
				k := strconv.Itoa((w*7 + i) % 20)
				e := s.AliasEpoch()
				id, ok := s.AddAlias("m"+k, "m"+k+"_total")
				if ok && s.syms.str(id) != "m"+k && s.AliasEpoch() == e {
					t.Errorf("alias m%s: ID %d reads %q with the epoch unchanged", k, id, s.syms.str(id))
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 500 {
			k := strconv.Itoa(i % 20)
			ref, err := s.Create(uint64(i), labels.FromStrings("__name__", "m"+k+"_total", "i", strconv.Itoa(i)))
			if err != nil {
				t.Error(err)
				return
			}
			_ = s.Append(ref, clk.ms.Load(), 1)
			if i%25 == 0 {
				clk.ms.Add(11_000)
				s.Sweep()
			}
		}
	})
	wg.Wait()
	clk.ms.Add(11_000)
	for range 3 {
		s.Sweep()
	}
	assert.Zero(t, s.NumSeries())
	assert.Zero(t, s.Aliases(), "every alias went with its names' series")
	n, _ := s.syms.stats()
	assert.Equal(t, 1, n, "__name__ alone: no alias hold leaked")
}
