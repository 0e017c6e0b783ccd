package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// Snapshot format, version 2 (all integers little-endian):
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
// records have no such field and are still read); uvarint sample count; per sample a varint time delta from the previous
// sample (the first from 0), strictly increasing, and the value's IEEE 754
// bits as uint64, so NaN payloads (StaleNaN) survive bit for bit.
//
// The checksum sits in a trailer so the writer streams; the reader must
// therefore read the whole file before it trusts any of it. It checks the
// whole payload's structure before touching the store, so a rejected
// snapshot leaves the store unchanged.
const (
	snapshotVersion = 2
	snapHeaderLen   = 12
	snapTrailerLen  = 12
	// maxSnapshotSize bounds what ReadSnapshot reads into memory. The
	// defaults (1M series × 1024 samples × 9 B) stay well below it.
	maxSnapshotSize = 16 << 30
)

var snapshotMagic = [8]byte{'K', 'O', 'S', 'S', 'N', 'A', 'P', '\n'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadSnapshot is wrapped by every ReadSnapshot error about the input
// itself (as opposed to an I/O error of the reader).
var ErrBadSnapshot = errors.New("bad store snapshot")

// each calls fn for every live entry of the index: the identity hash as
// stored (hash 0 is reported as keyZero and a hash with a zero low half
// with its lowest bit set; fixKey maps both to the same
// slot, so Create and Lookup treat both alike) and its ref. The caller
// holds Store.mu so no rebuild or purge runs meanwhile.
func (x *hashIndex) each(fn func(hash uint64, ref SeriesRef)) {
	for i := range x.shards {
		t := x.shards[i].tab.Load()
		if t == nil {
			continue
		}
		for j := range uint64(t.size()) {
			if k, r := t.key(j), t.ref(j); k != 0 && r != 0 {
				fn(k, SeriesRef(r))
			}
		}
	}
}

// WriteSnapshot writes every live series with samples in the retention
// window (identity hash, labels, samples with stale markers) to w in the
// format above. Appends may continue meanwhile; the snapshot then holds
// each series as it was when it was read. The server calls it after the
// listeners have stopped.
func (s *Store) WriteSnapshot(w io.Writer) error {
	type entry struct {
		hash uint64
		ref  SeriesRef
	}
	var entries []entry
	s.mu.Lock()
	s.index.each(func(h uint64, ref SeriesRef) { entries = append(entries, entry{h, ref}) })
	s.mu.Unlock()

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
	)
	for _, e := range entries {
		lset := s.Labels(e.ref)
		samples = s.Range(samples[:0], e.ref, math.MinInt64, math.MaxInt64)
		if lset.IsEmpty() || len(samples) == 0 {
			continue // deleted meanwhile, or nothing left to restore
		}
		buf = binary.AppendUvarint(buf[:0], uint64(lset.Len()))
		buf = binary.LittleEndian.AppendUint64(buf, e.hash)
		lset.Range(func(l labels.Label) {
			buf = binary.AppendUvarint(buf, uint64(len(l.Name)))
			buf = append(buf, l.Name...)
			buf = binary.AppendUvarint(buf, uint64(len(l.Value)))
			buf = append(buf, l.Value...)
		})
		var start uint64
		if st, ok := s.StartTime(e.ref); ok && st > 0 {
			start = uint64(st)
		}
		buf = binary.AppendUvarint(buf, start)
		buf = binary.AppendUvarint(buf, uint64(len(samples)))
		var prev int64
		for _, smp := range samples {
			buf = binary.AppendVarint(buf, smp.T-prev)
			buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(smp.V))
			prev = smp.T
		}
		if _, err := bw.Write(buf); err != nil {
			return fmt.Errorf("write snapshot: %w", err)
		}
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

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadSnapshot restores the series of a snapshot written by WriteSnapshot
// through the normal Create and Append paths: samples older than the
// retention are dropped (a series left without any is skipped), the
// series limits apply (a refused series counts as a rejection and the
// rest still load), and a series whose hash already exists receives the
// samples it does not have yet. It returns the number of series that
// received samples and the newest sample time restored (0 if none).
//
// Aliases (AddAlias) are registered again, within the table's bounds.
//
// Any input that is not a complete, intact snapshot is rejected
// with an error wrapping ErrBadSnapshot before the store is touched.
func (s *Store) ReadSnapshot(r io.Reader) (restored int, newest int64, err error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSnapshotSize+1))
	if err != nil {
		return 0, 0, fmt.Errorf("read snapshot: %w", err)
	}
	payload, version, err := checkSnapshot(data)
	if err != nil {
		return 0, 0, err
	}
	if err := decodeSnapshot(payload, version, nil, nil); err != nil {
		return 0, 0, err
	}
	minT := s.nowMs() - s.retentionMs
	err = decodeSnapshot(payload, version, func(hash uint64, lset labels.Labels, start int64, samples []Sample) {
		i, _ := slices.BinarySearchFunc(samples, minT, func(x Sample, t int64) int {
			switch {
			case x.T < t:
				return -1
			case x.T > t:
				return 1
			}
			return 0
		})
		samples = samples[i:]
		if len(samples) == 0 {
			return
		}
		ref, cerr := s.Create(hash, lset)
		if cerr != nil {
			s.logger.Debug("Snapshot series refused", "err", cerr)
			return
		}
		before, had := s.LastSampleTime(ref)
		for _, smp := range samples {
			_ = s.Append(ref, smp.T, smp.V) // rejections are counted by Append
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

// checkSnapshot verifies header, trailer and checksum and returns the
// payload and the format version.
func checkSnapshot(data []byte) ([]byte, uint32, error) {
	if len(data) > maxSnapshotSize {
		return nil, 0, fmt.Errorf("%w: larger than %d bytes", ErrBadSnapshot, int64(maxSnapshotSize))
	}
	if len(data) < snapHeaderLen+snapTrailerLen {
		return nil, 0, fmt.Errorf("%w: truncated (%d bytes)", ErrBadSnapshot, len(data))
	}
	if [8]byte(data[:8]) != snapshotMagic {
		return nil, 0, fmt.Errorf("%w: not a keda-otel-scaler store snapshot (bad magic)", ErrBadSnapshot)
	}
	v := binary.LittleEndian.Uint32(data[8:])
	if v < 1 || v > snapshotVersion {
		return nil, 0, fmt.Errorf("%w: unsupported version %d (this build reads 1 to %d)", ErrBadSnapshot, v, snapshotVersion)
	}
	payload := data[snapHeaderLen : len(data)-snapTrailerLen]
	tr := data[len(data)-snapTrailerLen:]
	if n := binary.LittleEndian.Uint64(tr); n != uint64(len(payload)) {
		return nil, 0, fmt.Errorf("%w: truncated or padded (payload %d bytes, trailer says %d)", ErrBadSnapshot, len(payload), n)
	}
	if want, got := binary.LittleEndian.Uint32(tr[8:]), crc32.Checksum(payload, castagnoli); want != got {
		return nil, 0, fmt.Errorf("%w: checksum mismatch (%08x, want %08x)", ErrBadSnapshot, got, want)
	}
	return payload, v, nil
}

// decodeSnapshot walks the payload. With apply nil it only validates and
// allocates nothing per series; otherwise it calls apply per series (the
// labels and samples are only valid during the call).
func decodeSnapshot(p []byte, version uint32, apply func(hash uint64, lset labels.Labels, start int64, samples []Sample), applyAlias func(alias, name string)) error {
	d := snapDecoder{p: p}
	var (
		b       labels.ScratchBuilder
		samples []Sample
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
		if nl > uint64(len(d.p)) { // each label takes at least 2 bytes
			return fmt.Errorf("%w: series %d: %d labels exceed the input", ErrBadSnapshot, n, nl)
		}
		b.Reset()
		var prev []byte
		hasName := false
		for i := uint64(0); i < nl && d.err == nil; i++ {
			name, val := d.bytes(), d.bytes()
			if d.err != nil {
				break
			}
			if i > 0 && string(name) <= string(prev) {
				return fmt.Errorf("%w: series %d: label names not strictly ascending", ErrBadSnapshot, n)
			}
			if string(name) == model.MetricNameLabel {
				hasName = len(val) > 0
			}
			prev = name
			if apply != nil {
				b.Add(string(name), string(val))
			}
		}
		var start uint64
		if version >= 2 {
			start = d.uvarint()
		}
		ns := d.uvarint()
		if d.err != nil {
			return d.fail(n)
		}
		if start > math.MaxInt64 {
			return fmt.Errorf("%w: series %d: start time %d out of range", ErrBadSnapshot, n, start)
		}
		if !hasName {
			return fmt.Errorf("%w: series %d has no metric name", ErrBadSnapshot, n)
		}
		if ns > uint64(len(d.p))/9 { // each sample takes at least 9 bytes
			return fmt.Errorf("%w: series %d: %d samples exceed the input", ErrBadSnapshot, n, ns)
		}
		samples = samples[:0]
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
			if apply != nil {
				samples = append(samples, Sample{T: t, V: math.Float64frombits(bits)})
			}
		}
		if apply != nil {
			apply(hash, b.Labels(), int64(start), samples)
		}
	}
	if version >= 2 {
		if err := d.aliases(applyAlias); err != nil {
			return err
		}
	}
	if len(d.p) != 0 {
		return fmt.Errorf("%w: %d bytes after the end marker", ErrBadSnapshot, len(d.p))
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
	if d.err == nil && n > uint64(len(d.p))/4 { // each pair takes at least 4 bytes
		return fmt.Errorf("%w: %d aliases exceed the input", ErrBadSnapshot, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		alias, name := d.bytes(), d.bytes()
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

// snapDecoder reads from p; the first failure sticks in err.
type snapDecoder struct {
	p   []byte
	err error
}

var errSnapShort = errors.New("unexpected end of payload")

func (d *snapDecoder) fail(series int) error {
	return fmt.Errorf("%w: series %d: %w", ErrBadSnapshot, series, d.err)
}

func (d *snapDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.err = errSnapShort
		if n < 0 {
			d.err = errors.New("varint overflows 64 bits")
		}
		return 0
	}
	d.p = d.p[n:]
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
	if d.err != nil {
		return 0
	}
	if len(d.p) < 8 {
		d.err = errSnapShort
		return 0
	}
	v := binary.LittleEndian.Uint64(d.p)
	d.p = d.p[8:]
	return v
}

func (d *snapDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.p)) {
		d.err = fmt.Errorf("string of %d bytes exceeds the input", n)
		return nil
	}
	b := d.p[:n]
	d.p = d.p[n:]
	return b
}
