package query

import (
	"context"
	"fmt"
	"regexp/syntax"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRegexBudget: a query whose regular expressions would compile to
// more than MaxRegexSize instructions each, or MaxQueryRegexSize
// together, is refused before anything compiles them; what stays under
// is accepted, and a plain alternation of literals in a matcher (matched
// as a set, never compiled) does not count.
func TestRegexBudget(t *testing.T) {
	big := `[a-z]{1000}` // about 2,005 instructions: under MaxRegexSize
	pods := make([]string, 1500)
	for i := range pods {
		pods[i] = fmt.Sprintf("pod-%d", i)
	}
	set := strings.Join(pods, "|") // 12 KB of literals
	// Literals without common prefixes, which Go's parser cannot factor:
	// about 6,000 instructions when compiled.
	words := make([]string, 300)
	for i := range words {
		w := make([]byte, 20)
		for j := range w {
			w[j] = byte('a' + (i*7919+j*104729+i*j*31)%26)
		}
		words[i] = string(w)
	}
	wordSet := strings.Join(words, "|")
	sel := func(n int) string {
		var b strings.Builder
		b.WriteString("x")
		for i := range n {
			fmt.Fprintf(&b, ` + x{a%d=~%q}`, i, big)
		}
		return b.String()
	}
	e := NewEngine(storeWith(t, nil))
	for _, tc := range []struct {
		name, q string
		parse   bool // refused by Parse (as a *ParseError), else by Compile
		ok      bool
	}{
		{"one large repetition", `x{pod=~".{0,1000}.{0,1000}"}`, true, false},
		{"negated", `x{pod!~"(?:.?){1000}"}`, true, false},
		{"quoted name", `{"x", "pod"=~"(?:.?){1000}"}`, true, false},
		{"comment before the pattern", "x{pod=~ # the parser skips it\n \"(?:.?){1000}\"}", true, false},
		{"largest accepted", `x{pod=~"` + big + `"}`, true, true},
		{"four largest", sel(4), true, true},
		{"five largest add up", sel(5), true, false},
		{"literal set in a matcher", `x{pod=~"` + set + `"}`, true, true},
		{"unfactorable literal set in a matcher", `x{pod=~"` + wordSet + `"}`, true, true},
		{"label_replace", `label_replace(x, "a", "$1", "pod", "(?:.?){1000}")`, false, false},
		{"literal set in label_replace", `label_replace(x, "a", "$1", "pod", "` + wordSet + `")`, false, false},
		{"matchers and label_replace add up", `label_replace(label_replace(` + sel(3) + `, "a", "$1", "b", "` + big + `"), "a", "$1", "b", "` + big + `")`, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expr, err := e.Parse(tc.q)
			if tc.parse && !tc.ok {
				var pe *ParseError
				require.ErrorAs(t, err, &pe)
				require.ErrorIs(t, err, ErrRegexTooComplex)
				return
			}
			require.NoError(t, err)
			_, err = e.Compile(expr, Options{})
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrRegexTooComplex)
		})
	}
}

// TestRegexCompileBounded is the regression for the worst matcher the
// query length allowed: 1,500 copies of .{0,1000} (13.5 KB) made
// Prometheus's parser allocate 1.1 GB and work for seconds compiling
// one regular expression. It is refused now before the parser runs,
// having allocated next to nothing.
func TestRegexCompileBounded(t *testing.T) {
	q := `x{a=~"` + strings.Repeat(".{0,1000}", 1500) + `"}`
	require.Less(t, len(q), MaxQueryLength)
	e := NewEngine(storeWith(t, nil))
	var err error
	alloc := allocDuring(func() { _, err = e.Parse(q) })
	require.ErrorIs(t, err, ErrRegexTooComplex)
	assert.Less(t, alloc, uint64(1<<20))
	assert.Contains(t, err.Error(), "(13508 bytes)", "the query is echoed clipped")
}

// TestRegexSizeBoundsProgram: regexSize is an upper bound of the
// instructions regexp compiles a pattern to, and not a loose one.
func TestRegexSizeBoundsProgram(t *testing.T) {
	for _, re := range []string{
		`vllm:num_requests_(running|waiting)`, `.*error.*`, `pod-[0-9]+-[a-z]{5}`, `(?i)foo.*bar`,
		`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, `.{0,63}`, `[a-z]{1000}`, `(?:.?){1000}[yz]`, `(?:\w+\s*){10}`,
		`[^/]+/[^/]+`, `(a|b|c|d)+x`, `(?:[a-z0-9-]{1,63}\.){1,10}`, `((a{2,5}){3}){4}`, `a{5,}`,
		`(?:ab){3,}c`, `x*?y+?`, `^$`, `\bfoo\b`, `(?i)straße`, `a|b|c`, `()`, `a{0}`, `(?:a{0,}){0,3}`,
	} {
		tree, err := syntax.Parse(re, syntax.Perl|syntax.DotNL)
		require.NoError(t, err, re)
		est := regexSize(tree, 1<<30)
		prog, err := syntax.Compile(tree.Simplify())
		require.NoError(t, err, re)
		// The program adds a fail and a match instruction to the tree's.
		actual := len(prog.Inst) - 2
		assert.GreaterOrEqual(t, est, actual, re)
		assert.LessOrEqual(t, est, 2*actual+4, re)
	}
	// Counting stops at the limit.
	tree, err := syntax.Parse(`(.{30}.{30}){30}`, syntax.Perl|syntax.DotNL)
	require.NoError(t, err)
	assert.Equal(t, 100, regexSize(tree, 100))
}

// countingCtx counts Err calls and answers context.Canceled from call
// failAt on.
type countingCtx struct {
	context.Context
	calls, failAt int
}

func (c *countingCtx) Err() error {
	if c.calls++; c.calls >= c.failAt {
		return context.Canceled
	}
	return nil
}

// TestRegexWorkHonoursContext: matching regular expressions is the work
// that is not charged one unit per step of cost (a match costs up to
// MaxRegexSize steps per byte of the value), so selecting and
// label_replace check the context every few series. A context that is
// done by its second check stops the evaluation there: on a fresh plan
// inside the selection, on a warm one inside label_replace. Before, 2,000
// series charged 2,000 units, short of a context check, and both
// evaluations ran to the end.
func TestRegexWorkHonoursContext(t *testing.T) {
	series := map[string][]point{}
	for i := range 2000 {
		series[fmt.Sprintf(`x{pod="pod-%d"}`, i)] = counter(0, 15, 10, 0, 1)
	}
	e := NewEngine(storeWith(t, series))
	for _, tc := range []struct {
		name, q string
		warm    bool
	}{
		{"selection", `count(x{pod=~"pod-.*[0-9]"})`, false},
		{"label_replace", `count(label_replace(x, "a", "$1", "pod", "pod-(.*[0-9])"))`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := e.Query(tc.q, Options{})
			require.NoError(t, err)
			if tc.warm {
				res, err := p.Eval(context.Background(), 100_000)
				require.NoError(t, err)
				require.Len(t, res.Vector, 1)
				require.InDelta(t, 2000.0, res.Vector[0].F, 0)
			}
			ctx := &countingCtx{Context: context.Background(), failAt: 2}
			_, err = p.Eval(ctx, 100_000)
			require.ErrorIs(t, err, context.Canceled)
			assert.Equal(t, 2, ctx.calls, "stopped at the first check after Eval's own")
		})
	}
}
