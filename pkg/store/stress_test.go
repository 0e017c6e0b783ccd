package store

import (
	"errors"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stressValue encodes the series and the timestamp in the value, so a
// reader can tell a torn or misattributed sample from a real one.
func stressValue(i int, t int64) float64 { return float64(t)*64 + float64(i) }

// TestStress runs writers (two per series, so same-series writers race),
// readers, a creator and a sweeper concurrently for a bounded time, under
// -race in CI. Every sample read must equal one written, per-series order
// must hold, and labels must belong to their ref. goleak (TestMain) checks
// that nothing is left running.
func TestStress(t *testing.T) {
	dur := 1500 * time.Millisecond
	if testing.Short() {
		dur = 300 * time.Millisecond
	}
	const (
		nSeries  = 64
		nWriters = 4
		nReaders = 3
		maxOps   = 5_000_000 // bound by count as well as time
		t0       = int64(1_700_000_000_000)
	)
	s := New(Config{Retention: time.Hour, Freshness: -1, MaxSamplesPerSeries: 48}, Settings{Now: fixedClock(t0)})
	refs := make([]SeriesRef, nSeries)
	next := make([]atomic.Int64, nSeries)
	for i := range refs {
		refs[i] = mustCreate(t, s, uint64(i+1), "__name__", "stress", "i", strconv.Itoa(i))
		// A first sample, or the creator's sweeps would delete the series
		// as empty before a writer reaches it.
		require.NoError(t, s.Append(refs[i], t0, stressValue(i, t0)))
		next[i].Store(t0)
	}
	var (
		stop     atomic.Bool
		ops      atomic.Int64
		written  atomic.Int64
		ooo      atomic.Int64
		reads    atomic.Int64
		failures atomic.Int64
		retries  atomic.Int64 // window reads retried after a concurrent write
		wg       sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
		stop.Store(true)
	}
	deadline := time.Now().Add(dur)
	running := func() bool {
		return !stop.Load() && ops.Add(1) < maxOps && time.Now().Before(deadline)
	}
	for w := range nWriters {
		wg.Go(func() {
			for k := 0; running(); k++ {
				i := (k + w*nSeries/2) % nSeries // writers w and w+2 share series
				ts := next[i].Add(1)
				err := s.Append(refs[i], ts, stressValue(i, ts))
				switch {
				case err == nil:
					written.Add(1)
				case errors.Is(err, ErrOutOfOrder):
					ooo.Add(1) // the other writer of this series stored a later ts first
				default:
					fail("append: %v", err)
				}
			}
		})
	}
	for r := range nReaders {
		wg.Go(func() {
			var (
				buf, wbuf []Sample
				win       Window
				sc        Scan // reused: ScanRange guesses from the last range
			)
			for k := 0; running(); k++ {
				i := (k*7 + r) % nSeries
				buf = s.Range(buf[:0], refs[i], 0, math.MaxInt64)
				for j, smp := range buf {
					if smp.V != stressValue(i, smp.T) {
						fail("series %d: sample %v is not one written", i, smp)
					}
					if j > 0 && smp.T <= buf[j-1].T {
						fail("series %d: order broken at %d: %v after %v", i, j, smp, buf[j-1])
					}
				}
				if smp, ok := s.Latest(refs[i], math.MaxInt64); ok && smp.V != stressValue(i, smp.T) {
					fail("series %d: latest %v is not one written", i, smp)
				}
				// The zero-copy path: a window over the newest samples,
				// read in place with the retry protocol, and Reader.Latest.
				rd, h := s.Reader(), s.Handle(refs[i])
				mint := int64(math.MinInt64 / 2)
				if len(buf) > 0 {
					mint = buf[len(buf)-1].T - int64(k%8)
				}
				for {
					rd.Window(&win, h, mint, math.MaxInt64)
					wbuf = win.AppendTo(wbuf[:0])
					if win.Valid() {
						break
					}
					retries.Add(1)
				}
				for j, smp := range wbuf {
					if smp.V != stressValue(i, smp.T) || smp.T <= mint {
						fail("series %d: window sample %v is not one written after %d", i, smp, mint)
					}
					if j > 0 && smp.T <= wbuf[j-1].T {
						fail("series %d: window order broken at %d: %v after %v", i, j, smp, wbuf[j-1])
					}
				}
				if rd.ScanRange(&sc, h, mint, math.MaxInt64) > 0 && sc.N > 0 &&
					(sc.FirstV != stressValue(i, sc.FirstT) || sc.LastV != stressValue(i, sc.LastT) || sc.FirstT <= mint || sc.LastT < sc.FirstT || sc.Drops != 0) {
					fail("series %d: scan %+v is not of samples written after %d", i, sc, mint)
				}
				if smp, ok := rd.Latest(h, math.MaxInt64); ok && smp.V != stressValue(i, smp.T) {
					fail("series %d: reader latest %v is not one written", i, smp)
				}
				if got := s.Labels(refs[i]).Get("i"); got != strconv.Itoa(i) {
					fail("series %d: labels of %s", i, got)
				}
				reads.Add(1)
			}
		})
	}
	// A creator grows the index and postings while readers look up and
	// select; a sweeper with a TTL nobody reaches walks every series.
	var created atomic.Int64
	wg.Go(func() {
		for h := uint64(1000); running(); h++ {
			lset := labels.FromStrings("__name__", "churn", "h", strconv.FormatUint(h, 10))
			ref, err := s.Create(h, lset)
			if err != nil {
				fail("create: %v", err)
				return
			}
			if err := s.Append(ref, t0, 1); err != nil { // an empty series would be swept
				fail("append churn: %v", err)
			}
			if got, ok := s.Lookup(h); !ok || got != ref {
				fail("lookup %d: %d, %v; want %d", h, got, ok, ref)
			}
			created.Add(1)
			if h%64 == 0 {
				sel := s.Select(nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "churn"))
				if int64(len(sel)) < created.Load() {
					fail("select saw %d of %d series", len(sel), created.Load())
				}
				s.Sweep()
			}
		}
	})
	wg.Wait()
	require.Zero(t, failures.Load())
	t.Logf("written=%d out_of_order=%d reads=%d created=%d window_retries=%d", written.Load(), ooo.Load(), reads.Load(), created.Load(), retries.Load())
	assert.Positive(t, written.Load())
	assert.Positive(t, reads.Load())
	assert.Equal(t, uint64(written.Load()+created.Load()+nSeries), s.m.samples.load(), "every accepted append counted")
	for i, ref := range refs {
		got := s.Range(nil, ref, 0, math.MaxInt64)
		require.NotEmpty(t, got)
		assert.InDelta(t, stressValue(i, got[len(got)-1].T), got[len(got)-1].V, 0)
	}
}
