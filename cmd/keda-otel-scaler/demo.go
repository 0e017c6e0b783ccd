package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/demo"
)

// runDemo is the demo subcommand: the real server in process, a simulated
// vLLM fleet pushing OTLP, and a KEDA/HPA control loop scaling it.
func runDemo(args []string, stdout, stderr io.Writer) int {
	var o demo.Options
	c := newSubcommand("demo", "", stderr)
	fs := c.fs
	fs.StringVar(&o.Profile, "profile", "spike", "load profile: "+strings.Join(demo.ProfileNames(), ", ")+" (`name`)")
	fs.DurationVar(&o.Duration, "duration", time.Minute, "wall-clock length of the run (`duration`)")
	fs.Float64Var(&o.Speed, "speed", 10, "simulated seconds per wall-clock second (`factor`)")
	fs.StringVar(&o.Query, "query", demo.DefaultQuery, "the scaling trigger's metricQuery (`PromQL`)")
	fs.StringVar(&o.Target, "target", "12", "the scaling trigger's targetValue, per replica with AverageValue (`number`)")
	fs.StringVar(&o.MetricType, "metric-type", demo.AverageValue, "the scaling trigger's metricType: AverageValue or Value (`type`)")
	fs.StringVar(&o.Out, "out", "demo-out", "directory for the timeline SVG and PNG (`path`)")
	fs.IntVar(&o.MaxReplicas, "max-replicas", 8, "maxReplicaCount (`count`)")
	fs.Float64Var(&o.Cooldown, "cooldown", 60, "cooldownPeriod in simulated seconds (`seconds`)")
	fs.Float64Var(&o.DownWindow, "scale-down-window", 60, "HPA scale-down stabilisation window in simulated seconds (`seconds`)")
	color := fs.Bool("color", isTerminal(stdout), "ANSI colour in the live view (`bool`)")
	if _, code, ok := c.parse(args, 0, ""); !ok {
		return code
	}
	o.Color = *color
	o.Stdout = stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if _, err := demo.Run(ctx, o); err != nil {
		c.errorf("%v", err)
		return 1
	}
	return 0
}

// isTerminal reports whether w is a character device (an interactive
// terminal), where colour is welcome.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
