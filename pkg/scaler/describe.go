package scaler

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// compileTrigger is the one path from a trigger's metadata to what the
// scaler evaluates: parseSpec validates every key, lower normalises the
// query, the engine compiles it with the trigger's lookback, and the
// estimated size is checked against cfg.MaxTriggerBytes. The scaler's
// cache miss (newTrigger) and Describe both call it, so `explain` shows
// exactly what GetMetrics evaluates (TestTriggerTable,
// TestExplainAgreesWithScaler in cmd/keda-otel-scaler).
//
// The trigger is returned even with an error, holding what was read; its
// plan is set whenever the query compiled. The error joins every problem,
// each matching ErrBadMetadata. It neither holds metric IDs in the store
// nor logs: newTrigger does both for a trigger it caches.
func compileTrigger(e *query.Engine, retention time.Duration, cfg Config, k triggerKey) (*trigger, lowering, error) {
	ns, name, md := k.ns, k.name, k.metadata()
	sp, err := parseSpec(ns, name, md, cfg.DefaultWindow, retention)
	t := &trigger{namespace: ns, name: name, key: k, metricName: metricName(ns, name), spec: sp}
	if err != nil && sp.query == "" {
		return t, lowering{}, err
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	lw, lerr := lower(e.Parse, sp.query, sp.op, sp.window)
	if lerr == nil {
		t.plan, lerr = e.Compile(lw.expr, query.Options{LookbackDelta: sp.lookback, MaxSamples: cfg.MaxSamples, MaxLabelBytes: cfg.MaxLabelBytes})
	}
	_, from, _, _ := lookup(md, "metricQuery", "query")
	if lerr != nil {
		errs = append(errs, &metadataError{namespace: ns, name: name, key: from, value: sp.query, problem: parseProblem(lerr)})
	}
	if len(errs) > 0 {
		return t, lw, errors.Join(errs...)
	}
	t.rewritten = lw.rewritten
	for _, w := range t.plan.Warnings() {
		t.warnings = append(t.warnings, warning{"Trigger query may answer differently from Prometheus", []any{"reason", w}})
	}
	names, all := t.plan.MetricNames()
	t.anyMetric = all
	t.cost = triggerCost(t, lw.expr, names)
	if t.cost > cfg.MaxTriggerBytes {
		return t, lw, &metadataError{namespace: ns, name: name, key: from, value: sp.query, problem: fmt.Sprintf(
			"compiles to about %d bytes, more than --max-trigger-bytes %d: use fewer selectors, shorter names and simpler regular expressions, or raise the flag",
			t.cost, cfg.MaxTriggerBytes)}
	}
	return t, lw, nil
}

// Description is what the scaler makes of one trigger's metadata: the
// settings it read and where from, the query exactly as it evaluates it,
// and how a result becomes the value KEDA gets. Describe returns it; the
// `explain` subcommand prints it.
type Description struct {
	// Namespace and Name are the ScaledObject's.
	Namespace, Name string
	// MetricName is the metric name GetMetricSpec answers (KEDA shows it
	// to the HPA as s<trigger index>-MetricName).
	MetricName string
	// Read lists the settings present in the metadata, in the order of
	// docs/interfaces.md, with the metadata key each value was read from.
	Read []Setting
	// KEDAKeys are the keys present that KEDA itself reads
	// (scalerAddress, enableTLS, ...); the scaler ignores them.
	KEDAKeys []string
	// Ignored are the other keys present that the scaler does not read
	// (unknown keys, and evaluationDelay, which is not implemented).
	Ignored []string

	// Query is metricQuery as given, trimmed.
	Query string
	// Lowered is the query exactly as the scaler evaluates it: the
	// compiled plan's text. Empty when the query does not compile.
	Lowered string
	// Rewrites say in words what lowering changed, in order; none when
	// the query is evaluated as written.
	Rewrites []string
	// MetricNames are the metric names the plan reads; AnyMetric is set
	// when a selector has no fixed name, so every push re-evaluates it.
	MetricNames []string
	AnyMetric   bool
	// ReadsBack is how far back from the evaluation time the plan reads
	// (its longest range or lookback, plus offset).
	ReadsBack time.Duration

	// Target is targetValue (GetMetricSpec's targetSizeFloat).
	Target float64
	// Activation is activationThreshold: IsActive is value > Activation.
	Activation float64
	// OperationOverTime is the operation applied (last_one when unset or
	// unknown).
	OperationOverTime string
	// Window is the range operationOverTime uses; LookbackDelta how far
	// back an instant selector looks for a sample.
	Window, LookbackDelta time.Duration
	// ClampMin, ClampMax and ValueIfEmpty are nil when not set.
	ClampMin, ClampMax, ValueIfEmpty *float64
	// IgnoreNullValues reads an empty result or NaN as 0 instead of an
	// error.
	IgnoreNullValues bool

	// Warnings are what the scaler logs when it compiles the trigger
	// (alias conflicts, an unknown operationOverTime, KServe v0.15's
	// signature, plan warnings).
	Warnings []string
}

// Setting is one trigger setting as read from the metadata.
type Setting struct {
	// Key is the setting's name (metricQuery, targetValue, ...).
	Key string
	// From is the metadata key the value came from: Key, its alias, or
	// either with the FromEnv suffix.
	From string
	// Value is the value, trimmed.
	Value string
}

// Describe validates md as the scaler does for a trigger of the
// ScaledObject ns/name and lowers and compiles its query through the
// scaler's own code (compileTrigger), with cfg's DefaultWindow,
// MaxSamples, MaxLabelBytes and MaxTriggerBytes (zero fields take
// DefaultConfig's) and a store keeping retention (zero: the store's
// default). Settings that differ from the server's give a different
// answer, as they would on the server.
//
// The error is the one GetMetricSpec would answer with InvalidArgument,
// every problem joined. The Description is filled as far as the metadata
// could be read, also with an error.
func Describe(ns, name string, md map[string]string, cfg Config, retention time.Duration) (Description, error) {
	cfg = cfg.withDefaults()
	d := Description{Namespace: ns, Name: name, MetricName: metricName(ns, name)}
	d.Read, d.KEDAKeys, d.Ignored = readKeys(md)
	var k triggerKey
	if _, ok := k.fill(maphash.MakeSeed(), ns, name, md); !ok {
		return d, limitErrors(ns, name, md)
	}
	// An empty store: compiling reads nothing from it but its retention.
	st := store.New(store.Config{Retention: retention}, store.Settings{})
	t, lw, err := compileTrigger(query.NewEngine(st), st.Retention(), cfg, k.clone())
	d.Query = t.query
	d.Target, d.Activation = t.target, t.activation
	d.OperationOverTime = t.op
	d.Window, d.LookbackDelta = t.window, t.lookback
	d.IgnoreNullValues = t.ignoreNull
	d.ClampMin = optional(t.hasMin, t.clampMin)
	d.ClampMax = optional(t.hasMax, t.clampMax)
	d.ValueIfEmpty = optional(t.hasIfEmpty, t.ifEmpty)
	for _, w := range t.warnings {
		d.Warnings = append(d.Warnings, w.String())
	}
	if t.plan != nil {
		d.Lowered = t.plan.String()
		d.Rewrites = lw.notes(t.op, t.window)
		names, all := t.plan.MetricNames()
		d.MetricNames, d.AnyMetric = slices.Clone(names), all
		d.ReadsBack = t.plan.Window()
	}
	return d, err
}

func optional(set bool, v float64) *float64 {
	if !set {
		return nil
	}
	return &v
}

// readKeys sorts md's keys into the settings the scaler reads (in the
// order of settingKeys), KEDA's own keys and the ignored rest.
func readKeys(md map[string]string) (read []Setting, keda, ignored []string) {
	for _, s := range settingKeys {
		if v, from, ok, _ := lookup(md, s.key, s.alias); ok {
			read = append(read, Setting{Key: s.key, From: from, Value: v})
		}
	}
	for k := range md {
		switch {
		case slotOf(k) >= 0:
		case kedaKeys[k]:
			keda = append(keda, k)
		default:
			ignored = append(ignored, k)
		}
	}
	slices.Sort(keda)
	slices.Sort(ignored)
	return read, keda, ignored
}

// Reduction says in words, step by step, how the plan's result becomes
// the value GetMetrics answers and IsActive compares (docs/keda-contract.md
// §5, trigger.reduce).
func (d Description) Reduction() []string {
	r := []string{"a scalar, or a vector of one element: its value; more than one element: FailedPrecondition (aggregate them, e.g. sum(...)); one native histogram: FailedPrecondition (reduce it, e.g. histogram_quantile(0.9, ...))"}
	switch {
	case d.ValueIfEmpty != nil:
		r = append(r, "no element: "+formatFloat(*d.ValueIfEmpty)+" (valueIfEmpty)")
	case d.IgnoreNullValues:
		r = append(r, "no element: 0 (ignoreNullValues true)")
	default:
		r = append(r, "no element: NotFound (ignoreNullValues false)")
	}
	if d.IgnoreNullValues {
		r = append(r, "NaN or ±Inf: 0 (ignoreNullValues true)")
	} else {
		r = append(r, "NaN or ±Inf: FailedPrecondition (ignoreNullValues false)")
	}
	if d.ClampMin != nil {
		r = append(r, "at least "+formatFloat(*d.ClampMin)+" (clampMin)")
	}
	if d.ClampMax != nil {
		r = append(r, "at most "+formatFloat(*d.ClampMax)+" (clampMax)")
	}
	return append(r,
		"a negative value becomes 0",
		fmt.Sprintf("GetMetrics answers v (metricValueFloat) and ceil(v) (metricValue); IsActive answers v > %s (activationThreshold)", formatFloat(d.Activation)))
}

// TargetSize is GetMetricSpec's integer targetSize for the target: KEDA
// before 2.17 reads only it (docs/keda-contract.md §1.1).
func (d Description) TargetSize() int64 { return ceilInt(max(d.Target, 0)) }

func formatFloat(v float64) string {
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return fmt.Sprint(v)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// String renders the warning as one line: the message, then its
// key/value pairs.
func (w warning) String() string {
	var sb strings.Builder
	sb.WriteString(w.msg)
	for i := 0; i+1 < len(w.args); i += 2 {
		sep := ", "
		if i == 0 {
			sep = ": "
		}
		if s, ok := w.args[i+1].(string); ok {
			fmt.Fprintf(&sb, "%s%v=%q", sep, w.args[i], s)
		} else {
			fmt.Fprintf(&sb, "%s%v=%v", sep, w.args[i], w.args[i+1])
		}
	}
	return sb.String()
}
