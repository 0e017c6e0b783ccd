package store

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// Legacy aliases (otlp-contract.md §5): kedify/otel-add-on stored an OTLP
// metric under its raw name with "." and "/" turned into "_", so triggers
// written for it say app_frontend_requests where Prometheus's naming
// stores app_frontend_requests_total. The receiver registers such a name
// as an alias of the stored name; Select falls back to the alias's names
// only when no live series exists under the name as written, and the
// series it returns carry their stored (Prometheus) names. Aliases have no
// postings, so LabelValues and LabelNames never list them.
//
// Bounds: at most maxAliases alias names, each naming at most
// maxAliasTargets stored names (one OTLP name gives several stored names
// only when it is sent with different units or types). Registrations past
// them are dropped; AddAlias reports it.
//
// Lifetime: an alias lives while a name it stands for has series. Each
// sweep drops, from every alias, the stored names that have no live series
// (those whose last series it removed, and those registered since the
// previous sweep that got none), and an alias left with no names is
// deleted, releasing its hold on the alias's symbol (symbols.go). Without
// this, every alias a sender's ever-new metric names created stayed, its
// name pinned, until the table was full and legacy names stopped working
// for new metrics. A receiver that cached an alias's ID compares
// AliasEpoch, which moves whenever a name is dropped, and registers again.
const (
	maxAliases      = 1 << 16
	maxAliasTargets = 8
)

// aliasTable maps an alias name to the stored metric names it stands for.
//
// Concurrency contract:
//
//  1. Writers: AddAlias, serialised by mu.
//  2. Readers: Select, lock-free through sync.Map (reads take no lock).
//  3. Publication: a target list is immutable once stored; a writer
//     stores a longer copy under the same key. n counts the keys and is
//     raised after the first store of a key, so a reader that sees n == 0
//     may only miss an alias being registered concurrently.
type aliasTable struct {
	n     atomic.Int32
	epoch atomic.Uint64 // moves when the sweeper drops a name from an alias (AliasEpoch)
	m     sync.Map      // alias name (string) → []string of stored names
	mu    sync.Mutex    // guards the fields below; writers of m hold it

	byName map[string][]string // stored name → the aliases that name it
	young  []string            // stored names added to an alias since the last sweep
}

// AddAlias registers alias as a legacy name of the stored metric name and
// returns the alias's metric ID, which the receiver reports to OnIngest
// with the stored name's ID so that push subscriptions of triggers written
// with the alias fire. The ID names the alias while the alias lives: read
// AliasEpoch before the call and compare it later; once it moved, call
// again. It reports false, registering nothing, when alias equals name or
// the table is full. It is idempotent and, for a known pair, takes no lock
// and does not allocate.
func (s *Store) AddAlias(alias, name string) (uint32, bool) {
	if alias == "" || alias == name {
		return 0, false
	}
	a := &s.aliases
	if v, ok := a.m.Load(alias); ok && slices.Contains(v.([]string), name) {
		// The alias holds its symbol while it is in the map; if the
		// sweeper deleted it since the Load, the epoch has moved.
		if id, ok := s.syms.id(alias); ok {
			return id, true
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var cur []string
	if v, ok := a.m.Load(alias); ok {
		cur = v.([]string)
		if slices.Contains(cur, name) {
			id, _ := s.syms.id(alias) // held: present
			return id, true
		}
		if len(cur) >= maxAliasTargets {
			return 0, false
		}
	} else if a.n.Load() >= maxAliases {
		return 0, false
	}
	var id uint32
	if cur == nil {
		id = s.syms.hold(alias) // released when the sweeper deletes the alias
	} else {
		id, _ = s.syms.id(alias)
	}
	next := append(slices.Clip(cur), name)
	a.m.Store(alias, next)
	if cur == nil {
		a.n.Add(1)
	}
	if a.byName == nil {
		a.byName = map[string][]string{}
	}
	a.byName[name] = append(a.byName[name], alias)
	a.young = append(a.young, name)
	// Cached selections of the alias (empty until now) must be redone.
	s.gen.Add(1)
	return id, true
}

// AliasEpoch moves whenever the sweeper drops a stored name from a legacy
// alias (and so when it deletes an alias, whose ID may then be reused for
// another name); see AddAlias.
func (s *Store) AliasEpoch() uint64 { return s.aliases.epoch.Load() }

// Aliases returns the number of legacy alias names registered.
func (s *Store) Aliases() int { return int(s.aliases.n.Load()) }

// pruneAliasesLocked drops the stored names in emptied (whose last series
// the sweep removed) and those registered since the last sweep from every
// alias, when they have no live series, and deletes aliases left with no
// names. Under Store.mu, so series counts are stable; called by Sweep.
func (s *Store) pruneAliasesLocked(emptied []string) {
	a := &s.aliases
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.byName) == 0 {
		a.young = a.young[:0]
		return
	}
	var freed []uint32
	prune := func(name string) {
		aliases, ok := a.byName[name]
		if !ok {
			return
		}
		if id, ok := s.syms.id(name); ok && s.perMetric[id] > 0 {
			return
		}
		delete(a.byName, name)
		for _, alias := range aliases {
			v, ok := a.m.Load(alias)
			if !ok {
				continue
			}
			cur := v.([]string)
			next := make([]string, 0, len(cur))
			for _, n := range cur {
				if n != name {
					next = append(next, n)
				}
			}
			// Change the map, move the epoch, then release: a receiver
			// that read the epoch before the change registers again (a
			// name registered just before its first series is dropped by
			// a sweep that comes in between; the receiver's next append
			// puts it back), and the ID is freed only after both.
			if len(next) > 0 {
				a.m.Store(alias, next) // a new slice: readers may hold cur
				a.epoch.Add(1)
				continue
			}
			id, _ := s.syms.id(alias)
			a.m.Delete(alias)
			a.n.Add(-1)
			a.epoch.Add(1)
			freed = append(freed, id)
		}
	}
	for _, name := range emptied {
		prune(name)
	}
	for _, name := range a.young {
		prune(name)
	}
	clear(a.young)
	a.young = a.young[:0]
	if len(freed) > 0 {
		s.syms.unhold(freed)
	}
}

// aliasTargets returns the stored names that a selector's metric name
// stands for, or nil when Select must use the matchers as written: no
// aliases, no __name__ equality matcher, a name that is no alias, or a name
// that has a live series of its own. It takes no lock and does not
// allocate.
func (s *Store) aliasTargets(ms []*labels.Matcher) (names []string, at int) {
	if s.aliases.n.Load() == 0 {
		return nil, 0
	}
	at = -1
	for i, m := range ms {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			at = i
			break
		}
	}
	if at < 0 {
		return nil, 0
	}
	v, ok := s.aliases.m.Load(ms[at].Value)
	if !ok || s.hasSeries(ms[at].Value) {
		return nil, 0
	}
	return v.([]string), at
}

// hasSeries reports whether a live series is stored under metric name.
func (s *Store) hasSeries(name string) bool {
	id, ok := s.syms.id(name)
	if !ok {
		return false
	}
	pl, ok := s.postings.Load(pairKey(s.nameSym(), id))
	if !ok {
		return false
	}
	for _, ref := range pl.(*u32list).load() {
		if ms := s.get(SeriesRef(ref)); ms != nil && ms.metricID == id && ms.meta.Load()&metaDead == 0 {
			return true
		}
	}
	return false
}

// selectAliased is Select for a selector whose metric name (matcher at) is
// an alias: the union of the selections under each stored name, ascending.
func (s *Store) selectAliased(dst []SeriesRef, st *stopper, ms []*labels.Matcher, names []string, at int) []SeriesRef {
	start := len(dst)
	sub := slices.Clone(ms)
	for _, n := range names {
		sub[at] = labels.MustNewMatcher(labels.MatchEqual, model.MetricNameLabel, n)
		if dst = s.selectDirect(dst, st, sub); st.stopped() {
			return dst
		}
	}
	if len(names) > 1 {
		slices.Sort(dst[start:])
		dst = append(dst[:start], slices.Compact(dst[start:])...)
	}
	return dst
}

// LabelValue returns the value of label name for the series, or false when
// the series is unknown or lacks the label. It takes no lock and does not
// allocate.
func (s *Store) LabelValue(ref SeriesRef, name string) (string, bool) {
	ms := s.get(ref)
	if ms == nil {
		return "", false
	}
	id, ok := s.syms.id(name)
	if !ok {
		return "", false
	}
	v, ok := s.labelValue(ms, id)
	if !ok {
		return "", false
	}
	str := s.syms.str(v)
	// As in Labels: the string is right only if ms was still published
	// after it was read (its set pins its symbols).
	if s.get(ref) != ms {
		return "", false
	}
	return str, true
}
