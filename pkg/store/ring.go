package store

import (
	"math"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/prometheus/prometheus/model/value"
)

// memSeries is one series: its identity, its label set and its ring of
// samples.
//
// The ring is a single noscan []uint64 allocation ("words"):
//
//	words[0]          base, the ring's time origin in unix ms
//	words[1+3k : 4+3k] slots 2k and 2k+1: value, value, two uint32 offsets
//
// so a slot costs 12 B (float64 value + uint32 ms offset, performance.md T3)
// and a ring costs 8 B more for its base. A uint32 offset spans 49 days;
// Config.Validate keeps the retention far below that, and the writer
// re-bases the ring (a new allocation) before an offset would overflow.
// Capacity is not fixed up front: it grows from 2 slots to
// retention/observed interval + 1, rounded up to fill the Go size class
// (the extra slots are free), capped by MaxSamplesPerSeries. An int64 time
// per slot, as in []struct{t int64; v float64}, would cost 16 B per slot.
//
// Concurrency contract (a seqlock whose sequence lives in the meta word,
// which doubles as the writers' spin lock):
//
//  1. Writers: any goroutine appending to this series (two Export calls may
//     carry the same series) and the TTL sweeper. A writer owns the series
//     while meta's sequence is odd: it enters with CompareAndSwap(even,
//     odd), so writers of one series are serialised without any shared
//     lock, and writers of different series touch disjoint memory.
//  2. Readers: any query goroutine, with no lock and no write to shared
//     memory, so readers never block a writer.
//  3. Publication order: the writer makes the sequence odd, stores the slot
//     words and, on growth, the ring pointer, then stores meta once with
//     the new head, count and capacity and the sequence made even again. A
//     rejected append restores the old meta: nothing changed, so readers
//     that saw it stay valid.
//  4. What a reader may observe: it loads meta (retrying while the
//     sequence is odd), loads the ring pointer, and re-loads meta before
//     indexing, so meta's capacity always matches the ring it indexes (an
//     old ring stays alive for the reader through the GC). It then copies
//     the slots it needs and loads meta a third time; if it changed, the
//     copy may mix two samples and it is discarded and retried. A reader
//     therefore sees each sample whole, in time order, and never blocks a
//     writer: a write is a handful of stores (31–34 ns measured), so
//     retries are rare, and readers yield after a few spins.
//
// The sequence has 26 bits, and every completed write also changes head
// or count, so a reader could only be fooled by exactly 2^25 writes to one
// series (one every 15 s in production) landing while it copies a few
// slots. Keeping it in meta saves a word per series (1M series).
//
// Every shared word is accessed through sync/atomic so the race detector
// sees the protocol; Go atomics are sequentially consistent, which is
// stronger than the acquire/release a seqlock needs. The series' identity
// hash is not kept: the sweeper finds index entries by ref instead.
//
// Fields above meta are immutable after the series is published. The
// struct is 32 B, a Go size class.
type memSeries struct {
	metricID uint32 // symbol ID of __name__
	setID    uint32 // interned label set without __name__

	meta atomic.Uint64          // head | n<<12 | cap<<24 | seq<<36 | emptySeen<<62 | dead<<63
	ring atomic.Pointer[uint64] // &words[0]; length derived from meta's capacity

	// lcache is the labels.Labels built on the first Labels call, so the
	// query hot path does not allocate; nil until a query asks. Only
	// queried series pay for the labels themselves.
	lcache atomic.Pointer[labelsBox]
}

const (
	metaDead      = uint64(1) << 63
	metaEmptySeen = uint64(1) << 62 // a sweep found the series empty
	metaFlags     = metaDead | metaEmptySeen
	seqShift      = 36
	seqOne        = uint64(1) << seqShift // the odd bit: a writer is inside
	seqMask       = uint64(1)<<26 - 1
	maxRingCap    = 1<<12 - 1
	initialRingWs = 6 // 48 B size class: base + 2 slots (one pair)
)

func packMeta(head, n, c int) uint64 {
	return uint64(head) | uint64(n)<<12 | uint64(c)<<24
}

func unpackMeta(m uint64) (head, n, c int) {
	return int(m & 0xfff), int(m >> 12 & 0xfff), int(m >> 24 & 0xfff)
}

// ringWords is the number of words a ring of capacity c needs.
func ringWords(c int) int { return 1 + 3*((c+1)/2) }

// ringCapFor is the largest capacity whose ring fits in w words.
func ringCapFor(w int) int { return 2 * ((w - 1) / 3) }

// Slots are stored in pairs, three words per pair: value i, value i+1, and
// their two offsets, so a sample's value and time share a cache line (at
// 1M series every append and read is a cache miss per line touched).

// newRing allocates a ring for at least c slots and returns it with the
// capacity the allocation's size class actually holds (at most maxCap).
func newRing(c, maxCap int) ([]uint64, int) {
	// append to nil rounds the allocation up to its size class without a
	// temporary; the spare words become slots instead of padding.
	w := append([]uint64(nil), make([]uint64, ringWords(c))...)
	w = w[:cap(w)]
	got := min(ringCapFor(len(w)), maxCap)
	return w[:ringWords(got)], got
}

// wrap maps a logical position 0 <= x < 2c onto a slot; a compare is
// cheaper than the division of x % c on the append path.
func wrap(x, c int) int {
	if x >= c {
		return x - c
	}
	return x
}

func ringView(p *uint64, c int) []uint64 { return unsafe.Slice(p, ringWords(c)) }

func slotT(w []uint64, i int) int64 {
	return int64(atomic.LoadUint64(&w[0])) + offAt(w, i)
}

func slotV(w []uint64, i int) float64 {
	return math.Float64frombits(atomic.LoadUint64(&w[1+3*(i>>1)+i&1]))
}

// setSlot writes a sample; only the series' writer calls it.
func setSlot(w []uint64, i int, off uint32, v float64) {
	atomic.StoreUint64(&w[1+3*(i>>1)+i&1], math.Float64bits(v))
	p := &w[3+3*(i>>1)]
	sh := 32 * uint(i&1)
	old := atomic.LoadUint64(p)
	atomic.StoreUint64(p, old&^(uint64(math.MaxUint32)<<sh)|uint64(off)<<sh)
}

// lock makes the calling writer the series' only writer and returns the
// meta value it found (even sequence). unlock(m) restores it unchanged;
// publish stores new state.
func (ms *memSeries) lock() uint64 {
	for spins := 0; ; spins++ {
		m := ms.meta.Load()
		if m&seqOne == 0 && ms.meta.CompareAndSwap(m, m+seqOne) {
			return m
		}
		if spins > 16 {
			runtime.Gosched()
		}
	}
}

func (ms *memSeries) unlock(m uint64) { ms.meta.Store(m) }

// publish ends a write that changed state: the new fields, the flags, and
// the sequence advanced by two from m (even again).
func (ms *memSeries) publish(m uint64, head, n, c int, flags uint64) {
	seq := (m>>seqShift + 2) & seqMask
	ms.meta.Store(packMeta(head, n, c) | seq<<seqShift | flags)
}

// snapshot returns a consistent (meta, ring) pair for a reader.
func (ms *memSeries) snapshot() (uint64, []uint64) {
	for spins := 0; ; spins++ {
		m := ms.meta.Load()
		if m&seqOne == 0 {
			p := ms.ring.Load()
			if ms.meta.Load() == m {
				if p == nil {
					return m, nil
				}
				_, _, c := unpackMeta(m)
				return m, ringView(p, c)
			}
		}
		if spins > 16 {
			runtime.Gosched()
		}
	}
}

// appendResult tells the store what an append did, for its counters.
type appendResult uint8

const (
	appended appendResult = iota
	appendedGrew
	droppedDuplicate
	rejectedOutOfOrder
	rejectedDuplicate
	rejectedDead
)

// append adds (t, v). retention bounds growth: when the ring is full and
// its oldest sample is still within retention of t, the ring grows instead
// of overwriting. grownBytes reports the ring bytes added, for the memory
// estimate.
func (ms *memSeries) append(t int64, v float64, retention int64, maxCap int) (res appendResult, grownBytes int64) {
	m := ms.lock()
	if m&metaDead != 0 {
		ms.unlock(m)
		return rejectedDead, 0
	}
	head, n, c := unpackMeta(m)
	var w []uint64
	if p := ms.ring.Load(); p != nil {
		w = ringView(p, c)
	}
	if n > 0 {
		last := wrap(head+n-1, c)
		lt := slotT(w, last)
		switch {
		case value.IsStaleNaN(v) && t <= lt:
			ms.unlock(m)
			return droppedDuplicate, 0
		case t < lt:
			ms.unlock(m)
			return rejectedOutOfOrder, 0
		case t == lt:
			ms.unlock(m)
			if math.Float64bits(v) == math.Float64bits(slotV(w, last)) {
				return droppedDuplicate, 0
			}
			return rejectedDuplicate, 0
		}
	}
	res = appended
	switch {
	case w == nil:
		nw, nc := newRing(ringCapFor(initialRingWs), maxCap)
		atomic.StoreUint64(&nw[0], uint64(t))
		w, c, head, n = nw, nc, 0, 0
		grownBytes = int64(8 * len(nw))
		ms.ring.Store(&nw[0])
		res = appendedGrew
	case n == c && c < maxCap && slotT(w, head) >= t-retention:
		// Full, and the oldest sample is still needed: size the ring to
		// the retention at the observed interval.
		iv := max((t-slotT(w, head))/int64(n), 1)
		want := min(max(int(retention/iv)+1, c+1+c/8), maxCap)
		oldLen := len(w)
		w, c, head = ms.rebuild(w, c, head, n, want, maxCap, slotT(w, head))
		grownBytes = int64(8 * (len(w) - oldLen))
		res = appendedGrew
	}
	if uint64(t-int64(atomic.LoadUint64(&w[0]))) > math.MaxUint32 {
		// Offsets would overflow: re-base on the oldest sample still
		// within retention of t (Validate keeps retention < 2^31 ms).
		keep := 0
		for keep < n && slotT(w, wrap(head+keep, c)) < t-retention {
			keep++
		}
		base := t - retention
		if keep < n {
			base = slotT(w, wrap(head+keep, c))
		}
		oldLen := len(w)
		w, c, head = ms.rebuildFrom(w, c, head, n, keep, c, maxCap, base)
		grownBytes += int64(8 * (len(w) - oldLen))
		n -= keep
	}
	off := uint32(t - int64(atomic.LoadUint64(&w[0])))
	if n < c {
		setSlot(w, wrap(head+n, c), off, v)
		n++
	} else {
		setSlot(w, head, off, v)
		head = wrap(head+1, c)
	}
	ms.publish(m, head, n, c, m&metaDead) // clears metaEmptySeen
	return res, grownBytes
}

// rebuild copies all n samples into a new ring of at least want slots.
func (ms *memSeries) rebuild(w []uint64, c, head, n, want, maxCap int, base int64) ([]uint64, int, int) {
	return ms.rebuildFrom(w, c, head, n, 0, want, maxCap, base)
}

// rebuildFrom copies samples skip..n-1 into a new ring of at least want
// slots with the given base and publishes it (the caller holds the lock
// and publishes meta). It returns the new ring, its capacity and head 0.
func (ms *memSeries) rebuildFrom(w []uint64, c, head, n, skip, want, maxCap int, base int64) ([]uint64, int, int) {
	nw, nc := newRing(want, maxCap)
	nw[0] = uint64(base)
	for i := skip; i < n; i++ {
		j := wrap(head+i, c)
		setSlot(nw, i-skip, uint32(slotT(w, j)-base), slotV(w, j))
	}
	ms.ring.Store(&nw[0])
	return nw, nc, 0
}

// markDead makes every later read and append of ms see nothing, if ms is
// still silent since before cutoff (or was already empty at the previous
// sweep). It reports whether it did.
func (ms *memSeries) markDead(cutoff int64) bool {
	m := ms.lock()
	head, n, c := unpackMeta(m)
	if m&metaDead != 0 {
		ms.unlock(m)
		return false
	}
	switch {
	case n > 0:
		w := ringView(ms.ring.Load(), c)
		if slotT(w, wrap(head+n-1, c)) >= cutoff {
			ms.unlock(m)
			return false
		}
	case m&metaEmptySeen == 0:
		// Created but never appended to (its first sample may be on its
		// way): give it one more sweep interval.
		ms.publish(m, head, n, c, metaEmptySeen)
		return false
	}
	ms.publish(m, head, n, c, m&metaFlags|metaDead)
	return true
}

// lastT returns the newest sample time, or false for an empty or dead series.
func (ms *memSeries) lastT() (int64, bool) {
	for {
		m, w := ms.snapshot()
		head, n, c := unpackMeta(m)
		if m&metaDead != 0 || n == 0 {
			return 0, false
		}
		t := slotT(w, wrap(head+n-1, c))
		if ms.meta.Load() == m {
			return t, true
		}
	}
}

// latest implements Store.Latest for one series: the newest sample with
// T <= maxt and T >= mint, or the synthetic stale marker that ends it when
// maxt is past its freshness window (freshFloor < 0 disables that).
func (ms *memSeries) latest(maxt, mint, freshFloor, retention int64) (Sample, bool) {
	for {
		m, w := ms.snapshot()
		head, n, c := unpackMeta(m)
		if m&metaDead != 0 || n == 0 {
			return Sample{}, false
		}
		j := n - 1
		var t int64
		for ; j >= 0; j-- {
			if t = slotT(w, wrap(head+j, c)); t <= maxt {
				break
			}
		}
		if j < 0 || t < mint {
			if ms.meta.Load() == m {
				return Sample{}, false
			}
			continue
		}
		out := Sample{T: t, V: slotV(w, wrap(head+j, c))}
		f := freshFloor
		if j > 0 {
			f = max(f, 3*(t-slotT(w, wrap(head+j-1, c))))
		}
		if ms.meta.Load() != m {
			continue
		}
		if freshFloor >= 0 && !value.IsStaleNaN(out.V) {
			if end := t + min(f, retention); maxt >= end {
				return Sample{T: end, V: math.Float64frombits(value.StaleNaN)}, true
			}
		}
		return out, true
	}
}

// appendRange appends the samples with mint < T <= maxt to dst.
func (ms *memSeries) appendRange(dst []Sample, mint, maxt int64) []Sample {
	start := len(dst)
	for {
		m, w := ms.snapshot()
		head, n, c := unpackMeta(m)
		if m&metaDead != 0 || n == 0 {
			return dst
		}
		base := int64(atomic.LoadUint64(&w[0]))
		// Skip from the newest end: a window usually covers the tail.
		lo, j := n, head+n-1
		if j >= c {
			j -= c
		}
		for lo > 0 && base+offAt(w, j) > mint {
			lo--
			if j--; j < 0 {
				j = c - 1
			}
		}
		if j++; j == c {
			j = 0
		}
		for i := lo; i < n; i++ {
			t := base + offAt(w, j)
			if t > maxt {
				break
			}
			dst = append(dst, Sample{T: t, V: slotV(w, j)})
			if j++; j == c {
				j = 0
			}
		}
		if ms.meta.Load() == m {
			return dst
		}
		dst = dst[:start]
	}
}

// offAt returns slot i's offset from the ring's base. The half is picked
// by a conditional move, not a shift by 32·(i&1): a variable shift count
// must sit in CX on amd64, and freeing CX made every read loop shuffle
// and spill registers around it.
func offAt(w []uint64, i int) int64 {
	x := atomic.LoadUint64(&w[3+3*(i>>1)])
	if i&1 != 0 {
		x >>= 32
	}
	return int64(uint32(x))
}
