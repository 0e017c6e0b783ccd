package query

import (
	"errors"
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Range functions over windows that hold native histograms: Prometheus's
// functions.go for a series' Floats and Histograms, ported to pooled
// histograms (hist.go). A window of floats only goes to rangeNode.apply
// as before; these handle the rest.

// hpoint is a histogram sample of a window.
type hpoint struct {
	t int64
	h *histogram.FloatHistogram
}

// histSeries is series for a histogram series: its window's floats (stale
// markers dropped) and histograms, copied out of the store, go to
// applyMixed. The histograms are charged at their size (histCost).
func (n *rangeNode) histSeries(ev *evaluator, rd store.Reader, h store.Handle, t, fStart, fEnd, eStart, eEnd int64, param, param2 float64) (float64, *histogram.FloatHistogram, bool, error) {
	n.fbuf, n.hbuf = rd.RangeHistograms(h, fStart, fEnd, n.fbuf[:0], n.hbuf[:0])
	cost := len(n.fbuf)
	n.hps = n.hps[:0]
	for i := range n.hbuf {
		cost += histCost(&n.hbuf[i].H)
		n.hps = append(n.hps, hpoint{t: n.hbuf[i].T, h: &n.hbuf[i].H})
	}
	if err := ev.charge(cost); err != nil {
		return 0, nil, false, err
	}
	if n.statsOnly {
		statsWindow(n.hbuf)
	}
	pts := dropStale(n.fbuf)
	if len(pts)+len(n.hps) == 0 {
		return 0, nil, false, nil
	}
	return n.applyMixed(pts, n.hps, t, eStart, eEnd, param, param2)
}

// applyMixed is the function over a window of floats pts and histograms
// hps (not both empty), extrapolating over (rangeStart, rangeEnd]. The
// result is a float or a histogram from n's pools.
func (n *rangeNode) applyMixed(pts []store.Sample, hps []hpoint, t, rangeStart, rangeEnd int64, param, param2 float64) (float64, *histogram.FloatHistogram, bool, error) {
	if len(hps) == 0 {
		if err := n.checkParams(param, param2); err != nil {
			return 0, nil, false, err
		}
		f, ok := n.apply(pts, t, rangeStart, rangeEnd, param, param2)
		return f, nil, ok, nil
	}
	switch n.kind {
	case fnRate, fnIncrease, fnDelta:
		if len(pts) > 0 {
			return 0, nil, false, nil // floats and histograms: dropped, as upstream warns
		}
		h, ok, err := n.histRate(hps, rangeStart, rangeEnd, n.kind != fnDelta, n.kind == fnRate)
		return 0, h, ok, err
	case fnIrate, fnIdelta:
		return n.instantHist(pts, hps, n.kind == fnIrate)
	case fnChanges, fnResets:
		return float64(changesOrResets(pts, hps, n.kind == fnResets)), nil, true, nil
	case fnSumOverTime, fnAvgOverTime:
		if len(pts) > 0 {
			return 0, nil, false, nil
		}
		h, ok, err := n.sumOrAvgHist(hps, n.kind == fnAvgOverTime)
		return 0, h, ok, err
	case fnCountOverTime:
		return float64(len(pts) + len(hps)), nil, true, nil
	case fnPresentOverTime, fnAbsentOverTime:
		return 1, nil, true, nil
	case fnLastOverTime:
		if last := hps[len(hps)-1]; len(pts) == 0 || pts[len(pts)-1].T < last.t {
			return 0, n.hp.copyOf(last.h), true, nil
		}
		return pts[len(pts)-1].V, nil, true, nil
	case fnFirstOverTime:
		if len(pts) == 0 || hps[0].t < pts[0].T {
			return 0, n.hp.copyOf(hps[0].h), true, nil
		}
		return pts[0].V, nil, true, nil
	case fnTsOfFirstOverTime:
		ts := hps[0].t
		if len(pts) > 0 {
			ts = min(ts, pts[0].T)
		}
		return float64(ts) / 1000, nil, true, nil
	case fnTsOfLastOverTime:
		ts := hps[len(hps)-1].t
		if len(pts) > 0 {
			ts = max(ts, pts[len(pts)-1].T)
		}
		return float64(ts) / 1000, nil, true, nil
	}
	// The others read floats only and ignore histograms (with an info
	// annotation upstream); double_exponential_smoothing checks its
	// arguments for every series with samples.
	if err := n.checkParams(param, param2); err != nil {
		return 0, nil, false, err
	}
	if len(pts) == 0 {
		return 0, nil, false, nil
	}
	f, ok := n.apply(pts, t, rangeStart, rangeEnd, param, param2)
	return f, nil, ok, nil
}

// histErr sorts an error of model/histogram's arithmetic: incompatible
// schemas drop the element (ok false), anything else (an invalid bucket
// layout, which the store never holds) fails the evaluation, as it fails
// Prometheus's query.
func histErr(err error) (ok bool, fail error) {
	if err == nil {
		return true, nil
	}
	if errors.Is(err, histogram.ErrHistogramsIncompatibleSchema) {
		return false, nil
	}
	return false, err
}

// histRate is rate, increase (isCounter) and delta over histograms:
// Prometheus's histogramRate, then extrapolatedRate's extrapolation.
func (n *rangeNode) histRate(hps []hpoint, rangeStart, rangeEnd int64, isCounter, isRate bool) (*histogram.FloatHistogram, bool, error) {
	if len(hps) < 2 {
		return nil, false, nil
	}
	prev, last := hps[0].h, hps[len(hps)-1].h
	usingCustom := prev.UsesCustomBuckets()
	if isCounter {
		// A reset between the first two: the first counts as empty, so
		// its bucket layout does not matter.
		if second := hps[1].h; second.DetectReset(prev) {
			e := n.hp.get()
			*e = histogram.FloatHistogram{
				Schema: second.Schema, CustomValues: second.CustomValues,
				PositiveSpans: e.PositiveSpans[:0], PositiveBuckets: e.PositiveBuckets[:0],
				NegativeSpans: e.NegativeSpans[:0], NegativeBuckets: e.NegativeBuckets[:0],
			}
			prev, usingCustom = e, second.UsesCustomBuckets()
		}
	}
	if last.UsesCustomBuckets() != usingCustom {
		return nil, false, nil
	}
	minSchema := min(last.Schema, prev.Schema)
	if isCounter {
		for _, p := range hps[1 : len(hps)-1] {
			minSchema = min(minSchema, p.h.Schema)
			if p.h.UsesCustomBuckets() != usingCustom {
				return nil, false, nil
			}
		}
	}
	h := n.hp.copyOf(last)
	if minSchema < h.Schema {
		if err := h.ReduceResolution(minSchema); err != nil {
			return nil, false, err
		}
	}
	if _, _, _, err := h.Sub(prev); err != nil {
		ok, fail := histErr(err)
		return nil, ok, fail
	}
	if isCounter {
		for _, p := range hps[1:] {
			if p.h.DetectReset(prev) {
				if _, _, _, err := h.Add(prev); err != nil {
					ok, fail := histErr(err)
					return nil, ok, fail
				}
			}
			prev = p.h
		}
	}
	h.CounterResetHint = histogram.GaugeType
	h.Compact(0)

	firstT, lastT := hps[0].t, hps[len(hps)-1].t
	durationToStart := float64(firstT-rangeStart) / 1000
	durationToEnd := float64(rangeEnd-lastT) / 1000
	sampledInterval := float64(lastT-firstT) / 1000
	avgBetween := sampledInterval / float64(len(hps)-1)
	threshold := avgBetween * 1.1
	if durationToStart >= threshold {
		durationToStart = avgBetween / 2
	}
	if isCounter {
		durationToZero := durationToStart
		if first := hps[0].h; h.Count > 0 && first.Count >= 0 {
			durationToZero = sampledInterval * (first.Count / h.Count)
		}
		if durationToZero < durationToStart {
			durationToStart = durationToZero
		}
	}
	if durationToEnd >= threshold {
		durationToEnd = avgBetween / 2
	}
	factor := 1.0
	if sampledInterval != 0 {
		factor = (sampledInterval + durationToStart + durationToEnd) / sampledInterval
	}
	if isRate {
		factor /= float64(n.rng) / 1000
	}
	return h.Mul(factor), true, nil
}

// instantHist is irate (isRate) and idelta over a window with histograms:
// Prometheus's instantValue on the last two samples of either kind.
func (n *rangeNode) instantHist(pts []store.Sample, hps []hpoint, isRate bool) (float64, *histogram.FloatHistogram, bool, error) {
	if len(pts)+len(hps) < 2 {
		return 0, nil, false, nil
	}
	type smp struct {
		t int64
		f float64
		h *histogram.FloatHistogram
	}
	var buf [2]smp
	ss := buf[:0]
	for i := max(0, len(pts)-2); i < len(pts); i++ {
		ss = append(ss, smp{t: pts[i].T, f: pts[i].V})
	}
	for i := max(0, len(hps)-2); i < len(hps); i++ {
		s := smp{t: hps[i].t, h: hps[i].h}
		switch {
		case len(ss) == 0:
			ss = append(ss, s)
		case len(ss) == 1:
			if s.t < ss[0].t {
				ss = append(ss, ss[0])
				ss[0] = s
			} else {
				ss = append(ss, s)
			}
		case s.t < ss[0].t:
		case s.t > ss[1].t:
			ss[0], ss[1] = ss[1], s
		default:
			ss[0] = s
		}
	}
	interval := ss[1].t - ss[0].t
	if interval == 0 {
		return 0, nil, false, nil
	}
	switch {
	case ss[1].h == nil && ss[0].h == nil:
		f := ss[1].f
		if !isRate || !(ss[1].f < ss[0].f) {
			f = ss[1].f - ss[0].f
		}
		if isRate {
			f /= float64(interval) / 1000
		}
		return f, nil, true, nil
	case ss[1].h != nil && ss[0].h != nil:
		h := n.hp.copyOf(ss[1].h)
		if !isRate || !ss[1].h.DetectReset(ss[0].h) {
			if _, _, _, err := h.Sub(ss[0].h); err != nil {
				ok, fail := histErr(err)
				return 0, nil, ok, fail
			}
		}
		h.CounterResetHint = histogram.GaugeType
		h.Compact(0)
		if isRate {
			h.Div(float64(interval) / 1000)
		}
		return 0, h, true, nil
	}
	return 0, nil, false, nil // a float and a histogram
}

// changesOrResets is changes or (resets true) resets over floats and
// histograms in time order: Prometheus's funcChanges and funcResets. A
// switch between a float and a histogram counts as one.
func changesOrResets(pts []store.Sample, hps []hpoint, resets bool) int {
	cnt := 0
	var (
		prevF, curF float64
		prevH, curH *histogram.FloatHistogram
	)
	for i, j, k := 0, 0, 0; i < len(pts) || j < len(hps); k++ {
		if j >= len(hps) || i < len(pts) && pts[i].T < hps[j].t {
			curF, curH = pts[i].V, nil
			i++
		} else {
			curH = hps[j].h
			j++
		}
		if k > 0 {
			switch {
			case prevH == nil && curH == nil:
				if resets && curF < prevF || !resets && curF != prevF && !(math.IsNaN(curF) && math.IsNaN(prevF)) {
					cnt++
				}
			case prevH == nil || curH == nil:
				cnt++
			case resets && curH.DetectReset(prevH), !resets && !curH.Equals(prevH):
				cnt++
			}
		}
		prevF, prevH = curF, curH
	}
	return cnt
}

// sumOrAvgHist is sum_over_time or (avg) avg_over_time over histograms:
// Prometheus's Kahan sums, avg switching to an incremental mean when the
// sum overflows.
func (n *rangeNode) sumOrAvgHist(hps []hpoint, avg bool) (*histogram.FloatHistogram, bool, error) {
	sum := n.hp.copyOf(hps[0].h)
	var comp, mean *histogram.FloatHistogram
	incremental := false
	count := 1.0
	for i, p := range hps[1:] {
		count = float64(i + 2)
		if !avg {
			var bad bool
			var err error
			if comp, bad, err = kahanAdd(sum, p.h, comp, &n.hcp); bad || err != nil {
				return nil, false, err
			}
			continue
		}
		if !incremental {
			s := n.hp.copyOf(sum)
			var c *histogram.FloatHistogram
			if comp != nil {
				c = initComp(n.hcp.get(), s)
				copy(c.PositiveBuckets, comp.PositiveBuckets)
				copy(c.NegativeBuckets, comp.NegativeBuckets)
				c.Count, c.Sum, c.ZeroCount, c.CounterResetHint = comp.Count, comp.Sum, comp.ZeroCount, comp.CounterResetHint
			}
			c, bad, err := kahanAdd(s, p.h, c, &n.hcp)
			if bad || err != nil {
				return nil, false, err
			}
			if !s.HasOverflow() {
				sum, comp = s, c
				continue
			}
			incremental = true
			mean = n.hp.copyOf(sum).Div(count - 1)
			if comp != nil {
				comp.Div(count - 1)
			}
		}
		q := (count - 1) / count
		if comp != nil {
			comp.Mul(q)
		}
		var bad bool
		var err error
		if comp, bad, err = kahanAdd(mean.Mul(q), n.hp.copyOf(p.h).Div(count), comp, &n.hcp); bad || err != nil {
			return nil, false, err
		}
	}
	res := sum
	switch {
	case incremental:
		res = mean
		if comp != nil {
			if _, _, _, err := res.Add(comp); err != nil {
				ok, fail := histErr(err)
				return nil, ok, fail
			}
		}
	case avg:
		res.Div(count)
		if comp != nil {
			if _, _, _, err := res.Add(comp.Div(count)); err != nil {
				ok, fail := histErr(err)
				return nil, ok, fail
			}
		}
	case comp != nil:
		if _, _, _, err := res.Add(comp); err != nil {
			ok, fail := histErr(err)
			return nil, ok, fail
		}
	}
	return res, true, nil
}

// histogramStatsSelectors is Prometheus's detectHistogramStatsDecoding:
// the selectors whose histograms reach only functions that read a
// histogram's count and sum (histogram_count, histogram_sum,
// histogram_avg; timestamp and absent read no value), with no subquery,
// bucket-reading function (histogram_quantile(s), histogram_fraction,
// histogram_stddev/stdvar, changes), count_values, trimming or histogram
// comparison on the way. Prometheus reads those series through its
// HistogramStatsIterator, which drops the buckets; the answers can differ
// (a reset detected in a gauge histogram's buckets is not seen on its
// count), so the selectors are marked and read the same way.
func histogramStatsSelectors(expr parser.Expr) map[*parser.VectorSelector]bool {
	var out map[*parser.VectorSelector]bool
	parser.Inspect(expr, func(node parser.Node, path []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		skip := false
	walk:
		for i := len(path) - 1; i >= 0; i-- {
			switch p := path[i].(type) {
			case *parser.SubqueryExpr:
				skip = false
				break walk
			case *parser.Call:
				switch p.Func.Name {
				case "histogram_count", "histogram_sum", "histogram_avg", "timestamp", "start_timestamp", "absent":
					skip = true
				case "histogram_quantile", "histogram_quantiles", "histogram_fraction", "histogram_stddev", "histogram_stdvar", "changes":
					skip = false
					break walk
				}
			case *parser.AggregateExpr:
				if p.Op == parser.COUNT_VALUES {
					skip = false
					break walk
				}
			case *parser.BinaryExpr:
				switch p.Op {
				case parser.TRIM_UPPER, parser.TRIM_LOWER, parser.EQLC, parser.NEQ:
					skip = false
					break walk
				}
			}
		}
		if skip {
			if out == nil {
				out = map[*parser.VectorSelector]bool{}
			}
			out[vs] = true
		}
		return nil
	})
	return out
}

// statsHistogram keeps only what HistogramStatsIterator returns: the
// hint, schema, count and sum.
func statsHistogram(h *histogram.FloatHistogram) {
	h.ZeroThreshold, h.ZeroCount = 0, 0
	h.PositiveSpans, h.NegativeSpans = h.PositiveSpans[:0], h.NegativeSpans[:0]
	h.PositiveBuckets, h.NegativeBuckets = h.PositiveBuckets[:0], h.NegativeBuckets[:0]
	h.CustomValues = nil
}

// statsWindow is HistogramStatsIterator over a window's histograms: a
// sample whose hint is unknown gets the reset, or no reset, that its full
// histogram shows against the one before it in the window (the first
// keeps unknown); then every histogram keeps only its count and sum.
func statsWindow(hs []store.HSample) {
	for i := len(hs) - 1; i > 0; i-- {
		if h := &hs[i].H; h.CounterResetHint == histogram.UnknownCounterReset {
			if h.DetectReset(&hs[i-1].H) {
				h.CounterResetHint = histogram.CounterReset
			} else {
				h.CounterResetHint = histogram.NotCounterReset
			}
		}
	}
	for i := range hs {
		statsHistogram(&hs[i].H)
	}
}
