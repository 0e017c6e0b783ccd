// Package promapi serves the read side of Prometheus's HTTP API (instant
// and range queries, series, label names and values, build info) over the
// query engine and the store, so curl, promtool and Grafana can read what
// the scaler sees. It is built only on pkg/query's and pkg/store's public
// API; pkg/server mounts it on the HTTP listener.
package promapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Limits of the HTTP API. They bound the work one request can cause; they
// match Prometheus's defaults where Prometheus has one.
const (
	// maxRangeSteps caps the points per series of a range query, as
	// Prometheus does.
	maxRangeSteps = 11000
	// defaultAPITimeout bounds every query request (Prometheus's
	// --query.timeout default). A smaller "timeout" parameter wins.
	defaultAPITimeout = 2 * time.Minute
	// maxConcurrentAPIQueries bounds the queries evaluated at once, so a
	// dashboard cannot starve the KEDA path on a small machine.
	maxConcurrentAPIQueries = 4
	// contextCheckEvery is how many series the listing endpoints walk
	// between checks of the request's context.
	contextCheckEvery = 1024
	// defaultMaxRangePoints bounds the points a range query may hold in
	// memory (16 B each, so 80 MB), as Prometheus's --query.max-samples
	// does.
	defaultMaxRangePoints = 5_000_000
)

// compatVersion is the Prometheus version whose query semantics the engine
// follows; buildinfo reports it so clients (Grafana) enable the matching
// features.
const compatVersion = "3.16.0"

// statusClientClosedRequest is the non-standard code Prometheus answers
// when the client went away.
const statusClientClosedRequest = 499

// API serves the read side of the Prometheus HTTP API (instant and range
// queries, series, label names and values, build info) over the engine and
// its store, so curl, promtool and Grafana can read what the scaler sees.
type API struct {
	engine *query.Engine
	store  *store.Store
	now    func() time.Time
	// parser parses match[] selectors; it accepts every function since it
	// only ever parses selectors.
	parser parser.Parser
	// sem bounds concurrent query evaluations; see maxConcurrentAPIQueries.
	sem chan struct{}
	// maxRangePoints bounds the points one range query may collect.
	maxRangePoints int
}

// Settings carries what the server or a test provides.
type Settings struct {
	// Now is the clock for queries without a time; nil means time.Now.
	Now func() time.Time
}

// New returns the HTTP API over e, which must read st.
func New(e *query.Engine, st *store.Store, set Settings) *API {
	now := set.Now
	if now == nil {
		now = time.Now
	}
	return &API{
		engine: e,
		store:  st,
		now:    now,
		parser: parser.NewParser(parser.Options{}),
		sem:    make(chan struct{}, maxConcurrentAPIQueries),

		maxRangePoints: defaultMaxRangePoints,
	}
}

// Register mounts the API's endpoints on mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("/api/v1/query", a.handle(a.query, http.MethodGet, http.MethodPost))
	mux.HandleFunc("/api/v1/query_range", a.handle(a.queryRange, http.MethodGet, http.MethodPost))
	mux.HandleFunc("/api/v1/series", a.handle(a.series, http.MethodGet, http.MethodPost))
	mux.HandleFunc("/api/v1/labels", a.handle(a.labelNames, http.MethodGet, http.MethodPost))
	mux.HandleFunc("/api/v1/label/{name}/values", a.handle(a.labelValues, http.MethodGet))
	mux.HandleFunc("/api/v1/status/buildinfo", a.handle(a.buildInfo, http.MethodGet))
	mux.HandleFunc("/api/v1/metadata", a.handle(a.metadata, http.MethodGet))
}

// errTooManyPoints is Prometheus's message for a query over its sample
// limit.
var errTooManyPoints = errors.New("query processing would load too many samples into memory in query execution")

// apiError is an error with its Prometheus errorType.
type apiError struct {
	typ string
	err error
}

// Prometheus's error types.
const (
	errBadData  = "bad_data"
	errExec     = "execution"
	errTimeout  = "timeout"
	errCanceled = "canceled"
	errInternal = "internal"
)

func (e *apiError) code() int {
	switch e.typ {
	case errBadData:
		return http.StatusBadRequest
	case errExec:
		return http.StatusUnprocessableEntity
	case errCanceled:
		return statusClientClosedRequest
	case errTimeout:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

func badData(err error) *apiError { return &apiError{typ: errBadData, err: err} }

func invalidParam(name string, err error) *apiError {
	return badData(fmt.Errorf("invalid parameter %q: %w", name, err))
}

// execError classifies an evaluation error as Prometheus's returnAPIError
// does.
func execError(err error) *apiError {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{typ: errTimeout, err: fmt.Errorf("query timed out: %w", err)}
	case errors.Is(err, context.Canceled):
		return &apiError{typ: errCanceled, err: fmt.Errorf("query was canceled: %w", err)}
	}
	return &apiError{typ: errExec, err: err}
}

type apiResponse struct {
	Status    string   `json:"status"`
	Data      any      `json:"data,omitempty"`
	ErrorType string   `json:"errorType,omitempty"`
	Error     string   `json:"error,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
}

// apiResult is what an endpoint returns: data and warnings, or an error.
type apiResult struct {
	data     any
	warnings []string
	err      *apiError
}

func (a *API) handle(fn func(*http.Request) apiResult, methods ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !slices.Contains(methods, r.Method) {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, apiResponse{
				Status: "error", ErrorType: errBadData,
				Error: "method " + r.Method + " not allowed, use " + strings.Join(methods, " or "),
			})
			return
		}
		if err := r.ParseForm(); err != nil {
			writeAPIError(w, badData(fmt.Errorf("error parsing form values: %w", err)))
			return
		}
		res := fn(r)
		if res.err != nil {
			writeAPIError(w, res.err)
			return
		}
		writeJSON(w, http.StatusOK, apiResponse{Status: "success", Data: res.data, Warnings: res.warnings})
	}
}

// queryData is the data of a query or query_range answer.
type queryData struct {
	ResultType string `json:"resultType"`
	Result     any    `json:"result"`
}

type vectorElem struct {
	Metric map[string]string `json:"metric"`
	Value  apiPoint          `json:"value"`
}

type matrixElem struct {
	Metric map[string]string `json:"metric"`
	Values []apiPoint        `json:"values"`
}

// apiPoint is a [time, "value"] pair in Prometheus's JSON encoding.
type apiPoint struct {
	T int64 // unix ms
	F float64
}

// MarshalJSON writes [seconds, "value"] exactly as Prometheus's jsonutil
// does: seconds with up to three fraction digits, the value as a string.
func (p apiPoint) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 48)
	b = append(b, '[')
	b = appendTimestamp(b, p.T)
	b = append(b, ',', '"')
	b = appendFloat(b, p.F)
	b = append(b, '"', ']')
	return b, nil
}

func appendTimestamp(b []byte, t int64) []byte {
	if t < 0 {
		b = append(b, '-')
		t = -t
	}
	b = strconv.AppendInt(b, t/1000, 10)
	if frac := t % 1000; frac != 0 {
		b = append(b, '.')
		if frac < 100 {
			b = append(b, '0')
		}
		if frac < 10 {
			b = append(b, '0')
		}
		b = strconv.AppendInt(b, frac, 10)
	}
	return b
}

// appendFloat formats a sample value as Prometheus does: plain decimal,
// exponent form below 1e-6 and from 1e21, "NaN", "+Inf" and "-Inf".
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, 64)
}

// acquire takes an evaluation slot, or fails when ctx ends first.
func (a *API) acquire(ctx context.Context) *apiError {
	select {
	case a.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return execError(ctx.Err())
	}
}

func (a *API) release() { <-a.sem }

// prepared is what query and query_range share before evaluating: the
// limit, the request's timeout context, the compiled plan and an evaluation
// slot. done releases the slot and the context.
type prepared struct {
	plan  *query.Plan
	ctx   context.Context
	limit int
	done  func()
}

// prepare parses "limit" and "timeout", compiles the query and takes one of
// the bounded evaluation slots.
func (a *API) prepare(r *http.Request) (prepared, *apiError) {
	limit, err := parseLimit(r.Form.Get("limit"))
	if err != nil {
		return prepared{}, invalidParam("limit", err)
	}
	ctx, cancel, aerr := queryContext(r)
	if aerr != nil {
		return prepared{}, aerr
	}
	plan, aerr := a.compileQuery(r)
	if aerr != nil {
		cancel()
		return prepared{}, aerr
	}
	if aerr := a.acquire(ctx); aerr != nil {
		cancel()
		return prepared{}, aerr
	}
	return prepared{plan: plan, ctx: ctx, limit: limit, done: func() { a.release(); cancel() }}, nil
}

// queryContext applies the "timeout" parameter, capped by defaultAPITimeout.
func queryContext(r *http.Request) (context.Context, context.CancelFunc, *apiError) {
	timeout := defaultAPITimeout
	if s := r.Form.Get("timeout"); s != "" {
		d, err := parseDuration(s)
		if err != nil {
			return nil, nil, invalidParam("timeout", err)
		}
		if d <= 0 {
			return nil, nil, invalidParam("timeout", fmt.Errorf("timeout must be positive, got %s", d))
		}
		timeout = min(timeout, d)
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	return ctx, cancel, nil
}

// compileQuery reads "query" and "lookback_delta" and compiles a plan.
func (a *API) compileQuery(r *http.Request) (*query.Plan, *apiError) {
	opts := query.Options{}
	if s := r.Form.Get("lookback_delta"); s != "" {
		d, err := parseDuration(s)
		if err != nil {
			return nil, badData(fmt.Errorf("error parsing lookback delta duration: %w", err))
		}
		if d < 0 {
			return nil, badData(fmt.Errorf("error parsing lookback delta duration: negative duration %s", d))
		}
		opts.LookbackDelta = d
	}
	plan, err := a.engine.Query(r.Form.Get("query"), opts)
	if err != nil {
		return nil, invalidParam("query", err)
	}
	return plan, nil
}

func (a *API) query(r *http.Request) apiResult {
	ts := a.now()
	if s := r.Form.Get("time"); s != "" {
		t, err := parseTime(s)
		if err != nil {
			return apiResult{err: invalidParam("time", err)}
		}
		ts = t
	}
	ev, aerr := a.prepare(r)
	if aerr != nil {
		return apiResult{err: aerr}
	}
	defer ev.done()
	plan, ctx, limit := ev.plan, ev.ctx, ev.limit
	t := ts.UnixMilli()
	res, err := plan.Eval(ctx, t)
	if err != nil {
		return apiResult{err: execError(err)}
	}
	// Compile-time warnings (a window longer than the store keeps) go out
	// as Prometheus's "warnings", so Grafana shows them.
	warnings := slices.Clone(plan.Warnings())
	if res.Scalar {
		return apiResult{data: queryData{ResultType: "scalar", Result: apiPoint{T: t, F: res.Value}}, warnings: warnings}
	}
	vec := res.Vector
	if limit > 0 && len(vec) > limit {
		vec = vec[:limit]
		warnings = append(warnings, "results truncated due to limit")
	}
	out := make([]vectorElem, 0, len(vec))
	for _, s := range vec {
		out = append(out, vectorElem{Metric: s.Labels.Map(), Value: apiPoint{T: t, F: s.F}})
	}
	return apiResult{data: queryData{ResultType: "vector", Result: out}, warnings: warnings}
}

// queryRange answers a range query by evaluating the instant plan at every
// step, as Prometheus's range evaluation does for the functions we support:
// every step is an independent instant evaluation at start + k·step.
func (a *API) queryRange(r *http.Request) apiResult {
	start, err := parseTime(r.Form.Get("start"))
	if err != nil {
		return apiResult{err: invalidParam("start", err)}
	}
	end, err := parseTime(r.Form.Get("end"))
	if err != nil {
		return apiResult{err: invalidParam("end", err)}
	}
	if end.Before(start) {
		return apiResult{err: invalidParam("end", errors.New("end timestamp must not be before start time"))}
	}
	step, err := parseDuration(r.Form.Get("step"))
	if err != nil {
		return apiResult{err: invalidParam("step", err)}
	}
	if step <= 0 {
		return apiResult{err: invalidParam("step", errors.New("zero or negative query resolution step widths are not accepted. Try a positive integer"))}
	}
	if end.Sub(start)/step > maxRangeSteps {
		return apiResult{err: badData(errors.New("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"))}
	}
	ev, aerr := a.prepare(r)
	if aerr != nil {
		return apiResult{err: aerr}
	}
	defer ev.done()
	plan, ctx, limit := ev.plan, ev.ctx, ev.limit

	type series struct {
		lset   labels.Labels
		points []apiPoint
	}
	var (
		all   []*series
		byKey = map[string]*series{}
		key   []byte
	)
	points := 0
	startMs, endMs, stepMs := start.UnixMilli(), end.UnixMilli(), step.Milliseconds()
	if stepMs <= 0 {
		// Sub-millisecond steps cannot be represented; Prometheus's engine
		// also works in whole milliseconds.
		stepMs = 1
	}
	for t := startMs; t <= endMs; t += stepMs {
		if err := ctx.Err(); err != nil {
			return apiResult{err: execError(err)}
		}
		res, err := plan.Eval(ctx, t)
		if err != nil {
			return apiResult{err: execError(err)}
		}
		if points += max(len(res.Vector), 1); points > a.maxRangePoints {
			return apiResult{err: execError(errTooManyPoints)}
		}
		if res.Scalar {
			if all == nil {
				all = append(all, &series{lset: labels.EmptyLabels()})
			}
			all[0].points = append(all[0].points, apiPoint{T: t, F: res.Value})
			continue
		}
		for _, s := range res.Vector {
			key = s.Labels.Bytes(key[:0])
			se, ok := byKey[string(key)]
			if !ok {
				// The plan's result is only valid until the next Eval, so
				// the labels are copied.
				se = &series{lset: s.Labels.Copy()}
				byKey[string(key)] = se
				all = append(all, se)
			}
			se.points = append(se.points, apiPoint{T: t, F: s.F})
		}
	}
	slices.SortFunc(all, func(x, y *series) int { return labels.Compare(x.lset, y.lset) })
	warnings := slices.Clone(plan.Warnings())
	if limit > 0 && len(all) > limit {
		all = all[:limit]
		warnings = append(warnings, "results truncated due to limit")
	}
	out := make([]matrixElem, 0, len(all))
	for _, s := range all {
		out = append(out, matrixElem{Metric: s.lset.Map(), Values: s.points})
	}
	return apiResult{data: queryData{ResultType: "matrix", Result: out}, warnings: warnings}
}

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

// allSeries matches every series: the store requires __name__ on every
// series, and Select needs at least one matcher that rejects "".
var allSeries = []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+")}

// selectRefs returns the refs of the live series that match any of the
// selection's matcher sets (every series when there are none) and, when a
// time range was given, hold a sample within it. Refs are deduplicated.
func (a *API) selectRefs(ctx context.Context, sel selection) ([]store.SeriesRef, *apiError) {
	sets := sel.sets
	if len(sets) == 0 {
		sets = [][]*labels.Matcher{allSeries}
	}
	var refs []store.SeriesRef
	for _, ms := range sets {
		refs = a.store.Select(refs, ms...)
	}
	if len(sets) > 1 {
		slices.Sort(refs)
		refs = slices.Compact(refs)
	}
	if !sel.timed {
		return refs, nil
	}
	var buf []store.Sample
	kept := refs[:0]
	for i, ref := range refs {
		if i%contextCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, execError(err)
			}
		}
		// Range's lower bound is exclusive; start is inclusive.
		lo := sel.start
		if lo > math.MinInt64 {
			lo--
		}
		if buf = a.store.Range(buf[:0], ref, lo, sel.end); len(buf) > 0 {
			kept = append(kept, ref)
		}
	}
	return kept, nil
}

func (a *API) series(r *http.Request) apiResult {
	if len(r.Form["match[]"]) == 0 {
		return apiResult{err: badData(errors.New("no match[] parameter provided"))}
	}
	sel, aerr := a.parseSelection(r)
	if aerr != nil {
		return apiResult{err: aerr}
	}
	refs, aerr := a.selectRefs(r.Context(), sel)
	if aerr != nil {
		return apiResult{err: aerr}
	}
	sets := make([]labels.Labels, 0, len(refs))
	for _, ref := range refs {
		if l := a.store.Labels(ref); !l.IsEmpty() { // deleted since Select
			sets = append(sets, l)
		}
	}
	slices.SortFunc(sets, labels.Compare)
	var warnings []string
	if sel.limit > 0 && len(sets) > sel.limit {
		sets = sets[:sel.limit]
		warnings = append(warnings, "results truncated due to limit")
	}
	out := make([]map[string]string, 0, len(sets))
	for _, l := range sets {
		out = append(out, l.Map())
	}
	return apiResult{data: out, warnings: warnings}
}

func (a *API) labelNames(r *http.Request) apiResult {
	sel, aerr := a.parseSelection(r)
	if aerr != nil {
		return apiResult{err: aerr}
	}
	refs, aerr := a.selectRefs(r.Context(), sel)
	if aerr != nil {
		return apiResult{err: aerr}
	}
	seen := map[string]struct{}{}
	for _, ref := range refs {
		a.store.Labels(ref).Range(func(l labels.Label) { seen[l.Name] = struct{}{} })
	}
	return sortedLimited(seen, sel.limit)
}

func (a *API) labelValues(r *http.Request) apiResult {
	name := r.PathValue("name")
	if strings.HasPrefix(name, "U__") {
		name = model.UnescapeName(name, model.ValueEncodingEscaping)
	}
	if !model.UTF8Validation.IsValidLabelName(name) {
		return apiResult{err: badData(fmt.Errorf("invalid label name: %q", name))}
	}
	sel, aerr := a.parseSelection(r)
	if aerr != nil {
		return apiResult{err: aerr}
	}
	refs, aerr := a.selectRefs(r.Context(), sel)
	if aerr != nil {
		return apiResult{err: aerr}
	}
	seen := map[string]struct{}{}
	for _, ref := range refs {
		if v := a.store.Labels(ref).Get(name); v != "" {
			seen[v] = struct{}{}
		}
	}
	return sortedLimited(seen, sel.limit)
}

func sortedLimited(set map[string]struct{}, limit int) apiResult {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	if limit > 0 && len(out) > limit {
		return apiResult{data: out[:limit], warnings: []string{"results truncated due to limit"}}
	}
	return apiResult{data: out}
}

// metadata answers /api/v1/metadata. The store keeps no HELP, TYPE or
// UNIT per metric, so the answer is always the empty map Prometheus gives
// for metrics it has no metadata for; clients such as Grafana then show
// names without type hints instead of failing.
func (*API) metadata(*http.Request) apiResult {
	return apiResult{data: map[string]any{}}
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
func (*API) buildInfo(*http.Request) apiResult {
	d := buildInfoData{Version: compatVersion, Branch: "", GoVersion: runtime.Version()}
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
	return apiResult{data: d}
}

// parseTime accepts unix seconds with an optional fraction (rounded to the
// millisecond) or RFC 3339, as Prometheus's API does.
func parseTime(s string) (time.Time, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e15 {
			return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
		}
		sec, frac := math.Modf(f)
		frac = math.Round(frac*1000) / 1000
		return time.Unix(int64(sec), int64(frac*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

// parseDuration accepts seconds with an optional fraction or a Prometheus
// duration ("5m", "1h30m").
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		ts := f * float64(time.Second)
		if math.IsNaN(ts) || ts >= float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration. It overflows int64", s)
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}

func parseLimit(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, errors.New("limit must be non-negative")
	}
	return n, nil
}

func writeAPIError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.code(), apiResponse{Status: "error", ErrorType: e.typ, Error: e.err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		// Only a bug can get here (every value type marshals); answer with
		// a well-formed error rather than half a body.
		buf.Reset()
		code = http.StatusInternalServerError
		_ = json.NewEncoder(&buf).Encode(apiResponse{Status: "error", ErrorType: errInternal, Error: "encoding response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}
