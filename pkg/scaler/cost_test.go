package scaler

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// joinN returns n items made by f, joined with sep.
func joinN(n int, sep string, f func(i int) string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = f(i)
	}
	return strings.Join(parts, sep)
}

// costShapes are trigger queries of every shape that makes a plan large,
// each within the engine's limits (16 KiB, 2,048 tokens).
var costShapes = []struct {
	name string
	md   map[string]string
	n    int // triggers to build
}{
	{"typical", map[string]string{"metricQuery": `sum(vllm:num_requests_waiting{model_name="qwen"})`, "targetValue": "4"}, 400},
	{"kserve", map[string]string{"metricQuery": `sum(vllm:num_requests_running{namespace="ns", deployment="d"})`, "targetValue": "4", "activationThreshold": "1"}, 400},
	{"histogram", map[string]string{"metricQuery": `histogram_quantile(0.9, sum by (le)(rate(vllm:time_to_first_token_seconds_bucket{model_name="x"}[1m])))`, "targetValue": "0.5"}, 400},
	{"rate op", map[string]string{"metricQuery": `sum(x{a="b"})`, "targetValue": "4", "operationOverTime": "rate", "window": "1m"}, 400},
	{"1000 selectors", map[string]string{"metricQuery": joinN(1000, "+", func(int) string { return "a" }), "targetValue": "4"}, 10},
	{"1000 selectors rate", map[string]string{"metricQuery": joinN(1000, "+", func(int) string { return "a" }), "targetValue": "4", "operationOverTime": "rate"}, 10},
	{"1000 names", map[string]string{"metricQuery": joinN(1000, "+", func(i int) string { return fmt.Sprintf("m%d", i) }), "targetValue": "4"}, 10},
	{"long name", map[string]string{"metricQuery": "sum(" + strings.Repeat("n", 16000) + ")", "targetValue": "4"}, 20},
	{"long value", map[string]string{"metricQuery": `sum(x{a="` + strings.Repeat("v", 16000) + `"})`, "targetValue": "4"}, 20},
	{"many matchers", map[string]string{"metricQuery": "sum(x{" + joinN(500, ",", func(i int) string { return fmt.Sprintf("l%d=\"v\"", i) }) + "})", "targetValue": "4"}, 20},
	// The most that query.MaxQueryRegexSize lets a query compile.
	{"regex repeat", map[string]string{"metricQuery": joinN(4, "+", func(int) string { return `x{a=~"[a-z]{1000}"}` }), "targetValue": "4"}, 20},
	{"regex alternation", map[string]string{"metricQuery": `sum(x{a=~"` + joinN(1000, "|", func(i int) string { return fmt.Sprintf("v%d", i) }) + `"})`, "targetValue": "4"}, 20},
	{"label_replace", map[string]string{"metricQuery": `sum(label_replace(x, "d", "$1", "s", "([a-z]{1000})"))`, "targetValue": "4"}, 20},
	{"unary chain", map[string]string{"metricQuery": "sum(" + strings.Repeat("-", 1000) + "x)", "targetValue": "4"}, 20},
	{"numbers", map[string]string{"metricQuery": "sum(x)+" + joinN(1000, "+", func(int) string { return "1" }), "targetValue": "4"}, 20},
	{"by labels", map[string]string{"metricQuery": "sum(sum by (" + joinN(1000, ",", func(i int) string { return fmt.Sprintf("l%d", i) }) + ")(x))", "targetValue": "4"}, 20},
	{"functions", map[string]string{"metricQuery": joinN(120, "+", func(int) string { return "abs(sum(rate(x[1m])))" }), "targetValue": "4"}, 20},
	{"unicode class", map[string]string{"metricQuery": joinN(4, "+", func(int) string { return `x{a=~"\\pL{1000}"}` }), "targetValue": "4"}, 20},
	{"on group_left", map[string]string{"metricQuery": joinN(150, " * on (a, b) group_left (c) ", func(int) string { return "x" }), "targetValue": "4"}, 20},
}

// TestTriggerCostBoundsHeap calibrates triggerCost: for every shape, the
// heap that cached triggers hold (live heap growth over n triggers, after
// a GetMetricSpec and a GetMetrics each) is at most the estimate the
// cache's byte bound counts, and the estimate is at most 3× the heap, so
// the bound neither lets memory past it nor wastes most of it. Every
// regex-free shape fits DefaultMaxTriggerBytes.
func TestTriggerCostBoundsHeap(t *testing.T) {
	if raceEnabled {
		t.Skip("heap gate: runs without -race in make gates")
	}
	for _, sh := range costShapes {
		t.Run(sh.name, func(t *testing.T) {
			st := store.New(store.Config{Retention: 10 * time.Minute}, store.Settings{})
			s := New(query.NewEngine(st), st, Config{MaxTriggerBytes: 1 << 30, TriggerCacheBytes: 1 << 40}, Settings{})
			defer s.Drain()
			// Warm the engine and the store once, outside the measure.
			_, err := s.GetMetricSpec(context.Background(), &externalscaler.ScaledObjectRef{Namespace: "warm", Name: "so", ScalerMetadata: sh.md})
			require.NoError(t, err)
			h0 := heapLive()
			b0, _ := s.cache.stats()
			for i := range sh.n {
				r := &externalscaler.ScaledObjectRef{Namespace: "ns", Name: fmt.Sprintf("so-%d", i), ScalerMetadata: sh.md}
				_, err := s.GetMetricSpec(context.Background(), r)
				require.NoError(t, err)
				_, _ = s.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: r})
			}
			h1 := heapLive()
			b1, _ := s.cache.stats()
			require.Equal(t, sh.n+1, s.cache.len())
			per := float64(h1-h0) / float64(sh.n)
			est := float64(b1-b0) / float64(sh.n)
			t.Logf("%-20s heap %9.0f B/trigger, estimate %9.0f B/trigger, ratio %.2f", sh.name, per, est, est/per)
			assert.GreaterOrEqual(t, est, per, "the estimate must cover the heap")
			assert.LessOrEqual(t, est, 3*per, "the estimate is too pessimistic")
			if !strings.Contains(sh.md["metricQuery"], "=~") && !strings.Contains(sh.md["metricQuery"], "label_replace") {
				assert.LessOrEqual(t, est, float64(DefaultMaxTriggerBytes), "a regex-free query the engine accepts must fit the default")
			}
			runtime.KeepAlive(s)
		})
	}
}
