package store

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/value"
)

// startTimes records each series' OTLP start time (otlp-contract.md §9.3)
// in unix ms, indexed by ref, 0 meaning none. It lives beside memSeries
// rather than in it: memSeries is exactly a 32 B size class, and a field
// would cost 16 B per series at 1M series whether or not senders set start
// times; this table costs nothing until the first start time and then 8 B
// per ref slot.
//
// Concurrency contract:
//
//  1. Writers: AppendStart from any goroutine (compare-and-swap on the
//     slot, so concurrent writers of one series count a change once), and
//     Create, under Store.mu, which clears the slot of a reused ref before
//     the new series is published. Growth is serialised by mu.
//  2. Readers: StartTime and AppendStart, lock-free (chunked.at).
//  3. A slot belongs to whichever series holds its ref; a ref is reused
//     only a sweep after its series was deleted (sweep.go), and Create
//     clears the slot before publishing the new series, so a new series
//     never sees its predecessor's start time once it is visible.
type startTimes struct {
	mu  sync.Mutex // serialises growth of tab
	tab chunked[atomic.Int64]
}

// slot returns the start-time slot of ref, growing the table if needed.
func (st *startTimes) slot(ref SeriesRef) *atomic.Int64 {
	if p := st.tab.at(uint32(ref)); p != nil {
		return p
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.tab.ensure(uint32(ref))
}

// clear drops ref's start time; Create calls it for a (re)used ref.
func (st *startTimes) clear(ref SeriesRef) {
	if p := st.tab.at(uint32(ref)); p != nil {
		p.Store(0)
	}
}

// AppendStart is Append for a sample that carries a start time (unix ms)
// of the cumulative series it belongs to. With startMs <= 0, after t, or
// with a stale marker it is exactly Append. Otherwise, once the sample is
// stored, the series' start time becomes startMs, and AppendStart reports
// a start-time reset when that changed a recorded start time while the
// value did not fall below the previous sample (the receiver counts them
// in keda_otel_scaler_receiver_counter_resets_total{cause="start_time"}).
// A falling value is a reset that rate and increase already see; start
// times never change query results (promql-subset.md keeps start-time
// semantics in its Later tier). Of concurrent writers bringing the same
// change, one reports it. It does not allocate once the series' table
// chunk exists, and reads the previous sample only when the start time
// changes.
func (s *Store) AppendStart(ref SeriesRef, t int64, v float64, startMs int64) (reset bool, err error) {
	var n uint64
	reset, err = s.AppendStartCounted(ref, t, v, startMs, &n)
	if n != 0 {
		s.m.samples.add(uint32(ref))
	}
	return reset, err
}

// AppendStartCounted is AppendStart counting a stored sample in *n, as
// AppendCounted does.
func (s *Store) AppendStartCounted(ref SeriesRef, t int64, v float64, startMs int64, n *uint64) (reset bool, err error) {
	if startMs <= 0 || startMs > t || value.IsStaleNaN(v) {
		return false, s.AppendCounted(ref, t, v, n)
	}
	p := s.starts.slot(ref)
	prev := p.Load()
	if prev == startMs {
		return false, s.AppendCounted(ref, t, v, n)
	}
	var last Sample
	var hadLast bool
	if prev != 0 {
		if ms := s.get(ref); ms != nil {
			last, hadLast = ms.latest(t, t-s.retentionMs, -1, s.retentionMs)
		}
	}
	if err := s.AppendCounted(ref, t, v, n); err != nil {
		return false, err
	}
	if !p.CompareAndSwap(prev, startMs) || prev == 0 {
		return false, nil
	}
	return hadLast && last.T < t && !value.IsStaleNaN(last.V) && v >= last.V, nil
}

// StartTime returns the series' recorded start time in unix ms, if any.
func (s *Store) StartTime(ref SeriesRef) (int64, bool) {
	if s.get(ref) == nil {
		return 0, false
	}
	p := s.starts.tab.at(uint32(ref))
	if p == nil {
		return 0, false
	}
	v := p.Load()
	return v, v != 0
}
