package query

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// fixtureExprs are the hot trigger shapes measured by BenchmarkEval and
// gated by TestEvalSteadyStateAllocs.
var fixtureExprs = map[string]string{
	"sum":         `sum(vllm:num_requests_waiting)`,
	"sum_rate":    `sum(rate(vllm:request_success_total[1m]))`,
	"hq_sum_rate": `histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[1m])))`,
	// A spike-smoothing trigger (issue #16): 20 steps of sum(rate) per
	// evaluation.
	"subq_max_sum_rate": `max_over_time(sum(rate(vllm:request_success_total[1m]))[5m:15s])`,
	// Native histograms (OTLP exponential histograms): the p90 of the
	// fleet's rate, and per series.
	"nhq_sum_rate": `histogram_quantile(0.9, sum(rate(vllm:time_to_first_token_seconds[1m])))`,
	"nhq_rate":     `histogram_quantile(0.9, rate(vllm:time_to_first_token_seconds[1m]))`,
	"nh_count_sum_by": `histogram_count(sum by (model_name) (rate(vllm:time_to_first_token_seconds[1m])))` +
		` / on (model_name) histogram_sum(sum by (model_name) (increase(vllm:time_to_first_token_seconds[1m])))`,
}

// nativeFixture is the native histogram of pod p at sample i: schema 3
// (buckets 2^(1/8) apart, as an OpenTelemetry SDK at scale 3 makes them)
// with 24 populated buckets from about 1 ms, a zero bucket, counts
// growing with i.
func nativeFixture(p, i int) *histogram.FloatHistogram {
	b := make([]float64, 24)
	count := 0.0
	for k := range b {
		b[k] = float64((i + 1) * ((k+p)%5 + 1))
		count += b[k]
	}
	zc := float64(i)
	return &histogram.FloatHistogram{
		Schema: 3, ZeroThreshold: 1e-128, ZeroCount: zc, Count: count + zc, Sum: 0.05 * count,
		PositiveSpans:   []histogram.Span{{Offset: -80, Length: 12}, {Offset: 2, Length: 12}},
		PositiveBuckets: b,
	}
}

// fixtureStart is the fixture's first sample time; samples come every 15 s
// for 10 minutes, and the plan is evaluated at the last one.
const (
	fixtureStart    = int64(1_700_000_000_000)
	fixtureInterval = int64(15_000)
	fixturePoints   = 41
)

// evalFixture loads n series for the named expression into a store with
// production defaults (freshness on) and compiles the expression. For
// hq_sum_rate, n series are n/10 pods with 11 buckets each.
func evalFixture(tb testing.TB, name string, n int) (*Plan, int64) {
	tb.Helper()
	end := fixtureStart + (fixturePoints-1)*fixtureInterval
	st := store.New(store.Config{Retention: 15 * time.Minute}, store.Settings{Now: func() time.Time { return time.UnixMilli(end) }})
	var h uint64
	add := func(lset labels.Labels, f func(i int) float64) {
		h++
		ref, err := st.Create(h, lset)
		require.NoError(tb, err)
		for i := range fixturePoints {
			require.NoError(tb, st.Append(ref, fixtureStart+int64(i)*fixtureInterval, f(i)))
		}
	}
	switch name {
	case "sum":
		for p := range n {
			add(labels.FromStrings("__name__", "vllm:num_requests_waiting", "model_name", "m", "pod", fmt.Sprintf("pod-%d", p)),
				func(i int) float64 { return float64((p + i) % 7) })
		}
	case "sum_rate", "subq_max_sum_rate":
		for p := range n {
			add(labels.FromStrings("__name__", "vllm:request_success_total", "model_name", "m", "pod", fmt.Sprintf("pod-%d", p)),
				func(i int) float64 { return float64(i * (p%5 + 1)) })
		}
	case "hq_sum_rate":
		les := []string{"0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5", "+Inf"}
		for p := range n / 10 {
			for b, le := range les {
				add(labels.FromStrings("__name__", "vllm:time_to_first_token_seconds_bucket", "le", le, "pod", fmt.Sprintf("pod-%d", p)),
					func(i int) float64 { return float64(i * (b + 1) * (p%3 + 1)) })
			}
		}
	case "nhq_sum_rate", "nhq_rate", "nh_count_sum_by":
		for p := range n {
			h++
			ref, err := st.CreateHistogram(h, labels.FromStrings("__name__", "vllm:time_to_first_token_seconds",
				"model_name", fmt.Sprintf("m%d", p%4), "pod", fmt.Sprintf("pod-%d", p)))
			require.NoError(tb, err)
			for i := range fixturePoints {
				require.NoError(tb, st.AppendHistogram(ref, fixtureStart+int64(i)*fixtureInterval, nativeFixture(p, i)))
			}
		}
	default:
		tb.Fatalf("unknown fixture %q", name)
	}
	plan, err := NewEngine(st).Query(fixtureExprs[name], Options{})
	require.NoError(tb, err)
	return plan, end
}
