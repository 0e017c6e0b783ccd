package query

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// compileSeeds are the trigger shapes of promql-subset.md §2 plus edge
// cases of the grammar.
var compileSeeds = []string{
	`sum(vllm:num_requests_waiting{model_name="m"})`,
	`sum(rate(x_total[2m]))`,
	`sum(x) or vector(0)`,
	`sum(a) / clamp_min(sum(b), 1)`,
	`histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))`,
	`sum(avg_over_time(x[30s]))`,
	`sum(rate(x[1m]) > bool 0)`,
	`{"my.metric", a="b"}`,
	`foo{"utf8.label"="x"} offset -1m`,
	`label_replace(up, "a", "$1", "b", "(.*)")`,
	`topk(3, x) and on (pod) group_left y`,
	`-(1 + 2) ^ 3 % time()`,
	`scalar(x) * absent(y{job="j"})`,
	`x @ 100`, `x[5m:1m]`, `"s"`, `x[5m]`, `sum(x`, `{job=~".*"}`,
}

// limitSeeds reach the query length and token limits (ErrQueryTooLong,
// ErrQueryTooComplex). Only inputs of kilobytes reach those branches, so
// they must be in the seed corpus, whose coverage is the fuzzer's
// baseline: otherwise the first mutated input to reach one is
// "interesting", and Go's minimiser, whose subset pass tries every (i, j)
// cut of the input, cannot shorten it and runs on it for the whole
// -fuzzminimizetime, reporting 0 execs/s meanwhile (the stall a fresh run
// hit after about 10 s, when that was 60 s; TestMain now bounds it, see
// pkg/internal/fuzzflags). They are cheap shapes on purpose: a mutant
// that falls back under a limit fails to parse at its second token, where
// a deeply nested one would take milliseconds to parse.
func limitSeeds() []string {
	return []string{
		strings.Repeat("x ", MaxQueryTokens) + "x", // one token too many
		strings.Repeat(" ", MaxQueryLength) + "x",  // one byte too many
	}
}

// FuzzCompile checks that compiling any text never panics: it compiles, or
// fails with a *ParseError, an error matching ErrUnsupported or
// ErrRegexTooComplex, or a label_replace/label_join argument error; a compiled plan evaluates
// without panicking.
//
// go test -run '^$' -fuzz '^FuzzCompile$' -fuzztime 30s ./pkg/query
func FuzzCompile(f *testing.F) {
	for _, s := range compileSeeds {
		f.Add(s)
	}
	for _, s := range limitSeeds() {
		f.Add(s)
	}
	// Every eval of our own scripts seeds the corpus too.
	paths, err := filepath.Glob("testdata/*.test")
	require.NoError(f, err)
	for _, path := range paths {
		text, err := os.ReadFile(path)
		require.NoError(f, err)
		for line := range strings.SplitSeq(string(text), "\n") {
			line = strings.TrimSpace(line)
			if m := patEvalInstant.FindStringSubmatch(line); m != nil {
				f.Add(m[3])
			} else if m := patEvalRange.FindStringSubmatch(line); m != nil {
				f.Add(m[5])
			}
		}
	}
	st := storeWith(f, map[string][]point{
		`x{pod="a"}`:       counter(0, 15, 10, 0, 1),
		`x_bucket{le="1"}`: counter(0, 15, 10, 0, 1),
	})
	e := NewEngine(st)
	f.Fuzz(func(t *testing.T, q string) {
		p, err := e.Query(q, Options{MaxSamples: 100_000})
		if err != nil {
			checkCompileError(t, err)
			return
		}
		_, _ = p.Eval(context.Background(), 100_000)
	})
}

// TestLimitSeeds: each limit seed reaches the branch it is there for, so
// a change of the limits that leaves them behind fails here rather than
// bringing the fuzzer's stall back.
func TestLimitSeeds(t *testing.T) {
	seeds := limitSeeds()
	e := NewEngine(storeWith(t, nil))
	_, err := e.Query(seeds[0], Options{})
	require.ErrorIs(t, err, ErrQueryTooComplex)
	_, err = e.Query(seeds[0][2:], Options{}) // one token fewer
	require.NotErrorIs(t, err, ErrQueryTooComplex)
	_, err = e.Query(seeds[1], Options{})
	require.ErrorIs(t, err, ErrQueryTooLong)
	_, err = e.Query(seeds[1][1:], Options{}) // one byte fewer
	require.NotErrorIs(t, err, ErrQueryTooLong)
}

func checkCompileError(t *testing.T, err error) {
	t.Helper()
	var pe *ParseError
	if errors.As(err, &pe) || errors.Is(err, ErrUnsupported) || errors.Is(err, ErrRegexTooComplex) ||
		strings.Contains(err.Error(), "in label_replace()") || strings.Contains(err.Error(), "in label_join()") {
		return
	}
	t.Fatalf("unexpected compile error type %T: %v", err, err)
}

// TestUpstreamCorpusCompiles compiles every eval expression of the upstream
// corpus with the production engine (server-default parser options): each
// compiles or is rejected with a typed error, and none panics.
func TestUpstreamCorpusCompiles(t *testing.T) {
	dir := filepath.Join(prometheusModuleDir(t), "promql", "promqltest", "testdata")
	files, err := filepath.Glob(filepath.Join(dir, "*.test"))
	require.NoError(t, err)
	e := NewEngine(storeWith(t, nil))
	n := 0
	for _, path := range files {
		text, err := os.ReadFile(path)
		require.NoError(t, err)
		for line := range strings.SplitSeq(string(text), "\n") {
			line = strings.TrimSpace(line)
			var q string
			if m := patEvalInstant.FindStringSubmatch(line); m != nil {
				q = m[3]
			} else if m := patEvalRange.FindStringSubmatch(line); m != nil {
				q = m[5]
			} else {
				continue
			}
			n++
			if _, err := e.Query(q, Options{}); err != nil {
				checkCompileError(t, err)
			}
		}
	}
	require.Greater(t, n, 1000, "corpus evals found")
}
