package integration

// Conformance tests for keda-contract.md §12 over a real gRPC connection
// with KEDA's generated client. Each test names the checklist items it
// covers.

import (
	"context"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
)

// Item 1 (and 45 in part): service surface, health and reflection.
func TestKEDAServiceSurface(t *testing.T) {
	assert.Equal(t, ":4318", config.Default().Server.ScalerAddr)
	e := startKEDA(t, false, nil)
	ctx := e.ctx(t)
	h, err := healthpb.NewHealthClient(e.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, h.GetStatus())

	rs, err := rpb.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, rs.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}))
	resp, err := rs.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	assert.Contains(t, names, "externalscaler.ExternalScaler")
	assert.Contains(t, names, "grpc.health.v1.Health")
	require.NoError(t, rs.CloseSend())

	// All five methods answer under their wire names (not Unimplemented).
	r := soRef(md("sum(x)"))
	_, err = e.client.GetMetricSpec(ctx, r)
	require.NoError(t, err)
	_, err = e.client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: r})
	require.NoError(t, err)
	_, err = e.client.IsActive(ctx, r)
	require.NoError(t, err)
	for _, open := range []func() error{
		func() error {
			s, err := e.client.StreamIsActive(ctx, soRef(md("sum(")))
			_, err2 := s.Recv()
			return errOr(err, err2)
		},
		func() error {
			s, err := e.client.StreamMetricSpec(ctx, soRef(md("sum(")))
			_, err2 := s.Recv()
			return errOr(err, err2)
		},
	} {
		assert.Equal(t, codes.InvalidArgument, status.Code(open()), "implemented: validates metadata")
	}
}

func errOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// Items 2, 3, 41: metric names.
func TestKEDAMetricSpecName(t *testing.T) {
	e := startKEDA(t, false, nil)
	ctx := e.ctx(t)
	spec := func(ns, name string, m map[string]string) *externalscaler.MetricSpec {
		resp, err := e.client.GetMetricSpec(ctx, &externalscaler.ScaledObjectRef{Namespace: ns, Name: name, ScalerMetadata: m})
		require.NoError(t, err)
		require.Len(t, resp.GetMetricSpecs(), 1, "exactly one spec")
		return resp.GetMetricSpecs()[0]
	}
	first := spec("Default", "My_SO", md("sum(x)"))
	assert.Equal(t, "default-my-so", first.GetMetricName())
	for range 100 {
		assert.Equal(t, first.GetMetricName(), spec("Default", "My_SO", md("sum(x)")).GetMetricName())
	}
	long := spec("ns", strings.Repeat("A", 300), md("sum(x)")).GetMetricName()
	assert.Len(t, long, 200)
	assert.Regexp(t, `^[a-z0-9.-]+$`, long)
	assert.Regexp(t, `^ns-a{188}-[0-9a-f]{8}$`, long)
	assert.Equal(t, long, spec("ns", strings.Repeat("A", 300), md("sum(x)")).GetMetricName(), "stable hash")
	assert.Equal(t, "keda-otel-scaler", spec("", "", md("sum(x)")).GetMetricName())

	// Item 41: two triggers of one ScaledObject: one name each, independent values.
	e.export(t, point{name: "a", v: 3}, point{name: "b", v: 8})
	for _, tc := range []struct {
		q    string
		want float64
	}{{"sum(a)", 3}, {"sum(b)", 8}} {
		assert.Equal(t, "ns-so", spec("ns", "so", md(tc.q)).GetMetricName())
		v, _, err := e.value(t, md(tc.q))
		require.NoError(t, err)
		assert.InDelta(t, tc.want, v, 0)
	}
}

// Items 4, 5, 44: target values and quantities.
func TestKEDATargetValue(t *testing.T) {
	e := startKEDA(t, false, nil)
	ctx := e.ctx(t)
	for _, tc := range []struct {
		in   string
		want float64
	}{{"4", 4}, {"4.000000", 4}, {".5", 0.5}, {"600m", 0.6}, {"2k", 2000}, {"1e3", 1000}, {"1Ki", 1024}, {"1.5", 1.5}} {
		t.Run("ok="+tc.in, func(t *testing.T) {
			resp, err := e.client.GetMetricSpec(ctx, soRef(md("sum(x)", "targetValue", tc.in)))
			require.NoError(t, err)
			s := resp.GetMetricSpecs()[0]
			assert.InDelta(t, tc.want, s.GetTargetSizeFloat(), 1e-12)
			assert.Equal(t, int64(math.Ceil(tc.want)), s.GetTargetSize())
		})
	}
	for _, bad := range []string{"0", "-1", "0.0004", "NaN", "Inf", "abc", ""} {
		t.Run("bad="+bad, func(t *testing.T) {
			m := md("sum(x)", "targetValue", bad)
			if bad == "" {
				delete(m, "targetValue")
			}
			_, err := e.client.GetMetricSpec(ctx, soRef(m))
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			msg := status.Convert(err).Message()
			assert.Contains(t, msg, "targetValue")
			assert.Contains(t, msg, "ns/so", "item 44: names the ScaledObject")
		})
	}
}

// Items 6, 7, 8: aliases, FromEnv, ignored keys.
func TestKEDAAliasesAndIgnoredKeys(t *testing.T) {
	e := startKEDA(t, false, nil)
	ctx := e.ctx(t)
	e.export(t, point{name: "x", v: 5}, point{name: "y", v: 50})
	target := func(m map[string]string) float64 {
		resp, err := e.client.GetMetricSpec(ctx, soRef(m))
		require.NoError(t, err)
		return resp.GetMetricSpecs()[0].GetTargetSizeFloat()
	}
	aliased := map[string]string{"query": "sum(x)", "threshold": "3", "activationTargetValue": "4"}
	assert.InDelta(t, 3, target(aliased), 0)
	v, _, err := e.value(t, aliased)
	require.NoError(t, err)
	assert.InDelta(t, 5, v, 0)
	act, err := e.active(t, map[string]string{"query": "sum(x)", "threshold": "3", "activationTargetValue": "5"})
	require.NoError(t, err)
	assert.False(t, act, "activationTargetValue is the activation threshold")

	both := md("sum(x)", "query", "sum(y)", "targetValue", "2", "threshold", "9")
	assert.InDelta(t, 2, target(both), 0, "the key wins")
	v, _, err = e.value(t, both)
	require.NoError(t, err)
	assert.InDelta(t, 5, v, 0, "metricQuery wins over query")
	assert.Equal(t, 1, e.logs.Count("Trigger key and alias differ")/2, "warned once per trigger per key (2 keys)")
	_, _, _ = e.value(t, both)
	assert.Equal(t, 2, e.logs.Count("Trigger key and alias differ"), "not again for the cached trigger")

	assert.InDelta(t, 7, target(map[string]string{"metricQuery": "sum(x)", "targetValueFromEnv": "7"}), 0)

	plain := md("sum(x)")
	noisy := md("sum(x)", "scalerAddress", "other:1", "enableTLS", "true", "unsafeSsl", "true", "caCert", "PEM",
		"tlsClientCert", "c", "tlsClientKey", "k", "somethingElse", "z")
	assert.InDelta(t, target(plain), target(noisy), 0)
	v1, _, err := e.value(t, plain)
	require.NoError(t, err)
	v2, _, err := e.value(t, noisy)
	require.NoError(t, err)
	assert.InDelta(t, v1, v2, 0)
}

// Items 9, 35, 40, 44: unparsable query on every RPC.
func TestKEDAUnparsableQuery(t *testing.T) {
	e := startKEDA(t, false, nil)
	ctx := e.ctx(t)
	r := soRef(md("sum(x{a=\"b\"}"))
	check := func(err error) {
		t.Helper()
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
		msg := status.Convert(err).Message()
		assert.Contains(t, msg, "1:", "the parser's position")
		assert.Contains(t, msg, "metricQuery")
		assert.Contains(t, msg, "ns/so")
	}
	_, err := e.client.GetMetricSpec(ctx, r)
	check(err)
	_, err = e.client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: r})
	check(err)
	_, err = e.client.IsActive(ctx, r)
	check(err)
	s, err := e.client.StreamIsActive(ctx, r)
	require.NoError(t, err)
	_, err = s.Recv()
	check(err)
	ms, err := e.client.StreamMetricSpec(ctx, r)
	require.NoError(t, err)
	_, err = ms.Recv()
	check(err)
	// Self-metrics: RPCs by method and code.
	for _, m := range []string{"GetMetricSpec", "GetMetrics", "IsActive", "StreamIsActive", "StreamMetricSpec"} {
		assert.InDelta(t, 1, e.selfMetric(t, `keda_otel_scaler_scaler_rpcs_total{code="InvalidArgument",method="`+m+`"}`), 0, m)
	}
	_, err = e.client.GetMetricSpec(ctx, soRef(md("sum(x)")))
	require.NoError(t, err)
	assert.InDelta(t, 1, e.selfMetric(t, `keda_otel_scaler_scaler_rpcs_total{code="OK",method="GetMetricSpec"}`), 0)
	assert.InDelta(t, 1, e.selfMetric(t, "keda_otel_scaler_scaler_triggers_cached"), 0)
}

// Items 11, 12, 13, 14, 15, 24: values.
func TestKEDAValues(t *testing.T) {
	e := startKEDA(t, true, nil)
	ctx := e.ctx(t)
	e.export(t,
		point{name: "x", v: 1.25, kv: []string{"a", "b", "pod", "1"}},
		point{name: "x", v: 2, kv: []string{"a", "b", "pod", "2"}},
		point{name: "x", v: 100, kv: []string{"a", "c", "pod", "3"}},
		point{name: "zero", v: 0},
		point{name: "neg", v: -3},
		point{name: "huge", v: 1e30},
	)
	// Item 11: one value, named as requested in any case, also for another name.
	for _, name := range []string{"s0-ns-so", "S0-NS-SO", "s3-some-other-metric", ""} {
		resp, err := e.client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: soRef(md(`sum(x{a="b"})`)), MetricName: name})
		require.NoError(t, err)
		require.Len(t, resp.GetMetricValues(), 1)
		mv := resp.GetMetricValues()[0]
		want := name
		if want == "" {
			want = "ns-so"
		}
		assert.Equal(t, want, mv.GetMetricName())
		assert.InDelta(t, 3.25, mv.GetMetricValueFloat(), 1e-12, "item 14: the sum of the fresh series")
		assert.Equal(t, int64(4), mv.GetMetricValue(), "ceil")
	}
	for _, tc := range []struct {
		q      string
		wantF  float64
		wantI  int64
		reason string
	}{
		{"sum(zero)", 0, 0, "item 12: a true zero is float 0 and int 0"},
		{"sum(neg)", 0, 0, "item 13: negative floored"},
		{"sum(huge)", 1e30, math.MaxInt64, "item 13: int saturates"},
		{"x", 103.25, 104, "item 15: bare selector is summed"},
		{`sum(x{zzz="9"})`, 0, 0, "item 24: missing label does not match"},
		{`sum(x{a!="b"})`, 100, 100, "item 24: !="},
		{`sum(x{a=~"b|c"})`, 103.25, 104, "item 24: =~"},
		{`sum(x{a!~"b"})`, 100, 100, "item 24: !~"},
	} {
		f, i, err := e.value(t, md(tc.q))
		require.NoError(t, err, tc.q)
		assert.InDelta(t, tc.wantF, f, 1e-9, tc.reason)
		assert.Equal(t, tc.wantI, i, tc.reason)
	}
	_, _, err := e.value(t, md("sum by (a) (x)"))
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "item 15: more than one series")
	assert.Contains(t, status.Convert(err).Message(), "aggregate")
	t.Run("x/2", func(t *testing.T) {
		_, _, err := e.value(t, md("x / 2"))
		assert.Equal(t, codes.FailedPrecondition, status.Code(err), "item 15: x / 2 over three series")
	})
}

// Items 16, 17, 18, 19: empty, NaN, clamps, activation.
func TestKEDAReduction(t *testing.T) {
	e := startKEDA(t, true, nil)
	e.export(t, point{name: "notanumber", v: math.NaN()}, point{name: "five", v: 5})
	for _, tc := range []struct {
		name string
		m    map[string]string
		want float64
		code codes.Code
	}{
		{"empty default 0", md("sum(none)"), 0, codes.OK},
		{"empty valueIfEmpty", md("sum(none)", "valueIfEmpty", "7"), 7, codes.OK},
		{"empty valueIfEmpty wins over ignoreNullValues false", md("sum(none)", "valueIfEmpty", "7", "ignoreNullValues", "false"), 7, codes.OK},
		{"empty not ignored", md("sum(none)", "ignoreNullValues", "false"), 0, codes.NotFound},
		{"NaN default 0", md("sum(notanumber)"), 0, codes.OK},
		{"NaN not ignored", md("sum(notanumber)", "ignoreNullValues", "false"), 0, codes.FailedPrecondition},
		{"clampMax", md("sum(five)", "clampMax", "3"), 3, codes.OK},
		{"clampMin", md("sum(five)", "clampMin", "6"), 6, codes.OK},
		{"clamps inside", md("sum(five)", "clampMin", "1", "clampMax", "10"), 5, codes.OK},
		{"clampMin > clampMax", md("sum(five)", "clampMin", "6", "clampMax", "3"), 0, codes.InvalidArgument},
		{"bad clamp", md("sum(five)", "clampMax", "lots"), 0, codes.InvalidArgument},
		{"bad ignoreNullValues", md("sum(five)", "ignoreNullValues", "maybe"), 0, codes.InvalidArgument},
		{"bad valueIfEmpty", md("sum(five)", "valueIfEmpty", "x"), 0, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, _, err := e.value(t, tc.m)
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			assert.InDelta(t, tc.want, v, 0)
		})
	}
	// Item 19: IsActive == value > activationThreshold.
	for _, tc := range []struct {
		threshold string
		num       float64
		want      bool
	}{{"", 0, true}, {"4", 4, true}, {"5", 5, false}, {"6", 6, false}, {"4999m", 4.999, true}} {
		m := md("sum(five)")
		if tc.threshold != "" {
			m["activationThreshold"] = tc.threshold
		}
		v, _, err := e.value(t, m)
		require.NoError(t, err)
		act, err := e.active(t, m)
		require.NoError(t, err)
		assert.Equal(t, tc.want, act, "threshold %q", tc.threshold)
		assert.Equal(t, v > tc.num, act)
	}
	act, err := e.active(t, md("sum(none)"))
	require.NoError(t, err)
	assert.False(t, act, "0 is not > default threshold 0")
	t.Run("histogram_quantile over zero rates", func(t *testing.T) {
		for i := range 3 {
			e.at(time.Duration(i) * 15 * time.Second)
			// Buckets as plain series (an OTLP monotonic sum would gain _total).
			e.export(t, point{name: "h_bucket", v: 0, kv: []string{"le", "+Inf"}},
				point{name: "h_bucket", v: 0, kv: []string{"le", "1"}})
		}
		q := "histogram_quantile(0.9, sum by (le) (rate(h_bucket[1m])))"
		v, _, err := e.value(t, md(q))
		require.NoError(t, err)
		assert.InDelta(t, 0, v, 0)
		_, _, err = e.value(t, md(q, "ignoreNullValues", "false"))
		assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	})
}

// Items 20, 21, 22: operationOverTime on the §9 reference vector.
func TestKEDAOperationOverTime(t *testing.T) {
	e := startKEDA(t, true, nil)
	for i, v := range []float64{3, 2, 1, 6, 3, 2, 3} {
		ts := base.Add(time.Duration(i+1) * time.Second)
		e.export(t, point{name: "g", v: v, t: ts}, point{name: "c_total", v: float64(i + 1), t: ts, counter: true})
	}
	e.at(7 * time.Second)
	for _, tc := range []struct {
		op, q, promql string
		want          float64
	}{
		{"last_one", "sum(g)", "sum(g)", 3},
		{"min", "sum(g)", "sum(min_over_time(g[7s]))", 1},
		{"max", "sum(g)", "sum(max_over_time(g[7s]))", 6},
		{"avg", "sum(g)", "sum(avg_over_time(g[7s]))", 20.0 / 7},
		{"count", "sum(g)", "sum(count_over_time(g[7s]))", 7},
		{"rate", "sum(c_total)", "sum(rate(c_total[7s]))", 1},
		{"Rate", "sum(c_total)", "sum(rate(c_total[7s]))", 1},
		{"sum", "sum(g)", "sum(g)", 3},
	} {
		t.Run(tc.op, func(t *testing.T) {
			v, _, err := e.value(t, md(tc.q, "operationOverTime", tc.op, "window", "7s"))
			require.NoError(t, err)
			assert.InDelta(t, tc.want, v, 1e-9)
			pv, ok := e.promValue(t, tc.promql, 7*time.Second)
			require.True(t, ok)
			assert.InDelta(t, pv, v, 1e-9, "equals the rewritten PromQL through the query API")
		})
	}
	_, _, err := e.value(t, md("sum(g)", "operationOverTime", "sum", "window", "7s"))
	require.NoError(t, err)
	assert.Equal(t, 1, e.logs.Count("Unknown operationOverTime"), "item 21: one warning per trigger for sum")

	// Item 22: window changes the range; bad windows are rejected.
	t.Run("window", func(t *testing.T) {
		v, _, err := e.value(t, md("sum(g)", "operationOverTime", "max", "window", "2500ms"))
		require.NoError(t, err)
		assert.InDelta(t, 3, v, 0, "max over (4.5s, 7s] is 3")
	})
	for _, w := range []string{"5x", "11m", "-1s"} {
		_, _, err := e.value(t, md("sum(g)", "window", w))
		assert.Equal(t, codes.InvalidArgument, status.Code(err), w)
		assert.Contains(t, status.Convert(err).Message(), "window")
	}
	v, _, err := e.value(t, md("sum(g)", "window", "30s"))
	require.NoError(t, err)
	assert.InDelta(t, 3, v, 0)
}

// Item 23: kedify/otel-add-on forms.
func TestKEDAKedifyForms(t *testing.T) {
	e := startKEDA(t, true, nil)
	e.export(t,
		point{name: "m", v: 4, kv: []string{"a", "1", "b", "2"}},
		point{name: "m", v: 8, kv: []string{"a", "1", "b", "3"}},
		point{name: "vllm:num_requests_waiting", v: 5, kv: []string{"model_name", "meta-llama/Llama-3.1-8B-Instruct"}},
		point{name: "vllm:num_requests_waiting", v: 50, kv: []string{"model_name", "other"}},
		point{name: "vcs_change_duration", v: 9, kv: []string{"vcs.repository.name", "otel-add-on"}},
		point{name: "vcs_change_duration", v: 99, kv: []string{"vcs.repository.name", "other"}},
	)
	for _, tc := range []struct {
		q    string
		want float64
	}{
		{"avg(m{a=1, b=2})", 4},
		{"sum(vllm:num_requests_waiting{model_name=meta-llama/Llama-3.1-8B-Instruct})", 5},
		{"max(vcs_change_duration{vcs.repository.name=otel-add-on})", 9},
		{"max( m )", 8},
		{"SUM(m)", 12},
		{"m", 12},
	} {
		v, _, err := e.value(t, md(tc.q))
		require.NoError(t, err, tc.q)
		assert.InDelta(t, tc.want, v, 0, tc.q)
	}
}

// Items 25, 26, 27, 28: KServe shapes.
func TestKEDAKServe(t *testing.T) {
	e := startKEDA(t, true, nil)
	sidecar := func(dep, pod string, kv ...string) []string {
		return append([]string{"namespace", "ns", "deployment", dep, "pod", pod}, kv...)
	}
	var pts []point
	for i, pod := range []string{"p1", "p2", "p3"} {
		pts = append(pts,
			point{name: "vllm:num_requests_running", v: 2, kv: sidecar("d", pod, "model_name", "m")},
			point{name: "vllm:num_requests_waiting", v: float64(i + 1), kv: sidecar("d", pod, "model_name", "m")},
			point{name: "vllm:kv_cache_usage_perc", v: 0.3 * float64(i+1), kv: sidecar("d", pod)},
		)
	}
	pts = append(pts, // another deployment and another namespace: excluded
		point{name: "vllm:num_requests_running", v: 100, kv: sidecar("other", "q1", "model_name", "m")},
		point{name: "vllm:num_requests_running", v: 1000, kv: []string{"namespace", "other", "deployment", "d", "pod", "r1"}},
	)
	e.export(t, pts...)
	for i := range 3 { // counters and buckets for rate rows
		e.at(time.Duration(i) * 15 * time.Second)
		var cs []point
		for _, pod := range []string{"p1", "p2"} {
			cs = append(cs, point{name: "vllm:request_success_total", v: float64(i * 30), counter: true, kv: sidecar("d", pod)},
				point{name: "vllm:time_to_first_token_seconds_bucket", v: float64(i * 10), kv: sidecar("d", pod, "le", "0.5")},
				point{name: "vllm:time_to_first_token_seconds_bucket", v: float64(i * 20), kv: sidecar("d", pod, "le", "+Inf")})
		}
		e.export(t, cs...)
	}
	e.export(t, pts...) // refresh the gauges at the last time
	wrap := func(q string) string { return `sum(` + q + `{namespace="ns", deployment="d"})` }
	const L = `namespace="ns",deployment="d"`
	for _, tc := range []struct{ user, handWritten string }{
		{"vllm:num_requests_running", `sum(vllm:num_requests_running{` + L + `})`},
		{`vllm:num_requests_running{model_name="m"}`, `sum(vllm:num_requests_running{model_name="m",` + L + `})`},
		{"sum(vllm:num_requests_waiting)", `sum(sum(vllm:num_requests_waiting{` + L + `}))`},
		{"avg(vllm:kv_cache_usage_perc)", `sum(avg(vllm:kv_cache_usage_perc{` + L + `}))`},
		{"rate(vllm:request_success_total[1m])", `sum(rate(vllm:request_success_total{` + L + `}[1m]))`},
		{"vllm:num_requests_waiting + vllm:num_requests_running", `sum(vllm:num_requests_waiting{` + L + `} + vllm:num_requests_running{` + L + `})`},
		{
			"histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[1m])))",
			`sum(histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{` + L + `}[1m]))))`,
		},
		{`vllm:num_requests_running{namespace="other"}`, `sum(vllm:num_requests_running{namespace="other",` + L + `})`},
	} {
		t.Run(tc.user, func(t *testing.T) {
			v, _, err := e.value(t, md(wrap(tc.user), "targetValue", "2"))
			require.NoError(t, err)
			want, ok := e.promValue(t, tc.handWritten, 2*time.Minute)
			if strings.Contains(tc.user, `"other"`) {
				require.False(t, ok, "both namespace matchers apply: empty")
				want = 0 // empty → 0 (§5 step 5)
			} else {
				require.True(t, ok)
				require.NotZero(t, want, "the case must exercise data")
			}
			assert.InDelta(t, want, v, 1e-9)
		})
	}
	// Item 28: 3 pods × 2 running, target 2 → 6.
	v, _, err := e.value(t, md(`sum(vllm:num_requests_running{namespace="ns", deployment="d"})`, "targetValue", "2"))
	require.NoError(t, err)
	assert.InDelta(t, 6, v, 0)
	assert.GreaterOrEqual(t, e.logs.Count("Trigger query rewritten"), 1, "rewrite logged at Info")

	// Item 26: a broken <q>.
	_, _, err = e.value(t, md(wrap("sum(x{a=\"b\"}")))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), `sum(x{a=\"b\"}`)
	assert.Contains(t, status.Convert(err).Message(), "InferenceService")

	// Item 27: KServe v0.15.
	v15 := md("vllm:num_requests_running", "targetValue", "4.000000", "clampMin", "1", "clampMax", "3")
	resp, err := e.client.GetMetricSpec(e.ctx(t), soRef(v15))
	require.NoError(t, err)
	assert.InDelta(t, 4, resp.GetMetricSpecs()[0].GetTargetSizeFloat(), 0)
	v, _, err = e.value(t, v15)
	require.NoError(t, err)
	assert.InDelta(t, 3, v, 0, "clampMax applied to the 1106 total")
	assert.Equal(t, 1, e.logs.Count("KServe v0.15"), "one warning")

	// KServe's targetValue "0" default is rejected.
	_, err = e.client.GetMetricSpec(e.ctx(t), soRef(md(wrap("vllm:num_requests_running"), "targetValue", "0")))
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
}

// Items 10, 29: warm-up.
func TestKEDAWarmup(t *testing.T) {
	e := startKEDA(t, true, func(c *config.Config) { c.Scaler.Warmup = 30 * time.Second })
	ctx := e.ctx(t)
	r := soRef(md("sum(x)"))
	// Item 10: spec answers during warm-up and with an empty store.
	resp, err := e.client.GetMetricSpec(ctx, r)
	require.NoError(t, err)
	require.Len(t, resp.GetMetricSpecs(), 1)
	ms, err := e.client.StreamMetricSpec(ctx, r)
	require.NoError(t, err)
	got, err := ms.Recv()
	require.NoError(t, err)
	assert.Equal(t, resp.GetMetricSpecs()[0].GetMetricName(), got.GetMetricSpecs()[0].GetMetricName())

	e.export(t, point{name: "x", v: 5})
	e.at(12 * time.Second)
	_, _, err = e.value(t, md("sum(x)"))
	require.Equal(t, codes.Unavailable, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "warming up: receiving metrics for 12s of 30s")
	_, err = e.active(t, md("sum(x)"))
	require.Equal(t, codes.Unavailable, status.Code(err))
	hr, err := http.Get("http://" + e.srv.Addrs().HTTP + "/readyz")
	require.NoError(t, err)
	_ = hr.Body.Close()
	assert.Equal(t, http.StatusOK, hr.StatusCode, "/readyz is 200 during warm-up")

	e.export(t, point{name: "x", v: 6})
	e.at(30 * time.Second)
	e.export(t, point{name: "x", v: 7})
	v, _, err := e.value(t, md("sum(x)"))
	require.NoError(t, err)
	assert.InDelta(t, 7, v, 0)
}

// Item 40: StreamMetricSpec.
func TestKEDAStreamMetricSpec(t *testing.T) {
	e := startKEDA(t, false, nil)
	ctx, cancel := context.WithCancel(e.ctx(t))
	r := soRef(md("sum(x)", "targetValue", "600m"))
	want, err := e.client.GetMetricSpec(ctx, r)
	require.NoError(t, err)
	s, err := e.client.StreamMetricSpec(ctx, r)
	require.NoError(t, err)
	got, err := s.Recv()
	require.NoError(t, err)
	assert.Equal(t, want.GetMetricSpecs()[0].GetMetricName(), got.GetMetricSpecs()[0].GetMetricName())
	assert.InDelta(t, want.GetMetricSpecs()[0].GetTargetSizeFloat(), got.GetMetricSpecs()[0].GetTargetSizeFloat(), 0)
	assert.Equal(t, want.GetMetricSpecs()[0].GetTargetSize(), got.GetMetricSpecs()[0].GetTargetSize())
	next := make(chan error, 1)
	go func() { _, err := s.Recv(); next <- err }()
	e.export(t, point{name: "x", v: 5})
	select {
	case err := <-next:
		t.Fatalf("nothing may follow the first spec, got %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	assert.Equal(t, codes.Canceled, status.Code(<-next))
}
