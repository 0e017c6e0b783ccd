package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/promapi"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// instant evaluates q at tMs and returns the result's series as
// labels.String() → value.
func instant(t *testing.T, st *store.Store, q string, tMs int64) map[string]float64 {
	t.Helper()
	plan, err := query.NewEngine(st).Query(q, query.Options{})
	require.NoError(t, err, q)
	res, err := plan.Eval(context.Background(), tMs)
	require.NoError(t, err, q)
	out := map[string]float64{}
	for _, s := range res.Vector {
		out[s.Labels.String()] = s.F
	}
	return out
}

func summaryMetric(name, unit string, dps ...*metricspb.SummaryDataPoint) *metricspb.Metric {
	return &metricspb.Metric{Name: name, Unit: unit, Data: &metricspb.Metric_Summary{Summary: &metricspb.Summary{DataPoints: dps}}}
}

func sdp(at []*commonpb.KeyValue, t uint64, count uint64, sumV float64, qs ...float64) *metricspb.SummaryDataPoint {
	p := &metricspb.SummaryDataPoint{Attributes: at, TimeUnixNano: t, Count: count, Sum: sumV}
	for i := 0; i+1 < len(qs); i += 2 {
		p.QuantileValues = append(p.QuantileValues, &metricspb.SummaryDataPoint_ValueAtQuantile{Quantile: qs[i], Value: qs[i+1]})
	}
	return p
}

// TestLegacyAlias checks otlp-contract.md §5's legacy alias end to end:
// OTLP in, a selector written with the raw name (dots and slashes as
// underscores, plus _count/_sum for histogram-like types) finds the
// stored series, results carry the Prometheus name, the query API lists
// no alias, push subscribers of the alias are notified, and a real series
// under the alias name wins over the alias.
func TestLegacyAlias(t *testing.T) {
	t.Parallel()
	now := func() time.Time { return testNow }
	st := store.New(store.Config{}, store.Settings{Now: now})
	var (
		mu      sync.Mutex
		touched []uint32
	)
	r := New(st, Config{}, Settings{Now: now, OnIngest: func(ids []uint32) {
		mu.Lock()
		defer mu.Unlock()
		touched = append(touched, ids...)
	}})
	f := &fixture{st: st, r: r}
	res := f.export(t, req(rm(attrs("service.name", "shop"),
		counter("app.frontend.requests",
			dpD(attrs("route", "/a"), tsNs(60), 100), dpD(attrs("route", "/a"), tsNs(30), 160), dpD(attrs("route", "/a"), tsNs(0), 220)),
		gauge("memory.usage", "By", dpI(nil, tsNs(0), 512)),
		hist("http.server.request.duration", "s", cumulative, hdp(nil, tsNs(0), []float64{1}, []uint64{3, 1}, ptr(2.5))),
		summaryMetric("rpc/latency", "ms", sdp(nil, tsNs(0), 7, 70, 0.5, 9)),
		gauge("vllm:num_requests_running", "", dpD(nil, tsNs(0), 2)),
	)))
	require.Zero(t, res.rejected, res.message)
	nowMs := testNow.UnixMilli()

	for _, tc := range []struct {
		alias, stored string
		want          float64
	}{
		{"app_frontend_requests", "app_frontend_requests_total", 220},
		{"memory_usage", "memory_usage_bytes", 512},
		{"http_server_request_duration_count", "http_server_request_duration_seconds_count", 4},
		{"http_server_request_duration_sum", "http_server_request_duration_seconds_sum", 2.5},
		{"rpc_latency_count", "rpc_latency_milliseconds_count", 7},
		{"rpc_latency_sum", "rpc_latency_milliseconds_sum", 70},
	} {
		t.Run("alias="+tc.alias, func(t *testing.T) {
			lset := labels.FromStrings(model.MetricNameLabel, tc.stored, "job", "shop")
			if tc.stored == "app_frontend_requests_total" {
				lset = labels.FromStrings(model.MetricNameLabel, tc.stored, "job", "shop", "route", "/a")
			}
			want := map[string]float64{lset.String(): tc.want}
			assert.Equal(t, want, instant(t, st, tc.alias, nowMs))
			assert.Equal(t, want, instant(t, st, `{__name__="`+tc.alias+`"}`, nowMs))
		})
	}
	// Aliases only exist where the legacy name differs, and only the
	// forms of §5: no _bucket alias, no alias of a histogram's family.
	for _, q := range []string{"http_server_request_duration_bucket", "http_server_request_duration", "rpc_latency", "app_frontend_requests_count"} {
		assert.Empty(t, instant(t, st, q, nowMs), q)
	}
	// rate over the alias is rate over the stored counter.
	byAlias := instant(t, st, `rate(app_frontend_requests[2m])`, nowMs)
	byName := instant(t, st, `rate(app_frontend_requests_total[2m])`, nowMs)
	require.Len(t, byName, 1)
	assert.Equal(t, byName, byAlias)
	assert.Equal(t, instant(t, st, `sum(app_frontend_requests_total{route="/a"})`, nowMs), instant(t, st, `sum(app_frontend_requests{route="/a"})`, nowMs))
	assert.Empty(t, instant(t, st, `app_frontend_requests{route="/b"}`, nowMs), "the other matchers still apply")

	// A trigger written with the alias (its plan names the alias) is
	// notified by the store's MetricID of that name.
	mu.Lock()
	assert.Contains(t, touched, st.MetricID("app_frontend_requests"))
	assert.Contains(t, touched, st.MetricID("app_frontend_requests_total"))
	assert.Contains(t, touched, st.MetricID("http_server_request_duration_count"))
	mu.Unlock()

	// The query API lists stored names only.
	mux := http.NewServeMux()
	promapi.New(query.NewEngine(st), st, promapi.Config{}, promapi.Settings{Now: now}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var names struct{ Data []string }
	getJSON(t, srv.URL+"/api/v1/label/__name__/values", &names)
	assert.Contains(t, names.Data, "app_frontend_requests_total")
	for _, alias := range []string{"app_frontend_requests", "memory_usage", "http_server_request_duration_count", "rpc_latency_sum"} {
		assert.NotContains(t, names.Data, alias)
	}
	var series struct{ Data []map[string]string }
	getJSON(t, srv.URL+"/api/v1/series?match[]="+url.QueryEscape("app_frontend_requests"), &series)
	require.Len(t, series.Data, 1)
	assert.Equal(t, "app_frontend_requests_total", series.Data[0][model.MetricNameLabel])
	getJSON(t, srv.URL+"/api/v1/series?match[]="+url.QueryEscape(`{__name__=~".+"}`), &series)
	for _, s := range series.Data {
		assert.NotEqual(t, "app_frontend_requests", s[model.MetricNameLabel])
		assert.NotEqual(t, "memory_usage", s[model.MetricNameLabel])
	}

	// A series stored under the alias name itself wins: the fallback is
	// only for names with no series.
	res = f.export(t, req(rm(attrs("service.name", "shop"), gauge("app_frontend_requests", "", dpD(nil, tsNs(0), 1)))))
	require.Zero(t, res.rejected, res.message)
	want := labels.FromStrings(model.MetricNameLabel, "app_frontend_requests", "job", "shop").String()
	assert.Equal(t, map[string]float64{want: 1}, instant(t, st, "app_frontend_requests", nowMs))
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	hreq, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(hreq)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	require.NoError(t, json.Unmarshal(b, v), string(b))
}

// TestStaleFamilies checks §9.4 and §14 item 28 for histograms and
// summaries: a flagged point, which carries no bounds or quantiles, ends
// every bucket (+Inf included), quantile, _count and _sum held for its
// identity, and nothing of another resource, even one with the same
// visible labels; a marker for an unknown series creates nothing; a later
// point resumes the series.
func TestStaleFamilies(t *testing.T) {
	t.Parallel()
	histPt := func(sec int, counts ...uint64) *metricspb.HistogramDataPoint {
		return hdp(attrs("model_name", "m"), tsNs(sec), []float64{0.5, 1, 2560}, counts, ptr(12.5))
	}
	sumPt := func(sec int) *metricspb.SummaryDataPoint {
		return sdp(attrs("model_name", "m"), tsNs(sec), 10, 50, 0.5, 4, 0.99, 9)
	}
	markers := func(res []*commonpb.KeyValue) *colmetricpb.ExportMetricsServiceRequest {
		return req(rm(res,
			hist("ttft", "s", cumulative, &metricspb.HistogramDataPoint{Attributes: attrs("model_name", "m"), TimeUnixNano: tsNs(20), Flags: 1}),
			summaryMetric("lat", "s", &metricspb.SummaryDataPoint{Attributes: attrs("model_name", "m"), TimeUnixNano: tsNs(20), Flags: 1}),
			// Markers for identities the store does not hold.
			hist("ttft", "s", cumulative, &metricspb.HistogramDataPoint{Attributes: attrs("model_name", "other"), TimeUnixNano: tsNs(20), Flags: 1}),
			summaryMetric("nope", "", &metricspb.SummaryDataPoint{TimeUnixNano: tsNs(20), Flags: 1}),
		))
	}
	const perResource = 6 + 4 // 4 buckets, _count, _sum; 2 quantiles, _count, _sum
	load := func(t *testing.T, resources ...[]*commonpb.KeyValue) *fixture {
		f := newFixture(t, Config{}, store.Config{Freshness: -1})
		for _, res := range resources {
			r := f.export(t, req(rm(res, hist("ttft", "s", cumulative, histPt(40, 3, 2, 1, 4)), summaryMetric("lat", "s", sumPt(40)))))
			require.Zero(t, r.rejected, r.message)
		}
		require.Equal(t, len(resources)*perResource, f.st.NumSeries())
		return f
	}

	t.Run("case=absent_then_resumed", func(t *testing.T) {
		t.Parallel()
		resA, resC := attrs("k8s.pod.name", "a"), attrs("k8s.pod.name", "c")
		f := load(t, resA, resC)
		r := f.export(t, markers(resA))
		require.Zero(t, r.rejected, r.message)
		assert.Equal(t, 2*perResource, f.st.NumSeries(), "a marker never creates a series")
		for _, q := range []string{"ttft_seconds_bucket", "ttft_seconds_count", "ttft_seconds_sum", "lat_seconds", "lat_seconds_count", "lat_seconds_sum"} {
			q = `count by (pod) (` + q + `)`
			before := instant(t, f.st, q, tsMs(21))
			assert.Len(t, before, 2, q)
			after := instant(t, f.st, q, tsMs(20))
			assert.Len(t, after, 1, q)
			assert.InDelta(t, before[`{pod="c"}`], after[`{pod="c"}`], 0, q)
		}
		r = f.export(t, req(rm(resA, hist("ttft", "s", cumulative, histPt(10, 4, 2, 1, 4)))))
		require.Zero(t, r.rejected, r.message)
		assert.Equal(t, map[string]float64{`{le="0.5"}`: 7, `{le="1.0"}`: 11, `{le="2560.0"}`: 13, `{le="+Inf"}`: 21},
			instant(t, f.st, `sum by (le) (ttft_seconds_bucket)`, tsMs(10)))
		assert.Len(t, instant(t, f.st, `lat_seconds`, tsMs(10)), 2, "pod a's quantiles stay ended")
	})

	t.Run("case=hidden_identity", func(t *testing.T) {
		t.Parallel()
		// B has the same visible labels as A; only its resource differs.
		resA, resB := attrs("service.name", "svc", "k8s.pod.uid", "a"), attrs("service.name", "svc", "k8s.pod.uid", "b")
		f := load(t, resA, resB)
		before := dumpRefs(f.st)
		r := f.export(t, markers(resA))
		require.Zero(t, r.rejected, r.message)
		ended := 0
		for ref, ss := range dumpRefs(f.st) {
			switch n := len(ss) - len(before[ref]); n {
			case 0:
			case 1:
				last := ss[len(ss)-1]
				assert.True(t, value.IsStaleNaN(math.Float64frombits(last.V)))
				assert.Equal(t, tsMs(20), last.T)
				ended++
			default:
				t.Errorf("%s gained %d samples", f.st.Labels(ref), n)
			}
		}
		assert.Equal(t, perResource, ended, "every series of resource A, none of B")
	})
}

// dumpRefs is dump keyed by ref, for series whose labels are equal.
func dumpRefs(st *store.Store) map[store.SeriesRef][]sampleBits {
	out := map[store.SeriesRef][]sampleBits{}
	for _, ref := range st.Select(nil, labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+")) {
		var ss []sampleBits
		for _, s := range st.Range(nil, ref, math.MinInt64, math.MaxInt64) {
			ss = append(ss, sampleBits{T: s.T, V: math.Float64bits(s.V)})
		}
		out[ref] = ss
	}
	return out
}

// TestStartTimeResets checks §9.3 and §14 item 31 through OTLP: start
// times are recorded per series, a changed start time with a rising value
// counts a start-time reset, a falling value is a plain reset that rate
// handles as Prometheus does (and is not counted), a start time after
// the point's time is ignored, and rate is the same as without start times.
func TestStartTimeResets(t *testing.T) {
	t.Parallel()
	now := func() time.Time { return testNow }
	reg := prometheus.NewRegistry()
	st := store.New(store.Config{}, store.Settings{Now: now})
	f := &fixture{st: st, r: New(st, Config{}, Settings{Now: now, Registerer: reg})}
	plain := newFixture(t, Config{}, store.Config{}) // same points without start times
	resets := func() float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "keda_otel_scaler_receiver_counter_resets_total" {
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == "start_time" {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		t.Fatal("no counter_resets_total{cause=start_time}")
		return 0
	}
	s1, s2, s3 := tsNs(600), tsNs(100), tsNs(70)
	steps := []struct {
		sec    int
		v      float64
		start  uint64
		resets float64
		wantSt uint64 // recorded start time afterwards
	}{
		{90, 100, s1, 0, s1},
		{75, 110, s1, 0, s1},
		{60, 120, s2, 1, s2},      // changed start, rising value: counted
		{45, 5, s3, 1, s3},        // value fell: a reset rate sees; not counted
		{30, 15, tsNs(10), 1, s3}, // start after the point's time: ignored
		{15, 25, 0, 1, s3},        // no start time: nothing recorded
		{0, 35, s3, 1, s3},        // unchanged
	}
	for i, s := range steps {
		p := dpD(attrs("pod", "a"), tsNs(s.sec), s.v)
		p.StartTimeUnixNano = s.start
		r := f.export(t, req(rm(nil, counter("req", p))))
		require.Zero(t, r.rejected, r.message)
		r = plain.export(t, req(rm(nil, counter("req", dpD(attrs("pod", "a"), tsNs(s.sec), s.v)))))
		require.Zero(t, r.rejected, r.message)
		assert.InDelta(t, s.resets, resets(), 0, "step %d", i)
		refs := st.Select(nil, labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, "req_total"))
		require.Len(t, refs, 1)
		got, ok := st.StartTime(refs[0])
		require.True(t, ok)
		assert.Equal(t, int64(s.wantSt/1e6), got, "step %d", i)
	}
	nowMs := testNow.UnixMilli()
	for _, q := range []string{`rate(req_total[2m])`, `increase(req_total[2m])`, `resets(req_total[2m])`} {
		want := instant(t, plain.st, q, nowMs)
		require.Len(t, want, 1, q)
		assert.Equal(t, want, instant(t, st, q, nowMs), q)
	}
	// The 120 → 5 drop is the one reset rate and increase see (they are
	// checked against Prometheus's engine on such samples by pkg/query's
	// TestEvalSemantics and test/compat); the start-time changes add none.
	assert.InDelta(t, 1, instant(t, st, `resets(req_total[2m])`, nowMs)[`{pod="a"}`], 0)
	// By hand, as Prometheus extrapolates: 35 − 100 + 120 (the reset) over
	// 90 s of samples, 15 s apart, the window starting 30 s before the
	// first (> 1.1 × 15 s, so extended by 7.5 s).
	assert.InDelta(t, 55*97.5/90, instant(t, st, `increase(req_total[2m])`, nowMs)[`{pod="a"}`], 1e-9)

	// Histograms record start times on every series; summary quantiles
	// (not cumulative) do not.
	hp := hdp(nil, tsNs(5), []float64{1}, []uint64{1, 1}, ptr(1.0))
	hp.StartTimeUnixNano = s1
	sp := sdp(nil, tsNs(5), 2, 2, 0.5, 1)
	sp.StartTimeUnixNano = s1
	r := f.export(t, req(rm(nil, hist("h", "", cumulative, hp), summaryMetric("s", "", sp))))
	require.Zero(t, r.rejected, r.message)
	for name, want := range map[string]bool{"h_bucket": true, "h_count": true, "h_sum": true, "s": false, "s_count": true, "s_sum": true} {
		for _, ref := range st.Select(nil, labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, name)) {
			_, ok := st.StartTime(ref)
			assert.Equal(t, want, ok, name)
		}
	}
}

// TestIdenticalLabelsWarning checks §8.3: series that share every visible
// label and differ only in resource attributes are both stored and
// counted, and the receiver warns once per metric name (and counts every
// such series), naming the missing pod identity.
func TestIdenticalLabelsWarning(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		res   func(pod string) []*commonpb.KeyValue
		point []*commonpb.KeyValue
		twins bool
	}{
		{
			name: "pod_uid_not_promoted",
			res: func(pod string) []*commonpb.KeyValue {
				return attrs("service.instance.id", "localhost:8000", "k8s.pod.uid", pod)
			},
			twins: true,
		},
		{
			// The point's own pod label wins over k8s.pod.name, so the
			// resource's pod identity is hidden.
			name: "pod_name_shadowed_by_point_label",
			res: func(pod string) []*commonpb.KeyValue {
				return attrs("service.instance.id", "localhost:8000", "k8s.pod.name", pod)
			},
			point: attrs("pod", "vllm"),
			twins: true,
		},
		{
			name: "pod_name_promoted",
			res: func(pod string) []*commonpb.KeyValue {
				return attrs("service.instance.id", "localhost:8000", "k8s.pod.name", pod)
			},
		},
	} {
		t.Run("case="+tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			now := func() time.Time { return testNow }
			st := store.New(store.Config{}, store.Settings{Now: now})
			r := New(st, Config{}, Settings{Now: now, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			f := &fixture{st: st, r: r}
			var rms []*metricspb.ResourceMetrics
			for _, pod := range []string{"p-1", "p-2", "p-3"} {
				rms = append(rms, rm(tc.res(pod),
					gauge("vllm:num_requests_waiting", "", dpD(tc.point, tsNs(10), 2)),
					gauge("vllm:num_requests_running", "", dpD(tc.point, tsNs(10), 1)),
				))
			}
			res := f.export(t, req(rms...))
			require.Zero(t, res.rejected, res.message)
			// Again: existing series are no new twins.
			res = f.export(t, req(rms[0]))
			require.Zero(t, res.rejected, res.message)
			assert.Equal(t, 6, st.NumSeries())
			assert.Equal(t, map[string]float64{"{}": 6}, instant(t, st, `sum(vllm:num_requests_waiting{instance="localhost:8000"})`, testNow.UnixMilli()))

			var warned []string
			for line := range strings.Lines(logs.String()) {
				var rec map[string]any
				require.NoError(t, json.Unmarshal([]byte(line), &rec))
				if rec["msg"] == "Series with identical labels from different resources" {
					warned = append(warned, rec["metric"].(string))
					assert.Contains(t, rec["hint"], "k8s.pod.name")
					assert.Contains(t, rec["series"], "localhost:8000")
				}
			}
			if !tc.twins {
				assert.Empty(t, warned)
				assert.Zero(t, testutil.ToFloat64(r.m.twins))
				return
			}
			assert.ElementsMatch(t, []string{"vllm:num_requests_waiting", "vllm:num_requests_running"}, warned, "once per metric name")
			assert.InDelta(t, 4, testutil.ToFloat64(r.m.twins), 0, "p-2 and p-3 of each metric")
		})
	}
}
