package query

import (
	"errors"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/facette/natsort"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

type mathKind uint8

const (
	mathAbs mathKind = iota
	mathCeil
	mathFloor
	mathSqrt
	mathExp
	mathLn
	mathLog2
	mathLog10
	mathSgn
	mathRound
	mathAcos
	mathAcosh
	mathAsin
	mathAsinh
	mathAtan
	mathAtanh
	mathCos
	mathCosh
	mathSin
	mathSinh
	mathTan
	mathTanh
	mathDeg
	mathRad
)

// mathNode applies an element-wise function; the result drops __name__.
type mathNode struct {
	vectorNode
	kind  mathKind
	child node
	arg1  node // round's to_nearest
	out   vector
}

func (n *mathNode) eval(ev *evaluator, t int64) (vector, error) {
	in, err := n.child.eval(ev, t)
	if err != nil {
		return nil, err
	}
	toNearestInverse := 1.0
	if n.arg1 != nil {
		p, err := n.arg1.scalar(ev, t)
		if err != nil {
			return nil, err
		}
		toNearestInverse = 1.0 / p
	}
	n.out = n.out[:0]
	for _, s := range in {
		if s.h != nil {
			continue // floats only (simpleFloatFunc, funcRound)
		}
		f := s.f
		switch n.kind {
		case mathAbs:
			f = math.Abs(f)
		case mathCeil:
			f = math.Ceil(f)
		case mathFloor:
			f = math.Floor(f)
		case mathSqrt:
			f = math.Sqrt(f)
		case mathExp:
			f = math.Exp(f)
		case mathLn:
			f = math.Log(f)
		case mathLog2:
			f = math.Log2(f)
		case mathLog10:
			f = math.Log10(f)
		case mathSgn:
			switch {
			case f < 0:
				f = -1
			case f > 0:
				f = 1
			}
		case mathRound:
			f = math.Floor(f*toNearestInverse+0.5) / toNearestInverse
		case mathAcos:
			f = math.Acos(f)
		case mathAcosh:
			f = math.Acosh(f)
		case mathAsin:
			f = math.Asin(f)
		case mathAsinh:
			f = math.Asinh(f)
		case mathAtan:
			f = math.Atan(f)
		case mathAtanh:
			f = math.Atanh(f)
		case mathCos:
			f = math.Cos(f)
		case mathCosh:
			f = math.Cosh(f)
		case mathSin:
			f = math.Sin(f)
		case mathSinh:
			f = math.Sinh(f)
		case mathTan:
			f = math.Tan(f)
		case mathTanh:
			f = math.Tanh(f)
		case mathDeg:
			f *= 180 / math.Pi
		case mathRad:
			f *= math.Pi / 180
		}
		n.out = append(n.out, sample{lset: s.lset, t: t, f: f, drop: true, ref: s.ref})
	}
	return n.out, nil
}

type dateKind uint8

const (
	dateDaysInMonth dateKind = iota
	dateDayOfMonth
	dateDayOfWeek
	dateDayOfYear
	dateHour
	dateMinute
	dateMonth
	dateYear
)

// dateNode is a date function (dateWrapper): of each element's value as
// unix seconds (the result drops __name__), or without an argument of the
// evaluation time (one element, no labels).
type dateNode struct {
	vectorNode
	kind  dateKind
	child node // nil: vector(time())
	out   vector
}

func (n *dateNode) eval(ev *evaluator, t int64) (vector, error) {
	n.out = n.out[:0]
	if n.child == nil {
		n.out = append(n.out, sample{lset: labels.EmptyLabels(), t: t, f: n.kind.of(time.Unix(t/1000, 0).UTC())})
		return n.out, nil
	}
	in, err := n.child.eval(ev, t)
	if err != nil {
		return nil, err
	}
	for _, s := range in {
		if s.h != nil {
			continue // histograms ignored (dateWrapper)
		}
		n.out = append(n.out, sample{lset: s.lset, t: t, f: n.kind.of(time.Unix(int64(s.f), 0).UTC()), drop: true, ref: s.ref})
	}
	return n.out, nil
}

func (k dateKind) of(t time.Time) float64 {
	switch k {
	case dateDaysInMonth:
		return float64(32 - time.Date(t.Year(), t.Month(), 32, 0, 0, 0, 0, time.UTC).Day())
	case dateDayOfMonth:
		return float64(t.Day())
	case dateDayOfWeek:
		return float64(t.Weekday())
	case dateDayOfYear:
		return float64(t.YearDay())
	case dateHour:
		return float64(t.Hour())
	case dateMinute:
		return float64(t.Minute())
	case dateMonth:
		return float64(t.Month())
	}
	return float64(t.Year())
}

// frameNode is start(), end(), range() or step(): the query's time frame,
// which upstream folds into a number before evaluating (in seconds; step()
// is 0 for an instant query).
type frameNode struct {
	scalarNode
	fn string
}

func (n *frameNode) scalar(ev *evaluator, _ int64) (float64, error) {
	switch n.fn {
	case "start":
		return float64(ev.start) / 1000, nil
	case "end":
		return float64(ev.end) / 1000, nil
	case "range":
		return float64(ev.end-ev.start) / 1000, nil
	}
	if ev.start == ev.end {
		return 0, nil
	}
	return float64(ev.interval) / 1000, nil
}

// minMaxNode is min_of(a, b) and max_of(a, b) over scalars.
type minMaxNode struct {
	scalarNode
	max  bool
	a, b node
}

func (n *minMaxNode) scalar(ev *evaluator, t int64) (float64, error) {
	a, err := n.a.scalar(ev, t)
	if err != nil {
		return 0, err
	}
	b, err := n.b.scalar(ev, t)
	if err != nil {
		return 0, err
	}
	if n.max {
		return math.Max(a, b), nil
	}
	return math.Min(a, b), nil
}

// sortByLabelNode is sort_by_label and sort_by_label_desc: by the given
// labels in natural order, then by the whole label set (funcSortByLabel).
type sortByLabelNode struct {
	vectorNode
	child  node
	labels []string
	desc   bool
	out    vector
}

func (n *sortByLabelNode) eval(ev *evaluator, t int64) (vector, error) {
	in, err := n.child.eval(ev, t)
	if err != nil {
		return nil, err
	}
	n.out = append(n.out[:0], in...)
	slices.SortFunc(n.out, func(a, b sample) int {
		for _, l := range n.labels {
			lv1, lv2 := a.lset.Get(l), b.lset.Get(l)
			if lv1 == lv2 {
				continue
			}
			if natsort.Compare(lv1, lv2) != n.desc {
				return -1
			}
			return +1
		}
		if n.desc {
			return -labels.Compare(a.lset, b.lset)
		}
		return labels.Compare(a.lset, b.lset)
	})
	return n.out, nil
}

// clampNode is clamp, clamp_min (hi nil) and clamp_max (lo nil).
type clampNode struct {
	vectorNode
	child, lo, hi node
	out           vector
}

func (n *clampNode) eval(ev *evaluator, t int64) (vector, error) {
	in, err := n.child.eval(ev, t)
	if err != nil {
		return nil, err
	}
	lo, hi := math.Inf(-1), math.Inf(+1)
	if n.lo != nil {
		if lo, err = n.lo.scalar(ev, t); err != nil {
			return nil, err
		}
	}
	if n.hi != nil {
		if hi, err = n.hi.scalar(ev, t); err != nil {
			return nil, err
		}
	}
	n.out = n.out[:0]
	if hi < lo {
		return n.out, nil
	}
	for _, s := range in {
		if s.h != nil {
			continue // floats only (clamp)
		}
		n.out = append(n.out, sample{lset: s.lset, t: t, f: math.Max(lo, math.Min(hi, s.f)), drop: true, ref: s.ref})
	}
	return n.out, nil
}

// vectorFnNode is vector(s).
type vectorFnNode struct {
	vectorNode
	arg node
	out vector
}

func (n *vectorFnNode) eval(ev *evaluator, t int64) (vector, error) {
	v, err := n.arg.scalar(ev, t)
	if err != nil {
		return nil, err
	}
	n.out = append(n.out[:0], sample{lset: labels.EmptyLabels(), t: t, f: v})
	return n.out, nil
}

// absentNode is absent(v): one element labelled from v's equality
// matchers when v is empty, nothing otherwise.
type absentNode struct {
	vectorNode
	child node
	lset  labels.Labels
	out   vector
}

func (n *absentNode) eval(ev *evaluator, t int64) (vector, error) {
	in, err := n.child.eval(ev, t)
	if err != nil {
		return nil, err
	}
	n.out = n.out[:0]
	if len(in) == 0 {
		n.out = append(n.out, sample{lset: n.lset, t: t, f: 1})
	}
	return n.out, nil
}

// sortNode is sort/sort_desc with Prometheus's comparator and sort.Sort,
// so equal values end up in the same order.
type sortNode struct {
	vectorNode
	child node
	desc  bool
	out   vector
}

func (n *sortNode) eval(ev *evaluator, t int64) (vector, error) {
	in, err := n.child.eval(ev, t)
	if err != nil {
		return nil, err
	}
	n.out = n.out[:0]
	for _, s := range in {
		if s.h == nil { // histograms are dropped (filterFloats)
			n.out = append(n.out, s)
		}
	}
	if n.desc {
		sort.Sort(sort.Reverse(sampleHeap(n.out)))
	} else {
		sort.Sort(sort.Reverse(reverseSampleHeap(n.out)))
	}
	return n.out, nil
}

// timestampNode is timestamp(v): a selector argument yields each sample's
// own time, anything else the evaluation time.
type timestampNode struct {
	vectorNode
	child      node
	sampleTime bool
	out        vector
}

func (n *timestampNode) eval(ev *evaluator, t int64) (vector, error) {
	in, err := n.child.eval(ev, t)
	if err != nil {
		return nil, err
	}
	n.out = n.out[:0]
	for _, s := range in {
		ts := t
		if n.sampleTime {
			ts = s.t
		}
		n.out = append(n.out, sample{lset: s.lset, t: t, f: float64(ts) / 1000, drop: true, ref: s.ref})
	}
	return n.out, nil
}

// labelNode is label_replace (join false) and label_join.
type labelNode struct {
	vectorNode
	join           bool
	child          node
	dst, repl, src string
	re             *regexp.Regexp
	sep            string
	srcs           []string

	lb   *labels.Builder
	vals []string
	dup  map[uint64]int // output hash → index, see twins
	out  vector
}

// regexCheckEvery is how many label_replace matches run between two
// context checks.
const regexCheckEvery = 16

func (n *labelNode) eval(ev *evaluator, t int64) (vector, error) {
	in, err := n.child.eval(ev, t)
	if err != nil {
		return nil, err
	}
	if n.lb == nil {
		n.lb = labels.NewBuilder(labels.EmptyLabels())
		n.dup = make(map[uint64]int)
	}
	n.out = n.out[:0]
	for i, s := range in {
		// A regular expression costs up to its program's size
		// (MaxRegexSize) per byte of the value, far more than the one
		// unit each series was charged when selected: check the context
		// every regexCheckEvery series, not every ctxCheckEvery units.
		if !n.join && i%regexCheckEvery == regexCheckEvery-1 {
			if err := ctxErr(ev.ctx); err != nil {
				return nil, err
			}
		}
		if n.join {
			n.vals = n.vals[:0]
			size := int64(len(n.sep)) * int64(max(len(n.srcs)-1, 0))
			for _, src := range n.srcs {
				v := s.lset.Get(src)
				size += int64(len(v))
				n.vals = append(n.vals, v)
			}
			if err := ev.chargeLabelSet(s.lset, n.dst, size); err != nil {
				return nil, err
			}
			n.lb.Reset(s.lset)
			n.lb.Set(n.dst, strings.Join(n.vals, n.sep))
			s.lset = n.lb.Labels()
			s.drop = s.drop && n.dst != model.MetricNameLabel
		} else {
			srcVal := s.lset.Get(n.src)
			if idx := n.re.FindStringSubmatchIndex(srcVal); idx != nil {
				// Charged at its exact size before anything is built.
				size := expandedLen(n.re, n.repl, idx)
				if err := ev.chargeLabelSet(s.lset, n.dst, int64(size)); err != nil {
					return nil, err
				}
				res := n.re.ExpandString(make([]byte, 0, size), n.repl, srcVal, idx)
				n.lb.Reset(s.lset)
				n.lb.Set(n.dst, string(res))
				s.lset = n.lb.Labels()
				s.drop = s.drop && n.dst != model.MetricNameLabel
			}
		}
		if s.ref != 0 && !labels.Equal(s.lset, in[i].lset) {
			// A rewritten element is no longer its series': a range
			// query merges the series that different inputs were
			// rewritten into alike at different steps, as Prometheus
			// does (twins rewritten go back to order, sample.ref).
			s.ref = 0
		}
		n.out = append(n.out, s)
	}
	// mergeSeriesWithSameLabelset: two elements with one labelset collide,
	// unless they were hidden twins before the rewrite (see twins; n.out[i]
	// comes from in[i]).
	clear(n.dup)
	for i, s := range n.out {
		h := s.lset.Hash()
		if j, ok := n.dup[h]; ok && !twins(in[i].lset, in[j].lset) {
			return nil, errors.New(errSameLabelset)
		}
		n.dup[h] = i
	}
	return n.out, nil
}

// expandedLen is len(re.ExpandString(nil, template, src, match)) without
// building it: the template walk of regexp's expand, summing lengths. It
// lets label_replace charge a replacement to the label budget before
// allocating it.
func expandedLen(re *regexp.Regexp, template string, match []int) int {
	n := 0
	group := func(i int) int {
		if 2*i+1 < len(match) && match[2*i] >= 0 {
			return match[2*i+1] - match[2*i]
		}
		return -1
	}
	for template != "" {
		before, after, ok := strings.Cut(template, "$")
		if !ok {
			break
		}
		n += len(before)
		template = after
		if template != "" && template[0] == '$' {
			n++ // $$ is $
			template = template[1:]
			continue
		}
		name, num, rest, ok := extractRef(template)
		if !ok {
			n++ // malformed: the $ is kept as text
			continue
		}
		template = rest
		if num >= 0 {
			n += max(group(num), 0)
			continue
		}
		for i, sub := range re.SubexpNames() {
			if sub == name {
				if l := group(i); l >= 0 {
					n += l
					break
				}
			}
		}
	}
	return n + len(template)
}

// extractRef is regexp's extract: a $name, ${name} or $number reference at
// the start of str (after the $).
func extractRef(str string) (name string, num int, rest string, ok bool) {
	if str == "" {
		return "", 0, "", false
	}
	brace := false
	if str[0] == '{' {
		brace = true
		str = str[1:]
	}
	i := 0
	for i < len(str) {
		r, size := utf8.DecodeRuneInString(str[i:])
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' {
			break
		}
		i += size
	}
	if i == 0 {
		return "", 0, "", false
	}
	name = str[:i]
	if brace {
		if i >= len(str) || str[i] != '}' {
			return "", 0, "", false
		}
		i++
	}
	num = 0
	for j := 0; j < len(name); j++ {
		if name[j] < '0' || '9' < name[j] || num >= 1e8 {
			num = -1
			break
		}
		num = num*10 + int(name[j]) - '0'
	}
	if name[0] == '0' && len(name) > 1 {
		num = -1
	}
	return name, num, str[i:], true
}

type bucket struct {
	upper, count float64
}

// hqNode is histogram_quantile over classic buckets (promql-subset.md
// §4.5) and native histograms (§4.5a). Buckets are grouped by all labels
// except le (__name__ included); group labels are cached by the group
// hash, and bucket slices are reused, so a steady state allocates
// nothing.
type hqNode struct {
	vectorNode
	q, child node
	// fraction is set for histogram_fraction(lo, hi, v), quantiles for
	// histogram_quantiles(v, "label", q…) (qs, qlabel).
	fraction  bool
	lo, hi    node
	quantiles bool
	qs        []node
	qlabel    string
	qvals     []float64
	qlsets    map[hqOut]labels.Labels
	// rangeMode is set (per query) when its evaluator runs more than one
	// step: Prometheus's range evaluation then rejects two output
	// elements with the same labels in one step, which a repeated q or a
	// quantile label that overwrites a grouping label produces.
	rangeMode bool
	dups      map[uint64]struct{}

	buf    []byte
	groups map[uint64]int
	grp    []hqGroup
	lcache map[uint64]labels.Labels
	lb     *labels.Builder
	out    vector
	keys   posCache[hqKey]
	// natives are the input's native histograms, answered one by one
	// (histogramQuantile, histogramFraction), before the classic groups.
	natives vector
}

// hqKey is what hqNode derives from an input element's labels.
type hqKey struct {
	h     uint64 // hash of the labels without le
	upper float64
	ok    bool // le parses to a non-NaN float
}

type hqGroup struct {
	lset    labels.Labels
	buckets []bucket
}

// hqOut keys histogram_quantiles' output labels: the group and q.
type hqOut struct {
	h uint64
	q uint64
}

func (n *hqNode) eval(ev *evaluator, t int64) (vector, error) {
	var q, lo, hi float64
	var err error
	switch {
	case n.fraction:
		if lo, err = n.lo.scalar(ev, t); err != nil {
			return nil, err
		}
		if hi, err = n.hi.scalar(ev, t); err != nil {
			return nil, err
		}
	case n.quantiles:
		// Upstream evaluates the vector argument first.
	default:
		if q, err = n.q.scalar(ev, t); err != nil {
			return nil, err
		}
	}
	in, err := n.child.eval(ev, t)
	if err != nil {
		return nil, err
	}
	if n.groups == nil {
		n.groups = make(map[uint64]int)
		n.lcache = make(map[uint64]labels.Labels)
	}
	clear(n.groups)
	if len(n.lcache) > 2*len(n.out)+labelCacheSlack {
		clear(n.lcache)
	}
	ng := 0
	n.natives = n.natives[:0]
	for i, s := range in {
		if s.h != nil {
			n.natives = append(n.natives, s) // native histograms: below
			continue
		}
		k, hit := n.keys.get(i, s.lset)
		if !hit {
			upper, err := strconv.ParseFloat(s.lset.Get(labels.BucketLabel), 64)
			k = hqKey{upper: upper, ok: err == nil && !math.IsNaN(upper)}
			if k.ok {
				n.buf = s.lset.BytesWithoutLabels(n.buf, labels.BucketLabel)
				k.h = xxhash.Sum64(n.buf)
			}
			n.keys.put(i, s.lset, k)
		}
		if !k.ok {
			continue // Prometheus skips it with a warning.
		}
		h, upper := k.h, k.upper
		gi, ok := n.groups[h]
		if !ok {
			gi = ng
			ng++
			n.groups[h] = gi
			if gi == len(n.grp) {
				n.grp = append(n.grp, hqGroup{})
			}
			g := &n.grp[gi]
			g.buckets = g.buckets[:0]
			g.lset = n.groupLabels(h, s.lset)
		}
		n.grp[gi].buckets = append(n.grp[gi].buckets, bucket{upper: upper, count: s.f})
	}
	if len(n.natives) > 0 && ng > 0 {
		// A native histogram and classic buckets of the same series
		// (its labels, the buckets' without le): neither is answered
		// (resetHistograms, with a warning).
		for j := range n.natives {
			nat := &n.natives[j]
			n.buf = nat.lset.Bytes(n.buf)
			if gi, ok := n.groups[xxhash.Sum64(n.buf)]; ok && len(n.grp[gi].buckets) > 0 {
				nat.h = nil
				n.grp[gi].buckets = n.grp[gi].buckets[:0]
			}
		}
	}
	n.out = n.out[:0]
	switch {
	case n.fraction:
		for _, nat := range n.natives {
			if nat.h != nil {
				n.out = append(n.out, sample{lset: nat.lset, t: t, f: histogramFraction(lo, hi, nat.h), drop: true, ref: nat.ref})
			}
		}
		for gi := range ng {
			g := &n.grp[gi]
			if len(g.buckets) == 0 {
				continue
			}
			n.out = append(n.out, sample{lset: g.lset, t: t, f: bucketFraction(lo, hi, g.buckets), drop: true})
		}
	case n.quantiles:
		n.qvals = n.qvals[:0]
		for _, qn := range n.qs {
			v, err := qn.scalar(ev, t)
			if err != nil {
				return nil, err
			}
			n.qvals = append(n.qvals, v)
		}
		if n.qlsets == nil || len(n.qlsets) > 2*ng*len(n.qs)+labelCacheSlack {
			n.qlsets = make(map[hqOut]labels.Labels)
		}
		// Upstream's order: each quantile over every group, the buckets
		// sorted and coalesced in place by the first (bucketQuantile
		// leaves the tail of a coalesced slice as it was, as upstream's
		// coalesceBuckets does).
		for _, qv := range n.qvals {
			for _, nat := range n.natives {
				if nat.h == nil {
					continue
				}
				l, err := n.quantileLabels(ev, nat.lset, qv)
				if err != nil {
					return nil, err
				}
				n.out = append(n.out, sample{lset: l, t: t, f: histogramQuantile(qv, nat.h), drop: true})
			}
			for gi := range ng {
				g := &n.grp[gi]
				if len(g.buckets) == 0 {
					continue
				}
				l, err := n.quantileLabels(ev, g.lset, qv)
				if err != nil {
					return nil, err
				}
				n.out = append(n.out, sample{lset: l, t: t, f: bucketQuantile(qv, g.buckets), drop: true})
			}
		}
		if len(n.out) > 1 {
			if n.dups == nil {
				n.dups = make(map[uint64]struct{}, len(n.out))
			}
			clear(n.dups)
			for _, e := range n.out {
				h := e.lset.Hash()
				if _, dup := n.dups[h]; dup {
					if n.rangeMode {
						return nil, errors.New(errSameLabelset)
					}
					// A single step keeps them; they clash if they reach
					// the result (EvalRange, Plan.Eval's final check).
					ev.dupLabels = true
					break
				}
				n.dups[h] = struct{}{}
			}
		}
	default:
		for _, nat := range n.natives {
			if nat.h != nil {
				n.out = append(n.out, sample{lset: nat.lset, t: t, f: histogramQuantile(q, nat.h), drop: true, ref: nat.ref})
			}
		}
		for gi := range ng {
			g := &n.grp[gi]
			if len(g.buckets) == 0 {
				continue
			}
			n.out = append(n.out, sample{lset: g.lset, t: t, f: bucketQuantile(q, g.buckets), drop: true})
		}
	}
	return n.out, nil
}

// quantileLabels is a group's labels with the quantile label set to q in
// OpenMetrics form (getOrCreateLblsWithQuantile), cached; a new label set
// is charged to the label budget.
func (n *hqNode) quantileLabels(ev *evaluator, lset labels.Labels, q float64) (labels.Labels, error) {
	k := hqOut{h: lset.Hash(), q: math.Float64bits(q)}
	if l, ok := n.qlsets[k]; ok {
		return l, nil
	}
	v := labels.FormatOpenMetricsFloat(q)
	if err := ev.chargeLabelSet(lset, n.qlabel, int64(len(v))); err != nil {
		return labels.EmptyLabels(), err
	}
	if n.lb == nil {
		n.lb = labels.NewBuilder(labels.EmptyLabels())
	}
	n.lb.Reset(lset)
	n.lb.Set(n.qlabel, v)
	l := n.lb.Labels()
	n.qlsets[k] = l
	return l, nil
}

// sortCoalesce sorts buckets by upper bound in place and merges equal
// bounds, adding their counts. It reports false when the last bound is
// not +Inf (the result is then NaN, as upstream). buckets is not empty.
func sortCoalesce(buckets []bucket) ([]bucket, bool) {
	slices.SortFunc(buckets, func(a, b bucket) int {
		switch {
		case a.upper < b.upper:
			return -1
		case a.upper > b.upper:
			return +1
		}
		return 0
	})
	if !math.IsInf(buckets[len(buckets)-1].upper, +1) {
		return nil, false
	}
	last, k := buckets[0], 0
	for _, b := range buckets[1:] {
		if b.upper == last.upper {
			last.count += b.count
		} else {
			buckets[k] = last
			last = b
			k++
		}
	}
	buckets[k] = last
	return buckets[:k+1], true
}

// bucketFraction is Prometheus's BucketFraction: the estimated share of
// observations in [lower, upper], interpolating linearly in buckets. It
// sorts and coalesces buckets in place.
func bucketFraction(lower, upper float64, buckets []bucket) float64 {
	if len(buckets) == 0 {
		return math.NaN()
	}
	buckets, ok := sortCoalesce(buckets)
	if !ok {
		return math.NaN()
	}
	count := buckets[len(buckets)-1].count
	if count == 0 || math.IsNaN(lower) || math.IsNaN(upper) {
		return math.NaN()
	}
	if lower >= upper {
		return 0
	}
	var (
		rank, lowerRank, upperRank float64
		lowerSet, upperSet         bool
	)
	lowerBound := 0.0
	if buckets[0].upper <= 0 {
		lowerBound = math.Inf(-1)
	}
	for i, b := range buckets {
		if i > 0 {
			lowerBound = buckets[i-1].upper
		}
		upperBound := b.upper
		interpolateLinearly := func(v float64) float64 {
			if lowerBound == math.Inf(-1) {
				return b.count
			}
			return rank + (b.count-rank)*(v-lowerBound)/(upperBound-lowerBound)
		}
		if !lowerSet && lowerBound >= lower {
			lowerRank = rank
			lowerSet = true
		}
		if !upperSet && lowerBound >= upper {
			upperRank = rank
			upperSet = true
		}
		if lowerSet && upperSet {
			break
		}
		if !lowerSet && lowerBound < lower && upperBound > lower {
			lowerRank = interpolateLinearly(lower)
			lowerSet = true
		}
		if !upperSet && lowerBound < upper && upperBound > upper {
			upperRank = interpolateLinearly(upper)
			upperSet = true
		}
		if lowerSet && upperSet {
			break
		}
		rank = b.count
	}
	if !lowerSet || lowerRank > count {
		lowerRank = count
	}
	if !upperSet || upperRank > count {
		upperRank = count
	}
	return (upperRank - lowerRank) / count
}

func (n *hqNode) groupLabels(h uint64, l labels.Labels) labels.Labels {
	if ls, ok := n.lcache[h]; ok {
		return ls
	}
	if n.lb == nil {
		n.lb = labels.NewBuilder(l)
	}
	n.lb.Reset(l)
	n.lb.Del(labels.BucketLabel)
	ls := n.lb.Labels()
	n.lcache[h] = ls
	return ls
}

// smallDeltaTolerance is the relative difference below which two bucket
// counts are treated as equal (Prometheus's smallDeltaTolerance).
const smallDeltaTolerance = 1e-12

// bucketQuantile is Prometheus's BucketQuantile. It sorts and rewrites
// buckets in place.
func bucketQuantile(q float64, buckets []bucket) float64 {
	switch {
	case math.IsNaN(q):
		return math.NaN()
	case q < 0:
		return math.Inf(-1)
	case q > 1:
		return math.Inf(+1)
	case len(buckets) == 0:
		return math.NaN()
	}
	buckets, ok := sortCoalesce(buckets)
	if !ok {
		return math.NaN()
	}
	// Monotonicity, ignoring tiny relative differences.
	prev := buckets[0].count
	for i := 1; i < len(buckets); i++ {
		cur := buckets[i].count
		switch {
		case cur == prev:
		case almostEqual(prev, cur, smallDeltaTolerance):
			buckets[i].count = prev
		case cur < prev:
			buckets[i].count = prev
		default:
			prev = cur
		}
	}
	if len(buckets) < 2 {
		return math.NaN()
	}
	observations := buckets[len(buckets)-1].count
	if observations == 0 {
		return math.NaN()
	}
	rank := q * observations
	b := sort.Search(len(buckets)-1, func(i int) bool { return buckets[i].count >= rank })
	switch {
	case b == len(buckets)-1:
		return buckets[len(buckets)-2].upper
	case b == 0 && buckets[0].upper <= 0:
		return buckets[0].upper
	}
	var start float64
	end, count := buckets[b].upper, buckets[b].count
	if b > 0 {
		start = buckets[b-1].upper
		count -= buckets[b-1].count
		rank -= buckets[b-1].count
	}
	return start + (end-start)*(rank/count)
}

// almostEqual is util/almost.Equal, without the StaleNaN special case
// (bucket counts are never stale markers).
func almostEqual(a, b, epsilon float64) bool {
	const minNormal = 2.2250738585072014e-308 // 1 / 2**(1022)
	if a == b {
		return true
	}
	absSum := math.Abs(a) + math.Abs(b)
	diff := math.Abs(a - b)
	if a == 0 || b == 0 || absSum < minNormal {
		return diff < epsilon*minNormal
	}
	return diff/math.Min(absSum, math.MaxFloat64) < epsilon
}
