package store

import "sync/atomic"

// createLogSize bounds the creation log: a plan that fell further behind
// selects again.
const createLogSize = 1024

// createLog remembers, by generation, the refs of the last createLogSize
// series created, so a holder of a cached selection can check only the
// series created since (CreatedSince) instead of selecting again.
//
// Concurrency contract:
//
//  1. Writers: Create and Sweep, under Store.mu, which also serialises
//     every change of the generation.
//  2. Readers: any goroutine, lock-free, through CreatedSince.
//  3. Publication: Create stores the entry of generation G (G's low 32
//     bits and the ref, one atomic word) before it advances the generation
//     to G; Sweep stores G in lastDel before it advances the generation to
//     G after deleting series.
//  4. A reader loads the generation cur, then lastDel, then the entries of
//     the generations after its own up to cur. It sees every entry and
//     deletion up to cur; an entry overwritten meanwhile by a creation
//     createLogSize generations later carries another stamp, and the
//     reader gives up, as it does when a deletion happened since its
//     generation.
type createLog struct {
	entries [createLogSize]atomic.Uint64
	lastDel atomic.Uint64
}

// created records that ref was created at generation g. Writers only.
func (l *createLog) created(g uint64, ref SeriesRef) {
	l.entries[g%createLogSize].Store(uint64(uint32(g))<<32 | uint64(ref))
}

// CreatedSince appends to dst the refs of the series created after
// generation since (a value of Generation), oldest first, and returns the
// extended slice with the generation it is complete up to. ok is false
// when the store cannot tell: a series was deleted since (a deleted ref
// may be reused, and symbols freed), or more than createLogSize series
// were created since; the caller then selects again. A ref in dst may
// already have been deleted, as with Select. It takes no lock.
func (s *Store) CreatedSince(dst []SeriesRef, since uint64) (refs []SeriesRef, gen uint64, ok bool) {
	cur := s.gen.Load()
	if cur < since || cur-since > createLogSize || s.clog.lastDel.Load() > since {
		return dst, cur, false
	}
	start := len(dst)
	for g := since + 1; g <= cur; g++ {
		e := s.clog.entries[g%createLogSize].Load()
		if uint32(e>>32) != uint32(g) {
			return dst[:start], cur, false
		}
		dst = append(dst, SeriesRef(uint32(e)))
	}
	return dst, cur, true
}
