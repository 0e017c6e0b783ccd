package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/scaler"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// triggerTablePath is the scaler's trigger-metadata table, which
// pkg/scaler's TestTriggerTable runs through the scaler's compile path.
const triggerTablePath = "../../pkg/scaler/testdata/triggers.json"

// explained is what `explain` printed about a trigger.
type explained struct {
	metricName, evaluated  string
	target, activation     float64
	warnings, errors       []string
	haveTarget, haveActive bool
}

// parseExplain reads the lines of explain's output that the agreement
// test compares: warnings and errors of the metadata section, and the
// compiled trigger's settings.
func parseExplain(t *testing.T, out string) explained {
	t.Helper()
	var e explained
	metadata := true
	for _, l := range strings.Split(out, "\n") {
		if l == "" {
			metadata = false
		}
		field := func(prefix string) (string, bool) {
			v, ok := strings.CutPrefix(l, prefix)
			return strings.TrimSpace(v), ok
		}
		number := func(v string) float64 {
			num, _, _ := strings.Cut(v, " ")
			f, err := strconv.ParseFloat(num, 64)
			require.NoError(t, err, l)
			return f
		}
		if v, ok := field("  warning: "); ok && metadata {
			e.warnings = append(e.warnings, v)
		}
		if v, ok := field("  error: "); ok && metadata {
			e.errors = append(e.errors, v)
		}
		if v, ok := field("  metricName: "); ok {
			e.metricName, _, _ = strings.Cut(v, " ")
		}
		if v, ok := field("  evaluated: "); ok {
			e.evaluated = v
		}
		if v, ok := field("  target: "); ok {
			e.target, e.haveTarget = number(v), true
		}
		if v, ok := field("  activation: "); ok {
			e.activation, e.haveActive = number(v), true
		}
	}
	return e
}

// scalerLog records what the scaler logs when it caches a trigger: the
// warnings, and the query it evaluates when lowering rewrote it.
type scalerLog struct {
	mu        sync.Mutex
	warns     []string
	rewritten []string
}

func (r *scalerLog) Enabled(context.Context, slog.Level) bool { return true }

func (r *scalerLog) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case rec.Level == slog.LevelWarn:
		r.warns = append(r.warns, rec.Message)
	case rec.Message == "Trigger query rewritten":
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "evaluated" {
				r.rewritten = append(r.rewritten, a.Value.String())
			}
			return true
		})
	}
	return nil
}
func (r *scalerLog) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *scalerLog) WithGroup(string) slog.Handler      { return r }

func (r *scalerLog) take() (warns, rewritten []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	warns, rewritten = r.warns, r.rewritten
	r.warns, r.rewritten = nil, nil
	return warns, rewritten
}

// TestExplainAgreesWithScaler runs every case of the scaler's own
// trigger-metadata table through `explain` (offline: the scaler code in
// this binary) and through a real scaler's GetMetricSpec, GetMetrics and
// IsActive, and requires them to agree: the same errors, word for word;
// the same target and metric name; the query explain prints as evaluated
// is the one the scaler logs when it rewrote it, and the table's, which
// TestTriggerTable in pkg/scaler proves is the scaler's compiled plan; the
// same warnings; IsActive is value > the activation explain prints.
func TestExplainAgreesWithScaler(t *testing.T) {
	raw, err := os.ReadFile(triggerTablePath)
	require.NoError(t, err)
	var tab struct {
		DefaultWindow, Retention string
		Cases                    []struct {
			Name               string
			Metadata           map[string]string
			Lowered            string
			Target, Activation float64
			Errors             []string
		}
	}
	require.NoError(t, json.Unmarshal(raw, &tab))
	require.NotEmpty(t, tab.Cases)
	window, err := config.ParseDuration(tab.DefaultWindow)
	require.NoError(t, err)
	retention, err := config.ParseDuration(tab.Retention)
	require.NoError(t, err)

	log := &scalerLog{}
	st := store.New(store.Config{Retention: retention}, store.Settings{})
	s := scaler.New(query.NewEngine(st), st, scaler.Config{DefaultWindow: window}, scaler.Settings{Logger: slog.New(log)})
	defer s.Drain()
	ctx := t.Context()

	for _, tc := range tab.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			args := []string{
				"explain", "--scaler", "", "--server", "", "--namespace", "ns", "--name", "so",
				"--default-window", window.String(), "--retention", retention.String(),
			}
			keys := make([]string, 0, len(tc.Metadata))
			for k := range tc.Metadata {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				args = append(args, "--metadata", k+"="+tc.Metadata[k])
			}
			code, out, errOut := runCLI(t, args...)
			got := parseExplain(t, out)

			ref := &externalscaler.ScaledObjectRef{Namespace: "ns", Name: "so", ScalerMetadata: tc.Metadata}
			spec, err := s.GetMetricSpec(ctx, ref)
			warns, rewritten := log.take()
			if tc.Lowered != "" {
				assert.Equal(t, tc.Lowered, got.evaluated, "explain's evaluated query is the table's")
			}
			if err != nil {
				assert.Equal(t, 1, code, "explain fails where the scaler refuses")
				assert.Equal(t, codes.InvalidArgument, status.Code(err))
				assert.Equal(t, status.Convert(err).Message(), strings.Join(got.errors, "\n"), "the same errors, word for word")
				for _, e := range tc.Errors {
					assert.Contains(t, out, e)
				}
				return
			}
			require.Equal(t, 0, code, "stderr: %s\nstdout: %s", errOut, out)
			require.Empty(t, tc.Errors, "the scaler accepts a case the table expects refused")
			assert.Empty(t, got.errors)
			require.NotEmpty(t, got.evaluated, out)
			assert.Equal(t, tc.Lowered, got.evaluated)
			for _, r := range rewritten {
				assert.Equal(t, r, got.evaluated, "the query the scaler logs it evaluates")
			}
			ms := spec.GetMetricSpecs()
			require.Len(t, ms, 1)
			require.True(t, got.haveTarget && got.haveActive, out)
			assert.InDelta(t, ms[0].GetTargetSizeFloat(), got.target, 0, "target, exactly")
			assert.InDelta(t, tc.Target, got.target, 0, "target, exactly")
			assert.InDelta(t, tc.Activation, got.activation, 0, "activation, exactly")
			assert.Equal(t, ms[0].GetMetricName(), got.metricName)
			require.Len(t, got.warnings, len(warns), "explain shows the warnings the scaler logs")
			for i, w := range warns {
				assert.True(t, strings.HasPrefix(got.warnings[i], w+": "), "explain %q, scaler %q", got.warnings[i], w)
			}
			mv, err := s.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref})
			require.NoError(t, err)
			act, err := s.IsActive(ctx, ref)
			require.NoError(t, err)
			assert.Equal(t, mv.GetMetricValues()[0].GetMetricValueFloat() > got.activation, act.GetResult(), "IsActive is value > explain's activation")
		})
	}
}

// TestExplainKServeTrigger is the trigger KServe v0.16 generates for
// examples/kserve/inferenceservice.yaml: explain shows the query the
// scaler evaluates (the wrapper unwrapped, its matchers on the selector)
// and why, and the server agrees.
func TestExplainKServeTrigger(t *testing.T) {
	a := startServer(t)
	servertest.PushVLLMWaiting(t, a.HTTP, map[string]float64{"qwen-predictor-1": 5}, map[string]string{"k8s.namespace.name": "llm", "k8s.deployment.name": "qwen-predictor"})
	code, out, errOut := runCLI(t, "explain", "--scaler", a.Scaler, "--server", "http://"+a.HTTP,
		"--namespace", "llm", "--name", "qwen-predictor",
		"--metadata", `metricQuery=sum(vllm:num_requests_waiting{namespace="llm", deployment="qwen-predictor"})`,
		"--metadata", "targetValue=4", "--metadata", "scalerAddress=keda-otel-scaler.keda.svc:4318")
	require.Equal(t, 0, code, "stderr: %s\nstdout: %s", errOut, out)
	for _, w := range []string{
		`  evaluated:         sum(vllm:num_requests_waiting{deployment="qwen-predictor",namespace="llm"})` + "\n",
		`    because KServe's sum(<query>{namespace="llm", deployment="qwen-predictor"}) wrapper was unwrapped`,
		"  reads:             vllm:num_requests_waiting, up to 2m0s back",
		"read by KEDA, not the scaler: scalerAddress",
		`GetMetricSpec: metricName "llm-qwen-predictor", targetSizeFloat 4, targetSize 4`,
		// Only the pod with the InferenceService's namespace and
		// deployment counts, not the two other pods of startServer.
		"lookback_delta 2m0s",
		`  vllm:num_requests_waiting{deployment="qwen-predictor",namespace="llm"}` + "\n" +
			`    vllm:num_requests_waiting{deployment="qwen-predictor", job="vllm", model_name="qwen", namespace="llm", pod="qwen-predictor-1"} => 5 @`,
		"whole query: {} => 5 @",
		"GetMetrics:    metricValueFloat 5, metricValue 5",
		"desired = ceil(V/T) = 2",
	} {
		assert.Contains(t, out, w)
	}
}
