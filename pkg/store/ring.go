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
// An int64 time per slot, as in []struct{t int64; v float64}, would cost
// 16 B per slot.
//
// Sizing (ringLimits): a ring starts with 2 slots and, when it is full and
// its oldest sample is still within the retention, grows towards
// retention/observed interval + 1 slots, at most 4× per step (so a burst
// of closely spaced samples costs what the same samples spaced out cost:
// the interval seen over a few samples says little), rounded up to fill
// the Go size class, capped by MaxSamplesPerSeries and by the store's
// MaxSampleMemory. A ring that needs to grow and may not is thinned
// instead of truncated (thin, mergeNewest): it keeps covering the whole
// retention at a coarser resolution, so a range query over any window
// within the retention still sees samples from the window's start.
//
// Concurrency contract (a seqlock whose sequence lives in the meta word,
// which doubles as the writers' spin lock):
//
//  1. Writers: any goroutine appending to this series (two Export calls may
//     carry the same series) and the TTL sweeper. A writer owns the series
//     while meta's sequence is odd: it enters with CompareAndSwap(even,
//     odd), so writers of one series are serialised without any shared
//     lock, and writers of different series touch disjoint memory.
//  2. Readers: any query goroutine and the checkpoint writer, with no lock
//     and no write to shared memory, so readers never block a writer.
//  3. Publication order: the writer makes the sequence odd, stores the slot
//     words and, on growth, the ring pointer, then stores meta once with
//     the new head, count and capacity and the sequence made even again. A
//     rejected append restores the old meta: nothing changed, so readers
//     that saw it stay valid. Thinning rewrites slots of the same ring in
//     place under the same protocol.
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
// The sequence has 25 bits and every completed write advances it, so a
// reader could only be fooled by exactly 2^24 writes to one series (4.6
// hours of a sender pushing every millisecond, one every 15 s in
// production) landing while it copies a few slots. Keeping it in meta
// saves a word per series (1M series).
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

	meta atomic.Uint64          // head | n<<12 | cap<<24 | seq<<36 | thinned<<61 | emptySeen<<62 | dead<<63
	ring atomic.Pointer[uint64] // &words[0]; length derived from meta's capacity

	// lcache is the labels.Labels built on the first Labels call, so the
	// query hot path does not allocate; nil until a query asks. Only
	// queried series pay for the labels themselves.
	lcache atomic.Pointer[labelsBox]
}

const (
	metaDead      = uint64(1) << 63
	metaEmptySeen = uint64(1) << 62 // a sweep found the series empty
	// metaThinned: the ring reached its bound while its oldest sample was
	// still within the retention, so it keeps at most one sample per
	// thinGap (mergeNewest) until the sender slows down.
	metaThinned = uint64(1) << 61
	metaFlags   = metaDead | metaEmptySeen | metaThinned
	seqShift    = 36
	seqOne      = uint64(1) << seqShift // the odd bit: a writer is inside
	seqMask     = uint64(1)<<25 - 1
	maxRingCap  = 1<<12 - 1
	// minRingCap is the smallest MaxSamplesPerSeries: thinning a ring
	// needs room for its oldest sample, one per bucket and its newest.
	minRingCap    = 4
	initialRingWs = 6 // 48 B size class: base + 2 slots (one pair)
	// maxGrowth bounds one growth step: a ring grows to at most this many
	// times its capacity, whatever interval its samples suggest.
	maxGrowth = 4
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

// ringAllocBytes[c] is the size of the allocation behind a ring of
// capacity c: 8 × ringWords(c) rounded up to its Go size class. newRing
// records it (the same for every ring of capacity c, see newRing), so the
// memory accounting counts what the allocator really hands out, and a
// ring being freed is subtracted with the same figure.
var ringAllocBytes [maxRingCap + 1]atomic.Int32

// newRing allocates a ring for at least c slots and returns it with the
// capacity the allocation's size class actually holds (at most maxCap)
// and the allocation's size in bytes. That capacity always lands in the
// same size class as c itself (c <= got <= what the class holds), so the
// size depends on the returned capacity alone.
func newRing(c, maxCap int) ([]uint64, int, int64) {
	// append to nil rounds the allocation up to its size class without a
	// temporary; the spare words become slots instead of padding.
	w := append([]uint64(nil), make([]uint64, ringWords(c))...)
	w = w[:cap(w)]
	got := min(ringCapFor(len(w)), maxCap)
	bytes := int64(8 * len(w))
	ringAllocBytes[got].Store(int32(bytes))
	return w[:ringWords(got)], got, bytes
}

// ringBytes returns the allocation size of a ring of capacity c that
// newRing made.
func ringBytes(c int) int64 { return int64(ringAllocBytes[c].Load()) }

// allocBound is an upper bound of the allocation newRing makes for c
// slots: Go rounds a small object up by at most 1/8 (its size classes'
// designed tail waste) and a large one up to whole 8 KiB pages. The
// budget reserves it before allocating and returns the excess after.
func allocBound(c int) int64 {
	b := int64(8 * ringWords(c))
	if b <= 32<<10 {
		return b + b/8 + 16
	}
	return b + 8<<10
}

// ringLimits bounds every ring of a store: how far back samples are
// needed, how many slots one ring may have, and how many bytes all rings
// together may hold. used is shared by every writer that grows or frees a
// ring (rare events: a ring reaches its size after a few growths), so it
// sits on its own cache line, away from what appends read.
type ringLimits struct {
	retention int64 // ms
	maxCap    int
	budget    int64 // bytes; Config.MaxSampleMemory
	_         [40]byte
	used      atomic.Int64 // bytes of every live ring's allocation
	_         [56]byte
}

// reserve takes n bytes from the budget, or reports that they do not fit.
func (l *ringLimits) reserve(n int64) bool {
	if l.used.Add(n) > l.budget {
		l.used.Add(-n)
		return false
	}
	return true
}

// thinGap is the time two kept samples of a thinned ring of capacity c
// may be apart at most (mergeNewest keeps them at least half of it
// apart), so that c of them span the retention: 2 × retention / (c − 1).
func (l *ringLimits) thinGap(c int) int64 {
	return 2 * l.retention / int64(c-1)
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
	appendedThinned // stored after thinning the ring (thin)
	droppedDuplicate
	rejectedOutOfOrder
	rejectedDuplicate
	rejectedDead
	rejectedInvalid // a histogram the series cannot store (hist.go)
	rejectedMemory  // a histogram entry the budget cannot hold (hist.go)
)

// append adds (t, v). When the ring is full and its oldest sample is still
// within the retention of t, the ring grows (within l's bounds) instead of
// overwriting it; when it may not grow, it is thinned. thinned reports how
// many samples still within the retention the append removed (merged or
// thinned away), and atCap whether the per-series bound, rather than the
// memory budget, stopped the ring.
func (ms *memSeries) append(t int64, v float64, l *ringLimits) (res appendResult, thinned int, atCap bool) {
	if math.Float64bits(v)&markTagMask == markTag {
		// A float that looks like a histogram marker (hist.go) is some
		// NaN: store the canonical one, so no float reads as a histogram.
		v = math.NaN()
	}
	m := ms.lock()
	if m&metaDead != 0 {
		ms.unlock(m)
		return rejectedDead, 0, false
	}
	head, n, c := unpackMeta(m)
	var w []uint64
	if p := ms.ring.Load(); p != nil {
		w = ringView(p, c)
	}
	var lt int64
	if n > 0 {
		last := wrap(head+n-1, c)
		lt = slotT(w, last)
		switch {
		case value.IsStaleNaN(v) && t <= lt:
			ms.unlock(m)
			return droppedDuplicate, 0, false
		case t < lt:
			ms.unlock(m)
			return rejectedOutOfOrder, 0, false
		case t == lt:
			ms.unlock(m)
			if math.Float64bits(v) == math.Float64bits(slotV(w, last)) {
				return droppedDuplicate, 0, false
			}
			return rejectedDuplicate, 0, false
		}
	}
	// The common case, kept small so the compiler keeps it in registers
	// (measured: the general path below cost 36 more instructions per
	// append when it was the only path): a ring that is not thinned, has
	// a free slot or an expired oldest sample, and needs no re-base.
	if w != nil {
		base := int64(atomic.LoadUint64(&w[0]))
		if uint64(t-base) <= math.MaxUint32 {
			switch {
			case m&metaThinned != 0:
				// A thinned ring's common case: the sample replaces the
				// newest one (appendSlow for the rest).
				if gap := l.thinGap(c); t-lt < gap && mergeable(w, head, n, c, t, v, gap) {
					setSlot(w, wrap(head+n-1, c), uint32(t-base), v)
					ms.publish(m, head, n, c, m&(metaDead|metaThinned))
					return appended, 1, c >= l.maxCap
				}
			case n < c:
				setSlot(w, wrap(head+n, c), uint32(t-base), v)
				ms.publish(m, head, n+1, c, m&metaDead)
				return appended, 0, false
			case offAt(w, head) < t-l.retention-base:
				setSlot(w, head, uint32(t-base), v)
				ms.publish(m, wrap(head+1, c), n, c, m&metaDead)
				return appended, 0, false
			}
		}
	}
	return ms.appendSlow(m, w, t, v, lt, l)
}

// appendSlow is append's general path, for the cases its common path
// leaves: a first sample, a thinned ring, a full ring whose oldest sample
// is still within the retention (grow or thin), and a re-base. The caller
// holds the write lock (m) and has checked the sample's order against the
// newest one, lt.
func (ms *memSeries) appendSlow(m uint64, w []uint64, t int64, v float64, lt int64, l *ringLimits) (res appendResult, thinned int, atCap bool) {
	var (
		head, n, c int
		flags      uint64
	)
	head, n, c, flags, res, thinned, atCap = ms.appendLocked(m, w, t, v, lt, l)
	ms.publish(m, head, n, c, m&metaDead|flags) // clears metaEmptySeen
	return res, thinned, atCap
}

// appendLocked is appendSlow without the publication: it stores (t, v)
// and returns the ring's new head, count, capacity and thinned flag for
// the caller to publish (a histogram append stores its log entry first,
// hist.go). The new sample is at position n-1 of the result.
func (ms *memSeries) appendLocked(m uint64, w []uint64, t int64, v float64, lt int64, l *ringLimits) (head, n, c int, flags uint64, res appendResult, thinned int, atCap bool) {
	head, n, c = unpackMeta(m)
	res = appended
	flags = m & metaThinned
	merge := false
	switch {
	case w == nil:
		// Always granted, budget or not: a series' first ring is part of
		// its fixed cost, which MaxSeries bounds.
		nw, nc, nb := newRing(ringCapFor(initialRingWs), l.maxCap)
		l.used.Add(nb)
		atomic.StoreUint64(&nw[0], uint64(t))
		w, c, head, n = nw, nc, 0, 0
		ms.ring.Store(&nw[0])
		res = appendedGrew
	case flags != 0 && t-lt >= l.thinGap(c):
		// The sender slowed down to at least the gap: stop merging.
		flags = 0
	case flags != 0 && mergeable(w, head, n, c, t, v, l.thinGap(c)):
		merge = true
	}
	truncate := false // overwrite a sample still within the retention
	// Full, and the oldest sample is still needed: grow, or thin. (When
	// the ring is full, head is the slot the append overwrites: its line
	// is loaded anyway.)
	var oldest int64
	full := !merge && n == c
	if full {
		oldest = slotT(w, head)
	}
	if full && oldest >= t-l.retention {
		grew := false
		if c < l.maxCap {
			// Size the ring to the retention at the observed interval,
			// growing at least by an eighth and at most maxGrowth-fold.
			iv := max((t-oldest)/int64(n), 1)
			want := min(max(int(l.retention/iv)+1, c+1+c/8), maxGrowth*c, l.maxCap)
			if bound := allocBound(want); l.reserve(bound) {
				old := ringBytes(c)
				var nb int64
				w, c, head, nb = ms.rebuildFrom(w, c, head, n, 0, want, l.maxCap, oldest)
				l.used.Add(nb - bound - old)
				grew, flags, res = true, 0, appendedGrew
			}
		}
		if !grew {
			atCap = c >= l.maxCap
			if c >= minRingCap {
				k := thin(w, head, n, c)
				thinned, n = n-k, k
				flags, res = metaThinned, appendedThinned
			} else {
				// A first, 2-slot ring that may not grow (the budget is
				// spent) overwrites its oldest sample below: it covers
				// its last two samples.
				truncate = true
			}
		}
	}
	if uint64(t-int64(atomic.LoadUint64(&w[0]))) > math.MaxUint32 {
		// Offsets would overflow: re-base on the oldest sample still
		// within retention of t (Validate keeps retention < 2^31 ms).
		keep := 0
		for keep < n && slotT(w, wrap(head+keep, c)) < t-l.retention {
			keep++
		}
		base := t - l.retention
		if keep < n {
			base = slotT(w, wrap(head+keep, c))
		}
		if keep == n {
			merge = false // nothing left to merge into: store t as a new sample
		}
		w, c, head, _ = ms.rebuildFrom(w, c, head, n, keep, c, l.maxCap, base)
		n -= keep
	}
	off := uint32(t - int64(atomic.LoadUint64(&w[0])))
	switch {
	case merge:
		setSlot(w, wrap(head+n-1, c), off, v)
		thinned++
		atCap = c >= l.maxCap
	case n < c:
		setSlot(w, wrap(head+n, c), off, v)
		n++
	default:
		if truncate {
			thinned = 1
		}
		setSlot(w, head, off, v)
		head = wrap(head+1, c)
	}
	return head, n, c, flags, res, thinned, atCap
}

// presize gives a series that has no ring yet one for n samples, base t0,
// within l's bounds (the budget reserved as growth reserves it); it does
// nothing to a series with a ring, or when the budget is spent (growth
// then takes over). A restore knows how many samples it will append, and
// growing through 2, 8, 32 ... slots cost it half its append time.
func (ms *memSeries) presize(n int, t0 int64, l *ringLimits) {
	m := ms.lock()
	if m&metaDead != 0 || ms.ring.Load() != nil {
		ms.unlock(m)
		return
	}
	want := min(max(n, ringCapFor(initialRingWs)), l.maxCap)
	bound := allocBound(want)
	if !l.reserve(bound) {
		ms.unlock(m)
		return
	}
	nw, nc, nb := newRing(want, l.maxCap)
	l.used.Add(nb - bound)
	atomic.StoreUint64(&nw[0], uint64(t0))
	ms.ring.Store(&nw[0])
	ms.publish(m, 0, 0, nc, m&metaDead)
}

// mergeable reports whether the sample (t, v) may replace the newest one
// of a thinned ring instead of being added: the newest is less than gap
// after the one before it would then be, so replacing it keeps every two
// neighbours among the kept samples at least gap/2 apart (a newest
// sample is replaced until the next one would be gap after its
// predecessor). It never merges away a stale marker, a NaN, or either
// side of a drop (a counter reset): rate's reset correction needs the
// value before the drop and the one after it, so increase over the kept
// samples equals increase over all of them.
func mergeable(w []uint64, head, n, c int, t int64, v float64, gap int64) bool {
	if n < 2 {
		return false
	}
	last, prev := wrap(head+n-1, c), wrap(head+n-2, c)
	if t-slotT(w, prev) >= gap {
		return false
	}
	lv, pv := slotV(w, last), slotV(w, prev)
	// Each compare is false when either side is NaN, stale marker or not.
	if v >= lv && lv >= pv {
		return true
	}
	return histMergeable(math.Float64bits(v), math.Float64bits(lv), math.Float64bits(pv))
}

// thin rewrites the n (== c) samples of a full ring in place so that at
// most about half remain, spread over the same time span, and returns how
// many remain (at the same head, oldest first). The span from the oldest
// to the newest sample is cut into c/2 equal buckets and the first sample
// of each is kept, with the oldest and the newest sample, stale markers,
// and both sides of every drop (counter reset, see mergeable) when that
// still frees a quarter of the ring; otherwise buckets, oldest and newest
// alone. Writes go to positions at or before the one being read, so the
// compaction needs no scratch space. The caller holds the series' write
// lock; readers see the change through the sequence (memSeries).
func thin(w []uint64, head, n, c int) int { return thinTo(w, head, n, c, c) }

// thinTo is thin for a ring treated as if it had slots slots (at least
// minRingCap): its n samples are thinned to about slots/2. A histogram
// series whose log may not grow thins the samples it has (hist.go).
func thinTo(w []uint64, head, n, c, slots int) int {
	t0 := slotT(w, head)
	width := (slotT(w, wrap(head+n-1, c))-t0)/int64(slots/2) + 1
	keepAll := thinPass(w, head, n, c, t0, width, true, false) <= slots-slots/4
	return thinPass(w, head, n, c, t0, width, keepAll, true)
}

// thinPass selects samples as thin describes (with the drop and stale
// marker rule when special is set), moves them when write is set, and
// returns how many it selected.
func thinPass(w []uint64, head, n, c int, t0, width int64, special, write bool) int {
	k := 0
	lastBucket := int64(-1)
	prevV := math.NaN()
	lostReset := false // a dropped histogram sample was a counter reset
	for i := range n {
		j := wrap(head+i, c)
		t, v := slotT(w, j), slotV(w, j)
		b := (t - t0) / width
		keep := i == 0 || i == n-1 || b > lastBucket
		if special && !keep {
			keep = value.IsStaleNaN(v) || v < prevV || (i+1 < n && slotV(w, wrap(j+1, c)) < v) ||
				histDrop(math.Float64bits(v), i+1 < n, math.Float64bits(slotV(w, wrap(j+1, c))))
		}
		prevV = v
		if !keep {
			lostReset = lostReset || isResetMark(math.Float64bits(v))
			continue
		}
		nv := v
		if lostReset {
			// The samples between this one and the kept one before it
			// held a histogram counter reset: this one now follows
			// that one across it (markAsReset leaves a float as is).
			nv = math.Float64frombits(markAsReset(math.Float64bits(v)))
			lostReset = false
		}
		if write && (k != i || math.Float64bits(nv) != math.Float64bits(v)) {
			setSlot(w, wrap(head+k, c), uint32(t-int64(atomic.LoadUint64(&w[0]))), nv)
		}
		lastBucket = max(lastBucket, b)
		k++
	}
	return k
}

// rebuildFrom copies samples skip..n-1 into a new ring of at least want
// slots with the given base and publishes it (the caller holds the lock
// and publishes meta). It returns the new ring, its capacity, head 0 and
// the new allocation's size; the old ring's bytes are the caller's to
// subtract (the store counts them, see ringLimits).
func (ms *memSeries) rebuildFrom(w []uint64, c, head, n, skip, want, maxCap int, base int64) ([]uint64, int, int, int64) {
	nw, nc, nb := newRing(want, maxCap)
	nw[0] = uint64(base)
	for i := skip; i < n; i++ {
		j := wrap(head+i, c)
		setSlot(nw, i-skip, uint32(slotT(w, j)-base), slotV(w, j))
	}
	ms.ring.Store(&nw[0])
	return nw, nc, 0, nb
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
