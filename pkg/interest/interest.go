// Package interest decides which metric families the receiver stores when
// ingestion is narrowed (README "Ingest only what is needed"): a static
// allow-list of metric names (--metric-allow-list, a regular expression)
// and, with --lazy-ingest, the families some query has asked for.
//
// A family is the set of names one OTLP metric is stored under: its
// Prometheus names (x, or x_bucket, x_count and x_sum) and its legacy
// aliases (otlp-contract.md §5). It is admitted when any of them matches.
//
// Lazy mode keeps a registry of wanted names:
//
//   - A compiled trigger holds the metric-name matchers of its selectors
//     (exact names and __name__ regular expressions) for as long as it is
//     cached (Acquire / Handle.Release). A trigger selector with no positive
//     name matcher ({job="x"}) holds "every family": the trigger would read
//     any of them.
//   - A query of the HTTP API asks for its names for --trigger-ttl after
//     its last ask (Ask), at most maxAsked entries (the oldest ask is
//     dropped first). A selector without a positive name matcher asks for
//     nothing there: it reads what is stored, and an ad-hoc {job="x"} in
//     Grafana does not switch lazy mode off.
//
// Warm-up of a family first asked for: a family that was not wanted
// before is not in the store, so a trigger that asks for it answers
// Unavailable for --warmup from the moment it became wanted
// (Handle.ReadyAt), as after a start; KEDA keeps the current replicas.
//
// Concurrency: writers (Acquire, Release, Ask, expiry) serialise on mu and
// publish an immutable snapshot with an incremented generation; the
// receiver reads the snapshot with one atomic load and caches its decision
// per family until the generation changes.
package interest

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Selectors are the metric-name matchers of a query.
type Selectors struct {
	// Names are exact names (__name__="x", or a bare x).
	Names []string
	// Regexps are __name__=~ expressions, as written (anchored when used).
	Regexps []string
	// Any is true when some selector has no positive name matcher.
	Any bool
}

// FromExpr collects the metric-name matchers of every vector selector.
func FromExpr(expr parser.Expr) Selectors {
	var s Selectors
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		positive := false
		for _, m := range vs.LabelMatchers {
			if m.Name != labels.MetricName {
				continue
			}
			switch m.Type {
			case labels.MatchEqual:
				if !slices.Contains(s.Names, m.Value) {
					s.Names = append(s.Names, m.Value)
				}
				positive = true
			case labels.MatchRegexp:
				if !slices.Contains(s.Regexps, m.Value) {
					s.Regexps = append(s.Regexps, m.Value)
				}
				positive = true
			}
		}
		if !positive {
			s.Any = true
		}
		return nil
	})
	return s
}

// Filter is the admission decision the receiver asks for. A nil *Filter
// admits everything.
type Filter struct {
	allow *regexp.Regexp // nil: every name
	lazy  *Registry      // nil: lazy mode off
}

// NewFilter returns a filter for the allow-list (a regular expression
// matched against whole names; "" allows every name) and, when lazy is
// set, the lazy registry. It returns nil when neither narrows anything.
func NewFilter(allowList string, lazy *Registry) (*Filter, error) {
	f := &Filter{lazy: lazy}
	if allowList != "" {
		re, err := regexp.Compile("^(?:" + allowList + ")$")
		if err != nil {
			return nil, fmt.Errorf("--metric-allow-list %q: %w", allowList, err)
		}
		f.allow = re
	}
	if f.allow == nil && f.lazy == nil {
		return nil, nil //nolint:nilnil // no filter: everything is admitted
	}
	return f, nil
}

// Reason says why a family was not admitted.
type Reason uint8

const (
	// Admitted means the family is stored.
	Admitted Reason = iota
	// NotAllowed means no name of the family matches the allow-list.
	NotAllowed
	// NotRequested means lazy mode is on and nothing asked for the family.
	NotRequested
)

// Gen is the generation of the decision: a cached Admit result stays
// valid while Gen returns the same value. nowNs drives the expiry of API
// asks (one atomic load and a compare when nothing expires).
func (f *Filter) Gen(nowNs int64) uint64 {
	if f.lazy == nil {
		return 0
	}
	return f.lazy.gen(nowNs)
}

// Admit decides for a family given all its names.
func (f *Filter) Admit(names []string) Reason {
	if f.allow != nil && !slices.ContainsFunc(names, f.allow.MatchString) {
		return NotAllowed
	}
	if f.lazy != nil && !f.lazy.wanted(names) {
		return NotRequested
	}
	return Admitted
}

// Registry is the lazy mode's set of wanted metric names.
type Registry struct {
	warmup   time.Duration
	askTTL   time.Duration
	maxAsked int
	now      func() time.Time

	mu    sync.Mutex
	exact map[string]*entry
	res   map[string]*entry // keyed by the expression as written
	anyE  entry             // "every family"
	asked int               // entries with an ask and no hold

	snap       atomic.Pointer[snapshot]
	nextExpiry atomic.Int64 // unix ns of the earliest ask expiry; MaxInt64 when none
}

// entry is one wanted name or expression.
type entry struct {
	holds    int
	askUntil int64 // unix ns; 0: never asked through the API
	since    int64 // unix ns when it became wanted
	re       *labels.FastRegexMatcher
}

func (e *entry) live(now int64) bool { return e.holds > 0 || e.askUntil > now }

type snapshot struct {
	gen      uint64
	exact    map[string]int64 // name → since
	res      []reSince
	any      bool
	anySince int64
}

type reSince struct {
	re    *labels.FastRegexMatcher
	since int64
}

// DefaultMaxAsked bounds the names and expressions API queries keep
// wanted.
const DefaultMaxAsked = 4096

// NewRegistry returns an empty registry. warmup is how long a trigger
// that asks for a family not wanted before answers Unavailable; askTTL how
// long an API query's names stay wanted after its last ask; maxAsked bounds
// those (DefaultMaxAsked when ≤ 0); now is the clock (time.Now when nil).
func NewRegistry(warmup, askTTL time.Duration, maxAsked int, now func() time.Time) *Registry {
	if maxAsked <= 0 {
		maxAsked = DefaultMaxAsked
	}
	if now == nil {
		now = time.Now
	}
	r := &Registry{
		warmup: warmup, askTTL: askTTL, maxAsked: maxAsked, now: now,
		exact: map[string]*entry{}, res: map[string]*entry{},
	}
	r.nextExpiry.Store(math.MaxInt64)
	r.snap.Store(&snapshot{exact: map[string]int64{}})
	return r
}

// Handle is what a trigger holds; Release drops it.
type Handle struct {
	r       *Registry
	sel     Selectors
	readyAt int64 // unix ns
}

// ReadyAt is when every family the trigger reads has been wanted for the
// warm-up (unix ns): before it the trigger answers Unavailable.
func (h *Handle) ReadyAt() int64 { return h.readyAt }

// Acquire holds sel's names and expressions until Release. fresh reports
// whether the store already holds fresh samples of an exact name (a
// restore, or a family wanted before under another matcher): such a name
// needs no warm-up. It may be nil.
func (r *Registry) Acquire(sel Selectors, fresh func(name string) bool) (*Handle, error) {
	now := r.now().UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.snap.Load()
	ready := int64(0)
	for _, n := range sel.Names {
		e := r.exact[n]
		if e == nil {
			e = &entry{since: now}
			if s, ok := old.wantedSince(n); ok || (fresh != nil && fresh(n)) {
				if !ok {
					s = 0
				}
				e.since = s
			}
			r.exact[n] = e
		} else if !e.live(now) {
			e.since = now
		}
		if e.holds == 0 && e.askUntil > now {
			r.asked--
		}
		e.holds++
		ready = max(ready, e.since+int64(r.warmup))
	}
	for _, x := range sel.Regexps {
		e := r.res[x]
		if e == nil {
			m, err := labels.NewFastRegexMatcher(x)
			if err != nil {
				r.releaseLocked(Selectors{Names: sel.Names, Regexps: sel.Regexps[:slices.Index(sel.Regexps, x)]})
				return nil, fmt.Errorf("metric name expression %q: %w", x, err)
			}
			e = &entry{since: now, re: m}
			if old.any {
				e.since = 0
			}
			r.res[x] = e
		} else if !e.live(now) {
			e.since = now
		}
		if e.holds == 0 && e.askUntil > now {
			r.asked--
		}
		e.holds++
		ready = max(ready, e.since+int64(r.warmup))
	}
	if sel.Any {
		if r.anyE.holds == 0 {
			r.anyE.since = now
		}
		r.anyE.holds++
		ready = max(ready, r.anyE.since+int64(r.warmup))
	}
	r.publishLocked(now)
	return &Handle{r: r, sel: sel, readyAt: ready}, nil
}

// Release drops the trigger's holds. It is idempotent per handle only in
// the sense that a nil handle is a no-op.
func (h *Handle) Release() {
	if h == nil {
		return
	}
	r := h.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.releaseLocked(h.sel)
	r.publishLocked(r.now().UnixNano())
}

func (r *Registry) releaseLocked(sel Selectors) {
	now := r.now().UnixNano()
	for _, n := range sel.Names {
		if e := r.exact[n]; e != nil {
			r.dropHold(r.exact, n, e, now)
		}
	}
	for _, x := range sel.Regexps {
		if e := r.res[x]; e != nil {
			r.dropHold(r.res, x, e, now)
		}
	}
	if sel.Any && r.anyE.holds > 0 {
		r.anyE.holds--
	}
}

func (r *Registry) dropHold(m map[string]*entry, k string, e *entry, now int64) {
	e.holds--
	switch {
	case e.holds > 0:
	case e.askUntil > now:
		r.asked++
	default:
		delete(m, k)
	}
}

// Ask records that an API query read sel: its exact names and expressions
// stay wanted for the ask TTL. Selectors without a positive name matcher
// ask for nothing. Invalid expressions are skipped (the query fails on
// its own).
func (r *Registry) Ask(sel Selectors) {
	if len(sel.Names) == 0 && len(sel.Regexps) == 0 {
		return
	}
	now := r.now().UnixNano()
	until := now + int64(r.askTTL)
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	ask := func(m map[string]*entry, k string, mk func() *entry) {
		e := m[k]
		if e == nil {
			if e = mk(); e == nil {
				return
			}
			e.since = now
			m[k] = e
			changed = true
		} else if !e.live(now) {
			e.since = now
			changed = true
		}
		if e.holds == 0 && e.askUntil == 0 {
			r.asked++ // a new entry; ask-only entries are counted already
		}
		e.askUntil = until
	}
	for _, n := range sel.Names {
		ask(r.exact, n, func() *entry { return &entry{} })
	}
	for _, x := range sel.Regexps {
		ask(r.res, x, func() *entry {
			m, err := labels.NewFastRegexMatcher(x)
			if err != nil {
				return nil
			}
			return &entry{re: m}
		})
	}
	for r.asked > r.maxAsked {
		r.evictOldestAskLocked()
		changed = true
	}
	if changed || r.nextExpiry.Load() > until {
		r.publishLocked(now)
	}
}

// evictOldestAskLocked drops the ask-only entry whose ask expires first.
func (r *Registry) evictOldestAskLocked() {
	var (
		bestM map[string]*entry
		bestK string
		best  int64 = math.MaxInt64
	)
	for _, m := range []map[string]*entry{r.exact, r.res} {
		for k, e := range m {
			if e.holds == 0 && e.askUntil > 0 && e.askUntil < best {
				bestM, bestK, best = m, k, e.askUntil
			}
		}
	}
	if bestM == nil {
		r.asked = 0
		return
	}
	delete(bestM, bestK)
	r.asked--
}

// gen returns the current generation, first expiring asks that are due.
func (r *Registry) gen(nowNs int64) uint64 {
	if nowNs >= r.nextExpiry.Load() {
		r.mu.Lock()
		if nowNs >= r.nextExpiry.Load() {
			r.publishLocked(nowNs)
		}
		r.mu.Unlock()
	}
	return r.snap.Load().gen
}

// publishLocked drops expired asks and publishes a new snapshot.
func (r *Registry) publishLocked(now int64) {
	next := int64(math.MaxInt64)
	s := &snapshot{
		gen: r.snap.Load().gen + 1, exact: make(map[string]int64, len(r.exact)),
		any: r.anyE.holds > 0, anySince: r.anyE.since,
	}
	for k, e := range r.exact {
		if !e.live(now) {
			delete(r.exact, k)
			r.asked--
			continue
		}
		s.exact[k] = e.since
		if e.holds == 0 {
			next = min(next, e.askUntil)
		}
	}
	for k, e := range r.res {
		if !e.live(now) {
			delete(r.res, k)
			r.asked--
			continue
		}
		s.res = append(s.res, reSince{re: e.re, since: e.since})
		if e.holds == 0 {
			next = min(next, e.askUntil)
		}
	}
	r.asked = max(r.asked, 0)
	r.nextExpiry.Store(next)
	r.snap.Store(s)
}

// wanted reports whether any of names is wanted now.
func (r *Registry) wanted(names []string) bool {
	s := r.snap.Load()
	for _, n := range names {
		if _, ok := s.wantedSince(n); ok {
			return true
		}
	}
	return false
}

// wantedSince returns the earliest time from which n has been wanted.
func (s *snapshot) wantedSince(n string) (int64, bool) {
	since, ok := s.exact[n]
	if !ok {
		since = math.MaxInt64
	}
	for _, x := range s.res {
		if x.since < since && x.re.MatchString(n) {
			since, ok = x.since, true
		}
	}
	if s.any && (!ok || s.anySince < since) {
		return s.anySince, true
	}
	return since, ok
}

// Len returns the wanted names and expressions (for tests and metrics).
func (r *Registry) Len() int {
	s := r.snap.Load()
	return len(s.exact) + len(s.res)
}
