package query

// The upstream conformance runner (promql-subset.md §6.1): it reads
// Prometheus's own promql/promqltest/testdata/*.test scripts from the pinned
// module, loads their series into a fresh store per `clear`, evaluates every
// eval that stays inside our subset and compares the result as upstream's
// compareResult does. Cases outside the subset are skipped with a reason,
// never silently; accepted deviations are listed in
// testdata/upstream-skips.txt; the number passed may not drop below
// testdata/conformance-floor.txt.
//
//	go test -run '^TestUpstreamConformance$' -v ./pkg/query

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/almost"
	"github.com/prometheus/prometheus/util/convertnhcb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

var (
	patSpace        = regexp.MustCompile("[\t ]+")
	patLoad         = regexp.MustCompile(`^load(?:_(with_nhcb))?\s+(.+?)$`)
	patEvalInstant  = regexp.MustCompile(`^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$`)
	patEvalRange    = regexp.MustCompile(`^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$`)
	patExpect       = regexp.MustCompile(`^expect\s+(ordered|fail|warn|no_warn|info|no_info)(?:\s+(regex|msg):(.+))?$`)
	patExpectMatrix = regexp.MustCompile(`^expect range vector from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+)$`)
)

// conformanceParserOpts mirrors upstream's TestParserOpts.
var conformanceParserOpts = parser.Options{
	EnableExperimentalFunctions: true,
	EnableBinopFillModifiers:    true,
	EnableUnquotedUTF8Names:     true,
}

type confSeries struct {
	lset    labels.Labels
	samples []store.Sample
	hists   []*histogram.FloatHistogram // per sample: its histogram, or nil for a float
	loadIdx []int                       // the block's load command each sample came from
	ref     store.SeriesRef
	hist    bool // has {{…}} samples or comes from load_with_nhcb: a histogram series
	startTS bool // has @st lines (start timestamps are out of scope)
}

type confExpected struct {
	lset labels.Labels
	vals []parser.SequenceValue
	pos  int
}

type confEval struct {
	line        int
	expr        string
	instant     bool
	at          int64
	from, to    int64
	step        int64
	fail        bool
	failMsg     string
	failRegex   *regexp.Regexp
	ordered     bool
	scalar      *float64
	expected    []confExpected
	unsupported string // a reason to skip decided while parsing
	loadsBefore int    // load commands of the block that precede the eval
	lookback    time.Duration
	// matrix is set for an instant eval whose result is a range vector
	// (`expect range vector from … to … step …`); mplan is its plan.
	matrix *confMatrix
	mplan  *MatrixPlan
}

// confMatrix is where an expected range vector's values sit: the i-th at
// from + i·step.
type confMatrix struct{ from, to, step int64 }

type confBlock struct {
	series []*confSeries
	evals  []*confEval
	loads  int
}

type confCounts struct {
	instantPassed, rangePassed, failed, skipped int
	mustInstant, mustRange                      int // passed evals using only Must-tier constructs
	reasons                                     map[string]int
}

func prometheusModuleDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/prometheus/prometheus").Output()
	if err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" {
			return dir
		}
	}
	if cache := os.Getenv("GOMODCACHE"); cache != "" {
		dir := filepath.Join(cache, "github.com/prometheus/prometheus@v0.316.0")
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
	}
	t.Skipf("cannot locate the prometheus module (go list -m: %v); run go mod download", err)
	return ""
}

func readKeyedFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, _ := strings.Cut(l, " ")
		m[k] = strings.TrimSpace(v)
	}
	require.NoError(t, sc.Err())
	return m
}

func parseDurationMs(s string) (int64, error) {
	d, err := model.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	return time.Duration(d).Milliseconds(), nil
}

// parseScript parses the promqltest grammar into blocks separated by clear.
func parseScript(t *testing.T, name, text string) []*confBlock {
	t.Helper()
	p := parser.NewParser(conformanceParserOpts)
	lines := strings.Split(text, "\n")
	lookbacks := map[int]time.Duration{} // line of the directive's eval → lookback
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, "# kos: lookback="); ok {
			ms, err := parseDurationMs(v)
			require.NoError(t, err, "%s:%d", name, i+1)
			lookbacks[i+2] = time.Duration(ms) * time.Millisecond
		}
		if strings.HasPrefix(l, "#") {
			l = ""
		}
		lines[i] = l
	}
	blocks := []*confBlock{{}}
	cur := blocks[0]
	byHash := map[uint64]*confSeries{}
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if l == "" {
			continue
		}
		switch c := strings.ToLower(patSpace.Split(l, 2)[0]); {
		case c == "clear":
			cur = &confBlock{}
			blocks = append(blocks, cur)
			byHash = map[uint64]*confSeries{}
		case strings.HasPrefix(c, "load"):
			parts := patLoad.FindStringSubmatch(l)
			require.NotNil(t, parts, "%s:%d: bad load", name, i+1)
			step, err := parseDurationMs(parts[2])
			require.NoError(t, err, "%s:%d", name, i+1)
			nhcb := parts[1] == "with_nhcb"
			stPending := false
			// Within one load a later line for the same series replaces
			// the earlier one (upstream's loadCmd.set overwrites).
			loadStart := map[uint64]int{}
			defs := map[uint64]*confSeries{} // this load's lines, for load_with_nhcb
			cur.loads++
			for i+1 < len(lines) && lines[i+1] != "" {
				i++
				def := lines[i]
				if sp := strings.IndexAny(def, " \t"); sp > 0 && strings.HasSuffix(def[:sp], "@st") {
					stPending = true
					continue
				}
				lset, vals, err := p.ParseSeriesDesc(def)
				require.NoError(t, err, "%s:%d", name, i+1)
				h := lset.Hash()
				s, ok := byHash[h]
				if !ok {
					s = &confSeries{lset: lset}
					byHash[h] = s
					cur.series = append(cur.series, s)
				}
				if start, again := loadStart[h]; again {
					s.samples, s.hists, s.loadIdx = s.samples[:start], s.hists[:start], s.loadIdx[:start]
				} else {
					loadStart[h] = len(s.samples)
				}
				s.startTS = s.startTS || stPending
				stPending = false
				d := &confSeries{lset: lset}
				defs[h] = d
				for k, v := range vals {
					if v.Omitted {
						continue
					}
					smp := store.Sample{T: int64(k) * step, V: v.Value}
					s.samples = append(s.samples, smp)
					s.hists = append(s.hists, v.Histogram)
					s.loadIdx = append(s.loadIdx, cur.loads-1)
					s.hist = s.hist || v.Histogram != nil
					if v.Histogram == nil {
						d.samples = append(d.samples, smp)
					}
				}
			}
			if nhcb {
				for _, ns := range nhcbSeries(t, defs) {
					h := ns.lset.Hash()
					s, ok := byHash[h]
					if !ok {
						s = &confSeries{lset: ns.lset}
						byHash[h] = s
						cur.series = append(cur.series, s)
					}
					s.hist = true
					for k := range ns.samples {
						s.samples = append(s.samples, ns.samples[k])
						s.hists = append(s.hists, ns.hists[k])
						s.loadIdx = append(s.loadIdx, cur.loads-1)
					}
				}
			}
		case strings.HasPrefix(c, "eval"):
			ev, next := parseEval(t, p, name, lines, i)
			ev.loadsBefore = cur.loads
			ev.lookback = lookbacks[ev.line]
			cur.evals = append(cur.evals, ev)
			i = next
		default:
			t.Fatalf("%s:%d: invalid command %q", name, i+1, l)
		}
	}
	return blocks
}

func parseEval(t *testing.T, p parser.Parser, name string, lines []string, i int) (*confEval, int) {
	t.Helper()
	l := lines[i]
	ev := &confEval{line: i + 1}
	var mod string
	if m := patEvalInstant.FindStringSubmatch(l); m != nil {
		mod, ev.expr, ev.instant = m[1], m[3], true
		at, err := parseDurationMs(m[2])
		require.NoError(t, err, "%s:%d", name, i+1)
		ev.at = at
	} else if m := patEvalRange.FindStringSubmatch(l); m != nil {
		mod, ev.expr = m[1], m[5]
		var err error
		ev.from, err = parseDurationMs(m[2])
		require.NoError(t, err)
		ev.to, err = parseDurationMs(m[3])
		require.NoError(t, err)
		ev.step, err = parseDurationMs(m[4])
		require.NoError(t, err)
	} else {
		t.Fatalf("%s:%d: invalid eval %q", name, i+1, l)
	}
	switch mod {
	case "fail":
		ev.fail = true
	case "ordered":
		ev.ordered = true
	}
	for j := 1; i+1 < len(lines) && lines[i+1] != ""; j++ {
		i++
		def := lines[i]
		switch {
		case ev.fail && strings.HasPrefix(def, "expected_fail_message"):
			ev.failMsg = strings.TrimSpace(strings.TrimPrefix(def, "expected_fail_message"))
			continue
		case ev.fail && strings.HasPrefix(def, "expected_fail_regexp"):
			ev.failRegex = regexp.MustCompile(strings.TrimSpace(strings.TrimPrefix(def, "expected_fail_regexp")))
			continue
		case strings.HasPrefix(def, "expect range vector"):
			m := patExpectMatrix.FindStringSubmatch(def)
			require.NotNil(t, m, "%s:%d: bad expect range vector", name, i+1)
			var mx confMatrix
			var err error
			for k, d := range []*int64{&mx.from, &mx.to, &mx.step} {
				*d, err = parseDurationMs(m[k+1])
				require.NoError(t, err, "%s:%d", name, i+1)
			}
			ev.matrix = &mx
			j--
			continue
		case strings.HasPrefix(def, "expect string"):
			ev.unsupported = "unsupported: string result"
			continue
		case strings.Split(def, " ")[0] == "expect":
			m := patExpect.FindStringSubmatch(def)
			require.NotNil(t, m, "%s:%d: bad expect", name, i+1)
			switch m[1] {
			case "fail":
				ev.fail = true
				switch m[2] {
				case "msg":
					ev.failMsg = strings.TrimSpace(m[3])
				case "regex":
					ev.failRegex = regexp.MustCompile(strings.TrimSpace(m[3]))
				}
			case "ordered":
				ev.ordered = true
			}
			// warn/info/no_warn/no_info: we produce no annotations; the
			// values are still compared.
			j--
			continue
		}
		if f, err := parseNumber(def); err == nil {
			ev.scalar = &f
			continue
		}
		lset, vals, err := p.ParseSeriesDesc(def)
		require.NoError(t, err, "%s:%d", name, i+1)
		ev.expected = append(ev.expected, confExpected{lset: lset, vals: vals, pos: j})
	}
	return ev, i
}

func parseNumber(s string) (float64, error) {
	n, err := strconv.ParseInt(s, 0, 64)
	f := float64(n)
	if err != nil {
		f, err = strconv.ParseFloat(s, 64)
	}
	return f, err
}

// mustTierFuncs are the functions of the Must tier (promql-subset.md §2).
var mustTierFuncs = map[string]bool{
	"rate": true, "irate": true, "increase": true, "avg_over_time": true, "min_over_time": true,
	"max_over_time": true, "sum_over_time": true, "count_over_time": true, "last_over_time": true,
	"histogram_quantile": true, "vector": true, "scalar": true, "clamp": true, "clamp_min": true,
	"clamp_max": true, "abs": true, "ceil": true, "floor": true, "round": true, "absent": true, "time": true,
}

// isMustTier reports whether expr uses only Must-tier constructs, for the
// coverage summary.
func isMustTier(expr string) bool {
	e, err := parser.NewParser(conformanceParserOpts).ParseExpr(expr)
	if err != nil {
		return false
	}
	must := true
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.Call:
			must = must && mustTierFuncs[n.Func.Name]
		case *parser.VectorSelector:
			must = must && n.OriginalOffset == 0 && n.Timestamp == nil && n.StartOrEnd == 0
		case *parser.SubqueryExpr:
			must = false
		case *parser.AggregateExpr:
			switch n.Op {
			case parser.SUM, parser.AVG, parser.MIN, parser.MAX, parser.COUNT:
			default:
				must = false
			}
		case *parser.BinaryExpr:
			if n.Op == parser.ATAN2 || n.VectorMatching != nil &&
				(n.VectorMatching.Card == parser.CardManyToOne || n.VectorMatching.Card == parser.CardOneToMany) {
				must = false
			}
		}
		return nil
	})
	return must
}

// classify returns why an eval is outside our subset, or "".
func classify(full parser.Parser, eng *Engine, ev *confEval, blk *confBlock) (string, *Plan, error) {
	if ev.unsupported != "" {
		return ev.unsupported, nil, nil
	}
	expr, err := full.ParseExpr(ev.expr)
	if err != nil {
		return "", nil, err // a parse failure the eval may expect
	}
	var reason string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.Call:
			if !supportedFunctions[n.Func.Name] && reason == "" {
				reason = "unsupported: function " + n.Func.Name
			}
		case *parser.VectorSelector:
			for _, s := range blk.series {
				if s.startTS && matchesAll(n.LabelMatchers, s.lset) && reason == "" {
					reason = "unsupported: start timestamps"
				}
			}
		}
		return nil
	})
	if reason != "" {
		return reason, nil, nil
	}
	if ev.matrix != nil {
		mp, err := eng.CompileMatrix(expr, Options{LookbackDelta: ev.lookback})
		var ue *UnsupportedError
		if errors.As(err, &ue) {
			return "unsupported: " + ue.Construct, nil, nil
		}
		ev.mplan = mp
		return "", nil, err
	}
	plan, err := eng.Query(ev.expr, Options{LookbackDelta: ev.lookback})
	var ue *UnsupportedError
	if errors.As(err, &ue) {
		return "unsupported: " + ue.Construct, nil, nil
	}
	return "", plan, err
}

func matchesAll(ms []*labels.Matcher, l labels.Labels) bool {
	for _, m := range ms {
		if !m.Matches(l.Get(m.Name)) {
			return false
		}
	}
	return true
}

func newConformanceStore(blk *confBlock) *store.Store {
	maxN := 8
	for _, s := range blk.series {
		maxN = max(maxN, len(s.samples))
	}
	return store.New(store.Config{
		Retention:           100_000 * time.Hour,
		Freshness:           -1,
		MaxSamplesPerSeries: maxN + 1,
	}, store.Settings{Now: func() time.Time { return time.UnixMilli(0) }})
}

// applyLoads appends the samples of the block's load commands [from, to),
// so each eval sees exactly the loads that precede it in the script.
func applyLoads(t *testing.T, st *store.Store, blk *confBlock, from, to int) {
	t.Helper()
	for i, s := range blk.series {
		for k, smp := range s.samples {
			if s.loadIdx[k] < from || s.loadIdx[k] >= to {
				continue
			}
			if s.ref == 0 {
				create := st.Create
				if s.hist {
					create = st.CreateHistogram
				}
				ref, err := create(uint64(i+1), s.lset)
				require.NoError(t, err)
				s.ref = ref
			}
			if h := s.hists[k]; h != nil {
				require.NoError(t, st.AppendHistogram(s.ref, smp.T, h), "append %s@%d", s.lset, smp.T)
				continue
			}
			require.NoError(t, st.Append(s.ref, smp.T, smp.V), "append %s@%d", s.lset, smp.T)
		}
	}
}

// runScript runs every eval of one script as a subtest named file:line.
// exact disables the le/quantile matcher normalisation (upstream data is
// not normalised at ingest); found and ran count the evals seen and the
// ones selected by -run.
func runScript(t *testing.T, name, text string, exact bool, skips map[string]string, found, ran *int) *confCounts {
	t.Helper()
	full := parser.NewParser(conformanceParserOpts)
	cnt := &confCounts{reasons: map[string]int{}}
	for _, blk := range parseScript(t, name, text) {
		st := newConformanceStore(blk)
		eng := newEngine(st, conformanceParserOpts)
		eng.exactNumericLabels = exact
		applied := 0
		for _, ev := range blk.evals {
			applyLoads(t, st, blk, applied, ev.loadsBefore)
			applied = ev.loadsBefore
			*found++
			id := fmt.Sprintf("%s:%d", name, ev.line)
			var outcome string
			if !t.Run(id, func(t *testing.T) {
				*ran++
				outcome = "skip"
				if reason, ok := skips[id]; ok {
					cnt.reasons["accepted deviation"]++
					t.Skipf("accepted deviation (testdata/upstream-skips.txt): %s", reason)
				}
				reason, plan, cerr := classify(full, eng, ev, blk)
				if reason != "" {
					cnt.reasons[reason]++
					t.Skip(reason)
				}
				outcome = "fail"
				if cerr != nil && !ev.fail {
					t.Fatalf("query %q: compile: %v", ev.expr, cerr)
				}
				if err := runEval(ev, plan, cerr); err != nil {
					t.Fatalf("query %q: %v", ev.expr, err)
				}
				outcome = "pass"
			}) {
				cnt.failed++
				continue
			}
			switch outcome {
			case "pass":
				must := isMustTier(ev.expr)
				if ev.instant {
					cnt.instantPassed++
					if must {
						cnt.mustInstant++
					}
				} else {
					cnt.rangePassed++
					if must {
						cnt.mustRange++
					}
				}
			case "skip":
				cnt.skipped++
			}
		}
	}
	return cnt
}

// TestScripts runs our own scripts, testdata/*.test, in the same grammar
// with the production matcher normalisation. A `# kos: lookback=<dur>`
// comment sets the lookback of the next eval.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.test")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var found, ran int
	for _, path := range files {
		text, err := os.ReadFile(path)
		require.NoError(t, err)
		cnt := runScript(t, filepath.Base(path), string(text), false, nil, &found, &ran)
		assert.Zero(t, cnt.skipped, "%s: our own scripts stay inside the subset", path)
	}
}

func TestUpstreamConformance(t *testing.T) {
	dir := filepath.Join(prometheusModuleDir(t), "promql", "promqltest", "testdata")
	files, err := filepath.Glob(filepath.Join(dir, "*.test"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no .test files in %s", dir)
	skips := readKeyedFile(t, "testdata/upstream-skips.txt")
	floor := readKeyedFile(t, "testdata/conformance-floor.txt")
	perFile := map[string]*confCounts{}
	var total confCounts
	var found, ran int
	for _, path := range files {
		name := filepath.Base(path)
		text, err := os.ReadFile(path)
		require.NoError(t, err)
		cnt := runScript(t, name, string(text), true, skips, &found, &ran)
		perFile[name] = cnt
		total.mustInstant += cnt.mustInstant
		total.mustRange += cnt.mustRange
		total.instantPassed += cnt.instantPassed
		total.rangePassed += cnt.rangePassed
		total.failed += cnt.failed
		total.skipped += cnt.skipped
	}

	var sb strings.Builder
	fmt.Fprintf(&sb, "%-28s %8s %8s %7s %8s   %s\n", "file", "instant", "range", "failed", "skipped", "(Must tier only: instant/range)")
	for _, path := range files {
		name := filepath.Base(path)
		c := perFile[name]
		fmt.Fprintf(&sb, "%-28s %8d %8d %7d %8d   %d/%d\n", name, c.instantPassed, c.rangePassed, c.failed, c.skipped, c.mustInstant, c.mustRange)
	}
	fmt.Fprintf(&sb, "%-28s %8d %8d %7d %8d   %d/%d\n", "total", total.instantPassed, total.rangePassed, total.failed, total.skipped, total.mustInstant, total.mustRange)
	reasons := map[string]int{}
	for _, c := range perFile {
		for r, n := range c.reasons {
			reasons[r] += n
		}
	}
	keys := make([]string, 0, len(reasons))
	for r := range reasons {
		keys = append(keys, r)
	}
	slices.SortFunc(keys, func(a, b string) int { return reasons[b] - reasons[a] })
	sb.WriteString("skipped by reason:\n")
	for _, r := range keys {
		fmt.Fprintf(&sb, "  %5d  %s\n", reasons[r], r)
	}
	t.Log("upstream conformance (passed instant / passed range evals):\n" + sb.String())

	if ran != found {
		t.Logf("floor not checked: %d of %d evals selected by -run", ran, found)
		return
	}
	for key, got := range map[string]int{
		"instant": total.instantPassed, "range": total.rangePassed,
		"must_instant": total.mustInstant, "must_range": total.mustRange,
	} {
		want, err := strconv.Atoi(floor[key])
		require.NoError(t, err, "conformance-floor.txt needs a %q line", key)
		require.GreaterOrEqual(t, got, want, "passed %s evals dropped below the floor in testdata/conformance-floor.txt", key)
		if got > want {
			t.Logf("ratchet: %s passed %d > floor %d; raise testdata/conformance-floor.txt", key, got, want)
		}
	}
}

// runEval evaluates one eval and compares like upstream's compareResult.
func runEval(ev *confEval, plan *Plan, cerr error) error {
	ctx := context.Background()
	if ev.matrix != nil {
		return runMatrixEval(ev, cerr)
	}
	if ev.instant {
		var res Result
		err := cerr
		if err == nil {
			res, err = plan.Eval(ctx, ev.at)
		}
		if ev.fail {
			return checkFailure(ev, err)
		}
		if err != nil {
			return err
		}
		return compareInstant(ev, res)
	}
	type point struct {
		step int
		f    float64
		h    *histogram.FloatHistogram
	}
	type series struct {
		lset labels.Labels
		pts  []point
	}
	got := map[uint64]*series{}
	err := cerr
	if err == nil {
		// A range eval is one Prometheus range query: @ start()/end() and
		// step invariance depend on it, so it is not a loop of Evals.
		step := ev.step
		if step <= 0 {
			step = 1
		}
		var mat []RangeSeries
		mat, err = plan.EvalRange(ctx, ev.from, ev.to, step, nil)
		for _, s := range mat {
			se := &series{lset: s.Labels}
			for _, pt := range s.Points {
				se.pts = append(se.pts, point{int((pt.T - ev.from) / step), pt.F, nil})
			}
			for _, pt := range s.Histograms {
				se.pts = append(se.pts, point{int((pt.T - ev.from) / step), 0, pt.H})
			}
			slices.SortFunc(se.pts, func(a, b point) int { return a.step - b.step })
			got[s.Labels.Hash()] = se
		}
	}
	if ev.fail {
		return checkFailure(ev, err)
	}
	if err != nil {
		return err
	}
	exp := map[uint64]confExpected{}
	for _, e := range ev.expected {
		exp[e.lset.Hash()] = e
	}
	if ev.scalar != nil {
		exp[labels.EmptyLabels().Hash()] = confExpected{lset: labels.EmptyLabels(), vals: []parser.SequenceValue{{Value: *ev.scalar}}}
	}
	for h, s := range got {
		e, ok := exp[h]
		if !ok {
			return fmt.Errorf("unexpected series %s in result", s.lset)
		}
		var want []point
		var hintSet []bool
		for i, v := range e.vals {
			if !v.Omitted {
				want = append(want, point{i, v.Value, v.Histogram})
				hintSet = append(hintSet, v.CounterResetHintSet)
			}
		}
		if len(want) != len(s.pts) {
			return fmt.Errorf("series %s: want %v points, got %v", s.lset, want, s.pts)
		}
		for i := range want {
			w, g := want[i], s.pts[i]
			switch {
			case w.step != g.step || (w.h == nil) != (g.h == nil):
				return fmt.Errorf("series %s: want %v, got %v", s.lset, want, s.pts)
			case w.h != nil && !sameHistogram(w.h, g.h, hintSet[i]):
				return fmt.Errorf("series %s at step %d: want %s, got %s", s.lset, w.step, w.h.TestExpression(), g.h.TestExpression())
			case w.h == nil && !almost.Equal(w.f, g.f, 1e-6):
				return fmt.Errorf("series %s: want %v, got %v", s.lset, want, s.pts)
			}
		}
	}
	for h, e := range exp {
		if _, ok := got[h]; !ok {
			return fmt.Errorf("expected series %s not found", e.lset)
		}
	}
	return nil
}

func checkFailure(ev *confEval, err error) error {
	switch {
	case err == nil:
		return errors.New("expected an error, got none")
	case ev.failMsg != "" && err.Error() != ev.failMsg:
		return fmt.Errorf("expected error %q, got %q", ev.failMsg, err.Error())
	case ev.failRegex != nil && !ev.failRegex.MatchString(err.Error()):
		return fmt.Errorf("expected error matching %q, got %q", ev.failRegex, err.Error())
	}
	return nil
}

func compareInstant(ev *confEval, res Result) error {
	if ev.scalar != nil {
		if !res.Scalar {
			return fmt.Errorf("expected scalar %v, got vector %v", *ev.scalar, res.Vector)
		}
		if !almost.Equal(*ev.scalar, res.Value, 1e-6) {
			return fmt.Errorf("expected scalar %v, got %v", *ev.scalar, res.Value)
		}
		return nil
	}
	if res.Scalar {
		return fmt.Errorf("expected a vector, got scalar %v", res.Value)
	}
	exp := map[uint64]confExpected{}
	for _, e := range ev.expected {
		exp[e.lset.Hash()] = e
	}
	seen := map[uint64]bool{}
	for pos, s := range res.Vector {
		h := s.Labels.Hash()
		e, ok := exp[h]
		if !ok {
			return fmt.Errorf("unexpected metric %s in result, has value %v", s.Labels, s.F)
		}
		if ev.ordered && e.pos != pos+1 {
			return fmt.Errorf("expected metric %s at position %d but was at %d", s.Labels, e.pos, pos+1)
		}
		if len(e.vals) == 0 || e.vals[0].Omitted {
			return fmt.Errorf("expected no value for %s, got %v", s.Labels, s.F)
		}
		switch w := e.vals[0]; {
		case w.Histogram == nil && s.H != nil:
			return fmt.Errorf("expected float %v for %s but got histogram %s", w.Value, s.Labels, s.H.TestExpression())
		case w.Histogram != nil && s.H == nil:
			return fmt.Errorf("expected histogram %s for %s but got float %v", w.Histogram.TestExpression(), s.Labels, s.F)
		case w.Histogram != nil && !sameHistogram(w.Histogram, s.H, w.CounterResetHintSet):
			return fmt.Errorf("expected %s for %s but got %s", w.Histogram.TestExpression(), s.Labels, s.H.TestExpression())
		}
		if !almost.Equal(e.vals[0].Value, s.F, 1e-6) {
			return fmt.Errorf("expected %v for %s but got %v", e.vals[0].Value, s.Labels, s.F)
		}
		seen[h] = true
	}
	for h, e := range exp {
		if !seen[h] {
			return fmt.Errorf("expected metric %s with %v not found", e.lset, e.vals)
		}
	}
	return nil
}

// sameHistogram is upstream's compareNativeHistogram on compacted copies
// (its result is shared with the plan, and Compact works in place): the
// hint is compared only when the script sets it.
func sameHistogram(exp, got *histogram.FloatHistogram, hintSet bool) bool {
	exp, got = exp.Copy().Compact(0), got.Copy().Compact(0)
	if exp.Schema != got.Schema || !almost.Equal(exp.Count, got.Count, 1e-6) || !almost.Equal(exp.Sum, got.Sum, 1e-6) {
		return false
	}
	if exp.UsesCustomBuckets() && !histogram.CustomBucketBoundsMatch(exp.CustomValues, got.CustomValues) {
		return false
	}
	if exp.ZeroThreshold != got.ZeroThreshold || !almost.Equal(exp.ZeroCount, got.ZeroCount, 1e-6) {
		return false
	}
	floatsMatch := func(a, b []float64) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if !almost.Equal(a[i], b[i], 1e-6) {
				return false
			}
		}
		return true
	}
	spansMatch := func(a, b []histogram.Span) bool {
		if len(a) == 0 && len(b) == 0 {
			return true
		}
		return slices.Equal(a, b)
	}
	if !spansMatch(exp.NegativeSpans, got.NegativeSpans) || !floatsMatch(exp.NegativeBuckets, got.NegativeBuckets) ||
		!spansMatch(exp.PositiveSpans, got.PositiveSpans) || !floatsMatch(exp.PositiveBuckets, got.PositiveBuckets) {
		return false
	}
	return !hintSet || exp.CounterResetHint == got.CounterResetHint
}

// nhcbSeries is what load_with_nhcb adds for the classic histograms of one
// load (defs: its series, with their float samples): for each group of
// _bucket, _count and _sum series, a native histogram with custom buckets
// per timestamp, named without the suffix (promqltest's
// appendCustomHistogram, through Prometheus's convertnhcb).
func nhcbSeries(t *testing.T, defs map[uint64]*confSeries) []*confSeries {
	t.Helper()
	type wrapper struct {
		lset labels.Labels
		byTs map[int64]convertnhcb.TempHistogram
	}
	groups := map[uint64]*wrapper{}
	var order []uint64
	add := func(m labels.Labels, name string, smpls []store.Sample, update func(*convertnhcb.TempHistogram, float64)) {
		base := convertnhcb.GetHistogramMetricBase(m, name)
		h := base.Hash()
		w, ok := groups[h]
		if !ok {
			w = &wrapper{lset: base, byTs: map[int64]convertnhcb.TempHistogram{}}
			groups[h] = w
			order = append(order, h)
		}
		for _, s := range smpls {
			th, ok := w.byTs[s.T]
			if !ok {
				th = convertnhcb.NewTempHistogram()
			}
			update(&th, s.V)
			w.byTs[s.T] = th
		}
	}
	keys := make([]uint64, 0, len(defs))
	for h := range defs {
		keys = append(keys, h)
	}
	slices.SortFunc(keys, func(a, b uint64) int { return labels.Compare(defs[a].lset, defs[b].lset) })
	for _, h := range keys {
		d := defs[h]
		suffix, name := convertnhcb.GetHistogramMetricBaseName(d.lset.Get(model.MetricNameLabel))
		switch suffix {
		case convertnhcb.SuffixBucket:
			le, err := strconv.ParseFloat(d.lset.Get(labels.BucketLabel), 64)
			if err != nil || math.IsNaN(le) {
				continue
			}
			add(d.lset, name, d.samples, func(th *convertnhcb.TempHistogram, f float64) { _ = th.SetBucketCount(le, f) })
		case convertnhcb.SuffixCount:
			add(d.lset, name, d.samples, func(th *convertnhcb.TempHistogram, f float64) { _ = th.SetCount(f) })
		case convertnhcb.SuffixSum:
			add(d.lset, name, d.samples, func(th *convertnhcb.TempHistogram, f float64) { _ = th.SetSum(f) })
		}
	}
	var out []*confSeries
	for _, gh := range order {
		w := groups[gh]
		s := &confSeries{lset: w.lset}
		ts := make([]int64, 0, len(w.byTs))
		for t := range w.byTs {
			ts = append(ts, t)
		}
		slices.Sort(ts)
		for _, tm := range ts {
			th := w.byTs[tm]
			h, fh, err := th.Convert()
			require.NoError(t, err)
			if fh == nil {
				require.NoError(t, h.Validate())
				fh = h.ToFloat(nil)
			}
			require.NoError(t, fh.Validate())
			s.samples = append(s.samples, store.Sample{T: tm})
			s.hists = append(s.hists, fh)
		}
		out = append(out, s)
	}
	return out
}

// runMatrixEval evaluates an instant eval whose result is a range vector
// (the raw samples of a range selector, query.MatrixPlan) and compares
// each series' samples with the expected values at from + i·step.
func runMatrixEval(ev *confEval, cerr error) error {
	err := cerr
	type series struct {
		lset   labels.Labels
		floats []store.Sample
		hists  []store.HSample
	}
	got := map[uint64]*series{}
	if err == nil {
		err = ev.mplan.Eval(context.Background(), ev.at, func(l labels.Labels, fs []store.Sample, hs []store.HSample) error {
			se := &series{lset: l, floats: slices.Clone(fs)}
			for _, h := range hs {
				se.hists = append(se.hists, store.HSample{T: h.T, H: *h.H.Copy()})
			}
			got[l.Hash()] = se
			return nil
		})
	}
	if ev.fail {
		return checkFailure(ev, err)
	}
	if err != nil {
		return err
	}
	exp := map[uint64]confExpected{}
	for _, e := range ev.expected {
		exp[e.lset.Hash()] = e
	}
	for h, s := range got {
		e, ok := exp[h]
		if !ok {
			return fmt.Errorf("unexpected series %s in result", s.lset)
		}
		var wantF []store.Sample
		var wantH []parser.SequenceValue
		var wantHT []int64
		for i, v := range e.vals {
			ts := ev.matrix.from + int64(i)*ev.matrix.step
			switch {
			case v.Histogram != nil:
				wantH, wantHT = append(wantH, v), append(wantHT, ts)
			case !v.Omitted:
				wantF = append(wantF, store.Sample{T: ts, V: v.Value})
			}
		}
		if len(wantF) != len(s.floats) || len(wantH) != len(s.hists) {
			return fmt.Errorf("series %s: want %v and %d histograms, got %v and %d histograms", s.lset, wantF, len(wantH), s.floats, len(s.hists))
		}
		for i, w := range wantF {
			if g := s.floats[i]; w.T != g.T || !almost.Equal(w.V, g.V, 1e-6) {
				return fmt.Errorf("series %s: want %v, got %v", s.lset, wantF, s.floats)
			}
		}
		for i, w := range wantH {
			if g := &s.hists[i]; wantHT[i] != g.T || !sameHistogram(w.Histogram, &g.H, w.CounterResetHintSet) {
				return fmt.Errorf("series %s: histogram %d: want %s at %d, got %s at %d", s.lset, i, w.Histogram.TestExpression(), wantHT[i], g.H.TestExpression(), g.T)
			}
		}
	}
	for h, e := range exp {
		if _, ok := got[h]; !ok {
			return fmt.Errorf("expected series %s not found", e.lset)
		}
	}
	return nil
}
