package query

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// API serves the Prometheus HTTP API's instant-query endpoint over the
// engine, so curl, promtool and Grafana can read what the scaler sees.
type API struct {
	engine *Engine
	now    func() time.Time
}

// NewAPI returns the HTTP API; now is the clock for queries without a time
// (nil means time.Now).
func NewAPI(e *Engine, now func() time.Time) *API {
	if now == nil {
		now = time.Now
	}
	return &API{engine: e, now: now}
}

// Register mounts the API's endpoints on mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("/api/v1/query", a.query)
}

type apiResponse struct {
	Status    string `json:"status"`
	Data      any    `json:"data,omitempty"`
	ErrorType string `json:"errorType,omitempty"`
	Error     string `json:"error,omitempty"`
}

type queryData struct {
	ResultType string `json:"resultType"`
	Result     any    `json:"result"`
}

type vectorElem struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (a *API) query(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		writeAPIError(w, http.StatusMethodNotAllowed, "bad_data", "use GET or POST")
		return
	}
	if err := r.ParseForm(); err != nil {
		writeAPIError(w, http.StatusBadRequest, "bad_data", err.Error())
		return
	}
	ts := a.now()
	if s := r.Form.Get("time"); s != "" {
		t, err := parseTime(s)
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, "bad_data", `invalid parameter "time": `+err.Error())
			return
		}
		ts = t
	}
	opts := Options{}
	if s := r.Form.Get("lookback_delta"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			writeAPIError(w, http.StatusBadRequest, "bad_data", `invalid parameter "lookback_delta": want a positive duration`)
			return
		}
		opts.LookbackDelta = d
	}
	plan, err := a.engine.Query(r.Form.Get("query"), opts)
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, "bad_data", err.Error())
		return
	}
	res, err := plan.Eval(r.Context(), ts.UnixMilli())
	if err != nil {
		writeAPIError(w, http.StatusUnprocessableEntity, "execution", err.Error())
		return
	}
	sec := float64(ts.UnixMilli()) / 1000
	if res.Scalar {
		writeJSON(w, http.StatusOK, apiResponse{Status: "success", Data: queryData{ResultType: "scalar", Result: [2]any{sec, formatFloat(res.Value)}}})
		return
	}
	out := make([]vectorElem, 0, len(res.Vector))
	for _, s := range res.Vector {
		out = append(out, vectorElem{Metric: labelsMap(s.Labels), Value: [2]any{sec, formatFloat(s.F)}})
	}
	writeJSON(w, http.StatusOK, apiResponse{Status: "success", Data: queryData{ResultType: "vector", Result: out}})
}

func labelsMap(l labels.Labels) map[string]string {
	m := make(map[string]string, l.Len())
	l.Range(func(l labels.Label) { m[l.Name] = l.Value })
	return m
}

// parseTime accepts RFC 3339 or unix seconds with an optional fraction.
func parseTime(s string) (time.Time, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(math.Round(frac*1e9))), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, errors.New("want RFC 3339 or unix seconds")
}

// formatFloat prints a sample value as Prometheus does.
func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func writeAPIError(w http.ResponseWriter, code int, typ, msg string) {
	writeJSON(w, code, apiResponse{Status: "error", ErrorType: typ, Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
