package kedaclient

import (
	"context"
	"testing"

	"github.com/kedacore/keda/v2/pkg/scalers"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TestMetricSpec: the HPA metric spec KEDA 2.21 builds from our
// GetMetricSpec is one External metric s<index>-<namespace>-<name> whose
// target is targetValue at milli precision (the float field wins, so 0.5
// stays 500m and is not rounded up to the int field's 1).
func TestMetricSpec(t *testing.T) {
	e := startServer(t)
	tests := []struct {
		name      string
		target    string
		idx       int
		mt        v2.MetricTargetType
		wantName  string
		wantMilli int64
	}{
		{name: "target=int", target: "4", mt: v2.AverageValueMetricType, wantName: "s0-shop-checkout", wantMilli: 4000},
		{name: "target=fraction", target: "0.5", mt: v2.AverageValueMetricType, wantName: "s0-shop-checkout", wantMilli: 500},
		{name: "target=milli_suffix", target: "600m", mt: v2.AverageValueMetricType, wantName: "s0-shop-checkout", wantMilli: 600},
		{name: "target=three_decimals", target: "2.125", mt: v2.AverageValueMetricType, wantName: "s0-shop-checkout", wantMilli: 2125},
		{name: "metric_type=default", target: "3", mt: "", wantName: "s0-shop-checkout", wantMilli: 3000},
		{name: "metric_type=value", target: "7", mt: v2.ValueMetricType, wantName: "s0-shop-checkout", wantMilli: 7000},
		{name: "trigger_index=3", target: "1.5", idx: 3, mt: v2.AverageValueMetricType, wantName: "s3-shop-checkout", wantMilli: 1500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newExternal(t, scalerConfig(e.trigger("sum(kc_spec)", "targetValue", tc.target), tc.idx, tc.mt, "external"))
			specs := s.GetMetricSpecForScaling(callCtx(t))
			require.Len(t, specs, 1)
			require.Equal(t, v2.ExternalMetricSourceType, specs[0].Type)
			ext := specs[0].External
			require.NotNil(t, ext)
			assert.Equal(t, tc.wantName, ext.Metric.Name)
			var q *resource.Quantity
			if tc.mt == v2.ValueMetricType {
				assert.Equal(t, v2.ValueMetricType, ext.Target.Type)
				assert.Nil(t, ext.Target.AverageValue)
				q = ext.Target.Value
			} else {
				assert.Equal(t, v2.AverageValueMetricType, ext.Target.Type)
				assert.Nil(t, ext.Target.Value)
				q = ext.Target.AverageValue
			}
			require.NotNil(t, q)
			assert.Equal(t, tc.wantMilli, q.MilliValue(), "target %s", q)
		})
	}
}

// TestMetricsAndActivity: pushed OTLP data comes back through KEDA's
// GetMetricsAndActivity as the query's value at milli precision, labelled
// with the name KEDA asked for, and active exactly when value >
// activationThreshold. A true zero is 0 and inactive (the int field 0, not
// a fallback); a negative value is clamped to 0; an empty result is 0 by
// default or valueIfEmpty.
func TestMetricsAndActivity(t *testing.T) {
	e := startServer(t)
	tests := []struct {
		name       string
		metric     string
		vals       []float64 // one series each; nil pushes nothing
		activation string    // "" leaves activationThreshold unset (0)
		extra      []string
		wantMilli  int64
		wantActive bool
	}{
		{name: "sum=3.75,activation=3", metric: "kc_sum_a", vals: []float64{1.5, 2, 0.25}, activation: "3", wantMilli: 3750, wantActive: true},
		{name: "sum=3.75,activation=3.75", metric: "kc_sum_b", vals: []float64{1.5, 2, 0.25}, activation: "3.75", wantMilli: 3750, wantActive: false},
		{name: "sum=3.75,activation=10", metric: "kc_sum_c", vals: []float64{1.5, 2, 0.25}, activation: "10", wantMilli: 3750, wantActive: false},
		{name: "value=0.25,activation=0.2", metric: "kc_frac", vals: []float64{0.25}, activation: "0.2", wantMilli: 250, wantActive: true},
		{name: "value=0", metric: "kc_zero", vals: []float64{0}, wantMilli: 0, wantActive: false},
		{name: "value=-3", metric: "kc_negative", vals: []float64{-3}, wantMilli: 0, wantActive: false},
		{name: "value=1e7", metric: "kc_big", vals: []float64{4e6, 6e6}, wantMilli: 1e10, wantActive: true},
		{name: "empty", metric: "kc_absent", wantMilli: 0, wantActive: false}, // ignoreNullValues defaults to true
		{name: "empty,valueIfEmpty=2", metric: "kc_absent", activation: "1", extra: []string{"valueIfEmpty", "2"}, wantMilli: 2000, wantActive: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.vals != nil {
				e.push(t, tc.metric, tc.vals...)
			}
			kv := append([]string{"targetValue", "1"}, tc.extra...)
			if tc.activation != "" {
				kv = append(kv, "activationThreshold", tc.activation)
			}
			s := newExternal(t, scalerConfig(e.trigger("sum("+tc.metric+")", kv...), 0, v2.AverageValueMetricType, "external"))
			metrics, active, err := s.GetMetricsAndActivity(callCtx(t), "s0-shop-checkout")
			require.NoError(t, err)
			require.Len(t, metrics, 1)
			assert.Equal(t, "s0-shop-checkout", metrics[0].MetricName)
			assert.Equal(t, tc.wantMilli, metrics[0].Value.MilliValue(), "value %s", &metrics[0].Value)
			assert.Equal(t, tc.wantActive, active)
		})
	}
}

// TestInvalidMetadata: metadata KEDA itself rejects fails when the scaler
// is built; metadata only we can judge makes KEDA's calls fail (no HPA
// metric, an InvalidArgument error on GetMetrics) and never yields a
// value; an empty result with ignoreNullValues "false" is NotFound.
func TestInvalidMetadata(t *testing.T) {
	e := startServer(t)

	t.Run("keda_side", func(t *testing.T) {
		noAddr := map[string]string{"metricQuery": "sum(kc_x)", "targetValue": "1"}
		_, err := scalers.NewExternalScaler(scalerConfig(noAddr, 0, v2.AverageValueMetricType, "external"))
		assert.Error(t, err, "missing scalerAddress")
		_, err = scalers.NewExternalPushScaler(scalerConfig(noAddr, 0, v2.AverageValueMetricType, "external-push"))
		assert.Error(t, err, "missing scalerAddress")
		_, err = scalers.NewExternalScaler(scalerConfig(e.trigger("sum(kc_x)", "targetValue", "1"), 0, v2.UtilizationMetricType, "external"))
		assert.Error(t, err, "Utilization metric type")
	})

	e.push(t, "kc_x", 5)
	tests := []struct {
		name     string
		md       map[string]string
		wantCode codes.Code
	}{
		{name: "query=unparsable", md: e.trigger("sum(kc_x", "targetValue", "1"), wantCode: codes.InvalidArgument},
		{name: "query=missing", md: map[string]string{"scalerAddress": e.addrs.Scaler, "targetValue": "1"}, wantCode: codes.InvalidArgument},
		{name: "target=missing", md: e.trigger("sum(kc_x)"), wantCode: codes.InvalidArgument},
		{name: "target=not_a_number", md: e.trigger("sum(kc_x)", "targetValue", "abc"), wantCode: codes.InvalidArgument},
		{name: "activation=not_a_number", md: e.trigger("sum(kc_x)", "targetValue", "1", "activationThreshold", "x"), wantCode: codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newExternal(t, scalerConfig(tc.md, 0, v2.AverageValueMetricType, "external"))
			assert.Empty(t, s.GetMetricSpecForScaling(callCtx(t)))
			metrics, active, err := s.GetMetricsAndActivity(callCtx(t), "s0-shop-checkout")
			require.Error(t, err)
			assert.Equal(t, tc.wantCode, status.Code(err), "%v", err)
			assert.Empty(t, metrics)
			assert.False(t, active)
		})
	}

	t.Run("empty_result", func(t *testing.T) {
		md := e.trigger("sum(kc_never_pushed)", "targetValue", "1", "ignoreNullValues", "false")
		s := newExternal(t, scalerConfig(md, 0, v2.AverageValueMetricType, "external"))
		// The spec is a function of the metadata alone.
		require.Len(t, s.GetMetricSpecForScaling(callCtx(t)), 1)
		_, active, err := s.GetMetricsAndActivity(callCtx(t), "s0-shop-checkout")
		require.Error(t, err)
		assert.Equal(t, codes.NotFound, status.Code(err), "%v", err)
		assert.False(t, active)
	})

	t.Run("push_scaler", func(t *testing.T) {
		s, err := scalers.NewExternalPushScaler(scalerConfig(e.trigger("sum(kc_x", "targetValue", "1"), 0, v2.AverageValueMetricType, "external-push"))
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close(context.Background())) })
		ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
		defer cancel()
		ch := make(chan bool)
		go s.Run(ctx, ch)
		// The stream ends with InvalidArgument at once; KEDA backs off and
		// nothing is ever delivered.
		_, got, closed := recvActive(ch, quietWindow)
		assert.False(t, got || closed, "nothing delivered for invalid metadata")
		cancel()
		_, _, closed = recvActive(ch, pushTimeout)
		assert.True(t, closed, "Run closes its channel when its context ends")
	})
}

// TestPushScaler: KEDA's external-push scaler receives true as soon as
// pushed data makes the trigger active, and nothing (never false) while it
// is or falls inactive; a later rise is pushed again. It also receives the
// metric spec over StreamMetricSpec (KEDA 2.21).
func TestPushScaler(t *testing.T) {
	e := startServer(t)
	md := e.trigger("sum(kc_push)", "targetValue", "10", "activationThreshold", "5")
	cfg := scalerConfig(md, 0, v2.AverageValueMetricType, "external-push")
	ps, err := scalers.NewExternalPushScaler(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ps.Close(context.Background())) })
	// A poll scaler on the same trigger confirms each push was stored.
	poll := newExternal(t, scalerConfig(md, 0, v2.AverageValueMetricType, "external"))
	value := func(wantMilli int64, wantActive bool) {
		t.Helper()
		metrics, active, err := poll.GetMetricsAndActivity(callCtx(t), "s0-shop-checkout")
		require.NoError(t, err)
		require.Len(t, metrics, 1)
		require.Equal(t, wantMilli, metrics[0].Value.MilliValue())
		require.Equal(t, wantActive, active)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*pushTimeout)
	defer cancel()
	ch := make(chan bool)
	go ps.Run(ctx, ch)

	// StreamMetricSpec delivers the same spec as GetMetricSpec.
	type specStreamer interface {
		MetricSpecChan() <-chan []v2.MetricSpec
	}
	sc, ok := ps.(specStreamer)
	require.True(t, ok, "KEDA 2.21's push scaler has MetricSpecChan")
	select {
	case specs := <-sc.MetricSpecChan():
		require.Len(t, specs, 1)
		assert.Equal(t, "s0-shop-checkout", specs[0].External.Metric.Name)
		assert.Equal(t, int64(10_000), specs[0].External.Target.AverageValue.MilliValue())
	case <-ctx.Done():
		t.Fatal("no metric spec on StreamMetricSpec")
	}

	const openStreams = "keda_otel_scaler_scaler_open_streams"
	waitFor(t, "KEDA's StreamIsActive stream to open", func() bool { return e.selfMetric(t, openStreams) >= 1 })

	// No data yet (empty result): no change, nothing sent.
	_, got, closed := recvActive(ch, quietWindow)
	require.False(t, got || closed, "nothing before data")

	e.push(t, "kc_push", 1, 2) // 3 <= 5: inactive
	value(3000, false)
	_, got, closed = recvActive(ch, quietWindow)
	require.False(t, got || closed, "nothing while inactive")

	e.push(t, "kc_push", 4, 3) // 7 > 5: active
	v, got, closed := recvActive(ch, pushTimeout)
	require.False(t, closed)
	require.True(t, got, "true pushed when the trigger becomes active")
	require.True(t, v)
	value(7000, true)

	e.push(t, "kc_push", 1, 1) // 2: falls inactive, no false is pushed
	value(2000, false)
	_, got, closed = recvActive(ch, quietWindow)
	require.False(t, got || closed, "no false when the trigger falls inactive")

	e.push(t, "kc_push", 5, 0.5) // 5.5 > 5: active again
	v, got, closed = recvActive(ch, pushTimeout)
	require.False(t, closed)
	require.True(t, got, "true pushed on the next rise")
	require.True(t, v)

	e.push(t, "kc_push", 6, 1) // stays active: edges only, no second true
	value(7000, true)
	_, got, closed = recvActive(ch, quietWindow)
	require.False(t, got || closed, "no repeat true while active")

	cancel()
	_, _, closed = recvActive(ch, pushTimeout)
	require.True(t, closed, "Run closes its channel when its context ends")
	waitFor(t, "the stream to be released", func() bool { return e.selfMetric(t, openStreams) == 0 })
}
