package store

import (
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
)

// symbols interns label names and values (and metric names) to dense
// uint32 IDs, and reclaims the IDs of label names and values that no live
// label set uses any more (pod churn brings new pod/instance values every
// few minutes; without reclamation the table would grow for ever).
//
// Lifetime of an ID:
//
//   - __name__ and every string passed to MetricID (fixed names, tests)
//     are pinned: never freed.
//   - A metric name is held (ext) by each compiled trigger whose query
//     mentions it (AcquireMetricID, dropped by ReleaseMetricIDs when the
//     scaler evicts the trigger; a trigger is evicted only while no
//     StreamIsActive stream holds it, so the IDs in live subscriptions
//     stay valid) and by the legacy alias it names, if any (AddAlias; the
//     sweeper drops an alias once none of the names it stands for has a
//     series, alias.go).
//   - Every symbol counts its published uses (refs): once per occurrence
//     in the key of each published label set (acquire when the set is
//     created, release when the sweeper unpublishes it), and, for a
//     metric name, once per live series of that name (acquireOne when the
//     series is created, releaseOne when the sweeper removes it). So the
//     ID a receiver reports for a series' name stays valid while the
//     series lives, and the scaler holds the names its subscriptions
//     match. A symbol whose count and holds reach zero is freed: removed
//     from ids at once (so a new intern of the same string gets a fresh
//     ID) and put in quarantine; its table slot keeps the old string,
//     except when unhold frees it: then the slot drops the string at once
//     (freeLocked says why), which readers see as a reuse. Without this,
//     every metric name a client ever sent (each up to
//     --max-metric-name-length) stayed for the life of the process.
//   - The next sweep moves the quarantine to the free list, and intern
//     hands free IDs out again, overwriting the slot. This is the same
//     one-sweep delay that deleted series refs get (sweep.go).
//
// Concurrency contract:
//
//  1. Writers: intern, pin and hold under mu (its own lock, so MetricID
//     and AcquireMetricID do not wait for series creation); acquire,
//     release, unhold and rotate under Store.mu, which also takes mu for
//     the parts it shares with intern (the map, the free lists, the byte
//     count, ext). Freeing needs both refs (Store.mu) and ext (mu) at
//     zero, so whichever of release and unhold drops the last use frees.
//  2. Readers: id (lock-free through sync.Map, whose reads take no lock)
//     and str (lock-free through the chunked table of atomic pointers).
//  3. Publication: intern stores the slot's *symbol, then stores the ID in
//     the map. Every other path to an ID (a label set, a series) is
//     published after the intern call that made it. A reused or dropped
//     slot is preceded by reuses.Add(1).
//  4. A reader holding the ID of a live label set always finds its string:
//     the set holds a count on it. A reader holding an ID from a set that
//     the sweeper unpublished finds the old string until the ID is reused,
//     at the earliest one sweep later (or, if a trigger held the string
//     last, until unhold drops it). Readers that must be exact detect
//     that case: Labels re-checks that the series is still published
//     after reading its strings (a live series pins its set, which pins
//     its symbols), and Select, LabelNames and LabelValues compare reuses
//     before and after and retry (the last attempt under mu, which stops
//     reuse, so they always end).
//
// Interned strings are cloned: the caller's strings are usually substrings
// of one labels.Labels buffer that would otherwise stay alive.
type symbols struct {
	reuses atomic.Uint64 // counts ID reuses; see contract point 4
	ids    sync.Map      // string → uint32
	tab    chunked[atomic.Pointer[symbol]]

	mu    sync.Mutex // guards the fields below
	next  uint32
	live  int      // symbols in ids
	free  []uint32 // freed IDs, reusable now
	quar  []uint32 // IDs freed since the last rotate, reusable after it
	bytes int64    // estimated bytes of the symbols in ids
}

// symbol is one table slot's content. s never changes; refs is guarded by
// Store.mu; ext (holds by compiled triggers) by symbols.mu; pinned is only
// ever set, under symbols.mu, and release reads it under symbols.mu, so a
// symbol is either pinned or freed, never both.
type symbol struct {
	s      string
	refs   int32
	ext    int32
	pinned atomic.Bool
}

// symCost estimates a symbol's bytes: the string, the *symbol (string
// header, counts and flag: 28 B, rounded to a 32 B size class) and the
// sync.Map entry (about 64 B, as for the postings map). Table slots are
// counted per chunk by MemoryEstimate.
func symCost(str string) int64 { return int64(len(str)) + 32 + 64 }

func (s *symbols) id(str string) (uint32, bool) {
	v, ok := s.ids.Load(str)
	if !ok {
		return 0, false
	}
	return v.(uint32), true
}

// intern returns str's ID, interning it unpinned with no count. Its only
// caller, internSetLocked (under Store.mu), acquires the symbols of a new
// set right after; nothing between can fail, so no unpinned symbol stays
// in the table without a count.
func (s *symbols) intern(str string) uint32 {
	if id, ok := s.id(str); ok {
		return id
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.internLocked(str)
}

// pin interns str and marks it never to be freed.
func (s *symbols) pin(str string) uint32 {
	if id, ok := s.id(str); ok {
		// Comparing the string guards against the (two sweeps late)
		// case of id being freed and reused since the lookup.
		if sym := s.tab.at(id).Load(); sym.s == str && sym.pinned.Load() {
			return id // pinned is only ever set
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.internLocked(str)
	s.tab.at(id).Load().pinned.Store(true)
	return id
}

func (s *symbols) internLocked(str string) uint32 {
	if id, ok := s.id(str); ok {
		return id
	}
	str = strings.Clone(str)
	var id uint32
	if n := len(s.free); n > 0 {
		id = s.free[n-1]
		s.free = s.free[:n-1]
		s.reuses.Add(1) // before the slot changes: see contract point 4
	} else {
		id = s.next
		s.next++
	}
	s.tab.ensure(id).Store(&symbol{s: str})
	s.bytes += symCost(str)
	s.live++
	s.ids.Store(str, id)
	return id
}

// acquire counts one more use of each symbol in p. Under Store.mu.
func (s *symbols) acquire(p []uint32) {
	for _, id := range p {
		s.acquireOne(id)
	}
}

// acquireOne counts one more use of the symbol id. Under Store.mu.
func (s *symbols) acquireOne(id uint32) { s.tab.at(id).Load().refs++ }

// releaseOne is release for one symbol. Under Store.mu.
func (s *symbols) releaseOne(id uint32) {
	p := [1]uint32{id}
	s.release(p[:])
}

// release drops one use of each symbol in p and frees those that reach
// zero and are not pinned. Under Store.mu.
func (s *symbols) release(p []uint32) {
	locked := false
	for _, id := range p {
		sym := s.tab.at(id).Load()
		if sym.refs--; sym.refs > 0 {
			continue
		}
		if !locked {
			s.mu.Lock()
			locked = true
		}
		if sym.pinned.Load() || sym.ext > 0 {
			continue
		}
		s.freeLocked(id, sym, false)
	}
	if locked {
		s.mu.Unlock()
	}
}

// hold interns str and counts one hold on it; see Store.AcquireMetricID.
func (s *symbols) hold(str string) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.internLocked(str)
	s.tab.at(id).Load().ext++
	return id
}

// unhold drops one hold of each symbol in ids and frees those that no
// label set uses (refs), no trigger holds and no pin keeps. Under
// Store.mu, so refs is stable while it is read.
func (s *symbols) unhold(ids []uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		sym := s.tab.at(id).Load()
		if sym.ext <= 0 { // a caller bug; never free what another holder counts on
			continue
		}
		if sym.ext--; sym.ext > 0 || sym.refs > 0 || sym.pinned.Load() {
			continue
		}
		s.freeLocked(id, sym, true)
	}
}

// freedSymbol is the content of a slot whose string was dropped. It is
// never modified: a freed ID is in no label set and held by no trigger.
var freedSymbol = &symbol{}

// freeLocked removes sym from the map and quarantines its ID. Under mu.
// With drop, the slot forgets the string at once instead of when the ID is
// reused: the names unhold frees come from clients' queries, each up to
// 16 KiB, at a rate no sweep bounds, and until the next sweep every freed
// ID waits in quarantine while new names take new slots. Readers see a
// drop as a reuse (reuses moves first, contract point 4).
func (s *symbols) freeLocked(id uint32, sym *symbol, drop bool) {
	s.ids.Delete(sym.s)
	s.bytes -= symCost(sym.s)
	s.live--
	s.quar = append(s.quar, id)
	if drop {
		s.reuses.Add(1)
		s.tab.at(id).Store(freedSymbol)
	}
}

// rotate makes the IDs freed before the previous rotate reusable. The
// sweeper calls it once per sweep, before freeing anything.
func (s *symbols) rotate() {
	s.mu.Lock()
	s.free = append(s.free, s.quar...)
	s.quar = s.quar[:0]
	s.mu.Unlock()
}

// stats returns the number of symbols in the table and their estimated
// bytes.
func (s *symbols) stats() (n int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live, s.bytes
}

func (s *symbols) str(id uint32) string {
	if p := s.tab.at(id); p != nil {
		if sym := p.Load(); sym != nil {
			return sym.s
		}
	}
	return ""
}

// labelSet is an interned label set without __name__: the labels that the
// many series of one pod share (all its metrics carry the same engine,
// model_name, pod, namespace, ... labels), so a series stores one uint32
// instead of its labels. key holds the name and value symbol IDs as
// uint32s, in label order; it is both the dedupe map's key and the data
// (a separate []uint32 would cost 24 B of header and a second copy).
// Immutable after publication, except refs (guarded by Store.mu).
type labelSet struct {
	key  string
	refs int32
}

// pairs returns the set's (name, value) symbol IDs, flattened. The key's
// bytes come from an allocation of a multiple of 4 bytes, so they are
// 4-byte aligned.
func (ls *labelSet) pairs() []uint32 {
	if len(ls.key) == 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.StringData(ls.key))), len(ls.key)/4)
}

// get returns the value symbol of label name (a symbol).
func (ls *labelSet) get(name uint32) (uint32, bool) {
	p := ls.pairs()
	for i := 0; i < len(p); i += 2 {
		if p[i] == name {
			return p[i+1], true
		}
	}
	return 0, false
}

// setCost estimates a set's bytes: the struct, its key, its dedupe map
// entry and its table slot.
func setCost(ls *labelSet) int64 { return 24 + int64(len(ls.key)) + 40 + 8 }

// pairsKey views p as a string without copying; clone before keeping it.
func pairsKey(p []uint32) string {
	if len(p) == 0 {
		return ""
	}
	return unsafe.String((*byte)(unsafe.Pointer(&p[0])), 4*len(p))
}

func pairKey(name, val uint32) uint64 { return uint64(name)<<32 | uint64(val) }

// labelsBox lets a labels.Labels sit behind an atomic pointer.
type labelsBox struct{ l labels.Labels }
