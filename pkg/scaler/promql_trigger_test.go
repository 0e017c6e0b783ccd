package scaler

import (
	"strconv"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestTriggerSubqueriesAndAt: triggers may use subqueries, @ (start() and
// end() are the evaluation time) and the new aggregations; GetMetrics
// answers what the engine answers at the scaler's clock.
func TestTriggerSubqueriesAndAt(t *testing.T) {
	now := time.UnixMilli(1_700_000_600_000)
	st := store.New(store.Config{Retention: 15 * time.Minute}, store.Settings{Now: func() time.Time { return now }})
	for p := range 5 {
		for _, name := range []string{"reqs_total", "queue"} {
			lset := labels.FromStrings(labels.MetricName, name, "pod", strconv.Itoa(p))
			r, err := st.Create(lset.Hash(), lset)
			require.NoError(t, err)
			for i := range 41 {
				v := float64(i * (p + 1))
				if name == "queue" {
					v = float64((i + p) % 7)
				}
				require.NoError(t, st.Append(r, now.UnixMilli()-int64(40-i)*15_000, v))
			}
		}
	}
	e := query.NewEngine(st)
	s := New(e, st, Config{}, Settings{Now: func() time.Time { return now }})
	defer s.Drain()
	for _, q := range []string{
		`max_over_time(sum(rate(reqs_total[1m]))[5m:15s])`,
		`avg_over_time(sum(queue)[2m:])`,
		`sum(queue @ end()) - sum(queue @ start())`,
		`sum(rate(reqs_total[1m] @ end()))`,
		`count(count_values("v", queue))`,
		`sum(limitk(2, queue))`,
		`sum(limit_ratio(1, queue))`,
	} {
		t.Run(q, func(t *testing.T) {
			plan, err := e.Query(q, query.Options{LookbackDelta: 2 * time.Minute})
			require.NoError(t, err)
			want, err := plan.Eval(t.Context(), now.UnixMilli())
			require.NoError(t, err)
			require.Len(t, want.Vector, 1)
			mv, err := s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(map[string]string{"metricQuery": q, "targetValue": "1"})})
			require.NoError(t, err)
			assert.InDelta(t, want.Vector[0].F, mv.GetMetricValues()[0].GetMetricValueFloat(), 1e-9)
		})
	}
}
