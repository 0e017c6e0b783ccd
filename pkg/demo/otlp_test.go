package demo

import (
	"maps"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// TestPodMetricsMatchVLLM checks every family a simulated pod exports
// against a real vLLM V1 /metrics body (the receiver's fixture, shared
// rather than copied): same name, same type, same label names, same
// bucket bounds.
func TestPodMetricsMatchVLLM(t *testing.T) {
	t.Parallel()
	f, err := os.Open("../receiver/testdata/vllm-metrics-sample.prom")
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(f)
	require.NoError(t, err)

	e := NewEngine(DefaultEngineConfig(), 0)
	feed(e, 0, 3, 100, 20)
	e.Advance(5)
	pod := &Pod{Name: "qwen-predictor-6f9c8d7b5-abcde", State: PodReady, Engine: e}
	md := podMetrics(pod, time.Now(), time.Now().Add(-time.Minute), false)

	rm := md.ResourceMetrics().At(0)
	attrs := rm.Resource().Attributes().AsRaw()
	assert.Equal(t, pod.Name, attrs["k8s.pod.name"])
	assert.Equal(t, demoNamespace, attrs["k8s.namespace.name"])
	assert.Equal(t, "qwen-predictor", attrs["k8s.deployment.name"])

	ms := rm.ScopeMetrics().At(0).Metrics()
	require.Positive(t, ms.Len())
	for i := range ms.Len() {
		m := ms.At(i)
		t.Run(m.Name(), func(t *testing.T) {
			fam, ok := fams[m.Name()]
			require.True(t, ok, "vLLM exposes no family %q", m.Name())
			want := map[dto.MetricType]pmetric.MetricType{
				dto.MetricType_GAUGE: pmetric.MetricTypeGauge, dto.MetricType_COUNTER: pmetric.MetricTypeSum,
				dto.MetricType_HISTOGRAM: pmetric.MetricTypeHistogram,
			}[fam.GetType()]
			require.Equal(t, want, m.Type(), "type of %s", m.Name())

			var points []pcommon.Map
			switch m.Type() {
			case pmetric.MetricTypeGauge:
				for j := range m.Gauge().DataPoints().Len() {
					points = append(points, m.Gauge().DataPoints().At(j).Attributes())
				}
			case pmetric.MetricTypeSum:
				assert.True(t, m.Sum().IsMonotonic())
				assert.Equal(t, pmetric.AggregationTemporalityCumulative, m.Sum().AggregationTemporality())
				for j := range m.Sum().DataPoints().Len() {
					points = append(points, m.Sum().DataPoints().At(j).Attributes())
				}
			case pmetric.MetricTypeHistogram:
				dp := m.Histogram().DataPoints().At(0)
				points = append(points, dp.Attributes())
				var le []float64
				for _, b := range fam.GetMetric()[0].GetHistogram().GetBucket() {
					le = append(le, b.GetUpperBound())
				}
				le = slices.DeleteFunc(le, func(v float64) bool { return v > 1e300 }) // +Inf
				assert.Equal(t, le, dp.ExplicitBounds().AsRaw(), "bucket bounds of %s", m.Name())
				assert.Equal(t, dp.ExplicitBounds().Len()+1, dp.BucketCounts().Len())
				var sum uint64
				for _, c := range dp.BucketCounts().AsRaw() {
					sum += c
				}
				assert.Equal(t, dp.Count(), sum, "bucket counts are de-cumulated and add up to the count")
			}
			wantLabels := labelNames(fam.GetMetric()[0].GetLabel())
			var gotValues []string
			for _, a := range points {
				got := slices.Sorted(maps.Keys(a.AsRaw()))
				assert.Equal(t, wantLabels, got, "label names of %s", m.Name())
				gotValues = append(gotValues, labelValues(a, wantLabels))
			}
			var wantValues []string
			for _, fm := range fam.GetMetric() {
				v := pcommon.NewMap()
				for _, l := range fm.GetLabel() {
					if l.GetName() != "le" {
						v.PutStr(l.GetName(), l.GetValue())
					}
				}
				wantValues = append(wantValues, labelValues(v, wantLabels))
			}
			assert.ElementsMatch(t, wantValues, gotValues, "the same label values as vLLM (reasons and engine index)")
		})
	}
}

func labelNames(ls []*dto.LabelPair) []string {
	var out []string
	for _, l := range ls {
		if l.GetName() != "le" {
			out = append(out, l.GetName())
		}
	}
	slices.Sort(out)
	return out
}

func labelValues(m pcommon.Map, names []string) string {
	s := ""
	for _, n := range names {
		v, _ := m.Get(n)
		s += n + "=" + strconv.Quote(v.AsString()) + ","
	}
	return s
}

func TestStaleExportMarksEveryPoint(t *testing.T) {
	t.Parallel()
	pod := &Pod{Name: "p", State: PodTerminating, Engine: NewEngine(DefaultEngineConfig(), 0)}
	md := podMetrics(pod, time.Now(), time.Now(), true)
	ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	n := 0
	for i := range ms.Len() {
		m := ms.At(i)
		switch m.Type() {
		case pmetric.MetricTypeGauge:
			for j := range m.Gauge().DataPoints().Len() {
				assert.True(t, m.Gauge().DataPoints().At(j).Flags().NoRecordedValue(), m.Name())
				n++
			}
		case pmetric.MetricTypeSum:
			for j := range m.Sum().DataPoints().Len() {
				assert.True(t, m.Sum().DataPoints().At(j).Flags().NoRecordedValue(), m.Name())
				n++
			}
		case pmetric.MetricTypeHistogram:
			assert.True(t, m.Histogram().DataPoints().At(0).Flags().NoRecordedValue(), m.Name())
			n++
		}
	}
	assert.Equal(t, md.DataPointCount(), n, "a pod that goes sends a stale marker for every series")
}
