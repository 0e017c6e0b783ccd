package store

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
)

// Native histogram samples.
//
// A histogram series (CreateHistogram) keeps its samples in the same ring
// as a float series, time order and all: a histogram sample's slot holds
// its time and, as its value, a marker, a signalling NaN that no float
// sample carries (ring.go's append turns such a float into the canonical
// NaN). The marker's payload is the word offset of the histogram's entry
// in the series' log, the counter-reset hint a reader gets and a reset
// flag for thinning:
//
//	bits 63..48  0x7ff4, the tag
//	bit  34      reset: a counter reset against the sample before it
//	bits 33..32  the hint (histogram.CounterResetHint)
//	bits 31..0   the entry's offset in the log, in words
//
// so everything that orders, retains, thins, sweeps and snapshots samples
// works on histogram samples unchanged, and a histogram sample costs one
// 12 B slot plus its entry (MemoryPerHistogramSample).
//
// The log is one noscan []uint64 per series holding the entries one after
// the other in time order: an append writes at the tail. Entries whose
// slot is gone (expired and overwritten, thinned, merged) stay in place as
// garbage until the tail reaches the end; then the live entries are moved
// down in place (compaction) when that frees a fifth of the log, else the
// log grows to 1.5 × the live entries (a new allocation, charged to
// --max-sample-memory like a ring's growth), else, with the budget spent,
// the ring is thinned (or its oldest samples dropped) until the entry
// fits, as a float ring that may not grow is thinned. Each compaction
// copies at most four words per word appended since the last one.
//
// Entry layout, in words:
//
//	0        header: schema+128 (bits 0..7), positive spans (8..19),
//	         negative spans or, for custom buckets, the layout index
//	         (20..31), positive buckets (32..47), negative buckets (48..63)
//	1, 2     count and sum (IEEE 754 bits)
//	3, 4     zero threshold and zero count (exponential schemas only)
//	...      spans, positive then negative: offset (int32) | length<<32
//	...      bucket counts, positive then negative (absolute, IEEE 754)
//
// Custom bucket bounds (schema -53) are interned per series (layouts) and
// shared by every reader, as Prometheus shares them.
//
// Concurrency contract: the log follows its series' seqlock (memSeries).
//
//  1. Writers: an append to the series, holding the series' write lock
//     (its sequence odd). Only it writes entries, moves them, swaps the
//     log or the layouts, and rewrites markers.
//  2. Readers: query goroutines and the checkpoint writer, without locks.
//  3. Publication: the writer stores the entry (every word with an atomic
//     store, so a log readers may hold is never written plainly; a new
//     log is filled before its pointer is published), then the marker in
//     the ring, then meta with the sequence made even.
//  4. A reader loads meta, the ring, the marker, the log and the layouts,
//     copies the entry with bounds checks on every length it reads (a
//     torn header can only make it copy less or fail, never read out of
//     bounds), and loads meta again: if it changed, it discards the copy
//     and retries, as for floats. An old log stays alive for a reader that
//     holds it (GC).

// Histogram limits. A larger histogram is refused with ErrInvalidHistogram;
// the receiver lowers an OTLP histogram's resolution until it fits
// (otlp-contract.md §6).
const (
	// MaxHistogramBuckets bounds the buckets of one histogram sample,
	// positive and negative together.
	MaxHistogramBuckets = 4096
	// maxHistSpans bounds the spans of one side (a 12-bit header field).
	maxHistSpans = 1<<12 - 1
	// maxLayouts bounds the custom bucket layouts one series interns.
	maxLayouts = 1<<12 - 1
	// maxLogWords keeps every entry's offset within the marker's 32 bits.
	maxLogWords = 1 << 31
)

// Errors of AppendHistogram.
var (
	// ErrNotHistogramSeries means a histogram sample was appended to a
	// series created by Create (a float series).
	ErrNotHistogramSeries = errors.New("histogram sample for a float series")
	// ErrInvalidHistogram means a histogram sample is malformed (spans
	// and buckets disagree, an unsupported schema, negative counts) or
	// larger than MaxHistogramBuckets.
	ErrInvalidHistogram = errors.New("invalid native histogram")
	// ErrHistogramMemory means --max-sample-memory cannot hold even this
	// one histogram sample for its series.
	ErrHistogramMemory = errors.New("sample memory budget spent")
)

// Markers.
const (
	markTag       uint64 = 0x7ff4 << 48
	markTagMask   uint64 = 0xffff << 48
	markHintShift        = 32
	markHintMask  uint64 = 3 << markHintShift
	markReset     uint64 = 1 << 34
	markOffMask   uint64 = 1<<32 - 1
)

func isMark(b uint64) bool      { return b&markTagMask == markTag }
func isResetMark(b uint64) bool { return isMark(b) && b&markReset != 0 }
func markOff(b uint64) int      { return int(b & markOffMask) }

func markHint(b uint64) histogram.CounterResetHint {
	return histogram.CounterResetHint(b >> markHintShift & 3)
}

func makeMark(off int, hint histogram.CounterResetHint, reset bool) uint64 {
	b := markTag | uint64(hint)<<markHintShift | uint64(off)&markOffMask
	if reset {
		b |= markReset
	}
	return b
}

// markAsReset returns a histogram marker flagged as following a counter
// reset (a gauge keeps its hint); any other value unchanged. Thinning
// uses it when it drops the samples across which a reset happened.
func markAsReset(b uint64) uint64 {
	if !isMark(b) {
		return b
	}
	b |= markReset
	if markHint(b) != histogram.GaugeType {
		b = b&^markHintMask | uint64(histogram.CounterReset)<<markHintShift
	}
	return b
}

// IsHistogram reports whether v, a value Latest, Range or a Window
// returned, is a histogram sample's marker rather than a float. Only
// histogram series hold such values; Reader.LatestHistogram and
// Reader.RangeHistograms return the histograms themselves.
func IsHistogram(v float64) bool { return isMark(math.Float64bits(v)) }

// histMergeable is mergeable for histogram samples: the new sample v may
// replace the newest one lv (before it pv) when all three are histograms,
// neither v nor lv follows a counter reset, lv does not start a run of
// samples (its hint is not-reset or gauge, so v, with the same hint,
// keeps a hint that holds against pv) and v has lv's hint.
func histMergeable(v, lv, pv uint64) bool {
	if !isMark(v) || !isMark(lv) || !isMark(pv) || (v|lv)&markReset != 0 {
		return false
	}
	h := markHint(lv)
	return (h == histogram.NotCounterReset || h == histogram.GaugeType) && markHint(v) == h
}

// histDrop tells thinPass to keep a histogram sample at a counter reset
// and the sample before it, as it keeps both sides of a float drop.
func histDrop(v uint64, hasNext bool, next uint64) bool {
	return isResetMark(v) || hasNext && isResetMark(next)
}

// histSeries is what a histogram series has beyond its memSeries: the
// log of its histogram samples and its interned custom bucket layouts.
// Store.hists holds it at the series' ref; ms names the series it
// belongs to, so a ref reused by another series is never confused.
type histSeries struct {
	ms      *memSeries
	log     atomic.Pointer[histLog]
	layouts atomic.Pointer[[][]float64] // append-only, copy on write; entries immutable
}

// histSeriesBytes is the size class of a histSeries.
const histSeriesBytes = 32

// histLog is a series' log of entries (see the contract above).
type histLog struct {
	w     []uint64 // every access atomic once the log is published
	tail  int      // next free word; the writer's only
	bytes int64    // charged to ringLimits: the allocation's size
}

// histLogStructBytes is the size class of a histLog header.
const histLogStructBytes = 48

// newHistLog allocates a log of at least words words, rounded up to its
// size class (as newRing), and returns it with its charge.
func newHistLog(words int) *histLog {
	w := append([]uint64(nil), make([]uint64, words)...)
	w = w[:min(cap(w), maxLogWords)]
	return &histLog{w: w, bytes: int64(8*cap(w)) + histLogStructBytes}
}

// logAllocBound is an upper bound of what newHistLog(words) charges
// (allocBound's reasoning).
func logAllocBound(words int) int64 {
	b := int64(8 * words)
	if b <= 32<<10 {
		return b + b/8 + 16 + histLogStructBytes
	}
	return b + 8<<10 + histLogStructBytes
}

// entryWords is the size of fh's entry.
func entryWords(fh *histogram.FloatHistogram) int {
	n := 3 + len(fh.PositiveSpans) + len(fh.PositiveBuckets)
	if !fh.UsesCustomBuckets() {
		n += 2 + len(fh.NegativeSpans) + len(fh.NegativeBuckets)
	}
	return n
}

// MemoryPerHistogramSample is what one histogram sample costs in the
// store, in bytes, excluding the log's spare room (at most half again
// after a growth): its 12 B slot and its entry, 8 B per word: 5 words
// (3 with custom buckets), one per span and one per bucket.
func MemoryPerHistogramSample(fh *histogram.FloatHistogram) int {
	return 12 + 8*entryWords(fh)
}

// checkHistogram validates a histogram sample for the store.
func checkHistogram(fh *histogram.FloatHistogram) error {
	switch {
	case fh.Schema > histogram.ExponentialSchemaMax && !fh.UsesCustomBuckets():
		return fmt.Errorf("%w: schema %d above %d", ErrInvalidHistogram, fh.Schema, histogram.ExponentialSchemaMax)
	case len(fh.PositiveBuckets)+len(fh.NegativeBuckets) > MaxHistogramBuckets:
		return fmt.Errorf("%w: %d buckets, more than %d", ErrInvalidHistogram, len(fh.PositiveBuckets)+len(fh.NegativeBuckets), MaxHistogramBuckets)
	case len(fh.PositiveSpans) > maxHistSpans || len(fh.NegativeSpans) > maxHistSpans:
		return fmt.Errorf("%w: more than %d spans", ErrInvalidHistogram, maxHistSpans)
	case fh.UsesCustomBuckets() && len(fh.CustomValues) > MaxHistogramBuckets:
		return fmt.Errorf("%w: %d custom bounds, more than %d", ErrInvalidHistogram, len(fh.CustomValues), MaxHistogramBuckets)
	}
	if err := fh.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidHistogram, err)
	}
	return nil
}

// storeWord writes a word of a log or ring readers may hold.
func storeWord(w []uint64, i int, x uint64) { atomic.StoreUint64(&w[i], x) }

// encodeEntry writes fh's entry at w[off:] with atomic stores; layout is
// its custom bucket layout's index.
func encodeEntry(w []uint64, off int, fh *histogram.FloatHistogram, layout int) {
	custom := fh.UsesCustomBuckets()
	hdr := uint64(uint8(fh.Schema+128)) | uint64(len(fh.PositiveSpans))<<8 |
		uint64(len(fh.PositiveBuckets))<<32 | uint64(len(fh.NegativeBuckets))<<48
	if custom {
		hdr = hdr&^(0xfff<<20|0xffff<<48) | uint64(layout)<<20
	} else {
		hdr |= uint64(len(fh.NegativeSpans)) << 20
	}
	storeWord(w, off, hdr)
	storeWord(w, off+1, math.Float64bits(fh.Count))
	storeWord(w, off+2, math.Float64bits(fh.Sum))
	i := off + 3
	if !custom {
		storeWord(w, i, math.Float64bits(fh.ZeroThreshold))
		storeWord(w, i+1, math.Float64bits(fh.ZeroCount))
		i += 2
	}
	for _, sp := range fh.PositiveSpans {
		storeWord(w, i, uint64(uint32(sp.Offset))|uint64(sp.Length)<<32)
		i++
	}
	if !custom {
		for _, sp := range fh.NegativeSpans {
			storeWord(w, i, uint64(uint32(sp.Offset))|uint64(sp.Length)<<32)
			i++
		}
	}
	for _, b := range fh.PositiveBuckets {
		storeWord(w, i, math.Float64bits(b))
		i++
	}
	if !custom {
		for _, b := range fh.NegativeBuckets {
			storeWord(w, i, math.Float64bits(b))
			i++
		}
	}
}

// entryLen returns the size of the entry at w[off:], or 0 when its header
// does not describe an entry that fits (a torn read).
func entryLen(w []uint64, off int) int {
	if off < 0 || off >= len(w) {
		return 0
	}
	return entrySize(atomic.LoadUint64(&w[off]), off, len(w))
}

// entrySize is entryLen for the header hdr, read once by the caller: a
// reader that decodes an entry must size it from the very header word it
// decodes, since a writer may change the word between two loads.
func entrySize(hdr uint64, off, words int) int {
	ps, ns, pb, nb := int(hdr>>8&0xfff), int(hdr>>20&0xfff), int(hdr>>32&0xffff), int(hdr>>48)
	n := 3 + ps + pb
	if int32(hdr&0xff)-128 != histogram.CustomBucketsSchema {
		n += 2 + ns + nb
	} else if nb != 0 {
		return 0
	}
	if pb+nb > MaxHistogramBuckets || off+n > words {
		return 0
	}
	return n
}

// decodeEntry copies the entry at w[off:] into fh (its slices reused),
// except the counter-reset hint, which the marker carries. It reports
// false, leaving fh partly written, when the entry does not decode (a
// torn read: the caller retries).
func decodeEntry(w []uint64, off int, fh *histogram.FloatHistogram, layouts [][]float64) bool {
	if off < 0 || off >= len(w) {
		return false
	}
	// One load of the header: its sizes are checked against w and then
	// used to decode (TestHistogramConcurrentReads once panicked when the
	// header was loaded again and a writer had changed it).
	hdr := atomic.LoadUint64(&w[off])
	if entrySize(hdr, off, len(w)) == 0 {
		return false
	}
	schema := int32(hdr&0xff) - 128
	ps, ns, pb, nb := int(hdr>>8&0xfff), int(hdr>>20&0xfff), int(hdr>>32&0xffff), int(hdr>>48)
	custom := schema == histogram.CustomBucketsSchema
	fh.Schema = schema
	fh.Count = math.Float64frombits(atomic.LoadUint64(&w[off+1]))
	fh.Sum = math.Float64frombits(atomic.LoadUint64(&w[off+2]))
	i := off + 3
	if custom {
		if ns >= len(layouts) {
			return false
		}
		fh.CustomValues = layouts[ns]
		fh.ZeroThreshold, fh.ZeroCount = 0, 0
		ns = 0
	} else {
		fh.CustomValues = nil
		fh.ZeroThreshold = math.Float64frombits(atomic.LoadUint64(&w[i]))
		fh.ZeroCount = math.Float64frombits(atomic.LoadUint64(&w[i+1]))
		i += 2
	}
	fh.PositiveSpans = resizeSpans(fh.PositiveSpans, ps)
	for k := range fh.PositiveSpans {
		x := atomic.LoadUint64(&w[i])
		fh.PositiveSpans[k] = histogram.Span{Offset: int32(uint32(x)), Length: uint32(x >> 32)}
		i++
	}
	fh.NegativeSpans = resizeSpans(fh.NegativeSpans, ns)
	for k := range fh.NegativeSpans {
		x := atomic.LoadUint64(&w[i])
		fh.NegativeSpans[k] = histogram.Span{Offset: int32(uint32(x)), Length: uint32(x >> 32)}
		i++
	}
	fh.PositiveBuckets = resizeFloats(fh.PositiveBuckets, pb)
	for k := range fh.PositiveBuckets {
		fh.PositiveBuckets[k] = math.Float64frombits(atomic.LoadUint64(&w[i]))
		i++
	}
	fh.NegativeBuckets = resizeFloats(fh.NegativeBuckets, nb)
	for k := range fh.NegativeBuckets {
		fh.NegativeBuckets[k] = math.Float64frombits(atomic.LoadUint64(&w[i]))
		i++
	}
	return true
}

// resizeSpans returns s with length n, reusing its array when it can. An
// empty result is nil, as Prometheus leaves absent spans and buckets, so
// copies compare equal.
func resizeSpans(s []histogram.Span, n int) []histogram.Span {
	if n == 0 {
		return s[:0:0]
	}
	if cap(s) >= n {
		return s[:n]
	}
	return make([]histogram.Span, n)
}

func resizeFloats(s []float64, n int) []float64 {
	if n == 0 {
		return s[:0:0]
	}
	if cap(s) >= n {
		return s[:n]
	}
	return make([]float64, n)
}

// layoutIndex returns the index of bounds among hs's interned layouts,
// interning a copy when it is new; ok is false when the series has
// maxLayouts already. The caller holds the series' write lock.
func (hs *histSeries) layoutIndex(bounds []float64) (int, bool) {
	var cur [][]float64
	if p := hs.layouts.Load(); p != nil {
		cur = *p
	}
	for i := len(cur) - 1; i >= 0; i-- {
		if histogram.CustomBucketBoundsMatch(cur[i], bounds) {
			return i, true
		}
	}
	if len(cur) >= maxLayouts {
		return 0, false
	}
	next := make([][]float64, len(cur)+1)
	copy(next, cur)
	next[len(cur)] = append([]float64(nil), bounds...)
	hs.layouts.Store(&next)
	return len(cur), true
}

func (hs *histSeries) layoutList() [][]float64 {
	if p := hs.layouts.Load(); p != nil {
		return *p
	}
	return nil
}

// appendHint is the counter-reset hint a reader gets for fh appended after
// prev (nil when the sample before is not a histogram or there is none),
// and whether fh follows a counter reset. It mirrors what Prometheus's
// TSDB head returns when the samples are read back: a gauge histogram
// reads as a gauge; a counter histogram that starts a chunk (the series'
// first histogram, one after a float, a stale marker or a gauge, after a
// counter reset, detected or hinted, or with a new schema, zero
// threshold or custom bounds) reads as unknown, so PromQL detects resets
// itself; any other reads as not-reset. fh's hint is restored before
// returning.
func appendHint(fh, prev *histogram.FloatHistogram) (histogram.CounterResetHint, bool) {
	in := fh.CounterResetHint
	defer func() { fh.CounterResetHint = in }()
	if prev == nil {
		if in == histogram.GaugeType {
			return histogram.GaugeType, true
		}
		return histogram.UnknownCounterReset, true
	}
	fh.CounterResetHint = histogram.UnknownCounterReset
	reset := in == histogram.CounterReset || fh.UsesCustomBuckets() != prev.UsesCustomBuckets() || fh.DetectReset(prev)
	if in == histogram.GaugeType {
		return histogram.GaugeType, reset
	}
	layout := fh.Schema != prev.Schema || fh.ZeroThreshold != prev.ZeroThreshold ||
		fh.UsesCustomBuckets() && !histogram.CustomBucketBoundsMatch(fh.CustomValues, prev.CustomValues)
	if reset || layout || prev.CounterResetHint == histogram.GaugeType {
		return histogram.UnknownCounterReset, reset
	}
	return histogram.NotCounterReset, false
}

// decodeMark decodes the histogram a marker names from lg into fh, hint
// included.
func (hs *histSeries) decodeMark(lg *histLog, b uint64, fh *histogram.FloatHistogram) bool {
	if lg == nil || !decodeEntry(lg.w, markOff(b), fh, hs.layoutList()) {
		return false
	}
	fh.CounterResetHint = markHint(b)
	return true
}

// append adds (t, fh) to the series: fh.Sum must not be a stale marker
// (AppendHistogram turns a stale histogram into a float stale marker) and
// fh must have passed checkHistogram. scratch is a histogram the writer
// may decode into. It returns what memSeries.append returns, or
// rejectedMemory when the budget cannot hold the entry.
func (hs *histSeries) append(t int64, fh *histogram.FloatHistogram, l *ringLimits, scratch *histogram.FloatHistogram) (res appendResult, thinned int, atCap bool) {
	ms := hs.ms
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
	lg := hs.log.Load()
	var (
		lt   int64
		prev *histogram.FloatHistogram
	)
	if n > 0 {
		last := wrap(head+n-1, c)
		lt = slotT(w, last)
		lb := math.Float64bits(slotV(w, last))
		if t <= lt {
			ms.unlock(m)
			switch {
			case t < lt:
				return rejectedOutOfOrder, 0, false
			case isMark(lb) && hs.decodeMark(lg, lb, scratch) && scratch.Equals(fh):
				return droppedDuplicate, 0, false
			}
			return rejectedDuplicate, 0, false
		}
		if isMark(lb) && hs.decodeMark(lg, lb, scratch) {
			prev = scratch
		}
	}
	hint, reset := appendHint(fh, prev)
	layout := 0
	if fh.UsesCustomBuckets() {
		var ok bool
		if layout, ok = hs.layoutIndex(fh.CustomValues); !ok {
			ms.unlock(m)
			return rejectedInvalid, 0, false
		}
	}
	need := entryWords(fh)
	var flags uint64
	lg, head, n, flags, thinned = hs.room(lg, w, head, n, c, m&metaThinned, need, l)
	if lg == nil {
		// Thinning may have changed the ring: publish what it did.
		ms.publish(m, head, n, c, m&metaDead|flags)
		return rejectedMemory, thinned, false
	}
	off := lg.tail
	encodeEntry(lg.w, off, fh, layout)
	lg.tail += need
	mark := math.Float64frombits(makeMark(off, hint, reset))
	m2 := packMeta(head, n, c) | m&(seqMask<<seqShift|seqOne|metaDead) | flags
	var (
		res2     appendResult
		thinned2 int
	)
	head, n, c, flags, res2, thinned2, atCap = ms.appendLocked(m2, w, t, mark, lt, l)
	ms.publish(m, head, n, c, m&metaDead|flags)
	if thinned > 0 && res2 == appended {
		res2 = appendedThinned
	}
	return res2, thinned + thinned2, atCap
}

// room makes room for need words at lg's tail, for a ring (w, head, n,
// c) whose thinned flag is flags, and returns the log to write to (nil
// when not even an emptied ring's log can hold the entry) and the ring's
// head, count and flags after any thinning, with the samples thinning
// removed. The caller holds the series' write lock.
func (hs *histSeries) room(lg *histLog, w []uint64, head, n, c int, flags uint64, need int, l *ringLimits) (*histLog, int, int, uint64, int) {
	if lg != nil && lg.tail+need <= len(lg.w) {
		return lg, head, n, flags, 0
	}
	live := hs.liveWords(lg, w, head, n, c)
	if lg != nil && live+need <= len(lg.w)-len(lg.w)/5 {
		hs.compact(lg, lg, w, head, n, c)
		return lg, head, n, flags, 0
	}
	want := live + live/2 + need
	if lg == nil {
		want = 4 * need // the first log: room for a few samples
	}
	if want <= maxLogWords {
		if bound := logAllocBound(want); l.reserve(bound) {
			nl := newHistLog(want)
			l.used.Add(nl.bytes - bound)
			hs.compact(lg, nl, w, head, n, c)
			hs.log.Store(nl)
			if lg != nil {
				l.used.Add(-lg.bytes)
			}
			return nl, head, n, flags, 0
		}
	}
	// The budget is spent: thin the ring until the live entries and this
	// one fit in the log, compacting it; drop the oldest samples when
	// thinning cannot reduce them further.
	thinned := 0
	for lg != nil {
		if live+need <= len(lg.w) {
			hs.compact(lg, lg, w, head, n, c)
			return lg, head, n, flags, thinned
		}
		if n == 0 {
			break
		}
		if n >= minRingCap {
			if k := thinTo(w, head, n, c, n); k < n {
				thinned += n - k
				n, flags = k, metaThinned
				live = hs.liveWords(lg, w, head, n, c)
				continue
			}
		}
		head, n = wrap(head+1, c), n-1
		thinned++
		live = hs.liveWords(lg, w, head, n, c)
	}
	// Nothing left to thin and the log cannot hold the entry: a log of
	// exactly its size, if the budget gives that.
	if bound := logAllocBound(need); need <= maxLogWords && l.reserve(bound) {
		nl := newHistLog(need)
		l.used.Add(nl.bytes - bound)
		hs.log.Store(nl)
		if lg != nil {
			l.used.Add(-lg.bytes)
		}
		return nl, head, n, flags, thinned
	}
	return nil, head, n, flags, thinned
}

// liveWords sums the entries the ring's markers name.
func (hs *histSeries) liveWords(lg *histLog, w []uint64, head, n, c int) int {
	if lg == nil {
		return 0
	}
	live := 0
	for i := range n {
		if b := math.Float64bits(slotV(w, wrap(head+i, c))); isMark(b) {
			live += entryLen(lg.w, markOff(b))
		}
	}
	return live
}

// compact copies the entries the ring's markers name from src (nil: there
// are none) to the start of dst, in ring order, and points the markers at
// their new places. dst may be src: entries only move down, since a
// log's entries are in ring order. The caller holds the write lock.
func (hs *histSeries) compact(src, dst *histLog, w []uint64, head, n, c int) {
	pos := 0
	if src != nil {
		for i := range n {
			j := wrap(head+i, c)
			b := math.Float64bits(slotV(w, j))
			if !isMark(b) {
				continue
			}
			off := markOff(b)
			sz := entryLen(src.w, off)
			if off != pos || src != dst {
				for k := range sz {
					storeWord(dst.w, pos+k, atomic.LoadUint64(&src.w[off+k]))
				}
				storeWord(w, 1+3*(j>>1)+j&1, b&^markOffMask|uint64(pos))
			}
			pos += sz
		}
	}
	dst.tail = pos
}

// histSeriesOf returns the histogram state of ms at ref, or nil for a
// float series.
func (s *Store) histSeriesOf(ref SeriesRef, ms *memSeries) *histSeries {
	p := s.hists.at(uint32(ref))
	if p == nil {
		return nil
	}
	if hs := p.Load(); hs != nil && hs.ms == ms {
		return hs
	}
	return nil
}

// AppendHistogram adds a native histogram sample to a histogram series
// (CreateHistogram), as Append adds a float: the same ordering, duplicate
// and retention rules, and the same thinning at the series' bounds, the
// histogram's entry charged to --max-sample-memory at its size
// (MemoryPerHistogramSample). A histogram whose sum is a stale marker is
// stored as a float stale marker, which ends the series as in
// Prometheus. fh is copied; the caller keeps it. A float series refuses
// histograms (ErrNotHistogramSeries); a malformed histogram is refused
// with ErrInvalidHistogram. It takes no store-wide lock and allocates
// only when the series' log grows.
func (a *Appender) AppendHistogram(ref SeriesRef, t int64, fh *histogram.FloatHistogram) error {
	if value.IsStaleNaN(fh.Sum) {
		return a.append(ref, t, math.Float64frombits(value.StaleNaN))
	}
	s := a.s
	ms := s.get(ref)
	if ms == nil {
		s.m.reject(reasonUnknownSeries)
		return ErrUnknownSeries
	}
	hs := s.histSeriesOf(ref, ms)
	if hs == nil {
		s.m.reject(reasonSampleKind)
		return ErrNotHistogramSeries
	}
	if t < s.nowMs()-s.retentionMs {
		s.m.reject(reasonTooOld)
		return ErrTooOld
	}
	if err := checkHistogram(fh); err != nil {
		s.m.reject(reasonInvalidHistogram)
		return err
	}
	scratch, _ := s.histScratch.Get().(*histogram.FloatHistogram)
	if scratch == nil {
		scratch = &histogram.FloatHistogram{}
	}
	res, thinned, atCap := hs.append(t, fh, &s.rl, scratch)
	scratch.CustomValues = nil // interned bounds need not stay reachable
	s.histScratch.Put(scratch)
	// The outcome as Appender.append's, repeated: shared as a call, it
	// costs every float append 15 instructions
	// (BenchmarkAppendStart/series=10k/start=none 362 -> 377 Ir/op,
	// BenchmarkIngest impl=wire/series=10k 2.530 -> 2.558 M Ir/op;
	// callgrind).
	if thinned != 0 {
		s.m.thinned(ref, thinned, atCap)
	}
	switch res {
	case appended, appendedGrew:
		a.appended++
		a.last = ref
		return nil
	case appendedThinned:
		a.appended++
		a.last = ref
		s.noteThinned(ms, atCap)
		return nil
	case droppedDuplicate:
		return nil
	case rejectedOutOfOrder:
		s.m.reject(reasonOutOfOrder)
		return ErrOutOfOrder
	case rejectedDuplicate:
		s.m.reject(reasonDuplicate)
		return ErrDuplicateTimestamp
	case rejectedInvalid:
		s.m.reject(reasonInvalidHistogram)
		return fmt.Errorf("%w: more than %d custom bucket layouts in one series", ErrInvalidHistogram, maxLayouts)
	case rejectedMemory:
		s.m.reject(reasonSampleMemory)
		return ErrHistogramMemory
	default: // rejectedDead
		s.m.reject(reasonUnknownSeries)
		return ErrUnknownSeries
	}
}

// IsHistogramSeries reports whether ref names a histogram series
// (CreateHistogram).
func (s *Store) IsHistogramSeries(ref SeriesRef) bool {
	ms := s.get(ref)
	return ms != nil && s.histSeriesOf(ref, ms) != nil
}
