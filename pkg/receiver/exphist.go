package receiver

import (
	"errors"
	"math"

	"github.com/prometheus/prometheus/model/histogram"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Exponential histograms (otlp-contract.md §6): each point is stored as a
// native histogram sample of the series n, converted as Prometheus's OTLP
// receiver converts it (exponentialToNativeHistogram in v0.316.0's
// storage/remote/otlptranslator/prometheusremotewrite), and, as before,
// as the floats n_count and n_sum. No n_bucket series is written: there is
// no classic bucketing of an exponential histogram, and Prometheus's OTLP
// receiver writes none either (its ConvertHistogramsToNHCB option turns
// explicit histograms into native ones, never the other way round).

// defaultZeroThreshold is the zero threshold Prometheus gives every
// converted histogram; it ignores the point's zero_threshold.
const defaultZeroThreshold = 1e-128

// expToNative converts an exponential histogram point into fh (its slices
// reused), as Prometheus does: a scale above 8 is lowered to 8 by merging
// buckets, a scale below -4 is refused, the buckets become spans (a gap of
// up to two empty buckets stays inside a span), the counter-reset hint is
// unknown (gauge for delta temporality), count and sum are copied (sum 0
// when unset). A point whose counts do not add up is refused, as
// Prometheus's TSDB refuses the histogram its translator makes of it
// (countsAddUp); so is one whose bucket indices leave int32 (indicesFit).
// Beyond Prometheus, a histogram with more than
// store.MaxHistogramBuckets buckets has its resolution lowered until it
// fits (Prometheus's scrape-time bucket limit does the same), and is
// refused only when even scale -4 does not fit. It reports false for a
// point to refuse (invalid_histogram).
func expToNative(p *otlpwire.Point, delta bool, fh *histogram.FloatHistogram) bool {
	scale := p.Scale
	if scale < histogram.ExponentialSchemaMin || p.BucketsOverflow || !countsAddUp(p) ||
		!indicesFit(p.PosOffset, len(p.BucketCounts)) || !indicesFit(p.NegOffset, len(p.NegCounts)) {
		return false
	}
	var scaleDown int32
	if scale > histogram.ExponentialSchemaMax {
		scaleDown = scale - histogram.ExponentialSchemaMax
		scale = histogram.ExponentialSchemaMax
	}
	fh.CounterResetHint = histogram.UnknownCounterReset
	if delta {
		// As Prometheus: a gauge, so that no reset is ever detected.
		fh.CounterResetHint = histogram.GaugeType
	}
	fh.Schema = scale
	fh.ZeroThreshold = defaultZeroThreshold
	fh.ZeroCount = float64(p.ZeroCount)
	fh.Count = float64(p.Count)
	fh.Sum = 0
	if p.HasSum {
		fh.Sum = p.Sum
	}
	fh.CustomValues = nil
	fh.PositiveSpans, fh.PositiveBuckets = bucketLayout(fh.PositiveSpans[:0], fh.PositiveBuckets[:0], p.BucketCounts, p.PosOffset, scaleDown)
	fh.NegativeSpans, fh.NegativeBuckets = bucketLayout(fh.NegativeSpans[:0], fh.NegativeBuckets[:0], p.NegCounts, p.NegOffset, scaleDown)
	for len(fh.PositiveBuckets)+len(fh.NegativeBuckets) > store.MaxHistogramBuckets {
		if fh.Schema == histogram.ExponentialSchemaMin || fh.ReduceResolution(fh.Schema-1) != nil {
			return false
		}
	}
	return true
}

// countsAddUp reports whether the zero count and every bucket count add
// up to the point's count without exceeding math.MaxInt64. Prometheus's
// translator makes an integer histogram of the point (int64 bucket
// counts), and its TSDB refuses one whose counts do not equal its count
// (histogram.Histogram.Validate, ErrHistogramCountMismatch; a sum is
// always set, 0 when unset) or hold a negative count (an overflowing
// one): a classic histogram's counts must add up too (otlp-contract.md
// §6).
func countsAddUp(p *otlpwire.Point) bool {
	total := p.ZeroCount
	if total > math.MaxInt64 {
		return false
	}
	for _, side := range [2][]uint64{p.BucketCounts, p.NegCounts} {
		for _, c := range side {
			// total and c are at most math.MaxInt64 here, so the sum
			// does not wrap.
			if c > math.MaxInt64 || total+c > math.MaxInt64 {
				return false
			}
			total += c
		}
	}
	return total == p.Count
}

// indicesFit reports whether a side of n counts from OTLP bucket index
// offset has every Prometheus bucket index (OTLP's plus one) within
// int32. Prometheus's translator computes them in int32 and would wrap
// past math.MaxInt32 (the buckets landing at the wrong end of the
// histogram, or overlapping spans); such a point says nothing a real
// SDK could measure (base^(2^31) overflows a float64 at every scale), so
// it is refused.
func indicesFit(offset int32, n int) bool {
	return n == 0 || int64(offset)+int64(n) <= math.MaxInt32
}

// bucketLayout is Prometheus's convertBucketsLayout for exponential
// histograms (adjustOffset true), with absolute float counts instead of
// integer deltas: OTLP's dense counts from bucket index offset, merged
// 2^scaleDown at a time, become spans, OTLP's bucket i (base^i, base^(i+1)]
// becoming Prometheus's bucket i+1. It appends to spans and buckets.
func bucketLayout(spans []histogram.Span, buckets []float64, counts []uint64, offset, scaleDown int32) ([]histogram.Span, []float64) {
	if len(counts) == 0 {
		return spans, buckets
	}
	var count int64
	appendCount := func(c int64) {
		spans[len(spans)-1].Length++
		buckets = append(buckets, float64(c))
	}
	// bucketIdx is the index of the bucket being collected in count,
	// lastIdx the index of the last bucket appended.
	bucketIdx := offset>>scaleDown + 1
	lastIdx := bucketIdx - 1
	spans = append(spans, histogram.Span{Offset: offset>>scaleDown + 1})
	appendBucket := func() {
		gap := bucketIdx - lastIdx - 1
		if gap > 2 {
			// A gap of more than two buckets starts a new span.
			spans = append(spans, histogram.Span{Offset: gap})
		} else {
			for range gap {
				appendCount(0)
			}
		}
		appendCount(count)
		lastIdx = bucketIdx
	}
	for i := range counts {
		next := (int32(i)+offset)>>scaleDown + 1
		if bucketIdx == next { // not enough buckets merged yet
			count += int64(counts[i])
			continue
		}
		// Empty buckets are not appended: the gap before the next one
		// covers them.
		if count != 0 {
			appendBucket()
		}
		count = int64(counts[i])
		bucketIdx = next
	}
	appendBucket() // always the last one, as Prometheus
	return spans, buckets
}

// histAppendReason is appendReason for a histogram append.
func histAppendReason(err error) reason {
	switch {
	case errors.Is(err, store.ErrInvalidHistogram):
		return reasonInvalidHistogram
	case errors.Is(err, store.ErrNotHistogramSeries):
		// A float series has the same name, labels and resource: a
		// gauge or counter named like the histogram (§8.3).
		return reasonTypeConflict
	case errors.Is(err, store.ErrHistogramMemory):
		return reasonSampleMemory
	}
	return appendReason(err)
}
