package store

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func nameIs(n string) *labels.Matcher { return labels.MustNewMatcher(labels.MatchEqual, "__name__", n) }

// TestAliasSelect checks the store side of otlp-contract.md §5's legacy
// alias: Select falls back to the stored names only when the name as
// written has no live series, unions several stored names, keeps the
// other matchers, and the alias never shows up in LabelValues.
func TestAliasSelect(t *testing.T) {
	s := New(Config{Retention: time.Minute, Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	total := mustCreate(t, s, 1, "__name__", "req_total", "pod", "a")
	bytes := mustCreate(t, s, 2, "__name__", "mem_bytes", "pod", "a")
	secs := mustCreate(t, s, 3, "__name__", "mem_seconds", "pod", "b")

	gen := s.Generation()
	id, ok := s.AddAlias("req", "req_total")
	require.True(t, ok)
	assert.Equal(t, s.MetricID("req"), id)
	assert.NotEqual(t, gen, s.Generation(), "cached selections of the alias are redone")
	gen = s.Generation()
	id2, ok := s.AddAlias("req", "req_total")
	require.True(t, ok)
	assert.Equal(t, id, id2)
	assert.Equal(t, gen, s.Generation(), "idempotent")
	assert.Zero(t, testing.AllocsPerRun(100, func() { _, _ = s.AddAlias("req", "req_total") }), "a known pair does not allocate")
	_, ok = s.AddAlias("same", "same")
	assert.False(t, ok, "an alias equal to its name is none")
	_, ok = s.AddAlias("mem", "mem_bytes")
	require.True(t, ok)
	_, ok = s.AddAlias("mem", "mem_seconds")
	require.True(t, ok)

	for _, tc := range []struct {
		name string
		ms   []*labels.Matcher
		want []SeriesRef
	}{
		{"alias", []*labels.Matcher{nameIs("req")}, []SeriesRef{total}},
		{"stored_name", []*labels.Matcher{nameIs("req_total")}, []SeriesRef{total}},
		{"alias_with_matcher", []*labels.Matcher{nameIs("req"), labels.MustNewMatcher(labels.MatchEqual, "pod", "a")}, []SeriesRef{total}},
		{"alias_matcher_excludes", []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "pod", "b"), nameIs("req")}, nil},
		{"two_targets", []*labels.Matcher{nameIs("mem")}, []SeriesRef{bytes, secs}},
		{"two_targets_filtered", []*labels.Matcher{nameIs("mem"), labels.MustNewMatcher(labels.MatchNotEqual, "pod", "a")}, []SeriesRef{secs}},
		{"regex_name_no_fallback", []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "__name__", "req|mem")}, nil},
		{"unknown", []*labels.Matcher{nameIs("nope")}, nil},
	} {
		t.Run("case="+tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, s.Select(nil, tc.ms...))
		})
	}
	assert.Equal(t, []string{"mem_bytes", "mem_seconds", "req_total"}, s.LabelValues(nil, "__name__"))

	// A series under the alias name itself takes precedence.
	own := mustCreate(t, s, 4, "__name__", "req", "pod", "c")
	assert.Equal(t, []SeriesRef{own}, s.Select(nil, nameIs("req")))
	assert.Equal(t, []string{"mem_bytes", "mem_seconds", "req", "req_total"}, s.LabelValues(nil, "__name__"))
}

// TestAliasBounds checks the alias table's bounds: maxAliasTargets names
// per alias and maxAliases aliases; registrations past them are refused.
func TestAliasBounds(t *testing.T) {
	s := New(Config{}, Settings{})
	for i := range maxAliasTargets {
		_, ok := s.AddAlias("a", fmt.Sprintf("a_%d", i))
		require.True(t, ok)
	}
	_, ok := s.AddAlias("a", "a_more")
	assert.False(t, ok, "targets per alias are bounded")
	s.aliases.n.Store(maxAliases)
	_, ok = s.AddAlias("b", "b_total")
	assert.False(t, ok, "aliases are bounded")
	_, ok = s.AddAlias("a", "a_0")
	assert.True(t, ok, "known pairs still resolve")
}

// TestAliasConcurrent registers aliases while other goroutines select
// through them and create series (run with -race).
func TestAliasConcurrent(t *testing.T) {
	s := New(Config{Retention: time.Minute, Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	const n = 200
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			_, _ = s.AddAlias(fmt.Sprintf("m%d", i), fmt.Sprintf("m%d_total", i))
		}
	})
	wg.Go(func() {
		for i := range n {
			_, err := s.Create(uint64(i+1), labels.FromStrings("__name__", fmt.Sprintf("m%d_total", i)))
			assert.NoError(t, err)
		}
	})
	wg.Go(func() {
		var dst []SeriesRef
		for i := range 4 * n {
			dst = s.Select(dst[:0], nameIs(fmt.Sprintf("m%d", i%n)))
			assert.LessOrEqual(t, len(dst), 1)
		}
	})
	wg.Wait()
	for i := range n {
		refs := s.Select(nil, nameIs(fmt.Sprintf("m%d", i)))
		require.Len(t, refs, 1)
		assert.Equal(t, fmt.Sprintf("m%d_total", i), s.Labels(refs[0]).Get("__name__"))
	}
}
