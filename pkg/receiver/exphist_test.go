package receiver

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/proto"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestExpToNative checks the conversion against the layouts Prometheus's
// convertBucketsLayout produces for the same points (worked by hand from
// its v0.316.0 source): OTLP bucket i is Prometheus's i+1, gaps of up to
// two empty buckets stay inside a span, the last bucket is always
// written, scales above 8 merge buckets, below -4 are refused, and so are
// counts that do not add up (as Prometheus's TSDB refuses them).
func TestExpToNative(t *testing.T) {
	t.Parallel()
	dense := make([]uint64, 5000)
	for i := range dense {
		dense[i] = 1
	}
	for _, tc := range []struct {
		name   string
		pt     otlpwire.Point
		delta  bool
		ok     bool
		schema int32
		pos    []histogram.Span
		posB   []float64
		neg    []histogram.Span
		negB   []float64
		// off is added to the point's count, the sum of its counts.
		off int
	}{
		{
			name: "plain", pt: otlpwire.Point{Scale: 2, PosOffset: 1, BucketCounts: []uint64{2, 2}}, ok: true, schema: 2,
			pos: []histogram.Span{{Offset: 2, Length: 2}}, posB: []float64{2, 2},
		},
		{
			name: "gap of two stays in the span", pt: otlpwire.Point{BucketCounts: []uint64{1, 0, 0, 3}}, ok: true,
			pos: []histogram.Span{{Offset: 1, Length: 4}}, posB: []float64{1, 0, 0, 3},
		},
		{
			name: "gap of three splits", pt: otlpwire.Point{BucketCounts: []uint64{1, 0, 0, 0, 3}}, ok: true,
			pos: []histogram.Span{{Offset: 1, Length: 1}, {Offset: 3, Length: 1}}, posB: []float64{1, 3},
		},
		{
			name: "leading zeros", pt: otlpwire.Point{BucketCounts: []uint64{0, 0, 5}}, ok: true,
			pos: []histogram.Span{{Offset: 1, Length: 3}}, posB: []float64{0, 0, 5},
		},
		{
			name: "trailing zeros: the last bucket is always written", pt: otlpwire.Point{BucketCounts: []uint64{5, 0, 0, 0, 0}}, ok: true,
			pos: []histogram.Span{{Offset: 1, Length: 1}, {Offset: 3, Length: 1}}, posB: []float64{5, 0},
		},
		{
			name: "scale 10 merges four buckets into one", pt: otlpwire.Point{Scale: 10, PosOffset: -3, BucketCounts: []uint64{1, 2, 3, 4, 5}}, ok: true, schema: 8,
			pos: []histogram.Span{{Offset: 0, Length: 2}}, posB: []float64{6, 9},
		},
		{
			name: "negative side", pt: otlpwire.Point{Scale: -1, NegOffset: 4, NegCounts: []uint64{7, 1}}, ok: true, schema: -1,
			neg: []histogram.Span{{Offset: 5, Length: 2}}, negB: []float64{7, 1},
		},
		{name: "scale below -4", pt: otlpwire.Point{Scale: -5, BucketCounts: []uint64{1}}},
		{name: "too many counts on the wire", pt: otlpwire.Point{BucketsOverflow: true}},
		{
			name: "more buckets than the store takes: resolution lowered", pt: otlpwire.Point{Scale: 8, BucketCounts: dense}, ok: true, schema: 7,
			pos: []histogram.Span{{Offset: 1, Length: 2500}},
		},
		{name: "delta is a gauge", pt: otlpwire.Point{}, delta: true, ok: true},
		{name: "count above the buckets' total", pt: otlpwire.Point{BucketCounts: []uint64{1, 2}, NegCounts: []uint64{3}}, off: 1},
		{name: "count below the buckets' total", pt: otlpwire.Point{BucketCounts: []uint64{1, 2}, NegCounts: []uint64{3}}, off: -1},
		{name: "a bucket count above math.MaxInt64", pt: otlpwire.Point{BucketCounts: []uint64{math.MaxInt64 + 1}}},
		{name: "counts whose total passes math.MaxInt64", pt: otlpwire.Point{BucketCounts: []uint64{math.MaxInt64 - 3}, NegCounts: []uint64{1}}},
		{name: "counts whose total wraps", pt: otlpwire.Point{BucketCounts: []uint64{math.MaxUint64, 5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.pt.ZeroCount, tc.pt.Sum, tc.pt.HasSum, tc.pt.ZeroThreshold = 3, 1.5, true, 0.25
			tc.pt.Count = tc.pt.ZeroCount + uint64(tc.off) // wraps as OTLP's uint64 would
			for _, c := range append(slices.Clone(tc.pt.BucketCounts), tc.pt.NegCounts...) {
				tc.pt.Count += c
			}
			var fh histogram.FloatHistogram
			ok := expToNative(&tc.pt, tc.delta, &fh)
			require.Equal(t, tc.ok, ok)
			if !ok {
				return
			}
			assert.Equal(t, tc.schema, fh.Schema)
			assert.InDelta(t, defaultZeroThreshold, fh.ZeroThreshold, 0, "Prometheus ignores the point's threshold")
			assert.InDelta(t, 3.0, fh.ZeroCount, 0)
			assert.InDelta(t, float64(tc.pt.Count), fh.Count, 0)
			assert.InDelta(t, 1.5, fh.Sum, 0)
			assert.Equal(t, tc.pos, fh.PositiveSpans)
			if tc.posB != nil {
				assert.Equal(t, tc.posB, fh.PositiveBuckets)
			}
			assert.Equal(t, tc.neg, fh.NegativeSpans)
			assert.Equal(t, tc.negB, fh.NegativeBuckets)
			want := histogram.UnknownCounterReset
			if tc.delta {
				want = histogram.GaugeType
			}
			assert.Equal(t, want, fh.CounterResetHint)
			require.NoError(t, fh.Validate())
		})
	}
}

func expMetric(name string, temporality metricspb.AggregationTemporality, dps ...*metricspb.ExponentialHistogramDataPoint) *metricspb.Metric {
	return &metricspb.Metric{Name: name, Unit: "s", Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: &metricspb.ExponentialHistogram{
		AggregationTemporality: temporality, DataPoints: dps,
	}}}
}

// TestExpHistogramIngest checks the native series through OTLP: cumulative
// points become counter histograms (reset hints as a reader of
// Prometheus's TSDB would get them), a flagged point ends the series,
// delta points follow --otlp-delta, a float series of the same identity
// refuses them as type_conflict, and _count and _sum are written as
// before.
func TestExpHistogramIngest(t *testing.T) {
	t.Parallel()
	dp := func(sec int, count uint64, counts ...uint64) *metricspb.ExponentialHistogramDataPoint {
		return &metricspb.ExponentialHistogramDataPoint{
			Attributes: attrs("pod", "a"), TimeUnixNano: tsNs(sec), Count: count, Sum: ptr(float64(count) / 2), Scale: 0,
			Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{BucketCounts: counts},
		}
	}
	f := newFixture(t, Config{}, store.Config{})
	res := f.export(t, req(rm(nil,
		expMetric("lat", cumulative, dp(40, 3, 1, 2), dp(30, 5, 2, 3), dp(20, 1, 1, 0),
			&metricspb.ExponentialHistogramDataPoint{Attributes: attrs("pod", "a"), TimeUnixNano: tsNs(10), Flags: 1}),
	)))
	require.Zero(t, res.rejected, res.message)
	got := dump(f.st)
	lat := got[ser("lat_seconds", "pod", "a")]
	require.Len(t, lat, 4)
	assert.Equal(t, []sampleBits{
		hsb(tsMs(40), "schema:0 zt:1e-128 zc:0 count:3 sum:1.5 hint:0 pos:[{1 2}][1 2] neg:[][] cv:[]"),
		hsb(tsMs(30), "schema:0 zt:1e-128 zc:0 count:5 sum:2.5 hint:2 pos:[{1 2}][2 3] neg:[][] cv:[]"),
		hsb(tsMs(20), "schema:0 zt:1e-128 zc:0 count:1 sum:0.5 hint:0 pos:[{1 2}][1 0] neg:[][] cv:[]"), // a reset
		sb(tsMs(10), math.Float64frombits(value.StaleNaN)),
	}, lat)
	assert.Equal(t, []sampleBits{sb(tsMs(40), 3), sb(tsMs(30), 5), sb(tsMs(20), 1), sb(tsMs(10), math.Float64frombits(value.StaleNaN))},
		got[ser("lat_seconds_count", "pod", "a")])

	// Delta: refused by default, a gauge histogram with --otlp-delta=ingest.
	res = f.export(t, req(rm(nil, expMetric("dlat", delta, dp(40, 3, 1, 2)))))
	assert.Equal(t, int64(1), res.rejected)
	assert.Contains(t, res.message, "delta")
	assert.InDelta(t, 1.0, counterValue(t, f.r.m.rejected[reasonDeltaTemporality]), 0)
	for s := range dump(f.st) {
		assert.NotContains(t, s, "dlat", "nothing of a refused delta histogram is stored")
	}
	fd := newFixture(t, Config{IngestDelta: true}, store.Config{})
	res = fd.export(t, req(rm(nil, expMetric("dlat", delta, dp(40, 3, 1, 2), dp(30, 1, 1)))))
	require.Zero(t, res.rejected, res.message)
	assert.Equal(t, []sampleBits{
		hsb(tsMs(40), "schema:0 zt:1e-128 zc:0 count:3 sum:1.5 hint:3 pos:[{1 2}][1 2] neg:[][] cv:[]"),
		hsb(tsMs(30), "schema:0 zt:1e-128 zc:0 count:1 sum:0.5 hint:3 pos:[{1 1}][1] neg:[][] cv:[]"),
	}, dump(fd.st)[ser("dlat_seconds", "pod", "a")])
	assert.Equal(t, []sampleBits{sb(tsMs(40), 3), sb(tsMs(30), 1)}, dump(fd.st)[ser("dlat_seconds_count", "pod", "a")])

	// A gauge with the histogram's name and labels holds the identity.
	fc := newFixture(t, Config{}, store.Config{})
	res = fc.export(t, req(rm(nil,
		gauge("x_seconds", "", dpD(attrs("pod", "a"), tsNs(50), 1)),
		expMetric("x", cumulative, dp(40, 3, 1, 2)),
	)))
	assert.Equal(t, int64(1), res.rejected)
	assert.InDelta(t, 1.0, counterValue(t, fc.r.m.rejected[reasonTypeConflict]), 0)
	assert.Equal(t, []sampleBits{sb(tsMs(40), 3)}, dump(fc.st)[ser("x_seconds_count", "pod", "a")], "_count is still written")

	// An invalid point: _count and _sum stored, the native sample refused.
	fi := newFixture(t, Config{}, store.Config{})
	bad := dp(40, 3, 1, 2)
	bad.Scale = -7
	res = fi.export(t, req(rm(nil, expMetric("y", cumulative, bad))))
	assert.Equal(t, int64(1), res.rejected)
	assert.InDelta(t, 1.0, counterValue(t, fi.r.m.rejected[reasonInvalidHistogram]), 0)
	assert.NotContains(t, dump(fi.st), ser("y_seconds", "pod", "a"))
	assert.Contains(t, dump(fi.st), ser("y_seconds_count", "pod", "a"))
}

// TestExpHistogramIngestDoesNotAllocate: once its series exist and their
// rings and logs have reached their bounds, a request of exponential
// histograms (40 positive and 6 negative buckets each, a new scale on
// every point) is decoded, converted and stored without allocating, on
// the wire path.
func TestExpHistogramIngestDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	const series, warm, runs = 50, 40, 20
	payloads := make([][]byte, warm+runs+1)
	for j := range payloads {
		var dps []*metricspb.ExponentialHistogramDataPoint
		for p := range series {
			pos := make([]uint64, 40)
			var count uint64
			for k := range pos {
				pos[k] = uint64((j + 1) * (k%7 + 1))
				count += pos[k]
			}
			neg := []uint64{1, 0, 0, 0, 2, uint64(j)}
			count += 3 + uint64(j) + uint64(j) // the negative side, the zero bucket
			dps = append(dps, &metricspb.ExponentialHistogramDataPoint{
				Attributes: attrs("pod", fmt.Sprintf("p%d", p)), TimeUnixNano: tsNs(500 - j),
				Count: count, Sum: ptr(float64(count) / 3), Scale: int32(6 + j%5), ZeroCount: uint64(j),
				Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: int32(-20 + p%3), BucketCounts: pos},
				Negative: &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: 3, BucketCounts: neg},
			})
		}
		b, err := proto.Marshal(req(rm(nil, expMetric("lat", cumulative, dps...))))
		require.NoError(t, err)
		payloads[j] = b
	}
	f := newFixture(t, Config{}, store.Config{MaxSamplesPerSeries: 8})
	next := 0
	ingest := func() {
		res, err := f.r.ingestProto(payloads[next])
		next++
		if err != nil || res.rejected != 0 {
			t.Fatalf("ingest: %v, %d rejected: %s", err, res.rejected, res.message)
		}
	}
	for range warm {
		ingest()
	}
	assert.Zero(t, testing.AllocsPerRun(runs, ingest), "allocations per request of %d exponential histograms", series)
}

// storedNative returns the last native histogram sample of the series
// named name, or nil.
func storedNative(t *testing.T, st *store.Store, name string) *histogram.FloatHistogram {
	t.Helper()
	rd := st.Reader()
	for _, ref := range st.Select(nil, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, name)) {
		_, hs := rd.RangeHistograms(st.Handle(ref), math.MinInt64+1, math.MaxInt64, nil, nil)
		if len(hs) > 0 {
			return hs[len(hs)-1].H.Copy()
		}
	}
	return nil
}

// boundedPoints is an otlpwire.Handler that records the largest side an
// exponential histogram point was decoded into.
type boundedPoints struct {
	maxLen, maxCap int
	overflow       bool
}

func (*boundedPoints) Resource([]otlpwire.KeyValue)             {}
func (*boundedPoints) Scope(_, _ []byte, _ []otlpwire.KeyValue) {}
func (*boundedPoints) Metric(*otlpwire.Metric, int) bool        { return true }
func (h *boundedPoints) Point(p *otlpwire.Point) {
	h.maxLen = max(h.maxLen, len(p.BucketCounts), len(p.NegCounts))
	h.maxCap = max(h.maxCap, cap(p.BucketCounts), cap(p.NegCounts))
	h.overflow = h.overflow || p.BucketsOverflow
}

// TestExpHistogramHostile sends exponential histogram points built to
// hurt: more counts than otlpwire.MaxExpBuckets, scales and offsets at the
// int32 limits, counts that do not add up or overflow. None panics; the
// wire walker never holds more than MaxExpBuckets counts of a side; the
// walker and pdata agree; a refused point is counted as invalid_histogram
// with its _count still written, an accepted one is a valid histogram of
// at most store.MaxHistogramBuckets buckets.
func TestExpHistogramHostile(t *testing.T) {
	t.Parallel()
	ones := func(n int) []uint64 {
		c := make([]uint64, n)
		for i := range c {
			c[i] = 1
		}
		return c
	}
	side := func(off int32, counts []uint64) *metricspb.ExponentialHistogramDataPoint_Buckets {
		return &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: off, BucketCounts: counts}
	}
	for _, tc := range []struct {
		name     string
		dp       *metricspb.ExponentialHistogramDataPoint
		ok       bool
		overflow bool
	}{
		{
			name: "a side three times past MaxExpBuckets",
			dp:   &metricspb.ExponentialHistogramDataPoint{Count: 3 * otlpwire.MaxExpBuckets, Scale: 3, Positive: side(0, ones(3*otlpwire.MaxExpBuckets))},
			ok:   false, overflow: true,
		},
		{
			name: "both sides at MaxExpBuckets: resolution lowered",
			dp: &metricspb.ExponentialHistogramDataPoint{
				Count: 2 * otlpwire.MaxExpBuckets, Scale: 8,
				Positive: side(-5, ones(otlpwire.MaxExpBuckets)), Negative: side(7, ones(otlpwire.MaxExpBuckets)),
			},
			ok: true,
		},
		{name: "scale math.MaxInt32", dp: &metricspb.ExponentialHistogramDataPoint{Count: 6, Scale: math.MaxInt32, Positive: side(3, ones(6))}, ok: true},
		{name: "scale math.MinInt32", dp: &metricspb.ExponentialHistogramDataPoint{Count: 6, Scale: math.MinInt32, Positive: side(3, ones(6))}},
		{name: "offset math.MaxInt32", dp: &metricspb.ExponentialHistogramDataPoint{Count: 10, Scale: 8, Positive: side(math.MaxInt32, ones(10))}},
		{name: "offset math.MaxInt32, scale lowered", dp: &metricspb.ExponentialHistogramDataPoint{Count: 10, Scale: 12, Positive: side(math.MaxInt32, ones(10))}},
		{name: "last index math.MaxInt32-1", dp: &metricspb.ExponentialHistogramDataPoint{Count: 10, Scale: 8, Positive: side(math.MaxInt32-10, ones(10))}, ok: true},
		{name: "offset math.MinInt32", dp: &metricspb.ExponentialHistogramDataPoint{Count: 10, Scale: 0, Negative: side(math.MinInt32, ones(10))}, ok: true},
		{name: "offset math.MinInt32, scale lowered", dp: &metricspb.ExponentialHistogramDataPoint{Count: 10, Scale: 20, Negative: side(math.MinInt32, ones(10))}, ok: true},
		{name: "count 0 over full buckets", dp: &metricspb.ExponentialHistogramDataPoint{Count: 0, Scale: 1, Positive: side(0, ones(100))}},
		{name: "count above the buckets", dp: &metricspb.ExponentialHistogramDataPoint{Count: math.MaxUint64, ZeroCount: 1, Scale: 1, Positive: side(0, ones(100))}},
		{
			name: "counts that wrap to the count",
			dp:   &metricspb.ExponentialHistogramDataPoint{Count: 1, Scale: 1, Positive: side(0, []uint64{math.MaxUint64, 2})},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.dp.TimeUnixNano, tc.dp.Attributes = tsNs(10), attrs("pod", "a")
			b, err := proto.Marshal(req(rm(nil, expMetric("h", cumulative, tc.dp))))
			require.NoError(t, err)

			var w otlpwire.Walker
			var bp boundedPoints
			require.NoError(t, w.Walk(b, &bp))
			assert.LessOrEqual(t, bp.maxLen, otlpwire.MaxExpBuckets, "counts the walker decoded for one side")
			assert.LessOrEqual(t, bp.maxCap, 2*otlpwire.MaxExpBuckets, "counts the walker made room for")
			assert.Equal(t, tc.overflow, bp.overflow)

			ingestBoth(t, b) // the same outcome through pdata

			f := newFixture(t, Config{}, store.Config{})
			res, err := f.r.ingestProto(b)
			require.NoError(t, err)
			assert.Contains(t, dump(f.st), ser("h_seconds_count", "pod", "a"), "_count is written either way")
			fh := storedNative(t, f.st, "h_seconds")
			if !tc.ok {
				assert.Equal(t, int64(1), res.rejected)
				assert.Contains(t, res.message, "invalid_histogram")
				assert.InDelta(t, 1.0, counterValue(t, f.r.m.rejected[reasonInvalidHistogram]), 0)
				assert.Nil(t, fh)
				return
			}
			require.Zero(t, res.rejected, res.message)
			require.NotNil(t, fh)
			require.NoError(t, fh.Validate())
			assert.LessOrEqual(t, len(fh.PositiveBuckets)+len(fh.NegativeBuckets), store.MaxHistogramBuckets)
			assert.InDelta(t, float64(tc.dp.Count), fh.Count, 0)
			t.Logf("schema %d, %d+%d buckets, spans %v %v", fh.Schema, len(fh.PositiveBuckets), len(fh.NegativeBuckets), fh.PositiveSpans, fh.NegativeSpans)
		})
	}
}
