package promapi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// selection is the parsed match[], start, end and limit parameters shared
// by the listing endpoints.
type selection struct {
	sets       [][]*labels.Matcher
	start, end int64 // unix ms, inclusive
	timed      bool  // start or end was given
	limit      int
}

func (a *API) parseSelection(r *http.Request) (selection, *apiError) {
	var sel selection
	var err error
	if sel.limit, err = parseLimit(r.Form.Get("limit")); err != nil {
		return sel, invalidParam("limit", err)
	}
	sel.start, sel.end = math.MinInt64, math.MaxInt64
	if s := r.Form.Get("start"); s != "" {
		t, err := parseTime(s)
		if err != nil {
			return sel, invalidParam("start", fmt.Errorf("invalid time value for 'start': %w", err))
		}
		sel.start, sel.timed = t.UnixMilli(), true
	}
	if s := r.Form.Get("end"); s != "" {
		t, err := parseTime(s)
		if err != nil {
			return sel, invalidParam("end", fmt.Errorf("invalid time value for 'end': %w", err))
		}
		sel.end, sel.timed = t.UnixMilli(), true
	}
	if ms := r.Form["match[]"]; len(ms) > 0 {
		// The parser compiles every regular expression: bound them first,
		// all match[] together (query.MaxQueryRegexSize).
		if err := query.CheckSelectorRegexes(ms); err != nil {
			return sel, invalidParam("match[]", err)
		}
		sets, err := a.parser.ParseMetricSelectors(ms)
		if err != nil {
			return sel, invalidParam("match[]", err)
		}
		for _, set := range sets {
			if !slices.ContainsFunc(set, func(m *labels.Matcher) bool { return !m.Matches("") }) {
				return sel, badData(errors.New("match[] must contain at least one non-empty matcher"))
			}
		}
		sel.sets = sets
	}
	return sel, nil
}

// listing is a listing endpoint's request after its parameters: the
// selection, a context bounded by Config.Timeout, a slot and a budget.
type listing struct {
	sel  selection
	ctx  context.Context
	b    *budget
	done func()
}

// startListing parses the selection and waits for a slot.
func (a *API) startListing(r *http.Request) (listing, *apiError) {
	sel, aerr := a.parseSelection(r)
	if aerr != nil {
		return listing{}, aerr
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	release, aerr := a.acquire(ctx)
	if aerr != nil {
		cancel()
		return listing{}, aerr
	}
	return listing{sel: sel, ctx: ctx, b: a.newBudget(), done: func() { release(); cancel() }}, nil
}

// allSeries matches every series: the store requires __name__ on every
// series, and Select needs at least one matcher that rejects "".
var allSeries = []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+")}

// refBytes is the memory of a SeriesRef, for the budget.
const refBytes = 4

// selectRefs returns the refs of the live series that match any of the
// selection's matcher sets (every series when there are none) and, when a
// time range was given, hold a sample within it. Refs are deduplicated.
func (a *API) selectRefs(l listing) ([]store.SeriesRef, *apiError) {
	sets := l.sel.sets
	if len(sets) == 0 {
		sets = [][]*labels.Matcher{allSeries}
	}
	var refs []store.SeriesRef
	for _, ms := range sets {
		// Matching stops at the request's deadline: a regular
		// expression costs up to its program's size per byte of each
		// value it is tried on.
		var err error
		if refs, err = a.store.SelectContext(l.ctx, refs, ms...); err != nil {
			return nil, execError(err)
		}
	}
	if aerr := l.b.charge((len(refs)*refBytes + SampleBytes - 1) / SampleBytes); aerr != nil {
		return nil, aerr
	}
	if len(sets) > 1 {
		slices.Sort(refs)
		refs = slices.Compact(refs)
	}
	if !l.sel.timed {
		return refs, nil
	}
	var buf []store.Sample
	kept := refs[:0]
	for i, ref := range refs {
		if i%contextCheckEvery == 0 {
			if err := l.ctx.Err(); err != nil {
				return nil, execError(err)
			}
		}
		// Range's lower bound is exclusive; start is inclusive.
		lo := l.sel.start
		if lo > math.MinInt64 {
			lo--
		}
		if buf = a.store.Range(buf[:0], ref, lo, l.sel.end); len(buf) > 0 {
			kept = append(kept, ref)
		}
	}
	return kept, nil
}

func (a *API) series(r *http.Request) result {
	if len(r.Form["match[]"]) == 0 {
		return errResult(badData(errors.New("no match[] parameter provided")))
	}
	l, aerr := a.startListing(r)
	if aerr != nil {
		return errResult(aerr)
	}
	res := a.listSeries(l)
	res.release = l.done
	return res
}

func (a *API) listSeries(l listing) result {
	refs, aerr := a.selectRefs(l)
	if aerr != nil {
		return errResult(aerr)
	}
	// A label set is shared with the store; the slice holds its header.
	if aerr := l.b.charge(len(refs)); aerr != nil {
		return errResult(aerr)
	}
	sets := make([]labels.Labels, 0, len(refs))
	for _, ref := range refs {
		if ls := a.store.Labels(ref); !ls.IsEmpty() { // deleted since Select
			sets = append(sets, ls)
		}
	}
	slices.SortFunc(sets, labels.Compare)
	var warnings []string
	if l.sel.limit > 0 && len(sets) > l.sel.limit {
		sets = sets[:l.sel.limit]
		warnings = append(warnings, "results truncated due to limit")
	}
	return result{warnings: warnings, data: func(j *jsonWriter) {
		j.char('[')
		for i, ls := range sets {
			if j.err != nil {
				return
			}
			if i > 0 {
				j.char(',')
			}
			j.labelSet(ls)
		}
		j.char(']')
	}}
}

func (a *API) labelNames(r *http.Request) result {
	l, aerr := a.startListing(r)
	if aerr != nil {
		return errResult(aerr)
	}
	res := a.distinct(l, func(ls labels.Labels, add func(string)) {
		ls.Range(func(lb labels.Label) { add(lb.Name) })
	})
	res.release = l.done
	return res
}

func (a *API) labelValues(r *http.Request) result {
	name := r.PathValue("name")
	if strings.HasPrefix(name, "U__") {
		name = model.UnescapeName(name, model.ValueEncodingEscaping)
	}
	if !model.UTF8Validation.IsValidLabelName(name) {
		return errResult(badData(fmt.Errorf("invalid label name: %q", name)))
	}
	l, aerr := a.startListing(r)
	if aerr != nil {
		return errResult(aerr)
	}
	res := a.distinct(l, func(ls labels.Labels, add func(string)) {
		if v := ls.Get(name); v != "" {
			add(v)
		}
	})
	res.release = l.done
	return res
}

// distinct lists the sorted distinct strings that pick finds in the
// selected series' labels. Every distinct string costs seriesCost of the
// budget (its map entry and its slot in the sorted list).
func (a *API) distinct(l listing, pick func(labels.Labels, func(string))) result {
	refs, aerr := a.selectRefs(l)
	if aerr != nil {
		return errResult(aerr)
	}
	seen := map[string]struct{}{}
	add := func(s string) {
		if _, ok := seen[s]; !ok && aerr == nil {
			seen[s] = struct{}{}
			aerr = l.b.charge(seriesCost)
		}
	}
	for _, ref := range refs {
		pick(a.store.Labels(ref), add)
		if aerr != nil {
			return errResult(aerr)
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	slices.Sort(out)
	var warnings []string
	if l.sel.limit > 0 && len(out) > l.sel.limit {
		out = out[:l.sel.limit]
		warnings = []string{"results truncated due to limit"}
	}
	return result{warnings: warnings, data: func(j *jsonWriter) { j.stringList(out) }}
}

// metadata answers /api/v1/metadata. The store keeps no HELP, TYPE or
// UNIT per metric, so the answer is always the empty map Prometheus gives
// for metrics it has no metadata for; clients such as Grafana then show
// names without type hints instead of failing.
func (*API) metadata(*http.Request) result {
	return result{data: func(j *jsonWriter) { j.raw("{}") }}
}

// buildInfoData mirrors Prometheus's PrometheusVersion.
type buildInfoData struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Branch    string `json:"branch"`
	BuildUser string `json:"buildUser"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
}

// buildInfo reports the Prometheus version whose semantics the engine
// follows (clients such as Grafana pick features by it) and this binary's
// VCS revision and Go version.
func (*API) buildInfo(*http.Request) result {
	d := buildInfoData{Version: compatVersion, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				d.Revision = s.Value
			case "vcs.time":
				d.BuildDate = s.Value
			}
		}
	}
	return result{data: func(j *jsonWriter) {
		j.raw(`{"version":`)
		j.str(d.Version)
		j.raw(`,"revision":`)
		j.str(d.Revision)
		j.raw(`,"branch":`)
		j.str(d.Branch)
		j.raw(`,"buildUser":`)
		j.str(d.BuildUser)
		j.raw(`,"buildDate":`)
		j.str(d.BuildDate)
		j.raw(`,"goVersion":`)
		j.str(d.GoVersion)
		j.char('}')
	}}
}
