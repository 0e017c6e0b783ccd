package store

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// resolved is a matcher with its label name (and, for a non-empty
// equality, its value) turned into symbols once per Select.
type resolved struct {
	m      *labels.Matcher
	name   uint32
	nameOK bool // the name was ever interned; if not, every series lacks it
	val    uint32
	eq     bool // an equality on a non-empty, interned value: compare symbols
}

// Select appends to dst the refs of live series matching every matcher, in
// ascending order, and returns the extended slice. Matchers follow PromQL:
// a series without a label has it as "". It takes no lock.
//
// The candidates come from the smallest postings list of a non-empty
// equality matcher; else from the union of the postings of every value
// that a matcher needing a non-empty value accepts; else from all series.
// Each candidate is then checked against every matcher through its
// interned label set, which is cheaper than intersecting postings lists
// when, as in KEDA triggers, one equality (the metric name) already
// narrows the set to a few thousand series.
//
// A selector whose metric name is a legacy alias with no series of its own
// selects the series of the names it stands for (alias.go).
func (s *Store) Select(dst []SeriesRef, ms ...*labels.Matcher) []SeriesRef {
	return s.selectStop(dst, nil, ms)
}

// SelectContext is Select that gives up when ctx is done, returning ctx's
// error (or context.DeadlineExceeded for a deadline that has passed
// before its timer fired). It checks ctx every stopCheckEvery candidates
// it matches: a matcher can be slow (a regular expression costs up to its
// program's size times the value's length per candidate), so a hostile
// selector over many series stops near its deadline instead of after
// matching them all. dst's contents are unspecified on error.
func (s *Store) SelectContext(ctx context.Context, dst []SeriesRef, ms ...*labels.Matcher) ([]SeriesRef, error) {
	st := &stopper{ctx: ctx, left: stopCheckEvery}
	dst = s.selectStop(dst, st, ms)
	return dst, st.err
}

func (s *Store) selectStop(dst []SeriesRef, st *stopper, ms []*labels.Matcher) []SeriesRef {
	if names, at := s.aliasTargets(ms); names != nil {
		return s.selectAliased(dst, st, ms, names, at)
	}
	return s.selectDirect(dst, st, ms)
}

// stopCheckEvery is how many candidates SelectContext and FilterContext
// match between two checks of their context.
const stopCheckEvery = 16

// stopper tells the matching loops of SelectContext and FilterContext to
// stop once its context is done. A nil *stopper never stops (Select,
// Filter). It belongs to one call; the loops only read and count down.
type stopper struct {
	ctx  context.Context
	left int
	err  error
}

// stop counts one candidate and reports whether the loop must end: the
// context was found done now or earlier (err is set).
func (st *stopper) stop() bool {
	if st == nil {
		return false
	}
	if st.err != nil {
		return true
	}
	if st.left--; st.left > 0 {
		return false
	}
	st.left = stopCheckEvery
	if st.err = st.ctx.Err(); st.err == nil {
		if d, ok := st.ctx.Deadline(); ok && !time.Now().Before(d) {
			st.err = context.DeadlineExceeded
		}
	}
	return st.err != nil
}

// selectDirect is Select for the matchers as written.
func (s *Store) selectDirect(dst []SeriesRef, st *stopper, ms []*labels.Matcher) []SeriesRef {
	// Matchers resolve strings to symbol IDs once; if the sweeper's freed
	// IDs were handed to new strings meanwhile (symbols, contract point
	// 4), an ID may name another string by the end, so retry. Reuse is
	// rare (only after a sweep freed symbols), but a writer creating many
	// new series could keep it going: the last attempt holds the
	// interner's lock, which stops reuse, so Select always ends.
	start := len(dst)
	for range 2 {
		e := s.syms.reuses.Load()
		dst = s.selectOnce(dst, st, ms)
		if st.stopped() || s.syms.reuses.Load() == e {
			return dst
		}
		dst = dst[:start]
	}
	s.syms.mu.Lock()
	defer s.syms.mu.Unlock()
	return s.selectOnce(dst, st, ms)
}

// stopped reports whether st has stopped its loops.
func (st *stopper) stopped() bool { return st != nil && st.err != nil }

func (s *Store) selectOnce(dst []SeriesRef, st *stopper, ms []*labels.Matcher) []SeriesRef {
	var buf [8]resolved
	rs := buf[:0]
	var driver []uint32
	driverSorted := true
	for _, m := range ms {
		r := resolved{m: m}
		r.name, r.nameOK = s.syms.id(m.Name)
		if m.Type == labels.MatchEqual && m.Value != "" {
			if !r.nameOK {
				return dst
			}
			v, ok := s.syms.id(m.Value)
			if !ok {
				return dst
			}
			r.val, r.eq = v, true
			pl, ok := s.postings.Load(pairKey(r.name, v))
			if !ok {
				return dst
			}
			l := pl.(*u32list)
			if refs := l.load(); driver == nil || len(refs) < len(driver) {
				driver, driverSorted = refs, l.isSorted()
			}
		}
		rs = append(rs, r)
	}
	start := len(dst)
	switch {
	case driver != nil:
		for _, ref := range driver {
			if st.stop() {
				return dst
			}
			if s.matches(SeriesRef(ref), rs) {
				dst = append(dst, SeriesRef(ref))
			}
		}
		if driverSorted {
			return dst
		}
	case s.unionCandidates(&dst, st, rs):
		w := start
		for _, ref := range dst[start:] {
			if st.stop() {
				return dst[:w]
			}
			if s.matches(ref, rs) {
				dst[w] = ref
				w++
			}
		}
		dst = dst[:w]
	default:
		n := s.nextRef.Load()
		for ref := uint32(1); ref < n; ref++ {
			if st.stop() {
				return dst
			}
			if s.matches(SeriesRef(ref), rs) {
				dst = append(dst, SeriesRef(ref))
			}
		}
		return dst
	}
	slices.Sort(dst[start:])
	return append(dst[:start], slices.Compact(dst[start:])...)
}

// Filter appends to dst the refs of cands that are live series matching
// every matcher, in cands' order, and returns the extended slice: Select
// restricted to given candidates, such as CreatedSince's. It takes no
// lock.
func (s *Store) Filter(dst, cands []SeriesRef, ms ...*labels.Matcher) []SeriesRef {
	return s.filterStop(dst, nil, cands, ms)
}

// FilterContext is Filter that gives up when ctx is done, as
// SelectContext does.
func (s *Store) FilterContext(ctx context.Context, dst, cands []SeriesRef, ms ...*labels.Matcher) ([]SeriesRef, error) {
	st := &stopper{ctx: ctx, left: stopCheckEvery}
	dst = s.filterStop(dst, st, cands, ms)
	return dst, st.err
}

func (s *Store) filterStop(dst []SeriesRef, st *stopper, cands []SeriesRef, ms []*labels.Matcher) []SeriesRef {
	start := len(dst)
	for range 2 { // retry on symbol reuse, as Select does
		e := s.syms.reuses.Load()
		dst = s.filterOnce(dst, st, cands, ms)
		if st.stopped() || s.syms.reuses.Load() == e {
			return dst
		}
		dst = dst[:start]
	}
	s.syms.mu.Lock()
	defer s.syms.mu.Unlock()
	return s.filterOnce(dst, st, cands, ms)
}

func (s *Store) filterOnce(dst []SeriesRef, st *stopper, cands []SeriesRef, ms []*labels.Matcher) []SeriesRef {
	var buf [8]resolved
	rs := buf[:0]
	for _, m := range ms {
		r := resolved{m: m}
		r.name, r.nameOK = s.syms.id(m.Name)
		if m.Type == labels.MatchEqual && m.Value != "" {
			v, ok := s.syms.id(m.Value)
			if !r.nameOK || !ok {
				return dst // no series has this pair
			}
			r.val, r.eq = v, true
		}
		rs = append(rs, r)
	}
	for _, ref := range cands {
		if st.stop() {
			return dst
		}
		if s.matches(ref, rs) {
			dst = append(dst, ref)
		}
	}
	return dst
}

// unionCandidates appends to dst the postings of every value accepted by
// the first matcher that rejects the empty value, and reports whether
// there was such a matcher.
func (s *Store) unionCandidates(dst *[]SeriesRef, st *stopper, rs []resolved) bool {
	for _, r := range rs {
		if r.m.Matches("") {
			continue
		}
		if !r.nameOK {
			return true // no series has the label: no candidates
		}
		vl, ok := s.nameValues.Load(r.name)
		if !ok {
			return true
		}
		for _, v := range vl.(*u32list).load() {
			if st.stop() {
				return true
			}
			if !r.m.Matches(s.syms.str(v)) {
				continue
			}
			if pl, ok := s.postings.Load(pairKey(r.name, v)); ok {
				for _, ref := range pl.(*u32list).load() {
					*dst = append(*dst, SeriesRef(ref))
				}
			}
		}
		return true
	}
	return false
}

// matches reports whether ref is a live series accepted by every matcher.
func (s *Store) matches(ref SeriesRef, rs []resolved) bool {
	ms := s.get(ref)
	if ms == nil || ms.meta.Load()&metaDead != 0 {
		return false
	}
	for i := range rs {
		r := &rs[i]
		if !r.nameOK {
			if !r.m.Matches("") {
				return false
			}
			continue
		}
		v, ok := s.labelValue(ms, r.name)
		switch {
		case r.eq:
			if !ok || v != r.val {
				return false
			}
		case !ok:
			if !r.m.Matches("") {
				return false
			}
		default:
			if !r.m.Matches(s.syms.str(v)) {
				return false
			}
		}
	}
	return true
}

// LabelNames appends to dst the label names of the live series, __name__
// included, sorted, and returns the extended slice. It takes no lock; it
// allocates only to grow dst.
func (s *Store) LabelNames(dst []string) []string {
	start := len(dst)
	for range 2 { // retry on symbol reuse, as Select does
		e := s.syms.reuses.Load()
		dst = s.labelNamesOnce(dst)
		if s.syms.reuses.Load() == e {
			return dst
		}
		dst = dst[:start]
	}
	s.syms.mu.Lock()
	defer s.syms.mu.Unlock()
	return s.labelNamesOnce(dst)
}

func (s *Store) labelNamesOnce(dst []string) []string {
	start := len(dst)
	s.nameValues.Range(func(k, v any) bool {
		if len(v.(*u32list).load()) > 0 {
			dst = append(dst, s.syms.str(k.(uint32)))
		}
		return true
	})
	slices.Sort(dst[start:])
	return dst
}

// LabelValues appends to dst the values label name takes across the live
// series (metric names for __name__), sorted, and returns the extended
// slice. It takes no lock; it allocates only to grow dst.
func (s *Store) LabelValues(dst []string, name string) []string {
	start := len(dst)
	for range 2 { // retry on symbol reuse, as Select does
		e := s.syms.reuses.Load()
		dst = s.labelValuesOnce(dst, name)
		if s.syms.reuses.Load() == e {
			return dst
		}
		dst = dst[:start]
	}
	s.syms.mu.Lock()
	defer s.syms.mu.Unlock()
	return s.labelValuesOnce(dst, name)
}

func (s *Store) labelValuesOnce(dst []string, name string) []string {
	id, ok := s.syms.id(name)
	if !ok {
		return dst
	}
	v, ok := s.nameValues.Load(id)
	if !ok {
		return dst
	}
	start := len(dst)
	for _, val := range v.(*u32list).load() {
		dst = append(dst, s.syms.str(val))
	}
	slices.Sort(dst[start:])
	return dst
}
