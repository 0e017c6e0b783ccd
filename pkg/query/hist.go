package query

import (
	"errors"
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/promql/parser"
)

// Native histograms in the evaluator.
//
// An element carries a histogram in sample.h (nil for a float). The
// histogram belongs to the node that produced it, like the node's output
// vector: valid until the node's next eval, never modified by a consumer.
// A node that computes histograms takes them from its hpool, whose
// histograms and their bucket slices are reused evaluation after
// evaluation, so a warm plan allocates nothing for them either
// (TestHistogramEvalSteadyStateAllocs). Arithmetic is Prometheus's own
// (model/histogram: Add, Sub, KahanAdd, Mul, Div, Compact, DetectReset),
// which works in place on the pooled copies; what that package only
// offers through heap-allocated iterators (bucket iteration for
// histogram_quantile, histogram_fraction and the variance, and the JSON
// encoding) is done here by bucketIter.

// hpool hands out the histograms one node computes in one evaluation.
type hpool struct {
	hs []*histogram.FloatHistogram
	n  int
}

// reset makes every histogram of the pool available again; a node calls
// it when it starts an evaluation.
func (p *hpool) reset() { p.n = 0 }

// get returns a histogram to overwrite.
func (p *hpool) get() *histogram.FloatHistogram {
	if p.n == len(p.hs) {
		p.hs = append(p.hs, &histogram.FloatHistogram{})
	}
	h := p.hs[p.n]
	p.n++
	return h
}

// copyOf returns a pooled copy of h.
func (p *hpool) copyOf(h *histogram.FloatHistogram) *histogram.FloatHistogram {
	c := p.get()
	h.CopyTo(c)
	return c
}

// expBounds[s][i] is the fraction (in [0.5, 1)) of the upper bound of the
// exponential bucket with index i mod 2^s at schema s: Prometheus's
// precomputed table (model/histogram's exponentialBounds). It is read back
// from that package's own iterators at start, so bounds are bit for bit
// the ones Prometheus uses.
var expBounds = func() [histogram.ExponentialSchemaMax + 1][]float64 {
	var t [histogram.ExponentialSchemaMax + 1][]float64
	t[0] = []float64{0.5}
	for s := int32(1); s <= histogram.ExponentialSchemaMax; s++ {
		n := 1 << s
		h := histogram.FloatHistogram{
			Schema:          s,
			PositiveSpans:   []histogram.Span{{Offset: 0, Length: uint32(n)}},
			PositiveBuckets: make([]float64, n),
		}
		t[s] = make([]float64, n)
		for it := h.PositiveBucketIterator(); it.Next(); {
			b := it.At() // index i in [0, n): upper bound frac·2^1
			t[s][b.Index] = b.Upper / 2
		}
	}
	return t
}()

// bucketBound is Prometheus's getBound: the upper bound of the bucket with
// index idx (the lower bound of idx+1) of a positive side.
func bucketBound(idx, schema int32, custom []float64) float64 {
	if histogram.IsCustomBucketsSchema(schema) {
		switch n := int32(len(custom)); {
		case idx >= n:
			return math.Inf(1)
		case idx < 0:
			return math.Inf(-1)
		default:
			return custom[idx]
		}
	}
	if schema < 0 {
		exp := int(idx) << -schema
		if exp == 1024 {
			return math.MaxFloat64 // the last finite bucket
		}
		return math.Ldexp(1, exp)
	}
	frac := expBounds[schema][idx&(1<<schema-1)]
	exp := int(idx)>>schema + 1
	if frac == 0.5 && exp == 1025 {
		return math.MaxFloat64
	}
	return math.Ldexp(frac, exp)
}

// sideIter walks the buckets of one side of a histogram by index,
// ascending or descending, as model/histogram's floatBucketIterator (at
// its own schema) and reverseFloatBucketIterator do.
type sideIter struct {
	spans    []histogram.Span
	buckets  []float64
	schema   int32
	custom   []float64
	positive bool
	desc     bool

	span, inSpan, bucket int
	idx                  int32
	count                float64
}

func newSideIter(h *histogram.FloatHistogram, positive, desc bool) sideIter {
	it := sideIter{schema: h.Schema, positive: positive, desc: desc}
	if positive {
		it.spans, it.buckets, it.custom = h.PositiveSpans, h.PositiveBuckets, h.CustomValues
	} else {
		it.spans, it.buckets = h.NegativeSpans, h.NegativeBuckets
	}
	if desc {
		it.span, it.bucket = len(it.spans)-1, len(it.buckets)-1
		if it.span >= 0 {
			it.inSpan = int(it.spans[it.span].Length) - 1
		}
		for _, s := range it.spans {
			it.idx += s.Offset + int32(s.Length)
		}
	}
	return it
}

func (it *sideIter) next() bool {
	if it.desc {
		it.idx--
		if it.bucket < 0 {
			return false
		}
		for it.inSpan < 0 {
			it.span--
			if it.span < 0 {
				return false
			}
			it.inSpan = int(it.spans[it.span].Length) - 1
			it.idx -= it.spans[it.span+1].Offset
		}
		it.count = it.buckets[it.bucket]
		it.bucket--
		it.inSpan--
		return true
	}
	if it.span >= len(it.spans) {
		return false
	}
	sp := it.spans[it.span]
	if it.bucket == 0 {
		it.idx = sp.Offset
	} else {
		it.idx++
	}
	if it.bucket >= len(it.buckets) {
		return false
	}
	for it.inSpan >= int(sp.Length) {
		it.inSpan = 0
		it.span++
		if it.span >= len(it.spans) {
			return false
		}
		sp = it.spans[it.span]
		it.idx += sp.Offset
	}
	it.count = it.buckets[it.bucket]
	it.inSpan++
	it.bucket++
	return true
}

func (it *sideIter) at() histogram.Bucket[float64] {
	b := histogram.Bucket[float64]{Count: it.count, Index: it.idx}
	if it.positive {
		b.Upper = bucketBound(it.idx, it.schema, it.custom)
		b.Lower = bucketBound(it.idx-1, it.schema, it.custom)
	} else {
		b.Lower = -bucketBound(it.idx, it.schema, nil)
		b.Upper = -bucketBound(it.idx-1, it.schema, nil)
	}
	if histogram.IsCustomBucketsSchema(it.schema) {
		b.LowerInclusive, b.UpperInclusive = it.idx == 0, true
	} else {
		b.LowerInclusive, b.UpperInclusive = b.Lower < 0, b.Upper > 0
	}
	return b
}

// bucketIter is FloatHistogram.AllBucketIterator (reverse false: every
// bucket in ascending order) or AllReverseBucketIterator (reverse true),
// as a value: the library's return heap-allocated interfaces. Buckets
// next to the zero bucket have their inner bound moved to the zero
// threshold, as there.
type bucketIter struct {
	h           *histogram.FloatHistogram
	left, right sideIter
	state       int8 // -1 left side, 0 the zero bucket, 1 right side, else done
	cur         histogram.Bucket[float64]
}

func newBucketIter(h *histogram.FloatHistogram, reverse bool) bucketIter {
	it := bucketIter{h: h, state: -1}
	if reverse {
		it.left, it.right = newSideIter(h, true, true), newSideIter(h, false, false)
	} else {
		it.left, it.right = newSideIter(h, false, true), newSideIter(h, true, false)
	}
	return it
}

func (it *bucketIter) next() bool {
	for {
		switch it.state {
		case -1:
			if it.left.next() {
				it.cur = it.clamp(it.left.at())
				return true
			}
			it.state = 0
		case 0:
			it.state = 1
			if it.h.ZeroCount > 0 {
				zt := it.h.ZeroThreshold
				it.cur = histogram.Bucket[float64]{Lower: -zt, Upper: zt, LowerInclusive: true, UpperInclusive: true, Count: it.h.ZeroCount}
				return true
			}
		case 1:
			if it.right.next() {
				it.cur = it.clamp(it.right.at())
				return true
			}
			it.state = 2
			return false
		default:
			return false
		}
	}
}

func (it *bucketIter) clamp(b histogram.Bucket[float64]) histogram.Bucket[float64] {
	zt := it.h.ZeroThreshold
	switch {
	case b.Upper < 0 && b.Upper > -zt:
		b.Upper = -zt
	case b.Lower > 0 && b.Lower < zt:
		b.Lower = zt
	}
	return b
}

// histogramQuantile is Prometheus's HistogramQuantile (promql/quantile.go)
// without its annotations.
func histogramQuantile(q float64, h *histogram.FloatHistogram) float64 {
	if q < 0 {
		return math.Inf(-1)
	}
	if q > 1 {
		return math.Inf(+1)
	}
	if h.Count == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	var (
		bucket histogram.Bucket[float64]
		count  float64
		it     bucketIter
		rank   float64
	)
	// With NaN observations (sum NaN) or q < 0.5 upwards, else downwards.
	forward := math.IsNaN(h.Sum) || q < 0.5
	if forward {
		it, rank = newBucketIter(h, false), q*h.Count
	} else {
		it, rank = newBucketIter(h, true), (1-q)*h.Count
	}
	for it.next() {
		bucket = it.cur
		if bucket.Count == 0 {
			continue
		}
		count += bucket.Count
		if count >= rank {
			break
		}
	}
	if !h.UsesCustomBuckets() && bucket.Lower < 0 && bucket.Upper > 0 {
		switch {
		case len(h.NegativeBuckets) == 0 && len(h.PositiveBuckets) > 0:
			bucket.Lower = 0
		case len(h.PositiveBuckets) == 0 && len(h.NegativeBuckets) > 0:
			bucket.Upper = 0
		}
	} else if h.UsesCustomBuckets() {
		if bucket.Lower == math.Inf(-1) {
			if bucket.Upper <= 0 {
				return bucket.Upper
			}
			bucket.Lower = 0
		} else if bucket.Upper == math.Inf(1) {
			return bucket.Lower
		}
	}
	count = min(count, h.Count)
	if count < rank {
		if math.IsNaN(h.Sum) {
			return math.NaN()
		}
		return bucket.Upper
	}
	if forward {
		rank -= count - bucket.Count
	} else {
		rank = count - rank
	}
	fraction := rank / bucket.Count
	if h.UsesCustomBuckets() || (bucket.Lower <= 0 && bucket.Upper >= 0) {
		return bucket.Lower + (bucket.Upper-bucket.Lower)*fraction
	}
	logLower := math.Log2(math.Abs(bucket.Lower))
	logUpper := math.Log2(math.Abs(bucket.Upper))
	if bucket.Lower > 0 {
		return math.Exp2(logLower + (logUpper-logLower)*fraction)
	}
	return -math.Exp2(logUpper + (logLower-logUpper)*(1-fraction))
}

// histogramFraction is Prometheus's HistogramFraction without its
// annotations.
func histogramFraction(lower, upper float64, h *histogram.FloatHistogram) float64 {
	if h.Count == 0 || math.IsNaN(lower) || math.IsNaN(upper) {
		return math.NaN()
	}
	if lower >= upper {
		return 0
	}
	var (
		count, rank, lowerRank, upperRank float64
		lowerSet, upperSet                bool
		it                                = newBucketIter(h, false)
	)
	for it.next() {
		b := it.cur
		count += b.Count
		zeroBucket := false
		linear := func(v float64) float64 {
			if b.Lower == math.Inf(-1) {
				return b.Count
			}
			return rank + b.Count*b.FractionBelow(v, true)
		}
		if h.UsesCustomBuckets() {
			if b.Lower == math.Inf(-1) && b.Upper > 0 {
				b.Lower = 0
			}
		} else if b.Lower <= 0 && b.Upper >= 0 {
			zeroBucket = true
			switch {
			case len(h.NegativeBuckets) == 0 && len(h.PositiveBuckets) > 0:
				b.Lower = 0
			case len(h.PositiveBuckets) == 0 && len(h.NegativeBuckets) > 0:
				b.Upper = 0
			}
		}
		if !lowerSet && b.Lower >= lower {
			lowerRank, lowerSet = rank, true
		}
		if !upperSet && b.Lower >= upper {
			upperRank, upperSet = rank, true
		}
		if lowerSet && upperSet {
			break
		}
		if !lowerSet && b.Lower < lower && b.Upper > lower {
			if h.UsesCustomBuckets() || zeroBucket {
				lowerRank = linear(lower)
			} else {
				lowerRank = rank + b.Count*b.FractionBelow(lower, false)
			}
			lowerSet = true
		}
		if !upperSet && b.Lower < upper && b.Upper > upper {
			if h.UsesCustomBuckets() || zeroBucket {
				upperRank = linear(upper)
			} else {
				upperRank = rank + b.Count*b.FractionBelow(upper, false)
			}
			upperSet = true
		}
		if lowerSet && upperSet {
			break
		}
		rank += b.Count
	}
	if math.IsNaN(h.Sum) {
		for it.next() {
			count += it.cur.Count
		}
	} else {
		count = h.Count
	}
	if !lowerSet || lowerRank > count {
		lowerRank = count
	}
	if !upperSet || upperRank > count {
		upperRank = count
	}
	return (upperRank - lowerRank) / h.Count
}

// histogramVariance is the variance of Prometheus's histogramVariance
// (histogram_stdvar; histogram_stddev is its square root): each bucket's
// observations at its geometric mean (arithmetic for custom buckets, 0 in
// the zero bucket).
func histogramVariance(h *histogram.FloatHistogram) float64 {
	mean := h.Sum / h.Count
	var variance, c float64
	for it := newBucketIter(h, false); it.next(); {
		b := it.cur
		if b.Count == 0 {
			continue
		}
		var v float64
		switch {
		case h.UsesCustomBuckets():
			v = (b.Upper + b.Lower) / 2.0
		case b.Lower <= 0 && b.Upper >= 0:
			v = 0
		default:
			v = math.Sqrt(b.Upper * b.Lower)
			if b.Upper < 0 {
				v = -v
			}
		}
		delta := v - mean
		variance, c = kahanInc(b.Count*delta*delta, variance, c)
	}
	variance += c
	return variance / h.Count
}

// histCost is what a histogram sample costs the evaluation's sample
// budget: Prometheus's HPoint.size(), its size in 16-byte units.
func histCost(h *histogram.FloatHistogram) int { return (h.Size() + 8) / 16 }

// initComp readies c as the Kahan compensation of h, as model/histogram's
// newCompensationHistogram builds one (which KahanAdd would allocate when
// given none): h's schema, threshold, bounds and spans, zero buckets.
func initComp(c, h *histogram.FloatHistogram) *histogram.FloatHistogram {
	c.CounterResetHint, c.Schema, c.ZeroThreshold, c.CustomValues = h.CounterResetHint, h.Schema, h.ZeroThreshold, h.CustomValues
	c.Count, c.Sum, c.ZeroCount = 0, 0, 0
	c.PositiveSpans, c.NegativeSpans = h.PositiveSpans, h.NegativeSpans
	c.PositiveBuckets = zeroed(c.PositiveBuckets, len(h.PositiveBuckets))
	c.NegativeBuckets = nil
	if !h.UsesCustomBuckets() {
		c.NegativeBuckets = zeroed(c.NegativeBuckets[:0:cap(c.NegativeBuckets)], len(h.NegativeBuckets))
	}
	return c
}

// zeroed returns s resized to n zeros, reusing its array.
func zeroed(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// kahanAdd is h.KahanAdd(other, c) with c from pool when there is none
// yet; it returns the compensation and whether the histograms were
// incompatible (exponential with custom buckets). Any other error
// (an invalid bucket layout) is returned: Prometheus fails the query.
func kahanAdd(h, other, c *histogram.FloatHistogram, pool *hpool) (*histogram.FloatHistogram, bool, error) {
	if c == nil {
		// KahanAdd makes its compensation after adjusting h's hint.
		c = initComp(pool.get(), h)
		c.CounterResetHint = adjustedHint(h.CounterResetHint, other.CounterResetHint)
	}
	c, _, _, err := h.KahanAdd(other, c)
	if err != nil {
		if errors.Is(err, histogram.ErrHistogramsIncompatibleSchema) {
			return c, true, nil
		}
		return c, false, err
	}
	return c, false, nil
}

// adjustedHint is the hint model/histogram's adjustCounterReset gives a
// histogram with hint h that other (with hint o) is added to.
func adjustedHint(h, o histogram.CounterResetHint) histogram.CounterResetHint {
	switch {
	case o == h, h == histogram.GaugeType:
		return h
	case o == histogram.GaugeType:
		return histogram.GaugeType
	}
	return histogram.UnknownCounterReset // unknown on either side, or a collision
}

// addHist is aggregation's step for a histogram element of an existing
// group (Prometheus's aggregation): sum and avg add it with Kahan
// summation (avg switching to an incremental mean once the sum
// overflows), count counts it, the others ignore it.
func (n *aggNode) addHist(a *aggAcc, h *histogram.FloatHistogram) {
	switch n.op {
	case parser.COUNT:
		a.count++
		return
	case parser.SUM:
		a.hasHist = true
		if a.hv == nil {
			return // started with a float: dropped as mixed anyway
		}
		var err error
		a.hc, a.incompatible, err = kahanAdd(a.hv, h, a.hc, &n.hcp)
		n.noteErr(err)
	case parser.AVG:
		a.count++
		a.hasHist = true
		if a.hv == nil {
			return
		}
		if !a.histIncremental {
			v := n.hp.copyOf(a.hv)
			var c *histogram.FloatHistogram
			if a.hc != nil {
				// A copy of the compensation (upstream's Copy): its
				// spans are v's, which KahanAdd gives it anyway.
				c = initComp(n.hcp.get(), v)
				copy(c.PositiveBuckets, a.hc.PositiveBuckets)
				copy(c.NegativeBuckets, a.hc.NegativeBuckets)
				c.Count, c.Sum, c.ZeroCount = a.hc.Count, a.hc.Sum, a.hc.ZeroCount
				c.CounterResetHint = a.hc.CounterResetHint
			}
			var err error
			c, a.incompatible, err = kahanAdd(v, h, c, &n.hcp)
			n.noteErr(err)
			if a.incompatible || err != nil {
				return
			}
			if !v.HasOverflow() {
				a.hv, a.hc = v, c
				return
			}
			a.histIncremental = true
			a.hmean = n.hp.copyOf(a.hv).Div(a.count - 1)
			if a.hc != nil {
				a.hc.Div(a.count - 1)
			}
		}
		q := (a.count - 1) / a.count
		if a.hc != nil {
			a.hc.Mul(q)
		}
		toAdd := n.hp.copyOf(h).Div(a.count)
		var err error
		a.hc, a.incompatible, err = kahanAdd(a.hmean.Mul(q), toAdd, a.hc, &n.hcp)
		n.noteErr(err)
	}
}

// noteErr keeps the first error of an evaluation for eval to return.
func (n *aggNode) noteErr(err error) {
	if err != nil && n.histErr == nil {
		n.histErr = err
	}
}

// finishHist is the result of a sum or avg group that saw histograms, or
// nil when the group has none: floats mixed with histograms, or
// histograms that could not be added.
func (n *aggNode) finishHist(a *aggAcc) *histogram.FloatHistogram {
	if a.hasFloat || a.incompatible || a.hv == nil {
		n.dropped = true
		return nil
	}
	h := a.hv
	if n.op == parser.AVG {
		switch {
		case a.histIncremental:
			h = a.hmean
			if a.hc != nil {
				_, _, _, _ = h.Add(a.hc) // cannot fail after the KahanAdds did not
			}
		default:
			h.Div(a.count)
			if a.hc != nil {
				_, _, _, _ = h.Add(a.hc.Div(a.count))
			}
		}
	} else if a.hc != nil {
		_, _, _, _ = h.Add(a.hc)
	}
	return h.Compact(0)
}

// histFnKind is one of the functions of a native histogram's statistics.
type histFnKind uint8

const (
	histCount histFnKind = iota
	histSum
	histAvg
	histStddev
	histStdvar
)

var histFns = map[string]histFnKind{
	"histogram_count": histCount, "histogram_sum": histSum, "histogram_avg": histAvg,
	"histogram_stddev": histStddev, "histogram_stdvar": histStdvar,
}

// histFnNode is histogram_count, histogram_sum, histogram_avg,
// histogram_stddev and histogram_stdvar (simpleHistogramFunc): a float
// per native histogram element, floats dropped, __name__ dropped.
type histFnNode struct {
	vectorNode
	kind  histFnKind
	child node
	out   vector
}

func (n *histFnNode) eval(ev *evaluator, t int64) (vector, error) {
	in, err := n.child.eval(ev, t)
	if err != nil {
		return nil, err
	}
	n.out = n.out[:0]
	for _, s := range in {
		h := s.h
		if h == nil {
			continue
		}
		var f float64
		switch n.kind {
		case histCount:
			f = h.Count
		case histSum:
			f = h.Sum
		case histAvg:
			f = h.Sum / h.Count
		case histStdvar:
			f = histogramVariance(h)
		default:
			f = math.Sqrt(histogramVariance(h))
		}
		n.out = append(n.out, sample{lset: s.lset, t: t, f: f, drop: true, ref: s.ref})
	}
	return n.out, nil
}

// BucketIterator walks a native histogram's buckets in ascending order,
// empty ones included, as FloatHistogram.AllBucketIterator does (the same
// bounds, the inner bounds of the buckets next to the zero bucket moved
// to the zero threshold), without allocating. The zero value is done.
type BucketIterator struct{ it bucketIter }

// Buckets returns an iterator over h's buckets.
func Buckets(h *histogram.FloatHistogram) BucketIterator {
	return BucketIterator{it: newBucketIter(h, false)}
}

// Next advances to the next bucket.
func (b *BucketIterator) Next() bool { return b.it.h != nil && b.it.next() }

// At returns the current bucket.
func (b *BucketIterator) At() histogram.Bucket[float64] { return b.it.cur }

// HistogramCost is what a histogram costs a sample budget: Prometheus's
// HPoint.size(), its size in 16-byte units.
func HistogramCost(h *histogram.FloatHistogram) int { return histCost(h) }
