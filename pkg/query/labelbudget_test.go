package query

import (
	"context"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// NestedLabelReplace is the hostile trigger of issue #12 class 2: depth
// nested label_replace calls over vector(1), each replacing label a with
// factor copies of itself, so a's value grows factor-fold per level
// (10 bytes × 10^depth). At depth 7 and factor 10 the value would be
// 100 MB, past the 16 MiB Prometheus's label encoder accepts (it panics).
func NestedLabelReplace(depth, factor int) string {
	q := `label_replace(vector(1), "a", "xxxxxxxxxx", "", "")`
	repl := strings.Repeat("$1", factor)
	for range depth {
		q = fmt.Sprintf(`label_replace(%s, "a", "%s", "a", "(.*)")`, q, repl)
	}
	return q
}

// nestedLabelJoin doubles label a per level: label_join(x, "a", "", "a", "a").
func nestedLabelJoin(depth int) string {
	q := `label_replace(vector(1), "a", "xxxxxxxxxx", "", "")`
	for range depth {
		q = fmt.Sprintf(`label_join(%s, "a", "", "a", "a")`, q)
	}
	return q
}

// allocDuring returns the bytes the heap allocated while f ran.
func allocDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestLabelBudget is issue #12 class 2's budget half: a query whose labels
// grow fails with ErrBudgetExceeded (never a panic), and the heap it
// allocated on the way is bounded by the configured label budget, not by
// the query. Before the label budget existed, the depth-7 query panicked
// inside Prometheus's label builder after allocating hundreds of MB.
func TestLabelBudget(t *testing.T) {
	st := storeWith(t, map[string][]point{
		`x{pod="a", job="j"}`: counter(0, 15, 10, 0, 1),
		`x{pod="b", job="j"}`: counter(0, 15, 10, 0, 1),
	})
	const budget = 1 << 20
	for _, tc := range []struct {
		name   string
		q      string
		budget int64
	}{
		{"label_replace x10 per level, depth 7", NestedLabelReplace(7, 10), budget},
		{"label_replace x100 per level, depth 4", NestedLabelReplace(4, 100), budget},
		{"label_join x2 per level, depth 40", nestedLabelJoin(40), budget},
		{"default budget", NestedLabelReplace(7, 10), 0},
		// A budget above the encoder's limit: the per-value cap still
		// stops the value before the label builder would panic.
		{"value cap under a huge budget", NestedLabelReplace(7, 10), 1 << 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewEngine(st).Query(tc.q, Options{MaxLabelBytes: tc.budget})
			require.NoError(t, err)
			var evalErr error
			alloc := allocDuring(func() {
				require.NotPanics(t, func() { _, evalErr = p.Eval(context.Background(), 100_000) })
			})
			require.ErrorIs(t, evalErr, ErrBudgetExceeded)
			limit := uint64(tc.budget)
			if tc.budget == 0 {
				limit = DefaultMaxLabelBytes
			}
			limit = min(limit, MaxLabelValueBytes)
			// One level's expansion (checked against the room left before
			// it is built), its string copy and the label set built from
			// it: a small multiple of the budget, plus slack for the
			// parser-free evaluation's own buffers.
			assert.LessOrEqual(t, alloc, 4*limit+1<<20, "heap allocated by a failing evaluation is bounded by the budget")
			t.Logf("allocated %d bytes (budget %d)", alloc, limit)
		})
	}
}

// TestLabelBudgetLegitQueries: ordinary label_replace/label_join queries
// are not affected by the default budget, and the budget counts per
// evaluation (a warm plan evaluated again starts from zero).
func TestLabelBudgetLegitQueries(t *testing.T) {
	st := storeWith(t, map[string][]point{
		`x{pod="a", job="j"}`: counter(0, 15, 10, 0, 1),
		`x{pod="b", job="j"}`: counter(0, 15, 10, 0, 1),
	})
	for _, q := range []string{
		`sum(label_replace(x, "p", "$1", "pod", "(.*)"))`,
		`sum by (pj) (label_join(x, "pj", "-", "pod", "job"))`,
		`count(label_replace(x, "a", "$1$1$1$1", "pod", "(.*)"))`,
	} {
		p, err := NewEngine(st).Query(q, Options{MaxLabelBytes: 4 << 10})
		require.NoError(t, err)
		for range 100 { // 100 evaluations create more than 4 KiB in total
			_, err := p.Eval(context.Background(), 100_000)
			require.NoError(t, err, q)
		}
	}
	e := NewEngine(st)
	e.SetDefaults(Options{MaxLabelBytes: 64})
	p, err := e.Query(`label_replace(x, "p", "$1", "pod", "(.*)")`, Options{})
	require.NoError(t, err)
	_, err = p.Eval(context.Background(), 100_000)
	require.ErrorIs(t, err, ErrBudgetExceeded, "the engine's default applies when Options leave it zero")
}

var expandRegexps = []*regexp.Regexp{
	regexp.MustCompile(`^(?s:(.*))$`),
	regexp.MustCompile(`^(?s:(?P<n>x*)(?P<n>.*?)(?P<m>y)?(.*))$`),
}

// TestExpandedLen: the size label_replace charges equals what regexp's
// expansion builds, for every template form ($1, ${1}, $name, ${name},
// $$, malformed $, unmatched and duplicate groups).
func TestExpandedLen(t *testing.T) {
	for _, tpl := range []string{"", "plain", "$1", "${1}x", "$1$1$1", "$n-$m", "${n}${m}z", "$$1", "$", "a$", "${", "${1", "$01", "$10", "$é", "$2$3$4", "$name"} {
		for _, src := range []string{"", "xxab", "xxyz", "héllo"} {
			for _, re := range expandRegexps {
				m := re.FindStringSubmatchIndex(src)
				require.NotNil(t, m)
				assert.Len(t, re.ExpandString(nil, tpl, src, m), expandedLen(re, tpl, m), "template %q src %q re %s", tpl, src, re)
			}
		}
	}
}

// FuzzLabelGrowth evaluates nested label_replace/label_join queries whose
// shape the fuzzer picks (depth, copies per level, separator, seed value):
// an evaluation never panics, fails only with ErrBudgetExceeded, and never
// allocates more than a small multiple of its label budget. It also checks
// that the size charged for a replacement (expandedLen) is the size built,
// with the separator as a template over the seed.
//
// go test -run '^$' -fuzz '^FuzzLabelGrowth$' -fuzztime 30s ./pkg/query
func FuzzLabelGrowth(f *testing.F) {
	f.Add(uint8(7), uint8(10), false, "", "xxxxxxxxxx")
	f.Add(uint8(40), uint8(2), true, "", "x")
	f.Add(uint8(3), uint8(200), false, "-", "abc")
	f.Add(uint8(20), uint8(3), true, "--", "")
	st := storeWith(f, map[string][]point{`x{pod="a"}`: counter(0, 15, 10, 0, 1)})
	e := NewEngine(st)
	const budget = 256 << 10
	f.Fuzz(func(t *testing.T, depth, factor uint8, join bool, sep, seed string) {
		if len(seed) > 64 || len(sep) > 8 || strings.ContainsAny(seed+sep, "\"\\$") {
			return
		}
		q := fmt.Sprintf(`label_replace(x, "a", %q, "", "")`, seed)
		for range int(depth % 64) {
			if join {
				n := int(factor%8) + 1
				q = fmt.Sprintf(`label_join(%s, "a", %q%s)`, q, sep, strings.Repeat(`, "a"`, n))
			} else {
				q = fmt.Sprintf(`label_replace(%s, "a", "%s", "a", "(.*)")`, q, strings.Repeat("$1"+sep, int(factor)))
			}
		}
		// The size charged before a replacement is built is its size.
		for _, re := range expandRegexps {
			if m := re.FindStringSubmatchIndex(seed); m != nil {
				require.Len(t, re.ExpandString(nil, sep, seed, m), expandedLen(re, sep, m), "template %q", sep)
			}
		}
		p, err := e.Query(q, Options{MaxLabelBytes: budget})
		if err != nil {
			checkCompileError(t, err)
			return
		}
		var evalErr error
		alloc := allocDuring(func() { _, evalErr = p.Eval(context.Background(), 100_000) })
		if evalErr != nil {
			require.ErrorIs(t, evalErr, ErrBudgetExceeded, q)
		}
		require.LessOrEqual(t, alloc, uint64(4*budget+1<<20), q)
	})
}
