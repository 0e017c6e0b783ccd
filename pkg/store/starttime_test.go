package store

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAppendStart checks start-time recording and the start-time reset
// count (otlp-contract.md §9.3) step by step.
func TestAppendStart(t *testing.T) {
	s := New(Config{Retention: time.Hour, Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	ref := mustCreate(t, s, 1, "__name__", "c_total")
	_, ok := s.StartTime(ref)
	assert.False(t, ok, "none before the first start time")
	for i, st := range []struct {
		t       int64
		v       float64
		start   int64
		wantErr error
		want    int64 // recorded start time afterwards
		resets  float64
	}{
		{t: 100_000, v: 10, start: 50_000, want: 50_000},
		{t: 110_000, v: 12, start: 50_000, want: 50_000},
		{t: 120_000, v: 12, start: 60_000, want: 60_000, resets: 1},                                // equal value counts as rising
		{t: 130_000, v: 3, start: 70_000, want: 70_000, resets: 1},                                 // fell: a value reset, not counted
		{t: 140_000, v: 4, start: 150_000, want: 70_000, resets: 1},                                // after t: ignored
		{t: 150_000, v: 5, start: 0, want: 70_000, resets: 1},                                      // none
		{t: 150_000, v: 9, start: 80_000, want: 70_000, resets: 1, wantErr: ErrDuplicateTimestamp}, // rejected: nothing changes
		{t: 140_000, v: 9, start: 80_000, want: 70_000, resets: 1, wantErr: ErrOutOfOrder},
		{t: 160_000, v: staleNaN, start: 90_000, want: 70_000, resets: 1}, // markers carry none
		{t: 170_000, v: 6, start: 90_000, want: 90_000, resets: 1},        // after a marker: not rising from a value
		{t: 180_000, v: 7, start: 95_000, want: 95_000, resets: 2},
	} {
		err := s.AppendStart(ref, st.t, st.v, st.start)
		if st.wantErr != nil {
			require.ErrorIs(t, err, st.wantErr, "step %d", i)
		} else {
			require.NoError(t, err, "step %d", i)
		}
		got, ok := s.StartTime(ref)
		assert.True(t, ok, "step %d", i)
		assert.Equal(t, st.want, got, "step %d", i)
		assert.InDelta(t, st.resets, testutil.ToFloat64(s.m.startResets), 0, "step %d", i)
	}
	assert.Len(t, s.Range(nil, ref, 0, 1_000_000), 9, "the samples are Append's")
}

// TestStartTimeClearedOnRefReuse: a ref handed to a new series after a
// sweep carries no start time of the old one.
func TestStartTimeClearedOnRefReuse(t *testing.T) {
	clk := &movingClock{}
	clk.ms.Store(1_000_000)
	s := New(Config{Retention: time.Minute, Freshness: -1}, Settings{Now: clk.now})
	old := mustCreate(t, s, 1, "__name__", "x_total")
	require.NoError(t, s.AppendStart(old, 1_000_000, 1, 900_000))
	clk.ms.Store(1_100_000)
	require.Equal(t, 1, s.Sweep())
	_, ok := s.StartTime(old)
	assert.False(t, ok, "a deleted series has none")
	s.Sweep()
	reused := mustCreate(t, s, 2, "__name__", "y_total")
	require.Equal(t, old, reused)
	_, ok = s.StartTime(reused)
	assert.False(t, ok)
	require.NoError(t, s.AppendStart(reused, 1_100_000, 1, 1_050_000))
	assert.Zero(t, testutil.ToFloat64(s.m.startResets), "a new series' first start time is no reset")
}

// TestAppendStartConcurrent: writers of one series racing with the same
// new start time count the change exactly once (run with -race).
func TestAppendStartConcurrent(t *testing.T) {
	s := New(Config{Retention: time.Hour, Freshness: -1}, Settings{Now: fixedClock(10_000_000)})
	ref := mustCreate(t, s, 1, "__name__", "c_total")
	const base = 9_000_000
	require.NoError(t, s.AppendStart(ref, base, base, 1))
	const phases = 5
	for p := range int64(phases) {
		var wg sync.WaitGroup
		for w := range int64(4) {
			wg.Go(func() {
				for i := range int64(50) {
					ts := base + (p+1)*10_000 + i*4 + w
					// Out-of-order rejections are expected; they change nothing.
					_ = s.AppendStart(ref, ts, float64(ts), 2+p)
				}
			})
		}
		wg.Wait()
		got, ok := s.StartTime(ref)
		require.True(t, ok)
		assert.Equal(t, 2+p, got)
	}
	assert.InDelta(t, phases, testutil.ToFloat64(s.m.startResets), 0, "one per change")
}
