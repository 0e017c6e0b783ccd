package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
)

// Snapshot format, version 3 (all integers little-endian):
//
//	header   magic "KOSSNAP\n" (8 bytes), version uint32
//	payload  series records, then a 0 byte (uvarint 0) ending them;
//	         version 2: then the legacy aliases (uvarint count, per alias
//	         uvarint length + alias bytes, uvarint length + stored name bytes)
//	trailer  payload length uint64, CRC-32C of the payload uint32
//
// A series record is: uvarint label count (>= 1, so 0 can end the
// list); identity hash uint64; per label uvarint length + name bytes, uvarint
// length + value bytes, names strictly ascending, __name__ among them;
// uvarint start time in unix ms, 0 for none (version 2 only; version 1
// records have no such field and are still read); version 3: uvarint
// kind, 0 for a float series and 1 for a histogram series
// (CreateHistogram); uvarint sample count; per sample a varint time delta
// from the previous sample (the first from 0), strictly increasing, and
// the value's IEEE 754 bits as uint64, so NaN payloads (StaleNaN) survive
// bit for bit. In version 3 a value that is a histogram marker (hist.go;
// only its hint bits are meaningful) is followed by the histogram:
// varint schema; zero threshold, zero count, count and sum bits as
// uint64; uvarint positive span count, per span varint offset and
// uvarint length; the same for negative spans; uvarint positive bucket
// count, per bucket its bits as uint64; the same for negative buckets;
// uvarint custom bound count, per bound its bits as uint64.
//
// The checksum sits in a trailer so the writer streams; the reader must
// therefore read the whole payload before it trusts any of it. It reads it
// twice, streaming, with a window of a few hundred KiB: once to check the
// checksum and the whole structure, then to apply it, so a rejected
// snapshot leaves the store unchanged and a restore never holds the file
// in memory (1M series make a file of hundreds of MB).
const (
	snapshotVersion = 3
	snapHeaderLen   = 12
	snapTrailerLen  = 12
	// maxSnapshotSize bounds what ReadSnapshot (not ReadSnapshotAt,
	// which streams) reads into memory.
	maxSnapshotSize = 16 << 30
	// maxSnapString bounds one label name or value in a snapshot, and so
	// the decoder's window (labels are limited to KiBs when stored).
	maxSnapString = 16 << 20
	// snapWindow is the decoder's window (tests shrink it to cross window
	// boundaries everywhere).
	snapWindow = 256 << 10
)

var snapshotMagic = [8]byte{'K', 'O', 'S', 'S', 'N', 'A', 'P', '\n'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot errors. Every ReadSnapshot error about the input itself (as
// opposed to an I/O error of the reader) wraps ErrBadSnapshot; a
// truncated input and one of an unknown format version also wrap
// ErrSnapshotTruncated and ErrSnapshotVersion, so callers can tell the
// three apart.
var (
	// ErrBadSnapshot means the input is not an intact snapshot.
	ErrBadSnapshot = errors.New("bad store snapshot")
	// ErrSnapshotTruncated means the input is shorter (or longer) than
	// its trailer says, or too short to have one.
	ErrSnapshotTruncated = errors.New("truncated")
	// ErrSnapshotVersion means the input has a format version this build
	// does not read (a newer build wrote it).
	ErrSnapshotVersion = errors.New("unsupported version")
)

// eachEntry calls fn for every live entry of the index: the identity hash
// as stored (hash 0 is reported as keyZero and a hash with a zero low half
// with its lowest bit set; fixKey maps both to the same slot, so Create
// and Lookup treat both alike) and its ref. It takes no lock, as Lookup:
// a slot's low key half is published last (hashIndex), so a non-zero one
// comes with its high half and ref. Entries inserted or removed during the
// walk may or may not be reported; a table replaced during the walk is
// walked to its end (its keys stay valid).
func (x *hashIndex) eachEntry(fn func(hash uint64, ref SeriesRef) error) error {
	for i := range x.shards {
		t := x.shards[i].tab.Load()
		if t == nil {
			continue
		}
		for j := range uint64(t.size()) {
			if k := t.key(j); k != 0 {
				if r := t.ref(j); r != 0 {
					if err := fn(k, SeriesRef(r)); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// WriteSnapshot writes every live series with samples in the retention
// window (identity hash, labels, start time, samples with stale markers)
// to w in the format above. It is a reader like any query: it takes no
// lock and never blocks an append, a series creation or a query; the
// snapshot holds each series as it was when it was read, and a series
// created or deleted meanwhile may or may not be in it. It does not cache
// labels (Labels would keep every series' labels built for the life of the
// series). A write error of w is returned at once, so a w that fails
// when a context ends cancels the snapshot.
func (s *Store) WriteSnapshot(w io.Writer) error {
	var hdr [snapHeaderLen]byte
	copy(hdr[:], snapshotMagic[:])
	binary.LittleEndian.PutUint32(hdr[8:], snapshotVersion)
	if _, err := w.Write(hdr[:]); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}
	crc := crc32.New(castagnoli)
	cw := &countWriter{w: io.MultiWriter(w, crc)}
	bw := bufio.NewWriterSize(cw, 64<<10)
	var (
		buf     []byte
		samples []Sample
		hists   []HSample
		names   []snapLabel
	)
	err := s.index.eachEntry(func(hash uint64, ref SeriesRef) error {
		ms := s.get(ref)
		if ms == nil {
			return nil
		}
		var ok bool
		if names, ok = s.snapshotLabels(names[:0], ms); !ok {
			return nil
		}
		mint := s.nowMs() - s.retentionMs - 1
		hs := s.histSeriesOf(ref, ms)
		hists = hists[:0]
		if hs == nil {
			samples = ms.appendRange(samples[:0], mint, math.MaxInt64)
		} else {
			rd := Reader{oldest: math.MinInt64 + 1, freshMs: -1, retention: s.retentionMs}
			samples, hists = rd.RangeHistograms(Handle{ms: ms, hs: hs}, mint, math.MaxInt64, samples[:0], hists)
		}
		var start uint64
		if st, ok := s.StartTime(ref); ok && st > 0 {
			start = uint64(st)
		}
		// The labels were read from ms's set and symbols: they are ms's
		// only if ms was still published at ref afterwards, and the
		// entry is the series' only if the index still maps hash to ref.
		if len(samples)+len(hists) == 0 || s.get(ref) != ms {
			return nil
		}
		if r, ok := s.index.lookup(hash); !ok || r != ref {
			return nil
		}
		buf = binary.AppendUvarint(buf[:0], uint64(len(names)))
		buf = binary.LittleEndian.AppendUint64(buf, hash)
		for _, l := range names {
			buf = binary.AppendUvarint(buf, uint64(len(l.name)))
			buf = append(buf, l.name...)
			buf = binary.AppendUvarint(buf, uint64(len(l.value)))
			buf = append(buf, l.value...)
		}
		buf = binary.AppendUvarint(buf, start)
		kind := uint64(0)
		if hs != nil {
			kind = 1
		}
		buf = binary.AppendUvarint(buf, kind)
		buf = binary.AppendUvarint(buf, uint64(len(samples)+len(hists)))
		var prev int64
		for i, k := 0, 0; i < len(samples) || k < len(hists); {
			if k == len(hists) || i < len(samples) && samples[i].T < hists[k].T {
				smp := samples[i]
				buf = binary.AppendVarint(buf, smp.T-prev)
				buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(smp.V))
				prev = smp.T
				i++
				continue
			}
			h := &hists[k]
			buf = binary.AppendVarint(buf, h.T-prev)
			buf = binary.LittleEndian.AppendUint64(buf, makeMark(0, h.H.CounterResetHint, false))
			buf = appendSnapHistogram(buf, &h.H)
			prev = h.T
			k++
		}
		if _, err := bw.Write(buf); err != nil {
			return fmt.Errorf("write snapshot: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	buf = append(buf[:0], 0)
	buf = s.appendAliases(buf)
	if _, err := bw.Write(buf); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	var tr [snapTrailerLen]byte
	binary.LittleEndian.PutUint64(tr[:], uint64(cw.n))
	binary.LittleEndian.PutUint32(tr[8:], crc.Sum32())
	if _, err := w.Write(tr[:]); err != nil {
		return fmt.Errorf("write snapshot trailer: %w", err)
	}
	return nil
}

type snapLabel struct{ name, value string }

// snapshotLabels appends ms's labels, sorted by name with __name__ among
// them, to dst without building or caching a labels.Labels. The strings
// are ms's only if ms is still published afterwards (see Labels); the
// caller checks. ok is false when ms's set is gone.
func (s *Store) snapshotLabels(dst []snapLabel, ms *memSeries) ([]snapLabel, bool) {
	ls := s.sets.at(ms.setID).Load()
	if ls == nil {
		return dst, false
	}
	name := snapLabel{model.MetricNameLabel, s.syms.str(ms.metricID)}
	placed := false
	for p, i := ls.pairs(), 0; i < len(p); i += 2 {
		l := snapLabel{s.syms.str(p[i]), s.syms.str(p[i+1])}
		if !placed && l.name > name.name {
			dst, placed = append(dst, name), true
		}
		dst = append(dst, l)
	}
	if !placed {
		dst = append(dst, name)
	}
	return dst, true
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadSnapshot is ReadSnapshotAt for a stream: it reads r whole into
// memory first (at most 16 GiB).
func (s *Store) ReadSnapshot(r io.Reader) (restored int, newest int64, err error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSnapshotSize+1))
	if err != nil {
		return 0, 0, fmt.Errorf("read snapshot: %w", err)
	}
	if len(data) > maxSnapshotSize {
		return 0, 0, fmt.Errorf("%w: larger than %d bytes", ErrBadSnapshot, int64(maxSnapshotSize))
	}
	return s.ReadSnapshotAt(bytes.NewReader(data), int64(len(data)))
}

// ReadSnapshotAt restores the series of a snapshot of size bytes written
// by WriteSnapshot through the normal Create and Append paths: samples
// older than the retention are dropped (a series left without any is
// skipped), the series limits apply (a refused series counts as a
// rejection and the rest still load), and a series whose hash already
// exists receives the samples it does not have yet. It returns the number
// of series that received samples and the newest sample time restored (0
// if none).
//
// Aliases (AddAlias) are registered again, within the table's bounds.
//
// Any input that is not a complete, intact snapshot is rejected with an
// error wrapping ErrBadSnapshot (and ErrSnapshotTruncated or
// ErrSnapshotVersion where they apply) before the store is touched. It
// reads r twice, streaming (see the format), and holds a window of at
// most snapWindow bytes (or one label, if longer) at a time.
func (s *Store) ReadSnapshotAt(r io.ReaderAt, size int64) (restored int, newest int64, err error) {
	return s.readSnapshotAt(r, size, snapWindow)
}

func (s *Store) readSnapshotAt(r io.ReaderAt, size int64, window int) (restored int, newest int64, err error) {
	payloadLen, version, err := checkSnapshot(r, size)
	if err != nil {
		return 0, 0, err
	}
	// Pass 1: the checksum and the structure, nothing applied.
	crc := crc32.New(castagnoli)
	d := newSnapDecoder(io.TeeReader(io.NewSectionReader(r, snapHeaderLen, payloadLen), crc), payloadLen, window)
	if err := decodeSnapshot(d, version, nil, nil); err != nil {
		return 0, 0, err
	}
	var tr [snapTrailerLen]byte
	if _, err := r.ReadAt(tr[:], snapHeaderLen+payloadLen); err != nil {
		return 0, 0, fmt.Errorf("read snapshot trailer: %w", err)
	}
	if want, got := binary.LittleEndian.Uint32(tr[8:]), crc.Sum32(); want != got {
		return 0, 0, fmt.Errorf("%w: checksum mismatch (%08x, want %08x)", ErrBadSnapshot, got, want)
	}
	// Pass 2: apply.
	minT := s.nowMs() - s.retentionMs
	d = newSnapDecoder(io.NewSectionReader(r, snapHeaderLen, payloadLen), payloadLen, window)
	err = decodeSnapshot(d, version, func(hash uint64, lset labels.Labels, start int64, hist bool, samples []Sample, hists []*histogram.FloatHistogram) {
		i, _ := slices.BinarySearchFunc(samples, minT, func(x Sample, t int64) int {
			switch {
			case x.T < t:
				return -1
			case x.T > t:
				return 1
			}
			return 0
		})
		for _, smp := range samples[:i] {
			if isMark(math.Float64bits(smp.V)) {
				hists = hists[1:]
			}
		}
		samples = samples[i:]
		if len(samples) == 0 {
			return
		}
		create := s.Create
		if hist {
			create = s.CreateHistogram
		}
		ref, cerr := create(hash, lset)
		if cerr != nil {
			s.logger.Debug("Snapshot series refused", "err", cerr)
			return
		}
		before, had := s.LastSampleTime(ref)
		if ms := s.get(ref); ms != nil && !had {
			ms.presize(len(samples), samples[0].T, &s.rl)
		}
		for _, smp := range samples {
			// Rejections are counted by Append and AppendHistogram.
			if b := math.Float64bits(smp.V); isMark(b) {
				fh := hists[0]
				hists = hists[1:]
				switch markHint(b) {
				case histogram.GaugeType, histogram.CounterReset:
					fh.CounterResetHint = markHint(b)
				default:
					fh.CounterResetHint = histogram.UnknownCounterReset
				}
				_ = s.AppendHistogram(ref, smp.T, fh)
				continue
			}
			_ = s.Append(ref, smp.T, smp.V)
		}
		if start > 0 {
			// A live start time (the series was pushed since) wins.
			s.starts.slot(ref).CompareAndSwap(0, start)
		}
		// Counts only series that gained samples: duplicates of samples a
		// series already has are dropped silently by Append.
		if after, ok := s.LastSampleTime(ref); ok && (!had || after > before) {
			restored++
			newest = max(newest, after)
		}
	}, func(alias, name string) { s.AddAlias(alias, name) })
	return restored, newest, err
}

// checkSnapshot verifies the header and that the trailer's payload length
// matches the size, and returns the payload length and the format
// version. The checksum is verified while the payload is read.
func checkSnapshot(r io.ReaderAt, size int64) (int64, uint32, error) {
	if size < snapHeaderLen+snapTrailerLen {
		return 0, 0, fmt.Errorf("%w: %w (%d bytes)", ErrBadSnapshot, ErrSnapshotTruncated, size)
	}
	var hdr [snapHeaderLen]byte
	if _, err := r.ReadAt(hdr[:], 0); err != nil {
		return 0, 0, fmt.Errorf("read snapshot header: %w", err)
	}
	if [8]byte(hdr[:8]) != snapshotMagic {
		return 0, 0, fmt.Errorf("%w: not a keda-otel-scaler store snapshot (bad magic)", ErrBadSnapshot)
	}
	v := binary.LittleEndian.Uint32(hdr[8:])
	if v < 1 || v > snapshotVersion {
		return 0, 0, fmt.Errorf("%w: %w %d (this build reads 1 to %d)", ErrBadSnapshot, ErrSnapshotVersion, v, snapshotVersion)
	}
	var tr [snapTrailerLen]byte
	if _, err := r.ReadAt(tr[:], size-snapTrailerLen); err != nil {
		return 0, 0, fmt.Errorf("read snapshot trailer: %w", err)
	}
	payloadLen := size - snapHeaderLen - snapTrailerLen
	if n := binary.LittleEndian.Uint64(tr[:]); n != uint64(payloadLen) {
		return 0, 0, fmt.Errorf("%w: %w or padded (payload %d bytes, trailer says %d)", ErrBadSnapshot, ErrSnapshotTruncated, payloadLen, n)
	}
	return payloadLen, v, nil
}

// decodeSnapshot walks the payload. With apply nil it only validates and
// allocates nothing per series; otherwise it calls apply per series (the
// labels and samples are only valid during the call).
func decodeSnapshot(d *snapDecoder, version uint32, apply func(hash uint64, lset labels.Labels, start int64, hist bool, samples []Sample, hists []*histogram.FloatHistogram), applyAlias func(alias, name string)) error {
	var (
		b       labels.ScratchBuilder
		samples []Sample
		hists   []*histogram.FloatHistogram
		pool    []*histogram.FloatHistogram // hists' histograms, reused per series
		prev    []byte
	)
	for n := 0; ; n++ {
		nl := d.uvarint()
		if d.err != nil {
			return d.fail(n)
		}
		if nl == 0 {
			break
		}
		hash := d.u64()
		if nl > uint64(d.remaining()) { // each label takes at least 2 bytes
			return fmt.Errorf("%w: series %d: %d labels exceed the input", ErrBadSnapshot, n, nl)
		}
		b.Reset()
		hasName := false
		for i := uint64(0); i < nl && d.err == nil; i++ {
			name := d.bytes()
			if d.err != nil {
				break
			}
			if i > 0 && string(name) <= string(prev) {
				return fmt.Errorf("%w: series %d: label names not strictly ascending", ErrBadSnapshot, n)
			}
			prev = append(prev[:0], name...) // the window moves on the next read
			val := d.bytes()
			if d.err != nil {
				break
			}
			if string(prev) == model.MetricNameLabel {
				hasName = len(val) > 0
			}
			if apply != nil {
				b.Add(string(prev), string(val))
			}
		}
		var start, kind uint64
		if version >= 2 {
			start = d.uvarint()
		}
		if version >= 3 {
			kind = d.uvarint()
		}
		ns := d.uvarint()
		if d.err != nil {
			return d.fail(n)
		}
		if start > math.MaxInt64 {
			return fmt.Errorf("%w: series %d: start time %d out of range", ErrBadSnapshot, n, start)
		}
		if kind > 1 {
			return fmt.Errorf("%w: series %d: unknown kind %d", ErrBadSnapshot, n, kind)
		}
		if !hasName {
			return fmt.Errorf("%w: series %d has no metric name", ErrBadSnapshot, n)
		}
		if ns > uint64(d.remaining())/9 { // each sample takes at least 9 bytes
			return fmt.Errorf("%w: series %d: %d samples exceed the input", ErrBadSnapshot, n, ns)
		}
		samples, hists = samples[:0], hists[:0]
		var t int64
		for i := uint64(0); i < ns; i++ {
			delta := d.varint()
			bits := d.u64()
			if d.err != nil {
				return d.fail(n)
			}
			nt := t + delta
			if i > 0 && (delta <= 0 || nt < t) {
				return fmt.Errorf("%w: series %d: sample times not strictly increasing", ErrBadSnapshot, n)
			}
			t = nt
			if version >= 3 && isMark(bits) {
				if kind != 1 {
					return fmt.Errorf("%w: series %d: a histogram sample in a float series", ErrBadSnapshot, n)
				}
				if len(hists) == len(pool) {
					pool = append(pool, &histogram.FloatHistogram{})
				}
				fh := pool[len(hists)]
				if err := d.histogram(fh); err != nil {
					return fmt.Errorf("%w: series %d: %w", ErrBadSnapshot, n, err)
				}
				if apply != nil { // validation decodes every one into pool[0]
					hists = append(hists, fh)
				}
			} else if isMark(bits) {
				bits = math.Float64bits(math.NaN()) // a version 2 float that looks like a marker
			}
			if apply != nil {
				samples = append(samples, Sample{T: t, V: math.Float64frombits(bits)})
			}
		}
		if apply != nil {
			apply(hash, b.Labels(), int64(start), kind == 1, samples, hists)
		}
	}
	if version >= 2 {
		if err := d.aliases(applyAlias); err != nil {
			return err
		}
	}
	if d.remaining() != 0 {
		return fmt.Errorf("%w: %d bytes after the end marker", ErrBadSnapshot, d.remaining())
	}
	return nil
}

// appendAliases appends the alias section: every (alias, stored name)
// pair of the alias table.
func (s *Store) appendAliases(buf []byte) []byte {
	type pair struct{ alias, name string }
	var pairs []pair
	s.aliases.m.Range(func(k, v any) bool {
		for _, n := range v.([]string) {
			pairs = append(pairs, pair{k.(string), n})
		}
		return true
	})
	buf = binary.AppendUvarint(buf, uint64(len(pairs)))
	for _, p := range pairs {
		buf = binary.AppendUvarint(buf, uint64(len(p.alias)))
		buf = append(buf, p.alias...)
		buf = binary.AppendUvarint(buf, uint64(len(p.name)))
		buf = append(buf, p.name...)
	}
	return buf
}

// aliases walks the alias section, calling apply (if not nil) per pair.
func (d *snapDecoder) aliases(apply func(alias, name string)) error {
	n := d.uvarint()
	if d.err == nil && n > uint64(d.remaining())/4 { // each pair takes at least 4 bytes
		return fmt.Errorf("%w: %d aliases exceed the input", ErrBadSnapshot, n)
	}
	var alias []byte
	for i := uint64(0); i < n && d.err == nil; i++ {
		alias = append(alias[:0], d.bytes()...) // the window moves on the next read
		name := d.bytes()
		if d.err != nil {
			break
		}
		if len(alias) == 0 || len(name) == 0 {
			return fmt.Errorf("%w: alias %d has an empty name", ErrBadSnapshot, i)
		}
		if apply != nil {
			apply(string(alias), string(name))
		}
	}
	if d.err != nil {
		return fmt.Errorf("%w: aliases: %w", ErrBadSnapshot, d.err)
	}
	return nil
}

// snapDecoder reads a payload of known length from r through a window;
// the first failure sticks in err. A slice bytes returns is valid until
// the next read.
type snapDecoder struct {
	r        io.Reader
	buf      []byte
	off, end int   // buf[off:end] is read from r and not yet consumed
	left     int64 // payload bytes not yet read from r
	err      error
}

var errSnapShort = errors.New("unexpected end of payload")

func newSnapDecoder(r io.Reader, size int64, window int) *snapDecoder {
	return &snapDecoder{r: r, buf: make([]byte, min(int64(window), max(size, 1))), left: size}
}

// remaining returns the payload bytes not yet consumed.
func (d *snapDecoder) remaining() int64 { return int64(d.end-d.off) + d.left }

// need makes the next n bytes (n <= remaining) contiguous in the window.
func (d *snapDecoder) need(n int) bool {
	if d.end-d.off >= n {
		return true
	}
	if d.err != nil {
		return false
	}
	if int64(n) > d.remaining() {
		d.err = errSnapShort
		return false
	}
	d.end = copy(d.buf, d.buf[d.off:d.end])
	d.off = 0
	if n > len(d.buf) {
		d.buf = append(d.buf[:d.end], make([]byte, n-d.end)...)
		d.buf = d.buf[:cap(d.buf)]
	}
	for d.end < n {
		k := int(min(int64(len(d.buf)-d.end), d.left))
		if _, err := io.ReadFull(d.r, d.buf[d.end:d.end+k]); err != nil {
			// The input shrank under us, or the reader failed.
			d.err = fmt.Errorf("read payload: %w", err)
			return false
		}
		d.end += k
		d.left -= int64(k)
	}
	return true
}

func (d *snapDecoder) fail(series int) error {
	return fmt.Errorf("%w: series %d: %w", ErrBadSnapshot, series, d.err)
}

func (d *snapDecoder) uvarint() uint64 {
	if !d.need(int(min(int64(binary.MaxVarintLen64), max(d.remaining(), 1)))) {
		return 0
	}
	v, n := binary.Uvarint(d.buf[d.off:d.end])
	if n <= 0 {
		d.err = errSnapShort
		if n < 0 {
			d.err = errors.New("varint overflows 64 bits")
		}
		return 0
	}
	d.off += n
	return v
}

// varint is uvarint with zig-zag decoding, as binary.Varint does.
func (d *snapDecoder) varint() int64 {
	ux := d.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

func (d *snapDecoder) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	v := binary.LittleEndian.Uint64(d.buf[d.off:])
	d.off += 8
	return v
}

func (d *snapDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(d.remaining()) {
		d.err = fmt.Errorf("string of %d bytes exceeds the input", n)
		return nil
	}
	if n > maxSnapString {
		d.err = fmt.Errorf("string of %d bytes exceeds %d", n, maxSnapString)
		return nil
	}
	if !d.need(int(n)) {
		return nil
	}
	b := d.buf[d.off : d.off+int(n)]
	d.off += int(n)
	return b
}

// appendSnapHistogram appends fh in the snapshot's histogram encoding.
func appendSnapHistogram(buf []byte, fh *histogram.FloatHistogram) []byte {
	buf = binary.AppendVarint(buf, int64(fh.Schema))
	for _, f := range [...]float64{fh.ZeroThreshold, fh.ZeroCount, fh.Count, fh.Sum} {
		buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(f))
	}
	for _, spans := range [...][]histogram.Span{fh.PositiveSpans, fh.NegativeSpans} {
		buf = binary.AppendUvarint(buf, uint64(len(spans)))
		for _, sp := range spans {
			buf = binary.AppendVarint(buf, int64(sp.Offset))
			buf = binary.AppendUvarint(buf, uint64(sp.Length))
		}
	}
	for _, fs := range [...][]float64{fh.PositiveBuckets, fh.NegativeBuckets, fh.CustomValues} {
		buf = binary.AppendUvarint(buf, uint64(len(fs)))
		for _, f := range fs {
			buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(f))
		}
	}
	return buf
}

// histogram decodes a histogram of appendSnapHistogram's encoding into fh
// (its slices reused) and checks it as AppendHistogram would.
func (d *snapDecoder) histogram(fh *histogram.FloatHistogram) error {
	schema := d.varint()
	if d.err == nil && (schema < math.MinInt32 || schema > math.MaxInt32) {
		return fmt.Errorf("histogram schema %d out of range", schema)
	}
	fh.Schema = int32(schema)
	fh.ZeroThreshold = math.Float64frombits(d.u64())
	fh.ZeroCount = math.Float64frombits(d.u64())
	fh.Count = math.Float64frombits(d.u64())
	fh.Sum = math.Float64frombits(d.u64())
	spans := func(s []histogram.Span) []histogram.Span {
		k := d.uvarint()
		if d.err != nil || k > maxHistSpans || k > uint64(d.remaining())/2 {
			if d.err == nil {
				d.err = fmt.Errorf("%d histogram spans", k)
			}
			return s[:0]
		}
		s = resizeSpans(s, int(k))
		for i := range s {
			off, ln := d.varint(), d.uvarint()
			if off < math.MinInt32 || off > math.MaxInt32 || ln > math.MaxUint32 {
				d.err = errors.New("histogram span out of range")
			}
			s[i] = histogram.Span{Offset: int32(off), Length: uint32(ln)}
		}
		return s
	}
	floats := func(s []float64) []float64 {
		k := d.uvarint()
		if d.err != nil || k > MaxHistogramBuckets || k > uint64(d.remaining())/8 {
			if d.err == nil {
				d.err = fmt.Errorf("%d histogram buckets", k)
			}
			return s[:0]
		}
		s = resizeFloats(s, int(k))
		for i := range s {
			s[i] = math.Float64frombits(d.u64())
		}
		return s
	}
	fh.PositiveSpans = spans(fh.PositiveSpans)
	fh.NegativeSpans = spans(fh.NegativeSpans)
	fh.PositiveBuckets = floats(fh.PositiveBuckets)
	fh.NegativeBuckets = floats(fh.NegativeBuckets)
	cv := floats(nil)
	fh.CustomValues = nil
	if len(cv) > 0 {
		fh.CustomValues = cv
	}
	if d.err != nil {
		return d.err
	}
	return checkHistogram(fh)
}
