// Package promapi serves the read side of Prometheus's HTTP API (instant
// and range queries, series, label names and values, build info) over the
// query engine and the store, so curl, promtool and Grafana can read what
// the scaler sees. It is built only on pkg/query's and pkg/store's public
// API; pkg/server mounts it on the HTTP listener.
//
// # Resource bounds
//
// Every request that reads the store holds one of Config.MaxConcurrency
// slots from before it evaluates until its answer is written; more wait
// for a slot until their timeout. An answer is assembled within
// Config.MaxSamples samples of 16 B (range-query points, vector elements,
// raw samples, listed series; see budget) and then encoded straight to the
// connection through a 32 KiB buffer (jsonWriter), never held as JSON. So
// the memory of the API is bounded by MaxConcurrency × (16 B × MaxSamples
// + the engine's plan), whatever the number of clients. A client that
// reads its answer slowly holds its slot for at most Config.Timeout: the
// write has that deadline.
package promapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Defaults of Config, used where a field is zero.
const (
	// DefaultMaxConcurrency keeps a dashboard from starving the KEDA path
	// on a small machine.
	DefaultMaxConcurrency = 4
	// DefaultMaxSamples is 80 MB of samples per answer (Prometheus's
	// --query.max-samples is 50M, for a server with far more memory).
	DefaultMaxSamples = 5_000_000
	// DefaultTimeout is Prometheus's --query.timeout default.
	DefaultTimeout = 2 * time.Minute
)

// SampleBytes is what one sample of Config.MaxSamples stands for: a
// range-query point is a 16-byte (time, value) pair. The bookkeeping of a
// series and the spare capacity of growing buffers are charged in these
// units too (see budget), so 16 B × MaxSamples bounds an answer's memory.
const SampleBytes = 16

// Config bounds the work and memory of the API.
type Config struct {
	// MaxConcurrency is how many requests that read the store are
	// evaluated and written at once; others wait for a slot until their
	// timeout. Zero means DefaultMaxConcurrency (4).
	MaxConcurrency int
	// MaxSamples caps the samples one answer holds: the points of a range
	// query, the elements of a vector, the raw samples of a range
	// selector, the series of a listing, plus per-series bookkeeping (see
	// SampleBytes). Past it the request fails with Prometheus's 422 "query
	// processing would load too many samples". Zero means
	// DefaultMaxSamples (5,000,000).
	MaxSamples int
	// Timeout bounds a request's wait for a slot plus its evaluation (a
	// smaller "timeout" parameter wins), and, separately, the writing of
	// its answer. Zero means DefaultTimeout (2m).
	Timeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxConcurrency <= 0 {
		c.MaxConcurrency = DefaultMaxConcurrency
	}
	if c.MaxSamples <= 0 {
		c.MaxSamples = DefaultMaxSamples
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// DefaultConfig returns the API's defaults (DefaultMaxConcurrency,
// DefaultMaxSamples, DefaultTimeout): New fills every zero field from
// them, and pkg/config's flags start from them.
func DefaultConfig() Config { return Config{}.withDefaults() }

// Settings carries what the server or a test provides.
type Settings struct {
	// Now is the clock for queries without a time; nil means time.Now.
	Now func() time.Time
}

// contextCheckEvery is how many series the listing endpoints walk between
// checks of the request's context.
const contextCheckEvery = 1024

// compatVersion is the Prometheus version whose query semantics the engine
// follows; buildinfo reports it so clients (Grafana) enable the matching
// features.
const compatVersion = "3.16.0"

// statusClientClosedRequest is the non-standard code Prometheus answers
// when the client went away.
const statusClientClosedRequest = 499

// API serves the read side of the Prometheus HTTP API over the engine and
// its store. It is safe for concurrent use.
type API struct {
	engine *query.Engine
	store  *store.Store
	cfg    Config
	now    func() time.Time
	// parser parses match[] selectors; it accepts every function since it
	// only ever parses selectors.
	parser parser.Parser
	// slots bounds the requests evaluated and written at once.
	slots chan struct{}
	// waiting counts requests waiting for a slot (tests observe it).
	waiting atomic.Int64
}

// New returns the HTTP API over e, which must read st.
func New(e *query.Engine, st *store.Store, cfg Config, set Settings) *API {
	cfg = cfg.withDefaults()
	now := set.Now
	if now == nil {
		now = time.Now
	}
	return &API{
		engine: e,
		store:  st,
		cfg:    cfg,
		now:    now,
		parser: parser.NewParser(parser.Options{}),
		slots:  make(chan struct{}, cfg.MaxConcurrency),
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

// errTooManySamples is Prometheus's message for a query over its sample
// limit.
var errTooManySamples = errors.New("query processing would load too many samples into memory in query execution")

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

// result is what an endpoint returns: a writer of the "data" value and
// warnings, or an error. release, when set, frees what the request holds
// (its slot); it runs after the answer is written.
type result struct {
	data     func(*jsonWriter)
	warnings []string
	err      *apiError
	release  func()
}

func errResult(err *apiError) result { return result{err: err} }

func (a *API) handle(fn func(*http.Request) result, methods ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !slices.Contains(methods, r.Method) {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			writeError(w, http.StatusMethodNotAllowed, errBadData, "method "+r.Method+" not allowed, use "+strings.Join(methods, " or "))
			return
		}
		if err := r.ParseForm(); err != nil {
			writeAPIError(w, badData(fmt.Errorf("error parsing form values: %w", err)))
			return
		}
		res := fn(r)
		if res.release != nil {
			defer res.release()
		}
		if res.err != nil {
			writeAPIError(w, res.err)
			return
		}
		a.writeSuccess(w, res)
	}
}

// writeSuccess streams {"status":"success","data":…,"warnings":[…]}. The
// write has a deadline of Config.Timeout, so a client that stops reading
// gives its slot back; where the ResponseWriter cannot take a deadline
// (tests' recorders), writing cannot block anyway. net/http clears the
// deadline once the response is finished, so a keep-alive connection does
// not carry it into its next request.
func (a *API) writeSuccess(w http.ResponseWriter, res result) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(a.cfg.Timeout))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	j := newJSONWriter(w)
	j.raw(`{"status":"success","data":`)
	res.data(j)
	if len(res.warnings) > 0 {
		j.raw(`,"warnings":`)
		j.stringList(res.warnings)
	}
	j.raw("}\n")
	j.flush()
}

func writeAPIError(w http.ResponseWriter, e *apiError) {
	writeError(w, e.code(), e.typ, e.err.Error())
}

func writeError(w http.ResponseWriter, code int, typ, msg string) {
	b := make([]byte, 0, 64+len(msg))
	b = append(b, `{"status":"error","errorType":`...)
	b = appendString(b, typ)
	b = append(b, `,"error":`...)
	b = appendString(b, msg)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// acquire takes a slot, or fails when ctx ends first. The returned func
// gives the slot back.
func (a *API) acquire(ctx context.Context) (func(), *apiError) {
	select {
	case a.slots <- struct{}{}:
		return a.release, nil
	default:
	}
	a.waiting.Add(1)
	defer a.waiting.Add(-1)
	select {
	case a.slots <- struct{}{}:
		return a.release, nil
	case <-ctx.Done():
		return nil, execError(ctx.Err())
	}
}

func (a *API) release() { <-a.slots }

// budget counts the samples an answer holds against Config.MaxSamples.
type budget struct{ used, max int }

func (a *API) newBudget() *budget { return &budget{max: a.cfg.MaxSamples} }

// charge adds n samples, or fails with Prometheus's 422 past the limit.
func (b *budget) charge(n int) *apiError {
	b.used += n
	if b.used > b.max {
		return execError(errTooManySamples)
	}
	return nil
}

// Error makes an *apiError an error, so it can pass through callbacks.
func (e *apiError) Error() string { return e.err.Error() }
