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

func TestParseSpec(t *testing.T) {
	base := func(kv ...string) map[string]string {
		md := map[string]string{"metricQuery": "sum(x)", "targetValue": "4"}
		for i := 0; i < len(kv); i += 2 {
			md[kv[i]] = kv[i+1]
		}
		return md
	}
	for _, tc := range []struct {
		name  string
		md    map[string]string
		check func(t *testing.T, sp spec)
	}{
		{"defaults", base(), func(t *testing.T, sp spec) {
			assert.Equal(t, opLastOne, sp.op)
			assert.Equal(t, 2*time.Minute, sp.window)
			assert.Equal(t, 2*time.Minute, sp.lookback)
			assert.True(t, sp.ignoreNull)
			assert.False(t, sp.hasMin || sp.hasMax || sp.hasIfEmpty)
			assert.InDelta(t, 0, sp.activation, 0)
		}},
		{"aliases", map[string]string{"query": "sum(y)", "threshold": "600m", "activationTargetValue": "2k"}, func(t *testing.T, sp spec) {
			assert.Equal(t, "sum(y)", sp.query)
			assert.InDelta(t, 0.6, sp.target, 1e-12)
			assert.InDelta(t, 2000, sp.activation, 0)
			assert.Empty(t, sp.warnings)
		}},
		{"key wins over alias with one warning", base("threshold", "9", "query", "sum(z)"), func(t *testing.T, sp spec) {
			assert.InDelta(t, 4, sp.target, 0)
			assert.Equal(t, "sum(x)", sp.query)
			assert.Len(t, sp.warnings, 2)
		}},
		{"equal alias no warning", base("threshold", "4"), func(t *testing.T, sp spec) { assert.Empty(t, sp.warnings) }},
		{"FromEnv", map[string]string{"metricQuery": "sum(x)", "targetValueFromEnv": "7"}, func(t *testing.T, sp spec) {
			assert.InDelta(t, 7, sp.target, 0)
		}},
		{"key beats FromEnv", base("targetValueFromEnv", "7"), func(t *testing.T, sp spec) { assert.InDelta(t, 4, sp.target, 0) }},
		{"trimmed and empty is absent", map[string]string{"metricQuery": " sum(x) ", "targetValue": " ", "threshold": " 3 "}, func(t *testing.T, sp spec) {
			assert.Equal(t, "sum(x)", sp.query)
			assert.InDelta(t, 3, sp.target, 0)
		}},
		{"operationOverTime case-insensitive", base("operationOverTime", "Rate"), func(t *testing.T, sp spec) { assert.Equal(t, opRate, sp.op) }},
		{"operationOverTime unknown warns", base("operationOverTime", "sum"), func(t *testing.T, sp spec) {
			assert.Equal(t, opLastOne, sp.op)
			require.Len(t, sp.warnings, 1)
			assert.Contains(t, sp.warnings[0].msg, "operationOverTime")
		}},
		{"window and lookback", base("window", "30s", "lookbackDelta", "1m30s"), func(t *testing.T, sp spec) {
			assert.Equal(t, 30*time.Second, sp.window)
			assert.Equal(t, 90*time.Second, sp.lookback)
		}},
		{"window plain seconds sets lookback", base("window", "45"), func(t *testing.T, sp spec) {
			assert.Equal(t, 45*time.Second, sp.window)
			assert.Equal(t, 45*time.Second, sp.lookback)
		}},
		{"clamps, nulls, empty", base("clampMin", "1", "clampMax", "3", "ignoreNullValues", "FALSE", "valueIfEmpty", "7"), func(t *testing.T, sp spec) {
			assert.True(t, sp.hasMin && sp.hasMax && sp.hasIfEmpty)
			assert.False(t, sp.ignoreNull)
			assert.InDelta(t, 7, sp.ifEmpty, 0)
			assert.Empty(t, sp.warnings)
		}},
		{"kserve v0.15 signature warns", base("targetValue", "4.000000", "clampMin", "1", "clampMax", "3"), func(t *testing.T, sp spec) {
			require.Len(t, sp.warnings, 1)
			assert.Contains(t, sp.warnings[0].msg, "KServe v0.15")
		}},
		{"six decimals without clamps: no warning", base("targetValue", "4.000000"), func(t *testing.T, sp spec) { assert.Empty(t, sp.warnings) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp, err := parseSpec("ns", "so", tc.md, 2*time.Minute, 10*time.Minute)
			require.NoError(t, err)
			tc.check(t, sp)
		})
	}
}

func TestParseSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		key, val string
	}{
		{"targetValue", "0"},
		{"targetValue", "-1"},
		{"targetValue", "0.0004"},
		{"targetValue", "NaN"},
		{"targetValue", "Inf"},
		{"targetValue", "abc"},
		{"threshold", "abc"},
		{"activationThreshold", "x"},
		{"window", "5x"},
		{"window", "11m"},
		{"window", "0"},
		{"lookbackDelta", "-1m"},
		{"clampMin", "a"},
		{"clampMax", "1e"},
		{"ignoreNullValues", "yes"},
		{"valueIfEmpty", "none"},
	} {
		t.Run(tc.key+"="+tc.val, func(t *testing.T) {
			md := map[string]string{"metricQuery": "sum(x)", "targetValue": "4"}
			if tc.key == "threshold" {
				delete(md, "targetValue")
			}
			md[tc.key] = tc.val
			_, err := parseSpec("ns", "so", md, 2*time.Minute, 10*time.Minute)
			require.ErrorIs(t, err, ErrBadMetadata)
			assert.Contains(t, err.Error(), "ns/so")
			assert.Contains(t, err.Error(), tc.key)
			assert.Contains(t, err.Error(), fmt.Sprintf("%q", tc.val))
		})
	}
	_, err := parseSpec("ns", "so", map[string]string{"metricQuery": "sum(x)", "targetValue": "4", "clampMin": "5", "clampMax": "3"}, time.Minute, time.Hour)
	require.ErrorIs(t, err, ErrBadMetadata)
	assert.Contains(t, err.Error(), "clampMin")
	_, err = parseSpec("ns", "so", map[string]string{}, time.Minute, time.Hour)
	assert.Contains(t, err.Error(), "metricQuery")
	assert.Contains(t, err.Error(), "targetValue", "every problem is reported at once")
}

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
