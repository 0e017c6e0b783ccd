package demo

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server"
)

// view prints the live terminal view: plain lines, optional ANSI colour.
type view struct {
	w       io.Writer
	color   bool
	printed int   // events already shown
	err     error // the first write error; later writes are skipped
}

// printf writes to the view's writer; after a failed write (a closed pipe)
// the view goes quiet instead of failing the run.
func (v *view) printf(format string, args ...any) {
	if v.err == nil {
		_, v.err = fmt.Fprintf(v.w, format, args...)
	}
}

func newView(w io.Writer, color bool) *view { return &view{w: w, color: color} }

const (
	ansiBold  = "\x1b[1m"
	ansiDim   = "\x1b[2m"
	ansiCyan  = "\x1b[36m"
	ansiGreen = "\x1b[32m"
	ansiReset = "\x1b[0m"
)

func (v *view) paint(code, s string) string {
	if !v.color {
		return s
	}
	return code + s + ansiReset
}

func (v *view) header(o Options, a server.Addrs, so ScaledObject) {
	v.printf("%s\n", v.paint(ansiBold, fmt.Sprintf("keda-otel-scaler demo: profile %s, %s simulated in %s (speed %g×)",
		o.Profile, clock(o.Duration.Seconds()*o.Speed), o.Duration, o.Speed)))
	v.printf("server   OTLP/gRPC %s   KEDA %s   HTTP http://%s\n", a.OTLPGRPC, a.Scaler, a.HTTP)
	v.printf("         try: keda-otel-scaler query 'sum by (pod) (vllm:num_requests_running)' --server http://%s\n", a.HTTP)
	v.printf("ScaledObject %s/%s: replicas %d..%d, pollingInterval %gs, cooldownPeriod %gs; HPA sync %gs, tolerance 10%%, scale-down window %gs\n",
		so.Namespace, so.Name, so.MinReplicas, so.MaxReplicas, so.PollingInterval, so.CooldownPeriod, hpaSyncPeriod, o.DownWindow)
	for i, t := range so.Triggers {
		kind := "external"
		if t.Push {
			kind = "external-push"
		}
		act := t.Metadata["activationThreshold"]
		if act == "" {
			act = "0"
		}
		v.printf("  trigger %d %-13s %-12s %s  target %s, activation %s\n", i, kind, t.MetricType, t.Metadata["metricQuery"], t.Metadata["targetValue"], act)
	}
	v.printf("%s\n", v.paint(ansiDim, fmt.Sprintf("times are simulated m:ss; %g simulated seconds pass per wall second; samples carry wall-clock timestamps", o.Speed)))
	v.printf("%s\n", v.paint(ansiBold, "  time  load/s  queue  run   kv%  ttft p90  metric  replicas     event"))
}

func (v *view) line(s Sample, lastPush string, events []Event) {
	ev := ""
	if v.printed < len(events) {
		var parts []string
		for _, e := range events[v.printed:] {
			parts = append(parts, fmt.Sprintf("%s %d→%d", e.Source, e.From, e.To))
		}
		v.printed = len(events)
		ev = v.paint(ansiCyan, strings.Join(parts, ", "))
	} else if lastPush != "" {
		ev = v.paint(ansiDim, "last "+lastPush)
	}
	repl := fmt.Sprintf("%d/%d", s.Desired, s.Ready)
	if s.Starting > 0 {
		repl += fmt.Sprintf("+%d", s.Starting)
	}
	v.printf("%6s  %6.1f  %5d  %3d  %4s  %8s  %6s  %-11s  %s\n",
		clock(s.T), s.Load, s.Queue(), s.Running, pct(s.KV), secs(s.TTFTp90), fmtNum(s.Metric), v.paint(ansiGreen, repl), ev)
}

func pct(f float64) string {
	if math.IsNaN(f) {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*f)
}

func secs(f float64) string {
	if math.IsNaN(f) {
		return "-"
	}
	return fmt.Sprintf("%.2fs", f)
}

// PhaseStats summarises one phase of the profile.
type PhaseStats struct {
	Name                 string
	From, To             float64
	MeanLoad             float64
	MaxQueue             int
	TTFTp90              float64
	MinReady, MaxReady   int
	MaxDesired, EndReady int
}

// Phases summarises the run per profile phase.
func (r *Result) Phases() []PhaseStats {
	var out []PhaseStats
	for _, ph := range r.Profile.Phases {
		st := PhaseStats{Name: ph.Name, From: ph.Start * r.SimEnd, To: min(ph.End, 1) * r.SimEnd, MinReady: math.MaxInt, TTFTp90: math.NaN()}
		var first, last *Sample
		n := 0
		for i := range r.Samples {
			s := &r.Samples[i]
			if s.T < st.From || s.T >= st.To {
				if s.T < st.From {
					first = s // the last sample before the phase
				}
				continue
			}
			if first == nil {
				first = s
			}
			last = s
			n++
			st.MeanLoad += s.Load
			st.MaxQueue = max(st.MaxQueue, s.Queue())
			st.MinReady = min(st.MinReady, s.Ready)
			st.MaxReady = max(st.MaxReady, s.Ready)
			st.MaxDesired = max(st.MaxDesired, s.Desired)
			st.EndReady = s.Ready
		}
		if n == 0 {
			continue
		}
		st.MeanLoad /= float64(n)
		if first != nil && last != nil {
			st.TTFTp90 = last.ttft.Sub(first.ttft).Quantile(0.9)
		}
		out = append(out, st)
	}
	return out
}

func (v *view) summary(r *Result) {
	v.printf("\n%s\n", v.paint(ansiBold, "Summary (simulated time)"))
	v.printf("  %-10s %5s %5s  %6s  %9s  %8s  %11s  %11s\n", "phase", "from", "to", "load/s", "max queue", "ttft p90", "ready pods", "max desired")
	for _, p := range r.Phases() {
		v.printf("  %-10s %5s %5s  %6.1f  %9d  %8s  %11s  %11d\n", p.Name, clock(p.From), clock(p.To), p.MeanLoad, p.MaxQueue,
			secs(p.TTFTp90), fmt.Sprintf("%d..%d", p.MinReady, p.MaxReady), p.MaxDesired)
	}
	v.printf("%s\n", v.paint(ansiBold, "Scaling events"))
	for _, e := range r.Events {
		v.printf("  %s\n", e)
	}
	v.printf("Requests: %d arrived, %.0f finished, %.0f aborted, %d rejected; longest wait at the gateway for a ready pod %s\n",
		r.Arrived, r.Finished, r.Aborted, r.Rejected, secs(r.MaxGatewayWait))
	v.printf("OTLP: %s\n", r.Exports)
	v.printf("KEDA: %d true received on StreamIsActive, %d RPC errors\n", r.Pushes, r.RPCErrors)
	v.printf("Timeline: %s\n          %s\n", r.SVGPath, r.PNGPath)
}
