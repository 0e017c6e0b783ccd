package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/prometheus/promql/parser"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/demo"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
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

// runExplain is the explain subcommand: how a trigger's metadata is read,
// what the query means, which series it matches and what KEDA gets now.
func runExplain(args []string, stdout, stderr io.Writer) int {
	md := metadataFlag{}
	fs := flag.NewFlagSet("keda-otel-scaler explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(md, "metadata", "trigger metadata entry, repeatable (`key=value`)")
	scalerAddr := fs.String("scaler", "127.0.0.1:4318", "KEDA external scaler gRPC address; empty skips the KEDA calls (`host:port`)")
	serverURL := fs.String("server", "http://127.0.0.1:8080", "HTTP base URL for the query API; empty skips the series listing (`url`)")
	name := fs.String("name", "explain", "ScaledObject name sent in ScaledObjectRef (`name`)")
	namespace := fs.String("namespace", "default", "ScaledObject namespace (`name`)")
	metricType := fs.String("metric-type", demo.AverageValue, "the trigger's metricType: AverageValue or Value (`type`)")
	replicas := fs.Int("replicas", 1, "current replicas, for the HPA arithmetic (`count`)")
	maxSeries := fs.Int("max-series", 20, "series listed per selector (`count`)")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of the whole command (`duration`)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		(&printer{w: stderr}).printf("keda-otel-scaler explain: unexpected arguments %q (use --metadata key=value)\n", fs.Args())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	e := &explainer{printer: &printer{w: stdout}, md: md, metricType: *metricType, replicas: max(*replicas, 1), maxSeries: *maxSeries}
	ok := e.metadata()
	localOK := e.query()
	if *scalerAddr != "" {
		// The server has the last word: it also accepts older query forms
		// (unquoted label values, KServe's wrapping) that it normalises
		// before parsing.
		ok = e.keda(ctx, *scalerAddr, *namespace, *name) && ok
	} else {
		ok = localOK && ok
	}
	if *serverURL != "" && e.expr != nil {
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
	md         map[string]string
	metricType string
	replicas   int
	maxSeries  int

	queryText  string
	activation float64
	expr       parser.Expr
	lookback   string
	value      float64
	target     float64
	haveValue  bool
}

// lookupKey mirrors the scaler's precedence (keda-contract.md §3): key,
// keyFromEnv, then each alias and aliasFromEnv; trimmed; empty is absent.
func lookupKey(md map[string]string, key string, aliases ...string) (val, from string, ok bool) {
	for _, k := range append([]string{key}, aliases...) {
		for _, kk := range []string{k, k + "FromEnv"} {
			if v := strings.TrimSpace(md[kk]); v != "" {
				return v, kk, true
			}
		}
	}
	return "", "", false
}

var knownKeys = map[string]bool{
	"metricQuery": true, "query": true, "targetValue": true, "threshold": true,
	"activationThreshold": true, "activationTargetValue": true, "operationOverTime": true,
	"window": true, "lookbackDelta": true, "clampMin": true, "clampMax": true,
	"ignoreNullValues": true, "valueIfEmpty": true, "evaluationDelay": true,
	"scalerAddress": true, "enableTLS": true, "unsafeSsl": true, "caCert": true,
	"tlsClientCert": true, "tlsClientKey": true,
}

func (e *explainer) metadata() bool {
	e.println("Trigger metadata")
	ok := true
	for _, k := range []struct {
		key   string
		alias string
	}{
		{"metricQuery", "query"},
		{"targetValue", "threshold"},
		{"activationThreshold", "activationTargetValue"},
		{"operationOverTime", ""},
		{"window", ""},
		{"lookbackDelta", ""},
		{"clampMin", ""},
		{"clampMax", ""},
		{"ignoreNullValues", ""},
		{"valueIfEmpty", ""},
	} {
		var aliases []string
		if k.alias != "" {
			aliases = append(aliases, k.alias)
		}
		v, from, found := lookupKey(e.md, k.key, aliases...)
		switch {
		case found:
			e.printf("  %-20s = %q (from %s)\n", k.key, v, from)
			if k.alias != "" {
				a, afrom, afound := lookupKey(e.md, k.alias)
				if afound && a != v && from != afrom {
					e.printf("  %-20s   %s=%q differs and is ignored: the key wins over its alias\n", "", afrom, a)
				}
			}
		case k.key == "metricQuery" || k.key == "targetValue":
			e.printf("  %-20s   missing (required)\n", k.key)
			ok = false
		}
		switch k.key {
		case "metricQuery":
			e.queryText = v
		case "activationThreshold":
			if found {
				f, err := parseNumber(v)
				if err != nil {
					e.printf("  %-20s   invalid: %v\n", "", err)
					ok = false
				}
				e.activation = f
			}
		case "lookbackDelta", "window":
			if found && e.lookback == "" {
				e.lookback = v
			}
		}
	}
	var ignored []string
	for k := range e.md {
		if !knownKeys[strings.TrimSuffix(k, "FromEnv")] {
			ignored = append(ignored, k)
		}
	}
	sort.Strings(ignored)
	if len(ignored) > 0 {
		e.printf("  ignored (unknown) keys: %s\n", strings.Join(ignored, ", "))
	}
	return ok
}

// parseNumber accepts Go float syntax and Kubernetes quantity suffixes.
func parseNumber(s string) (float64, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		return f, nil
	}
	for _, q := range []struct {
		suffix string
		mult   float64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"m", 1e-3}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}} {
		if num, ok := strings.CutSuffix(s, q.suffix); ok {
			if f, err := strconv.ParseFloat(num, 64); err == nil {
				return f * q.mult, nil
			}
		}
	}
	return 0, fmt.Errorf("%q is not a number (4, 0.5, 1e3) or a Kubernetes quantity (600m, 2k)", s)
}

func (e *explainer) query() bool {
	if e.queryText == "" {
		return false
	}
	e.println("\nQuery (parsed by this binary's engine)")
	eng := query.NewEngine(store.New(store.Config{Retention: time.Minute, Freshness: time.Second, MaxSeries: 1}, store.Settings{}))
	expr, err := eng.Parse(e.queryText)
	if err != nil {
		e.printf("  parse error: %v\n", err)
		e.printf("  (this binary's PromQL parser; the scaler also normalises older forms, see GetMetricSpec below)\n")
		return false
	}
	e.expr = expr
	e.printf("  normalised: %s\n", expr.String())
	if _, bare := expr.(*parser.VectorSelector); bare {
		e.printf("  note: a bare selector is summed by the scaler: sum(%s)\n", expr.String())
	}
	if agg, ok := expr.(*parser.AggregateExpr); ok && agg.Op == parser.AVG && e.metricType == demo.AverageValue {
		e.println("  warning: avg(...) under AverageValue under-scales: the HPA divides the value by the replica count again; use sum(...) or metricType Value")
	}
	plan, err := eng.Compile(expr, query.Options{})
	if err != nil {
		e.printf("  not supported by the evaluator: %v\n", err)
		return false
	}
	names, all := plan.MetricNames()
	if all {
		e.println("  reads: any metric (a selector without a fixed __name__); every push re-evaluates it")
	} else {
		e.printf("  reads: %s\n", strings.Join(names, ", "))
	}
	e.printf("  plan: %s\n", plan.String())
	return true
}

func (e *explainer) keda(ctx context.Context, addr, namespace, name string) bool {
	e.printf("\nKEDA external scaler API at %s\n", addr)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.printf("  dial: %v\n", err)
		return false
	}
	defer func() { _ = conn.Close() }()
	c := externalscaler.NewExternalScalerClient(conn)
	ref := &externalscaler.ScaledObjectRef{Name: name, Namespace: namespace, ScalerMetadata: e.md}
	spec, err := c.GetMetricSpec(ctx, ref)
	if err != nil {
		e.printf("  GetMetricSpec: %v\n", err)
		return false
	}
	metricName := ""
	for _, ms := range spec.GetMetricSpecs() {
		metricName = ms.GetMetricName()
		e.target = ms.GetTargetSizeFloat()
		if e.target <= 0 {
			e.target = float64(ms.GetTargetSize())
		}
		e.printf("  GetMetricSpec: metricName %q (the HPA sees s<trigger index>-%s), targetSizeFloat %g, targetSize %d\n",
			ms.GetMetricName(), ms.GetMetricName(), ms.GetTargetSizeFloat(), ms.GetTargetSize())
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
		e.printf("  GetMetrics:    metricValueFloat %g, metricValue %d\n", v.GetMetricValueFloat(), v.GetMetricValue())
	}
	act, err := c.IsActive(ctx, ref)
	if err != nil {
		e.printf("  IsActive:      %v\n", err)
		return false
	}
	e.printf("  IsActive:      %t (active means value > activationThreshold %g)\n", act.GetResult(), e.activation)
	if e.haveValue && act.GetResult() != (e.value > e.activation) {
		e.println("  note: IsActive disagrees with value > activationThreshold; the data moved between the calls, or the server reads activation differently")
	}
	return true
}

func (e *explainer) series(ctx context.Context, server string) {
	e.printf("\nSeries matched now (HTTP query API at %s", server)
	if e.lookback != "" {
		e.printf(", lookback_delta %s", e.lookback)
	} else {
		e.printf(", the API's default lookback; the trigger itself looks back over its window")
	}
	e.println(")")
	seen := map[string]bool{}
	parser.Inspect(e.expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok || seen[vs.String()] {
			return nil
		}
		seen[vs.String()] = true
		res, _, err := instantQuery(ctx, server, vs.String(), "", lookbackParam(e.lookback))
		if err != nil {
			e.printf("  %s: %v\n", vs, err)
			return nil
		}
		e.printf("  %s\n", vs)
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
		return nil
	})
	if res, _, err := instantQuery(ctx, server, e.expr.String(), "", lookbackParam(e.lookback)); err == nil {
		var buf strings.Builder
		printResult(&printer{w: &buf}, res)
		e.printf("  whole query: %s", indentTail(buf.String()))
	} else {
		e.printf("  whole query: %v\n", err)
	}
}

// lookbackParam turns a trigger duration ("2m", "30") into a Go duration
// string the query API accepts, or "" to use its default.
func lookbackParam(s string) string {
	if s == "" {
		return ""
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(f * float64(time.Second)).String()
	}
	if d, err := time.ParseDuration(s); err == nil {
		return d.String()
	}
	return s
}

func indentTail(s string) string {
	return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n               ") + "\n"
}

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
