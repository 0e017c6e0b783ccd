package receiver

import (
	"bufio"
	"context"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

const fixturePath = "testdata/vllm-metrics-sample.prom"

// promToOTLP converts a /metrics body into OTLP the way the collector's
// prometheus receiver does: one Gauge, Sum or Histogram per family,
// job/instance on the resource, other labels on points, counters as
// monotonic cumulative Sums named with _total, histograms under the family
// name with +Inf dropped from the bounds and de-cumulated bucket counts,
// values as doubles, and each family's _created sample as the start time.
// The _created gauges are also sent as gauges, as a text 0.0.4 scrape
// (which this fixture is) delivers them (otlp-contract.md §12.4).
func promToOTLP(t testing.TB, path string, ts uint64) (*colmetricpb.ExportMetricsServiceRequest, map[string]*dto.MetricFamily) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(f)
	require.NoError(t, err)

	created := func(fam string, m *dto.Metric) uint64 {
		base := strings.TrimSuffix(fam, "_total")
		cf, ok := fams[base+"_created"]
		if !ok {
			return 0
		}
		for _, cm := range cf.GetMetric() {
			if sameLabels(cm.GetLabel(), m.GetLabel()) {
				return uint64(cm.GetGauge().GetValue() * 1e9)
			}
		}
		return 0
	}
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	var ms []*metricspb.Metric
	for _, name := range names {
		fam := fams[name]
		switch fam.GetType() {
		case dto.MetricType_GAUGE:
			g := &metricspb.Gauge{}
			for _, m := range fam.GetMetric() {
				g.DataPoints = append(g.DataPoints, dpD(pointAttrs(m), ts, m.GetGauge().GetValue()))
			}
			ms = append(ms, &metricspb.Metric{Name: name, Data: &metricspb.Metric_Gauge{Gauge: g}})
		case dto.MetricType_COUNTER:
			s := &metricspb.Sum{IsMonotonic: true, AggregationTemporality: cumulative}
			for _, m := range fam.GetMetric() {
				dp := dpD(pointAttrs(m), ts, m.GetCounter().GetValue())
				dp.StartTimeUnixNano = created(name, m)
				s.DataPoints = append(s.DataPoints, dp)
			}
			ms = append(ms, &metricspb.Metric{Name: name, Data: &metricspb.Metric_Sum{Sum: s}})
		case dto.MetricType_HISTOGRAM:
			h := &metricspb.Histogram{AggregationTemporality: cumulative}
			for _, m := range fam.GetMetric() {
				hp := m.GetHistogram()
				dp := &metricspb.HistogramDataPoint{
					Attributes: pointAttrs(m), TimeUnixNano: ts, StartTimeUnixNano: created(name, m),
					Count: hp.GetSampleCount(), Sum: ptr(hp.GetSampleSum()),
				}
				var prev uint64
				for _, b := range hp.GetBucket() {
					if math.IsInf(b.GetUpperBound(), 1) {
						continue
					}
					dp.ExplicitBounds = append(dp.ExplicitBounds, b.GetUpperBound())
					dp.BucketCounts = append(dp.BucketCounts, b.GetCumulativeCount()-prev)
					prev = b.GetCumulativeCount()
				}
				dp.BucketCounts = append(dp.BucketCounts, hp.GetSampleCount()-prev)
				h.DataPoints = append(h.DataPoints, dp)
			}
			ms = append(ms, &metricspb.Metric{Name: name, Data: &metricspb.Metric_Histogram{Histogram: h}})
		default:
			t.Fatalf("unexpected family type %v for %s", fam.GetType(), name)
		}
	}
	return &colmetricpb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			kv("service.name", "vllm"), kv("service.instance.id", "10.0.0.7:8000"),
			kv("server.address", "10.0.0.7"), kv("server.port", "8000"), kv("url.scheme", "http"),
		}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{
			Scope:   &commonpb.InstrumentationScope{Name: "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver", Version: "0.140.0"},
			Metrics: ms,
		}},
	}}}, fams
}

func pointAttrs(m *dto.Metric) []*commonpb.KeyValue {
	var out []*commonpb.KeyValue
	for _, l := range m.GetLabel() {
		out = append(out, kv(l.GetName(), l.GetValue()))
	}
	return out
}

func sameLabels(a, b []*dto.LabelPair) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].GetName() != b[i].GetName() || a[i].GetValue() != b[i].GetValue() {
			return false
		}
	}
	return true
}

// TestVLLMFixture turns the vLLM /metrics fixture into OTLP as the
// collector's prometheus receiver does and checks, with the query engine,
// that every sample line of the fixture is queryable under its /metrics
// name and labels with its value (otlp-contract.md §12.6, §14 item 26).
func TestVLLMFixture(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, store.Config{})
	r, fams := promToOTLP(t, fixturePath, tsNs(5))
	require.Len(t, fams, 60)
	res := f.export(t, r)
	require.Zero(t, res.rejected, res.message)

	eng := query.NewEngine(f.st)
	eval := func(q string) []query.Sample {
		t.Helper()
		plan, err := eng.Query(q, query.Options{})
		require.NoError(t, err, q)
		out, err := plan.Eval(context.Background(), testNow.UnixMilli())
		require.NoError(t, err, q)
		return out.Vector
	}

	file, err := os.Open(fixturePath)
	require.NoError(t, err)
	defer func() { _ = file.Close() }()
	sc := bufio.NewScanner(file)
	lines, familiesSeen := 0, map[string]bool{}
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		sel, valStr := line[:sp], line[sp+1:]
		want, err := strconv.ParseFloat(valStr, 64)
		require.NoError(t, err, line)
		name := sel
		if i := strings.IndexByte(sel, '{'); i >= 0 {
			name = sel[:i]
		}
		got := eval(sel)
		if assert.Len(t, got, 1, "selector %s", sel) {
			assert.InDelta(t, want, got[0].F, 0, "selector %s", sel)
			assert.Equal(t, "vllm", got[0].Labels.Get("job"), sel)
			assert.Equal(t, "10.0.0.7:8000", got[0].Labels.Get("instance"), sel)
		}
		lines++
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if fam := strings.TrimSuffix(name, suffix); fam != name && fams[fam] != nil && fams[fam].GetType() == dto.MetricType_HISTOGRAM {
				name = fam
			}
		}
		familiesSeen[name] = true
	}
	require.NoError(t, sc.Err())
	assert.Len(t, familiesSeen, 60, "every family is queryable")
	assert.Equal(t, 348, lines)

	// The values otlp-contract.md §12.6 lists.
	for q, want := range map[string]float64{
		`sum(vllm:num_requests_running{model_name="qwen"})`:                         7,
		`sum(vllm:num_requests_waiting)`:                                            3,
		`sum(vllm:num_requests_waiting_by_reason{reason="capacity"})`:               3,
		`max(vllm:kv_cache_usage_perc)`:                                             0.4123046875,
		`sum(vllm:request_success_total)`:                                           1530,
		`sum(vllm:time_to_first_token_seconds_count)`:                               1536,
		`sum(vllm:time_to_first_token_seconds_bucket{le="0.5"})`:                    1285,
		`sum(vllm:time_to_first_token_seconds_bucket{le="1.0"})`:                    1454,
		`sum(vllm:e2e_request_latency_seconds_count)`:                               1530,
		`sum(vllm:prompt_tokens_total)`:                                             1241454,
		`count(vllm:time_to_first_token_seconds_bucket{model_name="qwen"})`:         23,
		`sum(vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="qwen"})`: 1536,
	} {
		got := eval(q)
		if assert.Len(t, got, 1, q) {
			assert.InDelta(t, want, got[0].F, 0, q)
		}
	}
}
