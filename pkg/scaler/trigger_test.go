package scaler

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// The cases of parseSpec and lowering are the trigger table
// (testdata/triggers.json, TestTriggerTable in table_test.go).

// TestGetMetricSpecCachedDoesNoWork is checklist item 42: a cached trigger
// costs only the response objects; parsing or compiling would allocate
// dozens of times.
func TestGetMetricSpecCachedDoesNoWork(t *testing.T) {
	e := newEnv(t, Config{})
	r := ref(map[string]string{"metricQuery": `sum(rate(x{a="b"}[1m]))`, "targetValue": "4", "scalerAddress": "x:4318"})
	r.ScalerMetadata["metricQuery"] = `sum(x{a="b", c=~"d|e"})`
	_, err := e.s.GetMetricSpec(context.Background(), r)
	require.NoError(t, err)
	gen := e.st.Generation()
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = e.s.GetMetricSpec(context.Background(), r)
	})
	assert.LessOrEqual(t, allocs, 3.0, "response, slice and spec only")
	assert.Equal(t, gen, e.st.Generation())
	assert.Equal(t, 1, e.s.cache.len())
	// The lookup GetMetrics and IsActive share allocates nothing.
	assert.Zero(t, testing.AllocsPerRun(100, func() { _, _ = e.s.compile(r) }), "cached trigger lookup")
}

// cachedQueries lists the metricQuery of every cached trigger, sorted.
func cachedQueries(s *Scaler) []string {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	var qs []string
	for _, t := range s.cache.byHash {
		for ; t != nil; t = t.hnext {
			qs = append(qs, t.key.vals[slotOf("metricQuery")])
		}
	}
	slices.Sort(qs)
	return qs
}

// TestTriggerCacheExpiryAndBound: the cache evicts exactly the least
// recently used trigger when full and drops exactly the triggers unused
// for the TTL; no call fails meanwhile.
func TestTriggerCacheExpiryAndBound(t *testing.T) {
	now := time.Unix(1000, 0)
	st := newEnv(t, Config{}).st
	reg := prometheus.NewRegistry()
	s := New(query.NewEngine(st), st, Config{TriggerTTL: time.Minute, MaxTriggers: 3}, Settings{Registerer: reg, Now: func() time.Time { return now }})
	defer s.Drain()
	spec := func(i int) {
		t.Helper()
		_, err := s.GetMetricSpec(context.Background(), ref(map[string]string{"metricQuery": fmt.Sprintf("sum(x%d)", i), "targetValue": "1"}))
		require.NoError(t, err)
	}
	evicted := func(reason string) float64 {
		return testutil.ToFloat64(s.m.evicted[reason])
	}
	for i := range 3 {
		spec(i)
	}
	assert.Equal(t, []string{"sum(x0)", "sum(x1)", "sum(x2)"}, cachedQueries(s))
	now = now.Add(30 * time.Second)
	spec(0) // keeps trigger 0 in use: 1 is now the least recently used
	spec(3) // full: evicts 1
	assert.Equal(t, []string{"sum(x0)", "sum(x2)", "sum(x3)"}, cachedQueries(s), "the least recently used one is evicted")
	assert.InDelta(t, 1, evicted(evictLRU), 0)
	now = now.Add(45 * time.Second)
	spec(4) // 2 was last used 75 s ago: expired; 0 and 3 45 s ago: kept
	assert.Equal(t, []string{"sum(x0)", "sum(x3)", "sum(x4)"}, cachedQueries(s), "only the trigger unused for the TTL expires")
	assert.InDelta(t, 1, evicted(evictLRU), 0, "room came from expiry")
	assert.InDelta(t, 1, evicted(evictExpired), 0)
	now = now.Add(2 * time.Minute)
	spec(5)
	assert.Equal(t, []string{"sum(x5)"}, cachedQueries(s), "unused entries expire")
	assert.InDelta(t, 4, evicted(evictExpired), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(s.m.triggers), 0)
}

// TestBudgetIsResourceExhausted is checklist item 43 at unit scale: a
// trigger over its budget fails with ResourceExhausted, quickly (the
// engine stops at the budget), while another trigger is unaffected.
func TestBudgetIsResourceExhausted(t *testing.T) {
	st := store.New(store.Config{}, store.Settings{})
	now := time.Now()
	for i := range 5000 {
		lset := labels.FromStrings(labels.MetricName, "big", "i", strconv.Itoa(i))
		r, err := st.Create(lset.Hash(), lset)
		require.NoError(t, err)
		require.NoError(t, st.Append(r, now.UnixMilli(), 1))
	}
	lset := labels.FromStrings(labels.MetricName, "small")
	r, err := st.Create(lset.Hash(), lset)
	require.NoError(t, err)
	require.NoError(t, st.Append(r, now.UnixMilli(), 2))
	s := New(query.NewEngine(st), st, Config{MaxSamples: 1000}, Settings{})
	defer s.Drain()
	_, err = s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"metricQuery": "sum(big)", "targetValue": "1"})})
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "ns/so")
	_, err = s.IsActive(t.Context(), ref(map[string]string{"metricQuery": "sum(big)", "targetValue": "1"}))
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	mv, err := s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"metricQuery": "sum(small)", "targetValue": "1"})})
	require.NoError(t, err)
	assert.InDelta(t, 2, mv.GetMetricValues()[0].GetMetricValueFloat(), 0)
}

// TestEvalDeadlineIsResourceExhausted: the time budget aborts an
// evaluation through the context the engine checks.
func TestEvalDeadlineIsResourceExhausted(t *testing.T) {
	e := newEnv(t, Config{EvalBudget: time.Nanosecond})
	for i := range 10000 {
		e.push(t, "big", 1, "i", strconv.Itoa(i))
	}
	_, err := e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"metricQuery": "sum(big)", "targetValue": "1"})})
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
}

func FuzzParseSpec(f *testing.F) {
	for _, kv := range [][2]string{{"targetValue", "600m"}, {"window", "1m30s"}, {"clampMin", "1Ki"}, {"operationOverTime", "Rate"}, {"ignoreNullValues", "T"}} {
		f.Add(kv[0], kv[1])
	}
	f.Fuzz(func(t *testing.T, k, v string) {
		md := map[string]string{"metricQuery": "sum(x)", "targetValue": "1", k: v}
		sp, err := parseSpec("ns", "so", md, time.Minute, 10*time.Minute)
		if err != nil {
			require.ErrorIs(t, err, ErrBadMetadata)
			return
		}
		require.Greater(t, sp.target, 0.0)
		require.Positive(t, sp.window)
		require.LessOrEqual(t, sp.window, 10*time.Minute)
		if sp.hasMin && sp.hasMax {
			require.LessOrEqual(t, sp.clampMin, sp.clampMax)
		}
	})
}
