package compat

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/almost"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
)

var (
	flagSeed    = flag.Int64("compat.seed", 1, "seed of the differential run")
	flagQueries = flag.Int("compat.queries", 10_000, "queries the differential run must compare (2,000 under -short)")
	flagVerbose = flag.Bool("compat.v", false, "log every declined query")
)

// epsilon is the relative tolerance of value comparison (promql-subset.md §1).
const epsilon = 1e-6

// Query sources, for the report.
const (
	srcSmith   = "promqlsmith"
	srcTrigger = "trigger"
	srcCorpus  = "corpus"
)

// disagreement is one query on which the engines differ.
type disagreement struct {
	source   string
	query    string
	t        int64
	lookback time.Duration
	prom     outcome
	ours     outcome
	data     string
	// rng describes a range query (t is its start); empty for an instant
	// query.
	rng string
}

func (d disagreement) String() string {
	at := fmt.Sprintf("at t=%d (%s)", d.t, time.UnixMilli(d.t).UTC().Format("15:04:05.000"))
	if d.rng != "" {
		at = "range query " + d.rng
	}
	return fmt.Sprintf("[%s] %s\n    %s lookback=%s\n    prometheus: %s\n    ours:       %s\n    data:\n%s",
		d.source, d.query, at, d.lookback, d.prom, d.ours, d.data)
}

// stats accumulates the results of a run.
type stats struct {
	queries       int            // distinct queries compared (not declined)
	evaluations   int            // (query, time) pairs compared
	ranges        int            // range queries compared (each also counted in evaluations)
	agreedValues  int            // evaluations where both answered equal values
	agreedErrors  int            // evaluations where both failed
	agreedEmpty   int            // of agreedValues: both returned an empty vector
	agreedScalar  int            // of agreedValues: both returned a scalar
	agreedHist    int            // of agreedValues: the answer holds native histograms
	declined      map[string]int // queries declined by our engine, by reason
	declinedTotal int
	bySource      map[string]int // compared queries by source
	// byConstruct counts compared queries by the constructs of issue #16
	// they use, and nonEmpty those of them with a non-empty agreed answer.
	byConstruct, nonEmpty map[string]int
	disagreements         []disagreement
	maxRelDiff            float64
	maxRelQuery           string
}

func newStats() *stats {
	return &stats{declined: map[string]int{}, bySource: map[string]int{}, byConstruct: map[string]int{}, nonEmpty: map[string]int{}}
}

func (s *stats) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "compared %d queries (%s) in %d evaluations (%d of them range queries): %d agreed on values (%d non-empty vectors, %d of them with native histograms, %d scalars, %d empty), %d agreed on an error, %d disagreements; largest relative difference %.3g",
		s.queries, formatCounts(s.bySource), s.evaluations, s.ranges, s.agreedValues, s.agreedValues-s.agreedEmpty-s.agreedScalar, s.agreedHist, s.agreedScalar, s.agreedEmpty,
		s.agreedErrors, len(s.disagreements), s.maxRelDiff)
	if s.maxRelQuery != "" {
		fmt.Fprintf(&b, " (%s)", s.maxRelQuery)
	}
	fmt.Fprintf(&b, "\nby construct (compared / with a non-empty agreed answer):")
	for _, k := range sortedKeysInt(s.byConstruct) {
		fmt.Fprintf(&b, " %s %d/%d;", k, s.byConstruct[k], s.nonEmpty[k])
	}
	fmt.Fprintf(&b, "\ndeclined (skipped) %d queries: %s", s.declinedTotal, formatCounts(s.declined))
	return b.String()
}

func sortedKeysInt(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// constructs lists the constructs of issue #16 that q uses.
func constructs(q string) []string {
	expr, err := parser.NewParser(parser.Options{EnableExperimentalFunctions: true}).ParseExpr(q)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	parser.Inspect(expr, func(n parser.Node, path []parser.Node) error {
		switch n := n.(type) {
		case *parser.SubqueryExpr:
			seen["subquery"] = true
			for _, p := range path {
				if _, ok := p.(*parser.SubqueryExpr); ok {
					seen["nested subquery"] = true
				}
			}
			if n.Timestamp != nil || n.StartOrEnd != 0 {
				seen["@"] = true
			}
		case *parser.VectorSelector:
			if n.Timestamp != nil {
				seen["@ <timestamp>"] = true
			}
			if slices.Contains(nativeNames, n.Name) {
				seen["native histogram"] = true
			}
			if n.StartOrEnd != 0 {
				seen["@ start()/end()"] = true
			}
		case *parser.AggregateExpr:
			switch n.Op {
			case parser.COUNT_VALUES, parser.LIMITK, parser.LIMIT_RATIO:
				seen[n.Op.String()] = true
			}
		case *parser.Call:
			if strings.HasPrefix(n.Func.Name, "histogram_") {
				seen[n.Func.Name] = true
			}
		}
		return nil
	})
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	return out
}

func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// declineReason says whether err means "our engine does not implement
// this" (skip) rather than "the query is wrong" (compare).
func declineReason(err error) (string, bool) {
	var ue *query.UnsupportedError
	if errors.As(err, &ue) {
		return "unsupported " + ue.Construct, true
	}
	if errors.Is(err, query.ErrUnsupported) {
		return "unsupported", true
	}
	msg := err.Error()
	for _, marker := range []string{"unknown function with name ", "is not enabled"} {
		if i := strings.Index(msg, marker); i >= 0 {
			if marker == "is not enabled" {
				return "function not enabled " + lastQuoted(msg[:i]), true
			}
			return "function " + firstQuoted(msg[i+len(marker):]), true
		}
	}
	return "", false
}

func firstQuoted(s string) string {
	if i := strings.IndexByte(s, '"'); i >= 0 {
		if j := strings.IndexByte(s[i+1:], '"'); j >= 0 {
			return s[i+1 : i+1+j]
		}
	}
	return s
}

func lastQuoted(s string) string {
	j := strings.LastIndexByte(s, '"')
	if j <= 0 {
		return s
	}
	i := strings.LastIndexByte(s[:j], '"')
	return s[i+1 : j]
}

// sharedErrorPhrases are error texts both engines must use.
var sharedErrorPhrases = []string{
	"vector cannot contain metrics with the same labelset",
	"many-to-many matching not allowed",
	"many-to-one matching must be explicit",
}

// compare reports whether two outcomes agree, and the largest relative
// difference between agreeing values.
func compare(prom, ours outcome) (bool, float64) {
	if prom.err != nil || ours.err != nil {
		if prom.err == nil || ours.err == nil {
			return false, 0
		}
		// Our messages copy Prometheus's for the matching errors users
		// look up (promql-subset.md §6.1); other messages may differ.
		for _, phrase := range sharedErrorPhrases {
			if strings.Contains(prom.err.Error(), phrase) && !strings.Contains(ours.err.Error(), phrase) {
				return false, 0
			}
		}
		return true, 0
	}
	if prom.scalar != ours.scalar || ours.dups != prom.dups {
		return false, 0
	}
	if prom.scalar {
		return almost.Equal(prom.value, ours.value, epsilon), relDiff(prom.value, ours.value)
	}
	if len(prom.vector) != len(ours.vector) || len(prom.hists) != len(ours.hists) {
		return false, 0
	}
	worst := 0.0
	for k, pv := range prom.vector {
		ov, ok := ours.vector[k]
		if !ok || !almost.Equal(pv, ov, epsilon) {
			return false, 0
		}
		worst = max(worst, relDiff(pv, ov))
	}
	for k, ph := range prom.hists {
		oh, ok := ours.hists[k]
		if !ok {
			return false, 0
		}
		same, rd := sameHistogram(ph, oh)
		if !same {
			return false, 0
		}
		worst = max(worst, rd)
	}
	return true, worst
}

// sameHistogram compares two native histograms as values: the same
// schema, zero threshold and custom bounds, and counts, sum and bucket
// populations equal within epsilon, whatever spans hold them (a bucket
// absent on one side is 0; a count that cancelled to within 1e-9 of the
// histogram's count of 0 is 0). Counter-reset hints are not compared: the
// HTTP API does not show them, and our store reports the hints
// Prometheus's TSDB would read back (its chunk starts), while this
// oracle's list series report what was appended.
func sameHistogram(a, b *histogram.FloatHistogram) (bool, float64) {
	if a.Schema != b.Schema || a.ZeroThreshold != b.ZeroThreshold ||
		a.UsesCustomBuckets() && !histogram.CustomBucketBoundsMatch(a.CustomValues, b.CustomValues) {
		return false, 0
	}
	worst := 0.0
	eq := func(x, y, scale float64) bool {
		if almost.Equal(x, y, epsilon) {
			worst = max(worst, relDiff(x, y))
			return true
		}
		return math.Abs(x-y) <= 1e-9*max(1, math.Abs(scale))
	}
	if !eq(a.Count, b.Count, a.Count) || !eq(a.Sum, b.Sum, a.Sum) || !eq(a.ZeroCount, b.ZeroCount, a.Count) {
		return false, 0
	}
	buckets := func(h *histogram.FloatHistogram) map[[2]int32]float64 {
		m := map[[2]int32]float64{}
		for side, it := range []histogram.BucketIterator[float64]{h.PositiveBucketIterator(), h.NegativeBucketIterator()} {
			for it.Next() {
				bk := it.At()
				m[[2]int32{int32(side), bk.Index}] += bk.Count
			}
		}
		return m
	}
	ma, mb := buckets(a), buckets(b)
	for k, x := range ma {
		if !eq(x, mb[k], a.Count) {
			return false, 0
		}
	}
	for k, y := range mb {
		if !eq(ma[k], y, a.Count) {
			return false, 0
		}
	}
	return true, worst
}

func sortedHistKeys(m map[string]*histogram.FloatHistogram) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func relDiff(a, b float64) float64 {
	if a == b || math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return 0
	}
	return math.Abs(a-b) / max(math.Abs(a), math.Abs(b))
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// diffCase is one dataset loaded into both engines.
type diffCase struct {
	seed  int64
	rnd   *rand.Rand
	data  *dataset
	ours  *ours
	prom  *promql.Engine
	store storage.Queryable
	times []int64
}

func newDiffCase(seed int64, ng *promql.Engine) (*diffCase, error) {
	rnd := rand.New(rand.NewSource(seed))
	bounds := [][]float64{
		{0.1, 0.5, 1, 2.5, 5, 10},
		{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		{1},
		{-1, 0, 1},
	}[rnd.Intn(4)]
	d := genDataset(rnd, genOpts{
		span:    time.Duration(8+rnd.Intn(8)) * time.Minute,
		pods:    3 + rnd.Intn(4),
		buckets: bounds,
	})
	o, err := newOurs(d)
	if err != nil {
		return nil, err
	}
	times := d.sampleTimes()
	slices.Sort(times)
	return &diffCase{seed: seed, rnd: rnd, data: d, ours: o, prom: ng, store: newPromStorage(d).queryable(), times: times}, nil
}

// evalTimes returns evaluation times for one query: at, just before and
// just after sample timestamps, and at the edges where a lookback or range
// window lets a sample go.
func (c *diffCase) evalTimes(n int, lookback time.Duration) []int64 {
	out := make([]int64, 0, n)
	for range n {
		t := c.times[c.rnd.Intn(len(c.times))]
		switch r := c.rnd.Intn(10); {
		case r < 3:
		case r < 5:
			t--
		case r < 7:
			t++
		case r < 9:
			edge := []int64{lookback.Milliseconds(), 15_000, 30_000, 60_000, 120_000, 300_000}[c.rnd.Intn(6)]
			t += edge + int64(c.rnd.Intn(3)-1)
		default:
			if c.rnd.Intn(2) == 0 {
				t = c.data.end + int64(c.rnd.Intn(400_000)) // after the data ends
			} else {
				t = c.data.start - int64(c.rnd.Intn(60_000)) // before it starts
			}
		}
		out = append(out, t)
	}
	return out
}

func (c *diffCase) lookback() time.Duration {
	switch r := c.rnd.Intn(20); {
	case r < 14:
		return 5 * time.Minute
	case r < 17:
		return time.Minute
	case r < 18:
		return 30 * time.Second
	case r < 19:
		return 10 * time.Second
	default:
		return 2 * time.Minute
	}
}

// run compares one query at a few times, with one compiled plan of ours
// evaluated at all of them (in no particular order, as KEDA and the HTTP
// API do).
func (c *diffCase) run(ctx context.Context, st *stats, source, q string) {
	lookback := c.lookback()
	times := c.evalTimes(2, lookback)
	plan, declined, compileErr := c.ours.compile(q, lookback)
	if declined != "" {
		// A query Prometheus rejects as well is an agreement; one it
		// accepts is skipped and counted.
		if _, err := c.prom.NewInstantQuery(ctx, c.store, nil, q, time.UnixMilli(times[0])); err == nil {
			st.declined[declined]++
			st.declinedTotal++
			if *flagVerbose {
				fmt.Printf("declined (%s): %s\n", declined, q)
			}
			return
		}
		compileErr = errors.New(declined)
	}
	nonEmpty := false
	orderDependent, subqOrder := limitkOrder(q)
	if subqOrder {
		st.declined["nondeterministic: limitk over map-ordered input"]++
		st.declinedTotal++
		return
	}
	noisyInRange, noisyInSubquery := orderSensitive(q)
	if noisyInSubquery {
		st.declined["nondeterministic: order-sensitive rounding in a subquery"]++
		st.declinedTotal++
		return
	}
	orderDependent = orderDependent || noisyInRange
	for _, t := range times {
		prom := evalProm(ctx, c.prom, c.store, q, t, lookback)
		our := outcome{err: compileErr}
		if compileErr == nil {
			our = c.ours.eval(ctx, plan, t)
		}
		if c.record(st, disagreement{source: source, query: q, t: t, lookback: lookback, prom: prom, ours: our}) {
			nonEmpty = true
		}
	}
	// One in three queries also runs as a range query (the HTTP API's
	// query_range): @ start()/end(), step-invariant parts and subqueries
	// evaluated over a whole range.
	if c.rnd.Intn(3) == 0 && !orderDependent && !orBelowRoot(q) {
		step := []int64{7_000, 15_000, 30_000, 60_000, 61_000}[c.rnd.Intn(5)]
		start := times[0] - int64(c.rnd.Intn(3))*step/2
		end := start + int64(c.rnd.Intn(8))*step + int64(c.rnd.Intn(2))*step/3
		prom := evalPromRange(ctx, c.prom, c.store, q, start, end, step, lookback)
		our := outcome{err: compileErr}
		if compileErr == nil {
			our = c.ours.evalRange(ctx, plan, start, end, step)
		}
		st.ranges++
		_ = c.record(st, disagreement{
			source: source, query: q, t: start, lookback: lookback, prom: prom, ours: our,
			rng: fmt.Sprintf("from %d to %d step %dms", start, end, step),
		})
	}
	st.queries++
	st.bySource[source]++
	for _, k := range constructs(q) {
		st.byConstruct[k]++
		if nonEmpty {
			st.nonEmpty[k]++
		}
	}
}

// limitkOrder reports whether q has limitk, which keeps the first k
// elements in its input's order, and whether that order is Prometheus's
// map order: limitk over or inside a subquery, or over count_values or a
// classic-bucket histogram function, whose results Prometheus assembles
// from maps, and (any limitk) in a range
// query, where every intermediate matrix is. Those answers are not
// reproducible, not even by Prometheus itself.
func limitkOrder(q string) (has, unordered bool) {
	expr, err := parser.NewParser(parser.Options{EnableExperimentalFunctions: true}).ParseExpr(q)
	if err != nil {
		return false, false
	}
	parser.Inspect(expr, func(n parser.Node, path []parser.Node) error {
		a, ok := n.(*parser.AggregateExpr)
		if !ok || a.Op != parser.LIMITK {
			return nil
		}
		has = true
		for _, p := range path {
			if _, ok := p.(*parser.SubqueryExpr); ok {
				unordered = true
			}
		}
		parser.Inspect(a.Expr, func(m parser.Node, _ []parser.Node) error {
			switch m := m.(type) {
			case *parser.SubqueryExpr:
				unordered = true
			case *parser.AggregateExpr:
				unordered = unordered || m.Op == parser.COUNT_VALUES
			case *parser.Call:
				// Over classic buckets Prometheus emits these functions'
				// series in the order of a map (signatureToMetricWithBuckets).
				switch m.Func.Name {
				case "histogram_quantile", "histogram_fraction", "histogram_quantiles":
					unordered = true
				}
			}
			return nil
		})
		return nil
	})
	return has, unordered
}

// orderSensitive reports whether q's answer depends on the order of an
// aggregation's input beyond the comparison's tolerance: stddev and
// stdvar (Welford's running mean; a variance that cancels to about 0
// comes out as 0 or 1e-16 depending on the order), and count_values over
// any aggregation (its labels spell the values to the last bit). In a
// range query (and in a subquery, which Prometheus evaluates as one)
// Prometheus feeds aggregations in map order, so these answers are not
// reproducible, not even by Prometheus. inRange: anywhere in q;
// inSubquery: inside a subquery, which matters for instant queries too.
func orderSensitive(q string) (inRange, inSubquery bool) {
	expr, err := parser.NewParser(parser.Options{EnableExperimentalFunctions: true}).ParseExpr(q)
	if err != nil {
		return false, false
	}
	parser.Inspect(expr, func(n parser.Node, path []parser.Node) error {
		a, ok := n.(*parser.AggregateExpr)
		if !ok {
			return nil
		}
		sensitive := a.Op == parser.STDDEV || a.Op == parser.STDVAR
		if a.Op == parser.COUNT_VALUES {
			parser.Inspect(a.Expr, func(m parser.Node, _ []parser.Node) error {
				if _, ok := m.(*parser.AggregateExpr); ok {
					sensitive = true
				}
				return nil
			})
		}
		if !sensitive {
			return nil
		}
		inRange = true
		for _, p := range path {
			if _, ok := p.(*parser.SubqueryExpr); ok {
				inSubquery = true
			}
		}
		return nil
	})
	return inRange, inSubquery
}

// orBelowRoot reports an `or` below the root of q. Prometheus's range
// evaluation decides __name__ dropping once per intermediate series (by
// its first step, an aggregation's by its last), so an `or` that joins a
// series with the same series marked for dropping (x or rate(x[1m])) can
// feed a parent one mark for all steps; we decide per step below the root
// (docs/promql-functions.md, range queries). Such range queries are not
// compared; their instant queries are.
func orBelowRoot(q string) bool {
	expr, err := parser.NewParser(parser.Options{EnableExperimentalFunctions: true}).ParseExpr(q)
	if err != nil {
		return false
	}
	found := false
	parser.Inspect(expr, func(n parser.Node, path []parser.Node) error {
		if b, ok := n.(*parser.BinaryExpr); ok && b.Op == parser.LOR {
			for _, p := range path {
				if _, paren := p.(*parser.ParenExpr); !paren {
					found = true
				}
			}
		}
		return nil
	})
	return found
}

// record compares one evaluation and adds it to st; it reports an
// agreement on a non-empty answer.
func (c *diffCase) record(st *stats, d disagreement) bool {
	st.evaluations++
	ok, rd := compare(d.prom, d.ours)
	switch {
	case !ok:
		d.data = c.dump(d.query, d.t, d.lookback)
		st.disagreements = append(st.disagreements, d)
	case d.prom.err != nil:
		st.agreedErrors++
	default:
		st.agreedValues++
		switch {
		case d.prom.scalar:
			st.agreedScalar++
		case len(d.prom.vector)+len(d.prom.hists) == 0:
			st.agreedEmpty++
		}
		if len(d.prom.hists) > 0 {
			st.agreedHist++
		}
		if rd > st.maxRelDiff {
			st.maxRelDiff, st.maxRelQuery = rd, d.query
		}
		return d.prom.scalar || len(d.prom.vector)+len(d.prom.hists) > 0
	}
	return false
}

// dump prints the samples of the series q selects around t, to make a
// disagreement reproducible by hand.
func (c *diffCase) dump(q string, t int64, lookback time.Duration) string {
	expr, err := parser.NewParser(parser.Options{EnableExperimentalFunctions: true}).ParseExpr(q)
	if err != nil {
		return "      (unparseable)\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "      (case seed %d; times are ms relative to t)\n", c.seed)
	from := t - lookback.Milliseconds() - 15*60_000
	n := 0
	for _, ms := range parser.ExtractSelectors(expr) {
	next:
		for _, s := range c.data.series {
			for _, m := range ms {
				if !m.Matches(s.lset.Get(m.Name)) {
					continue next
				}
			}
			if n++; n > 12 {
				b.WriteString("      …\n")
				return b.String()
			}
			fmt.Fprintf(&b, "      %s:", s.lset)
			var win []sample
			for _, sm := range s.samples {
				if sm.T >= from && sm.T <= t+1000 {
					win = append(win, sm)
				}
			}
			if len(win) > 24 {
				fmt.Fprintf(&b, " (%d older)", len(win)-24)
				win = win[len(win)-24:]
			}
			for _, sm := range win {
				if sm.H != nil {
					fmt.Fprintf(&b, " %s@%d", sm.H.TestExpression(), sm.T-t)
					continue
				}
				fmt.Fprintf(&b, " %v@%d", formatValue(sm.F), sm.T-t)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func formatValue(f float64) string {
	if f == staleNaN || math.Float64bits(f) == math.Float64bits(staleNaN) {
		return "stale"
	}
	return fmt.Sprint(f)
}

// runDifferential runs cases derived from seed until target queries were
// compared (or maxCases ran) and returns the statistics.
func runDifferential(t testing.TB, seed int64, target, maxCases int) *stats {
	ctx := context.Background()
	ng := newPromEngine()
	st := newStats()
	master := rand.New(rand.NewSource(seed))
	for i := 0; i < maxCases && st.queries < target; i++ {
		c, err := newDiffCase(master.Int63(), ng)
		if err != nil {
			t.Fatalf("seed %d: load case %d: %v", seed, i, err)
		}
		smith := newSmith(c.rnd, c.data, i%2 == 1)
		gen := newTriggerGen(c.rnd, c.data)
		for _, q := range corpus {
			c.run(ctx, st, srcCorpus, q)
		}
		for range 150 {
			c.run(ctx, st, srcSmith, smithQuery(smith))
		}
		for range 100 {
			c.run(ctx, st, srcTrigger, gen.next())
		}
	}
	return st
}

func reportDisagreements(t testing.TB, seed int64, st *stats) {
	t.Helper()
	if len(st.disagreements) == 0 {
		return
	}
	var b strings.Builder
	for i, d := range st.disagreements {
		if i == 30 {
			fmt.Fprintf(&b, "… and %d more\n", len(st.disagreements)-i)
			break
		}
		b.WriteString(d.String())
	}
	// promqlsmith iterates maps, so a seed does not always regenerate the
	// same promqlsmith queries; the datasets are deterministic, and
	// TestReplay re-runs one query on one case seed.
	t.Errorf("seed %d (rerun: go test -run %s -compat.seed %d; one query: go test -run TestReplay -v -compat.replay.case <case seed> -compat.replay.t <t> -compat.replay.query '<query>'): %d disagreements:\n%s",
		seed, t.Name(), seed, len(st.disagreements), b.String())
}

// TestDifferential compares our engine with Prometheus's on random data
// and generated queries; any disagreement fails the test with the seed, the
// query, the data and both answers.
func TestDifferential(t *testing.T) {
	target := *flagQueries
	if testing.Short() {
		target = min(target, 2_000)
	}
	seed := *flagSeed
	start := time.Now()
	st := runDifferential(t, seed, target, 1_000)
	t.Logf("seed %d, %s: %s", seed, time.Since(start).Round(time.Millisecond), st.summary())
	if *flagVerbose {
		t.Logf("declined reasons: %s", formatCounts(st.declined))
	}
	reportDisagreements(t, seed, st)
	if st.queries < target {
		t.Errorf("seed %d: only %d queries compared, want ≥ %d (too many declined: %d)", seed, st.queries, target, st.declinedTotal)
	}
}

// TestDifferentialGrowingStore compiles and evaluates plans while the
// store holds part of the data, then loads the rest (new samples, and new
// series, which move the store's generation) and compares the same plans
// with Prometheus on the full data: cached series matches and derived
// tables must follow the store.
func TestDifferentialGrowingStore(t *testing.T) {
	ctx := context.Background()
	ng := newPromEngine()
	st := newStats()
	cases := 6
	if testing.Short() {
		cases = 2
	}
	for seed := int64(100); seed < int64(100+cases); seed++ {
		rnd := rand.New(rand.NewSource(seed))
		d := genDataset(rnd, genOpts{span: 10 * time.Minute, pods: 4, buckets: []float64{0.1, 0.5, 1, 5}})
		o := newEmptyOurs(d)
		mid := d.start + (d.end-d.start)/2
		// Phase 1: even series up to the midpoint.
		if err := o.load(d, func(i int, s sample) bool { return i%2 == 0 && s.T <= mid }); err != nil {
			t.Fatal(err)
		}
		gen := newTriggerGen(rnd, d)
		queries := slices.Clone(corpus)
		for range 150 {
			queries = append(queries, gen.next())
		}
		type compiled struct {
			q        string
			plan     *query.Plan
			lookback time.Duration
		}
		var plans []compiled
		for _, q := range queries {
			lb := []time.Duration{5 * time.Minute, time.Minute}[rnd.Intn(2)]
			plan, declined, err := o.compile(q, lb)
			if declined != "" || err != nil {
				continue
			}
			_, _ = plan.Eval(ctx, mid)
			plans = append(plans, compiled{q, plan, lb})
		}
		// Phase 2: the rest of the even series, then the odd series.
		if err := o.load(d, func(i int, s sample) bool { return i%2 == 0 && s.T > mid }); err != nil {
			t.Fatal(err)
		}
		if err := o.load(d, func(i int, _ sample) bool { return i%2 == 1 }); err != nil {
			t.Fatal(err)
		}
		c := &diffCase{seed: seed, rnd: rnd, data: d, ours: o, prom: ng, store: newPromStorage(d).queryable(), times: d.sampleTimes()}
		slices.Sort(c.times)
		for _, p := range plans {
			for _, ts := range c.evalTimes(2, p.lookback) {
				prom := evalProm(ctx, ng, c.store, p.q, ts, p.lookback)
				our := o.eval(ctx, p.plan, ts)
				st.evaluations++
				if ok, _ := compare(prom, our); !ok {
					st.disagreements = append(st.disagreements, disagreement{
						source: "growing", query: p.q, t: ts, lookback: p.lookback,
						prom: prom, ours: our, data: c.dump(p.q, ts, p.lookback),
					})
				}
			}
			st.queries++
		}
	}
	t.Logf("growing store: %d plans compiled on partial data, %d evaluations on full data, %d disagreements", st.queries, st.evaluations, len(st.disagreements))
	reportDisagreements(t, 100, st)
	if st.queries < 100*cases {
		t.Errorf("only %d plans compiled", st.queries)
	}
}

// TestDifferentialCatchesDifferences shows the comparison is not vacuous:
// a wrong answer is a disagreement, and so is an error against a value.
func TestDifferentialCatchesDifferences(t *testing.T) {
	hist := func(schema int32, count float64, b ...float64) *histogram.FloatHistogram {
		return &histogram.FloatHistogram{Schema: schema, Count: count, PositiveSpans: []histogram.Span{{Offset: 0, Length: uint32(len(b))}}, PositiveBuckets: b}
	}
	hv := func(h *histogram.FloatHistogram) outcome {
		o := outcome{vector: map[string]float64{}}
		o.add("{}", 0, h)
		return o
	}
	v := func(kv ...any) outcome {
		o := outcome{vector: map[string]float64{}}
		for i := 0; i < len(kv); i += 2 {
			o.vector[kv[i].(string)] = kv[i+1].(float64)
		}
		return o
	}
	for _, tc := range []struct {
		name       string
		prom, ours outcome
		want       bool
	}{
		{"equal", v("{}", 1.0), v("{}", 1.0), true},
		{"within 1e-6", v("{}", 1.0), v("{}", 1.0000005), true},
		{"NaN equals NaN", v("{}", math.NaN()), v("{}", math.NaN()), true},
		{"stale is not NaN", v("{}", math.NaN()), v("{}", staleNaN), false},
		{"value differs", v("{}", 1.0), v("{}", 1.1), false},
		{"labels differ", v(`{a="1"}`, 1.0), v(`{a="2"}`, 1.0), false},
		{"extra element", v("{}", 1.0), v("{}", 1.0, `{a="1"}`, 2.0), false},
		{"empty vs element", v(), v("{}", 0.0), false},
		{"both errors", outcome{err: errors.New("x")}, outcome{err: errors.New("y")}, true},
		{
			"different matching errors",
			outcome{err: errors.New("multiple matches for labels: many-to-one matching must be explicit")},
			outcome{err: errors.New("vector cannot contain metrics with the same labelset")},
			false,
		},
		{"error vs value", outcome{err: errors.New("x")}, v(), false},
		{"scalar vs vector", outcome{scalar: true, value: 1}, v("{}", 1.0), false},
		{"duplicate labels", v("{}", 1.0), outcome{vector: map[string]float64{"{}": 1}, dups: 1}, false},
		{"same histogram", hv(hist(0, 3, 1, 2)), hv(hist(0, 3, 1, 2)), true},
		{"same histogram, other spans", hv(hist(0, 3, 1, 2)), hv(&histogram.FloatHistogram{
			Count:         3,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}, {Offset: 0, Length: 2}}, PositiveBuckets: []float64{1, 2, 0},
		}), true},
		{"bucket differs", hv(hist(0, 3, 1, 2)), hv(hist(0, 3, 2, 1)), false},
		{"count differs", hv(hist(0, 3, 1, 2)), hv(hist(0, 4, 1, 2)), false},
		{"schema differs", hv(hist(0, 3, 1, 2)), hv(hist(1, 3, 1, 2)), false},
		{"histogram vs float", hv(hist(0, 3, 1, 2)), v("{}", 3.0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := compare(tc.prom, tc.ours)
			if got != tc.want {
				t.Errorf("compare(%s, %s) = %v, want %v", tc.prom, tc.ours, got, tc.want)
			}
		})
	}
	// And end to end: a dataset where we deliberately evaluate our engine
	// at a different time finds disagreements.
	c, err := newDiffCase(7, newPromEngine())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	found := 0
	for _, ti := range c.times[:50] {
		prom := evalProm(ctx, c.prom, c.store, `sum(vllm:num_requests_waiting)`, ti, time.Minute)
		plan, _, err := c.ours.compile(`sum(vllm:num_requests_waiting)`, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		our := c.ours.eval(ctx, plan, ti-61_000)
		if ok, _ := compare(prom, our); !ok {
			found++
		}
	}
	if found == 0 {
		t.Error("evaluating at the wrong time never disagreed: the comparison is vacuous")
	}
}

// FuzzDifferential runs small differential cases from fuzzed seeds with
// the trigger generator (deterministic per seed; promqlsmith is not, since
// it iterates maps, so it stays in TestDifferential).
func FuzzDifferential(f *testing.F) {
	f.Add(int64(1))
	f.Add(int64(42))
	f.Add(int64(-7))
	ng := newPromEngine()
	f.Fuzz(func(t *testing.T, seed int64) {
		c, err := newDiffCase(seed, ng)
		if err != nil {
			t.Fatal(err)
		}
		st := newStats()
		gen := newTriggerGen(c.rnd, c.data)
		ctx := context.Background()
		for range 20 {
			c.run(ctx, st, srcTrigger, gen.next())
		}
		reportDisagreements(t, seed, st)
	})
}

// FuzzDifferentialQuery lets the fuzzer mutate query text, evaluated on a
// dataset from a fuzzed seed. Most mutations fail to parse in both engines
// (an agreement); the rest probe shapes no generator writes.
func FuzzDifferentialQuery(f *testing.F) {
	for i, q := range corpus {
		f.Add(int64(i), q)
	}
	gen := newTriggerGen(rand.New(rand.NewSource(1)), &dataset{start: baseTime, end: baseTime + 10*60_000})
	for i := range 40 {
		f.Add(int64(i), gen.next())
	}
	ng := newPromEngine()
	f.Fuzz(func(t *testing.T, seed int64, q string) {
		if len(q) > 2000 {
			return
		}
		c, err := newDiffCase(seed%16, ng) // few datasets: fast, and each well explored
		if err != nil {
			t.Fatal(err)
		}
		st := newStats()
		c.run(context.Background(), st, "fuzz", q)
		reportDisagreements(t, seed, st)
	})
}

var (
	flagReplayCase  = flag.Int64("compat.replay.case", 0, "TestReplay: case seed printed with a disagreement")
	flagReplayQuery = flag.String("compat.replay.query", "", "TestReplay: the query to evaluate")
	flagReplayTime  = flag.Int64("compat.replay.t", 0, "TestReplay: evaluation time, unix ms")
	flagReplayLB    = flag.Duration("compat.replay.lookback", 5*time.Minute, "TestReplay: lookback delta")
)

// TestReplay re-evaluates one reported disagreement on both engines:
//
//	go test -run TestReplay -v -compat.replay.case <case seed> -compat.replay.t <ms> -compat.replay.query '<q>'
func TestReplay(t *testing.T) {
	if *flagReplayQuery == "" {
		t.Skip("replay: set -compat.replay.query (and .case, .t, .lookback)")
	}
	c, err := newDiffCase(*flagReplayCase, newPromEngine())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	q, ts, lb := *flagReplayQuery, *flagReplayTime, *flagReplayLB
	prom := evalProm(ctx, c.prom, c.store, q, ts, lb)
	plan, declined, err := c.ours.compile(q, lb)
	our := outcome{err: err}
	switch {
	case declined != "":
		t.Skipf("our engine declines %s: %s", q, declined)
	case err == nil:
		our = c.ours.eval(ctx, plan, ts)
	}
	t.Logf("prometheus: %s\nours:       %s\ndata:\n%s", prom, our, c.dump(q, ts, lb))
	if ok, _ := compare(prom, our); !ok {
		t.Error("the engines disagree")
	}
}

// TestDifferentialStepAlignment compares subqueries and @ at evaluation
// times on multiples of the subquery steps, where Prometheus's child
// evaluators start exactly at their parent's start and its @ offsets are
// not re-based (setOffsetForAtModifier), with negative and positive
// offsets, nesting and step-invariant parts, as instant and range queries.
func TestDifferentialStepAlignment(t *testing.T) {
	ctx := context.Background()
	ng := newPromEngine()
	st := newStats()
	for seed := int64(200); seed < 203; seed++ {
		c, err := newDiffCase(seed, ng)
		if err != nil {
			t.Fatal(err)
		}
		mid := (c.data.start + c.data.end) / 2
		at := fmt.Sprintf("%.3f", float64(mid-mid%60_000)/1000)
		qs := []string{
			`max_over_time((vllm:num_requests_waiting @ ` + at + `)[30s:1m] offset -10s)`,
			`max_over_time((vllm:num_requests_waiting @ ` + at + `)[50s:1m] offset -10s)`,
			`sum_over_time((vllm:num_requests_waiting @ ` + at + ` offset 20s)[1m:1m] offset -30s)`,
			`sum_over_time(max_over_time((vllm:num_requests_waiting @ ` + at + `)[30s:30s] offset -20s)[1m:1m])`,
			`sum_over_time(max_over_time((vllm:num_requests_waiting @ ` + at + `)[30s:30s])[1m:1m] offset -20s)`,
			`sum_over_time(sum_over_time(vllm:num_requests_waiting[30s:15s] @ ` + at + `)[1m:30s] offset -15s)`,
			`sum_over_time(sum_over_time(vllm:num_requests_waiting[30s:15s] @ start())[1m:30s] offset -15s)`,
			`sum_over_time(rate(vllm:prompt_tokens_total[1m] @ end())[2m:1m] offset -30s)`,
			`max_over_time(topk(scalar(sum(vllm:num_requests_running)), vllm:num_requests_waiting @ ` + at + `)[2m:30s])`,
			`max_over_time(quantile(time() / 1e10, vllm:num_requests_waiting @ end())[2m:30s])`,
			`last_over_time(((vllm:num_requests_waiting > 5) or -vllm:num_requests_waiting)[2m:15s])`,
			`(vllm:num_requests_waiting > 5) or -vllm:num_requests_waiting`,
			`count_over_time(vector(time())[2m:30s] @ end())`,
			`timestamp(vllm:num_requests_waiting @ ` + at + ` offset 1m)`,
			`timestamp((vllm:num_requests_waiting @ end()))`,
			`predict_linear(vllm:num_requests_waiting[2m] @ ` + at + `, time() / 1e9)`,
			`rate(vllm:prompt_tokens_total[2m] @ ` + at + `) * on (pod) group_left vllm:num_requests_waiting`,
			`topk(scalar(rate(vllm:prompt_tokens_total{pod="p0"}[1m] @ ` + at + `)), vllm:num_requests_waiting)`,
		}
		for _, q := range qs {
			plan, declined, err := c.ours.compile(q, 5*time.Minute)
			if declined != "" {
				t.Errorf("%s: declined: %s", q, declined)
				continue
			}
			for _, step := range []int64{15_000, 30_000, 60_000} {
				for k := int64(-2); k <= 2; k++ {
					ts := mid - mid%60_000 + k*step
					prom := evalProm(ctx, ng, c.store, q, ts, 5*time.Minute)
					our := outcome{err: err}
					if err == nil {
						our = c.ours.eval(ctx, plan, ts)
					}
					c.record(st, disagreement{source: "aligned", query: q, t: ts, lookback: 5 * time.Minute, prom: prom, ours: our})
					end := ts + 4*step
					prom = evalPromRange(ctx, ng, c.store, q, ts, end, step, 5*time.Minute)
					our = outcome{err: err}
					if err == nil {
						our = c.ours.evalRange(ctx, plan, ts, end, step)
					}
					c.record(st, disagreement{
						source: "aligned", query: q, t: ts, lookback: 5 * time.Minute, prom: prom, ours: our,
						rng: fmt.Sprintf("from %d to %d step %dms", ts, end, step),
					})
				}
			}
			st.queries++
		}
	}
	t.Logf("aligned: %d queries, %d evaluations, %d agreed on values (%d empty), %d agreed on an error, %d disagreements",
		st.queries, st.evaluations, st.agreedValues, st.agreedEmpty, st.agreedErrors, len(st.disagreements))
	reportDisagreements(t, 200, st)
}
