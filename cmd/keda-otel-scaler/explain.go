package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/prometheus/promql/parser"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/demo"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/scaler"
)

// metadataFlag collects repeated --metadata key=value flags.
type metadataFlag map[string]string

func (m metadataFlag) String() string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func (m metadataFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	m[strings.TrimSpace(k)] = v
	return nil
}

// runExplain is the explain subcommand: how the scaler reads a trigger's
// metadata and lowers its query (scaler.Describe, the scaler's own code),
// which series it matches and what KEDA gets now. It only formats.
func runExplain(args []string, stdout, stderr io.Writer) int {
	def := config.Default()
	md := metadataFlag{}
	c := newSubcommand("explain", "", stderr)
	fs := c.fs
	fs.Var(md, "metadata", "trigger metadata entry, repeatable (`key=value`)")
	scalerAddr := fs.String("scaler", "127.0.0.1:4318", "KEDA external scaler gRPC address; empty skips the KEDA calls (`host:port`)")
	serverURL := fs.String("server", "http://127.0.0.1:8080", "HTTP base URL for the query API; empty skips the series listing (`url`)")
	name := fs.String("name", "explain", "ScaledObject name sent in ScaledObjectRef (`name`)")
	namespace := fs.String("namespace", "default", "ScaledObject namespace (`name`)")
	metricType := fs.String("metric-type", demo.AverageValue, "the trigger's metricType: AverageValue or Value (`type`)")
	replicas := fs.Int("replicas", 1, "current replicas, for the HPA arithmetic (`count`)")
	maxSeries := fs.Int("max-series", 20, "series listed per selector (`count`)")
	window := fs.Duration("default-window", def.Scaler.DefaultWindow, "the server's --default-window, for reading the trigger (`duration`)")
	retention := fs.Duration("retention", def.Store.Retention, "the server's --retention, which bounds window and lookbackDelta (`duration`)")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of the whole command (`duration`)")
	if _, code, ok := c.parse(args, 0, " (use --metadata key=value)"); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	scfg := def.ScalerConfig()
	scfg.DefaultWindow = *window
	d, err := scaler.Describe(*namespace, *name, md, scfg, *retention)
	e := &explainer{printer: &printer{w: stdout}, d: d, metricType: *metricType, replicas: max(*replicas, 1), maxSeries: *maxSeries}
	e.metadata(err)
	e.trigger(*window, *retention, err != nil)
	ok := err == nil
	if *scalerAddr != "" {
		ok = e.keda(ctx, *scalerAddr, md, err) && ok
	}
	if *serverURL != "" && d.Lowered != "" {
		e.series(ctx, *serverURL)
	}
	e.hpa()
	if !ok || e.err != nil {
		return 1
	}
	return 0
}

type explainer struct {
	*printer
	d          scaler.Description
	metricType string
	replicas   int
	maxSeries  int

	value     float64
	target    float64
	haveValue bool
}

// metadata prints what the scaler read from each key, what it ignores,
// its warnings and its errors, one problem a line (the lines of the
// error GetMetricSpec would answer, in order).
func (e *explainer) metadata(err error) {
	e.printf("Trigger metadata (ScaledObject %s/%s)\n", e.d.Namespace, e.d.Name)
	for _, s := range e.d.Read {
		e.printf("  %-21s = %q (from %s)\n", s.Key, s.Value, s.From)
	}
	if len(e.d.KEDAKeys) > 0 {
		e.printf("  read by KEDA, not the scaler: %s\n", strings.Join(e.d.KEDAKeys, ", "))
	}
	if len(e.d.Ignored) > 0 {
		e.printf("  ignored (unknown to the scaler): %s\n", strings.Join(e.d.Ignored, ", "))
	}
	for _, w := range e.d.Warnings {
		e.printf("  warning: %s\n", w)
	}
	if err != nil {
		for _, l := range strings.Split(err.Error(), "\n") {
			e.printf("  error: %s\n", l)
		}
	}
}

// trigger prints the trigger as the scaler compiles it: the settings, the
// query exactly as evaluated and why it differs from metricQuery, what it
// reads, and how the result becomes KEDA's value.
func (e *explainer) trigger(window, retention time.Duration, refused bool) {
	d := e.d
	e.printf("\nTrigger as the scaler compiles it (this binary's scaler code, --default-window %s, --retention %s)\n", window, retention)
	if refused {
		e.println("  refused: GetMetricSpec, GetMetrics and IsActive answer InvalidArgument with the errors above; what could be read:")
	}
	e.printf("  metricName:        %s (the HPA sees s<trigger index>-%s)\n", d.MetricName, d.MetricName)
	e.printf("  target:            %s (GetMetricSpec targetSizeFloat %s, targetSize %d)\n", fmtFloat(d.Target), fmtFloat(d.Target), d.TargetSize())
	e.printf("  activation:        %s (IsActive is value > activationThreshold)\n", fmtFloat(d.Activation))
	e.printf("  operationOverTime: %s\n", d.OperationOverTime)
	e.printf("  window:            %s\n", d.Window)
	e.printf("  lookbackDelta:     %s\n", d.LookbackDelta)
	for _, o := range []struct {
		key string
		v   *float64
	}{{"clampMin", d.ClampMin}, {"clampMax", d.ClampMax}, {"valueIfEmpty", d.ValueIfEmpty}} {
		if o.v != nil {
			e.printf("  %-18s %s\n", o.key+":", fmtFloat(*o.v))
		}
	}
	e.printf("  ignoreNullValues:  %t\n", d.IgnoreNullValues)
	if d.Query == "" {
		return
	}
	e.printf("  metricQuery:       %s\n", d.Query)
	if d.Lowered == "" {
		e.println("  evaluated:         (none: the query does not compile, see the errors above)")
		return
	}
	e.printf("  evaluated:         %s\n", d.Lowered)
	for _, r := range d.Rewrites {
		e.printf("    because %s\n", r)
	}
	if d.AnyMetric {
		e.printf("  reads:             any metric (a selector without a fixed __name__; every push re-evaluates it), up to %s back\n", d.ReadsBack)
	} else {
		e.printf("  reads:             %s, up to %s back\n", strings.Join(d.MetricNames, ", "), d.ReadsBack)
	}
	e.println("  reduction to KEDA's value:")
	for _, r := range d.Reduction() {
		e.printf("    %s\n", r)
	}
	if e.metricType == demo.AverageValue && topAggregation(d.Lowered) == parser.AVG {
		e.println("  warning: avg(...) under AverageValue under-scales: the HPA divides the value by the replica count again; use sum(...) or metricType Value")
	}
}

// topAggregation returns the aggregation that decides the value: the
// root's, looking through sums without grouping of a one-element result
// (KServe's sum(avg(...))). Zero when there is none.
func topAggregation(q string) parser.ItemType {
	expr, err := parser.NewParser(parser.Options{EnableExperimentalFunctions: true}).ParseExpr(q)
	if err != nil {
		return 0
	}
	for {
		agg, ok := expr.(*parser.AggregateExpr)
		if !ok {
			return 0
		}
		inner, nested := agg.Expr.(*parser.AggregateExpr)
		if agg.Op != parser.SUM || len(agg.Grouping) > 0 || agg.Without || !nested || len(inner.Grouping) > 0 || inner.Without {
			return agg.Op
		}
		expr = inner
	}
}

// keda asks the server the questions KEDA asks and compares its answers
// with the local reading.
func (e *explainer) keda(ctx context.Context, addr string, md map[string]string, localErr error) bool {
	e.printf("\nKEDA external scaler API at %s\n", addr)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.printf("  dial: %v\n", err)
		return false
	}
	defer func() { _ = conn.Close() }()
	c := externalscaler.NewExternalScalerClient(conn)
	ref := &externalscaler.ScaledObjectRef{Name: e.d.Name, Namespace: e.d.Namespace, ScalerMetadata: md}
	spec, err := c.GetMetricSpec(ctx, ref)
	if err != nil {
		e.printf("  GetMetricSpec: %v\n", err)
		if localErr == nil {
			e.println("  note: the server refuses metadata this binary accepts: it runs another version or other --default-window/--retention")
		}
		return false
	}
	if localErr != nil {
		e.println("  note: the server accepts metadata this binary refuses: it runs another version or other --default-window/--retention")
	}
	metricName := ""
	for _, ms := range spec.GetMetricSpecs() {
		metricName = ms.GetMetricName()
		e.target = ms.GetTargetSizeFloat()
		if e.target <= 0 {
			e.target = float64(ms.GetTargetSize())
		}
		e.printf("  GetMetricSpec: metricName %q, targetSizeFloat %s, targetSize %d\n", ms.GetMetricName(), fmtFloat(ms.GetTargetSizeFloat()), ms.GetTargetSize())
	}
	mv, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref, MetricName: "s0-" + metricName})
	if err != nil {
		e.printf("  GetMetrics:    %v\n", err)
		return false
	}
	for _, v := range mv.GetMetricValues() {
		e.value = v.GetMetricValueFloat()
		if e.value <= 0 {
			e.value = float64(v.GetMetricValue())
		}
		e.haveValue = true
		e.printf("  GetMetrics:    metricValueFloat %s, metricValue %d\n", fmtFloat(v.GetMetricValueFloat()), v.GetMetricValue())
	}
	act, err := c.IsActive(ctx, ref)
	if err != nil {
		e.printf("  IsActive:      %v\n", err)
		return false
	}
	e.printf("  IsActive:      %t (active means value > activationThreshold %s)\n", act.GetResult(), fmtFloat(e.d.Activation))
	if e.haveValue && act.GetResult() != (e.value > e.d.Activation) {
		e.println("  note: IsActive disagrees with value > activationThreshold; the data moved between the calls, or the server reads activation differently")
	}
	return true
}

// series lists what each selector of the evaluated query matches now and
// the whole query's result, through the HTTP query API with the trigger's
// lookbackDelta.
func (e *explainer) series(ctx context.Context, server string) {
	lookback := e.d.LookbackDelta.String()
	e.printf("\nSeries matched now (HTTP query API at %s, lookback_delta %s)\n", server, lookback)
	if expr, err := parser.NewParser(parser.Options{EnableExperimentalFunctions: true}).ParseExpr(e.d.Lowered); err == nil {
		seen := map[string]bool{}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok || seen[vs.String()] {
				return nil
			}
			seen[vs.String()] = true
			e.listSelector(ctx, server, vs.String(), lookback)
			return nil
		})
	}
	if res, _, err := instantQuery(ctx, http.DefaultClient, server, e.d.Lowered, "", lookback); err == nil {
		var buf strings.Builder
		printResult(&printer{w: &buf}, res)
		e.printf("  whole query: %s", indentTail(buf.String()))
	} else {
		e.printf("  whole query: %v\n", err)
	}
}

func (e *explainer) listSelector(ctx context.Context, server, sel, lookback string) {
	res, _, err := instantQuery(ctx, http.DefaultClient, server, sel, "", lookback)
	if err != nil {
		e.printf("  %s: %v\n", sel, err)
		return
	}
	e.printf("  %s\n", sel)
	var buf strings.Builder
	printResult(&printer{w: &buf}, res)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for i, l := range lines {
		if i == e.maxSeries {
			e.printf("    … %d more\n", len(lines)-i)
			break
		}
		e.printf("    %s\n", l)
	}
}

func indentTail(s string) string {
	return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n               ") + "\n"
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func (e *explainer) hpa() {
	if !e.haveValue || e.target <= 0 {
		return
	}
	e.printf("\nHPA arithmetic (metricType %s, %d current replicas, tolerance 10%%)\n", e.metricType, e.replicas)
	n := demo.DesiredReplicas(e.metricType, e.value, e.target, e.replicas, 0.1)
	if e.metricType == demo.Value {
		e.printf("  ratio V/T = %g/%g = %.3f; desired = ceil(ratio × %d) = %d (before stabilisation and min/max)\n",
			e.value, e.target, e.value/e.target, e.replicas, n)
		return
	}
	e.printf("  ratio V/(T×R) = %g/(%g×%d) = %.3f; desired = ceil(V/T) = %d (before stabilisation and min/max)\n",
		e.value, e.target, e.replicas, e.value/(e.target*float64(e.replicas)), n)
	if n == e.replicas {
		e.println("  (inside the tolerance or already there: no change)")
	}
}
