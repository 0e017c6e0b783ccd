package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type snapSeries struct {
	hash    uint64
	lset    labels.Labels
	samples []Sample
}

func TestSnapshotRoundTrip(t *testing.T) {
	var clk movingClock
	clk.ms.Store(1_000_000)
	src := New(Config{}, Settings{Now: clk.now})
	oddNaN := math.Float64frombits(0x7ff8_0000_0000_0123)
	series := []snapSeries{
		{1, labels.FromStrings("__name__", "vllm:num_requests_running", "pod", "a", "namespace", "ml"), []Sample{
			{450_000, 1.5}, {520_000, 2}, {530_000, staleNaN}, {540_000, oddNaN}, {550_000, math.Inf(-1)}, {990_000, 7},
		}},
		{0, labels.FromStrings("__name__", "hash_zero"), []Sample{{999_000, 3}}},
		{77, labels.FromStrings("__name__", "old_only", "x", "y"), []Sample{{410_000, 9}, {420_000, 10}}},
	}
	for _, ser := range series {
		ref, err := src.Create(ser.hash, ser.lset)
		require.NoError(t, err)
		for _, smp := range ser.samples {
			require.NoError(t, src.Append(ref, smp.T, smp.V))
		}
	}
	mustCreate(t, src, 99, "__name__", "no_samples") // nothing to restore

	var buf bytes.Buffer
	require.NoError(t, src.WriteSnapshot(&buf))

	// 100 s later the window starts at 500,000: the first sample of series
	// 1 and all of series 77 are too old.
	clk.ms.Store(1_100_000)
	dst := New(Config{}, Settings{Now: clk.now})
	restored, newest, err := dst.ReadSnapshot(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	assert.Equal(t, 2, restored)
	assert.Equal(t, int64(999_000), newest)
	assert.Equal(t, 2, dst.NumSeries())
	_, ok := dst.Lookup(77)
	assert.False(t, ok, "a series with only expired samples is not restored")
	_, ok = dst.Lookup(99)
	assert.False(t, ok, "a series without samples is not restored")

	for _, ser := range series[:2] {
		ref, ok := dst.Lookup(ser.hash)
		require.True(t, ok, "hash %d", ser.hash)
		assert.Equal(t, ser.lset, dst.Labels(ref))
		got := dst.Range(nil, ref, math.MinInt64, math.MaxInt64)
		want := ser.samples
		if ser.hash == 1 {
			want = want[1:]
		}
		require.Len(t, got, len(want))
		for i := range want {
			assert.Equal(t, want[i].T, got[i].T)
			assert.Equal(t, math.Float64bits(want[i].V), math.Float64bits(got[i].V), "sample %d bits", i)
		}
		// The receiver's next push of the same series lands on it.
		again, err := dst.Create(ser.hash, ser.lset)
		require.NoError(t, err)
		assert.Equal(t, ref, again)
	}
	assert.Equal(t, 2, dst.NumSeries())
	assert.True(t, value.IsStaleNaN(dst.Range(nil, mustLookup(t, dst, 1), 529_999, 530_000)[0].V))

	// Restoring again over existing series adds nothing and duplicates nothing.
	restored, _, err = dst.ReadSnapshot(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	assert.Equal(t, 0, restored)
	assert.Equal(t, 2, dst.NumSeries())
}

func mustLookup(t *testing.T, s *Store, h uint64) SeriesRef {
	t.Helper()
	ref, ok := s.Lookup(h)
	require.True(t, ok)
	return ref
}

func TestReadSnapshotLimits(t *testing.T) {
	src := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	for h := uint64(1); h <= 3; h++ {
		ref := mustCreate(t, src, h, "__name__", "m", "i", string(rune('a'+h)))
		require.NoError(t, src.Append(ref, 999_000, float64(h)))
	}
	var buf bytes.Buffer
	require.NoError(t, src.WriteSnapshot(&buf))

	dst := New(Config{MaxSeries: 2}, Settings{Now: fixedClock(1_000_000)})
	restored, _, err := dst.ReadSnapshot(&buf)
	require.NoError(t, err, "a series over the limit is refused, not the snapshot")
	assert.Equal(t, 2, restored)
	assert.Equal(t, 2, dst.NumSeries())
}

// sealSnapshot wraps payload in a header and a valid trailer.
func sealSnapshot(version uint32, payload []byte) []byte {
	out := append([]byte{}, snapshotMagic[:]...)
	out = binary.LittleEndian.AppendUint32(out, version)
	out = append(out, payload...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(payload)))
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(payload, castagnoli))
}

// rawSeries encodes one series record without any validation.
func rawSeries(hash uint64, kv []string, ts []int64) []byte {
	b := binary.LittleEndian.AppendUint64(binary.AppendUvarint(nil, uint64(len(kv)/2)), hash)
	for _, s := range kv {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(ts)))
	var prev int64
	for _, t := range ts {
		b = binary.AppendVarint(b, t-prev)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(1))
		prev = t
	}
	return b
}

func TestReadSnapshotRejectsBadInput(t *testing.T) {
	src := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	ref := mustCreate(t, src, 5, "__name__", "m")
	require.NoError(t, src.Append(ref, 999_000, 1))
	var buf bytes.Buffer
	require.NoError(t, src.WriteSnapshot(&buf))
	good := buf.Bytes()

	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	end := []byte{0}
	for _, tc := range []struct {
		name, want string
		in         []byte
	}{
		{"empty", "truncated", nil},
		{"header only", "truncated", good[:snapHeaderLen]},
		{"cut in the payload", "truncated or padded", good[:len(good)-snapTrailerLen-3]},
		{"cut in the trailer", "truncated or padded", good[:len(good)-1]},
		{"padded", "truncated or padded", append(bytes.Clone(good), 0)},
		{"bad magic", "bad magic", flip(0)},
		{"newer version", "unsupported version 4", sealSnapshot(4, end)},
		{"payload bit flip", "checksum mismatch", flip(snapHeaderLen + 3)},
		{"checksum bit flip", "checksum mismatch", flip(len(good) - 1)},
		{"no end marker", "unexpected end", sealSnapshot(1, rawSeries(1, []string{"__name__", "m"}, []int64{999_000}))},
		{"bytes after the end", "after the end marker", sealSnapshot(1, []byte{0, 0})},
		{"no metric name", "no metric name", sealSnapshot(1, append(rawSeries(1, []string{"a", "b"}, []int64{999_000}), 0))},
		{"unsorted labels", "not strictly ascending", sealSnapshot(1, append(rawSeries(1, []string{"z", "1", "__name__", "m"}, []int64{999_000}), 0))},
		{"duplicate label", "not strictly ascending", sealSnapshot(1, append(rawSeries(1, []string{"__name__", "m", "__name__", "n"}, []int64{999_000}), 0))},
		{"times not increasing", "not strictly increasing", sealSnapshot(1, append(rawSeries(1, []string{"__name__", "m"}, []int64{999_000, 999_000}), 0))},
		{"huge label count", "exceed the input", sealSnapshot(1, append(binary.AppendUvarint(nil, 1<<40), make([]byte, 9)...))},
		{"varint overflow", "overflows", sealSnapshot(1, bytes.Repeat([]byte{0xff}, 11))},
		{"no alias section", "aliases", sealSnapshot(2, end)},
		{"alias cut", "aliases", sealSnapshot(2, []byte{0, 1, 3, 'a', 'b'})},
		{"empty alias", "empty name", sealSnapshot(2, []byte{0, 1, 0, 5, 'a', 'b', 'c', 'd', 'e'})},
		{"huge alias count", "exceed the input", sealSnapshot(2, append([]byte{0}, binary.AppendUvarint(nil, 1<<40)...))},
		{"unknown kind", "unknown kind", sealSnapshot(3, append(rawSeriesV3(1, 2, []string{"__name__", "m"}, 999_000, 1), 0))},
		{"histogram in a float series", "float series", sealSnapshot(3, append(rawSeriesV3(1, 0, []string{"__name__", "m"}, 999_000, math.Float64frombits(makeMark(0, 0, false))), 0))},
		{"histogram cut", "unexpected end", sealSnapshot(3, append(append(rawSeriesV3(1, 1, []string{"__name__", "m"}, 999_000, math.Float64frombits(makeMark(0, 0, false))), 0), 0))},
		{"malformed histogram", "invalid native histogram", sealSnapshot(3, append(append(append(rawSeriesV3(1, 1, []string{"__name__", "m"}, 999_000, math.Float64frombits(makeMark(0, 0, false))),
			badHistBytes()...), 0), 0, 0))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := New(Config{}, Settings{Now: fixedClock(1_000_000)})
			keep := mustCreate(t, dst, 42, "__name__", "kept")
			require.NoError(t, dst.Append(keep, 998_000, 4))
			gen := dst.Generation()

			restored, newest, err := dst.ReadSnapshot(bytes.NewReader(tc.in))
			require.ErrorIs(t, err, ErrBadSnapshot)
			require.ErrorContains(t, err, tc.want)
			assert.Zero(t, restored)
			assert.Zero(t, newest)
			assert.Equal(t, 1, dst.NumSeries(), "store unchanged")
			assert.Equal(t, gen, dst.Generation(), "store unchanged")
			assert.Len(t, dst.Range(nil, keep, 0, math.MaxInt64), 1)
		})
	}
}

// go test -run '^$' -fuzz FuzzReadSnapshot -fuzztime 30s ./pkg/store/
func FuzzReadSnapshot(f *testing.F) {
	src := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	for h := uint64(1); h <= 3; h++ {
		ref, err := src.Create(h, labels.FromStrings("__name__", "m", "i", string(rune('a'+h))))
		require.NoError(f, err)
		require.NoError(f, src.Append(ref, 990_000, float64(h)))
		require.NoError(f, src.Append(ref, 995_000, staleNaN))
	}
	href, err := src.CreateHistogram(9, labels.FromStrings("__name__", "h"))
	require.NoError(f, err)
	require.NoError(f, src.AppendHistogram(href, 990_000, testHist(1)))
	require.NoError(f, src.AppendHistogram(href, 995_000, testHist(2)))
	var buf bytes.Buffer
	require.NoError(f, src.WriteSnapshot(&buf))
	// seal wraps the input in a valid header and trailer, so the fuzzer
	// reaches the payload decoder past the checksum.
	f.Add(buf.Bytes(), false)
	f.Add(buf.Bytes()[snapHeaderLen:buf.Len()-snapTrailerLen], true)
	f.Add([]byte{0, 0}, true)
	f.Add([]byte{0, 1, 1, 'a', 1, 'm'}, true)
	f.Add(append(rawSeries(1, []string{"__name__", "m"}, []int64{999_000, 999_500}), 0, 0), true)
	f.Add([]byte("KOSSNAP\n"), false)
	f.Fuzz(func(t *testing.T, in []byte, seal bool) {
		if seal {
			in = sealSnapshot(snapshotVersion, in)
		}
		dst := New(Config{MaxSeries: 100}, Settings{Now: fixedClock(1_000_000)})
		restored, _, err := dst.ReadSnapshot(bytes.NewReader(in))
		// Through a 5-byte window the decoder reaches the same verdict.
		small := New(Config{MaxSeries: 100}, Settings{Now: fixedClock(1_000_000)})
		n5, _, err5 := small.readSnapshotAt(bytes.NewReader(in), int64(len(in)), 5)
		require.Equal(t, err == nil, err5 == nil, "%v / %v", err, err5)
		require.Equal(t, restored, n5)
		if err != nil {
			require.ErrorIs(t, err, ErrBadSnapshot)
			require.Zero(t, dst.NumSeries(), "a rejected snapshot leaves the store unchanged")
			return
		}
		// A hash repeated in the input lands on one series.
		require.LessOrEqual(t, dst.NumSeries(), restored)
		withSamples := 0
		_ = dst.index.eachEntry(func(_ uint64, ref SeriesRef) error {
			if len(dst.Range(nil, ref, math.MinInt64, math.MaxInt64)) > 0 {
				withSamples++
			}
			return nil
		})
		// Whatever was accepted writes back out and reads in again.
		var out bytes.Buffer
		require.NoError(t, dst.WriteSnapshot(&out))
		again := New(Config{MaxSeries: 100}, Settings{Now: fixedClock(1_000_000)})
		n, _, err := again.ReadSnapshot(&out)
		require.NoError(t, err)
		require.Equal(t, withSamples, n)
	})
}

// TestWriteSnapshotWhileAppending: a snapshot taken while appends and
// creates continue (run under -race) is intact and restores every series
// that existed before it began.
func TestWriteSnapshotWhileAppending(t *testing.T) {
	var clk movingClock
	clk.ms.Store(1_000_000)
	s := New(Config{}, Settings{Now: clk.now})
	const before = 200
	for i := range before {
		ref, err := s.Create(uint64(i+1), labels.FromStrings("__name__", "m", "i", strconv.Itoa(i)))
		require.NoError(t, err)
		require.NoError(t, s.Append(ref, 900_000, 1))
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			h := uint64(i%before + 1)
			ref, _ := s.Lookup(h)
			_ = s.Append(ref, 900_001+int64(i), float64(i))
			if i < 1000 {
				nref, err := s.Create(uint64(before+1+i), labels.FromStrings("__name__", "n", "i", strconv.Itoa(i)))
				if err == nil {
					_ = s.Append(nref, 950_000, 2)
				}
			}
		}
	})
	var bufs [5]bytes.Buffer
	for i := range bufs {
		require.NoError(t, s.WriteSnapshot(&bufs[i]))
	}
	close(stop)
	wg.Wait()
	for i := range bufs {
		dst := New(Config{}, Settings{Now: clk.now})
		n, _, err := dst.ReadSnapshot(&bufs[i])
		require.NoError(t, err)
		require.GreaterOrEqual(t, n, before)
		for h := uint64(1); h <= before; h++ {
			_, ok := dst.Lookup(h)
			require.True(t, ok, "snapshot %d lost series %d", i, h)
		}
	}
}

// go test -run '^$' -bench 'Snapshot' -benchtime 200ms -count 1 ./pkg/store/
func BenchmarkSnapshot(b *testing.B) {
	for _, n := range []int{10_000} {
		s, _, _ := appendFixture(b, n)
		var buf bytes.Buffer
		require.NoError(b, s.WriteSnapshot(&buf))
		b.Run(fmt.Sprintf("op=write/series=%s", seriesName(n)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var out bytes.Buffer
				out.Grow(buf.Len())
				if err := s.WriteSnapshot(&out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(buf.Len())/float64(n), "bytes/series")
		})
		b.Run(fmt.Sprintf("op=read/series=%s", seriesName(n)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				dst := New(Config{Retention: 5 * time.Minute, Freshness: -1, MaxSeries: n, MaxSeriesPerMetric: n}, Settings{Now: fixedClock(benchT0)})
				if got, _, err := dst.ReadSnapshot(bytes.NewReader(buf.Bytes())); err != nil || got != n {
					b.Fatalf("restored %d of %d: %v", got, n, err)
				}
			}
		})
	}
}

// TestSnapshotKeepsAliases: legacy aliases survive a restart, so triggers
// written with an alias answer before the next Export of their metric.
func TestSnapshotKeepsAliases(t *testing.T) {
	src := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	ref := mustCreate(t, src, 1, "__name__", "app_frontend_requests_total", "pod", "a")
	require.NoError(t, src.Append(ref, 999_000, 3))
	_, ok := src.AddAlias("app_frontend_requests", "app_frontend_requests_total")
	require.True(t, ok)
	_, ok = src.AddAlias("app_frontend_requests", "app_frontend_requests_ratio_total")
	require.True(t, ok)
	var buf bytes.Buffer
	require.NoError(t, src.WriteSnapshot(&buf))

	dst := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	restored, _, err := dst.ReadSnapshot(&buf)
	require.NoError(t, err)
	require.Equal(t, 1, restored)
	alias := labels.MustNewMatcher(labels.MatchEqual, "__name__", "app_frontend_requests")
	got := dst.Select(nil, alias)
	require.Len(t, got, 1)
	assert.Equal(t, "app_frontend_requests_total", dst.Labels(got[0]).Get("__name__"))
	v, ok := dst.aliases.m.Load("app_frontend_requests")
	require.True(t, ok)
	assert.ElementsMatch(t, []string{"app_frontend_requests_total", "app_frontend_requests_ratio_total"}, v.([]string))
}

// TestReadSnapshotAtStreams restores through windows of a few bytes, so
// every varint, value and label crosses a window boundary somewhere, and
// from a file, as the server does; the result equals the in-memory read.
func TestReadSnapshotAtStreams(t *testing.T) {
	src := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	for i := range 50 {
		ref, err := src.Create(uint64(i+1), labels.FromStrings("__name__", "m", "Zone", "z"+strconv.Itoa(i), "pod", strings.Repeat("p", i*7)))
		require.NoError(t, err)
		for k := range int64(i % 7) {
			require.NoError(t, src.Append(ref, 900_000+k*1000, float64(i)+float64(k)/3))
		}
	}
	_, ok := src.AddAlias("m_alias", "m")
	require.True(t, ok)
	var buf bytes.Buffer
	require.NoError(t, src.WriteSnapshot(&buf))
	path := filepath.Join(t.TempDir(), "snap")
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))

	read := func(window int) *Store {
		f, err := os.Open(path)
		require.NoError(t, err)
		defer func() { _ = f.Close() }()
		dst := New(Config{}, Settings{Now: fixedClock(1_000_000)})
		n, newest, err := dst.readSnapshotAt(f, int64(buf.Len()), window)
		require.NoError(t, err, "window %d", window)
		assert.Equal(t, 42, n) // series with 1 to 6 samples
		assert.Equal(t, int64(905_000), newest)
		return dst
	}
	want := read(1 << 20)
	for _, window := range []int{1, 3, 16, 100} {
		got := read(window)
		require.Equal(t, want.NumSeries(), got.NumSeries())
		for h := uint64(1); h <= 50; h++ {
			wr, wok := want.Lookup(h)
			gr, gok := got.Lookup(h)
			require.Equal(t, wok, gok)
			if wok {
				assert.Equal(t, want.Labels(wr), got.Labels(gr))
				assert.Equal(t, want.Range(nil, wr, 0, math.MaxInt64), got.Range(nil, gr, 0, math.MaxInt64))
			}
		}
		_, ok := got.aliases.m.Load("m_alias")
		assert.True(t, ok, "aliases restored through window %d", window)
	}
}

// TestSnapshotErrorKinds: truncated inputs and future versions are told
// apart from other damage.
func TestSnapshotErrorKinds(t *testing.T) {
	src := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	ref := mustCreate(t, src, 5, "__name__", "m")
	require.NoError(t, src.Append(ref, 999_000, 1))
	var buf bytes.Buffer
	require.NoError(t, src.WriteSnapshot(&buf))
	good := buf.Bytes()
	future := bytes.Clone(good)
	binary.LittleEndian.PutUint32(future[8:], snapshotVersion+1)
	flipped := bytes.Clone(good)
	flipped[snapHeaderLen+2] ^= 1
	for _, tc := range []struct {
		name           string
		in             []byte
		trunc, version bool
	}{
		{"empty", nil, true, false},
		{"cut", good[:len(good)/2], true, false},
		{"future version", future, false, true},
		{"bit flip", flipped, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := New(Config{}, Settings{Now: fixedClock(1_000_000)})
			_, _, err := dst.ReadSnapshotAt(bytes.NewReader(tc.in), int64(len(tc.in)))
			require.ErrorIs(t, err, ErrBadSnapshot)
			assert.Equal(t, tc.trunc, errors.Is(err, ErrSnapshotTruncated), "%v", err)
			assert.Equal(t, tc.version, errors.Is(err, ErrSnapshotVersion), "%v", err)
		})
	}
}

// TestWriteSnapshotLeavesLabelsUncached: a checkpoint must not build and
// keep every series' labels (Labels caches them for queries): periodic
// checkpoints of 1M series would add their labels to the heap for good.
// Labels that sort before __name__ keep their place.
func TestWriteSnapshotLeavesLabelsUncached(t *testing.T) {
	src := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	lset := labels.FromStrings("__name__", "m", "Abc", "1", "_x", "2", "zz", "3")
	ref, err := src.Create(5, lset)
	require.NoError(t, err)
	require.NoError(t, src.Append(ref, 999_000, 1))
	var buf bytes.Buffer
	require.NoError(t, src.WriteSnapshot(&buf))
	assert.Nil(t, src.get(ref).lcache.Load(), "labels not cached by the snapshot")

	dst := New(Config{}, Settings{Now: fixedClock(1_000_000)})
	n, _, err := dst.ReadSnapshot(&buf)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	assert.Equal(t, lset, dst.Labels(mustLookup(t, dst, 5)))
}

// TestRestorePresizesRings: a restore gives each new series a ring for its
// samples at once, counted against MaxSampleMemory like growth; with the
// budget spent, rings grow (and thin) as usual instead.
func TestRestorePresizesRings(t *testing.T) {
	src := New(Config{Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	for h := uint64(1); h <= 20; h++ {
		ref := mustCreate(t, src, h, "__name__", "m", "i", strconv.Itoa(int(h)))
		for k := range int64(41) {
			require.NoError(t, src.Append(ref, 400_000+k*15_000, float64(k)))
		}
	}
	var buf bytes.Buffer
	require.NoError(t, src.WriteSnapshot(&buf))

	dst := New(Config{Freshness: -1}, Settings{Now: fixedClock(1_000_000)})
	n, _, err := dst.ReadSnapshot(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	require.Equal(t, 20, n)
	assert.Equal(t, 42, dst.ringCap(mustLookup(t, dst, 7)), "one ring of 41 samples' size class")
	assert.Equal(t, 20*ringBytes(42), dst.rl.used.Load(), "only the presized rings are counted")

	const budget = 2000 // room for a few rings of 41
	small := New(Config{Freshness: -1, MaxSampleMemory: budget}, Settings{Now: fixedClock(1_000_000)})
	n, _, err = small.ReadSnapshot(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	require.Equal(t, 20, n)
	assert.LessOrEqual(t, small.rl.used.Load(), int64(budget+20*48))
	thinnedRings := 0
	for h := uint64(1); h <= 20; h++ {
		ref := mustLookup(t, small, h)
		got := small.Range(nil, ref, 0, math.MaxInt64)
		require.NotEmpty(t, got)
		if small.ringCap(ref) == 2 {
			// A first ring the spent budget keeps from growing holds the
			// last two samples (README: Resource bounds).
			assert.Equal(t, []Sample{{985_000, 39}, {1_000_000, 40}}, got)
			continue
		}
		thinnedRings++
		assert.Equal(t, int64(400_000), got[0].T, "thinned, not truncated: the oldest sample stays")
	}
	assert.Positive(t, thinnedRings)
	assert.Positive(t, small.m.thinnedMem.load())
}

// rawSeriesV3 encodes a version 3 record of one sample, kind and value as
// given, without validation.
func rawSeriesV3(hash, kind uint64, kv []string, t int64, v float64) []byte {
	b := binary.LittleEndian.AppendUint64(binary.AppendUvarint(nil, uint64(len(kv)/2)), hash)
	for _, s := range kv {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, 0) // start time
	b = binary.AppendUvarint(b, kind)
	b = binary.AppendUvarint(b, 1)
	b = binary.AppendVarint(b, t)
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}

// badHistBytes is a histogram whose spans want more buckets than it has.
func badHistBytes() []byte {
	fh := testHist(1)
	fh.PositiveBuckets = fh.PositiveBuckets[:1]
	return appendSnapHistogram(nil, fh)
}
