package store

import (
	"sync"
	"sync/atomic"
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
//  1. Writers: Appender.Append from any goroutine (compare-and-swap on the
//     slot, so concurrent writers of one series count a change once), and
//     Create, under Store.mu, which clears the slot of a reused ref before
//     the new series is published. Growth is serialised by mu.
//  2. Readers: StartTime and Appender.Append, lock-free (chunked.at).
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
