package scaler

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
)

// trigger is the compiled form of one trigger's metadata.
//
// Fields above mu are immutable after newTrigger and need no lock.
type trigger struct {
	namespace, name string
	md              map[string]string // a private copy; the cache compares it on lookup
	hash            uint64
	metricName      string
	spec
	rewritten string // the evaluated query when lowering changed it
	metricIDs []uint32
	anyMetric bool

	// stats is what the status endpoint shows (stats.go); set before the
	// trigger is cached.
	stats *triggerStats

	lastUsed atomic.Int64 // unix ns of the last lookup; drives expiry

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

// metadataHash hashes a ScaledObjectRef without allocating: entries are
// hashed one by one and combined with addition, which does not depend on
// the map's iteration order. Collisions are resolved by comparing the
// metadata itself.
func metadataHash(ns, name string, md map[string]string) uint64 {
	h := xxhash.Sum64String(ns)*31 + xxhash.Sum64String(name)
	for k, v := range md {
		hk := xxhash.Sum64String(k)
		h += (hk*0x9E3779B97F4A7C15 ^ xxhash.Sum64String(v)) * 0xBF58476D1CE4E5B9
	}
	return h
}

// triggerCache holds compiled triggers keyed by their metadata. It is
// bounded by max entries; entries unused for ttl are dropped lazily,
// whenever a new trigger is added, so no goroutine is needed.
type triggerCache struct {
	ttl   int64 // ns
	max   int
	gauge prometheus.Gauge

	mu sync.RWMutex // guards m and n
	m  map[uint64][]*trigger
	n  int
}

func newTriggerCache(ttl time.Duration, maxEntries int, gauge prometheus.Gauge) *triggerCache {
	return &triggerCache{ttl: ttl.Nanoseconds(), max: maxEntries, gauge: gauge, m: map[uint64][]*trigger{}}
}

// get returns the cached trigger for the metadata, or nil. It does not
// allocate.
func (c *triggerCache) get(h uint64, ns, name string, md map[string]string, now int64) *trigger {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, t := range c.m[h] {
		if t.namespace == ns && t.name == name && maps.Equal(t.md, md) {
			t.lastUsed.Store(now)
			return t
		}
	}
	return nil
}

// add inserts t unless an equal trigger won a race, and returns the cached
// one; inserted reports whether t itself was added.
func (c *triggerCache) add(t *trigger, now int64) (_ *trigger, inserted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.m[t.hash] {
		if o.namespace == t.namespace && o.name == t.name && maps.Equal(o.md, t.md) {
			o.lastUsed.Store(now)
			return o, false
		}
	}
	c.expireLocked(now)
	if c.n >= c.max {
		c.evictOldestLocked()
	}
	t.lastUsed.Store(now)
	c.m[t.hash] = append(c.m[t.hash], t)
	c.n++
	c.gauge.Set(float64(c.n))
	return t, true
}

func (c *triggerCache) expireLocked(now int64) {
	for h, ts := range c.m {
		kept := ts[:0]
		for _, t := range ts {
			if now-t.lastUsed.Load() <= c.ttl {
				kept = append(kept, t)
			} else {
				c.n--
			}
		}
		clear(ts[len(kept):])
		if len(kept) == 0 {
			delete(c.m, h)
		} else {
			c.m[h] = kept
		}
	}
}

func (c *triggerCache) evictOldestLocked() {
	var oldest *trigger
	for _, ts := range c.m {
		for _, t := range ts {
			if oldest == nil || t.lastUsed.Load() < oldest.lastUsed.Load() {
				oldest = t
			}
		}
	}
	if oldest == nil {
		return
	}
	ts := c.m[oldest.hash]
	for i, t := range ts {
		if t == oldest {
			ts = append(ts[:i], ts[i+1:]...)
			break
		}
	}
	if len(ts) == 0 {
		delete(c.m, oldest.hash)
	} else {
		c.m[oldest.hash] = ts
	}
	c.n--
}

// len returns the number of cached triggers.
func (c *triggerCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.n
}

// each calls fn for every cached trigger under the read lock; fn must not
// block or call back into the cache. For the status endpoint: read-only.
func (c *triggerCache) each(fn func(*trigger)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, ts := range c.m {
		for _, t := range ts {
			fn(t)
		}
	}
}
