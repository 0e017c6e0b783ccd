package query

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// randHistogram is a valid histogram of a random schema (custom buckets
// one time in five), with random spans on both sides, a zero bucket and
// empty buckets.
func randHistogram(rnd *rand.Rand) *histogram.FloatHistogram {
	h := &histogram.FloatHistogram{Schema: int32(rnd.IntN(13)) - 4}
	side := func(custom bool) ([]histogram.Span, []float64) {
		var spans []histogram.Span
		var buckets []float64
		off := int32(rnd.IntN(40)) - 20
		if custom {
			off = int32(rnd.IntN(3))
		}
		for range rnd.IntN(4) {
			n := uint32(rnd.IntN(5) + 1)
			spans = append(spans, histogram.Span{Offset: off, Length: n})
			for range n {
				buckets = append(buckets, float64(rnd.IntN(4)))
				h.Count += buckets[len(buckets)-1]
			}
			off = int32(rnd.IntN(4))
		}
		return spans, buckets
	}
	if rnd.IntN(5) == 0 {
		h.Schema = histogram.CustomBucketsSchema
		h.CustomValues = []float64{-1, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000}
		h.PositiveSpans, h.PositiveBuckets = side(true)
		if n := 0; len(h.PositiveSpans) > 0 {
			for _, s := range h.PositiveSpans {
				n += int(s.Offset) + int(s.Length)
			}
			if n > len(h.CustomValues)+1 {
				h.PositiveSpans, h.PositiveBuckets, h.Count = nil, nil, 0
			}
		}
	} else {
		h.ZeroThreshold = []float64{0, 1e-128, 0.001, 0.3}[rnd.IntN(4)]
		h.ZeroCount = float64(rnd.IntN(3))
		h.Count += h.ZeroCount
		h.PositiveSpans, h.PositiveBuckets = side(false)
		h.NegativeSpans, h.NegativeBuckets = side(false)
	}
	h.Sum = rnd.Float64()*100 - 20
	if rnd.IntN(10) == 0 {
		h.Sum = math.NaN()
	}
	return h
}

// TestBucketIterMatchesLibrary checks bucketIter, ascending and
// descending, against model/histogram's own iterators bucket for bucket
// (bounds, inclusivity, counts), and the bounds table against its.
func TestBucketIterMatchesLibrary(t *testing.T) {
	t.Parallel()
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		h := randHistogram(rnd)
		require.NoError(t, h.Validate(), "case %d", i)
		for _, reverse := range []bool{false, true} {
			lib := h.AllBucketIterator()
			if reverse {
				lib = h.AllReverseBucketIterator()
			}
			ours := newBucketIter(h, reverse)
			for k := 0; ; k++ {
				more := lib.Next()
				require.Equal(t, more, ours.next(), "case %d (%s) reverse=%v bucket %d", i, h, reverse, k)
				if !more {
					break
				}
				require.Equal(t, lib.At(), ours.cur, "case %d (%s) reverse=%v bucket %d", i, h, reverse, k)
			}
		}
	}
}

// TestHistogramFunctions checks histogram_count, histogram_sum,
// histogram_avg, histogram_quantile and histogram_fraction over a
// histogram whose answers are known by hand, and that floats are dropped.
func TestHistogramFunctions(t *testing.T) {
	t.Parallel()
	// Schema 0: buckets (0.5,1] 2, (1,2] 4, (2,4] 2; 8 observations, sum 12.
	h := &histogram.FloatHistogram{
		Schema: 0, Count: 8, Sum: 12,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 3}},
		PositiveBuckets: []float64{2, 4, 2},
	}
	st := histStore(t, map[string][]*histogram.FloatHistogram{`h{pod="a"}`: {h}})
	ref, err := st.Create(99, labels.FromStrings("__name__", "h", "pod", "f"))
	require.NoError(t, err)
	require.NoError(t, st.Append(ref, 0, 3)) // a float of the same name
	for _, tc := range []struct {
		q    string
		want float64
	}{
		{`histogram_count(h)`, 8},
		{`histogram_sum(h)`, 12},
		{`histogram_avg(h)`, 1.5},
		{`histogram_quantile(0.5, h)`, math.Sqrt2},          // the 4th of 8: half way into (1,2], logarithmically
		{`histogram_quantile(0.25, h)`, 1},                  // the 2nd: the end of (0.5,1]
		{`histogram_quantile(0.375, h)`, math.Pow(2, 0.25)}, // the 3rd: a quarter into (1,2]
		{`histogram_fraction(0, 1, h)`, 0.25},               // (0.5,1] of 8
		{`histogram_fraction(1, 4, h)`, 0.75},               // the rest
		{`histogram_quantile(0.5, h * 2)`, math.Sqrt2},      // scaling keeps the quantile
		{`histogram_count(sum(h{pod="a"}))`, 8},
		{`histogram_count(sum(h))`, math.NaN()}, // a float and a histogram in one sum: no result
	} {
		res, err := evalAt(t, st, tc.q, 0, Options{})
		require.NoError(t, err, tc.q)
		if math.IsNaN(tc.want) {
			assert.Empty(t, res.Vector, tc.q)
			continue
		}
		require.Len(t, res.Vector, 1, tc.q)
		assert.InDelta(t, tc.want, res.Vector[0].F, 1e-12, tc.q)
		assert.Nil(t, res.Vector[0].H, tc.q)
	}
	// The float of the same name: sum over both is dropped (mixed), the
	// histogram functions skip it.
	res, err := evalAt(t, st, `sum by (__name__) ({__name__="h"})`, 0, Options{})
	require.NoError(t, err)
	assert.Empty(t, res.Vector, "floats and histograms in one sum: no result, as Prometheus")
	res, err = evalAt(t, st, `h`, 0, Options{})
	require.NoError(t, err)
	require.Len(t, res.Vector, 2)
	for _, s := range res.Vector {
		if s.Labels.Get("pod") == "a" {
			require.NotNil(t, s.H)
			assert.True(t, h.Equals(s.H))
		} else {
			assert.Nil(t, s.H)
			assert.InDelta(t, 3.0, s.F, 0)
		}
	}
}

// histStore is storeWith for histogram series: one histogram sample per
// entry, at 0, 15 s, 30 s …
func histStore(t testing.TB, series map[string][]*histogram.FloatHistogram) *store.Store {
	t.Helper()
	st := store.New(store.Config{Retention: time.Hour, Freshness: -1}, store.Settings{Now: func() time.Time { return time.UnixMilli(0) }})
	p := NewEngine(st)
	h := uint64(1000)
	for desc, hs := range series {
		lset, err := p.parser.ParseMetric(desc)
		require.NoError(t, err)
		h++
		ref, err := st.CreateHistogram(h, lset)
		require.NoError(t, err)
		for i, fh := range hs {
			require.NoError(t, st.AppendHistogram(ref, int64(i)*15_000, fh))
		}
	}
	return st
}

// TestSumFastPathsGiveWay checks that sum and sum by over selectors and
// rate, whose fast paths take floats only, give histogram series to the
// general path, charging the budget once: a sum over histograms and a
// budget exactly large enough for it both work.
func TestSumFastPathsGiveWay(t *testing.T) {
	t.Parallel()
	end := fixtureStart + (fixturePoints-1)*fixtureInterval
	st := store.New(store.Config{Retention: 15 * time.Minute}, store.Settings{Now: func() time.Time { return time.UnixMilli(end) }})
	for p := range 3 {
		ref, err := st.CreateHistogram(uint64(p+1), labels.FromStrings("__name__", "x", "pod", string(rune('a'+p))))
		require.NoError(t, err)
		for i := range fixturePoints {
			require.NoError(t, st.AppendHistogram(ref, fixtureStart+int64(i)*fixtureInterval, nativeFixture(p, i)))
		}
	}
	e := NewEngine(st)
	for _, q := range []string{`sum(x)`, `sum by (pod) (x)`, `sum(rate(x[1m]))`, `sum by (pod) (rate(x[1m]))`, `max_over_time(histogram_count(sum(rate(x[1m])))[5m:15s])`} {
		plan, err := e.Query(q, Options{})
		require.NoError(t, err, q)
		res, err := plan.Eval(context.Background(), end)
		require.NoError(t, err, q)
		require.NotEmpty(t, res.Vector, q)
		// The samples the general path charges, and no more: one budget
		// unit less fails.
		need := plan.ev.samples
		tight, err := e.Query(q, Options{MaxSamples: int(need)})
		require.NoError(t, err)
		_, err = tight.Eval(context.Background(), end)
		require.NoError(t, err, "%s within %d", q, need)
		tighter, err := e.Query(q, Options{MaxSamples: int(need - 1)})
		require.NoError(t, err)
		_, err = tighter.Eval(context.Background(), end)
		require.ErrorIs(t, err, ErrBudgetExceeded, q)
	}
}
