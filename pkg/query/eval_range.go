package query

import (
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

type rangeKind uint8

const (
	fnRate rangeKind = iota
	fnIncrease
	fnDelta
	fnIrate
	fnIdelta
	fnDeriv
	fnPredictLinear
	fnChanges
	fnResets
	fnAvgOverTime
	fnMinOverTime
	fnMaxOverTime
	fnSumOverTime
	fnCountOverTime
	fnLastOverTime
	fnFirstOverTime
	fnQuantileOverTime
	fnStddevOverTime
	fnStdvarOverTime
	fnPresentOverTime
	fnAbsentOverTime
	fnMadOverTime
	fnTsOfFirstOverTime
	fnTsOfLastOverTime
	fnTsOfMaxOverTime
	fnTsOfMinOverTime
	fnDoubleExpSmoothing
	fnIntegral
)

// rangeNode is a range-vector function over one range selector. For each
// series it reads the window (t−offset−range, t−offset] from the store into
// a reused buffer, drops stale markers and runs one kernel pass; there is
// no intermediate matrix.
type rangeNode struct {
	vectorNode
	kind   rangeKind
	set    *seriesSet
	rng    int64
	offset int64
	// statsOnly: the window's histograms keep only their count and sum,
	// their reset hints decided first (statsWindow).
	statsOnly bool
	param     node // quantile_over_time's q, predict_linear's t, integral's strategy, the smoothing factor
	param2    node // double_exponential_smoothing's trend factor
	at        *atMod
	dropName  bool
	absent    labels.Labels

	buf  []store.Sample
	win  store.Window
	memo rateMemo
	vals []float64
	out  vector
	// A window of a histogram series (eval_hist.go): its floats and
	// histograms as read, the histograms as points, and the pools of the
	// histograms the node computes and of their Kahan compensations.
	fbuf    []store.Sample
	hbuf    []store.HSample
	hps     []hpoint
	hp, hcp hpool
	// stepMemos and drops are sumSteps' scratch: a memo per step, and the
	// running count of counter resets of a series' samples.
	stepMemos []rateMemo
	drops     []int32
}

// sumSteps is sum(f(sel[r])) for rate, increase or delta, without @, at
// the nsteps steps t0, t0+step, …: each series' samples over the steps'
// union are read once and every step's window slides over them, where
// evaluating sum at each step would search and scan the ring once per
// step. acc[k] receives step k's sum. The results are bit-identical to
// the per-step evaluation's (rangeNode.sum): the same samples per window,
// the same order of operations (resets added in order, one rate memo per
// step, series summed in the same order).
func (n *rangeNode) sumSteps(ev *evaluator, t0, step int64, nsteps int, acc []sumSink) error {
	if err := n.set.refresh(ev); err != nil {
		return err
	}
	if n.set.hasHist {
		return refundSet(ev, n.set)
	}
	_, isCounter, isRate := n.fused()
	if cap(n.stepMemos) < nsteps {
		n.stepMemos = make([]rateMemo, nsteps)
	}
	memos := n.stepMemos[:nsteps]
	rd := ev.reader(n.set.store)
	first := t0 - n.offset - n.rng // the union window (first, last]
	last := t0 + int64(nsteps-1)*step - n.offset
	win := &n.win
	for _, h := range n.set.handles {
		for {
			rd.Window(win, h, first, last)
			n.buf = win.AppendTo(n.buf[:0])
			if win.Valid() {
				break
			}
		}
		if err := ev.charge(win.Len()); err != nil {
			return err
		}
		pts := dropStale(n.buf)
		if len(pts) < 2 {
			continue
		}
		// drops[i]: resets among pts[1..i].
		n.drops = slices.Grow(n.drops[:0], len(pts))[:len(pts)]
		n.drops[0] = 0
		for i := 1; i < len(pts); i++ {
			n.drops[i] = n.drops[i-1]
			if pts[i].V < pts[i-1].V {
				n.drops[i]++
			}
		}
		a, b := 0, 0
		for k := range nsteps {
			rangeEnd := t0 + int64(k)*step - n.offset
			rangeStart := rangeEnd - n.rng
			for a < len(pts) && pts[a].T <= rangeStart {
				a++
			}
			for b < len(pts) && pts[b].T <= rangeEnd {
				b++
			}
			cnt := b - a
			if cnt < 2 {
				continue
			}
			firstS, lastS := pts[a], pts[b-1]
			result := lastS.V - firstS.V
			if isCounter && n.drops[b-1] != n.drops[a] {
				for i := a + 1; i < b; i++ {
					if pts[i].V < pts[i-1].V {
						result += pts[i-1].V
					}
				}
			}
			var f float64
			if m := &memos[k]; m.ok && m.firstT == firstS.T && m.lastT == lastS.T && m.n == cnt &&
				m.rangeStart == rangeStart && m.rangeEnd == rangeEnd &&
				(!isCounter || !(result > 0 && firstS.V >= 0) || firstS.V >= result && m.dtsWithinInterval) {
				f = result * m.factor // extrapolate's hit path, inline
			} else {
				f = m.extrapolate(result, firstS.T, lastS.T, firstS.V, cnt, rangeStart, rangeEnd, n.rng, isCounter, isRate)
			}
			// sumSink.addValue, by hand (kahanInc is too big to inline;
			// calling it costs 8 % more instructions per evaluation:
			// BenchmarkEval/expr=subq_max_sum_rate, 6.15M against 6.65M,
			// callgrind).
			sk := &acc[k]
			if sk.n == 0 {
				sk.f = f
			} else {
				sum := sk.f
				t := sum + f
				switch {
				case math.IsInf(t, 0):
					sk.c = 0
				case math.Abs(sum) >= math.Abs(f):
					sk.c += (sum - t) + f
				default:
					sk.c += (f - t) + sum
				}
				sk.f = t
			}
			sk.n++
		}
	}
	if n.dropName {
		for k := range acc[:nsteps] {
			acc[k].drop = acc[k].drop || acc[k].n > 0
		}
	}
	return nil
}

func (n *rangeNode) eval(ev *evaluator, t int64) (vector, error) {
	n.out = n.out[:0]
	if err := n.stream(ev, t, (*vectorSink)(&n.out)); err != nil {
		return nil, err
	}
	if n.kind == fnAbsentOverTime {
		if len(n.out) > 0 {
			n.out = n.out[:0]
			return n.out, nil
		}
		n.out = append(n.out, sample{lset: n.absent, t: t, f: 1, drop: true})
	}
	return n.out, nil
}

// canStream is false for absent_over_time, whose output depends on all
// series at once.
func (n *rangeNode) canStream() bool { return n.kind != fnAbsentOverTime }

// params evaluates the scalar arguments at t.
func (n *rangeNode) params(ev *evaluator, t int64) (p1, p2 float64, err error) {
	if n.param != nil {
		if p1, err = n.param.scalar(ev, t); err != nil {
			return 0, 0, err
		}
	}
	if n.param2 != nil {
		if p2, err = n.param2.scalar(ev, t); err != nil {
			return 0, 0, err
		}
	}
	return p1, p2, nil
}

// checkParams is double_exponential_smoothing's argument check, which
// upstream runs for each series that has samples in range.
func (n *rangeNode) checkParams(sf, tf float64) error {
	if n.kind != fnDoubleExpSmoothing {
		return nil
	}
	if sf <= 0 || sf >= 1 {
		return fmt.Errorf("invalid smoothing factor. Expected: 0 < sf < 1, got: %f", sf)
	}
	if tf <= 0 || tf >= 1 {
		return fmt.Errorf("invalid trend factor. Expected: 0 < tf < 1, got: %f", tf)
	}
	return nil
}

// bounds are the window read from the store, (fStart, fEnd], and the one
// rate and its kin extrapolate to, (eStart, eEnd], at step t. They differ
// only for a range selector with @ evaluated at a step other than its
// evaluator's start (upstream fetches the window once, at the start, but
// extrapolates from each step's time).
func (n *rangeNode) bounds(t int64) (fStart, fEnd, eStart, eEnd int64) {
	fEnd, eEnd = t-n.offset, t-n.offset
	if n.at != nil {
		fEnd, eEnd = n.at.refAt(t), t-n.at.off
	}
	return fEnd - n.rng, fEnd, eEnd - n.rng, eEnd
}

func (n *rangeNode) stream(ev *evaluator, t int64, dst sink) error {
	if err := n.set.refresh(ev); err != nil {
		return err
	}
	param, param2, err := n.params(ev, t)
	if err != nil {
		return err
	}
	fStart, fEnd, eStart, eEnd := n.bounds(t)
	rd := ev.reader(n.set.store)
	n.hp.reset()
	n.hcp.reset()
	refs := n.set.refs[:len(n.set.handles)] // one bounds check for the loop
	for i, h := range n.set.handles {
		var (
			f   float64
			fh  *histogram.FloatHistogram
			ok  bool
			err error
		)
		if h.Histograms() {
			f, fh, ok, err = n.histSeries(ev, rd, h, t, fStart, fEnd, eStart, eEnd, param, param2)
		} else {
			f, ok, err = n.series(ev, rd, h, t, fStart, fEnd, eStart, eEnd, param, param2)
		}
		if err != nil {
			return err
		}
		if ok {
			dst.add(sample{lset: n.set.lsets[i], t: t, f: f, h: fh, drop: n.dropName, ref: refs[i]})
		}
	}
	return nil
}

// sum is stream into a sumSink without the sink interface and the
// per-element sample: sum(rate(x[r]))'s hot loop.
func (n *rangeNode) sum(ev *evaluator, t int64, acc *sumSink) error {
	if err := n.set.refresh(ev); err != nil {
		return err
	}
	if n.set.hasHist {
		return refundSet(ev, n.set)
	}
	param, param2, err := n.params(ev, t)
	if err != nil {
		return err
	}
	rangeStart, rangeEnd, eStart, eEnd := n.bounds(t)
	rd := ev.reader(n.set.store)
	// The sum stays in locals: sumSink.addValue, by hand (kahanInc is too
	// big to inline). This loop and sumGroups' repeat rateSeries' common
	// case and the Kahan step instead of calling them: calls cost
	// BenchmarkEval/expr=sum_rate/series=1000 6 % more instructions
	// (kahanInc) and 23 % with rateSeries too (331k, 352k, 406k per
	// evaluation, callgrind).
	sum, c, cnt := acc.f, acc.c, acc.n
	fused, isCounter, isRate := n.fused()
	fused = fused && rangeEnd == eEnd
	memo, sc := &n.memo, &n.memo.scan
	memo.forRange(rangeStart, rangeEnd)
	for _, h := range n.set.handles {
		var (
			f  float64
			ok bool
		)
		if fused {
			// rateSeries, with its common case inline: the scan, then
			// the memo's hit path.
			if err := ev.charge(rd.ScanRange(sc, h, rangeStart, rangeEnd)); err != nil {
				return err
			}
			if sc.N < 2 {
				continue
			}
			if result := sc.LastV - sc.FirstV; (sc.Drops == 0 || !isCounter) && memo.hitInRange(sc, result, isCounter) {
				f = result * memo.factor
			} else if f, ok = rateScanned(rd, h, &n.win, memo, rangeStart, rangeEnd, n.rng, isCounter, isRate); !ok {
				continue
			}
		} else {
			var err error
			if f, ok, err = n.series(ev, rd, h, t, rangeStart, rangeEnd, eStart, eEnd, param, param2); err != nil {
				return err
			} else if !ok {
				continue
			}
		}
		if cnt == 0 {
			sum = f
		} else {
			s := sum + f
			switch {
			case math.IsInf(s, 0):
				c = 0
			case math.Abs(sum) >= math.Abs(f):
				c += (sum - s) + f
			default:
				c += (f - s) + sum
			}
			sum = s
		}
		cnt++
	}
	acc.f, acc.c, acc.drop = sum, c, acc.drop || cnt > acc.n && n.dropName
	acc.n = cnt
	return nil
}

// sumGroups is stream into a groupedSum: sum by/without's hot loop.
func (n *rangeNode) sumGroups(ev *evaluator, t int64, agg *aggNode) error {
	if err := n.set.refresh(ev); err != nil {
		return err
	}
	if n.set.hasHist {
		return refundSet(ev, n.set)
	}
	g := &agg.gsum
	g.prepare(agg, n.set)
	param, param2, err := n.params(ev, t)
	if err != nil {
		return err
	}
	rangeStart, rangeEnd, eStart, eEnd := n.bounds(t)
	rd := ev.reader(n.set.store)
	fused, isCounter, isRate := n.fused()
	fused = fused && rangeEnd == eEnd
	memo, sc := &n.memo, &n.memo.scan
	memo.forRange(rangeStart, rangeEnd)
	dropName := n.dropName
	for i, h := range n.set.handles {
		var (
			f  float64
			ok bool
		)
		if fused {
			// rateSeries, with its common case inline: the scan, then
			// the memo's hit path.
			if err := ev.charge(rd.ScanRange(sc, h, rangeStart, rangeEnd)); err != nil {
				return err
			}
			if sc.N < 2 {
				continue
			}
			if result := sc.LastV - sc.FirstV; (sc.Drops == 0 || !isCounter) && memo.hitInRange(sc, result, isCounter) {
				f = result * memo.factor
			} else if f, ok = rateScanned(rd, h, &n.win, memo, rangeStart, rangeEnd, n.rng, isCounter, isRate); !ok {
				continue
			}
		} else {
			var err error
			if f, ok, err = n.series(ev, rd, h, t, rangeStart, rangeEnd, eStart, eEnd, param, param2); err != nil {
				return err
			} else if !ok {
				continue
			}
		}
		// groupedSum.add and sumSink.addValue, by hand (kahanInc is too
		// big to inline): the element's group, then its Kahan step. With
		// calls (g.add; rateSeries above) BenchmarkEval/expr=hq_sum_rate
		// costs 13 % and 27 % more instructions (385k, 435k, 488k per
		// evaluation, callgrind).
		gi := g.gi[i]
		a := &g.acc[gi]
		if a.n == 0 {
			g.order = append(g.order, gi)
			a.f = f
		} else {
			sum := a.f
			s := sum + f
			switch {
			case math.IsInf(s, 0):
				a.c = 0
			case math.Abs(sum) >= math.Abs(f):
				a.c += (sum - s) + f
			default:
				a.c += (f - s) + sum
			}
			a.f = s
		}
		a.n++
		if dropName {
			a.drop = true
		}
	}
	return nil
}

// fused reports whether the function is rate, increase or delta, which
// rateSeries computes in one pass over the ring.
func (n *rangeNode) fused() (ok, isCounter, isRate bool) {
	switch n.kind {
	case fnRate:
		return true, true, true
	case fnIncrease:
		return true, true, false
	case fnDelta:
		return true, false, false
	}
	return false, false, false
}

// series evaluates the function over one series' window (fStart, fEnd],
// extrapolating (rate, increase, delta) over (eStart, eEnd]. rate,
// increase and delta run fused over the store's ring in place
// (rateSeries) when the two windows are one; the other functions copy the
// window into a reused buffer first, re-reading it when a writer changed
// the series meanwhile (store.Window's read protocol).
func (n *rangeNode) series(ev *evaluator, rd store.Reader, h store.Handle, t, fStart, fEnd, eStart, eEnd int64, param, param2 float64) (float64, bool, error) {
	var (
		f     float64
		ok    bool
		total int
	)
	if fEnd == eEnd {
		switch n.kind {
		case fnRate:
			f, ok, total = rateSeries(rd, h, &n.win, &n.memo, fStart, fEnd, n.rng, true, true)
			return f, ok, ev.charge(total)
		case fnIncrease:
			f, ok, total = rateSeries(rd, h, &n.win, &n.memo, fStart, fEnd, n.rng, true, false)
			return f, ok, ev.charge(total)
		case fnDelta:
			f, ok, total = rateSeries(rd, h, &n.win, &n.memo, fStart, fEnd, n.rng, false, false)
			return f, ok, ev.charge(total)
		}
	}
	win := &n.win
	for {
		rd.Window(win, h, fStart, fEnd)
		n.buf = win.AppendTo(n.buf[:0])
		if win.Valid() {
			break
		}
	}
	if err := ev.charge(win.Len()); err != nil {
		return 0, false, err
	}
	pts := dropStale(n.buf)
	if len(pts) == 0 {
		return 0, false, nil
	}
	if err := n.checkParams(param, param2); err != nil {
		return 0, false, err
	}
	f, ok = n.apply(pts, t, eStart, eEnd, param, param2)
	return f, ok, nil
}

// dropStale removes stale markers in place; without any (the common case)
// it only reads.
func dropStale(buf []store.Sample) []store.Sample {
	for i, s := range buf {
		if value.IsStaleNaN(s.V) {
			pts := buf[:i]
			for _, s := range buf[i+1:] {
				if !value.IsStaleNaN(s.V) {
					pts = append(pts, s)
				}
			}
			return pts
		}
	}
	return buf
}

func (n *rangeNode) apply(pts []store.Sample, t, rangeStart, rangeEnd int64, param, param2 float64) (float64, bool) {
	switch n.kind {
	case fnRate:
		return extrapolatedRate(pts, rangeStart, rangeEnd, n.rng, true, true)
	case fnIncrease:
		return extrapolatedRate(pts, rangeStart, rangeEnd, n.rng, true, false)
	case fnDelta:
		return extrapolatedRate(pts, rangeStart, rangeEnd, n.rng, false, false)
	case fnIrate:
		return instantValue(pts, true)
	case fnIdelta:
		return instantValue(pts, false)
	case fnDeriv:
		if len(pts) < 2 {
			return 0, false
		}
		slope, _ := linearRegression(pts, pts[0].T)
		return slope, true
	case fnPredictLinear:
		if len(pts) < 2 {
			return 0, false
		}
		slope, intercept := linearRegression(pts, t)
		return slope*param + intercept, true
	case fnChanges:
		c := 0
		for i := 1; i < len(pts); i++ {
			cur, prev := pts[i].V, pts[i-1].V
			if cur != prev && !(math.IsNaN(cur) && math.IsNaN(prev)) {
				c++
			}
		}
		return float64(c), true
	case fnResets:
		c := 0
		for i := 1; i < len(pts); i++ {
			if pts[i].V < pts[i-1].V {
				c++
			}
		}
		return float64(c), true
	case fnAvgOverTime:
		return avgOverTime(pts), true
	case fnMinOverTime:
		m := pts[0].V
		for _, p := range pts {
			if p.V < m || math.IsNaN(m) {
				m = p.V
			}
		}
		return m, true
	case fnMaxOverTime:
		m := pts[0].V
		for _, p := range pts {
			if p.V > m || math.IsNaN(m) {
				m = p.V
			}
		}
		return m, true
	case fnSumOverTime:
		var sum, c float64
		for _, p := range pts {
			sum, c = kahanInc(p.V, sum, c)
		}
		if math.IsInf(sum, 0) {
			return sum, true
		}
		return sum + c, true
	case fnCountOverTime:
		return float64(len(pts)), true
	case fnLastOverTime:
		return pts[len(pts)-1].V, true
	case fnFirstOverTime:
		return pts[0].V, true
	case fnQuantileOverTime:
		n.vals = n.vals[:0]
		for _, p := range pts {
			n.vals = append(n.vals, p.V)
		}
		return quantile(param, n.vals), true
	case fnStddevOverTime, fnStdvarOverTime:
		var count, mean, cMean, aux, cAux float64
		for _, p := range pts {
			count++
			delta := p.V - (mean + cMean)
			mean, cMean = kahanInc(delta/count, mean, cMean)
			aux, cAux = kahanInc(delta*(p.V-(mean+cMean)), aux, cAux)
		}
		variance := (aux + cAux) / count
		if n.kind == fnStddevOverTime {
			return math.Sqrt(variance), true
		}
		return variance, true
	case fnPresentOverTime, fnAbsentOverTime:
		return 1, true
	case fnMadOverTime:
		return madOverTime(pts, &n.vals), true
	case fnTsOfFirstOverTime:
		return float64(pts[0].T) / 1000, true
	case fnTsOfLastOverTime:
		return float64(pts[len(pts)-1].T) / 1000, true
	case fnTsOfMaxOverTime, fnTsOfMinOverTime:
		m, ts := pts[0].V, pts[0].T
		for _, p := range pts {
			if n.kind == fnTsOfMaxOverTime && (p.V >= m || math.IsNaN(m)) ||
				n.kind == fnTsOfMinOverTime && (p.V <= m || math.IsNaN(m)) {
				m, ts = p.V, p.T
			}
		}
		return float64(ts) / 1000, true
	case fnDoubleExpSmoothing:
		return doubleExponentialSmoothing(pts, param, param2)
	case fnIntegral:
		return integral(pts, n.param != nil, param), true
	}
	return 0, false
}

// madOverTime is the median absolute deviation (funcMadOverTime): NaN when
// any value is NaN.
func madOverTime(pts []store.Sample, vals *[]float64) float64 {
	*vals = (*vals)[:0]
	for _, p := range pts {
		if math.IsNaN(p.V) {
			return math.NaN()
		}
		*vals = append(*vals, p.V)
	}
	median := quantile(0.5, *vals)
	for i, v := range *vals {
		(*vals)[i] = math.Abs(v - median)
	}
	return quantile(0.5, *vals)
}

// doubleExponentialSmoothing is funcDoubleExponentialSmoothing for a
// checked smoothing factor sf and trend factor tf.
func doubleExponentialSmoothing(pts []store.Sample, sf, tf float64) (float64, bool) {
	l := len(pts)
	if l < 2 {
		return 0, false
	}
	var s0, s1, b float64
	s1 = pts[0].V
	b = pts[1].V - pts[0].V
	var x, y float64
	for i := 1; i < l; i++ {
		x = sf * pts[i].V
		b = calcTrendValue(i-1, tf, s0, s1, b)
		y = (1 - sf) * (s1 + b)
		s0, s1 = s1, x+y
	}
	return s1, true
}

// calcTrendValue is upstream's trend step of double_exponential_smoothing.
func calcTrendValue(i int, tf, s0, s1, b float64) float64 {
	if i == 0 {
		return b
	}
	x := tf * (s1 - s0)
	y := (1 - tf) * b
	return x + y
}

// Integral strategies (funcIntegral).
const (
	integralLeftPoint = iota
	integralRightPoint
	integralTrapezoidal
)

// integral is funcIntegral: a Kahan-summed quadrature with NaN as zero;
// an invalid strategy falls back to the trapezoidal rule (upstream warns).
func integral(pts []store.Sample, hasStrategy bool, strategyArg float64) float64 {
	strategy := integralTrapezoidal
	if hasStrategy && !math.IsNaN(strategyArg) && !math.IsInf(strategyArg, 0) && math.Trunc(strategyArg) == strategyArg &&
		strategyArg >= integralLeftPoint && strategyArg <= integralTrapezoidal {
		strategy = int(strategyArg)
	}
	nanAsZero := func(v float64) float64 {
		if math.IsNaN(v) {
			return 0
		}
		return v
	}
	var sum, c float64
	var prev store.Sample
	for i, f := range pts {
		var value, cValue float64
		currVal := nanAsZero(f.V)
		prevVal := nanAsZero(prev.V)
		switch strategy {
		case integralLeftPoint:
			value = prevVal
		case integralRightPoint:
			value = currVal
		case integralTrapezoidal:
			if prevVal != 0 || currVal != 0 {
				value, cValue = kahanInc(currVal, prevVal, 0)
				if math.IsInf(value, 0) && !math.IsInf(currVal, 0) && !math.IsInf(prevVal, 0) {
					value, cValue = kahanInc(currVal/2, prevVal/2, 0)
				} else {
					value /= 2
					cValue /= 2
				}
			}
		}
		if i > 0 && (value != 0 || cValue != 0) {
			deltaT := float64(f.T-prev.T) / 1000
			sum, c = kahanInc(value*deltaT, sum, c+cValue*deltaT)
		}
		prev = f
	}
	if math.IsInf(sum, 0) {
		return sum
	}
	return sum + c
}

// extrapolatedRate is Prometheus's rate/increase/delta (§4.3) for float
// samples without start timestamps.
func extrapolatedRate(pts []store.Sample, rangeStart, rangeEnd, rng int64, isCounter, isRate bool) (float64, bool) {
	n := len(pts)
	if n < 2 {
		return 0, false
	}
	first, last := pts[0], pts[n-1]
	result := last.V - first.V
	if isCounter {
		for i := 1; i < n; i++ {
			if pts[i].V < pts[i-1].V {
				result += pts[i-1].V
			}
		}
	}
	return extrapolate(result, first.T, last.T, first.V, n, rangeStart, rangeEnd, rng, isCounter, isRate), true
}

// rateWindow is extrapolatedRate fused over a store window: one pass that
// skips stale markers (Prometheus drops them when it builds the matrix)
// and finds the first and last samples and the counter resets, without
// materialising the samples. Resets are added in order, as upstream: the
// first one inline, further ones (rare) by a second pass over the window,
// so the sum rounds exactly as extrapolatedRate's.
func rateWindow(win *store.Window, memo *rateMemo, rangeStart, rangeEnd, rng int64, isCounter, isRate bool) (float64, bool) {
	sc := &memo.scan
	win.Scan(sc)
	if sc.N < 2 {
		return 0, false
	}
	result := sc.LastV - sc.FirstV
	if isCounter && sc.Drops > 0 {
		if sc.Drops == 1 {
			result += sc.FirstDrop
		} else {
			result = addResets(win, result)
		}
	}
	return memo.extrapolate(result, sc.FirstT, sc.LastT, sc.FirstV, sc.N, rangeStart, rangeEnd, rng, isCounter, isRate), true
}

// rateSeries is rate, increase or delta of one series: one scan of the
// ring (store.Reader.ScanRange) and the memoized extrapolation.
// Only a counter with more than one reset in range, whose resets must be
// added in order, takes rateWindow's path over a consistent Window. It
// returns the samples in range (stale markers included) for the budget.
func rateSeries(rd store.Reader, h store.Handle, win *store.Window, memo *rateMemo, rangeStart, rangeEnd, rng int64, isCounter, isRate bool) (float64, bool, int) {
	sc := &memo.scan
	total := rd.ScanRange(sc, h, rangeStart, rangeEnd)
	if sc.N < 2 {
		return 0, false, total
	}
	if isCounter && sc.Drops > 1 {
		for {
			rd.Window(win, h, rangeStart, rangeEnd)
			f, ok := rateWindow(win, memo, rangeStart, rangeEnd, rng, isCounter, isRate)
			if win.Valid() {
				return f, ok, win.Len()
			}
		}
	}
	result := sc.LastV - sc.FirstV
	if isCounter && sc.Drops == 1 {
		result += sc.FirstDrop
	}
	if memo.hit(sc, result, rangeStart, rangeEnd, isCounter) {
		return result * memo.factor, true, total
	}
	return memo.extrapolate(result, sc.FirstT, sc.LastT, sc.FirstV, sc.N, rangeStart, rangeEnd, rng, isCounter, isRate), true, total
}

// rateScanned is rateSeries after its scan (memo.scan, of at least two
// samples) for the evaluator's loops, which take the common case inline
// (no drop, a memo hit) and call this for the rest: several drops, whose
// Window path re-reads the series, or a memo miss.
func rateScanned(rd store.Reader, h store.Handle, win *store.Window, memo *rateMemo, rangeStart, rangeEnd, rng int64, isCounter, isRate bool) (float64, bool) {
	sc := &memo.scan
	if isCounter && sc.Drops > 1 {
		for {
			rd.Window(win, h, rangeStart, rangeEnd)
			f, ok := rateWindow(win, memo, rangeStart, rangeEnd, rng, isCounter, isRate)
			if win.Valid() {
				return f, ok
			}
		}
	}
	result := sc.LastV - sc.FirstV
	if isCounter && sc.Drops == 1 {
		result += sc.FirstDrop
	}
	if memo.hit(sc, result, rangeStart, rangeEnd, isCounter) {
		return result * memo.factor, true
	}
	return memo.extrapolate(result, sc.FirstT, sc.LastT, sc.FirstV, sc.N, rangeStart, rangeEnd, rng, isCounter, isRate), true
}

// hit reports whether the memo holds the factor for sc's range with
// result, the increase: extrapolate's hit path, small enough to inline.
func (m *rateMemo) hit(sc *store.Scan, result float64, rangeStart, rangeEnd int64, isCounter bool) bool {
	return m.rangeStart == rangeStart && m.rangeEnd == rangeEnd && m.hitInRange(sc, result, isCounter)
}

// hitInRange is hit for a memo known to be of the caller's range bounds
// or not ok: see forRange.
func (m *rateMemo) hitInRange(sc *store.Scan, result float64, isCounter bool) bool {
	return m.ok && m.firstT == sc.FirstT && m.lastT == sc.LastT && m.n == sc.N &&
		(!isCounter || !(result > 0 && sc.FirstV >= 0) || sc.FirstV >= result && m.dtsWithinInterval)
}

// forRange readies the memo for a loop over series with the same range
// bounds, so the loop can use hitInRange: a memo of other bounds is
// dropped. Within the loop every memo update (extrapolate) is for these
// bounds, so ok then implies them.
func (m *rateMemo) forRange(rangeStart, rangeEnd int64) {
	if m.rangeStart != rangeStart || m.rangeEnd != rangeEnd {
		m.ok = false
	}
}

// rateMemo memoizes the value-independent part of extrapolate for the last
// (first time, last time, sample count) seen, within one evaluation of one
// node (fixed range bounds). Series sampled at the same times (every
// bucket of a histogram, series scraped together) then skip extrapolate's
// four chained divisions: the factor only depends on the values through
// the counter's zero point, which moves the start only when the counter
// is young. The arithmetic is the same on the same inputs, so results are
// bit-identical to extrapolate's.
type rateMemo struct {
	scan                 store.Scan // scratch for rateWindow
	ok                   bool
	firstT, lastT        int64
	n                    int
	rangeStart, rangeEnd int64
	dts, dte, si, factor float64
	dtsWithinInterval    bool // dts <= si: a zero point at or past si cannot lower it
}

func (m *rateMemo) extrapolate(result float64, firstT, lastT int64, firstV float64, n int, rangeStart, rangeEnd, rng int64, isCounter, isRate bool) float64 {
	if !m.ok || m.firstT != firstT || m.lastT != lastT || m.n != n || m.rangeStart != rangeStart || m.rangeEnd != rangeEnd {
		// Upstream's order of operations, up to the zero point.
		durationToStart := float64(firstT-rangeStart) / 1000
		durationToEnd := float64(rangeEnd-lastT) / 1000
		sampledInterval := float64(lastT-firstT) / 1000
		avgBetween := sampledInterval / float64(n-1)
		threshold := avgBetween * 1.1
		if durationToStart >= threshold {
			durationToStart = avgBetween / 2
		}
		if durationToEnd >= threshold {
			durationToEnd = avgBetween / 2
		}
		*m = rateMemo{
			ok: true, firstT: firstT, lastT: lastT, n: n, rangeStart: rangeStart, rangeEnd: rangeEnd,
			dts: durationToStart, dte: durationToEnd, si: sampledInterval,
			factor:            rateFactor(sampledInterval, durationToStart, durationToEnd, rng, isRate),
			dtsWithinInterval: durationToStart <= sampledInterval,
		}
	}
	// The zero point: upstream computes si·(firstV/result) whenever the
	// counter went up from a non-negative value. When firstV >= result the
	// ratio rounds to >= 1, so the zero point is >= si >= dts and cannot
	// lower dts: skip the division.
	if isCounter && result > 0 && firstV >= 0 && !(firstV >= result && m.dtsWithinInterval) {
		if durationToZero := m.si * (firstV / result); durationToZero < m.dts {
			return result * rateFactor(m.si, durationToZero, m.dte, rng, isRate)
		}
	}
	return result * m.factor
}

// rateFactor is extrapolate's final factor.
func rateFactor(sampledInterval, durationToStart, durationToEnd float64, rng int64, isRate bool) float64 {
	factor := 1.0
	if sampledInterval != 0 {
		factor = (sampledInterval + durationToStart + durationToEnd) / sampledInterval
	}
	if isRate {
		factor /= float64(rng) / 1000
	}
	return factor
}

// addResets adds to result, in order, the value before every counter reset
// of the window's non-stale samples.
func addResets(win *store.Window, result float64) float64 {
	var prev float64
	seen := false
	for i := range win.Len() {
		_, v := win.At(i)
		if value.IsStaleNaN(v) {
			continue
		}
		if seen && v < prev {
			result += prev
		}
		prev, seen = v, true
	}
	return result
}

// extrapolate is the second half of Prometheus's extrapolatedRate: it
// extends result, the increase between the first and the last of n >= 2
// samples, to the range boundaries.
func extrapolate(result float64, firstT, lastT int64, firstV float64, n int, rangeStart, rangeEnd, rng int64, isCounter, isRate bool) float64 {
	durationToStart := float64(firstT-rangeStart) / 1000
	durationToEnd := float64(rangeEnd-lastT) / 1000
	sampledInterval := float64(lastT-firstT) / 1000
	avgBetween := sampledInterval / float64(n-1)
	threshold := avgBetween * 1.1
	if durationToStart >= threshold {
		durationToStart = avgBetween / 2
	}
	if isCounter {
		durationToZero := durationToStart
		if result > 0 && firstV >= 0 {
			durationToZero = sampledInterval * (firstV / result)
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
		factor /= float64(rng) / 1000
	}
	return result * factor
}

// instantValue is irate/idelta: the last two samples only.
func instantValue(pts []store.Sample, isRate bool) (float64, bool) {
	n := len(pts)
	if n < 2 {
		return 0, false
	}
	prev, last := pts[n-2], pts[n-1]
	interval := last.T - prev.T
	if interval == 0 {
		return 0, false
	}
	res := last.V
	if !isRate || !(last.V < prev.V) {
		res = last.V - prev.V
	}
	if isRate {
		res /= float64(interval) / 1000
	}
	return res, true
}

// avgOverTime is the Kahan-summed mean that switches to an incremental mean
// only when the sum would overflow (funcAvgOverTime).
func avgOverTime(pts []store.Sample) float64 {
	sum, count := pts[0].V, 1.0
	var mean, c float64
	incremental := false
	for i, p := range pts[1:] {
		count = float64(i + 2)
		if !incremental {
			ns, nc := kahanInc(p.V, sum, c)
			if !math.IsInf(ns, 0) {
				sum, c = ns, nc
				continue
			}
			incremental = true
			mean = sum / (count - 1)
			c /= count - 1
		}
		q := (count - 1) / count
		mean, c = kahanInc(p.V/count, q*mean, q*c)
	}
	if incremental {
		return mean + c
	}
	return sum/count + c/count
}

// linearRegression is Prometheus's least-squares fit with Kahan sums, x in
// seconds relative to interceptTime.
func linearRegression(pts []store.Sample, interceptTime int64) (slope, intercept float64) {
	var n, sumX, cX, sumY, cY, sumXY, cXY, sumX2, cX2 float64
	initY := pts[0].V
	constY := true
	for i, p := range pts {
		if constY && i > 0 && p.V != initY {
			constY = false
		}
		n++
		x := float64(p.T-interceptTime) / 1e3
		sumX, cX = kahanInc(x, sumX, cX)
		sumY, cY = kahanInc(p.V, sumY, cY)
		sumXY, cXY = kahanInc(x*p.V, sumXY, cXY)
		sumX2, cX2 = kahanInc(x*x, sumX2, cX2)
	}
	if constY {
		if math.IsInf(initY, 0) {
			return math.NaN(), math.NaN()
		}
		return 0, initY
	}
	sumX += cX
	sumY += cY
	sumXY += cXY
	sumX2 += cX2
	covXY := sumXY - sumX*sumY/n
	varX := sumX2 - sumX*sumX/n
	slope = covXY / varX
	intercept = sumY/n - slope*sumX/n
	return slope, intercept
}

// quantile interpolates linearly at rank q·(n−1) of the sorted values,
// NaNs first (Prometheus's quantile). It sorts vals in place.
func quantile(q float64, vals []float64) float64 {
	if len(vals) == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	if q < 0 {
		return math.Inf(-1)
	}
	if q > 1 {
		return math.Inf(+1)
	}
	slices.Sort(vals) // NaNs sort first, as in vectorByValueHeap.
	n := float64(len(vals))
	rank := q * (n - 1)
	lower := math.Max(0, math.Floor(rank))
	upper := math.Min(n-1, lower+1)
	weight := rank - math.Floor(rank)
	if weight == 0 {
		return vals[int(lower)]
	}
	return vals[int(lower)]*(1-weight) + vals[int(upper)]*weight
}
