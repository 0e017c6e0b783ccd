package compat

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote/otlptranslator/prometheusremotewrite"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestExpHistogramConversionMatchesPrometheus sends random OTLP
// exponential histogram points (scales -6 to 20, so some are lowered to 8
// and some refused; sparse and dense buckets on both sides, offsets of
// either sign, zero counts, sums set or not, cumulative and delta) to our
// receiver, over OTLP/HTTP protobuf (the wire walker) and through
// IngestMetrics (the pdata path), and to Prometheus's own OTLP translator
// (storage/remote/otlptranslator/prometheusremotewrite with
// AddMetricSuffixes and AllowDeltaTemporality, as Prometheus's OTLP
// endpoint configures it). Every native histogram we store equals the
// one Prometheus's converter appends for the same point (labels, time,
// schema, zero bucket, count, sum, spans, buckets and counter-reset
// hint), and a point Prometheus refuses (a scale below -4 refused by the
// translator, counts that do not add up by its TSDB) is refused by us too
// (otlp-contract.md §6).
func TestExpHistogramConversionMatchesPrometheus(t *testing.T) {
	now := time.Now().Truncate(time.Millisecond)
	const points = 600
	for _, seed := range []int64{1, 2, 3} {
		rnd := rand.New(rand.NewSource(seed))
		md := pmetric.NewMetrics()
		rm := md.ResourceMetrics().AppendEmpty()
		rm.Resource().Attributes().PutStr("service.name", "svc")
		rm.Resource().Attributes().PutStr("service.instance.id", "i-1")
		sm := rm.ScopeMetrics().AppendEmpty()
		refused := 0
		for _, temporality := range []pmetric.AggregationTemporality{pmetric.AggregationTemporalityCumulative, pmetric.AggregationTemporalityDelta} {
			m := sm.Metrics().AppendEmpty()
			m.SetName(fmt.Sprintf("lat.%s", temporality))
			m.SetUnit("s")
			eh := m.SetEmptyExponentialHistogram()
			eh.SetAggregationTemporality(temporality)
			for i := range points / 2 {
				if !randomExpPoint(rnd, eh.DataPoints().AppendEmpty(), i, i >= points/2-5, now) {
					refused++
				}
			}
		}

		// Prometheus's converter.
		app := &recordingAppender{got: map[string]*histogram.FloatHistogram{}}
		conv := prometheusremotewrite.NewPrometheusConverter(app)
		_, err := conv.FromMetrics(context.Background(), md, prometheusremotewrite.Settings{
			AddMetricSuffixes: true, AllowDeltaTemporality: true, DisableTargetInfo: true,
		})
		// Prometheus's converter stops a metric at a point it refuses (a
		// scale below -4): those come last in each metric, so every point
		// before them was appended.
		if err != nil {
			require.ErrorContains(t, err, "Scale must be >=")
		}
		require.NotEmpty(t, app.got)

		for _, path := range []string{"wire", "pdata"} {
			st := store.New(store.Config{Freshness: -1}, store.Settings{Now: func() time.Time { return now }})
			r := receiver.New(st, receiver.Config{IngestDelta: true}, receiver.Settings{Now: func() time.Time { return now }})
			var rejected int64
			switch path {
			case "wire":
				body, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(md)
				require.NoError(t, err)
				req := httptest.NewRequest(http.MethodPost, "/v1/metrics", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/x-protobuf")
				w := httptest.NewRecorder()
				r.ServeHTTP(w, req)
				require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			case "pdata":
				rejected, _ = r.IngestMetrics(md)
			}
			got := storedHistograms(t, st)
			compared := 0
			for key, want := range app.got {
				h, ok := got[key]
				if !assert.True(t, ok, "seed %d %s: %s: Prometheus converted it, we did not store it", seed, path, key) {
					continue
				}
				assert.Equal(t, normalized(want), normalized(h), "seed %d %s: %s", seed, path, key)
				compared++
			}
			for key := range got {
				_, ok := app.got[key]
				assert.True(t, ok, "seed %d %s: %s stored, but Prometheus's converter refused it", seed, path, key)
			}
			if path == "pdata" {
				// The refused points' _count and _sum are written; the
				// point counts as rejected once (§9.2).
				assert.Equal(t, int64(refused), rejected, "seed %d: points refused", seed)
			}
			t.Logf("seed %d %s: %d native histograms identical to Prometheus's conversion", seed, path, compared)
			require.Greater(t, compared, points/3)
		}
	}
}

// randomExpPoint fills dp with random exponential histogram data for
// series i, with a scale Prometheus refuses when refuse is set, and
// reports whether the point is valid.
func randomExpPoint(rnd *rand.Rand, dp pmetric.ExponentialHistogramDataPoint, i int, refuse bool, now time.Time) bool {
	dp.Attributes().PutStr("pod", fmt.Sprintf("p%d", i))
	dp.SetTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Duration(rnd.Intn(60_000)) * time.Millisecond)))
	dp.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Hour)))
	scale := int32(rnd.Intn(25) - 4) // -4 .. 20
	if refuse {
		scale = int32(-5 - rnd.Intn(2))
	}
	dp.SetScale(scale)
	var count uint64
	side := func(b pmetric.ExponentialHistogramDataPointBuckets, n int) {
		b.SetOffset(int32(rnd.Intn(101) - 50))
		counts := make([]uint64, n)
		for k := 0; k < len(counts); k++ {
			switch rnd.Intn(5) {
			case 0, 1: // empty, alone or in runs
			default:
				counts[k] = uint64(rnd.Intn(1000))
			}
			if rnd.Intn(20) == 0 { // a long gap: the next buckets stay empty
				k += rnd.Intn(8)
			}
		}
		if n > 0 && rnd.Intn(3) == 0 {
			counts[n-1] = 0 // a trailing empty bucket
		}
		b.BucketCounts().FromRaw(counts)
		for _, c := range counts {
			count += c
		}
	}
	side(dp.Positive(), []int{0, 1, 3, 20, 160, 200}[rnd.Intn(6)])
	if rnd.Intn(3) == 0 {
		side(dp.Negative(), []int{1, 2, 10, 40}[rnd.Intn(4)])
	}
	if rnd.Intn(2) == 0 {
		z := uint64(rnd.Intn(50))
		dp.SetZeroCount(z)
		count += z
	}
	if rnd.Intn(4) == 0 {
		dp.SetZeroThreshold(math.Ldexp(1, -rnd.Intn(40))) // ignored by both
	}
	ok := !refuse
	if !refuse && rnd.Intn(15) == 0 {
		// Counts that do not add up: Prometheus's translator converts
		// the point, its TSDB refuses the histogram (recordingAppender).
		count += uint64(1 - 2*rnd.Intn(2)*min(1, int(count)))
		ok = false
	}
	dp.SetCount(count)
	if rnd.Intn(5) != 0 {
		dp.SetSum(rnd.NormFloat64() * 1000)
	}
	return ok
}

// recordingAppender is a storage.AppenderV2 that keeps each native
// histogram by series and time, as Prometheus's OTLP endpoint would
// append it to its TSDB: the TSDB head validates each histogram first and
// refuses an invalid one (counts that do not add up).
type recordingAppender struct {
	got map[string]*histogram.FloatHistogram
}

func (a *recordingAppender) Append(_ storage.SeriesRef, ls labels.Labels, _, t int64, _ float64, h *histogram.Histogram, fh *histogram.FloatHistogram, _ storage.AppendV2Options) (storage.SeriesRef, error) {
	switch {
	case h != nil:
		if h.Validate() != nil {
			return 0, nil
		}
		a.got[histKey(ls, t)] = h.ToFloat(nil)
	case fh != nil:
		a.got[histKey(ls, t)] = fh.Copy()
	}
	return 0, nil
}

func (a *recordingAppender) Commit() error   { return nil }
func (a *recordingAppender) Rollback() error { return nil }

func histKey(ls labels.Labels, t int64) string { return fmt.Sprintf("%s@%d", ls.String(), t) }

// storedHistograms reads every native histogram sample of st.
func storedHistograms(t *testing.T, st *store.Store) map[string]*histogram.FloatHistogram {
	t.Helper()
	out := map[string]*histogram.FloatHistogram{}
	rd := st.Reader()
	m := labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+")
	for _, ref := range st.Select(nil, m) {
		lset := st.Labels(ref)
		_, hs := rd.RangeHistograms(st.Handle(ref), math.MinInt64+1, math.MaxInt64, nil, nil)
		for _, s := range hs {
			out[histKey(lset, s.T)] = s.H.Copy()
		}
	}
	return out
}

// normalized makes empty and nil slices compare equal.
func normalized(h *histogram.FloatHistogram) *histogram.FloatHistogram {
	h = h.Copy()
	for _, s := range []*[]histogram.Span{&h.PositiveSpans, &h.NegativeSpans} {
		if len(*s) == 0 {
			*s = nil
		}
	}
	for _, b := range []*[]float64{&h.PositiveBuckets, &h.NegativeBuckets, &h.CustomValues} {
		if len(*b) == 0 {
			*b = nil
		}
	}
	return h
}
