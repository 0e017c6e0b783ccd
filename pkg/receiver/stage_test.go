package receiver

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestStagedAppendsMatchPointByPoint checks staged appends (stage.go)
// against the pdata path, which flushes every point by itself: the same stored
// series and samples, and the same partial success (counts, and the first
// example of every reason, so rejections are recorded in request order),
// including points created, rejected and re-used inside one stage and
// stages that fill up.
func TestStagedAppendsMatchPointByPoint(t *testing.T) {
	t.Parallel()
	stale := func(dp *metricspb.NumberDataPoint) *metricspb.NumberDataPoint { dp.Flags = 1; return dp }
	many := func(n int) []*metricspb.NumberDataPoint {
		var dps []*metricspb.NumberDataPoint
		for i := range n {
			dps = append(dps, dpD(attrs("pod", "p"+string(rune('a'+i%26))+string(rune('a'+i/26))), tsNs(10), float64(i)))
		}
		return dps
	}
	tests := []struct {
		name string
		cfg  Config
		scfg store.Config
		req  []*metricspb.Metric
	}{
		{"mixed outcomes in one stage", Config{}, store.Config{}, []*metricspb.Metric{
			gauge("g", "",
				dpD(attrs("pod", "a"), tsNs(10), 1),
				dpD(attrs("pod", "a"), tsNs(20), 2),        // out of order
				dpD(attrs("pod", "b"), tsNs(10), 3),        // created in the stage
				dpD(attrs("pod", "a"), tsNs(10), 1),        // duplicate, dropped silently
				dpD(attrs("pod", "a"), tsNs(10), 9),        // duplicate timestamp
				stale(dpD(attrs("pod", "c"), tsNs(10), 0)), // marker for an unknown series: dropped
				dpD(attrs("pod", "d"), tsNs(-3600), 1),     // too far in the future: rejected before staging
				dpD(attrs("pod", "e"), 0, 1),               // missing timestamp
				dpD(attrs("pod", "b"), tsNs(5), 4),         // appended after its creation
				stale(dpD(attrs("pod", "b"), tsNs(4), 0)),  // marker for a known series
				dpD(attrs("pod", "f", "x.y", "1"), tsNs(9), math.NaN()),
			),
			counter("c", dpD(attrs("pod", "a"), tsNs(10), 1), dpD(attrs("pod", "a"), tsNs(11), 0)),
		}},
		{"series limit inside a stage", Config{}, store.Config{MaxSeries: 3}, []*metricspb.Metric{
			gauge("g", "", many(6)...),
			gauge("h", "", dpD(attrs("pod", "aa"), tsNs(10), 1)),
		}},
		{"stages that fill up", Config{}, store.Config{}, []*metricspb.Metric{
			gauge("g", "", append(many(3*stageSize+5), many(2*stageSize)...)...), // the repeats are duplicates
		}},
		{"histograms", Config{}, store.Config{}, []*metricspb.Metric{
			hist("h", "s", cumulative,
				hdp(attrs("pod", "a"), tsNs(10), []float64{0.5, 1}, []uint64{1, 2, 3}, ptr(1.5)),
				hdp(attrs("pod", "a"), tsNs(20), []float64{0.5, 1}, []uint64{1, 2, 3}, ptr(1.5)), // out of order
				hdp(attrs("pod", "b"), tsNs(10), []float64{0.5, 1}, []uint64{1, 1, 1}, nil),
				&metricspb.HistogramDataPoint{Attributes: attrs("pod", "a"), TimeUnixNano: tsNs(9), Flags: 1}, // marker: flushes the stage first
				hdp(attrs("pod", "a"), tsNs(8), []float64{0.5, 1}, []uint64{2, 2, 3}, ptr(2.5)),
				hdp(attrs("pod", "c"), tsNs(10), bounds(40), make([]uint64, 41), nil),       // more buckets than a stage holds
				hdp(attrs("pod", "c"), tsNs(10), bounds(40), ones(41), nil),                 // the same, rejected in every flush it spans
				hdp(attrs("pod", "b"), tsNs(10), []float64{0.5, 1}, []uint64{1, 1, 2}, nil), // duplicate timestamp
				hdp(attrs("pod", "d"), tsNs(10), []float64{0.25, 0.5, 1}, []uint64{1, 1, 1, 1}, ptr(1.0)),
			),
			gauge("g", "", dpD(attrs("pod", "a"), tsNs(10), 1)),
		}},
		{"histogram stages that fill up", Config{}, store.Config{}, []*metricspb.Metric{
			hist("h", "s", cumulative, manyHist(3*stageSize)...),
		}},
		// Native histograms staged with their _count and _sum: each
		// stage's histograms in their own slots, refused conversions in
		// their order, a series that holds floats (type_conflict), a
		// marker that ends a series.
		{"exponential histogram stages that fill up", Config{}, store.Config{}, []*metricspb.Metric{
			gauge("e_seconds", "", dpD(attrs("pod", "pab"), tsNs(10), 1)),
			expMetric("e", cumulative, append(manyExp(2*stageSize+5),
				&metricspb.ExponentialHistogramDataPoint{Attributes: attrs("pod", "pac"), TimeUnixNano: tsNs(9), Flags: 1},
				&metricspb.ExponentialHistogramDataPoint{ // out of order
					Attributes: attrs("pod", "paa"), TimeUnixNano: tsNs(11), Count: 1, Scale: 2,
					Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{BucketCounts: []uint64{1}},
				},
			)...),
		}},
		// The store's label limit is below the receiver's: the first point
		// is refused when its staged append creates the series, the second
		// at once by the receiver. The example must be the first one.
		{"one reason staged and immediate", Config{MaxLabelsPerSeries: 3}, store.Config{MaxLabelsPerSeries: 2}, []*metricspb.Metric{
			gauge("g", "",
				dpD(attrs("pod", "a", "x", "1"), tsNs(10), 1),
				dpD(attrs("pod", "b", "x", "1", "y", "2", "z", "3"), tsNs(10), 1),
				dpD(attrs("pod", "c"), tsNs(10), 1),
			),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := mustMarshal(t, req(rm(nil, tt.req...)))
			fw, regW := countedFixture(t, tt.cfg, tt.scfg)
			resW, err := fw.r.ingestProto(b)
			require.NoError(t, err)
			er := pmetricotlp.NewExportRequest()
			require.NoError(t, er.UnmarshalProto(b))
			fp, regP := countedFixture(t, tt.cfg, tt.scfg)
			resP := fp.r.ingestPdata(er.Metrics())
			// Stored samples are counted per request (the request's
			// store.Appender); the count must match point-by-point
			// appends and what the store holds.
			stored := 0
			for _, ss := range dump(fw.st) {
				stored += len(ss)
			}
			require.InDelta(t, float64(stored), storeSamples(t, regW), 0, "store samples appended")
			require.InDelta(t, storeSamples(t, regP), storeSamples(t, regW), 0, "store samples appended")
			require.Equal(t, dump(fp.st), dump(fw.st), "stored series and samples")
			require.Equal(t, resP, resW, "partial success")
			require.InDelta(t, counterValue(t, fp.r.m.accepted), counterValue(t, fw.r.m.accepted), 0, "accepted points")
			require.NotEmpty(t, dump(fw.st))
		})
	}
}

// TestPointSpanningFlushes: a point with more samples than a stage holds
// is appended over several flushes and counted once, as accepted or as
// rejected with its first reason, on both decoding paths.
func TestPointSpanningFlushes(t *testing.T) {
	t.Parallel()
	const nb = 3*stageSize + 7
	for _, path := range []string{"wire", "pdata"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			// The store refuses label values over 16 bytes: the le of
			// the first bounds below, not the metric names.
			f := newFixture(t, Config{}, store.Config{MaxLabelValueLength: 16})
			export := func(dps ...*metricspb.HistogramDataPoint) result {
				r := req(rm(nil, hist("h", "s", cumulative, dps...)))
				if path == "wire" {
					return f.export(t, r)
				}
				er := pmetricotlp.NewExportRequest()
				require.NoError(t, er.UnmarshalProto(mustMarshal(t, r)))
				return f.r.ingestPdata(er.Metrics())
			}
			ok := hdp(attrs("pod", "a"), tsNs(20), bounds(nb), make([]uint64, nb+1), ptr(1.0))
			res := export(ok, hdp(attrs("pod", "b"), tsNs(20), bounds(nb), make([]uint64, nb+1), nil))
			assert.Equal(t, result{}, res)
			assert.InDelta(t, 2, counterValue(t, f.r.m.accepted), 0)
			assert.Len(t, dump(f.st), 2*(nb+2)+1, "buckets, +Inf, _count, and one _sum")

			// Rejected in its first flush (out of order: every sample), and
			// in its last one only (a new bucket created, +Inf and _count
			// duplicate timestamps): one rejection each.
			late := hdp(attrs("pod", "a"), tsNs(30), bounds(nb), make([]uint64, nb+1), ptr(1.0))
			dup := hdp(attrs("pod", "b"), tsNs(20), bounds(nb+1), append(make([]uint64, nb+1), 1), nil)
			res = export(late, dup)
			assert.Equal(t, result{rejected: 2, message: `2 points rejected: out_of_order=1 (first: h_seconds_bucket{pod="a"}), ` +
				`duplicate_timestamp=1 (first: h_seconds_bucket{pod="b"})`}, res)
			assert.InDelta(t, 2, counterValue(t, f.r.m.accepted), 0)

			// Rejected in its first flush only: its smallest bounds make
			// le values the store refuses; the rest are stored.
			long := append([]float64{1.2345678901234567e-05, 2.2345678901234567e-05}, bounds(nb)...)
			res = export(hdp(attrs("pod", "c"), tsNs(20), long, make([]uint64, len(long)+1), nil))
			assert.Equal(t, result{rejected: 1, message: `1 points rejected: label_value_too_long=1 (first: h_seconds_bucket{pod="c"})`}, res)
			assert.InDelta(t, 2, counterValue(t, f.r.m.accepted), 0)
			assert.Len(t, dump(f.st), 2*(nb+2)+1+1+(nb+2), "pod c: every bucket but the two refused, +Inf, _count")
		})
	}
}

// ones returns n counts of 1.
func ones(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = 1
	}
	return out
}

// bounds returns n increasing bucket bounds.
func bounds(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i + 1)
	}
	return out
}

// manyHist returns n histogram points of distinct series, some with more
// buckets than others, so stages fill at different points.
func manyHist(n int) []*metricspb.HistogramDataPoint {
	var dps []*metricspb.HistogramDataPoint
	for i := range n {
		nb := 1 + i%12
		dps = append(dps, hdp(attrs("pod", "p"+string(rune('a'+i%26))+string(rune('a'+i/26))), tsNs(10), bounds(nb), make([]uint64, nb+1), ptr(float64(i))))
	}
	return dps
}

// manyExp returns n exponential histogram points of distinct series, each
// with its own scale and buckets; every seventh one's counts do not add
// up (invalid_histogram).
func manyExp(n int) []*metricspb.ExponentialHistogramDataPoint {
	var dps []*metricspb.ExponentialHistogramDataPoint
	for i := range n {
		counts := ones(1 + i%9)
		count := uint64(len(counts)) + uint64(i%3)
		if i%7 == 6 {
			count++
		}
		dps = append(dps, &metricspb.ExponentialHistogramDataPoint{
			Attributes: attrs("pod", "p"+string(rune('a'+i%26))+string(rune('a'+i/26))), TimeUnixNano: tsNs(10),
			Count: count, Sum: ptr(float64(i)), Scale: int32(i%5 - 1), ZeroCount: uint64(i % 3),
			Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: int32(i%4 - 2), BucketCounts: counts},
		})
	}
	return dps
}

// countedFixture is newFixture with the store's metrics registered.
func countedFixture(t testing.TB, cfg Config, scfg store.Config) (*fixture, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	now := func() time.Time { return testNow }
	st := store.New(scfg, store.Settings{Now: now, Registerer: reg})
	return &fixture{st: st, r: New(st, cfg, Settings{Now: now})}, reg
}

// storeSamples reads keda_otel_scaler_store_samples_appended_total.
func storeSamples(t testing.TB, g prometheus.Gatherer) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "keda_otel_scaler_store_samples_appended_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("keda_otel_scaler_store_samples_appended_total not registered")
	return 0
}
