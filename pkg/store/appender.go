package store

import (
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
)

// Appender appends the samples of one request, as Prometheus's
// storage.AppenderV2 does: Append for each sample (with its start time,
// if any), then Commit once. Unlike Prometheus's appenders it buffers
// nothing: a sample is visible to readers as soon as Append returns, and
// Commit only publishes what the appends counted (stored samples go to
// keda_otel_scaler_store_samples_appended_total with one atomic add per
// request instead of one per sample), so there is no Rollback.
//
// An Appender is a value owned by one goroutine; it does not allocate.
// The receiver keeps one per in-flight request.
type Appender struct {
	s           *Store
	last        SeriesRef // of the newest stored sample: picks Commit's stripe
	appended    uint64
	startResets int
}

// AppendStats is what the appends of an Appender did, returned by Commit.
type AppendStats struct {
	// Appended counts the samples stored (not those dropped as retried
	// duplicates or ignored stale markers).
	Appended uint64
	// StartResets counts start-time resets (see Append).
	StartResets int
}

// Appender returns an appender to s.
func (s *Store) Appender() Appender { return Appender{s: s} }

// Append adds a sample at t to a series. A sample equal in time and value
// to the newest one is dropped silently (retried batches); a stale marker
// at or before the newest sample, or older than the retention, is
// ignored. A series at its sample bound is thinned (ring.go), never
// refused. It takes no store-wide lock and does not allocate once the
// series' ring has reached its size.
//
// st is the start time (unix ms) of the cumulative series the sample
// belongs to, 0 for none (otlp-contract.md §9.3); one after t, or on a
// stale marker, is ignored. Once the sample is stored, the series' start
// time becomes st, and a change of a recorded start time while the value
// did not fall below the previous sample counts as a start-time reset
// (the receiver reports them in
// keda_otel_scaler_receiver_counter_resets_total{cause="start_time"}). A
// falling value is a reset that rate and increase already see; start
// times never change query results (promql-subset.md keeps start-time
// semantics in its Later tier). Of concurrent appenders bringing the same
// change, one counts it. The previous sample is read only when the start
// time changes.
func (a *Appender) Append(ref SeriesRef, st, t int64, v float64) error {
	if st <= 0 || st > t || value.IsStaleNaN(v) {
		return a.append(ref, t, v)
	}
	return a.appendStart(ref, st, t, v)
}

// append stores a sample without a start time.
func (a *Appender) append(ref SeriesRef, t int64, v float64) error {
	s := a.s
	ms := s.get(ref)
	if ms == nil {
		s.m.reject(reasonUnknownSeries)
		return ErrUnknownSeries
	}
	if t < s.nowMs()-s.retentionMs {
		if value.IsStaleNaN(v) {
			return nil // a marker is never a rejection (otlp-contract.md §9.4)
		}
		s.m.reject(reasonTooOld)
		return ErrTooOld
	}
	res, thinned, atCap := ms.append(t, v, &s.rl)
	if thinned != 0 {
		s.m.thinned(ref, thinned, atCap)
	}
	switch res {
	case appended, appendedGrew:
		a.appended++
		a.last = ref
		return nil
	case appendedThinned:
		a.appended++
		a.last = ref
		s.noteThinned(ms, atCap)
		return nil
	case droppedDuplicate:
		return nil
	case rejectedOutOfOrder:
		s.m.reject(reasonOutOfOrder)
		return ErrOutOfOrder
	case rejectedDuplicate:
		s.m.reject(reasonDuplicate)
		return ErrDuplicateTimestamp
	default: // rejectedDead: deleted by the sweeper meanwhile
		s.m.reject(reasonUnknownSeries)
		return ErrUnknownSeries
	}
}

// appendStart stores a sample with a start time that applies (st in
// (0, t], v not a stale marker) and records the start time.
func (a *Appender) appendStart(ref SeriesRef, st, t int64, v float64) error {
	s := a.s
	p := s.starts.slot(ref)
	prev := p.Load()
	if prev == st {
		return a.append(ref, t, v)
	}
	var last Sample
	var hadLast bool
	if prev != 0 {
		if ms := s.get(ref); ms != nil {
			last, hadLast = ms.latest(t, t-s.retentionMs, -1, s.retentionMs)
		}
	}
	if err := a.append(ref, t, v); err != nil {
		return err
	}
	if !p.CompareAndSwap(prev, st) || prev == 0 {
		return nil
	}
	if hadLast && last.T < t && !value.IsStaleNaN(last.V) && v >= last.V {
		a.startResets++
	}
	return nil
}

// Commit adds the samples stored since the last Commit to the store's
// appended-samples counter and returns what the appends did, starting the
// counts afresh. Calling it on the zero Appender or twice is harmless.
func (a *Appender) Commit() AppendStats {
	stats := AppendStats{Appended: a.appended, StartResets: a.startResets}
	if a.appended != 0 {
		a.s.m.samples.addAt(uint32(a.last), a.appended)
	}
	a.appended, a.startResets = 0, 0
	return stats
}

// Append is an Appender of one sample without a start time, committed at
// once: for tests, restores and callers that append rarely.
func (s *Store) Append(ref SeriesRef, t int64, v float64) error {
	a := Appender{s: s}
	err := a.append(ref, t, v)
	a.Commit()
	return err
}

// AppendHistogram is an Appender of one native histogram sample,
// committed at once, as Append.
func (s *Store) AppendHistogram(ref SeriesRef, t int64, fh *histogram.FloatHistogram) error {
	a := Appender{s: s}
	err := a.AppendHistogram(ref, t, fh)
	a.Commit()
	return err
}
