package store

import (
	"sync/atomic"
)

// hashIndex maps a series identity hash to its SeriesRef.
//
// It is 64 shards (chosen by the hash's top bits), each an open-addressing
// table with linear probing over two parallel arrays, keys []uint64 and
// refs []uint32: 12 B per slot, 16–32 B per series at the 0.375–0.75 load
// factors it keeps, against 36 B for a map[uint64]uint32 that would also
// need a lock for readers (performance.md §2).
//
// Concurrency contract:
//
//  1. Writers: insert, purge and rebuild run under Store.mu (series
//     creation and the TTL sweep), so there is one writer at a time.
//  2. Readers: Lookup, from any goroutine, without locks.
//  3. Publication: insert stores the slot's ref, then its key; a key, once
//     stored in a table, never changes. purge stores ref 0 (a tombstone)
//     and keeps the key so probes continue past it. Growth and tombstone
//     clean-up build a new table and publish it with one atomic pointer
//     store.
//  4. A reader that finds the key loads the ref: it sees the live ref, 0
//     (removed: not found) or the ref of a re-created series with the same
//     identity. A reader still probing a replaced table may miss a series
//     created after the switch; Create then finds it under the lock, so a
//     miss only costs the slow path. Key 0 marks an empty slot, so the
//     identity hash 0 is stored as keyZero.
type hashIndex struct {
	shards [indexShards]indexShard
}

const (
	indexShards = 64
	keyZero     = 0x9e3779b97f4a7c15 // stands in for hash 0
)

type indexShard struct {
	tab  atomic.Pointer[hashTable]
	live int // guarded by Store.mu
	used int // live + tombstones; guarded by Store.mu
	_    [40]byte
}

type hashTable struct {
	keys []uint64
	refs []uint32
	mask uint64
}

func newHashTable(size int) *hashTable {
	return &hashTable{keys: make([]uint64, size), refs: make([]uint32, size), mask: uint64(size - 1)}
}

func fixKey(h uint64) uint64 {
	if h == 0 {
		return keyZero
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
	for i := k & t.mask; ; i = (i + 1) & t.mask {
		switch atomic.LoadUint64(&t.keys[i]) {
		case k:
			r := atomic.LoadUint32(&t.refs[i])
			return SeriesRef(r), r != 0
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
	if t == nil || 4*(sh.used+1) > 3*len(t.keys) {
		t = sh.rebuild(t, sh.live+1)
	}
	for i := k & t.mask; ; i = (i + 1) & t.mask {
		switch atomic.LoadUint64(&t.keys[i]) {
		case k: // tombstone of the same identity
			atomic.StoreUint32(&t.refs[i], uint32(ref))
			sh.live++
			return
		case 0:
			atomic.StoreUint32(&t.refs[i], uint32(ref))
			atomic.StoreUint64(&t.keys[i], k)
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
		for j, r := range t.refs {
			if r != 0 && dead(r) {
				atomic.StoreUint32(&t.refs[j], 0)
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
		for i, k := range old.keys {
			r := old.refs[i]
			if k == 0 || r == 0 {
				continue
			}
			j := k & t.mask
			for t.keys[j] != 0 {
				j = (j + 1) & t.mask
			}
			t.keys[j], t.refs[j] = k, r
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
			b += int64(12 * len(t.keys))
		}
	}
	return b
}
