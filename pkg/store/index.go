package store

import (
	"sync/atomic"
)

// hashIndex maps a series identity hash to its SeriesRef.
//
// It is 64 shards (chosen by the hash's top bits), each an open-addressing
// table with linear probing over one array of 12-byte slots, three uint32
// words each: the key's low half, its high half, and the ref. 16–32 B per
// series at the 0.375–0.75 load factors it keeps, against 36 B for a
// map[uint64]uint32 that would also need a lock for readers
// (performance.md §2). Key and ref share a slot, so a lookup at 1M series
// costs one cache miss instead of one in a key array and another in a ref
// array.
//
// Concurrency contract:
//
//  1. Writers: insert, purge and rebuild run under Store.mu (series
//     creation and the TTL sweep), so there is one writer at a time.
//  2. Readers: Lookup, from any goroutine, without locks.
//  3. Publication: insert stores the slot's ref, then the key's high half,
//     then its low half; a key, once stored in a table, never changes.
//     purge stores ref 0 (a tombstone) and keeps the key so probes
//     continue past it. Growth and tombstone clean-up build a new table
//     and publish it with one atomic pointer store.
//  4. No stored key has a zero low half (fixKey), so a slot whose low
//     half reads 0 is empty or not yet published, and a probe stops
//     there: the key it looks for, if present, sits before it. A reader
//     that reads a matching low half and then a matching high half has
//     found a slot published at least up to its ref, so it sees the live
//     ref, 0 (removed: not found) or the ref of a re-created series with
//     the same identity. A reader still probing a replaced table may miss
//     a series created after the switch; Create then finds it under the
//     lock, so a miss only costs the slow path.
type hashIndex struct {
	shards [indexShards]indexShard
}

const (
	indexShards = 64
	keyZero     = 0x9e3779b97f4a7c15 // stands in for hash 0
	slotWords   = 3                  // key low, key high, ref
)

type indexShard struct {
	tab  atomic.Pointer[hashTable]
	live int // guarded by Store.mu
	used int // live + tombstones; guarded by Store.mu
	_    [40]byte
}

type hashTable struct {
	slots []uint32 // slotWords per slot
	mask  uint64
}

func newHashTable(size int) *hashTable {
	return &hashTable{slots: make([]uint32, slotWords*size), mask: uint64(size - 1)}
}

func (t *hashTable) size() int { return len(t.slots) / slotWords }

// key returns slot i's key (0: empty), read atomically half by half. For
// writers, which see every slot complete.
func (t *hashTable) key(i uint64) uint64 {
	w := t.slots[slotWords*i : slotWords*i+slotWords : slotWords*i+slotWords]
	return uint64(atomic.LoadUint32(&w[0])) | uint64(atomic.LoadUint32(&w[1]))<<32
}

func (t *hashTable) ref(i uint64) uint32 { return atomic.LoadUint32(&t.slots[slotWords*i+2]) }

func (t *hashTable) setRef(i uint64, ref uint32) { atomic.StoreUint32(&t.slots[slotWords*i+2], ref) }

// publish stores a new slot in the order readers rely on: ref, key high,
// key low.
func (t *hashTable) publish(i, k uint64, ref uint32) {
	w := t.slots[slotWords*i : slotWords*i+slotWords : slotWords*i+slotWords]
	atomic.StoreUint32(&w[2], ref)
	atomic.StoreUint32(&w[1], uint32(k>>32))
	atomic.StoreUint32(&w[0], uint32(k))
}

// fixKey maps an identity hash to its stored key, whose low half is never
// 0: hash 0 becomes keyZero, and a hash with a zero low half gets its
// lowest bit set. Two hashes then share a key only if they differ in that
// bit alone and their low half is otherwise zero, a coincidence far rarer
// than a collision of the 64-bit hashes themselves.
func fixKey(h uint64) uint64 {
	if h == 0 {
		return keyZero
	}
	if uint32(h) == 0 {
		return h | 1
	}
	return h
}

func (x *hashIndex) shard(k uint64) *indexShard { return &x.shards[k>>58] }

// lookup returns the ref stored for h, lock-free.
func (x *hashIndex) lookup(h uint64) (SeriesRef, bool) {
	k := fixKey(h)
	t := x.shard(k).tab.Load()
	if t == nil {
		return 0, false
	}
	lo, hi := uint32(k), uint32(k>>32)
	s := t.slots
	for i := k & t.mask; ; i = (i + 1) & t.mask {
		w := s[slotWords*i : slotWords*i+slotWords : slotWords*i+slotWords]
		switch atomic.LoadUint32(&w[0]) {
		case lo:
			if atomic.LoadUint32(&w[1]) == hi {
				r := atomic.LoadUint32(&w[2])
				return SeriesRef(r), r != 0
			}
		case 0:
			return 0, false
		}
	}
}

// insert stores h → ref. The caller holds Store.mu and has checked that h
// is not live.
func (x *hashIndex) insert(h uint64, ref SeriesRef) {
	k := fixKey(h)
	sh := x.shard(k)
	t := sh.tab.Load()
	if t == nil || 4*(sh.used+1) > 3*t.size() {
		t = sh.rebuild(t, sh.live+1)
	}
	for i := k & t.mask; ; i = (i + 1) & t.mask {
		switch t.key(i) {
		case k: // tombstone of the same identity
			t.setRef(i, uint32(ref))
			sh.live++
			return
		case 0:
			t.publish(i, k, uint32(ref))
			sh.live++
			sh.used++
			return
		}
	}
}

// purge tombstones every entry whose ref dead reports as deleted. The
// caller holds Store.mu. It walks every table (12 B per slot, sequential),
// which is why series need not remember their hash.
func (x *hashIndex) purge(dead func(ref uint32) bool) {
	for i := range x.shards {
		sh := &x.shards[i]
		t := sh.tab.Load()
		if t == nil {
			continue
		}
		for j := range uint64(t.size()) {
			if r := t.ref(j); r != 0 && dead(r) {
				t.setRef(j, 0)
				sh.live--
			}
		}
	}
}

// compact drops tombstones from shards where they make up over a quarter
// of the used slots. The caller holds Store.mu.
func (x *hashIndex) compact() {
	for i := range x.shards {
		sh := &x.shards[i]
		if t := sh.tab.Load(); t != nil && 4*(sh.used-sh.live) > sh.used {
			sh.rebuild(t, sh.live)
		}
	}
}

// rebuild publishes a new table sized for want live entries (load factor
// at most 0.5 right after; growth at 0.75 doubles) holding the live
// entries of old.
func (sh *indexShard) rebuild(old *hashTable, want int) *hashTable {
	size := 64
	for 2*want > size {
		size *= 2
	}
	t := newHashTable(size)
	n := 0
	if old != nil {
		for i := range uint64(old.size()) {
			k, r := old.key(i), old.ref(i)
			if k == 0 || r == 0 {
				continue
			}
			j := k & t.mask
			for t.key(j) != 0 {
				j = (j + 1) & t.mask
			}
			t.publish(j, k, r)
			n++
		}
	}
	sh.live, sh.used = n, n
	sh.tab.Store(t)
	return t
}

// bytes estimates the index's memory.
func (x *hashIndex) bytes() int64 {
	var b int64
	for i := range x.shards {
		if t := x.shards[i].tab.Load(); t != nil {
			b += int64(4 * len(t.slots))
		}
	}
	return b
}
