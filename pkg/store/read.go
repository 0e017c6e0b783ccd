package store

import (
	"math"
	"sync/atomic"
	"unsafe"

	"github.com/prometheus/prometheus/model/value"
)

// This file is the zero-copy read path used by the query evaluator: a
// Handle resolves a ref to its series once, a Reader fixes the clock for a
// batch of reads, and a Window reads a series' samples in place, straight
// from the seqlock-protected ring (see memSeries for the protocol).

// Handle is a series resolved once, so repeated reads skip the series
// table. The zero Handle names no series and reads as empty.
//
// Invariant: a Handle holds its series' *memSeries, and a memSeries is
// never reused for another series: deletion marks it dead (every later
// read sees nothing), and a reused ref gets a new memSeries. So a stale
// Handle can only read empty, never another series' samples. Generation
// changes on every delete, so holders re-resolve their Handles (Store.Handle)
// whenever Generation moved, including when Select returns the same refs
// (a ref deleted and re-created with the same labels is a new series).
type Handle struct {
	ms *memSeries
	hs *histSeries // a histogram series' log (hist.go); nil for a float series
}

// Handle returns the handle of the series behind ref, or the zero Handle
// when ref names no live series. It takes no lock and does not allocate.
func (s *Store) Handle(ref SeriesRef) Handle {
	ms := s.get(ref)
	if ms == nil {
		return Handle{}
	}
	return Handle{ms: ms, hs: s.histSeriesOf(ref, ms)}
}

// Histograms reports whether h's series is a histogram series, whose
// samples may be histograms: read it with LatestHistogram and
// RangeHistograms (Latest, Range and Window return their markers,
// IsHistogram).
func (h Handle) Histograms() bool { return h.hs != nil }

// IsZero reports whether h names no series.
func (h Handle) IsZero() bool { return h.ms == nil }

// Reader fixes "now" (the retention edge) and the freshness settings for
// a batch of reads, such as one query evaluation, so the clock is read
// once per batch instead of once per series. A Reader is a value; it holds
// no resources.
type Reader struct {
	oldest    int64 // samples with T < oldest are past the retention
	freshMs   int64 // < 0: freshness disabled
	retention int64
}

// Reader returns a Reader whose retention edge is the store's current time.
func (s *Store) Reader() Reader {
	return Reader{oldest: s.nowMs() - s.retentionMs, freshMs: s.freshMs, retention: s.retentionMs}
}

// Latest is Store.Latest for a resolved series at the Reader's time:
// the newest sample with T <= maxt and T within the retention, or the
// synthetic stale marker that ends it when maxt is past its freshness
// window. It takes no lock and does not allocate.
func (r Reader) Latest(h Handle, maxt int64) (Sample, bool) {
	ms := h.ms
	if ms == nil {
		return Sample{}, false
	}
	for {
		m, p, ok := ms.trySnapshot()
		var w []uint64
		if !ok {
			m, w = ms.snapshot()
		} else if p != nil {
			w = ringView(p, int(m>>24&0xfff))
		}
		head, n, c := unpackMeta(m)
		if m&metaDead != 0 || n == 0 {
			return Sample{}, false
		}
		base := int64(atomic.LoadUint64(&w[0]))
		// The newest sample, or by binary search the newest at or
		// before maxt (an offset query).
		j := n - 1
		s := wrap(head+j, c)
		off := offAt(w, s)
		if off > maxt-base {
			j = searchAfter(w, head, c, 0, n-1, maxt-base) - 1
			if j < 0 {
				if ms.meta.Load() == m {
					return Sample{}, false
				}
				continue
			}
			s = wrap(head+j, c)
			off = offAt(w, s)
		}
		v := slotV(w, s)
		f := r.freshMs
		if f >= 0 && j > 0 {
			f = max(f, 3*(off-offAt(w, wrap(head+j-1, c))))
		}
		if ms.meta.Load() != m {
			continue
		}
		t := base + off
		if t < r.oldest {
			return Sample{}, false
		}
		if r.freshMs >= 0 && !value.IsStaleNaN(v) {
			if end := t + min(f, r.retention); maxt >= end {
				return Sample{T: end, V: math.Float64frombits(value.StaleNaN)}, true
			}
		}
		return Sample{T: t, V: v}, true
	}
}

// trySnapshot is snapshot's common case, small enough to inline into the
// read loops: meta (even), the ring pointer, meta again unchanged. When ok
// is false a writer is inside; call snapshot. (snapshot itself does not
// inline, and the call was a tenth of a rate's cost.)
func (ms *memSeries) trySnapshot() (m uint64, p *uint64, ok bool) {
	m = ms.meta.Load()
	p = ms.ring.Load()
	return m, p, m&seqOne == 0 && ms.meta.Load() == m
}

// Range is Store.Range for a resolved series at the Reader's time: it
// appends the samples with mint < T <= maxt to dst, stale markers
// included.
func (r Reader) Range(dst []Sample, h Handle, mint, maxt int64) []Sample {
	if h.ms == nil {
		return dst
	}
	return h.ms.appendRange(dst, max(mint, r.oldest-1), maxt)
}

// Window is a zero-copy view of one series' samples with mint < T <= maxt
// (stale markers included), read in place from the series' ring.
//
// Read protocol (the seqlock of memSeries, split so the caller can compute
// while it reads): Reader.Window takes a consistent (meta, ring) snapshot
// and locates the window; At reads slots of that ring with atomic loads;
// Valid re-loads meta. Only when Valid returns true, after the last At, are
// the values read consistent (each sample whole, in time order, exactly the
// samples in the window at the snapshot). When it returns false a writer
// overwrote slots meanwhile: the caller must discard everything it computed
// from the window and call Reader.Window again. Until then At may return
// mixed or garbage values but never reads out of bounds: the ring the
// snapshot loaded matches its capacity and stays alive (GC) while the
// Window does. A write is a handful of stores, so retries are rare.
type Window struct {
	ms   *memSeries
	m    uint64   // meta at the snapshot
	w    []uint64 // the ring at the snapshot
	base int64
	j0   int // slot of the window's first sample
	c    int // ring capacity
	n    int // samples in the window
}

// linearScan is how many samples Window steps back from the newest end
// before switching to a binary search: a rate over a short range usually
// covers only the last few samples.
const linearScan = 8

// Window sets win to the view of h's samples with mint < T <= maxt,
// oldest first. Samples older than the retention are outside every
// window. It fills win in place (a returned 72-byte struct would cost a
// store-forwarding stall per series), takes no lock and does not allocate.
func (r Reader) Window(win *Window, h Handle, mint, maxt int64) {
	ms := h.ms
	if ms == nil {
		*win = Window{}
		return
	}
	mint = max(mint, r.oldest-1)
	m, w := ms.snapshot()
	win.ms, win.m, win.n = ms, m, 0
	head, n, c := unpackMeta(m)
	if m&metaDead != 0 || n == 0 {
		return
	}
	base := int64(atomic.LoadUint64(&w[0]))
	// Bounds relative to base, so the search compares raw offsets.
	lob, hib := mint-base, maxt-base
	hi := n
	if offAt(w, wrap(head+n-1, c)) > hib {
		hi = searchAfter(w, head, c, 0, n-1, hib)
	}
	lo := hi
	for steps := 0; lo > 0 && steps < linearScan; steps++ {
		if offAt(w, wrap(head+lo-1, c)) <= lob {
			break
		}
		lo--
	}
	if lo > 0 && hi-lo == linearScan {
		lo = searchAfter(w, head, c, 0, lo, lob)
	}
	win.w, win.base, win.j0, win.c, win.n = w, base, wrap(head+lo, c), c, hi-lo
}

// searchAfter returns the first logical position in [lo, hi) whose offset
// is greater than bound, or hi. Offsets ascend with the position.
func searchAfter(w []uint64, head, c, lo, hi int, bound int64) int {
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if offAt(w, wrap(head+mid, c)) > bound {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// Len returns the number of samples in the window.
func (w *Window) Len() int { return w.n }

// At returns the window's i-th sample, 0 <= i < Len(), oldest first. See
// Window for when the values may be trusted.
func (w *Window) At(i int) (int64, float64) {
	j := w.j0 + i
	if j >= w.c {
		j -= w.c
	}
	off := int64(uint32(atomic.LoadUint64(&w.w[3+3*(j>>1)]) >> (32 * uint(j&1))))
	return w.base + off, math.Float64frombits(atomic.LoadUint64(&w.w[1+3*(j>>1)+j&1]))
}

// Valid reports whether no writer changed the series since the snapshot,
// so every value At returned so far is consistent. The zero Window (no
// series) is always valid.
func (w *Window) Valid() bool { return w.ms == nil || w.ms.meta.Load() == w.m }

// AppendTo appends the window's samples to dst. Like At, the result is
// only consistent if Valid returns true afterwards.
func (w *Window) AppendTo(dst []Sample) []Sample {
	for i := range w.n {
		t, v := w.At(i)
		dst = append(dst, Sample{T: t, V: v})
	}
	return dst
}

// Scan summarises a window's samples other than stale markers, as
// Window.Scan computes it in one pass.
type Scan struct {
	N             int // samples other than stale markers
	FirstT, LastT int64
	FirstV, LastV float64
	// Drops counts the samples lower than the one before them (counter
	// resets); FirstDrop is the value before the first drop.
	Drops     int
	FirstDrop float64

	// span is the samples in the range ScanRange last summarised into
	// this Scan: its guess for the next range's length (see ScanRange).
	span int
}

// Scan fills s with the summary of the window's non-stale samples, the
// pass that rate, increase and delta need, with the ring's words in
// registers instead of one At call per sample. Like At, the result is only
// consistent if Valid returns true afterwards.
func (w *Window) Scan(s *Scan) {
	ww, base, c, j := w.w, w.base, w.c, w.j0
	var (
		cnt, drops          int
		firstT, lastT       int64
		firstV, prev, drop0 float64
	)
	for range w.n {
		k := 3 * (j >> 1)
		off := int64(uint32(atomic.LoadUint64(&ww[k+3]) >> (32 * uint(j&1))))
		v := math.Float64frombits(atomic.LoadUint64(&ww[k+1+j&1]))
		if j++; j == c {
			j = 0
		}
		if value.IsStaleNaN(v) {
			continue
		}
		switch {
		case cnt == 0:
			firstT, firstV = base+off, v
		case v < prev:
			if drops == 0 {
				drop0 = prev
			}
			drops++
		}
		prev, lastT = v, base+off
		cnt++
	}
	// Field by field: a composite literal is built on the stack and
	// copied with 16-byte loads of 8-byte stores, a store-forwarding
	// stall per call.
	s.N, s.FirstT, s.LastT, s.FirstV, s.LastV, s.Drops, s.FirstDrop = cnt, firstT, lastT, firstV, prev, drops, drop0
}

// ScanRange fills s with the Scan of h's samples with mint < T <= maxt
// and returns how many samples that range holds, stale markers included.
// It retries on a concurrent write, so s is consistent. It takes no lock
// and does not allocate.
//
// s's previous content is a hint: ScanRange first tries the length of the
// range last scanned into s (series sampled together have ranges of the
// same length), which two offsets confirm or refute; only a refuted guess
// walks the offsets newest first to the first sample at or before mint.
// Any s gives the same result. It then reads the values oldest first. The
// value loop is the common case only: no NaN (stale marker or not) and no
// drop (counter reset); a range with either is summarised again by
// scanSlots. Each loop keeps few values live (Go spills a loop's state at
// every iteration once registers run out, which made the former single
// loop twice as long in instructions). The ring is read through its
// pointer, without bounds checks (ringWord).
func (r Reader) ScanRange(s *Scan, h Handle, mint, maxt int64) int {
	ms := h.ms
	if ms == nil {
		*s = Scan{}
		return 0
	}
	mint = max(mint, r.oldest-1)
	for {
		m, p, ok := ms.trySnapshot()
		if !ok {
			var w []uint64
			if m, w = ms.snapshot(); w != nil {
				p = &w[0]
			}
		}
		head, n, c := unpackMeta(m)
		if m&metaDead != 0 || n == 0 {
			*s = Scan{}
			return 0
		}
		// From here every slot index is a position wrapped below c, so
		// every word index is below ringWords(c), the length of the ring
		// p points to (m and p are a consistent snapshot): the reads go
		// through p unchecked (ringWord).
		base := int64(ringWord(p, 0))
		lob, hib := mint-base, maxt-base
		hi := n
		lastOff := offAtP(p, wrap(head+n-1, c)) // the range's last, if hi == n
		if lastOff > hib {
			hi = searchAfter(ringView(p, c), head, c, 0, n-1, hib)
		}
		// The range's first sample, slot first, and its length total.
		// The guess is the length of the last range scanned into s (a
		// rate over series sampled together has the same length every
		// series): it holds when its first sample is after mint and the
		// sample before it, if any, is not; offsets ascend, so then the
		// range is exactly those samples. Checking costs two offsets;
		// the walk, one per sample. (Logical position p is slot
		// wrap(head+p, c); hi <= n <= c.)
		total, first := 0, 0
		var firstOff int64
		if g := s.span; g > 0 && g <= hi {
			first = wrap(head+hi-g, c)
			if firstOff = offAtP(p, first); firstOff > lob {
				if g == hi {
					total = g
				} else if prev := first - 1; offAtP(p, wrapDown(prev, c)) <= lob {
					total = g
				}
			}
		}
		if total == 0 {
			// Walk the offsets newest first; j ends on the slot before
			// the range's first sample.
			j := head + hi - 1
			if j >= c {
				j -= c
			} else if j < 0 {
				j += c
			}
			for total < hi && offAtP(p, j) > lob {
				total++
				if j--; j < 0 {
					j = c - 1
				}
			}
			if total == 0 {
				if ms.meta.Load() != m {
					continue
				}
				*s = Scan{}
				return 0
			}
			if first = j + 1; first == c {
				first = 0
			}
			firstOff = offAtP(p, first)
		}
		// Values, oldest first, while they are neither NaN nor lower
		// than the one before: one compare, !(v >= lastV), catches both
		// (lastV is never NaN). A NaN, stale marker or not, leaves the
		// common case for scanSlots, which summarises any range exactly,
		// so the result is the same either way.
		firstV := slotVP(p, first)
		lastV := firstV
		last := first + total - 1 // the range's last slot, once wrapped
		clean := !math.IsNaN(firstV)
		switch {
		case !clean:
		case last < c:
			// Not wrapped: step through the words themselves. Slot
			// 2i's value is word 1+3i, slot 2i+1's the next word, and
			// slot 2i+2's two words on, past the pair's offsets.
			vi, odd := 1+3*(first>>1)+first&1, first&1
			for end := 1 + 3*(last>>1) + last&1; vi < end; {
				vi += 1 + odd
				odd ^= 1
				v := math.Float64frombits(ringWord(p, vi))
				if !(v >= lastV) {
					clean = false
					break
				}
				lastV = v
			}
		default:
			last -= c
			j := first
			for range total - 1 {
				if j++; j == c {
					j = 0
				}
				v := slotVP(p, j)
				if !(v >= lastV) {
					clean = false
					break
				}
				lastV = v
			}
		}
		if clean {
			if hi < n {
				lastOff = offAtP(p, last)
			}
			s.N, s.FirstT, s.LastT, s.FirstV, s.LastV, s.Drops, s.FirstDrop = total, base+firstOff, base+lastOff, firstV, lastV, 0, 0
		} else {
			scanSlots(s, ringView(p, c), base, first, c, total)
		}
		s.span = total
		if ms.meta.Load() != m {
			continue
		}
		return total
	}
}

// scanSlots fills s with the Scan of the n samples from slot j of ring w
// onwards, oldest first: Window.Scan's loop, for ScanRange's ranges with
// stale markers or drops. Like At, the result is only consistent if the
// caller's meta is unchanged afterwards.
func scanSlots(s *Scan, w []uint64, base int64, j, c, n int) {
	win := Window{w: w, base: base, j0: j, c: c, n: n}
	win.Scan(s)
}

// ringWord loads word k of the ring p points to without a bounds check:
// the caller guarantees 0 <= k < ringWords(c) for the capacity c of the
// snapshot that loaded p. ScanRange's slot indices are positions bounded
// by that snapshot's meta (n <= c) and wrapped below c; the ring's
// contents only choose among them, so torn values cannot push an index
// out of range.
// The race detector's checkptr instrumentation checks that the address
// stays inside p's allocation.
func ringWord(p *uint64, k int) uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Add(unsafe.Pointer(p), uintptr(k)*8)))
}

// offAtP is offAt through ringWord.
func offAtP(p *uint64, i int) int64 {
	x := ringWord(p, 3+3*(i>>1))
	if i&1 != 0 {
		x >>= 32
	}
	return int64(uint32(x))
}

// slotVP is slotV through ringWord.
func slotVP(p *uint64, i int) float64 {
	return math.Float64frombits(ringWord(p, 1+3*(i>>1)+i&1))
}

// wrapDown maps a slot -1 <= x < c onto the ring: -1 is the last slot.
func wrapDown(x, c int) int {
	if x < 0 {
		return x + c
	}
	return x
}
