// Package status serves the scaler's live view of its triggers (issue #18,
// docs/operations.md "Trigger status"): GET /api/v1/triggers, a read-only
// JSON list in Prometheus's envelope, and GET /status (also GET /), a
// server-rendered HTML page built from the same data plus the receiver's
// and the store's view, build info and flags. Nothing here changes state:
// every route answers GET and HEAD only.
//
// The figures come from the scaler's per-trigger stats (kept with atomics
// on the hot paths, pkg/scaler/stats.go), the receiver's counters and
// rejection examples, and the store. The series a trigger's query selects
// are computed here, per request: each selector of the lowered query is
// evaluated against the store within a sample budget and a deadline, and
// requests are limited in number, so the endpoint cannot starve KEDA's
// path.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/scaler"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Bounds of one status request.
const (
	// maxConcurrent status requests are served at once; more wait up to
	// slotWait, then get 503.
	maxConcurrent = 2
	slotWait      = 5 * time.Second
	// DefaultLimit and MaxLimit bound the triggers one answer lists.
	DefaultLimit = 200
	MaxLimit     = 2000
	// seriesDeadline bounds the time one request spends evaluating
	// selectors; seriesBudget the series it may touch in all, and
	// selectorBudget one selector.
	seriesDeadline = 2 * time.Second
	seriesBudget   = 1_000_000
	selectorBudget = 50_000
	// maxSelectors per trigger are evaluated; topSeries contributors are
	// listed per selector.
	maxSelectors = 8
	topSeries    = 10
	// rateSamples observations, rateEvery apart, give the receiver's
	// points per second over the last minute.
	rateSamples = 13
	rateEvery   = 5 * time.Second
)

// Sources are what the status endpoints read. Every field but Now,
// Version and Flags is required.
type Sources struct {
	Scaler   *scaler.Scaler
	Receiver *receiver.Receiver
	Store    *store.Store
	Engine   *query.Engine
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Version is the build's version string.
	Version string
	// Flags are the server's flags and their values, in order; values of
	// flags that may hold a secret are redacted by the caller or here
	// (RedactFlag).
	Flags []Flag
}

// Flag is one command-line flag and its value.
type Flag struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Handler serves the status routes.
type Handler struct {
	src     Sources
	started time.Time
	slots   chan struct{}
	rate    rateSampler
}

// New returns the handler. Call Run to sample the receiver's rate.
func New(src Sources) *Handler {
	if src.Now == nil {
		src.Now = time.Now
	}
	flags := make([]Flag, len(src.Flags))
	for i, f := range src.Flags {
		flags[i] = Flag{Name: f.Name, Value: RedactFlag(f.Name, f.Value)}
	}
	src.Flags = flags
	return &Handler{src: src, started: src.Now(), slots: make(chan struct{}, maxConcurrent)}
}

// RedactFlag returns what is shown for a flag's value: "<redacted>" when
// its name says it may hold a secret (scaler.SecretKey), unless it names
// a file or directory (a path is not the secret).
func RedactFlag(name, value string) string {
	if value == "" || strings.HasSuffix(name, "-file") || strings.HasSuffix(name, "-dir") || !scaler.SecretKey(name) {
		return value
	}
	return scaler.Redacted
}

// Register mounts GET /api/v1/triggers, GET /status and GET / (exactly).
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("/api/v1/triggers", h.triggers)
	mux.HandleFunc("/status", h.page)
	mux.HandleFunc("/{$}", h.page)
}

// Run samples the receiver's accepted-point counter every rateEvery until
// ctx ends, for the points-per-second figure.
func (h *Handler) Run(ctx context.Context) {
	h.rate.observe(h.src.Now(), h.src.Receiver.Status().Accepted)
	t := time.NewTicker(rateEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.rate.observe(h.src.Now(), h.src.Receiver.Status().Accepted)
		}
	}
}

// rateSampler is a ring of (time, accepted points) observations.
type rateSampler struct {
	mu   sync.Mutex
	at   [rateSamples]time.Time
	val  [rateSamples]uint64
	next int
	n    int
}

func (r *rateSampler) observe(t time.Time, v uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.at[r.next], r.val[r.next] = t, v
	r.next = (r.next + 1) % rateSamples
	r.n = min(r.n+1, rateSamples)
}

// perSecond returns the rate from the oldest observation to (now, v), and
// the span it covers; zero span when there is none.
func (r *rateSampler) perSecond(now time.Time, v uint64) (float64, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return 0, 0
	}
	oldest := (r.next - r.n + rateSamples) % rateSamples
	span := now.Sub(r.at[oldest])
	if span <= 0 || v < r.val[oldest] {
		return 0, 0
	}
	return float64(v-r.val[oldest]) / span.Seconds(), span
}

// errBusy is answered when maxConcurrent requests are already served.
var errBusy = errors.New("too many status requests in flight; retry shortly")

// acquire takes a request slot, waiting up to slotWait.
func (h *Handler) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(slotWait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errBusy
	}
}

func (h *Handler) release() { <-h.slots }

// TriggersData is the data of GET /api/v1/triggers.
type TriggersData struct {
	Triggers []Trigger `json:"triggers"`
	// Total is the number of triggers that matched the filters; Truncated
	// is set when the answer lists fewer (limit).
	Total     int  `json:"total"`
	Truncated bool `json:"truncated,omitempty"`
}

// Trigger is one trigger of the answer.
type Trigger struct {
	scaler.TriggerStatus
	Window        string      `json:"window"`
	LookbackDelta string      `json:"lookbackDelta"`
	Series        *SeriesInfo `json:"series,omitempty"`
}

// params are the query parameters of both routes.
type params struct {
	namespace, name string
	limit           int
	series          bool
}

func parseParams(r *http.Request) (params, error) {
	q := r.URL.Query()
	p := params{namespace: q.Get("namespace"), name: q.Get("name"), limit: DefaultLimit, series: true}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			return p, fmt.Errorf("invalid parameter \"limit\": %q: want 1 to %d", v, MaxLimit)
		}
		p.limit = n
	}
	if v := q.Get("series"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return p, fmt.Errorf("invalid parameter \"series\": %q: want true or false", v)
		}
		p.series = b
	}
	return p, nil
}

// collect lists the triggers matching p and, when asked, their series.
func (h *Handler) collect(ctx context.Context, p params) TriggersData {
	all := h.src.Scaler.Triggers()
	var d TriggersData
	for _, ts := range all {
		if p.namespace != "" && ts.Namespace != p.namespace || p.name != "" && ts.Name != p.name {
			continue
		}
		d.Total++
		if len(d.Triggers) >= p.limit {
			d.Truncated = true
			continue
		}
		d.Triggers = append(d.Triggers, Trigger{TriggerStatus: ts, Window: fmtDuration(ts.Window), LookbackDelta: fmtDuration(ts.LookbackDelta)})
	}
	if p.series {
		sctx, cancel := context.WithTimeout(ctx, seriesDeadline)
		defer cancel()
		b := budget{left: seriesBudget}
		now := h.src.Now().UnixMilli()
		for i := range d.Triggers {
			t := &d.Triggers[i]
			if !t.Compiled {
				continue
			}
			t.Series = selectSeries(sctx, h.src.Engine, t.Evaluated, t.TriggerStatus.LookbackDelta, now, &b)
		}
	}
	if d.Triggers == nil {
		d.Triggers = []Trigger{}
	}
	return d
}

func fmtDuration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// envelope is Prometheus's API answer.
type envelope struct {
	Status    string `json:"status"`
	Data      any    `json:"data,omitempty"`
	ErrorType string `json:"errorType,omitempty"`
	Error     string `json:"error,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, typ string, err error) {
	writeJSON(w, code, envelope{Status: "error", ErrorType: typ, Error: err.Error()})
}

// readOnly answers 405 for anything but GET and HEAD.
func readOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	return false
}

// triggers serves GET /api/v1/triggers.
func (h *Handler) triggers(w http.ResponseWriter, r *http.Request) {
	if !readOnly(w, r) {
		writeError(w, http.StatusMethodNotAllowed, "bad_data", fmt.Errorf("method %s not allowed, use GET", r.Method))
		return
	}
	p, err := parseParams(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_data", err)
		return
	}
	if err := h.acquire(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", err)
		return
	}
	defer h.release()
	writeJSON(w, http.StatusOK, envelope{Status: "success", Data: h.collect(r.Context(), p)})
}

// BuildInfo describes the running binary.
type BuildInfo struct {
	Version   string    `json:"version"`
	Revision  string    `json:"revision,omitempty"`
	GoVersion string    `json:"goVersion"`
	Started   time.Time `json:"started"`
}

func (h *Handler) buildInfo() BuildInfo {
	bi := BuildInfo{Version: h.src.Version, GoVersion: runtime.Version(), Started: h.started}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				bi.Revision = s.Value
			}
		}
	}
	return bi
}
