package store

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countingCtx counts Err calls and reports context.Canceled from call
// failAt on (never when failAt is 0).
type countingCtx struct {
	context.Context
	calls, failAt int
}

func (c *countingCtx) Err() error {
	c.calls++
	if c.failAt > 0 && c.calls >= c.failAt {
		return context.Canceled
	}
	return nil
}

// TestSelectContextStops: SelectContext and FilterContext check their
// context every stopCheckEvery candidates, on each selection path
// (postings driver, union of a regex's values, all series, alias targets,
// Filter's candidates), stop at the first check that finds it done, and
// otherwise answer exactly what Select and Filter do.
func TestSelectContextStops(t *testing.T) {
	const n = 50 * stopCheckEvery
	s := New(Config{}, Settings{})
	all := make([]SeriesRef, 0, n)
	for i := range n {
		all = append(all, mustCreate(t, s, uint64(i+1), "__name__", "x", "pod", "p"+strconv.Itoa(i)))
	}
	_, ok := s.AddAlias("x_legacy", "x")
	require.True(t, ok)
	m := labels.MustNewMatcher
	for _, tc := range []struct {
		name string
		ms   []*labels.Matcher
	}{
		{"postings driver", []*labels.Matcher{m(labels.MatchEqual, "__name__", "x"), m(labels.MatchRegexp, "pod", "p.*1")}},
		{"union of values", []*labels.Matcher{m(labels.MatchRegexp, "pod", "p.*1")}},
		{"all series", []*labels.Matcher{m(labels.MatchNotRegexp, "pod", "p.*1")}},
		{"alias", []*labels.Matcher{m(labels.MatchEqual, "__name__", "x_legacy"), m(labels.MatchRegexp, "pod", "p.*1")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := s.Select(nil, tc.ms...)
			require.NotEmpty(t, want)
			ctx := &countingCtx{Context: context.Background()}
			got, err := s.SelectContext(ctx, nil, tc.ms...)
			require.NoError(t, err)
			assert.Equal(t, want, got)
			assert.GreaterOrEqual(t, ctx.calls, n/stopCheckEvery, "checked as it went")

			ctx = &countingCtx{Context: context.Background(), failAt: 3}
			_, err = s.SelectContext(ctx, nil, tc.ms...)
			require.ErrorIs(t, err, context.Canceled)
			assert.Equal(t, 3, ctx.calls, "stopped at the first failed check")
		})
	}
	t.Run("filter", func(t *testing.T) {
		ms := []*labels.Matcher{m(labels.MatchRegexp, "pod", "p.*1")}
		want := s.Filter(nil, all, ms...)
		ctx := &countingCtx{Context: context.Background()}
		got, err := s.FilterContext(ctx, nil, all, ms...)
		require.NoError(t, err)
		assert.Equal(t, want, got)
		assert.Equal(t, n/stopCheckEvery, ctx.calls)
		ctx = &countingCtx{Context: context.Background(), failAt: 2}
		_, err = s.FilterContext(ctx, nil, all, ms...)
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 2, ctx.calls)
	})
	t.Run("passed deadline", func(t *testing.T) {
		// A deadline in the past counts even before its timer fires.
		ctx := lateDeadline{context.Background()}
		_, err := s.SelectContext(ctx, nil, m(labels.MatchRegexp, "pod", ".+"))
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

// lateDeadline has a deadline in the past but no error yet, as a context
// whose timer has not fired.
type lateDeadline struct{ context.Context }

func (lateDeadline) Deadline() (time.Time, bool) { return time.Unix(0, 0), true }
