package helm

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	examplesDir    = "../../examples"
	scalerAddress  = "keda-otel-scaler.keda.svc:4318"
	otlpEndpoint   = "keda-otel-scaler.keda.svc:4317"
	exampleNS      = "llm"
	exampleDeploy  = "vllm-qwen"
	kserveISVCName = "qwen"
)

// The structs below mirror the CRDs' fields (KEDA v2.21 apis/keda/v1alpha1,
// KServe v1beta1, OpenTelemetry Operator v1beta1) for what the examples use.
// They are decoded strictly, so a misspelt or misplaced field fails.

type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef *struct {
			Name       string `json:"name"`
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
		} `json:"scaleTargetRef"`
		PollingInterval       *int32 `json:"pollingInterval,omitempty"`
		InitialCooldownPeriod *int32 `json:"initialCooldownPeriod,omitempty"`
		CooldownPeriod        *int32 `json:"cooldownPeriod,omitempty"`
		IdleReplicaCount      *int32 `json:"idleReplicaCount,omitempty"`
		MinReplicaCount       *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount       *int32 `json:"maxReplicaCount,omitempty"`
		Advanced              *struct {
			HorizontalPodAutoscalerConfig *struct {
				Name     string                                         `json:"name,omitempty"`
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
			RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type              string            `json:"type"`
			Name              string            `json:"name,omitempty"`
			UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
				Kind string `json:"kind,omitempty"`
			} `json:"authenticationRef,omitempty"`
			MetricType autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
		} `json:"triggers"`
	} `json:"spec"`
}

type triggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef,omitempty"`
	} `json:"spec"`
}

type inferenceService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Predictor struct {
			MinReplicas *int32 `json:"minReplicas,omitempty"`
			MaxReplicas int32  `json:"maxReplicas,omitempty"`
			AutoScaling *struct {
				Metrics []struct {
					Type      string `json:"type"`
					PodMetric *struct {
						Metric struct {
							Backend           string   `json:"backend"`
							MetricNames       []string `json:"metricNames,omitempty"`
							Query             string   `json:"query,omitempty"`
							OperationOverTime string   `json:"operationOverTime,omitempty"`
							ServerAddress     string   `json:"serverAddress,omitempty"`
						} `json:"metric"`
						Target struct {
							Type  string `json:"type"`
							Value string `json:"value,omitempty"`
						} `json:"target"`
					} `json:"podmetric,omitempty"`
				} `json:"metrics"`
			} `json:"autoScaling,omitempty"`
			Model *struct {
				ModelFormat struct {
					Name string `json:"name"`
				} `json:"modelFormat"`
				Args      []string                    `json:"args,omitempty"`
				Resources corev1.ResourceRequirements `json:"resources,omitempty"`
			} `json:"model,omitempty"`
		} `json:"predictor"`
	} `json:"spec"`
}

type otelCollectorCR struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Mode      string                      `json:"mode"`
		Resources corev1.ResourceRequirements `json:"resources,omitempty"`
		Config    collectorConfig             `json:"config"`
	} `json:"spec"`
}

// collectorConfig is the part of a collector config the examples use.
type collectorConfig struct {
	Receivers struct {
		Prometheus struct {
			Config struct {
				ScrapeConfigs []struct {
					JobName        string `json:"job_name"`
					ScrapeInterval string `json:"scrape_interval"`
					StaticConfigs  []struct {
						Targets []string `json:"targets"`
					} `json:"static_configs"`
				} `json:"scrape_configs"`
			} `json:"config"`
		} `json:"prometheus"`
	} `json:"receivers"`
	Processors struct {
		ResourceDetectionEnv struct {
			Detectors []string `json:"detectors"`
			Timeout   string   `json:"timeout"`
			Override  *bool    `json:"override"`
		} `json:"resourcedetection/env"`
		Transform struct {
			MetricStatements []struct {
				Context    string   `json:"context"`
				Statements []string `json:"statements"`
			} `json:"metric_statements"`
		} `json:"transform"`
		FilterMetrics struct {
			Metrics struct {
				Include struct {
					MatchType   string   `json:"match_type"`
					MetricNames []string `json:"metric_names"`
				} `json:"include"`
			} `json:"metrics"`
		} `json:"filter/metrics"`
	} `json:"processors"`
	Exporters struct {
		OTLP struct {
			Endpoint    string `json:"endpoint"`
			Compression string `json:"compression,omitempty"`
			TLS         struct {
				Insecure bool `json:"insecure"`
			} `json:"tls"`
		} `json:"otlp"`
	} `json:"exporters"`
	Service struct {
		Pipelines map[string]struct {
			Receivers  []string `json:"receivers"`
			Processors []string `json:"processors"`
			Exporters  []string `json:"exporters"`
		} `json:"pipelines"`
	} `json:"service"`
}

// docs splits a multi-document YAML file.
func docs(t *testing.T, path string) [][]byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	r := yamlutil.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if len(bytes.TrimSpace(stripComments(d))) > 0 {
			out = append(out, d)
		}
	}
	return out
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func kindOf(t *testing.T, doc []byte) (apiVersion, kind string) {
	t.Helper()
	var tm metav1.TypeMeta
	require.NoError(t, yaml.Unmarshal(doc, &tm))
	return tm.APIVersion, tm.Kind
}

func strict(t *testing.T, doc []byte, into any) {
	t.Helper()
	require.NoError(t, unmarshalStrict(doc, into), string(doc))
}

// TestExamplesParse walks every YAML file under examples/ and requires each
// document to decode strictly into the type its apiVersion/kind names.
func TestExamplesParse(t *testing.T) {
	var files []string
	require.NoError(t, filepath.WalkDir(examplesDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(p, filepath.Join(examplesDir, "grafana")) {
			return nil // owned elsewhere
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return nil
	}))
	require.NotEmpty(t, files)
	kinds := map[string]int{}
	for _, f := range files {
		t.Run(strings.TrimPrefix(f, examplesDir+"/"), func(t *testing.T) {
			switch filepath.Base(f) {
			case "collector-config.yaml":
				var c collectorConfig
				strict(t, mustRead(t, f), &c)
				kinds["collector-config"]++
				return
			case "collector-exporters.yaml":
				checkTLSCollector(t, mustRead(t, f))
				kinds["collector-exporters"]++
				return
			case "kserve-configmap-patch.yaml":
				var p struct {
					Data map[string]string `json:"data"`
				}
				strict(t, mustRead(t, f), &p)
				kinds["configmap-patch"]++
				return
			}
			for _, d := range docs(t, f) {
				apiVersion, kind := kindOf(t, d)
				kinds[kind]++
				var into any
				switch apiVersion + "/" + kind {
				case "apps/v1/Deployment":
					into = &appsv1.Deployment{}
				case "v1/Service":
					into = &corev1.Service{}
				case "keda.sh/v1alpha1/ScaledObject":
					into = &scaledObject{}
				case "keda.sh/v1alpha1/TriggerAuthentication":
					into = &triggerAuthentication{}
				case "serving.kserve.io/v1beta1/InferenceService":
					into = &inferenceService{}
				case "opentelemetry.io/v1beta1/OpenTelemetryCollector":
					into = &otelCollectorCR{}
				case "cert-manager.io/v1/Certificate", "cert-manager.io/v1/Issuer":
					into = &certManagerObject{}
				default:
					t.Fatalf("%s: unexpected %s %s", f, apiVersion, kind)
				}
				strict(t, d, into)
			}
		})
	}
	for _, k := range []string{
		"Deployment", "Service", "ScaledObject", "TriggerAuthentication", "InferenceService",
		"OpenTelemetryCollector", "collector-config", "configmap-patch",
		"Certificate", "Issuer", "collector-exporters",
	} {
		assert.NotZerof(t, kinds[k], "no example of %s", k)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return b
}

func loadScaledObjects(t *testing.T, file string) []scaledObject {
	t.Helper()
	var out []scaledObject
	for _, d := range docs(t, filepath.Join(examplesDir, file)) {
		if _, k := kindOf(t, d); k != "ScaledObject" {
			continue
		}
		var so scaledObject
		strict(t, d, &so)
		out = append(out, so)
	}
	require.NotEmpty(t, out, file)
	return out
}

var (
	metricNameRE = regexp.MustCompile(`vllm:[a-z_]+`)
	selectorRE   = regexp.MustCompile(`\{([^}]*)\}`)
)

// familyName maps a queried name to the OTLP family the collector filter
// must keep.
func familyName(n string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if strings.HasSuffix(n, s) {
			return strings.TrimSuffix(n, s)
		}
	}
	return n
}

// collectorFilter is the metric list of examples/collector/collector-config.yaml.
func collectorFilter(t *testing.T) []string {
	var c collectorConfig
	strict(t, mustRead(t, filepath.Join(examplesDir, "collector", "collector-config.yaml")), &c)
	return c.Processors.FilterMetrics.Metrics.Include.MetricNames
}

func TestExampleScaledObjects(t *testing.T) {
	var dep appsv1.Deployment
	for _, d := range docs(t, filepath.Join(examplesDir, "vllm", "deployment.yaml")) {
		if _, k := kindOf(t, d); k == "Deployment" {
			strict(t, d, &dep)
		}
	}
	require.Equal(t, exampleDeploy, dep.Name)
	require.Equal(t, exampleNS, dep.Namespace)
	filter := collectorFilter(t)

	for _, tc := range []struct {
		file        string
		triggerType string
		signals     []string
	}{
		{"scaledobjects/external.yaml", "external", []string{"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds_bucket"}},
		{"scaledobjects/external-push.yaml", "external-push", []string{"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds_bucket"}},
		{"tls/triggerauthentication.yaml", "external", []string{"vllm:num_requests_waiting"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			sos := loadScaledObjects(t, tc.file)
			require.Len(t, sos, 1)
			so := sos[0]
			assert.Equal(t, exampleNS, so.Namespace)
			require.NotNil(t, so.Spec.ScaleTargetRef)
			assert.Equal(t, dep.Name, so.Spec.ScaleTargetRef.Name, "scales the example Deployment")
			require.NotNil(t, so.Spec.MinReplicaCount)
			assert.GreaterOrEqual(t, *so.Spec.MinReplicaCount, int32(1), "pod metrics cannot scale from zero")
			require.NotNil(t, so.Spec.MaxReplicaCount)
			assert.Greater(t, *so.Spec.MaxReplicaCount, *so.Spec.MinReplicaCount)
			var seen []string
			names := map[string]bool{}
			for _, tr := range so.Spec.Triggers {
				assert.Equal(t, tc.triggerType, tr.Type)
				assert.False(t, names[tr.Name], "trigger names are unique")
				names[tr.Name] = true
				md := tr.Metadata
				assert.Equal(t, scalerAddress, md["scalerAddress"])
				q := md["metricQuery"]
				require.NotEmpty(t, q, "metricQuery")
				assert.NotEmpty(t, md["targetValue"], "targetValue")
				assert.Contains(t, []autoscalingv2.MetricTargetType{"", autoscalingv2.AverageValueMetricType, autoscalingv2.ValueMetricType}, tr.MetricType)
				assert.Equal(t, strings.Count(q, "("), strings.Count(q, ")"), "balanced parentheses in %s", q)
				// Every selector filters on the example's namespace and Deployment,
				// the labels the collector's transform adds.
				sels := selectorRE.FindAllStringSubmatch(q, -1)
				require.NotEmpty(t, sels, q)
				for _, s := range sels {
					assert.Contains(t, s[1], `namespace="`+exampleNS+`"`, q)
					assert.Contains(t, s[1], `deployment="`+exampleDeploy+`"`, q)
				}
				for _, n := range metricNameRE.FindAllString(q, -1) {
					seen = append(seen, n)
					assert.Containsf(t, filter, familyName(n), "collector filter keeps %s (family of %s)", familyName(n), n)
				}
				// Per-pod figures and quantiles need metricType Value.
				if strings.HasPrefix(q, "max(") || strings.HasPrefix(q, "histogram_quantile(") {
					assert.Equal(t, autoscalingv2.ValueMetricType, tr.MetricType, q)
				}
				if strings.HasPrefix(q, "sum(") {
					assert.NotEqual(t, autoscalingv2.ValueMetricType, tr.MetricType, q)
				}
				if tc.file == "tls/triggerauthentication.yaml" {
					require.NotNil(t, tr.AuthenticationRef)
					assert.Equal(t, "keda-otel-scaler-tls", tr.AuthenticationRef.Name)
				}
			}
			assert.ElementsMatch(t, tc.signals, seen)
		})
	}
}

func TestExampleTriggerAuthentication(t *testing.T) {
	var ta triggerAuthentication
	for _, d := range docs(t, filepath.Join(examplesDir, "tls", "triggerauthentication.yaml")) {
		if _, k := kindOf(t, d); k == "TriggerAuthentication" {
			strict(t, d, &ta)
		}
	}
	assert.Equal(t, "keda-otel-scaler-tls", ta.Name)
	assert.Equal(t, exampleNS, ta.Namespace)
	params := map[string]string{}
	for _, r := range ta.Spec.SecretTargetRef {
		params[r.Parameter] = r.Name + "/" + r.Key
	}
	// The parameters KEDA's external scaler reads for TLS.
	assert.Equal(t, map[string]string{
		"caCert":        "keda-otel-scaler-client/ca.crt",
		"tlsClientCert": "keda-otel-scaler-client/tls.crt",
		"tlsClientKey":  "keda-otel-scaler-client/tls.key",
	}, params)
}

// assertKServeLikeCollector checks a collector config has KServe's sidecar
// pipeline and points at the chart's OTLP Service.
func assertKServeLikeCollector(t *testing.T, c collectorConfig, wantEndpoint, wantTarget string) {
	t.Helper()
	sc := c.Receivers.Prometheus.Config.ScrapeConfigs
	require.Len(t, sc, 1)
	assert.Equal(t, "otel-collector", sc[0].JobName)
	assert.Contains(t, sc[0].ScrapeInterval, "5s")
	require.Len(t, sc[0].StaticConfigs, 1)
	assert.Equal(t, []string{wantTarget}, sc[0].StaticConfigs[0].Targets)

	assert.Equal(t, []string{"env"}, c.Processors.ResourceDetectionEnv.Detectors)
	require.NotNil(t, c.Processors.ResourceDetectionEnv.Override)
	assert.False(t, *c.Processors.ResourceDetectionEnv.Override)
	require.Len(t, c.Processors.Transform.MetricStatements, 1)
	ms := c.Processors.Transform.MetricStatements[0]
	assert.Equal(t, "datapoint", ms.Context)
	assert.Equal(t, []string{
		`set(attributes["namespace"], resource.attributes["k8s.namespace.name"])`,
		`set(attributes["deployment"], resource.attributes["k8s.deployment.name"])`,
		`set(attributes["pod"], resource.attributes["k8s.pod.name"])`,
	}, ms.Statements)
	inc := c.Processors.FilterMetrics.Metrics.Include
	assert.Equal(t, "strict", inc.MatchType)
	for _, n := range inc.MetricNames {
		assert.Equal(t, familyName(n), n, "filter lists OTLP family names, not %s", n)
	}
	assert.Equal(t, wantEndpoint, c.Exporters.OTLP.Endpoint)
	assert.True(t, c.Exporters.OTLP.TLS.Insecure)
	p, ok := c.Service.Pipelines["metrics"]
	require.True(t, ok)
	assert.Equal(t, []string{"prometheus"}, p.Receivers)
	assert.Equal(t, []string{"resourcedetection/env", "transform", "filter/metrics"}, p.Processors)
	assert.Equal(t, []string{"otlp"}, p.Exporters)
}

func TestExampleCollectors(t *testing.T) {
	t.Run("OpenTelemetryCollector sidecar", func(t *testing.T) {
		var cr otelCollectorCR
		for _, d := range docs(t, filepath.Join(examplesDir, "vllm", "otel-sidecar.yaml")) {
			strict(t, d, &cr)
		}
		assert.Equal(t, "sidecar", cr.Spec.Mode)
		assert.Equal(t, exampleNS, cr.Namespace)
		assertKServeLikeCollector(t, cr.Spec.Config, otlpEndpoint, "localhost:8000")

		// The Deployment's pods ask the operator for exactly this collector.
		var dep appsv1.Deployment
		for _, d := range docs(t, filepath.Join(examplesDir, "vllm", "deployment.yaml")) {
			if _, k := kindOf(t, d); k == "Deployment" {
				strict(t, d, &dep)
			}
		}
		assert.Equal(t, cr.Name, dep.Spec.Template.Annotations["sidecar.opentelemetry.io/inject"])
		require.NotEmpty(t, dep.Spec.Template.Spec.Containers)
		assert.Equal(t, int32(8000), dep.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort, "scrape target port")
	})
	t.Run("plain config", func(t *testing.T) {
		var c collectorConfig
		strict(t, mustRead(t, filepath.Join(examplesDir, "collector", "collector-config.yaml")), &c)
		assertKServeLikeCollector(t, c,
			"${env:KEDA_OTEL_SCALER_ENDPOINT:-"+otlpEndpoint+"}",
			"${env:VLLM_METRICS_TARGET:-localhost:8000}")
		assert.Equal(t, "${env:SCRAPE_INTERVAL:-5s}", c.Receivers.Prometheus.Config.ScrapeConfigs[0].ScrapeInterval)
		assert.Empty(t, c.Exporters.OTLP.Compression, "the exporter's default (gzip)")
	})
	t.Run("explicit sidecar container", func(t *testing.T) {
		var dep appsv1.Deployment
		for _, d := range docs(t, filepath.Join(examplesDir, "collector", "vllm-with-collector.yaml")) {
			strict(t, d, &dep)
		}
		require.Len(t, dep.Spec.Template.Spec.Containers, 2)
		col := dep.Spec.Template.Spec.Containers[1]
		var attrs string
		for _, e := range col.Env {
			if e.Name == "OTEL_RESOURCE_ATTRIBUTES" {
				attrs = e.Value
			}
		}
		for _, k := range []string{"k8s.namespace.name=", "k8s.deployment.name=" + dep.Name, "k8s.pod.name="} {
			assert.Contains(t, attrs, k)
		}
	})
}

func TestExampleInferenceService(t *testing.T) {
	var isvc inferenceService
	for _, d := range docs(t, filepath.Join(examplesDir, "kserve", "inferenceservice.yaml")) {
		strict(t, d, &isvc)
	}
	assert.Equal(t, "serving.kserve.io/v1beta1", isvc.APIVersion)
	assert.Equal(t, kserveISVCName, isvc.Name)
	assert.Equal(t, "keda", isvc.Annotations["serving.kserve.io/autoscalerClass"])
	assert.Contains(t, []string{"Standard", "RawDeployment"}, isvc.Annotations["serving.kserve.io/deploymentMode"])
	assert.Equal(t, isvc.Name+"-predictor", isvc.Annotations["sidecar.opentelemetry.io/inject"],
		"KServe names the sidecar collector <isvc>-predictor")
	p := isvc.Spec.Predictor
	require.NotNil(t, p.MinReplicas)
	assert.GreaterOrEqual(t, *p.MinReplicas, int32(1))
	require.NotNil(t, p.AutoScaling)
	require.Len(t, p.AutoScaling.Metrics, 1)
	m := p.AutoScaling.Metrics[0]
	assert.Equal(t, "PodMetric", m.Type)
	require.NotNil(t, m.PodMetric)
	assert.Equal(t, "opentelemetry", m.PodMetric.Metric.Backend)
	assert.NotEmpty(t, m.PodMetric.Metric.Query)
	assert.Empty(t, m.PodMetric.Metric.ServerAddress, "the configmap's metricScalerEndpoint applies")
	v := m.PodMetric.Target.Value
	assert.NotContains(t, []string{"", "0"}, v, "KServe's default 0 is rejected by the scaler")
	for _, n := range metricNameRE.FindAllString(m.PodMetric.Metric.Query, -1) {
		assert.Contains(t, m.PodMetric.Metric.MetricNames, familyName(n), "the sidecar filter keeps %s", n)
	}
	for _, n := range m.PodMetric.Metric.MetricNames {
		assert.Equal(t, familyName(n), n, "metricNames are OTLP family names")
	}

	var patch struct {
		Data map[string]string `json:"data"`
	}
	strict(t, mustRead(t, filepath.Join(examplesDir, "kserve", "kserve-configmap-patch.yaml")), &patch)
	var otel struct {
		ScrapeInterval         string `json:"scrapeInterval"`
		MetricReceiverEndpoint string `json:"metricReceiverEndpoint"`
		MetricScalerEndpoint   string `json:"metricScalerEndpoint"`
	}
	require.NoError(t, unmarshalStrict([]byte(patch.Data["opentelemetryCollector"]), &otel))
	assert.Equal(t, otlpEndpoint, otel.MetricReceiverEndpoint)
	assert.Equal(t, scalerAddress, otel.MetricScalerEndpoint)
	assert.Equal(t, "5s", otel.ScrapeInterval)
}

// TestExamplesMatchChartDefaults renders the chart's default release and
// checks the examples' addresses resolve to its Service and ports.
func TestExamplesMatchChartDefaults(t *testing.T) {
	o := mustRender(t, nil)
	var svc corev1.Service
	o.decode(t, "Service/keda-otel-scaler", &svc)
	host := svc.Name + "." + svc.Namespace + ".svc"
	ports := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = p.Port
	}
	assert.Equal(t, scalerAddress, host+":"+itoa(ports["keda"]))
	assert.Equal(t, otlpEndpoint, host+":"+itoa(ports["otlp-grpc"]))
	httpEndpoint := host + ":" + itoa(ports["http"])
	// No example points anywhere else.
	addrRE := regexp.MustCompile(`keda-otel-scaler[a-z0-9.-]*:[0-9]+`)
	require.NoError(t, filepath.WalkDir(examplesDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(p, filepath.Join(examplesDir, "grafana")) {
			return err
		}
		for _, a := range addrRE.FindAllString(string(mustRead(t, p)), -1) {
			assert.Contains(t, []string{scalerAddress, otlpEndpoint, httpEndpoint}, a, p)
		}
		return nil
	}))
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }

// certManagerObject is the part of cert-manager's Issuer and Certificate
// the TLS example uses.
type certManagerObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
		IsCA        bool     `json:"isCA,omitempty"`
		CommonName  string   `json:"commonName,omitempty"`
		SecretName  string   `json:"secretName,omitempty"`
		Duration    string   `json:"duration,omitempty"`
		RenewBefore string   `json:"renewBefore,omitempty"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		Usages      []string `json:"usages,omitempty"`
		PrivateKey  *struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey,omitempty"`
		IssuerRef *struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"issuerRef,omitempty"`
	} `json:"spec"`
}

// tlsExporter is an otlp or otlphttp exporter with TLS and bearer auth.
type tlsExporter struct {
	Endpoint string `json:"endpoint"`
	TLS      struct {
		CAFile         string `json:"ca_file"`
		CertFile       string `json:"cert_file"`
		KeyFile        string `json:"key_file"`
		ReloadInterval string `json:"reload_interval"`
	} `json:"tls"`
	Auth struct {
		Authenticator string `json:"authenticator"`
	} `json:"auth"`
}

// checkTLSCollector decodes examples/tls/collector-exporters.yaml strictly:
// the pipeline of collector-config.yaml, both exporters verifying the
// scaler's certificate, presenting a client certificate and sending the
// bearertokenauth token, and the extension enabled.
func checkTLSCollector(t *testing.T, raw []byte) {
	t.Helper()
	var c struct {
		Extensions struct {
			BearerTokenAuth struct {
				Filename string `json:"filename"`
			} `json:"bearertokenauth"`
		} `json:"extensions"`
		Receivers  map[string]any `json:"receivers"`
		Processors map[string]any `json:"processors"`
		Exporters  struct {
			OTLP     tlsExporter `json:"otlp"`
			OTLPHTTP tlsExporter `json:"otlphttp"`
		} `json:"exporters"`
		Service struct {
			Extensions []string `json:"extensions"`
			Pipelines  map[string]struct {
				Receivers  []string `json:"receivers"`
				Processors []string `json:"processors"`
				Exporters  []string `json:"exporters"`
			} `json:"pipelines"`
		} `json:"service"`
	}
	strict(t, raw, &c)
	var plain collectorConfig
	strict(t, mustRead(t, filepath.Join(examplesDir, "collector", "collector-config.yaml")), &plain)
	pb, err := yaml.Marshal(map[string]any{"receivers": c.Receivers, "processors": c.Processors})
	require.NoError(t, err)
	var same collectorConfig
	strict(t, pb, &same)
	assert.Equal(t, plain.Receivers, same.Receivers, "the scrape of collector-config.yaml")
	assert.Equal(t, plain.Processors, same.Processors, "the processors of collector-config.yaml")
	assert.Equal(t, "${env:KEDA_OTEL_SCALER_ENDPOINT:-"+otlpEndpoint+"}", c.Exporters.OTLP.Endpoint)
	assert.Equal(t, "${env:KEDA_OTEL_SCALER_HTTP_ENDPOINT:-https://keda-otel-scaler.keda.svc:8080}", c.Exporters.OTLPHTTP.Endpoint)
	for _, e := range []tlsExporter{c.Exporters.OTLP, c.Exporters.OTLPHTTP} {
		assert.NotEmpty(t, e.TLS.CAFile)
		assert.NotEmpty(t, e.TLS.CertFile)
		assert.NotEmpty(t, e.TLS.KeyFile)
		assert.Equal(t, "bearertokenauth", e.Auth.Authenticator)
	}
	assert.NotEmpty(t, c.Extensions.BearerTokenAuth.Filename)
	assert.Equal(t, []string{"bearertokenauth"}, c.Service.Extensions)
	assert.Equal(t, []string{"otlp"}, c.Service.Pipelines["metrics"].Exporters)
}
