package store

import (
	"strings"
	"sync"
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
)

// symbols interns label names and values (and metric names) to dense
// uint32 IDs that are stable for the life of the store.
//
// Concurrency contract:
//
//  1. Writers: intern, under mu (its own lock, so MetricID from the scaler
//     does not wait for series creation).
//  2. Readers: id (lock-free through sync.Map, whose reads take no lock)
//     and str (lock-free through the chunked table).
//  3. Publication: intern writes the string into its table slot, then
//     stores the ID in the map. Every other path to an ID (a label set, a
//     series) is published after the intern call that made it.
//  4. A reader holding an ID therefore always finds its string, which
//     never changes.
//
// Interned strings are cloned: the caller's strings are usually substrings
// of one labels.Labels buffer that would otherwise stay alive.
type symbols struct {
	mu    sync.Mutex
	ids   sync.Map // string → uint32
	tab   chunked[string]
	next  uint32 // guarded by mu
	bytes int64  // guarded by mu
}

func (s *symbols) id(str string) (uint32, bool) {
	v, ok := s.ids.Load(str)
	if !ok {
		return 0, false
	}
	return v.(uint32), true
}

func (s *symbols) intern(str string) uint32 {
	if id, ok := s.id(str); ok {
		return id
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.id(str); ok {
		return id
	}
	str = strings.Clone(str)
	id := s.next
	s.next++
	*s.tab.ensure(id) = str
	s.bytes += int64(len(str)) + 16 + 64 // string, table slot, map entry
	s.ids.Store(str, id)
	return id
}

func (s *symbols) str(id uint32) string {
	if p := s.tab.at(id); p != nil {
		return *p
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
