package receiver

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/proto"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/interest"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

const vllmFixture = "testdata/vllm-metrics-sample.prom"

// vllmFleet returns one encoded Export per pod of a vLLM fleet at ts: the
// fixture as the collector's prometheus receiver sends it, each pod with
// its own k8s.pod.name, and the number of data points per pod.
func vllmFleet(t testing.TB, pods int, ts uint64) ([][]byte, int) {
	t.Helper()
	req, _ := promToOTLP(t, vllmFixture, ts)
	points := 0
	for _, m := range req.ResourceMetrics[0].ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case *metricspb.Metric_Gauge:
			points += len(d.Gauge.DataPoints)
		case *metricspb.Metric_Sum:
			points += len(d.Sum.DataPoints)
		case *metricspb.Metric_Histogram:
			points += len(d.Histogram.DataPoints)
		}
	}
	out := make([][]byte, pods)
	for i := range pods {
		r := proto.Clone(req).(*colmetricpb.ExportMetricsServiceRequest)
		res := r.ResourceMetrics[0].Resource
		res.Attributes = append(res.Attributes, kv("k8s.pod.name", fmt.Sprintf("vllm-%d", i)), kv("k8s.namespace.name", "ml"))
		b, err := proto.Marshal(r)
		require.NoError(t, err)
		out[i] = b
	}
	return out, points
}

func storedNames(st *store.Store) map[string]int {
	out := map[string]int{}
	for _, ref := range st.Select(nil, labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+")) {
		out[st.Labels(ref).Get(model.MetricNameLabel)]++
	}
	return out
}

func exprSel(t testing.TB, q string) interest.Selectors {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(q)
	require.NoError(t, err)
	return interest.FromExpr(e)
}

// TestIngestFilter: with --metric-allow-list only the matching families are
// stored; with --lazy-ingest only those a holder asked for, from the next
// Export on, and no longer once released. Filtered points are not
// rejections (partial success stays empty) and are counted by reason.
func TestIngestFilter(t *testing.T) {
	now := func() time.Time { return testNow }
	fleet, perPod := vllmFleet(t, 3, tsNs(10))
	ingest := func(t *testing.T, r *Receiver, fleet [][]byte) {
		for _, b := range fleet {
			res, err := r.ingestProto(b)
			require.NoError(t, err)
			require.Zero(t, res.rejected, res.message)
		}
	}
	full := store.New(store.Config{}, store.Settings{Now: now})
	ingest(t, New(full, Config{}, Settings{Now: now}), fleet)
	all := storedNames(full)
	require.Greater(t, len(all), 50, "the fixture has ~60 families")

	t.Run("allow-list", func(t *testing.T) {
		f, err := interest.NewFilter(`vllm:num_requests_(running|waiting)|vllm:time_to_first_token_seconds_bucket`, nil)
		require.NoError(t, err)
		st := store.New(store.Config{}, store.Settings{Now: now})
		reg := prometheus.NewRegistry()
		r := New(st, Config{Filter: f}, Settings{Now: now, Registerer: reg})
		ingest(t, r, fleet)
		got := storedNames(st)
		assert.Equal(t, map[string]int{
			"vllm:num_requests_running":               all["vllm:num_requests_running"],
			"vllm:num_requests_waiting":               all["vllm:num_requests_waiting"],
			"vllm:time_to_first_token_seconds_bucket": all["vllm:time_to_first_token_seconds_bucket"],
			"vllm:time_to_first_token_seconds_count":  all["vllm:time_to_first_token_seconds_count"],
			"vllm:time_to_first_token_seconds_sum":    all["vllm:time_to_first_token_seconds_sum"],
		}, got, "a family is stored whole when one of its names matches")
		accepted := testutil.ToFloat64(r.m.accepted)
		filtered := testutil.ToFloat64(r.fm.filtered[interest.NotAllowed])
		assert.InDelta(t, float64(3*perPod), accepted+filtered, 0, "every point is accepted or filtered")
		assert.Positive(t, filtered)
	})

	t.Run("lazy", func(t *testing.T) {
		reg := interest.NewRegistry(30*time.Second, time.Minute, 0, now)
		f, err := interest.NewFilter("", reg)
		require.NoError(t, err)
		st := store.New(store.Config{}, store.Settings{Now: now})
		r := New(st, Config{Filter: f}, Settings{Now: now})
		ingest(t, r, fleet)
		assert.Empty(t, storedNames(st), "nothing asked for, nothing stored")
		assert.InDelta(t, float64(3*perPod), testutil.ToFloat64(r.fm.filtered[interest.NotRequested]), 0)

		h, err := reg.Acquire(exprSel(t, `sum(vllm:num_requests_waiting{namespace="ml"}) + sum(rate(vllm:request_success_total[1m]))`), nil)
		require.NoError(t, err)
		ingest(t, r, fleet)
		got := storedNames(st)
		assert.Equal(t, map[string]int{
			"vllm:num_requests_waiting":  all["vllm:num_requests_waiting"],
			"vllm:request_success_total": all["vllm:request_success_total"],
		}, got)

		h.Release()
		later, _ := vllmFleet(t, 3, tsNs(5))
		ingest(t, r, later)
		refs := st.Select(nil, labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, "vllm:num_requests_waiting"))
		require.NotEmpty(t, refs)
		last, ok := st.LastSampleTime(refs[0])
		require.True(t, ok)
		assert.Equal(t, tsMs(10), last, "released: later samples are not stored")
	})
}

// BenchmarkFilteredIngest ingests a vLLM fleet (the fixture's ~60
// families per pod, each pod its own Export) with every family stored,
// with an allow-list of the three families the KServe triggers read, and
// in lazy mode with those three asked for. It reports CPU per data point
// pushed (ns/dp, all points of the request, stored or not) and the
// store's memory per pod after filling its window (store-B/pod, the
// store's own estimate, and heap-B/pod, the live heap growth).
func BenchmarkFilteredIngest(b *testing.B) {
	const pods = 200
	want := `vllm:num_requests_running|vllm:num_requests_waiting|vllm:time_to_first_token_seconds_bucket`
	for _, mode := range []string{"full", "allow", "lazy"} {
		b.Run("mode="+mode, func(b *testing.B) {
			now := func() time.Time { return benchNow }
			var f *interest.Filter
			var err error
			switch mode {
			case "allow":
				f, err = interest.NewFilter(want, nil)
			case "lazy":
				reg := interest.NewRegistry(0, time.Hour, 0, now)
				_, err = reg.Acquire(exprSel(b, `sum(vllm:num_requests_running) + sum(vllm:num_requests_waiting) + histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[1m])))`), nil)
				require.NoError(b, err)
				f, err = interest.NewFilter("", reg)
			}
			require.NoError(b, err)
			start := uint64(benchNow.Add(-9 * time.Minute).UnixNano())
			rounds := make([][][]byte, 16)
			var perPod int
			for i := range rounds {
				rounds[i], perPod = vllmFleet(b, pods, start+uint64(i)*uint64(time.Second))
			}
			// The payloads exist before the baseline, so heap-B/pod is
			// what the store and receiver keep, not the encoded requests.
			runtime.GC()
			var m0 runtime.MemStats
			runtime.ReadMemStats(&m0)
			st := store.New(store.Config{MaxSamplesPerSeries: 8}, store.Settings{Now: now})
			require.NoError(b, st.Start(context.Background()))
			// Shut down when this run ends, not in a Cleanup: a Cleanup would
			// keep the store alive until the last run, inside the next run's
			// heap baseline.
			defer func() { require.NoError(b, st.Shutdown(context.Background())) }()
			r := New(st, Config{Filter: f}, Settings{Now: now})
			// Fill the 8-sample window, then measure steady ingest.
			for i := range 8 {
				for _, p := range rounds[i] {
					_, err := r.ingestProto(p)
					require.NoError(b, err)
				}
			}
			runtime.GC()
			var m1 runtime.MemStats
			runtime.ReadMemStats(&m1)
			storeB, heapB := float64(st.MemoryEstimate())/pods, float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/pods
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				round := rounds[8+i%8]
				if i%8 == 0 && i > 0 {
					b.StopTimer() // new timestamps: later than every stored sample
					shift := uint64(8+i) * uint64(time.Second)
					for j := range rounds[8:] {
						rounds[8+j], _ = vllmFleet(b, pods, start+shift+uint64(j)*uint64(time.Second))
					}
					round = rounds[8]
					b.StartTimer()
				}
				for _, p := range round {
					if _, err := r.ingestProto(p); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*pods*perPod), "ns/dp")
			b.ReportMetric(storeB, "store-B/pod")
			b.ReportMetric(heapB, "heap-B/pod")
		})
	}
}
