package scaler

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// wideStore holds n series of the gauge g, each with value 1 now.
func wideStore(t *testing.T, n int) *store.Store {
	t.Helper()
	st := store.New(store.Config{Retention: 10 * time.Minute}, store.Settings{})
	now := time.Now().UnixMilli()
	for p := range n {
		lset := labels.FromStrings(labels.MetricName, "g", "pod", "pod-"+strconv.Itoa(p), "model", "m"+strconv.Itoa(p%7))
		r, err := st.Create(lset.Hash(), lset)
		require.NoError(t, err)
		require.NoError(t, st.Append(r, now, 1))
	}
	return st
}

// wideRef is trigger i of a tenant: a distinct query over every series.
func wideRef(i int) *externalscaler.ScaledObjectRef {
	return &externalscaler.ScaledObjectRef{Namespace: "tenant", Name: fmt.Sprintf("so-%d", i), ScalerMetadata: map[string]string{
		"metricQuery": fmt.Sprintf("sum(g > -%d)", i), "targetValue": "1",
	}}
}

// TestTriggerWorkingSetsBoundedByCacheBytes is issue #12's class for the
// trigger cache: triggers whose queries select many series keep a working
// set per plan (refs, handles, group indices) that the compiled size does
// not show. Many of them, evaluated through the scaler, must stay within
// --trigger-cache-bytes (plus a stated slack for the store's read paths
// and the measurement), and the cache's byte gauge must count them.
// Before plans' working sets were charged, 16 such triggers over 20,000
// series kept about 30 MB against an 8 MiB bound.
func TestTriggerWorkingSetsBoundedByCacheBytes(t *testing.T) {
	if raceEnabled {
		t.Skip("heap gate: runs without -race in make gates")
	}
	const (
		series     = 20_000
		triggers   = 16
		cacheBytes = 8 << 20
		slack      = 2 << 20
	)
	st := wideStore(t, series)
	s := New(query.NewEngine(st), st, Config{TriggerCacheBytes: cacheBytes, MaxTriggerBytes: 4 << 20}, Settings{})
	defer s.Drain()
	h0 := heapLive()
	for i := range triggers {
		for range 2 {
			res, err := s.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: wideRef(i)})
			require.NoError(t, err)
			require.Len(t, res.GetMetricValues(), 1)
			assert.InDelta(t, float64(series), res.GetMetricValues()[0].GetMetricValueFloat(), 0)
		}
		active, err := s.IsActive(context.Background(), wideRef(i))
		require.NoError(t, err)
		assert.True(t, active.GetResult())
	}
	h1 := heapLive()
	gauge, _ := s.cache.stats()
	t.Logf("heap held by %d triggers over %d series: %d B; cache gauge %d B; bound %d B; cached %d",
		triggers, series, h1-h0, gauge, cacheBytes, s.cache.len())
	assert.LessOrEqual(t, h1-h0, int64(cacheBytes+slack), "the triggers' memory is bounded by --trigger-cache-bytes")
	assert.LessOrEqual(t, gauge, int64(cacheBytes))
	assert.GreaterOrEqual(t, float64(gauge), 0.8*float64(h1-h0), "the gauge counts the plans' working sets")
	assert.Less(t, s.cache.len(), triggers, "triggers were evicted to make room")
	runtime.KeepAlive(s)
}

// TestTriggerOverMaxTriggerBytesIsTrimmed: a trigger whose working set
// alone is over --max-trigger-bytes answers correctly every time, and its
// plan drops the working set after each evaluation, so the cache never
// counts or keeps more than the bound for it.
func TestTriggerOverMaxTriggerBytesIsTrimmed(t *testing.T) {
	const series = 20_000
	st := wideStore(t, series)
	s := New(query.NewEngine(st), st, Config{MaxTriggerBytes: 1 << 20}, Settings{})
	defer s.Drain()
	r := &externalscaler.ScaledObjectRef{Namespace: "tenant", Name: "wide", ScalerMetadata: map[string]string{
		"metricQuery": "sum(g)", "targetValue": "1",
	}}
	var h0 int64
	for i := range 3 {
		res, err := s.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: r})
		require.NoError(t, err)
		assert.InDelta(t, float64(series), res.GetMetricValues()[0].GetMetricValueFloat(), 0)
		assert.InDelta(t, float64(i+1), testutil.ToFloat64(s.m.trimmed), 0, "trimmed after every evaluation")
		gauge, _ := s.cache.stats()
		assert.LessOrEqual(t, gauge, int64(1<<20))
		if !raceEnabled {
			h := heapLive()
			if i == 0 {
				h0 = h
			} else {
				assert.Less(t, h-h0, int64(256<<10), "a trimmed plan keeps nothing between evaluations")
			}
		}
	}
	// A narrower trigger is not trimmed.
	r.ScalerMetadata["metricQuery"] = `sum(g{pod="pod-1"})`
	_, err := s.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: r})
	require.NoError(t, err)
	assert.InDelta(t, 3, testutil.ToFloat64(s.m.trimmed), 0)
}

// TestResizeHeldTriggers: held triggers count toward the bound with their
// working sets, are never evicted for one, and a trigger that cannot grow
// beside them is trimmed instead.
func TestResizeHeldTriggers(t *testing.T) {
	c := newTriggerCache(int64(time.Hour), 100, 1000, newMetrics(nil))
	mk := func(name string, cost int64) *trigger {
		return &trigger{key: triggerKey{ns: "ns", name: name}, cost: cost}
	}
	held, a, b := mk("held", 100), mk("a", 100), mk("b", 100)
	for _, tr := range []*trigger{a, b} {
		_, ok, _, err := c.add(tr, 1, false)
		require.NoError(t, err)
		require.True(t, ok)
	}
	_, ok, _, err := c.add(held, 2, true)
	require.NoError(t, err)
	require.True(t, ok)

	// held grows to 700: 900 in all, fits.
	ev, trim := c.resize(held, 600, 1000)
	assert.Empty(t, ev)
	assert.False(t, trim)
	bytes, _ := c.stats()
	assert.EqualValues(t, 900, bytes)

	// b grows by 200: a (least recently used) is evicted for it.
	c.get(&b.key, b.key.hash(c.seed), 3, false)
	ev, trim = c.resize(b, 200, 1000)
	assert.Equal(t, []*trigger{a}, ev)
	assert.False(t, trim)
	bytes, _ = c.stats()
	assert.EqualValues(t, 1000, bytes)

	// held grows by 300 beside b: b goes.
	ev, trim = c.resize(held, 900, 1000)
	assert.Equal(t, []*trigger{b}, ev)
	assert.False(t, trim)
	bytes, _ = c.stats()
	assert.EqualValues(t, 1000, bytes)
	// Nothing unheld is left: held cannot grow and is trimmed instead.
	ev, trim = c.resize(held, 950, 1000)
	assert.Empty(t, ev)
	assert.True(t, trim)
	// Over --max-trigger-bytes alone: trimmed.
	_, trim = c.resize(held, 2000, 1500)
	assert.True(t, trim)
	bytes, _ = c.stats()
	assert.EqualValues(t, 1000, bytes, "a refused resize changes nothing")
	// After the trim, the smaller size is charged.
	ev, trim = c.resize(held, 10, 1000)
	assert.Empty(t, ev)
	assert.False(t, trim)
	bytes, _ = c.stats()
	assert.EqualValues(t, 110, bytes)
	c.unhold(held, 4)
	bytes, _ = c.stats()
	assert.EqualValues(t, 110, bytes)
}

// TestStreamHeldTriggerWorkingSetCounted: a trigger held by an open
// StreamIsActive stream is charged its working set after the stream's
// evaluations, is never evicted for polled triggers, and polled triggers
// that do not fit beside it are evicted or trimmed; every call answers
// and the cache stays within its bound.
func TestStreamHeldTriggerWorkingSetCounted(t *testing.T) {
	const (
		series     = 20_000
		cacheBytes = 8 << 20
	)
	synctest.Test(t, func(t *testing.T) {
		st := wideStore(t, series)
		s := New(query.NewEngine(st), st, Config{TriggerCacheBytes: cacheBytes, MaxTriggerBytes: 6 << 20}, Settings{})
		t.Cleanup(s.Drain)
		e := &env{st: st, s: s}
		md := map[string]string{"metricQuery": "sum(g > -1)", "targetValue": "1", "activationThreshold": "0"}
		fs, cancel := e.open(t, md)
		synctest.Wait()
		assert.Equal(t, []bool{true}, fs.got())
		s.cache.mu.Lock()
		held := s.cache.heldBytes
		s.cache.mu.Unlock()
		assert.Greater(t, held, int64(1<<20), "the held trigger's working set is counted")

		for i := range 4 {
			res, err := s.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: wideRef(i)})
			require.NoError(t, err)
			assert.InDelta(t, float64(series), res.GetMetricValues()[0].GetMetricValueFloat(), 0)
			gauge, _ := s.cache.stats()
			assert.LessOrEqual(t, gauge, int64(cacheBytes))
		}
		time.Sleep(time.Second)
		e.push(t, "g", 1, "pod", "pod-new", "model", "m0")
		synctest.Wait()
		gauge, _ := s.cache.stats()
		assert.LessOrEqual(t, gauge, int64(cacheBytes))
		s.cache.mu.Lock()
		assert.Equal(t, 1, s.cache.heldN, "the held trigger stays cached")
		s.cache.mu.Unlock()
		require.NoError(t, cancel())
	})
}
