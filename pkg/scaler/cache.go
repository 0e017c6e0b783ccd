package scaler

import (
	"errors"
	"hash/maphash"
	"math/bits"
	"strings"
	"sync"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/interest"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
)

// trigger is the compiled form of one trigger's metadata.
//
// Fields above the cache links are immutable after newTrigger and need no
// lock.
type trigger struct {
	namespace, name string
	key             triggerKey // the cache key: cloned values of the keys the scaler reads
	hash            uint64     // key's hash under the cache's seed
	metricName      string
	spec
	rewritten string // the evaluated query when lowering changed it
	metricIDs []uint32
	anyMetric bool
	// cost is the compiled trigger's estimated bytes (triggerCost),
	// fixed; the cache's byte bound counts cost plus retained.
	cost int64
	// interest holds the trigger's metric names in the lazy registry
	// (--lazy-ingest; nil when off); lazyReadyAt is when the families it
	// reads have been stored for --warmup (unix ns, lazy.go).
	interest    *interest.Handle
	lazyReadyAt int64

	// stats is what the status endpoint shows (stats.go); set before the
	// trigger is cached.
	stats *triggerStats

	// Cache links, guarded by triggerCache.mu.
	hnext      *trigger // the next trigger with the same hash
	prev, next *trigger // the LRU list of unheld triggers
	holds      int      // open StreamIsActive streams using the trigger
	lastUsed   int64    // unix ns of the last lookup; drives expiry
	// retained is the plan's working set as the cache last counted it
	// (query.Plan.RetainedBytes, set by resize after each evaluation).
	// It is written under both mu and triggerCache.mu, so either lock
	// suffices to read it. cached tells the trigger is in byHash.
	retained int64
	cached   bool

	mu   sync.Mutex // serialises plan evaluation; a plan is single-goroutine
	plan *query.Plan
}

// queryText is the query as evaluated, for error messages.
func (t *trigger) queryText() string {
	if t.rewritten != "" {
		return t.rewritten
	}
	return t.query
}

// metaKeys are the trigger metadata keys the scaler reads (interfaces.md),
// each also read with the FromEnv suffix. They alone decide what a
// trigger computes: KEDA's own keys (scalerAddress, caCert, ...) and unknown
// keys are ignored (keda-contract.md §3), so they are neither compared nor
// kept. Keying on the whole map let one unused 3.5 MB key be held for the
// trigger TTL by every cached trigger that carried it.
var metaKeys = [...]string{
	"metricQuery", "query", "targetValue", "threshold", "activationThreshold", "activationTargetValue",
	"operationOverTime", "window", "lookbackDelta", "clampMin", "clampMax", "ignoreNullValues", "valueIfEmpty",
}

// numSlots is the number of values a key holds: each of metaKeys with and
// without FromEnv.
const numSlots = 2 * len(metaKeys)

// slotOf returns a metadata key's slot in triggerKey.vals, or -1 for a key
// the scaler does not read: metaKeys[i] is slot 2i, its FromEnv form
// 2i+1 (TestSlotOf checks the table). The first four slots are the query.
// A switch, because it runs for every key of every call.
func slotOf(key string) int {
	switch key {
	case "metricQuery":
		return 0
	case "metricQueryFromEnv":
		return 1
	case "query":
		return 2
	case "queryFromEnv":
		return 3
	case "targetValue":
		return 4
	case "targetValueFromEnv":
		return 5
	case "threshold":
		return 6
	case "thresholdFromEnv":
		return 7
	case "activationThreshold":
		return 8
	case "activationThresholdFromEnv":
		return 9
	case "activationTargetValue":
		return 10
	case "activationTargetValueFromEnv":
		return 11
	case "operationOverTime":
		return 12
	case "operationOverTimeFromEnv":
		return 13
	case "window":
		return 14
	case "windowFromEnv":
		return 15
	case "lookbackDelta":
		return 16
	case "lookbackDeltaFromEnv":
		return 17
	case "clampMin":
		return 18
	case "clampMinFromEnv":
		return 19
	case "clampMax":
		return 20
	case "clampMaxFromEnv":
		return 21
	case "ignoreNullValues":
		return 22
	case "ignoreNullValuesFromEnv":
		return 23
	case "valueIfEmpty":
		return 24
	case "valueIfEmptyFromEnv":
		return 25
	}
	return -1
}

// Size limits of what a trigger keeps. Longer values are rejected with
// InvalidArgument (limitErrors) before anything is parsed or kept.
const (
	// maxRefNameLength bounds a ScaledObject's name and namespace.
	// Kubernetes names are at most 253 bytes, but longer ones must still
	// get a shortened metric name (keda-contract.md §4), so the bound is
	// only against waste.
	maxRefNameLength = 1024
	// maxValueLength bounds every non-query value: numbers, durations,
	// booleans and operation names are a few bytes.
	maxValueLength = 256
	// maxQueryValueLength bounds metricQuery and query: the engine parses
	// no longer query.
	maxQueryValueLength = query.MaxQueryLength
)

func slotLimit(slot int) int {
	if slot < 4 {
		return maxQueryValueLength
	}
	return maxValueLength
}

// triggerKey identifies a compiled trigger: the ScaledObject and the
// non-empty values of the keys the scaler reads (an empty value counts as
// absent, keda-contract.md §3).
type triggerKey struct {
	ns, name string
	set      uint32 // bit i: vals[i] is not empty
	vals     [numSlots]string
}

// fill sets k from a ScaledObjectRef and returns its hash under seed,
// without copying or allocating: k refers to the request's strings until
// clone. ok is false when a name or value is over its limit; limitErrors
// then says which. The hash is seeded per cache, so crafted metadata
// cannot force collisions; entries are combined by addition because map
// iteration order is random.
func (k *triggerKey) fill(seed maphash.Seed, ns, name string, md map[string]string) (h uint64, ok bool) {
	if len(ns) > maxRefNameLength || len(name) > maxRefNameLength {
		return 0, false
	}
	k.ns, k.name = ns, name
	h = refHash(seed, ns, name)
	for key, v := range md {
		slot := slotOf(key)
		if slot < 0 || v == "" {
			continue
		}
		if len(v) > slotLimit(slot) {
			return 0, false
		}
		k.vals[slot] = v
		k.set |= 1 << slot
		h += slotHash(seed, slot, v)
	}
	return h, true
}

// hash returns the hash fill returned for k.
func (k *triggerKey) hash(seed maphash.Seed) uint64 {
	h := refHash(seed, k.ns, k.name)
	for m := k.set; m != 0; m &= m - 1 {
		i := bits.TrailingZeros32(m)
		h += slotHash(seed, i, k.vals[i])
	}
	return h
}

func refHash(seed maphash.Seed, ns, name string) uint64 {
	return maphash.String(seed, ns)*0x9E3779B97F4A7C15 ^ maphash.String(seed, name)
}

func slotHash(seed maphash.Seed, slot int, v string) uint64 {
	return (maphash.String(seed, v) ^ uint64(slot+1)*0x9E3779B97F4A7C15) * 0xBF58476D1CE4E5B9
}

// equal reports whether k and o name the same trigger.
func (k *triggerKey) equal(o *triggerKey) bool {
	if k.set != o.set || k.ns != o.ns || k.name != o.name {
		return false
	}
	for m := k.set; m != 0; m &= m - 1 {
		if i := bits.TrailingZeros32(m); k.vals[i] != o.vals[i] {
			return false
		}
	}
	return true
}

// clone returns k with private copies of its strings, so a cached trigger
// holds no part of the request it came from.
func (k *triggerKey) clone() triggerKey {
	c := triggerKey{ns: strings.Clone(k.ns), name: strings.Clone(k.name), set: k.set}
	for i, v := range k.vals {
		c.vals[i] = strings.Clone(v)
	}
	return c
}

// metadata returns the key's values as a metadata map, for parseSpec.
func (k *triggerKey) metadata() map[string]string {
	md := make(map[string]string, bits.OnesCount32(k.set))
	for i, v := range k.vals {
		if v == "" {
			continue
		}
		name := metaKeys[i/2]
		if i%2 == 1 {
			name += "FromEnv"
		}
		md[name] = v
	}
	return md
}

// bytes is the size of the key's strings.
func (k *triggerKey) bytes() int {
	n := len(k.ns) + len(k.name)
	for _, v := range k.vals {
		n += len(v)
	}
	return n
}

// limitErrors reports every name or value of a ScaledObjectRef that is
// over its limit, each matching ErrBadMetadata. The value is clipped in
// the message, with its length (metadataError).
func limitErrors(ns, name string, md map[string]string) error {
	var errs []error
	for _, f := range []struct{ what, v string }{{"namespace", ns}, {"name", name}} {
		if len(f.v) > maxRefNameLength {
			errs = append(errs, &metadataError{
				namespace: clip(ns), name: clip(name), key: "ScaledObject " + f.what, value: f.v,
				problem: "longer than the " + itoa(maxRefNameLength) + " bytes accepted (Kubernetes names have at most 253)",
			})
		}
	}
	for key, v := range md {
		if slot := slotOf(key); slot >= 0 && len(v) > slotLimit(slot) {
			errs = append(errs, &metadataError{
				namespace: clip(ns), name: clip(name), key: key, value: v,
				problem: "longer than the " + itoa(slotLimit(slot)) + " bytes this key may have",
			})
		}
	}
	return errors.Join(errs...)
}

// ErrTriggerCacheFull means a new trigger does not fit in the compiled-
// trigger cache because open StreamIsActive streams hold everything in it;
// mapped to ResourceExhausted.
var ErrTriggerCacheFull = errors.New("compiled-trigger cache is full of triggers held by open StreamIsActive streams")

// triggerCache holds compiled triggers by key, bounded in entries and in
// estimated bytes. Unheld triggers sit in a doubly linked list, most
// recently used first: a hit moves its trigger to the front, eviction
// takes from the back, and expiry pops from the back while the last
// trigger is older than the TTL, so every operation touches a constant
// number of entries (amortised for expiry: each trigger is popped once).
// Triggers held by streams leave the list, so they are neither evicted nor
// expired, but stay in the map and in both bounds; when nothing unheld
// can make room, add fails with ErrTriggerCacheFull. Expiry runs on every
// lookup (one trigger at most) and insert (all expired), so it needs no
// goroutine.
type triggerCache struct {
	ttl        int64 // ns
	maxEntries int
	maxBytes   int64
	m          *metrics

	seed maphash.Seed // of the key hashes; random per cache

	mu         sync.Mutex          // guards everything below and the triggers' cache links
	byHash     map[uint64]*trigger // chained through hnext
	head, tail *trigger            // the LRU list; head is the most recently used
	n          int                 // triggers in byHash
	bytes      int64               // their cost
	heldN      int                 // triggers with holds > 0
	heldBytes  int64               // their cost
	// work counts the list and map entries add, get and unhold visited
	// beyond the one they look up: tests assert it stays constant per
	// operation.
	work uint64
}

func newTriggerCache(ttl int64, maxEntries int, maxBytes int64, m *metrics) *triggerCache {
	return &triggerCache{ttl: ttl, maxEntries: maxEntries, maxBytes: maxBytes, m: m, seed: maphash.MakeSeed(), byHash: map[uint64]*trigger{}}
}

// findLocked returns the trigger with key k and hash h, or nil.
func (c *triggerCache) findLocked(k *triggerKey, h uint64) *trigger {
	for t := c.byHash[h]; t != nil; t = t.hnext {
		if t.key.equal(k) {
			return t
		}
		c.work++ // a collision
	}
	return nil
}

// get returns the cached trigger for k, or nil, and counts a hold on it
// when hold is set. expired is a trigger that get removed because it was
// unused for the TTL; the caller releases it. It does not allocate.
func (c *triggerCache) get(k *triggerKey, h uint64, now int64, hold bool) (t, expired *trigger) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t = c.findLocked(k, h)
	if t != nil {
		c.useLocked(t, now, hold)
	}
	if b := c.tail; b != nil && now-b.lastUsed > c.ttl {
		c.work++
		c.removeLocked(b)
		c.m.evicted[evictExpired].Inc()
		expired = b
	}
	return t, expired
}

// add inserts t unless an equal trigger won a race, and returns the cached
// one; inserted reports whether t itself was added. With hold, the
// returned trigger is held. evicted are the triggers removed to make room
// (or expired); the caller releases them. err is ErrTriggerCacheFull when
// held triggers leave no room for t; t is then not inserted.
func (c *triggerCache) add(t *trigger, now int64, hold bool) (got *trigger, inserted bool, evicted []*trigger, err error) {
	t.hash = t.key.hash(c.seed)
	c.mu.Lock()
	defer c.mu.Unlock()
	if o := c.findLocked(&t.key, t.hash); o != nil {
		c.useLocked(o, now, hold)
		return o, false, nil, nil
	}
	for b := c.tail; b != nil && now-b.lastUsed > c.ttl; b = c.tail {
		c.work++
		c.removeLocked(b)
		c.m.evicted[evictExpired].Inc()
		evicted = append(evicted, b)
	}
	if c.heldN+1 > c.maxEntries || c.heldBytes+t.size() > c.maxBytes {
		return nil, false, evicted, ErrTriggerCacheFull
	}
	for c.n+1 > c.maxEntries || c.bytes+t.size() > c.maxBytes {
		b := c.tail // not nil: the held triggers alone leave room for t
		c.work++
		c.removeLocked(b)
		c.m.evicted[evictLRU].Inc()
		evicted = append(evicted, b)
	}
	t.lastUsed = now
	t.hnext = c.byHash[t.hash]
	c.byHash[t.hash] = t
	t.cached = true
	c.n++
	c.bytes += t.size()
	if hold {
		t.holds = 1
		c.heldN++
		c.heldBytes += t.size()
	} else {
		c.pushFrontLocked(t)
	}
	c.gaugesLocked()
	return t, true, evicted, nil
}

// size is what the cache counts for t: its compiled cost and its plan's
// working set. Guarded by triggerCache.mu once t is cached.
func (t *trigger) size() int64 { return t.cost + t.retained }

// resize records that t's plan now keeps retained bytes between
// evaluations (query.Plan.RetainedBytes; the caller holds t.mu and has
// just evaluated it), and restores the byte bound the way add does: by
// evicting least recently used unheld triggers, which it returns for the
// caller to release. trim asks the caller to drop the plan's working set
// (query.Plan.Trim) and resize again, when nothing else can make room: the
// trigger's cost and working set exceed maxTrigger (--max-trigger-bytes)
// on their own, or once every other unheld trigger is evicted the cache is
// still over its bound (held triggers fill it; each of them trims itself
// at its own next evaluation). Then nothing is changed or evicted. A
// trigger that has left the cache changes nothing: it is dropped when its
// caller is done with it. The common case (the working set did not grow,
// or there is room) is O(1) and does not allocate.
func (c *triggerCache) resize(t *trigger, retained, maxTrigger int64) (evicted []*trigger, trim bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.cached || retained == t.retained {
		return nil, false
	}
	if t.cost+retained > maxTrigger {
		return nil, true
	}
	// The bound counts held triggers' working sets too, so a plan that
	// grew must fit beside them without evicting anything held.
	grow := retained - t.retained
	if grow > 0 && c.heldBytes+grow+c.sizeIfUnheld(t) > c.maxBytes {
		return nil, true
	}
	// Evict from the back while over the bound. The check above leaves
	// enough unheld triggers other than t (which, just used, is at the
	// front or held) to make room, so the tail is never nil or t.
	for c.bytes+grow > c.maxBytes {
		b := c.tail
		if b == nil || b == t {
			return evicted, true // defensive: see above
		}
		c.work++
		c.removeLocked(b)
		c.m.evicted[evictLRU].Inc()
		evicted = append(evicted, b)
	}
	c.bytes += grow
	if t.holds > 0 {
		c.heldBytes += grow
	}
	t.retained = retained
	c.gaugesLocked()
	return evicted, false
}

// sizeIfUnheld is t's size when t is not held (then heldBytes does not
// include it), else 0.
func (c *triggerCache) sizeIfUnheld(t *trigger) int64 {
	if t.holds > 0 {
		return 0
	}
	return t.size()
}

// unhold drops a hold taken by get or add; the last one puts t back in
// the LRU list as just used.
func (c *triggerCache) unhold(t *trigger, now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.holds--; t.holds > 0 {
		return
	}
	c.heldN--
	c.heldBytes -= t.size()
	t.lastUsed = now
	c.pushFrontLocked(t)
}

// useLocked records a lookup of t: it moves t to the front, or takes a
// hold, which takes t out of the list.
func (c *triggerCache) useLocked(t *trigger, now int64, hold bool) {
	t.lastUsed = now
	switch {
	case hold:
		if t.holds == 0 {
			c.unlinkLocked(t)
			c.heldN++
			c.heldBytes += t.size()
		}
		t.holds++
	case t.holds == 0 && c.head != t:
		c.unlinkLocked(t)
		c.pushFrontLocked(t)
	}
}

// removeLocked drops an unheld trigger from the cache.
func (c *triggerCache) removeLocked(t *trigger) {
	c.unlinkLocked(t)
	if p := c.byHash[t.hash]; p == t {
		if t.hnext == nil {
			delete(c.byHash, t.hash)
		} else {
			c.byHash[t.hash] = t.hnext
		}
	} else {
		for ; p.hnext != t; p = p.hnext {
			c.work++
		}
		p.hnext = t.hnext
	}
	t.hnext = nil
	t.cached = false
	c.n--
	c.bytes -= t.size()
	c.gaugesLocked()
}

func (c *triggerCache) pushFrontLocked(t *trigger) {
	t.prev, t.next = nil, c.head
	if c.head != nil {
		c.head.prev = t
	} else {
		c.tail = t
	}
	c.head = t
}

func (c *triggerCache) unlinkLocked(t *trigger) {
	if t.prev != nil {
		t.prev.next = t.next
	} else if c.head == t {
		c.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else if c.tail == t {
		c.tail = t.prev
	}
	t.prev, t.next = nil, nil
}

func (c *triggerCache) gaugesLocked() {
	c.m.triggers.Set(float64(c.n))
	c.m.triggerBytes.Set(float64(c.bytes))
}

// len returns the number of cached triggers.
func (c *triggerCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// stats returns the cached triggers' estimated bytes and the work counter.
func (c *triggerCache) stats() (bytes int64, work uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes, c.work
}

// each calls fn for every cached trigger, held ones included, under the
// cache's lock; fn must not block or call back into the cache. It changes
// nothing (no LRU move, no expiry): for the status endpoint.
func (c *triggerCache) each(fn func(*trigger)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.byHash {
		for ; t != nil; t = t.hnext {
			fn(t)
		}
	}
}
