package store

import "sync/atomic"

// chunked is a dense array indexed by uint32 that grows without moving its
// elements, so readers can hold element pointers and never lock.
//
// Concurrency contract:
//
//  1. Writers: one at a time, under Store.mu (or the interner's lock for
//     the symbol table). They grow the array and write elements.
//  2. Readers: any goroutine, lock-free, through at.
//  3. Publication: elements live in fixed 4096-element chunks that are
//     never copied. Growth allocates a chunk and publishes a new directory
//     (copy-on-write, one pointer per chunk) with one atomic store.
//  4. A reader loads the directory, then the chunk, then the element. It
//     sees either an older directory (so an index beyond it reads as
//     absent) or the new one; both point at the same chunks. Elements are
//     atomics (series, sets, symbols), so a slot that is reused after a
//     sweep is rewritten without a data race.
type chunked[T any] struct {
	dir atomic.Pointer[[]*[chunkLen]T]
}

const (
	chunkBits = 12
	chunkLen  = 1 << chunkBits
)

// at returns the element i, or nil if the array does not reach i.
func (c *chunked[T]) at(i uint32) *T {
	d := c.dir.Load()
	if d == nil || int(i>>chunkBits) >= len(*d) {
		return nil
	}
	return &(*d)[i>>chunkBits][i&(chunkLen-1)]
}

// ensure grows the array to hold index i. Writers only.
func (c *chunked[T]) ensure(i uint32) *T {
	d := c.dir.Load()
	var cur []*[chunkLen]T
	if d != nil {
		cur = *d
	}
	if int(i>>chunkBits) >= len(cur) {
		next := make([]*[chunkLen]T, int(i>>chunkBits)+1)
		copy(next, cur)
		for j := len(cur); j < len(next); j++ {
			next[j] = new([chunkLen]T)
		}
		c.dir.Store(&next)
		cur = next
	}
	return &cur[i>>chunkBits][i&(chunkLen-1)]
}

// chunks returns the number of allocated chunks.
func (c *chunked[T]) chunks() int {
	if d := c.dir.Load(); d != nil {
		return len(*d)
	}
	return 0
}

// u32list is an append-only list of uint32 (a postings list, or the value
// symbols of one label name) that readers iterate without locks.
//
// Concurrency contract:
//
//  1. Writers: one at a time, under Store.mu. append writes the element,
//     then publishes the new length; when the array is full it copies into
//     a larger one and publishes that. replace (the TTL sweep's
//     compaction) publishes a fresh array.
//  2. Readers: any goroutine, through load, lock-free.
//  3. Publication: element i is written before n is raised past i, and an
//     array's elements below its published n never change afterwards.
//  4. A reader loads the array pointer, then its n, and reads elements
//     below n: a consistent prefix of the list at some moment. It may miss
//     appends that happen meanwhile and may see refs of series deleted
//     since; Select re-checks each ref against the series table.
type u32list struct {
	p atomic.Pointer[u32arr]
}

type u32arr struct {
	n      atomic.Int32
	sorted atomic.Bool // ascending; false once an append breaks the order
	data   []uint32
}

func (l *u32list) load() []uint32 {
	a := l.p.Load()
	if a == nil {
		return nil
	}
	return a.data[:a.n.Load()]
}

func (l *u32list) isSorted() bool {
	a := l.p.Load()
	return a == nil || a.sorted.Load()
}

func (l *u32list) append(v uint32) {
	a := l.p.Load()
	if a == nil {
		a = &u32arr{data: make([]uint32, 2)}
		a.sorted.Store(true)
		l.p.Store(a)
	}
	n := int(a.n.Load())
	if n == len(a.data) {
		// Grow by a quarter: postings are most of the index's memory
		// (about 9 refs per vLLM series), and doubling would leave a third
		// of it empty on average. Copies stay amortised O(1).
		b := &u32arr{data: make([]uint32, n+n/4+2)}
		copy(b.data, a.data)
		b.n.Store(int32(n))
		b.sorted.Store(a.sorted.Load())
		l.p.Store(b)
		a = b
	}
	if n > 0 && a.data[n-1] >= v {
		a.sorted.Store(false)
	}
	a.data[n] = v
	a.n.Store(int32(n + 1))
}

// replace publishes vals (sorted ascending) as the list's new content.
func (l *u32list) replace(vals []uint32) {
	a := &u32arr{data: vals}
	a.n.Store(int32(len(vals)))
	a.sorted.Store(true)
	l.p.Store(a)
}

func (l *u32list) bytes() int64 {
	if a := l.p.Load(); a != nil {
		return int64(4*cap(a.data)) + 32
	}
	return 0
}
