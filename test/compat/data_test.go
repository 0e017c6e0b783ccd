package compat

import (
	"fmt"
	"math"
	"math/rand"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
)

// sample is one sample; T is unix ms. H is a native histogram (then F is
// unused), nil for a float.
type sample struct {
	T int64
	F float64
	H *histogram.FloatHistogram
	// ih is H as the integer histogram Prometheus's OTLP receiver
	// appends, when the benchmark data has one (its TSDB head stores it
	// so).
	ih *histogram.Histogram
}

// series is one generated series with its samples, oldest first, strictly
// increasing in time.
type series struct {
	lset    labels.Labels
	samples []sample
}

// dataset is what one differential case loads into both engines.
type dataset struct {
	series []series
	// start and end bound the sample timestamps.
	start, end int64
}

// baseTime is the unix ms the generated data starts at: a realistic epoch
// keeps float rounding of timestamps representative.
const baseTime = int64(1_760_000_000_000)

var staleNaN = math.Float64frombits(value.StaleNaN)

// genOpts shapes a dataset.
type genOpts struct {
	span    time.Duration // data length
	pods    int           // pods per metric family
	buckets []float64     // classic histogram upper bounds, +Inf implied
}

// genDataset builds a dataset of the families the differential test needs:
// counters with resets, gauges, classic histograms (monotonic, sometimes
// not, sometimes idle), jittered timestamps, gaps, stale markers, NaN,
// ±Inf and 0, and label sets that collide once __name__ is dropped.
func genDataset(rnd *rand.Rand, o genOpts) *dataset {
	d := &dataset{start: baseTime, end: baseTime + o.span.Milliseconds()}
	models := []string{"m1", "m2"}
	for p := range o.pods {
		pod := fmt.Sprintf("p%d", p)
		model := models[p%len(models)]
		common := []string{"pod", pod, "model_name", model, "namespace", "ns"}
		if p%3 == 2 {
			// A pod without model_name: missing labels match "".
			common = []string{"pod", pod, "namespace", "ns"}
		}
		grid := genTimes(rnd, d.start, d.end)
		d.add("vllm:num_requests_waiting", common, grid, gaugeValues(rnd, len(grid), 0, 20))
		d.add("vllm:num_requests_running", common, genTimes(rnd, d.start, d.end), gaugeValues(rnd, 0, 0, 8))
		d.add("vllm:prompt_tokens_total", common, grid, counterValues(rnd, len(grid)))
		d.add("vllm:generation_tokens_total", common, genTimes(rnd, d.start, d.end), counterValues(rnd, 0))
		d.add("http_requests_total", append([]string{"code", []string{"200", "500"}[rnd.Intn(2)]}, common...), genTimes(rnd, d.start, d.end), counterValues(rnd, 0))
		// Two names with identical other labels: they collide after
		// __name__ is dropped.
		d.add("collide_a", []string{"pod", pod}, genTimes(rnd, d.start, d.end), gaugeValues(rnd, 0, -5, 5))
		d.add("collide_b", []string{"pod", pod}, genTimes(rnd, d.start, d.end), counterValues(rnd, 0))
		d.addHistogram(rnd, "vllm:time_to_first_token_seconds", common, o.buckets)
		// Native histograms, as the receiver stores OpenTelemetry
		// exponential histograms: cumulative (counter) and delta (gauge).
		d.addNative(rnd, "vllm:e2e_request_latency_seconds", common, false)
		d.addNative(rnd, "vllm:request_queue_time_seconds", common, rnd.Intn(3) == 0)
	}
	// A series that carries floats and histograms (a gauge and an
	// exponential histogram of one name and identity), for the functions
	// that reject or skip a mix.
	d.addMixed(rnd, "mixed_latency", []string{"pod", "p0"})
	// Extreme magnitudes: sums overflow to ±Inf, avg switches to its
	// incremental mean, Kahan compensation matters.
	for p := range 3 {
		vals := make([]float64, 200)
		for i := range vals {
			vals[i] = []float64{1e308, -1e308, 1.7e308, 1, -1, 5e-324, 1e16, 3}[rnd.Intn(8)]
		}
		d.add("big_gauge", []string{"pod", fmt.Sprintf("p%d", p)}, genTimes(rnd, d.start, d.end), vals)
	}
	// A histogram with bounds that do not parse, a NaN bound, and a group
	// without +Inf: histogram_quantile skips or answers NaN.
	oddTimes := genTimes(rnd, d.start, d.end)
	for _, b := range []struct {
		pod, le string
		share   float64
	}{{"p0", "0.5", 0.3}, {"p0", "abc", 0.5}, {"p0", "NaN", 0.6}, {"p0", "+Inf", 1}, {"p1", "0.5", 0.4}, {"p1", "2.0", 0.9}} {
		vals := make([]float64, len(oddTimes))
		for i := range vals {
			vals[i] = math.Floor(float64(i*10) * b.share)
		}
		d.add("odd_bucket", []string{"pod", b.pod, "le", b.le}, oddTimes, vals)
	}
	// A series with one sample.
	d.add("vllm:num_requests_waiting", []string{"pod", "once", "namespace", "ns"}, []int64{d.start + (d.end-d.start)/2}, []float64{7})
	// A series that only exists at the start, and one that starts late.
	d.add("vllm:num_requests_waiting", []string{"pod", "early", "namespace", "ns"}, genTimes(rnd, d.start, d.start+(d.end-d.start)/3), gaugeValues(rnd, 0, 0, 5))
	d.add("vllm:num_requests_waiting", []string{"pod", "late", "namespace", "ns", "model_name", "m1"}, genTimes(rnd, d.end-(d.end-d.start)/4, d.end), gaugeValues(rnd, 0, 0, 5))
	// A quoted, dotted name.
	d.add("my.metric", []string{"utf8.label", "x"}, genTimes(rnd, d.start, d.end), gaugeValues(rnd, 0, 0, 1))
	slices.SortFunc(d.series, func(a, b series) int { return labels.Compare(a.lset, b.lset) })
	return d
}

func (d *dataset) add(name string, kv []string, times []int64, vals []float64) {
	if len(vals) == 0 {
		return
	}
	if len(vals) < len(times) {
		times = times[:len(vals)]
	}
	b := labels.NewScratchBuilder(len(kv)/2 + 1)
	b.Add(labels.MetricName, name)
	for i := 0; i+1 < len(kv); i += 2 {
		b.Add(kv[i], kv[i+1])
	}
	b.Sort()
	s := series{lset: b.Labels()}
	for i, t := range times {
		s.samples = append(s.samples, sample{T: t, F: vals[i]})
	}
	d.series = append(d.series, s)
}

// genTimes returns jittered sample times in [from, to): a base interval of
// 5–30 s, ±20 % jitter per sample, and occasional gaps of several
// intervals.
func genTimes(rnd *rand.Rand, from, to int64) []int64 {
	iv := int64(5_000 + rnd.Intn(25_001))
	t := from + rnd.Int63n(iv)
	var out []int64
	for t < to {
		out = append(out, t)
		step := iv + int64(float64(iv)*0.4*(rnd.Float64()-0.5))
		if rnd.Intn(25) == 0 {
			step += iv * int64(2+rnd.Intn(8)) // gap
		}
		t += max(step, 1)
	}
	return out
}

// special returns an occasional NaN, ±Inf, 0 or stale marker, or ok=false.
func special(rnd *rand.Rand) (float64, bool) {
	switch r := rnd.Intn(200); {
	case r < 3:
		return staleNaN, true
	case r < 4:
		return math.NaN(), true
	case r < 5:
		return math.Inf(1), true
	case r == 5:
		return math.Inf(-1), true
	case r < 9:
		return 0, true
	}
	return 0, false
}

// gaugeValues returns n values (n = 0 means "pick"), random in [lo, hi),
// sometimes integers, with occasional specials.
func gaugeValues(rnd *rand.Rand, n int, lo, hi float64) []float64 {
	if n == 0 {
		n = 200
	}
	ints := rnd.Intn(2) == 0
	out := make([]float64, n)
	for i := range out {
		if v, ok := special(rnd); ok {
			out[i] = v
			continue
		}
		v := lo + rnd.Float64()*(hi-lo)
		if ints {
			v = math.Floor(v)
		}
		out[i] = v
	}
	return out
}

// counterValues returns a counter: random increments, occasional resets,
// rare specials (a stale marker does not change the counter).
func counterValues(rnd *rand.Rand, n int) []float64 {
	if n == 0 {
		n = 200
	}
	v := float64(rnd.Intn(1000))
	if rnd.Intn(4) == 0 {
		v = 0 // a new counter starting at zero
	}
	out := make([]float64, n)
	for i := range out {
		switch r := rnd.Intn(100); {
		case r < 3:
			v = float64(rnd.Intn(5)) // reset
		case r < 6:
			out[i] = staleNaN
			continue
		case r == 6 && rnd.Intn(4) == 0:
			out[i] = math.NaN()
			continue
		case r < 20:
			// unchanged
		default:
			v += float64(rnd.Intn(50)) + rnd.Float64()*float64(rnd.Intn(2))
		}
		out[i] = v
	}
	return out
}

// addHistogram adds one classic histogram (_bucket for every bound and
// +Inf, _sum and _count) sampled on one time grid. Some are idle (never
// change), some deliberately non-monotonic across buckets.
func (d *dataset) addHistogram(rnd *rand.Rand, name string, common []string, bounds []float64) {
	times := genTimes(rnd, d.start, d.end)
	idle := rnd.Intn(6) == 0
	broken := rnd.Intn(6) == 0
	n := len(bounds) + 1
	counts := make([][]float64, n)
	cum := make([]float64, n)
	sum := 0.0
	var sums, totals []float64
	for range times {
		if !idle {
			// Observations land in one bucket each; cumulative counts.
			obs := rnd.Intn(20)
			for range obs {
				b := rnd.Intn(n)
				for j := b; j < n; j++ {
					cum[j]++
				}
				sum += rnd.Float64() * 3
			}
			if rnd.Intn(40) == 0 { // reset
				clear(cum)
				sum = 0
			}
		}
		if rnd.Intn(60) == 0 {
			// The whole histogram goes stale at once, as a scrape or a
			// NoRecordedValue point does.
			for j := range n {
				counts[j] = append(counts[j], staleNaN)
			}
			sums = append(sums, staleNaN)
			totals = append(totals, staleNaN)
			continue
		}
		for j := range n {
			v := cum[j]
			if broken && j == n/2 && cum[j] > 0 {
				v = cum[j] + float64(1+rnd.Intn(5)) // higher than its upper neighbour
			}
			counts[j] = append(counts[j], v)
		}
		sums = append(sums, sum)
		totals = append(totals, cum[n-1])
	}
	for j := range n {
		le := "+Inf"
		if j < len(bounds) {
			le = formatLe(bounds[j])
		}
		d.add(name+"_bucket", append([]string{"le", le}, common...), times, counts[j])
	}
	d.add(name+"_sum", common, times, sums)
	d.add(name+"_count", common, times, totals)
}

// nativeNames are the dataset's native histogram metrics.
var nativeNames = []string{"vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds", "mixed_latency"}

// expState is an exponential histogram as an OpenTelemetry SDK keeps it:
// dense positive (and negative) bucket counts from an offset at a scale,
// a zero count, the count and the sum of observations.
type expState struct {
	scale          int32
	posOff, negOff int32
	pos, neg       []float64
	zero           float64
	count, sum     float64
}

// observe records one observation, lowering the scale (merging bucket
// pairs) when the buckets span more than maxBuckets, as the SDK does.
func (e *expState) observe(v float64, maxBuckets int) {
	e.count++
	e.sum += v
	if v == 0 || math.Abs(v) < 1e-9 {
		e.zero++
		return
	}
	for {
		// OpenTelemetry's bucket i holds (base^i, base^(i+1)].
		idx := int32(math.Ceil(math.Log2(math.Abs(v))*math.Exp2(float64(e.scale)))) - 1
		off, b := &e.posOff, &e.pos
		if v < 0 {
			off, b = &e.negOff, &e.neg
		}
		if len(*b) == 0 {
			*off = idx
		}
		lo, hi := min(*off, idx), max(*off+int32(len(*b))-1, idx)
		if int(hi-lo+1) <= maxBuckets || e.scale == -4 {
			if idx < *off {
				*b = append(make([]float64, *off-idx), *b...)
				*off = idx
			}
			for int(idx-*off) >= len(*b) {
				*b = append(*b, 0)
			}
			(*b)[idx-*off]++
			return
		}
		e.downscale()
	}
}

// downscale halves the resolution: bucket pairs merge.
func (e *expState) downscale() {
	merge := func(off int32, b []float64) (int32, []float64) {
		if len(b) == 0 {
			return off, b
		}
		no := off >> 1
		out := make([]float64, (off+int32(len(b))-1)>>1-no+1)
		for i, c := range b {
			out[(off+int32(i))>>1-no] += c
		}
		return no, out
	}
	e.scale--
	e.posOff, e.pos = merge(e.posOff, e.pos)
	e.negOff, e.neg = merge(e.negOff, e.neg)
}

// native converts the state as Prometheus's OTLP receiver does: OTLP
// bucket i is Prometheus's i+1, one span per side (empty buckets inside),
// zero threshold 1e-128.
func (e *expState) native(gauge bool) *histogram.FloatHistogram {
	h := &histogram.FloatHistogram{
		Schema: e.scale, ZeroThreshold: 1e-128, ZeroCount: e.zero, Count: e.count, Sum: e.sum,
	}
	if gauge {
		h.CounterResetHint = histogram.GaugeType
	}
	if len(e.pos) > 0 {
		h.PositiveSpans = []histogram.Span{{Offset: e.posOff + 1, Length: uint32(len(e.pos))}}
		h.PositiveBuckets = slices.Clone(e.pos)
	}
	if len(e.neg) > 0 {
		h.NegativeSpans = []histogram.Span{{Offset: e.negOff + 1, Length: uint32(len(e.neg))}}
		h.NegativeBuckets = slices.Clone(e.neg)
	}
	return h
}

// addNative adds one native histogram series per call, fed by a
// simulated SDK: latencies around 10 ms to 10 s (sometimes 0 and
// negative), the scale falling as the range grows, counter resets, stale
// markers, idle stretches. delta makes it a delta (gauge) histogram that
// restarts every point.
func (d *dataset) addNative(rnd *rand.Rand, name string, common []string, delta bool) {
	times := genTimes(rnd, d.start, d.end)
	st := &expState{scale: int32(rnd.Intn(9))}
	maxBuckets := []int{8, 20, 160}[rnd.Intn(3)]
	b := labels.NewScratchBuilder(len(common)/2 + 1)
	b.Add(labels.MetricName, name)
	for i := 0; i+1 < len(common); i += 2 {
		b.Add(common[i], common[i+1])
	}
	b.Sort()
	s := series{lset: b.Labels()}
	for _, t := range times {
		if delta {
			*st = expState{scale: st.scale}
		}
		if rnd.Intn(50) == 0 && !delta { // a counter reset: the SDK restarted
			*st = expState{scale: int32(rnd.Intn(9))}
		}
		if rnd.Intn(8) != 0 { // sometimes idle
			for range rnd.Intn(25) {
				v := math.Exp(rnd.NormFloat64()*1.5 - 3)
				switch rnd.Intn(40) {
				case 0:
					v = 0
				case 1:
					v = -v
				}
				st.observe(v, maxBuckets)
			}
		}
		if rnd.Intn(60) == 0 {
			s.samples = append(s.samples, sample{T: t, F: staleNaN})
			continue
		}
		s.samples = append(s.samples, sample{T: t, H: st.native(delta)})
	}
	if len(s.samples) > 0 {
		d.series = append(d.series, s)
	}
}

// addMixed adds a series whose samples are floats for a while, then
// histograms, then floats again.
func (d *dataset) addMixed(rnd *rand.Rand, name string, kv []string) {
	b := labels.NewScratchBuilder(len(kv)/2 + 1)
	b.Add(labels.MetricName, name)
	for i := 0; i+1 < len(kv); i += 2 {
		b.Add(kv[i], kv[i+1])
	}
	b.Sort()
	s := series{lset: b.Labels()}
	st := &expState{scale: 3}
	times := genTimes(rnd, d.start, d.end)
	for i, t := range times {
		if i*3/len(times) == 1 {
			for range rnd.Intn(10) {
				st.observe(math.Exp(rnd.NormFloat64()-2), 40)
			}
			s.samples = append(s.samples, sample{T: t, H: st.native(false)})
			continue
		}
		s.samples = append(s.samples, sample{T: t, F: float64(rnd.Intn(10))})
	}
	if len(s.samples) > 0 {
		d.series = append(d.series, s)
	}
}

// formatLe writes a bound as the receiver stores it: the OpenMetrics
// canonical form ("1.0", "0.5", "+Inf"). Our engine rewrites numeric = and
// != matchers on le to that form (otlp-contract.md §6: {le="1"} selects
// the "1.0" bucket), a documented difference from Prometheus that only
// shows on non-canonical stored values, which our store never holds.
func formatLe(f float64) string {
	return labels.FormatOpenMetricsFloat(f)
}

// sampleTimes returns every sample timestamp of the dataset.
func (d *dataset) sampleTimes() []int64 {
	var out []int64
	for _, s := range d.series {
		for _, sm := range s.samples {
			out = append(out, sm.T)
		}
	}
	return out
}
