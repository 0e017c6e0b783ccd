package store

import (
	"context"
	"slices"
	"time"
)

// clockTick is how often the background loop refreshes the store's clock
// reading.
const clockTick = 100 * time.Millisecond

// Start launches the background loop, which runs Sweep every SweepInterval
// and refreshes the store's clock reading every clockTick, until Shutdown
// is called or ctx ends. It returns at once. Calling it again, or after
// Shutdown, does nothing.
func (s *Store) Start(ctx context.Context) error {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.stop != nil || s.closed {
		return nil
	}
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	s.clock.Store(s.now().UnixMilli())
	go s.sweepLoop(ctx, s.stop, s.done)
	s.logger.Info("Sweeper started", "series_ttl", s.cfg.SeriesTTL, "sweep_interval", s.cfg.SweepInterval)
	return nil
}

func (s *Store) sweepLoop(ctx context.Context, stop, done chan struct{}) {
	defer close(done)
	defer s.clock.Store(0) // back to reading the clock on every call
	tick := time.NewTicker(s.cfg.SweepInterval)
	defer tick.Stop()
	clk := time.NewTicker(clockTick)
	defer clk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-clk.C:
			s.clock.Store(s.now().UnixMilli())
		case <-tick.C:
			s.clock.Store(s.now().UnixMilli())
			if n := s.Sweep(); n > 0 {
				s.logger.Debug("Series expired", "removed", n, "series", s.NumSeries())
			}
		}
	}
}

// Shutdown stops the sweeper and waits for it, at most until ctx ends. It
// is idempotent and safe without Start.
func (s *Store) Shutdown(ctx context.Context) error {
	s.runMu.Lock()
	if !s.closed {
		s.closed = true
		if s.stop != nil {
			close(s.stop)
		}
	}
	done := s.done
	s.runMu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Sweep deletes every series with no sample newer than now − SeriesTTL
// (pods that die send no staleness marker) and returns how many it
// deleted. A series that never got a sample is deleted by the second sweep
// that finds it empty. Deleted refs read as unknown at once; they are
// handed to new series only after the next sweep, so a reader that loaded
// a ref just before the deletion cannot, in practice, read another series
// under it, and Generation moves on every deletion and creation anyway.
// Start runs it periodically; tests call it directly.
func (s *Store) Sweep() int {
	cutoff := s.now().UnixMilli() - s.cfg.SeriesTTL.Milliseconds()
	var cands []SeriesRef
	n := s.nextRef.Load()
	for ref := uint32(1); ref < n; ref++ {
		ms := s.get(SeriesRef(ref))
		if ms == nil {
			continue
		}
		if t, ok := ms.lastT(); !ok || t < cutoff {
			cands = append(cands, SeriesRef(ref))
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.freeRefs = append(s.freeRefs, s.quarantine...)
	s.quarantine = s.quarantine[:0]
	s.freeSets = append(s.freeSets, s.quarSets...)
	s.quarSets = s.quarSets[:0]
	s.syms.rotate()
	removed := 0
	for _, ref := range cands {
		ms := s.get(ref)
		if ms == nil || !ms.markDead(cutoff) {
			continue
		}
		s.removeLocked(ref, ms)
		removed++
	}
	if removed > 0 {
		// Removed series are already nil in the series table, and their
		// refs are quarantined, so "nil in the table" finds exactly them.
		s.index.purge(func(ref uint32) bool { return s.get(SeriesRef(ref)) == nil })
	}
	s.compactPostingsLocked()
	s.pruneAliasesLocked(s.emptied)
	clear(s.emptied)
	s.emptied = s.emptied[:0]
	s.index.compact()
	if removed > 0 {
		s.live.Add(int64(-removed))
		s.clog.lastDel.Store(s.gen.Load() + 1) // before the generation moves (createLog)
		s.gen.Add(1)
		s.m.removed.Add(float64(removed))
	}
	return removed
}

func (s *Store) removeLocked(ref SeriesRef, ms *memSeries) {
	s.series.at(uint32(ref)).Store(nil)
	if s.perMetric[ms.metricID]--; s.perMetric[ms.metricID] <= 0 {
		delete(s.perMetric, ms.metricID)
		s.emptied = append(s.emptied, s.syms.str(ms.metricID))
	}
	s.dirty[pairKey(s.nameID, ms.metricID)] = struct{}{}
	if p := s.sets.at(ms.setID); p != nil {
		if ls := p.Load(); ls != nil {
			for p, i := ls.pairs(), 0; i < len(p); i += 2 {
				s.dirty[pairKey(p[i], p[i+1])] = struct{}{}
			}
			if ls.refs--; ls.refs == 0 {
				delete(s.setIDs, ls.key)
				s.setBytes -= setCost(ls)
				p.Store(nil)
				s.quarSets = append(s.quarSets, ms.setID)
				// After the set is unpublished: a symbol freed here
				// is reused only after the next sweep.
				s.syms.release(ls.pairs())
			}
		}
	}
	// The series' use of its metric name, after it is unpublished, like
	// its set's symbols: a name freed here is reused only after the next
	// sweep.
	s.syms.releaseOne(ms.metricID)
	if p := ms.ring.Load(); p != nil {
		_, _, c := unpackMeta(ms.meta.Load())
		s.rl.used.Add(-ringBytes(c))
	}
	if hs := s.histSeriesOf(ref, ms); hs != nil {
		// ms is dead: no writer touches the log again.
		if lg := hs.log.Load(); lg != nil {
			s.rl.used.Add(-lg.bytes)
		}
		s.hists.at(uint32(ref)).Store(nil)
		s.histLive.Add(-1)
	}
	s.quarantine = append(s.quarantine, ref)
}

// compactPostingsLocked rewrites the postings lists that hold deleted refs
// (sorted, without them), drops lists that became empty, and drops their
// values from the name's value list.
func (s *Store) compactPostingsLocked() {
	names := map[uint32]struct{}{}
	for k := range s.dirty {
		v, ok := s.postings.Load(k)
		if !ok {
			continue
		}
		l := v.(*u32list)
		var keep []uint32
		for _, ref := range l.load() {
			if ms := s.get(SeriesRef(ref)); ms != nil {
				keep = append(keep, ref)
			}
		}
		if len(keep) == 0 {
			s.postings.Delete(k)
			names[uint32(k>>32)] = struct{}{}
			continue
		}
		slices.Sort(keep)
		l.replace(keep)
	}
	clear(s.dirty)
	for name := range names {
		v, ok := s.nameValues.Load(name)
		if !ok {
			continue
		}
		var keep []uint32
		for _, val := range v.(*u32list).load() {
			if _, ok := s.postings.Load(pairKey(name, val)); ok {
				keep = append(keep, val)
			}
		}
		if len(keep) == 0 {
			s.nameValues.Delete(name)
			continue
		}
		v.(*u32list).replace(keep)
	}
}
