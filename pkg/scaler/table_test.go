package scaler

import (
	"bytes"
	"context"
	"encoding/json"
	"hash/maphash"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// triggerTable is testdata/triggers.json, the scaler's trigger-metadata
// table (its "doc" says what an omitted field means). cmd/keda-otel-scaler's
// TestExplainAgreesWithScaler runs the same file through `explain`.
type triggerTable struct {
	Doc           string
	DefaultWindow string
	Retention     string
	Cases         []triggerCase
}

type triggerCase struct {
	Name                  string
	Metadata              map[string]string
	Lowered               string
	Target, Activation    float64
	OperationOverTime     string
	Window, LookbackDelta string
	ClampMin, ClampMax    *float64
	ValueIfEmpty          *float64
	IgnoreNullValues      *bool
	Warnings, Errors      []string
}

func loadTriggerTable(t *testing.T) triggerTable {
	t.Helper()
	b, err := os.ReadFile("testdata/triggers.json")
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var tab triggerTable
	require.NoError(t, dec.Decode(&tab))
	require.NotEmpty(t, tab.Cases)
	return tab
}

// logRecorder keeps the messages of Warn records.
type logRecorder struct {
	mu    sync.Mutex
	warns []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	if rec.Level == slog.LevelWarn {
		r.mu.Lock()
		r.warns = append(r.warns, rec.Message)
		r.mu.Unlock()
	}
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// TestTriggerTable runs every case of the table through the scaler's
// compile path (a cache miss of a real Scaler, what GetMetricSpec,
// GetMetrics and IsActive use) and through Describe, and requires both to
// agree with each other and with the table: the lowered query exactly as
// the plan evaluates it, every setting, the warnings logged, the error.
// The lowering is also checked with Prometheus's full parser, so it does
// not depend on which functions pkg/query implements.
func TestTriggerTable(t *testing.T) {
	tab := loadTriggerTable(t)
	defaultWindow, err := parseWindow(tab.DefaultWindow)
	require.NoError(t, err)
	retention, err := parseWindow(tab.Retention)
	require.NoError(t, err)
	names := map[string]bool{}
	for _, tc := range tab.Cases {
		require.False(t, names[tc.Name], "duplicate case name %q", tc.Name)
		names[tc.Name] = true
		t.Run(tc.Name, func(t *testing.T) {
			rec := &logRecorder{}
			st := store.New(store.Config{Retention: retention}, store.Settings{})
			s := New(query.NewEngine(st), st, Config{DefaultWindow: defaultWindow}, Settings{Logger: slog.New(rec)})
			defer s.Drain()
			tr, cerr := s.compile(ref(tc.Metadata))
			d, derr := Describe("ns", "so", tc.Metadata, Config{DefaultWindow: defaultWindow}, retention)

			if tc.Lowered != "" {
				assert.Equal(t, tc.Lowered, d.Lowered, "Describe's lowered query")
			}
			if len(tc.Errors) > 0 {
				require.Error(t, cerr)
				require.ErrorIs(t, cerr, ErrBadMetadata)
				require.Error(t, derr)
				assert.Equal(t, cerr.Error(), derr.Error(), "the scaler and Describe report the same problems")
				for _, e := range tc.Errors {
					assert.Contains(t, cerr.Error(), e)
				}
				assert.Empty(t, rec.warns, "a refused trigger is not cached, so nothing is logged")
				return
			}
			require.NoError(t, cerr)
			require.NoError(t, derr)

			want := tc.resolve(t, defaultWindow)
			assert.Equal(t, tc.Lowered, tr.plan.String(), "the query the scaler evaluates")
			assert.InDelta(t, tc.Target, tr.target, 1e-12)
			assert.InDelta(t, tc.Target, d.Target, 1e-12)
			assert.InDelta(t, tc.Activation, tr.activation, 0)
			assert.InDelta(t, tc.Activation, d.Activation, 0)
			assert.Equal(t, want.op, tr.op)
			assert.Equal(t, want.op, d.OperationOverTime)
			assert.Equal(t, want.window, tr.window)
			assert.Equal(t, want.window, d.Window)
			assert.Equal(t, want.lookback, tr.lookback)
			assert.Equal(t, want.lookback, d.LookbackDelta)
			assert.Equal(t, want.ignoreNull, tr.ignoreNull)
			assert.Equal(t, want.ignoreNull, d.IgnoreNullValues)
			assert.Equal(t, tc.ClampMin, optional(tr.hasMin, tr.clampMin))
			assert.Equal(t, tc.ClampMin, d.ClampMin)
			assert.Equal(t, tc.ClampMax, optional(tr.hasMax, tr.clampMax))
			assert.Equal(t, tc.ClampMax, d.ClampMax)
			assert.Equal(t, tc.ValueIfEmpty, optional(tr.hasIfEmpty, tr.ifEmpty))
			assert.Equal(t, tc.ValueIfEmpty, d.ValueIfEmpty)
			assert.Equal(t, metricName("ns", "so"), d.MetricName)

			assert.Equal(t, tc.Warnings, d.Warnings, "Describe's warnings")
			require.Len(t, rec.warns, len(tc.Warnings), "each warning is logged once, at Warn, when the trigger is cached")
			for i, w := range tc.Warnings {
				assert.True(t, strings.HasPrefix(w, rec.warns[i]+": "), "logged %q for %q", rec.warns[i], w)
			}

			lw, err := lower(fullParse, d.Query, d.OperationOverTime, d.Window)
			require.NoError(t, err)
			assert.Equal(t, tc.Lowered, lw.expr.String(), "lowering with Prometheus's full parser")
		})
	}
}

type resolvedCase struct {
	op               string
	window, lookback time.Duration
	ignoreNull       bool
}

// resolve applies the table's omission rules.
func (tc triggerCase) resolve(t *testing.T, defaultWindow time.Duration) resolvedCase {
	t.Helper()
	r := resolvedCase{op: opLastOne, window: defaultWindow, ignoreNull: true}
	if tc.OperationOverTime != "" {
		r.op = tc.OperationOverTime
	}
	if tc.Window != "" {
		var err error
		r.window, err = parseWindow(tc.Window)
		require.NoError(t, err)
	}
	r.lookback = r.window
	if tc.LookbackDelta != "" {
		var err error
		r.lookback, err = parseWindow(tc.LookbackDelta)
		require.NoError(t, err)
	}
	if tc.IgnoreNullValues != nil {
		r.ignoreNull = *tc.IgnoreNullValues
	}
	return r
}

// TestSettingKeysAreMetaKeys: the settings Describe reports are exactly
// the keys the cache keys on, in the same order.
func TestSettingKeysAreMetaKeys(t *testing.T) {
	var flat []string
	for _, s := range settingKeys {
		flat = append(flat, s.key)
		if s.alias != "" {
			flat = append(flat, s.alias)
		}
	}
	assert.Equal(t, metaKeys[:], flat)
}

func TestDescribeReadsKeys(t *testing.T) {
	d, err := Describe("llm", "qwen", map[string]string{
		"query": "sum(x)", "thresholdFromEnv": "3", "scalerAddress": "a:4318", "caCert": "pem",
		"evaluationDelay": "30s", "bogus": "1", "window": " 1m ",
	}, Config{}, 0)
	require.NoError(t, err)
	assert.Equal(t, []Setting{
		{Key: "metricQuery", From: "query", Value: "sum(x)"},
		{Key: "targetValue", From: "thresholdFromEnv", Value: "3"},
		{Key: "window", From: "window", Value: "1m"},
	}, d.Read)
	assert.Equal(t, []string{"caCert", "scalerAddress"}, d.KEDAKeys)
	assert.Equal(t, []string{"bogus", "evaluationDelay"}, d.Ignored, "evaluationDelay is not implemented: ignored like any unknown key")
	assert.Equal(t, "llm-qwen", d.MetricName)
	assert.Equal(t, []string{"x"}, d.MetricNames)
	assert.Equal(t, time.Minute, d.ReadsBack, "the lookback is the window")
	assert.Equal(t, int64(3), d.TargetSize())
}

// TestDescribeRewrites: every lowering step is named, in order.
func TestDescribeRewrites(t *testing.T) {
	for _, tc := range []struct {
		name string
		md   map[string]string
		want []string
	}{
		{"as written", map[string]string{"metricQuery": "sum(x)"}, nil},
		{"bare", map[string]string{"metricQuery": "x"}, []string{"a bare selector is summed"}},
		{"legacy", map[string]string{"metricQuery": "sum(x{a=b})"}, []string{`parsed as sum(x{a="b"})`}},
		{
			"kserve with operation",
			map[string]string{"metricQuery": `sum(x{namespace="ns", deployment="d"})`, "operationOverTime": "avg", "window": "30s"},
			[]string{`KServe's sum(<query>{namespace="ns", deployment="d"}) wrapper was unwrapped`, "operationOverTime avg: every instant selector s not already inside a range function became avg_over_time(s[30s])"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.md["targetValue"] = "1"
			d, err := Describe("ns", "so", tc.md, Config{}, 0)
			require.NoError(t, err)
			require.Len(t, d.Rewrites, len(tc.want))
			for i, w := range tc.want {
				assert.Contains(t, d.Rewrites[i], w)
			}
		})
	}
}

// TestDescriptionReduction: the reduction Describe states is what
// trigger.reduce does, for each setting that changes it.
func TestDescriptionReduction(t *testing.T) {
	nan := query.Result{Scalar: true, Value: math.NaN()}
	for _, tc := range []struct {
		name string
		md   map[string]string
		res  query.Result
		want string // a line of Reduction
		v    float64
		err  error
	}{
		{"empty, default", nil, query.Result{}, "no element: 0 (ignoreNullValues true)", 0, nil},
		{"empty, valueIfEmpty", map[string]string{"valueIfEmpty": "7"}, query.Result{}, "no element: 7 (valueIfEmpty)", 7, nil},
		{"empty, strict", map[string]string{"ignoreNullValues": "false"}, query.Result{}, "no element: NotFound (ignoreNullValues false)", 0, ErrEmptyResult},
		{"NaN, default", nil, nan, "NaN or ±Inf: 0 (ignoreNullValues true)", 0, nil},
		{"NaN, strict", map[string]string{"ignoreNullValues": "false"}, nan, "NaN or ±Inf: FailedPrecondition (ignoreNullValues false)", 0, ErrNotFinite},
		{"clampMin", map[string]string{"clampMin": "2"}, query.Result{Scalar: true, Value: 1}, "at least 2 (clampMin)", 2, nil},
		{"clampMax", map[string]string{"clampMax": "2"}, query.Result{Scalar: true, Value: 5}, "at most 2 (clampMax)", 2, nil},
		{"negative", nil, query.Result{Scalar: true, Value: -3}, "a negative value becomes 0", 0, nil},
		{"several", nil, query.Result{Vector: make([]query.Sample, 2)}, "more than one element: FailedPrecondition", 0, ErrMultipleSeries},
		{"a histogram", nil, query.Result{Vector: []query.Sample{{H: &histogram.FloatHistogram{Count: 3}}}}, "one native histogram: FailedPrecondition", 0, ErrHistogramResult},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := map[string]string{"metricQuery": "sum(x)", "targetValue": "1"}
			for k, v := range tc.md {
				md[k] = v
			}
			d, err := Describe("ns", "so", md, Config{}, 0)
			require.NoError(t, err)
			assert.Contains(t, strings.Join(d.Reduction(), "\n"), tc.want)
			var k triggerKey
			_, ok := k.fill(maphash.MakeSeed(), "ns", "so", md)
			require.True(t, ok)
			st := store.New(store.Config{}, store.Settings{})
			tr, _, err := compileTrigger(query.NewEngine(st), st.Retention(), DefaultConfig(), k)
			require.NoError(t, err)
			v, err := tr.reduce(tc.res)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.InDelta(t, tc.v, v, 0)
		})
	}
}

// TestTriggerWarningsLogBounded: a trigger's warnings (here the plan's:
// it reads past the retention) are logged once when it is cached, and a
// burst of distinct warning triggers is logged only up to the limit,
// every warning counted.
func TestTriggerWarningsLogBounded(t *testing.T) {
	rec := &logRecorder{}
	reg := prometheus.NewRegistry()
	st := store.New(store.Config{Retention: time.Minute}, store.Settings{})
	now := time.Unix(1000, 0)
	s := New(query.NewEngine(st), st, Config{}, Settings{Logger: slog.New(rec), Registerer: reg, Now: func() time.Time { return now }})
	defer s.Drain()
	spec := func(i int) {
		t.Helper()
		_, err := s.GetMetricSpec(t.Context(), ref(map[string]string{"metricQuery": "sum(rate(x" + itoa(i) + "[5m]))", "targetValue": "1"}))
		require.NoError(t, err)
	}
	spec(0)
	spec(0)
	require.Equal(t, []string{"Trigger query may answer differently from Prometheus"}, rec.warns, "logged once, when cached")
	for i := 1; i < 3*warnBurst; i++ {
		spec(i)
	}
	assert.Len(t, rec.warns, warnBurst, "a burst is logged up to the limit")
	assert.InDelta(t, 3*warnBurst, testutil.ToFloat64(s.m.triggerWarnings), 0)
	assert.InDelta(t, 2*warnBurst, testutil.ToFloat64(s.m.triggerWarningsUnlogged), 0)
	now = now.Add(3 * warnEvery)
	spec(1000)
	spec(1001)
	assert.Len(t, rec.warns, warnBurst+2, "the limit refills with time")
}

func TestLogLimiter(t *testing.T) {
	l := &logLimiter{burst: 2, every: 10}
	got := []bool{l.allow(100), l.allow(100), l.allow(105), l.allow(110), l.allow(111), l.allow(140), l.allow(140), l.allow(140), l.allow(90)}
	assert.Equal(t, []bool{true, true, false, true, false, true, true, false, false}, got)
}
