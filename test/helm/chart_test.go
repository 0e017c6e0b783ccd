package helm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "../../deploy/helm/keda-otel-scaler"
	releaseName = "keda-otel-scaler"
	namespace   = "keda"
)

// valuesFiles are the CI values files rendered by every generic check.
var valuesFiles = []string{"default-values.yaml", "all-optional-values.yaml", "tls-values.yaml", "tls-all-values.yaml", "ha-values.yaml", "ha-tls-values.yaml", "router-values.yaml"}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	require.NoError(t, err)
	return c
}

func readValues(t *testing.T, file string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "ci", file))
	require.NoError(t, err)
	return v.AsMap()
}

// objects is a rendered release: manifests keyed by "Kind/name".
type objects map[string][]byte

func (o objects) kinds() []string {
	ks := make([]string, 0, len(o))
	for k := range o {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// decode unmarshals the object strictly into a typed struct: an unknown or
// misspelt field fails, as the API server's strict field validation would.
func (o objects) decode(t *testing.T, key string, into any) {
	t.Helper()
	raw, ok := o[key]
	require.Truef(t, ok, "rendered objects %v lack %s", o.kinds(), key)
	require.NoError(t, unmarshalStrict(raw, into), "%s:\n%s", key, raw)
}

// render renders the chart like `helm template keda-otel-scaler -n keda`,
// validating the values against values.schema.json and failing on any value
// a template references that does not exist (strict mode).
func render(t *testing.T, vals map[string]any) (objects, error) {
	t.Helper()
	c := loadChart(t)
	rv, err := chartutil.ToRenderValues(c, vals, chartutil.ReleaseOptions{
		Name: releaseName, Namespace: namespace, Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	files, err := engine.Engine{Strict: true}.Render(c, rv)
	if err != nil {
		return nil, err
	}
	out := objects{}
	for name, body := range files {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for _, doc := range strings.Split(body, "\n---") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name      string `json:"name"`
					Namespace string `json:"namespace"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				return nil, fmt.Errorf("%s: %w\n%s", name, err, doc)
			}
			if meta.Kind == "" {
				continue // a template that rendered only comments
			}
			if meta.APIVersion == "" || meta.Metadata.Name == "" {
				return nil, fmt.Errorf("%s: object without apiVersion or name:\n%s", name, doc)
			}
			key := meta.Kind + "/" + meta.Metadata.Name
			if _, dup := out[key]; dup {
				return nil, fmt.Errorf("%s rendered twice", key)
			}
			out[key] = []byte(doc)
		}
	}
	return out, nil
}

func mustRender(t *testing.T, vals map[string]any) objects {
	t.Helper()
	o, err := render(t, vals)
	require.NoError(t, err)
	return o
}

// set builds a values tree from dotted paths.
func set(kv ...any) map[string]any {
	root := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		path := strings.Split(kv[i].(string), ".")
		m := root
		for _, p := range path[:len(path)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[path[len(path)-1]] = kv[i+1]
	}
	return root
}

func envMap(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

func TestLint(t *testing.T) {
	for _, f := range valuesFiles {
		t.Run("values="+f, func(t *testing.T) {
			res := lint.All(chartDir, readValues(t, f), namespace, false)
			for _, m := range res.Messages {
				t.Logf("lint: %s", m)
				assert.Lessf(t, m.Severity, support.WarningSev, "lint %s: %s", f, m)
			}
		})
	}
}

func TestTemplateValuesFiles(t *testing.T) {
	want := map[string][]string{
		"default-values.yaml": {"Deployment/keda-otel-scaler", "Service/keda-otel-scaler", "ServiceAccount/keda-otel-scaler"},
		"all-optional-values.yaml": {
			"Deployment/keda-otel-scaler", "NetworkPolicy/keda-otel-scaler",
			"PodDisruptionBudget/keda-otel-scaler", "PrometheusRule/keda-otel-scaler", "Service/keda-otel-scaler",
			"ServiceAccount/keda-otel-scaler", "ServiceMonitor/keda-otel-scaler",
		},
		"tls-values.yaml": {"Deployment/keda-otel-scaler", "Service/keda-otel-scaler", "ServiceAccount/keda-otel-scaler"},
		"tls-all-values.yaml": {
			"Deployment/keda-otel-scaler", "Service/keda-otel-scaler", "ServiceAccount/keda-otel-scaler",
			"ServiceMonitor/keda-otel-scaler",
		},
		"ha-values.yaml": {
			"ConfigMap/keda-otel-scaler-collector", "PodDisruptionBudget/keda-otel-scaler", "Service/keda-otel-scaler",
			"Service/keda-otel-scaler-headless", "ServiceAccount/keda-otel-scaler", "StatefulSet/keda-otel-scaler",
		},
		"ha-tls-values.yaml": {
			"ConfigMap/keda-otel-scaler-collector", "PodDisruptionBudget/keda-otel-scaler", "Service/keda-otel-scaler",
			"Service/keda-otel-scaler-headless", "ServiceAccount/keda-otel-scaler", "StatefulSet/keda-otel-scaler",
		},
		"router-values.yaml": {
			"ConfigMap/keda-otel-scaler-collector", "Deployment/keda-otel-scaler", "PodDisruptionBudget/keda-otel-scaler",
			"Service/keda-otel-scaler", "ServiceAccount/keda-otel-scaler",
		},
	}
	for _, f := range valuesFiles {
		t.Run("values="+f, func(t *testing.T) {
			o := mustRender(t, readValues(t, f))
			assert.Equal(t, want[f], o.kinds())
			// Every namespaced object lands in the release namespace, except a
			// ServiceMonitor or PrometheusRule explicitly placed elsewhere.
			for k, raw := range o {
				var m struct {
					Metadata struct {
						Namespace string            `json:"namespace"`
						Labels    map[string]string `json:"labels"`
					} `json:"metadata"`
				}
				require.NoError(t, yaml.Unmarshal(raw, &m))
				if k != "ServiceMonitor/keda-otel-scaler" && k != "PrometheusRule/keda-otel-scaler" {
					assert.Equal(t, namespace, m.Metadata.Namespace, k)
				}
				assert.Equal(t, "keda-otel-scaler", m.Metadata.Labels["app.kubernetes.io/name"], k)
				assert.Equal(t, releaseName, m.Metadata.Labels["app.kubernetes.io/instance"], k)
			}
			pod, sel := o.workload(t)
			var svc corev1.Service
			o.decode(t, "Service/keda-otel-scaler", &svc)
			// The Service selects exactly the pods of the workload.
			for k, v := range svc.Spec.Selector {
				assert.Equal(t, v, pod.Labels[k], "selector %s", k)
				assert.Equal(t, v, sel[k], "selector %s", k)
			}
			assert.Equal(t, sel, svc.Spec.Selector)
			assertHardened(t, pod)
		})
	}
}

// workload returns the pod template and selector of the release's one
// workload: the Deployment (single replica, shard router) or the HA
// StatefulSet.
func (o objects) workload(t *testing.T) (corev1.PodTemplateSpec, map[string]string) {
	t.Helper()
	if _, ok := o["StatefulSet/keda-otel-scaler"]; ok {
		var s appsv1.StatefulSet
		o.decode(t, "StatefulSet/keda-otel-scaler", &s)
		return s.Spec.Template, s.Spec.Selector.MatchLabels
	}
	var d appsv1.Deployment
	o.decode(t, "Deployment/keda-otel-scaler", &d)
	return d.Spec.Template, d.Spec.Selector.MatchLabels
}

// assertHardened checks every container of the pod, collectors included.
func assertHardened(t *testing.T, pod corev1.PodTemplateSpec) {
	t.Helper()
	ps := pod.Spec.SecurityContext
	require.NotNil(t, ps)
	require.NotNil(t, ps.RunAsNonRoot)
	assert.True(t, *ps.RunAsNonRoot)
	require.NotNil(t, ps.SeccompProfile)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, ps.SeccompProfile.Type)
	require.NotEmpty(t, pod.Spec.Containers)
	for _, c := range pod.Spec.Containers {
		assertContainerHardened(t, c)
	}
	require.NotNil(t, pod.Spec.AutomountServiceAccountToken)
	assert.False(t, *pod.Spec.AutomountServiceAccountToken)
}

func assertContainerHardened(t *testing.T, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	require.NotNilf(t, sc, "container %s", c.Name)
	require.NotNil(t, sc.RunAsNonRoot)
	assert.True(t, *sc.RunAsNonRoot)
	require.NotNil(t, sc.ReadOnlyRootFilesystem)
	assert.True(t, *sc.ReadOnlyRootFilesystem)
	require.NotNil(t, sc.AllowPrivilegeEscalation)
	assert.False(t, *sc.AllowPrivilegeEscalation)
	require.NotNil(t, sc.Capabilities)
	assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	assert.Empty(t, sc.Capabilities.Add)
	require.NotNil(t, sc.SeccompProfile)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type)
}

// TestDefaultRelease pins what KServe, collectors and KEDA depend on:
// keda-otel-scaler.keda.svc with 4317, 4318 and 8080.
func TestDefaultRelease(t *testing.T) {
	o := mustRender(t, nil)

	var svc corev1.Service
	o.decode(t, "Service/keda-otel-scaler", &svc)
	assert.Equal(t, "keda-otel-scaler", svc.Name)
	assert.Equal(t, "keda", svc.Namespace)
	assert.Equal(t, corev1.ServiceTypeClusterIP, svc.Spec.Type)
	assert.Empty(t, svc.Spec.ClusterIP)
	type port struct {
		Name   string
		Port   int32
		Target intstr.IntOrString
	}
	var got []port
	for _, p := range svc.Spec.Ports {
		assert.Equal(t, corev1.ProtocolTCP, p.Protocol)
		got = append(got, port{p.Name, p.Port, p.TargetPort})
	}
	assert.Equal(t, []port{
		{"otlp-grpc", 4317, intstr.FromString("otlp-grpc")},
		{"keda", 4318, intstr.FromString("keda")},
		{"http", 8080, intstr.FromString("http")},
	}, got)

	var d appsv1.Deployment
	o.decode(t, "Deployment/keda-otel-scaler", &d)
	require.NotNil(t, d.Spec.Replicas)
	assert.Equal(t, int32(1), *d.Spec.Replicas)
	assert.Equal(t, appsv1.RecreateDeploymentStrategyType, d.Spec.Strategy.Type)
	pod := d.Spec.Template.Spec
	assert.Equal(t, "keda-otel-scaler", pod.ServiceAccountName)
	assert.Empty(t, pod.Volumes)
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	assert.Equal(t, "ghcr.io/keda-otel-scaler/keda-otel-scaler:0.1.0", c.Image)
	assert.Empty(t, c.Args)
	assert.Empty(t, c.VolumeMounts)
	cports := map[string]int32{}
	for _, p := range c.Ports {
		cports[p.Name] = p.ContainerPort
	}
	assert.Equal(t, map[string]int32{"otlp-grpc": 4317, "keda": 4318, "http": 8080}, cports)

	// Probes: readiness /readyz, liveness /healthz, both on the http port.
	require.NotNil(t, c.ReadinessProbe)
	require.NotNil(t, c.ReadinessProbe.HTTPGet)
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	assert.Equal(t, intstr.FromString("http"), c.ReadinessProbe.HTTPGet.Port)
	require.NotNil(t, c.LivenessProbe)
	require.NotNil(t, c.LivenessProbe.HTTPGet)
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	assert.Equal(t, intstr.FromString("http"), c.LivenessProbe.HTTPGet.Port)

	// Resources: requests set, a memory limit, no CPU limit (throttling
	// delays KEDA's answers).
	assert.False(t, c.Resources.Requests.Cpu().IsZero())
	assert.False(t, c.Resources.Requests.Memory().IsZero())
	assert.False(t, c.Resources.Limits.Memory().IsZero())
	_, cpuLimit := c.Resources.Limits[corev1.ResourceCPU]
	assert.False(t, cpuLimit)

	// The listeners are pinned to the container ports; otherwise only the
	// chart's explicit defaults (log level/format) are set.
	assert.Equal(t, map[string]string{
		"GOMEMLIMIT":         "1740MiB", // 85 % of the 2Gi limit
		"KOS_OTLP_GRPC_ADDR": ":4317",
		"KOS_SCALER_ADDR":    ":4318",
		"KOS_HTTP_ADDR":      ":8080",
		"KOS_LOG_LEVEL":      "info",
		"KOS_LOG_FORMAT":     "json",
	}, envMap(c))

	// The grace period outlasts the server's 15 s default shutdown timeout.
	require.NotNil(t, pod.TerminationGracePeriodSeconds)
	assert.Greater(t, *pod.TerminationGracePeriodSeconds, int64(15))
}

// configEnv lists every config value with a sample and its env twin.
var configEnv = []struct {
	key  string
	val  any
	env  string
	want string
}{
	{"logLevel", "debug", "KOS_LOG_LEVEL", "debug"},
	{"logFormat", "text", "KOS_LOG_FORMAT", "text"},
	{"shutdownTimeout", "20s", "KOS_SHUTDOWN_TIMEOUT", "20s"},
	{"otlpMaxRecvSize", "32MiB", "KOS_OTLP_MAX_RECV_SIZE", "32MiB"},
	{"otlpMaxInflightBytes", "96MiB", "KOS_OTLP_MAX_INFLIGHT_BYTES", "96MiB"},
	{"retention", "15m", "KOS_RETENTION", "15m"},
	{"freshness", "20s", "KOS_FRESHNESS", "20s"},
	{"defaultWindow", "1m", "KOS_DEFAULT_WINDOW", "1m"},
	{"warmup", "0", "KOS_WARMUP", "0"},
	{"readyPeersTimeout", "5m", "KOS_READY_PEERS_TIMEOUT", "5m"},
	{"pushHoldoff", "2s", "KOS_PUSH_HOLDOFF", "2s"},
	{"otlpDelta", "ingest", "KOS_OTLP_DELTA", "ingest"},
	{"otlpPromoteResourceAttributes", []any{"k8s.node.name", "cloud.region"}, "KOS_OTLP_PROMOTE_RESOURCE_ATTRIBUTES", "k8s.node.name,cloud.region"},
	{"maxSeries", 500000, "KOS_MAX_SERIES", "500000"},
	{"maxSeriesPerMetric", "100000", "KOS_MAX_SERIES_PER_METRIC", "100000"},
	{"maxLabelsPerSeries", 48, "KOS_MAX_LABELS_PER_SERIES", "48"},
	{"maxLabelNameLength", 512, "KOS_MAX_LABEL_NAME_LENGTH", "512"},
	{"maxLabelValueLength", "2048", "KOS_MAX_LABEL_VALUE_LENGTH", "2048"},
	{"maxMetricNameLength", 512, "KOS_MAX_METRIC_NAME_LENGTH", "512"},
	{"seriesTTL", "5m", "KOS_SERIES_TTL", "5m"},
	{"maxSamplesPerSeries", 256, "KOS_MAX_SAMPLES_PER_SERIES", "256"},
	{"maxSampleMemory", "1GiB", "KOS_MAX_SAMPLE_MEMORY", "1GiB"},
	{"checkpointInterval", "30s", "KOS_CHECKPOINT_INTERVAL", "30s"},
	{"reloadInterval", "2s", "KOS_RELOAD_INTERVAL", "2s"},
	{"triggerTTL", "15m", "KOS_TRIGGER_TTL", "15m"},
	{"maxTriggers", 2000, "KOS_MAX_TRIGGERS", "2000"},
	{"maxTriggerBytes", "1MiB", "KOS_MAX_TRIGGER_BYTES", "1MiB"},
	{"triggerCacheBytes", "33554432", "KOS_TRIGGER_CACHE_BYTES", "33554432"},
	{"maxStreams", 20000, "KOS_MAX_STREAMS", "20000"},
	{"maxEvaluations", 16, "KOS_MAX_EVALUATIONS", "16"},
	{"queryMaxLabelBytes", "16MiB", "KOS_QUERY_MAX_LABEL_BYTES", "16MiB"},
	{"grpcReflection", false, "KOS_GRPC_REFLECTION", "false"},
	{"metricAllowList", "vllm:num_requests_.*", "KOS_METRIC_ALLOW_LIST", "vllm:num_requests_.*"},
	{"lazyIngest", true, "KOS_LAZY_INGEST", "true"},
	{"queryMaxConcurrency", 2, "KOS_QUERY_MAX_CONCURRENCY", "2"},
	{"queryMaxSamples", "1000000", "KOS_QUERY_MAX_SAMPLES", "1000000"},
	{"queryTimeout", "30s", "KOS_QUERY_TIMEOUT", "30s"},
	{"otlpMaxConnections", 4096, "KOS_OTLP_MAX_CONNECTIONS", "4096"},
	{"scalerMaxConnections", "16", "KOS_SCALER_MAX_CONNECTIONS", "16"},
	{"httpMaxConnections", 512, "KOS_HTTP_MAX_CONNECTIONS", "512"},
}

func container(t *testing.T, o objects) corev1.Container {
	t.Helper()
	var d appsv1.Deployment
	o.decode(t, "Deployment/keda-otel-scaler", &d)
	require.Len(t, d.Spec.Template.Spec.Containers, 1)
	return d.Spec.Template.Spec.Containers[0]
}

func TestConfigEnv(t *testing.T) {
	for _, tc := range configEnv {
		t.Run("key="+tc.key, func(t *testing.T) {
			env := envMap(container(t, mustRender(t, set("config."+tc.key, tc.val))))
			assert.Equal(t, tc.want, env[tc.env])
		})
	}
	t.Run("empty values leave server defaults", func(t *testing.T) {
		vals := map[string]any{}
		for _, tc := range configEnv {
			vals[tc.key] = ""
		}
		vals["otlpPromoteResourceAttributes"] = []any{}
		env := envMap(container(t, mustRender(t, map[string]any{"config": vals})))
		assert.Equal(t, []string{"GOMEMLIMIT", "KOS_HTTP_ADDR", "KOS_OTLP_GRPC_ADDR", "KOS_SCALER_ADDR"}, slices.Sorted(mapKeys(env)))
	})
	t.Run("extraArgs env envFrom", func(t *testing.T) {
		c := container(t, mustRender(t, set(
			"extraArgs", []any{"--freshness=9s"},
			"env", []any{map[string]any{"name": "GOMEMLIMIT", "value": "900MiB"}},
			"envFrom", []any{map[string]any{"secretRef": map[string]any{"name": "kos-env"}}},
		)))
		assert.Equal(t, []string{"--freshness=9s"}, c.Args)
		assert.Equal(t, "900MiB", envMap(c)["GOMEMLIMIT"])
		require.Len(t, c.EnvFrom, 1)
		assert.Equal(t, "kos-env", c.EnvFrom[0].SecretRef.Name)
	})
	t.Run("ports follow containerPorts", func(t *testing.T) {
		o := mustRender(t, set("containerPorts.otlpGrpc", 14317, "service.scalerPort", 9090))
		env := envMap(container(t, o))
		assert.Equal(t, ":14317", env["KOS_OTLP_GRPC_ADDR"])
		var svc corev1.Service
		o.decode(t, "Service/keda-otel-scaler", &svc)
		assert.Equal(t, int32(9090), svc.Spec.Ports[1].Port)
	})
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// chartHandled are flags the chart sets from dedicated values rather than
// from .Values.config.
var chartHandled = map[string]string{
	"otlp-grpc-addr":     "containerPorts.otlpGrpc",
	"scaler-addr":        "containerPorts.scaler",
	"http-addr":          "containerPorts.http",
	"state-dir":          "stateDir",
	"tls-cert-file":      "tls",
	"tls-key-file":       "tls",
	"tls-client-ca-file": "tls",
	"ready-after-fresh":  "ha.readyAfterFresh",

	"ready-peers":             "ha.readyPeers",
	"ready-peers-ca-file":     "ha.peerTLS",
	"ready-peers-cert-file":   "ha.peerTLS",
	"ready-peers-key-file":    "ha.peerTLS",
	"ready-peers-server-name": "ha.peerTLS",

	"otlp-tls-cert-file":      "tls.otlp",
	"otlp-tls-key-file":       "tls.otlp",
	"otlp-tls-client-ca-file": "tls.otlp",
	"http-tls-cert-file":      "tls.http",
	"http-tls-key-file":       "tls.http",
	"http-tls-client-ca-file": "tls.http",
	"otlp-bearer-token-file":  "otlpAuth",
}

// TestEveryServerFlagSettable builds the server, lists its flags from --help
// and checks each one is settable from values (its KOS_ env twin renders).
// A new flag without a chart value fails here.
func TestEveryServerFlagSettable(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the server")
	}
	bin := buildServer(t)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--help")
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Run(), out.String())
	flags := regexp.MustCompile(`(?m)^\s+-{1,2}([a-z0-9-]+)`).FindAllStringSubmatch(out.String(), -1)
	require.NotEmpty(t, flags, out.String())

	vals := map[string]any{}
	for _, tc := range configEnv {
		vals[tc.key] = tc.val
	}
	env := envMap(container(t, mustRender(t, map[string]any{"config": vals})))
	for _, f := range flags {
		name := f[1]
		if _, ok := chartHandled[name]; ok {
			continue
		}
		envName := "KOS_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		assert.Containsf(t, env, envName, "server flag --%s has no chart value: add it to values.yaml config, "+
			"the kos.flagEnv map in templates/_helpers.tpl, values.schema.json and the README", name)
	}
}

func TestTLS(t *testing.T) {
	o := mustRender(t, readValues(t, "tls-values.yaml"))
	var d appsv1.Deployment
	o.decode(t, "Deployment/keda-otel-scaler", &d)
	pod := d.Spec.Template.Spec
	require.Len(t, pod.Volumes, 1)
	v := pod.Volumes[0]
	require.NotNil(t, v.Secret)
	assert.Equal(t, "keda-otel-scaler-tls", v.Secret.SecretName)
	var keys []string
	for _, it := range v.Secret.Items {
		keys = append(keys, it.Key)
	}
	assert.Equal(t, []string{"tls.crt", "tls.key", "ca.crt"}, keys)
	c := pod.Containers[0]
	require.Len(t, c.VolumeMounts, 1)
	assert.Equal(t, "tls", c.VolumeMounts[0].Name)
	assert.True(t, c.VolumeMounts[0].ReadOnly)
	assert.Equal(t, "/etc/keda-otel-scaler/tls", c.VolumeMounts[0].MountPath)
	env := envMap(c)
	assert.Equal(t, "/etc/keda-otel-scaler/tls/tls.crt", env["KOS_TLS_CERT_FILE"])
	assert.Equal(t, "/etc/keda-otel-scaler/tls/tls.key", env["KOS_TLS_KEY_FILE"])
	assert.Equal(t, "/etc/keda-otel-scaler/tls/ca.crt", env["KOS_TLS_CLIENT_CA_FILE"])

	t.Run("without CA", func(t *testing.T) {
		o := mustRender(t, set("tls.enabled", true, "tls.secretName", "s", "tls.caKey", ""))
		c := container(t, o)
		assert.NotContains(t, envMap(c), "KOS_TLS_CLIENT_CA_FILE")
		assert.Contains(t, envMap(c), "KOS_TLS_CERT_FILE")
	})
	t.Run("enabled without secret fails", func(t *testing.T) {
		_, err := render(t, set("tls.enabled", true))
		require.ErrorContains(t, err, "tls.secretName")
	})
}

// TestTLSAllListeners renders TLS with client certificates on every
// listener and bearer tokens on ingest: each listener's Secret is mounted
// read-only as a whole volume (no subPath, so rotations reach the pod),
// every chart-handled flag's env twin points into its mount, and the
// probes and the ServiceMonitor follow the HTTP listener's TLS.
func TestTLSAllListeners(t *testing.T) {
	o := mustRender(t, readValues(t, "tls-all-values.yaml"))
	var d appsv1.Deployment
	o.decode(t, "Deployment/keda-otel-scaler", &d)
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		assert.True(t, m.ReadOnly, m.Name)
		assert.Empty(t, m.SubPath, "%s: a subPath mount never sees a rotated Secret", m.Name)
		mounts[m.Name] = m
	}
	secrets := map[string]string{}
	for _, v := range pod.Volumes {
		require.NotNil(t, v.Secret, v.Name)
		secrets[v.Name] = v.Secret.SecretName
	}
	assert.Equal(t, map[string]string{
		"tls": "keda-otel-scaler-tls", "tls-otlp": "keda-otel-scaler-tls", "tls-http": "keda-otel-scaler-tls",
		"otlp-auth": "keda-otel-scaler-otlp-tokens",
	}, secrets)
	env := envMap(c)
	for flag, value := range chartHandled {
		if !strings.HasPrefix(value, "tls") && value != "otlpAuth" {
			continue
		}
		envName := "KOS_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
		assert.Contains(t, env, envName, flag)
	}
	assert.Equal(t, "/etc/keda-otel-scaler/tls-otlp/tls.crt", env["KOS_OTLP_TLS_CERT_FILE"])
	assert.Equal(t, "/etc/keda-otel-scaler/tls-otlp/ca.crt", env["KOS_OTLP_TLS_CLIENT_CA_FILE"])
	assert.Equal(t, "/etc/keda-otel-scaler/tls-http/tls.key", env["KOS_HTTP_TLS_KEY_FILE"])
	assert.Equal(t, "/etc/keda-otel-scaler/otlp-auth/tokens", env["KOS_OTLP_BEARER_TOKEN_FILE"])
	assert.Equal(t, "2s", env["KOS_RELOAD_INTERVAL"])
	// The kubelet presents no client certificate: with mutual TLS on HTTP
	// the probes check the port instead.
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		require.NotNil(t, p)
		assert.Nil(t, p.HTTPGet)
		require.NotNil(t, p.TCPSocket)
		assert.Equal(t, "http", p.TCPSocket.Port.String())
	}
	sm := string(o["ServiceMonitor/keda-otel-scaler"])
	assert.Contains(t, sm, "scheme: https")
	assert.Contains(t, sm, "keySecret:")

	t.Run("HTTPS probes without client certificates", func(t *testing.T) {
		c := container(t, mustRender(t, set("tls.http.enabled", true, "tls.http.secretName", "s")))
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			require.NotNil(t, p.HTTPGet)
			assert.Equal(t, corev1.URISchemeHTTPS, p.HTTPGet.Scheme)
		}
		assert.NotContains(t, envMap(c), "KOS_HTTP_TLS_CLIENT_CA_FILE")
		assert.NotContains(t, envMap(c), "KOS_TLS_CERT_FILE", "the KEDA listener stays as configured")
	})
	t.Run("plaintext by default", func(t *testing.T) {
		c := container(t, mustRender(t, map[string]any{}))
		assert.NotEqual(t, corev1.URISchemeHTTPS, c.ReadinessProbe.HTTPGet.Scheme)
		assert.NotContains(t, string(mustRender(t, set("serviceMonitor.enabled", true))["ServiceMonitor/keda-otel-scaler"]), "https")
		for k := range envMap(c) {
			assert.NotContains(t, k, "TLS")
			assert.NotContains(t, k, "BEARER")
		}
	})
	t.Run("listener without a secret fails", func(t *testing.T) {
		_, err := render(t, set("tls.otlp.enabled", true))
		require.ErrorContains(t, err, "tls.otlp.secretName")
		_, err = render(t, set("otlpAuth.enabled", true))
		require.ErrorContains(t, err, "otlpAuth.secretName")
	})
}

func TestAllOptional(t *testing.T) {
	o := mustRender(t, readValues(t, "all-optional-values.yaml"))

	var np networkingv1.NetworkPolicy
	o.decode(t, "NetworkPolicy/keda-otel-scaler", &np)
	assert.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, np.Spec.PolicyTypes)
	require.Len(t, np.Spec.Ingress, 4)
	byPort := map[string]networkingv1.NetworkPolicyIngressRule{}
	for _, r := range np.Spec.Ingress[:3] {
		require.Len(t, r.Ports, 1)
		byPort[r.Ports[0].Port.String()] = r
	}
	// KEDA operator -> 4318 only.
	keda := byPort["keda"]
	require.Len(t, keda.From, 1)
	assert.Equal(t, "keda", keda.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"])
	assert.Equal(t, "keda-operator", keda.From[0].PodSelector.MatchLabels["app.kubernetes.io/name"])
	// Collectors in any namespace -> 4317.
	otlp := byPort["otlp-grpc"]
	require.Len(t, otlp.From, 1)
	require.NotNil(t, otlp.From[0].NamespaceSelector)
	assert.Empty(t, otlp.From[0].NamespaceSelector.MatchLabels)
	assert.Nil(t, otlp.From[0].PodSelector)
	// Scrapers -> 8080 (restricted to monitoring by this values file).
	httpRule := byPort["http"]
	require.Len(t, httpRule.From, 1)
	assert.Equal(t, "monitoring", httpRule.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"])
	assert.Equal(t, "10.0.0.0/8", np.Spec.Ingress[3].From[0].IPBlock.CIDR)

	var pdb policyv1.PodDisruptionBudget
	o.decode(t, "PodDisruptionBudget/keda-otel-scaler", &pdb)
	require.NotNil(t, pdb.Spec.MaxUnavailable)
	assert.Equal(t, intstr.FromInt32(1), *pdb.Spec.MaxUnavailable)
	assert.Nil(t, pdb.Spec.MinAvailable)
	assert.Equal(t, "keda-otel-scaler", pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"])

	var sm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string            `json:"name"`
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			NamespaceSelector struct {
				MatchNames []string `json:"matchNames"`
			} `json:"namespaceSelector"`
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Endpoints []struct {
				Port              string           `json:"port"`
				Path              string           `json:"path"`
				Scheme            string           `json:"scheme"`
				Interval          string           `json:"interval"`
				ScrapeTimeout     string           `json:"scrapeTimeout"`
				Relabelings       []map[string]any `json:"relabelings"`
				MetricRelabelings []map[string]any `json:"metricRelabelings"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	o.decode(t, "ServiceMonitor/keda-otel-scaler", &sm)
	assert.Equal(t, "monitoring.coreos.com/v1", sm.APIVersion)
	assert.Equal(t, "monitoring", sm.Metadata.Namespace)
	assert.Equal(t, "kube-prometheus-stack", sm.Metadata.Labels["release"])
	assert.Equal(t, []string{"keda"}, sm.Spec.NamespaceSelector.MatchNames)
	require.Len(t, sm.Spec.Endpoints, 1)
	ep := sm.Spec.Endpoints[0]
	assert.Equal(t, "http", ep.Port)
	assert.Equal(t, "/metrics", ep.Path)
	assert.Equal(t, "15s", ep.Interval)
	assert.Len(t, ep.Relabelings, 1)
	assert.Len(t, ep.MetricRelabelings, 1)
	var svc corev1.Service
	o.decode(t, "Service/keda-otel-scaler", &svc)
	for k, v := range sm.Spec.Selector.MatchLabels {
		assert.Equal(t, v, svc.Labels[k], "ServiceMonitor selects the Service by %s", k)
	}

	var d appsv1.Deployment
	o.decode(t, "Deployment/keda-otel-scaler", &d)
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	assert.Equal(t, "ghcr.io/keda-otel-scaler/keda-otel-scaler@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", c.Image)
	env := envMap(c)
	for _, tc := range configEnv {
		assert.Contains(t, env, tc.env)
	}
	assert.Equal(t, "/var/lib/keda-otel-scaler", env["KOS_STATE_DIR"])
	assert.Equal(t, "900MiB", env["GOMEMLIMIT"])
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	assert.Equal(t, map[string]string{"state": "/var/lib/keda-otel-scaler", "tmp": "/tmp"}, mounts)
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	require.Contains(t, vols, "state")
	require.NotNil(t, vols["state"].PersistentVolumeClaim)
	assert.Equal(t, "keda-otel-scaler-state", vols["state"].PersistentVolumeClaim.ClaimName)
	assert.Nil(t, vols["state"].EmptyDir, "a PVC replaces the default emptyDir, not merged with it")
	assert.Equal(t, "system-cluster-critical", pod.PriorityClassName)
	assert.Equal(t, "linux", pod.NodeSelector["kubernetes.io/os"])
	assert.Len(t, pod.Tolerations, 1)
	assert.NotNil(t, pod.Affinity)
	assert.Len(t, pod.TopologySpreadConstraints, 1)
	assert.Equal(t, "regcred", pod.ImagePullSecrets[0].Name)
	assert.Equal(t, "autoscaling", d.Spec.Template.Labels["tier"])
	assert.Equal(t, "ml-platform", d.Labels["team"])
}

func TestStateDirDefaultVolume(t *testing.T) {
	o := mustRender(t, set("stateDir.enabled", true))
	var d appsv1.Deployment
	o.decode(t, "Deployment/keda-otel-scaler", &d)
	require.Len(t, d.Spec.Template.Spec.Volumes, 1)
	v := d.Spec.Template.Spec.Volumes[0]
	assert.Equal(t, "state", v.Name)
	require.NotNil(t, v.EmptyDir)
	assert.Equal(t, "2Gi", v.EmptyDir.SizeLimit.String())
	c := d.Spec.Template.Spec.Containers[0]
	assert.Equal(t, "/var/lib/keda-otel-scaler", envMap(c)["KOS_STATE_DIR"])
	require.Len(t, c.VolumeMounts, 1)
	assert.False(t, c.VolumeMounts[0].ReadOnly, "the state dir is writable")
}

// TestRenderedWhitespace keeps the rendered manifests free of trailing
// spaces (kubectl diff noise, and a sign of template indentation slips).
func TestRenderedWhitespace(t *testing.T) {
	for _, f := range valuesFiles {
		o := mustRender(t, readValues(t, f))
		for k, raw := range o {
			for i, l := range strings.Split(string(raw), "\n") {
				assert.Equalf(t, strings.TrimRight(l, " \t"), l, "%s %s line %d has trailing whitespace", f, k, i+1)
			}
		}
	}
}

func TestFullnameOverride(t *testing.T) {
	o := mustRender(t, set("fullnameOverride", "otel-scaler"))
	assert.Equal(t, []string{"Deployment/otel-scaler", "Service/otel-scaler", "ServiceAccount/otel-scaler"}, o.kinds())
}

// TestSchemaRejects checks values.schema.json catches typos and bad types
// before anything renders.
func TestSchemaRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"unknown top-level key", set("replicas", 2), "replicas"},
		{"typo in config", set("config.freshnes", "10s"), "freshnes"},
		{"bad duration", set("config.freshness", "ten seconds"), "freshness"},
		{"bad size", set("config.otlpMaxRecvSize", "64MB"), "otlpMaxRecvSize"},
		{"label length takes plain bytes", set("config.maxLabelValueLength", "4KiB"), "maxLabelValueLength"},
		{"bad log level", set("config.logLevel", "verbose"), "logLevel"},
		{"bad delta policy", set("config.otlpDelta", "keep"), "otlpDelta"},
		{"replicaCount string", set("replicaCount", "two"), "replicaCount"},
		{"port out of range", set("service.scalerPort", 70000), "scalerPort"},
		{"bad strategy", set("strategy.type", "BlueGreen"), "type"},
		{"relative state dir", set("stateDir.path", "state"), "path"},
		{"selector with braces", set("prometheusRule.selector", `{job="x"}`), "selector"},
		{"series ratio above 1", set("prometheusRule.seriesLimitRatio", 1.5), "seriesLimitRatio"},
		{"typo in prometheusRule", set("prometheusRule.enable", true), "enable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, tc.vals)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("accepted forms", func(t *testing.T) {
		for _, v := range []map[string]any{
			set("config.freshness", "1m30s"), set("config.freshness", "1.5s"), set("config.warmup", "0"),
			set("config.maxSeries", "1000"), set("config.maxSeries", 1000), set("config.otlpMaxRecvSize", "64MiB"),
			set("global.imageRegistry", "x"),
		} {
			_, err := render(t, v)
			assert.NoError(t, err, "%v", v)
		}
	})
}

// TestReadmeDocumentsEveryValue walks values.yaml and requires each leaf
// path to appear in the chart README's table.
func TestReadmeDocumentsEveryValue(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	var vals map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &vals))
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	require.NoError(t, err)
	for _, p := range leafPaths("", vals) {
		assert.Containsf(t, string(readme), "`"+p+"`", "README.md does not document %s", p)
	}
}

// leafPaths lists documented value paths: maps are walked, except free-form
// ones (securityContext, resources, probes, selectors, volume sources).
func leafPaths(prefix string, m map[string]any) []string {
	freeForm := map[string]bool{
		"podSecurityContext": true, "securityContext": true, "resources": true, "readinessProbe": true,
		"livenessProbe": true, "startupProbe": true, "stateDir.volume": true, "stateDir.volumeClaimTemplate": true, "stateDir.claimRetentionPolicy": true, "strategy": true, "collector.resources": true,
	}
	var out []string
	for k, v := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 && !freeForm[p] {
			out = append(out, leafPaths(p, sub)...)
			continue
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// TestGoMemLimit: the scaler gets GOMEMLIMIT at goMemLimitPercent of its
// memory limit (the capacity sweep's RSS doubled past the live heap
// without it), an explicit goMemLimit, or none ("off", no limit, or the
// user's own in env, which is then the only one).
func TestGoMemLimit(t *testing.T) {
	lim := func(mem string) map[string]any {
		return map[string]any{"limits": map[string]any{"memory": mem}, "requests": map[string]any{"cpu": "100m"}}
	}
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string // "" = no GOMEMLIMIT
	}{
		{"default", nil, "1740MiB"},
		{"1Gi", set("resources", lim("1Gi")), "870MiB"},
		{"1500Mi", set("resources", lim("1500Mi")), "1275MiB"},
		{"decimal 2G", set("resources", lim("2G")), "1621MiB"},
		{"percent", set("goMemLimitPercent", 50), "1024MiB"},
		{"explicit", set("goMemLimit", "1GiB"), "1GiB"},
		{"off", set("goMemLimit", "off"), ""},
		{"no memory limit", set("resources", map[string]any{"limits": nil}), ""},
		{"HA pods too", set("ha.enabled", true), "1740MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod, _ := mustRender(t, tc.vals).workload(t)
			env, ok := envMap(pod.Spec.Containers[0])["GOMEMLIMIT"]
			assert.Equal(t, tc.want != "", ok)
			assert.Equal(t, tc.want, env)
		})
	}
	t.Run("the user's env wins alone", func(t *testing.T) {
		c := container(t, mustRender(t, set("env", []any{map[string]any{"name": "GOMEMLIMIT", "value": "900MiB"}})))
		var n int
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" {
				n++
				assert.Equal(t, "900MiB", e.Value)
			}
		}
		assert.Equal(t, 1, n)
	})
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"fractional limit", set("resources", lim("1.5Gi")), "set goMemLimit"},
		{"bad goMemLimit", set("goMemLimit", "lots"), "goMemLimit"},
		{"percent above 100", set("goMemLimitPercent", 120), "goMemLimitPercent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, tc.vals)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestStartupProbe: the liveness probe waits for the first /healthz, which
// the server serves only after restoring --state-dir, and the default
// startup budget covers the slowest measured restore of the largest store
// the default flags hold (1M series with a full window: 56 s of wall time,
// README "State directory and checkpoints") several times over, in single
// and HA mode, with TLS as the other probes; null removes it.
func TestStartupProbe(t *testing.T) {
	const slowestRestore = 56 // seconds, make checkpoint-figures at 1M series
	for _, tc := range []struct {
		name string
		vals map[string]any
	}{
		{"single", nil},
		{"HA", set("ha.enabled", true)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod, _ := mustRender(t, tc.vals).workload(t)
			c := pod.Spec.Containers[0]
			p := c.StartupProbe
			require.NotNil(t, p)
			require.NotNil(t, p.HTTPGet)
			assert.Equal(t, "/healthz", p.HTTPGet.Path)
			assert.Equal(t, intstr.FromString("http"), p.HTTPGet.Port)
			budget := p.PeriodSeconds * p.FailureThreshold
			assert.GreaterOrEqual(t, budget, int32(4*slowestRestore), "startup budget %ds", budget)
			// The liveness probe alone would kill a restoring pod.
			l := c.LivenessProbe
			assert.Less(t, l.InitialDelaySeconds+l.PeriodSeconds*l.FailureThreshold, int32(slowestRestore))
		})
	}
	t.Run("mutual TLS checks the port", func(t *testing.T) {
		c := container(t, mustRender(t, set("tls.http.enabled", true, "tls.http.secretName", "s", "tls.http.caKey", "ca.crt")))
		require.NotNil(t, c.StartupProbe)
		assert.Nil(t, c.StartupProbe.HTTPGet)
		require.NotNil(t, c.StartupProbe.TCPSocket)
	})
	t.Run("HTTPS", func(t *testing.T) {
		c := container(t, mustRender(t, set("tls.http.enabled", true, "tls.http.secretName", "s")))
		require.NotNil(t, c.StartupProbe.HTTPGet)
		assert.Equal(t, corev1.URISchemeHTTPS, c.StartupProbe.HTTPGet.Scheme)
	})
	t.Run("configurable", func(t *testing.T) {
		c := container(t, mustRender(t, set("startupProbe.failureThreshold", 240)))
		assert.Equal(t, int32(240), c.StartupProbe.FailureThreshold)
		assert.Equal(t, "/healthz", c.StartupProbe.HTTPGet.Path)
	})
	t.Run("null disables", func(t *testing.T) {
		c := container(t, mustRender(t, map[string]any{"startupProbe": nil}))
		assert.Nil(t, c.StartupProbe)
	})
	t.Run("schema", func(t *testing.T) {
		_, err := render(t, set("startupProbe.failureThreshold", 0))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "failureThreshold")
	})
}
