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
	n  atomic.Int32
	m  sync.Map // alias name (string) → []string of stored names
	mu sync.Mutex
}

// AddAlias registers alias as a legacy name of the stored metric name and
// returns the alias's metric ID (see MetricID), which the receiver reports
// to OnIngest with the stored name's ID so that push subscriptions of
// triggers written with the alias fire. It reports false, registering
// nothing, when alias equals name or the table is full. It is idempotent
// and, for a known pair, takes no lock and does not allocate.
func (s *Store) AddAlias(alias, name string) (uint32, bool) {
	if alias == "" || alias == name {
		return 0, false
	}
	a := &s.aliases
	if v, ok := a.m.Load(alias); ok && slices.Contains(v.([]string), name) {
		return s.MetricID(alias), true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var cur []string
	if v, ok := a.m.Load(alias); ok {
		cur = v.([]string)
		if slices.Contains(cur, name) {
			return s.MetricID(alias), true
		}
		if len(cur) >= maxAliasTargets {
			return 0, false
		}
	} else if a.n.Load() >= maxAliases {
		return 0, false
	}
	next := append(slices.Clip(cur), name)
	a.m.Store(alias, next)
	if cur == nil {
		a.n.Add(1)
	}
	// Cached selections of the alias (empty until now) must be redone.
	s.gen.Add(1)
	return s.MetricID(alias), true
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
