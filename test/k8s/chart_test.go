package k8s

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const (
	chartDir     = "../../deploy/helm/keda-otel-scaler"
	releaseName  = "keda-otel-scaler"
	examplesDir  = "../../examples"
	chartTimeout = 2 * time.Minute
)

// renderChart renders the chart like `helm template keda-otel-scaler -n keda
// -f ci/<valuesFile>` (schema-validated, strict), returning its objects.
func renderChart(t *testing.T, valuesFile string) []*unstructured.Unstructured {
	t.Helper()
	c, err := loader.Load(chartDir)
	require.NoError(t, err)
	vals, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "ci", valuesFile))
	require.NoError(t, err)
	rv, err := chartutil.ToRenderValues(c, vals.AsMap(), chartutil.ReleaseOptions{
		Name: releaseName, Namespace: kedaNamespace, Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	require.NoError(t, err)
	files, err := engine.Engine{Strict: true}.Render(c, rv)
	require.NoError(t, err)
	names := make([]string, 0, len(files))
	for n := range files {
		if strings.HasSuffix(n, ".yaml") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []*unstructured.Unstructured
	for _, n := range names {
		objs, err := decodeYAMLDocs([]byte(files[n]))
		require.NoError(t, err, n)
		out = append(out, objs...)
	}
	return out
}

// TestChartServerSideDryRun sends every object the chart renders, for each of
// its CI values files (defaults, every option on, TLS, headless HA), to the
// real API server as a server-side dry-run with strict field validation: the
// API's own schema, defaulting and admission accept them. The
// ServiceMonitor and PrometheusRule are checked against prometheus-operator's
// CRDs.
func TestChartServerSideDryRun(t *testing.T) {
	c := needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), chartTimeout)
	defer cancel()
	for _, crd := range []string{"servicemonitors", "prometheusrules"} {
		require.NoError(t, c.applyCRDs(ctx, tools.PromOperatorCRDs, crd))
	}
	require.NoError(t, c.createNamespace(ctx, "monitoring")) // all-optional's ServiceMonitor namespace

	valuesFiles, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, valuesFiles)
	kinds := map[string]bool{}
	for _, vf := range valuesFiles {
		t.Run(filepath.Base(vf), func(t *testing.T) {
			objs := renderChart(t, filepath.Base(vf))
			require.NotEmpty(t, objs)
			for _, o := range objs {
				kinds[o.GetKind()] = true
				t.Run(o.GetKind()+"/"+o.GetName(), func(t *testing.T) {
					require.NoError(t, c.serverDryRun(ctx, o, kedaNamespace), "rejected by the API server")
				})
			}
		})
	}
	// Every template the chart has was sent at least once.
	for _, k := range []string{"Deployment", "Service", "ServiceAccount", "NetworkPolicy", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"} {
		assert.True(t, kinds[k], "no values file rendered a %s", k)
	}
}

// TestChartDryRunRejectsInvalid shows the dry-run above can fail: the same
// Deployment with a misspelt field, or an out-of-range port, is refused.
func TestChartDryRunRejectsInvalid(t *testing.T) {
	c := needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), chartTimeout)
	defer cancel()
	var dep *unstructured.Unstructured
	for _, o := range renderChart(t, "default-values.yaml") {
		if o.GetKind() == "Deployment" {
			dep = o
		}
	}
	require.NotNil(t, dep)
	require.NoError(t, c.serverDryRun(ctx, dep.DeepCopy(), kedaNamespace))

	for name, mutate := range map[string]func(map[string]any){
		"unknown field": func(ctr map[string]any) { ctr["imagePullPolicyy"] = "Always" },
		"port out of range": func(ctr map[string]any) {
			ctr["ports"].([]any)[0].(map[string]any)["containerPort"] = int64(70000)
		},
	} {
		t.Run(name, func(t *testing.T) {
			bad := dep.DeepCopy()
			ctrs, _, err := unstructured.NestedSlice(bad.Object, "spec", "template", "spec", "containers")
			require.NoError(t, err)
			mutate(ctrs[0].(map[string]any))
			require.NoError(t, unstructured.SetNestedSlice(bad.Object, ctrs, "spec", "template", "spec", "containers"))
			err = c.serverDryRun(ctx, bad, kedaNamespace)
			require.Error(t, err)
			assert.True(t, apierrors.IsBadRequest(err) || apierrors.IsInvalid(err), "want a validation error, got %v", err)
		})
	}
}

// TestExamplesServerSideDryRun dry-runs every manifest of examples/ whose
// kinds this cluster serves (built-in kinds and KEDA's); InferenceService
// and OpenTelemetryCollector need KServe's and the OpenTelemetry operator's
// CRDs, which this test does not install.
func TestExamplesServerSideDryRun(t *testing.T) {
	c := needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), chartTimeout)
	defer cancel()
	files, err := filepath.Glob(filepath.Join(examplesDir, "*", "*.yaml"))
	require.NoError(t, err)
	sent := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		objs, err := decodeYAMLDocs(b)
		require.NoError(t, err, f)
		for _, o := range objs {
			if o.GetKind() == "" || o.GetAPIVersion() == "" {
				continue // a ConfigMap patch fragment, not an object
			}
			if _, _, err := c.resourceFor(o); err != nil {
				t.Logf("%s: %s %s not served here (%v)", f, o.GetAPIVersion(), o.GetKind(), err)
				continue
			}
			if ns := o.GetNamespace(); ns != "" {
				require.NoError(t, c.createNamespace(ctx, ns))
			}
			t.Run(filepath.Base(f)+"/"+o.GetKind()+"/"+o.GetName(), func(t *testing.T) {
				require.NoError(t, c.serverDryRun(ctx, o, "default"))
			})
			sent++
		}
	}
	assert.GreaterOrEqual(t, sent, 4, "example objects dry-run")
}
