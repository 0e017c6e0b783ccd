package receiver

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestMetricNameChurnReturnsToBaseline is issue #12's "metric names of
// deleted series are pinned for the life of the process", end to end: a
// sender exports counters under ever-new OTLP names (about 1 KiB each, the
// default --max-metric-name-length; each also registers its legacy alias)
// beside one steady counter, and stops sending each batch of names. With
// the store's TTL sweeper running, the store's symbols, its alias table and
// the heap come back to where they were after the first batch. A trigger
// that holds the steady counter's alias name (as the scaler does for a
// push subscription) keeps matching: the receiver keeps reporting that ID
// on every Export. Before, every name and alias stayed: +2 symbols and
// about 2 KiB of heap per name for the life of the process.
func TestMetricNameChurnReturnsToBaseline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const cycles, perCycle = 20, 50
		reg := prometheus.NewRegistry()
		st := store.New(store.Config{Retention: time.Minute, SeriesTTL: 20 * time.Second, SweepInterval: 5 * time.Second},
			store.Settings{Registerer: reg})
		require.NoError(t, st.Start(context.Background()))
		defer func() { require.NoError(t, st.Shutdown(context.Background())) }()
		var (
			mu      sync.Mutex
			touched []uint32
		)
		r := New(st, Config{}, Settings{OnIngest: func(ids []uint32) {
			mu.Lock()
			defer mu.Unlock()
			touched = append(touched, ids...)
		}})
		f := &fixture{st: st, r: r}
		held := st.AcquireMetricID("steady_requests") // the alias a trigger's query names
		defer st.ReleaseMetricIDs([]uint32{held})
		symbols := func() float64 { return testutil.ToFloat64(gaugeOf(t, reg, "keda_otel_scaler_store_symbols")) }

		long := strings.Repeat("n", 1000)
		steady := func() *metricspb.Metric {
			return counter("steady.requests", dpD(attrs("pod", "p"), uint64(time.Now().UnixNano()), float64(time.Now().Unix())))
		}
		var syms0 float64
		var aliases0 int
		var heap0 int64
		for c := range cycles {
			ms := []*metricspb.Metric{steady()}
			for i := range perCycle {
				name := "churn." + strconv.Itoa(c) + "." + strconv.Itoa(i) + "." + long
				ms = append(ms, counter(name, dpD(attrs("pod", "p"), uint64(time.Now().UnixNano()), 1)))
			}
			res := f.export(t, req(rm(attrs("service.name", "churner"), ms...)))
			require.Zero(t, res.rejected, res.message)
			// The steady counter goes on; the batch's names are never sent
			// again. 30 s of silence is past the TTL, and two more sweeps
			// rotate their IDs through quarantine.
			for range 8 {
				time.Sleep(5 * time.Second)
				mu.Lock()
				touched = touched[:0]
				mu.Unlock()
				res := f.export(t, req(rm(attrs("service.name", "churner"), steady())))
				require.Zero(t, res.rejected, res.message)
				mu.Lock()
				assert.Contains(t, touched, held, "cycle %d: the steady alias's subscribers are notified", c)
				mu.Unlock()
				synctest.Wait()
			}
			require.Equal(t, 1, st.NumSeries(), "cycle %d: the batch's series were swept", c)
			if c == 0 {
				syms0, aliases0, heap0 = symbols(), st.Aliases(), heapBytes()
			}
		}
		growth := heapBytes() - heap0
		t.Logf("%d names of 1 KiB in %d batches: symbols %v (after the first batch %v), aliases %d, heap %+d KiB",
			cycles*perCycle, cycles, symbols(), syms0, st.Aliases(), growth>>10)
		assert.InDelta(t, syms0, symbols(), 0, "symbols back to the first batch's")
		assert.Equal(t, aliases0, st.Aliases(), "aliases back to the first batch's")
		assert.Equal(t, 1, st.Aliases(), "only the steady counter's alias")
		assert.Less(t, growth, int64(256<<10), "heap back to the first batch's (without freeing: +3.7 MB)")
		mu.Lock()
		assert.True(t, slices.Contains(touched, held), "the held alias ID still names the steady alias")
		mu.Unlock()
	})
}

func heapBytes() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc) //nolint:gosec // far below 2^63
}

// gaugeOf returns the registered collector of the gauge name.
func gaugeOf(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			v := mf.GetMetric()[0].GetGauge().GetValue()
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: name}, func() float64 { return v })
		}
	}
	t.Fatalf("no gauge %s", name)
	return nil
}

// TestAliasComesBackWithItsName: a metric whose series all expired loses
// its legacy alias at the sweep (and the alias's ID may go to another
// name); when the sender exports it again, the receiver registers the
// alias again although its name cache still holds the old registration
// (the store's alias epoch moved), so the alias selects the new series and
// Exports report the alias's current ID.
func TestAliasComesBackWithItsName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := store.New(store.Config{Retention: time.Minute, SeriesTTL: 20 * time.Second, SweepInterval: 5 * time.Second}, store.Settings{})
		require.NoError(t, st.Start(context.Background()))
		defer func() { require.NoError(t, st.Shutdown(context.Background())) }()
		var (
			mu   sync.Mutex
			last []uint32
		)
		r := New(st, Config{}, Settings{OnIngest: func(ids []uint32) {
			mu.Lock()
			defer mu.Unlock()
			last = append(last[:0], ids...)
		}})
		f := &fixture{st: st, r: r}
		export := func() {
			res := f.export(t, req(rm(attrs("service.name", "shop"),
				counter("comeback.requests", dpD(attrs("pod", "p"), uint64(time.Now().UnixNano()), float64(time.Now().Unix()))))))
			require.Zero(t, res.rejected, res.message)
		}
		selectAlias := func() int {
			return len(st.Select(nil, labelsMatcher("comeback_requests")))
		}
		export()
		require.Equal(t, 1, selectAlias())
		epoch := st.AliasEpoch()
		time.Sleep(40 * time.Second) // past the TTL: the series and its alias go
		synctest.Wait()
		require.Zero(t, st.NumSeries())
		require.Zero(t, st.Aliases())
		require.NotEqual(t, epoch, st.AliasEpoch())
		for i := range 3 { // the same request shape, so the same name cache entries
			time.Sleep(time.Second)
			export()
			assert.Equal(t, 1, selectAlias(), "export %d: the alias selects the new series", i)
		}
		id, ok := st.AddAlias("comeback_requests", "comeback_requests_total")
		require.True(t, ok)
		mu.Lock()
		assert.Contains(t, last, id, "the Export reported the alias's current ID")
		mu.Unlock()
	})
}

func labelsMatcher(name string) *labels.Matcher {
	return labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, name)
}
