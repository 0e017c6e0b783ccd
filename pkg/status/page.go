package status

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/scaler"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// The page is one server-rendered HTML document with its CSS inline and
// its sparklines as inline SVG: no script, no external asset (it works
// offline and in air-gapped clusters), and a Content-Security-Policy that
// forbids loading anything. html/template escapes everything a client sent
// (ScaledObject names, metadata, queries, label values).

//go:embed page.html.tmpl
var pageSource string

var pageTemplate = template.Must(template.New("status").Parse(pageSource))

// pageCSP allows the inline stylesheet and nothing else.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type pageData struct {
	Now       time.Time
	Build     BuildInfo
	Uptime    string
	Triggers  []triggerRow
	Total     int
	Truncated bool
	Limit     int
	Counts    map[string]int // triggers by state
	Receiver  receiverView
	Store     storeView
	Flags     []Flag
}

type triggerRow struct {
	Trigger
	State, StateText string
	Value, ValueAgo  string
	ErrorAgo         string
	PushAgo          string
	Spark            sparkline
	SeriesText       string
	SeriesTop        []shortSample
	ErrorShort       string
	Selectors        []SelectorSeries
	SeriesSkipped    string
	Target, Activ    string
	Created          string
}

type sparkline struct {
	Points  string  // polyline points
	Dots    []point // failed evaluations
	Last    *point
	Thresh  float64 // y of the activation threshold, or -1
	Summary string  // min … max, for the title
	Empty   bool
}

type point struct{ X, Y float64 }

type receiverView struct {
	Accepted   uint64
	PerSecond  string
	Rejected   []reasonCount
	Overloaded uint64
	Examples   []receiver.RejectionExample
}

type reasonCount struct {
	Reason string
	Points uint64
}

type storeView struct {
	store.Status
	SeriesPct  float64
	Memory     string
	TopMetrics []metricView
	Retention  string
	Freshness  string
	SeriesTTL  string
}

type metricView struct {
	store.MetricSeries
	Pct float64
}

// page serves GET /status and GET /.
func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	if !readOnly(w, r) {
		http.Error(w, "method "+r.Method+" not allowed: the status page is read-only", http.StatusMethodNotAllowed)
		return
	}
	p, err := parseParams(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := h.acquire(r.Context()); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer h.release()
	d := h.pageData(r, p)
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		http.Error(w, "render status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", pageCSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

func (h *Handler) pageData(r *http.Request, p params) pageData {
	now := h.src.Now()
	td := h.collect(r.Context(), p)
	d := pageData{
		Now: now, Build: h.buildInfo(), Uptime: ago(now, h.started), Total: td.Total,
		Truncated: td.Truncated, Limit: p.limit, Counts: map[string]int{}, Flags: h.src.Flags,
	}
	for _, t := range td.Triggers {
		row := makeRow(now, t)
		d.Counts[row.State]++
		d.Triggers = append(d.Triggers, row)
	}
	rs := h.src.Receiver.Status()
	d.Receiver = receiverView{Accepted: rs.Accepted, Overloaded: rs.Overloaded, Examples: rs.Examples}
	if ps, span := h.rate.perSecond(now, rs.Accepted); span > 0 {
		d.Receiver.PerSecond = fmt.Sprintf("%.1f/s over the last %s", ps, span.Round(time.Second))
	} else {
		d.Receiver.PerSecond = "not measured yet"
	}
	for reason, n := range rs.Rejected {
		d.Receiver.Rejected = append(d.Receiver.Rejected, reasonCount{reason, n})
	}
	slices.SortFunc(d.Receiver.Rejected, func(a, b reasonCount) int {
		if a.Points != b.Points {
			return int(b.Points - a.Points)
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	ss := h.src.Store.Status()
	d.Store = storeView{
		Status: ss, SeriesPct: pct(ss.Series, ss.MaxSeries), Memory: bytesText(ss.MemoryBytes),
		Retention: ss.Retention.String(), Freshness: ss.Freshness.String(), SeriesTTL: ss.SeriesTTL.String(),
	}
	for _, m := range ss.TopMetrics {
		d.Store.TopMetrics = append(d.Store.TopMetrics, metricView{m, pct(m.Series, ss.MaxSeriesPerMetric)})
	}
	return d
}

func makeRow(now time.Time, t Trigger) triggerRow {
	row := triggerRow{Trigger: t, Target: num(t.Target), Activ: num(t.Activation), Created: ago(now, t.Created)}
	row.State, row.StateText = stateOf(t)
	if t.Last != nil {
		row.Value, row.ValueAgo = num(t.Last.Value), ago(now, t.Last.Time)
	}
	if t.LastError != nil {
		row.ErrorAgo = ago(now, t.LastError.Time)
		row.ErrorShort = oneLine(t.LastError.Message, 120)
	}
	if t.LastPush != nil {
		row.PushAgo = ago(now, *t.LastPush)
	}
	row.Spark = makeSparkline(now, t.History, t.Activation)
	if t.Series != nil {
		row.SeriesSkipped = t.Series.Skipped
		row.Selectors = t.Series.Selectors
		n, atLeast := 0, false
		var top []SeriesSample
		for _, s := range t.Series.Selectors {
			n += s.Count
			atLeast = atLeast || s.AtLeast
			if len(s.Top) > len(top) {
				top = s.Top
			}
		}
		for _, s := range top[:min(len(top), 3)] {
			row.SeriesTop = append(row.SeriesTop, shortSample{Short: shortLabels(s.Labels), Value: num(float64(s.Value))})
		}
		switch {
		case t.Series.Skipped != "":
			row.SeriesText = "not evaluated"
		case atLeast:
			row.SeriesText = "≥ " + strconv.Itoa(n)
		default:
			row.SeriesText = strconv.Itoa(n)
		}
	}
	return row
}

// shortSample is a top series as the table cell shows it.
type shortSample struct {
	Short, Value string
}

// shortLabels drops the metric name and job from a label set's text, the
// same for every series of a selector, and clips it: the details show the
// whole set.
func shortLabels(s string) string {
	s = strings.TrimPrefix(s, "{")
	s = strings.TrimSuffix(s, "}")
	var keep []string
	for _, p := range strings.Split(s, ", ") {
		if strings.HasPrefix(p, "__name__=") || strings.HasPrefix(p, "job=") {
			continue
		}
		keep = append(keep, p)
	}
	return oneLine("{"+strings.Join(keep, ", ")+"}", 60)
}

// stateOf is a trigger's state for the table: invalid (did not compile),
// error or warming (the newest answer was an error), idle (never
// evaluated), active or inactive (the last value against the activation
// threshold); text is the state as shown.
func stateOf(t Trigger) (state, text string) {
	switch {
	case !t.Compiled:
		return "invalid", "invalid"
	case t.LastError != nil && (t.Last == nil || t.LastError.Time.After(t.Last.Time)):
		if t.LastError.WarmingUp {
			return "warming", "warming up"
		}
		return "error", "error"
	case t.Last == nil:
		return "idle", "not evaluated"
	case t.Last.Active:
		return "active", "active"
	}
	return "inactive", "inactive"
}

// Sparkline geometry: the history's window maps to sparkW, values to
// sparkH with a margin.
const (
	sparkW   = 120.0
	sparkH   = 28.0
	sparkPad = 3.0
)

func makeSparkline(now time.Time, hist []scaler.HistoryPoint, activation float64) sparkline {
	sp := sparkline{Thresh: -1}
	window := 10 * time.Minute
	start := now.Add(-window)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range hist {
		if !p.Failed {
			lo, hi = min(lo, p.Value), max(hi, p.Value)
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0, 1
	}
	if activation >= lo && activation <= hi*1.5 {
		hi = max(hi, activation)
	}
	if hi == lo {
		lo, hi = lo-1, hi+1
	}
	y := func(v float64) float64 {
		return round1(sparkH - sparkPad - (v-lo)/(hi-lo)*(sparkH-2*sparkPad))
	}
	x := func(t time.Time) float64 {
		return round1(max(0, min(sparkW, float64(t.Sub(start))/float64(window)*sparkW)))
	}
	var pts []string
	for _, p := range hist {
		if p.Failed {
			sp.Dots = append(sp.Dots, point{x(p.Time), sparkH - sparkPad})
			continue
		}
		pt := point{x(p.Time), y(p.Value)}
		pts = append(pts, strconv.FormatFloat(pt.X, 'f', -1, 64)+","+strconv.FormatFloat(pt.Y, 'f', -1, 64))
		sp.Last = &pt
	}
	sp.Points = strings.Join(pts, " ")
	sp.Empty = len(hist) == 0
	if activation >= lo && activation <= hi {
		sp.Thresh = y(activation)
	}
	if !math.IsInf(lo, 0) && len(pts) > 0 {
		sp.Summary = "last 10 minutes: " + num(lo) + " to " + num(hi)
	}
	return sp
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

func num(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', 4, 64)
}

func pct(n, of int) float64 {
	if of <= 0 {
		return 0
	}
	return math.Round(float64(n)/float64(of)*1000) / 10
}

func bytesText(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return strconv.FormatInt(b, 10) + " B"
}

// ago renders how long before now t was, coarsely.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case t.IsZero():
		return ""
	case d < 0:
		return "just now"
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + " ms ago"
	case d < 2*time.Minute:
		return strconv.Itoa(int(d.Seconds())) + " s ago"
	case d < 2*time.Hour:
		return strconv.Itoa(int(d.Minutes())) + " min ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + " h ago"
	}
	return strconv.Itoa(int(d.Hours()/24)) + " d ago"
}
