package store

import (
	"bytes"
	"encoding/binary"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// appendStart appends one sample with start time st through an Appender
// and reports whether it counted a start-time reset.
func appendStart(s *Store, ref SeriesRef, t int64, v float64, st int64) (reset bool, err error) {
	a := s.Appender()
	err = a.Append(ref, st, t, v)
	return a.Commit().StartResets == 1, err
}

// TestAppendStart checks start-time recording and the start-time reset
// count (otlp-contract.md §9.3) step by step.
func TestAppendStart(t *testing.T) {
	s := New(Config{Retention: time.Hour, Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	ref := mustCreate(t, s, 1, "__name__", "c_total")
	_, ok := s.StartTime(ref)
	assert.False(t, ok, "none before the first start time")
	resets := 0.0
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
		reset, err := appendStart(s, ref, st.t, st.v, st.start)
		if reset {
			resets++
		}
		if st.wantErr != nil {
			require.ErrorIs(t, err, st.wantErr, "step %d", i)
		} else {
			require.NoError(t, err, "step %d", i)
		}
		got, ok := s.StartTime(ref)
		assert.True(t, ok, "step %d", i)
		assert.Equal(t, st.want, got, "step %d", i)
		assert.InDelta(t, st.resets, resets, 0, "step %d", i)
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
	_, err := appendStart(s, old, 1_000_000, 1, 900_000)
	require.NoError(t, err)
	clk.ms.Store(1_100_000)
	require.Equal(t, 1, s.Sweep())
	_, ok := s.StartTime(old)
	assert.False(t, ok, "a deleted series has none")
	s.Sweep()
	reused := mustCreate(t, s, 2, "__name__", "y_total")
	require.Equal(t, old, reused)
	_, ok = s.StartTime(reused)
	assert.False(t, ok)
	reset, err := appendStart(s, reused, 1_100_000, 1, 1_050_000)
	require.NoError(t, err)
	assert.False(t, reset, "a new series' first start time is no reset")
}

// TestAppendStartConcurrent: writers of one series racing with the same
// new start time count the change exactly once (run with -race).
func TestAppendStartConcurrent(t *testing.T) {
	s := New(Config{Retention: time.Hour, Freshness: -1}, Settings{Now: fixedClock(10_000_000)})
	ref := mustCreate(t, s, 1, "__name__", "c_total")
	const base = 9_000_000
	_, err := appendStart(s, ref, base, base, 1)
	require.NoError(t, err)
	const phases = 5
	var resets atomic.Int64
	for p := range int64(phases) {
		var wg sync.WaitGroup
		for w := range int64(4) {
			wg.Go(func() {
				for i := range int64(50) {
					ts := base + (p+1)*10_000 + i*4 + w
					// Out-of-order rejections are expected; they change nothing.
					if reset, _ := appendStart(s, ref, ts, float64(ts), 2+p); reset {
						resets.Add(1)
					}
				}
			})
		}
		wg.Wait()
		got, ok := s.StartTime(ref)
		require.True(t, ok)
		assert.Equal(t, 2+p, got)
	}
	assert.Equal(t, int64(phases), resets.Load(), "one per change")
}

// TestStartTimeSnapshot: start times survive a snapshot (format version
// 2), a live start time wins over the snapshot's, and version-1
// snapshots, which have none, still load.
func TestStartTimeSnapshot(t *testing.T) {
	src := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	with := mustCreate(t, src, 1, "__name__", "c_total", "pod", "a")
	_, err := appendStart(src, with, 990_000, 5, 900_000)
	require.NoError(t, err)
	without := mustCreate(t, src, 2, "__name__", "c_total", "pod", "b")
	require.NoError(t, src.Append(without, 990_000, 5))
	live := mustCreate(t, src, 3, "__name__", "c_total", "pod", "c")
	_, err = appendStart(src, live, 990_000, 5, 910_000)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, src.WriteSnapshot(&buf))
	assert.Equal(t, uint32(snapshotVersion), binary.LittleEndian.Uint32(buf.Bytes()[8:]))

	dst := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	pushed := mustCreate(t, dst, 3, "__name__", "c_total", "pod", "c")
	_, err = appendStart(dst, pushed, 995_000, 6, 920_000)
	require.NoError(t, err)
	restored, _, err := dst.ReadSnapshot(&buf)
	require.NoError(t, err)
	assert.Equal(t, 2, restored, "pod c gained no samples (its snapshot sample is older)")
	for h, want := range map[uint64]int64{1: 900_000, 2: 0, 3: 920_000} {
		ref, ok := dst.Lookup(h)
		require.True(t, ok)
		got, _ := dst.StartTime(ref)
		assert.Equal(t, want, got, "hash %d", h)
	}

	v1 := sealSnapshot(1, append(rawSeries(7, []string{"__name__", "old_total"}, []int64{990_000, 995_000}), 0))
	old := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	restored, _, err = old.ReadSnapshot(bytes.NewReader(v1))
	require.NoError(t, err)
	assert.Equal(t, 1, restored)
	ref, ok := old.Lookup(7)
	require.True(t, ok)
	assert.Len(t, old.Range(nil, ref, 0, math.MaxInt64), 2)
	_, ok = old.StartTime(ref)
	assert.False(t, ok)
}
