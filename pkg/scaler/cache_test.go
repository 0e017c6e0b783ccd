package scaler

import (
	"context"
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// memEnv is a scaler over a fresh store whose symbol count is observable,
// on a clock the test moves.
type memEnv struct {
	st  *store.Store
	s   *Scaler
	reg *prometheus.Registry
	now time.Time
}

func newMemEnv(t *testing.T, cfg Config) *memEnv {
	t.Helper()
	e := &memEnv{reg: prometheus.NewRegistry(), now: time.Unix(1_000_000, 0)}
	clock := func() time.Time { return e.now }
	e.st = store.New(store.Config{Retention: 10 * time.Minute}, store.Settings{Registerer: e.reg, Now: clock})
	e.s = New(query.NewEngine(e.st), e.st, cfg, Settings{Now: clock})
	t.Cleanup(e.s.Drain)
	return e
}

// symbols is the store's interned-symbol count.
func (e *memEnv) symbols(t *testing.T) int {
	t.Helper()
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "keda_otel_scaler_store_symbols" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	t.Fatal("no symbol gauge")
	return 0
}

func (e *memEnv) spec(t *testing.T, ns, name string, md map[string]string) {
	t.Helper()
	_, err := e.s.GetMetricSpec(context.Background(), &externalscaler.ScaledObjectRef{Namespace: ns, Name: name, ScalerMetadata: md})
	require.NoError(t, err)
}

// heapSlack absorbs the runtime's own heap noise in the memory checks
// (GC metadata, pools); it is small against the bounds they check.
const heapSlack = 512 << 10

// TestTriggerKeyIgnoresUnknownKeys: the cache key is the values of the
// keys the scaler reads; KEDA's own keys and unknown keys neither split
// nor are kept in an entry.
func TestTriggerKeyIgnoresUnknownKeys(t *testing.T) {
	e := newMemEnv(t, Config{})
	base := map[string]string{"metricQuery": "sum(x)", "targetValue": "4"}
	for i, extra := range []map[string]string{
		nil,
		{"scalerAddress": "keda-otel-scaler.keda.svc:4318"},
		{"scalerAddress": "other:4318", "caCert": "-----BEGIN CERTIFICATE-----", "unsafeSsl": "true"},
		{"unknown": strings.Repeat("u", 1<<20)},
		{"targetValueFromEnv": ""}, // empty counts as absent
	} {
		md := map[string]string{}
		for k, v := range base {
			md[k] = v
		}
		for k, v := range extra {
			md[k] = v
		}
		e.spec(t, "ns", "so", md)
		assert.Equal(t, 1, e.s.cache.len(), "case %d shares the entry", i)
	}
	for _, known := range []map[string]string{
		{"metricQuery": "sum(x)", "targetValue": "5"},
		{"metricQuery": "sum(x)", "targetValue": "4", "window": "1m"},
		{"metricQuery": "sum(x)", "targetValue": "4", "targetValueFromEnv": "4"},
		{"query": "sum(x)", "targetValue": "4"},
	} {
		e.spec(t, "ns", "so", known)
	}
	assert.Equal(t, 5, e.s.cache.len(), "every known key's value splits")
	e.spec(t, "ns2", "so", base)
	e.spec(t, "ns", "so2", base)
	assert.Equal(t, 7, e.s.cache.len(), "so does the ScaledObject")
}

// TestUnusedMetadataIsNotKept is issue #12 class 5's first case: many
// triggers carrying a large unused key. Each trigger keeps only what it
// reads, so the live heap grows by at most the cache's accounted bytes,
// which stay under --trigger-cache-bytes, and by less than one unused
// value. Before, every entry kept its whole metadata map (64 × 1 MiB here).
func TestUnusedMetadataIsNotKept(t *testing.T) {
	const pad = 1 << 20
	n := 64
	if raceEnabled {
		n = 8 // the heap checks below are skipped; the bound is still checked
	}
	cfg := Config{TriggerCacheBytes: 4 << 20}
	e := newMemEnv(t, cfg)
	e.spec(t, "ns", "warm", map[string]string{"metricQuery": "sum(warm)", "targetValue": "1"})
	h0 := heapLive()
	for i := range n {
		e.spec(t, "ns", "so", map[string]string{
			"metricQuery":   fmt.Sprintf("sum(x%d)", i),
			"targetValue":   "1",
			"scalerAddress": "keda-otel-scaler.keda.svc:4318",
			"unused":        strconv.Itoa(i) + strings.Repeat("u", pad),
		})
	}
	grown := heapLive() - h0
	kept, _ := e.s.cache.stats()
	t.Logf("%d triggers with a %d B unused key: heap +%d B, cache accounts %d B", n, pad, grown, kept)
	require.Equal(t, n+1, e.s.cache.len(), "every trigger stays cached")
	assert.LessOrEqual(t, kept, cfg.TriggerCacheBytes)
	if raceEnabled {
		return
	}
	assert.Less(t, grown, kept+heapSlack, "the heap holds no more than the cache accounts for")
	assert.Less(t, grown, int64(pad), "no unused value is kept")
}

// TestTriggerCacheBytesBound: triggers far larger than typical (1,000
// distinct metric names each) fill the cache past --trigger-cache-bytes;
// the least recently used are evicted to stay under it, their names are
// freed from the store, and the live heap grows by at most the bound.
func TestTriggerCacheBytesBound(t *testing.T) {
	n := 24
	if raceEnabled {
		n = 8
	}
	cfg := Config{TriggerCacheBytes: 6 << 20}
	e := newMemEnv(t, cfg)
	syms0 := e.symbols(t)
	e.spec(t, "ns", "warm", map[string]string{"metricQuery": "sum(warm)", "targetValue": "1"})
	h0 := heapLive()
	for i := range n {
		q := joinN(1000, "+", func(j int) string { return fmt.Sprintf("t%d_m%d", i, j) })
		e.spec(t, "ns", "so", map[string]string{"metricQuery": q, "targetValue": "1"})
		kept, _ := e.s.cache.stats()
		require.LessOrEqual(t, kept, cfg.TriggerCacheBytes, "after trigger %d", i)
	}
	grown := heapLive() - h0
	kept, _ := e.s.cache.stats()
	cached := 0
	for _, q := range cachedQueries(e.s) {
		if q != "sum(warm)" {
			cached++
		}
	}
	t.Logf("%d triggers of 1,000 names: %d cached, cache accounts %d B, heap +%d B", n, cached, kept, grown)
	assert.Less(t, cached, n, "the byte bound evicted")
	assert.Equal(t, syms0+1000*cached+e.s.cache.len()-cached, e.symbols(t), "evicted triggers' names are freed")
	if !raceEnabled {
		assert.Less(t, grown, cfg.TriggerCacheBytes+heapSlack, "the heap is bounded by --trigger-cache-bytes")
		assert.Less(t, grown, kept+heapSlack, "and by what the cache accounts for")
	}
}

// TestTriggerOnlyMetricNamesFreed is issue #12 class 5's second case:
// metric names that only trigger queries mention (here 16,000-byte ones,
// one per trigger) are freed from the store's symbols when their trigger
// is evicted or expires, so the heap is bounded by --trigger-cache-bytes
// instead of growing with every name a client ever sent. A name that a
// series uses stays, with its ID.
func TestTriggerOnlyMetricNamesFreed(t *testing.T) {
	n := 1000
	if raceEnabled {
		n = 40
	}
	cfg := Config{MaxTriggerBytes: 256 << 10, TriggerCacheBytes: 1 << 20, TriggerTTL: time.Minute}
	e := newMemEnv(t, cfg)
	lset := map[string]string{"metricQuery": "sum(stored)", "targetValue": "1"}
	e.spec(t, "ns", "stored", lset)
	storedID := e.st.MetricID("stored") // as the receiver pins it for a series
	syms0 := e.symbols(t)
	h0 := heapLive()
	for i := range n {
		name := fmt.Sprintf("n%06d_", i) + strings.Repeat("x", 16_000)
		e.spec(t, "ns", "so", map[string]string{"metricQuery": "sum(" + name + ")", "targetValue": "1"})
	}
	grown := heapLive() - h0
	cached := 0
	for _, q := range cachedQueries(e.s) {
		if q != "sum(stored)" {
			cached++
		}
	}
	t.Logf("%d triggers with a unique 16 KB name: %d cached, heap +%d B", n, cached, grown)
	assert.Less(t, cached, 20, "the byte bound evicted")
	assert.Equal(t, syms0+cached, e.symbols(t), "only cached triggers' names are interned")
	if !raceEnabled {
		assert.Less(t, grown, cfg.TriggerCacheBytes+heapSlack, "the heap is bounded by --trigger-cache-bytes")
	}

	// After the TTL, the next lookup expires one trigger and the next
	// insert the rest; every trigger-only name goes with them.
	e.now = e.now.Add(2 * time.Minute)
	e.spec(t, "ns", "fresh", map[string]string{"metricQuery": "sum(fresh)", "targetValue": "1"})
	assert.Equal(t, 1, e.s.cache.len())
	assert.Equal(t, syms0+1, e.symbols(t), "the expired triggers' names are freed; fresh is interned")
	assert.Equal(t, storedID, e.st.MetricID("stored"), "a name that a series uses keeps its ID")
}

// TestStreamHoldsTrigger: a StreamIsActive stream holds its trigger, so
// cache churn and sweeps neither evict it nor free its names, and data for
// its name (first stored after the churn) still reaches the stream. Once
// the stream ends, the trigger is evictable again and its trigger-only
// name is freed. While streams hold everything the cache may keep, a new
// trigger gets ResourceExhausted instead of growing the cache.
func TestStreamHoldsTrigger(t *testing.T) {
	e := newEnv(t, Config{MaxTriggers: 2})
	held := map[string]string{"metricQuery": "sum(pushed) or sum(never_pushed)", "targetValue": "1"}
	fs, cancel := e.open(t, held)
	require.Eventually(t, func() bool {
		e.s.cache.mu.Lock()
		defer e.s.cache.mu.Unlock()
		return e.s.cache.heldN == 1
	}, 5*time.Second, time.Millisecond)
	heldTrigger := func() *trigger {
		var k triggerKey
		h, ok := k.fill(e.s.cache.seed, "ns", "so", held)
		require.True(t, ok)
		e.s.cache.mu.Lock()
		defer e.s.cache.mu.Unlock()
		return e.s.cache.findLocked(&k, h)
	}
	ids := heldTrigger().metricIDs
	require.Len(t, ids, 2)
	for i := range 20 {
		_, err := e.s.GetMetricSpec(context.Background(), ref(map[string]string{"metricQuery": fmt.Sprintf("sum(churn%d)", i), "targetValue": "1"}))
		require.NoError(t, err)
		if i%5 == 0 {
			e.st.Sweep() // rotates freed symbol IDs into reuse
		}
	}
	require.NotNil(t, heldTrigger(), "a held trigger is never evicted")
	e.push(t, "pushed", 5) // creates the series: its name gets the ID the trigger holds
	require.Equal(t, ids[0], e.st.MetricID("pushed"))
	require.Eventually(t, func() bool { return len(fs.got()) == 1 }, 5*time.Second, time.Millisecond, "the subscription still matches")

	// One held trigger and MaxTriggers 2: one more fits, a second does
	// not while the first stream stays open.
	_, err := e.s.GetMetricSpec(context.Background(), ref(map[string]string{"metricQuery": "sum(a)", "targetValue": "1"}))
	require.NoError(t, err)
	fs2, cancel2 := e.open(t, map[string]string{"metricQuery": "sum(a)", "targetValue": "1"})
	require.Eventually(t, func() bool {
		e.s.cache.mu.Lock()
		defer e.s.cache.mu.Unlock()
		return e.s.cache.heldN == 2
	}, 5*time.Second, time.Millisecond)
	_, err = e.s.GetMetricSpec(context.Background(), ref(map[string]string{"metricQuery": "sum(b)", "targetValue": "1"}))
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "StreamIsActive")
	_, err = e.s.GetMetricSpec(context.Background(), ref(held))
	require.NoError(t, err, "held triggers still answer")
	require.NoError(t, cancel2())
	_ = fs2

	require.NoError(t, cancel())
	for i := range 2 {
		_, err := e.s.GetMetricSpec(context.Background(), ref(map[string]string{"metricQuery": fmt.Sprintf("sum(after%d)", i), "targetValue": "1"}))
		require.NoError(t, err)
	}
	assert.Nil(t, heldTrigger(), "released, the trigger is evicted like any other")
	assert.Equal(t, ids[0], e.st.MetricID("pushed"), "a stored series keeps its name")
	id := e.st.AcquireMetricID("never_pushed")
	defer e.st.ReleaseMetricIDs([]uint32{id})
	// The freed ID is quarantined until the next sweep: a new intern gets
	// a fresh ID, so the trigger's hold is gone.
	assert.NotEqual(t, ids[1], id, "the trigger-only name was freed")
}

// TestMetadataLimits: names and values over their limits, and queries
// whose compiled form is over --max-trigger-bytes, are refused with
// InvalidArgument and a short message, and leave nothing behind.
func TestMetadataLimits(t *testing.T) {
	long := func(n int) string { return strings.Repeat("q", n) }
	// Four of the largest regular expressions the engine accepts
	// (query.MaxQueryRegexSize) compile to about 4,000 instructions, an
	// estimated 256 KiB: over a 128 KiB --max-trigger-bytes.
	bomb := joinN(4, "+", func(int) string { return `sum(x{a=~"[a-z]{1000}"})` })
	for _, tc := range []struct {
		name     string
		ns, so   string
		md       map[string]string
		wantText string
	}{
		{"long name", "ns", long(maxRefNameLength + 1), map[string]string{"metricQuery": "sum(x)", "targetValue": "1"}, "ScaledObject name"},
		{"long namespace", long(maxRefNameLength + 1), "so", map[string]string{"metricQuery": "sum(x)", "targetValue": "1"}, "ScaledObject namespace"},
		{"long query", "ns", "so", map[string]string{"metricQuery": "sum(" + long(query.MaxQueryLength) + ")", "targetValue": "1"}, "metricQuery"},
		{"long alias", "ns", "so", map[string]string{"metricQuery": "sum(x)", "query": long(query.MaxQueryLength + 1), "targetValue": "1"}, "query"},
		{"long target", "ns", "so", map[string]string{"metricQuery": "sum(x)", "targetValue": "1" + strings.Repeat("0", maxValueLength)}, "targetValue"},
		{"long FromEnv", "ns", "so", map[string]string{"metricQuery": "sum(x)", "targetValue": "1", "windowFromEnv": long(maxValueLength + 1)}, "windowFromEnv"},
		{"compiled too large", "ns", "so", map[string]string{"metricQuery": bomb, "targetValue": "1"}, "--max-trigger-bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newMemEnv(t, Config{MaxTriggerBytes: 128 << 10})
			syms0 := e.symbols(t)
			_, err := e.s.GetMetricSpec(context.Background(), &externalscaler.ScaledObjectRef{Namespace: tc.ns, Name: tc.so, ScalerMetadata: tc.md})
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			msg := status.Convert(err).Message()
			assert.Contains(t, msg, tc.wantText)
			if tc.name != "compiled too large" {
				assert.Less(t, len(msg), 1024, "the value is clipped in the message")
			}
			assert.Zero(t, e.s.cache.len())
			assert.Equal(t, syms0, e.symbols(t), "nothing interned")
		})
	}
	// Exactly at the limits is accepted.
	e := newMemEnv(t, Config{})
	e.spec(t, long(maxRefNameLength), long(maxRefNameLength), map[string]string{"metricQuery": "sum(x)", "targetValue": "1", "window": "1m" + strings.Repeat(" ", maxValueLength-2)})
}

// TestTriggerCacheInsertConstantWork is issue #12 class 5's third case:
// inserting into the cache touches a constant number of entries, whether
// it holds 100 or 10,000, counted by the cache's work counter (entries
// visited beyond the one looked up). Before, every insert scanned every
// entry for expiry and again for the least recently used one.
func TestTriggerCacheInsertConstantWork(t *testing.T) {
	mk := func(i int) *trigger {
		return &trigger{key: triggerKey{ns: "ns", name: strconv.Itoa(i)}, cost: 100}
	}
	perInsert := map[int]float64{}
	for _, size := range []int{100, 10_000} {
		c := newTriggerCache(time.Hour.Nanoseconds(), size, 1<<40, newMetrics(nil))
		now := int64(0)
		for i := range size {
			now++
			_, inserted, _, err := c.add(mk(i), now, false)
			require.True(t, inserted)
			require.NoError(t, err)
		}
		_, w0 := c.stats()
		const inserts = 1000
		for i := range inserts {
			now++
			_, inserted, evicted, err := c.add(mk(size+i), now, false)
			require.NoError(t, err)
			require.True(t, inserted)
			require.Len(t, evicted, 1)
			require.Equal(t, strconv.Itoa(i), evicted[0].key.name, "the least recently used one")
		}
		_, w1 := c.stats()
		perInsert[size] = float64(w1-w0) / inserts
		// Hits touch nothing else either.
		for i := range inserts {
			now++
			k := mk(size + inserts - 1 - i%min(size, inserts)).key // one of the cached
			got, expired := c.get(&k, k.hash(c.seed), now, false)
			require.NotNil(t, got)
			require.Nil(t, expired)
		}
		_, w2 := c.stats()
		assert.Equal(t, w1, w2, "size %d: hits visit no other entry", size)
		require.Equal(t, size, c.len())
	}
	t.Logf("entries visited per insert into a full cache: %v", perInsert)
	assert.LessOrEqual(t, perInsert[100], 1.0)
	assert.LessOrEqual(t, perInsert[10_000], perInsert[100], "insert cost does not grow with the cache")

	// Expiry is amortised: each trigger is popped once, by the lookup or
	// insert that finds it expired.
	c := newTriggerCache(1_000_000, 10_000, 1<<40, newMetrics(nil))
	for i := range 10_000 {
		_, _, _, err := c.add(mk(i), int64(i), false)
		require.NoError(t, err)
	}
	_, w0 := c.stats()
	_, _, evicted, err := c.add(mk(-1), 10_000_000, false)
	require.NoError(t, err)
	assert.Len(t, evicted, 10_000)
	_, w1 := c.stats()
	assert.Equal(t, uint64(10_000), w1-w0, "one visit per expired trigger")
	assert.Equal(t, 1, c.len())
}

// TestSlotOf: the switch in slotOf matches metaKeys, and the hash fill
// computes is the key's hash.
func TestSlotOf(t *testing.T) {
	for i, k := range metaKeys {
		assert.Equal(t, 2*i, slotOf(k), k)
		assert.Equal(t, 2*i+1, slotOf(k+"FromEnv"), k)
	}
	assert.Equal(t, -1, slotOf("scalerAddress"))
	assert.Less(t, slotOf("query"), 4, "the query slots come first")
	seed := maphash.MakeSeed()
	var k triggerKey
	h, ok := k.fill(seed, "ns", "so", map[string]string{"metricQuery": "sum(x)", "targetValue": "4", "windowFromEnv": "1m", "unknown": "u", "threshold": ""})
	require.True(t, ok)
	assert.Equal(t, k.hash(seed), h)
	c := k.clone()
	assert.Equal(t, h, c.hash(seed))
	assert.True(t, c.equal(&k))
	assert.Equal(t, map[string]string{"metricQuery": "sum(x)", "targetValue": "4", "windowFromEnv": "1m"}, c.metadata())
}

// TestTriggerCacheConcurrent races lookups, inserts, evictions and
// StreamIsActive holds over a small cache whose triggers share a metric
// name: every cached trigger's names stay interned under the IDs it holds,
// and once every trigger expired the store holds none of their names (no
// hold leaked, none released twice).
func TestTriggerCacheConcurrent(t *testing.T) {
	e := newMemEnv(t, Config{MaxTriggers: 8, TriggerTTL: time.Minute})
	syms0 := e.symbols(t)
	md := func(i int) map[string]string {
		return map[string]string{"metricQuery": fmt.Sprintf("sum(m%d) or sum(shared)", i%20), "targetValue": "1"}
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 300 {
				r := &externalscaler.ScaledObjectRef{Namespace: "ns", Name: "so", ScalerMetadata: md(w*7 + i)}
				if _, err := e.s.GetMetricSpec(context.Background(), r); err != nil {
					t.Error(err)
					return
				}
				_, _ = e.s.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: r})
			}
		})
	}
	for w := range 2 {
		wg.Go(func() {
			for i := range 40 {
				ctx, cancel := context.WithCancel(context.Background())
				fs := &fakeStream{ctx: ctx}
				done := make(chan error, 1)
				r := &externalscaler.ScaledObjectRef{Namespace: "ns", Name: "so", ScalerMetadata: md(w*3 + i)}
				go func() { done <- e.s.StreamIsActive(r, fs) }()
				time.Sleep(time.Millisecond)
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	e.s.cache.mu.Lock()
	var cached []*trigger
	for _, tr := range e.s.cache.byHash {
		for ; tr != nil; tr = tr.hnext {
			cached = append(cached, tr)
		}
	}
	require.Zero(t, e.s.cache.heldN, "every stream released its trigger")
	e.s.cache.mu.Unlock()
	require.NotEmpty(t, cached)
	for _, tr := range cached {
		names, _ := tr.plan.MetricNames()
		for j, n := range names {
			id := e.st.AcquireMetricID(n)
			assert.Equal(t, tr.metricIDs[j], id, "%s keeps its ID while its trigger is cached", n)
			e.st.ReleaseMetricIDs([]uint32{id})
		}
	}
	e.now = e.now.Add(2 * time.Minute)
	e.spec(t, "ns", "fresh", map[string]string{"metricQuery": "sum(fresh)", "targetValue": "1"})
	assert.Equal(t, 1, e.s.cache.len())
	assert.Equal(t, syms0+1, e.symbols(t), "only fresh's name is left")
}
