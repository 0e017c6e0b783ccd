package k8s

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	// scaleDownWindow is the scale-down stabilisation window KServe copies
	// into the ScaledObject from its configmap (300 s by default): test
	// length here.
	scaleDownWindow = 10
	// predictor is the Deployment KServe creates for the InferenceService
	// "huggingface-qwen" (<isvc>-predictor).
	predictor = "huggingface-qwen-predictor"
	// scenarioTimeout bounds each wait for a replica change.
	scenarioTimeout = 90 * time.Second
)

var scaledObjectGVR = schema.GroupVersionResource{Group: "keda.sh", Version: "v1alpha1", Resource: "scaledobjects"}

// startScaler starts the real keda-otel-scaler binary on loopback ports:
// freshness 5 s (a stopped pod's series end quickly), no warm-up (the store
// starts empty with the scenario).
func startScaler(t *testing.T, name string) (scalerAddrs, *proc) {
	t.Helper()
	p := startProc(t, "scaler-"+name, tools.Scaler, []string{
		"--otlp-grpc-addr=127.0.0.1:0", "--scaler-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0",
		"--log-format=json", "--log-level=info", "--freshness=5s", "--warmup=0",
	}, baseEnv())
	return waitServing(t, p, 30*time.Second), p
}

// createDeployment creates the workload the ScaledObject targets. No
// kubelet runs: its pods stay Pending, and .spec.replicas, .status.replicas
// (pods created) and the HPA's status are what the test observes.
func createDeployment(t *testing.T, c *cluster, ns, name string, replicas int32) {
	t.Helper()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "kserve-container",
					Image: "kserve/huggingfaceserver:v0.16.0",
					Args:  []string{"--model_name=qwen", "--model_id=Qwen/Qwen2.5-0.5B-Instruct", "--backend=vllm"},
				}}},
			},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	require.NoError(t, err)
}

// createScaledObject creates a ScaledObject from YAML and waits until KEDA
// reports it Ready (scaler built, HPA created).
func createScaledObject(t *testing.T, c *cluster, ns, manifest string) {
	t.Helper()
	objs, err := decodeYAMLDocs([]byte(manifest))
	require.NoError(t, err)
	require.Len(t, objs, 1)
	so := objs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err = c.dyn.Resource(scaledObjectGVR).Namespace(ns).Create(ctx, so, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
	require.NoError(t, err)
	require.NoError(t, waitFor(ctx, nil, "ScaledObject "+so.GetName()+" Ready", 60*time.Second, func(ctx context.Context) error {
		o, err := c.dyn.Resource(scaledObjectGVR).Namespace(ns).Get(ctx, so.GetName(), metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
		for _, cd := range conds {
			m, _ := cd.(map[string]any)
			if m["type"] == "Ready" {
				if m["status"] == "True" {
					return nil
				}
				return fmt.Errorf("Ready=%v: %v", m["status"], m["message"])
			}
		}
		return fmt.Errorf("no Ready condition yet")
	}))
}

func getHPA(t *testing.T, c *cluster, ns, so string) *autoscalingv2.HorizontalPodAutoscaler {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "keda-hpa-"+so, metav1.GetOptions{})
	require.NoError(t, err)
	return h
}

// waitHPA waits until the HPA's status has desired replicas want and its one
// external metric's current average value equals avg: the HPA itself read
// our answer through KEDA's adapter and computed ceil(value / target).
func waitHPA(t *testing.T, c *cluster, tl *timeline, ns, so string, want int32, avg string) {
	t.Helper()
	deadline := time.Now().Add(scenarioTimeout)
	wantQ := resource.MustParse(avg)
	var last string
	for time.Now().Before(deadline) {
		h := getHPA(t, c, ns, so)
		last = hpaSummary(h)
		if h.Status.CurrentReplicas == want && h.Status.DesiredReplicas == want && len(h.Status.CurrentMetrics) == 1 {
			m := h.Status.CurrentMetrics[0].External
			if m != nil && m.Current.AverageValue != nil && m.Current.AverageValue.Cmp(wantQ) == 0 {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: HPA status %q, want current=desired=%d and average value %s\n%s", tl.name, last, want, avg, tl.String())
}

// scalerMetric sums the samples of a metric on the scaler's /metrics whose
// label set contains every label given ("name" or `name{a="b"}`).
func scalerMetric(t *testing.T, httpAddr, name string, labels ...string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	var sum float64
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != '{' && l[len(name)] != ' ') {
			continue
		}
		ok := true
		for _, lb := range labels {
			ok = ok && strings.Contains(l, lb)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		require.NoError(t, err, l)
		sum += v
	}
	require.NoError(t, sc.Err())
	return sum
}

// waitQueryAPI asks the scaler's Prometheus HTTP API the way KEDA's
// prometheus scaler does (GET /api/v1/query with time=now, RFC 3339) every
// 100 ms until the single series' value is want, and returns when.
func waitQueryAPI(t *testing.T, httpAddr, query string, want float64) time.Time {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		u := "http://" + httpAddr + "/api/v1/query?query=" + url.QueryEscape(query) + "&time=" + time.Now().UTC().Format(time.RFC3339)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var r struct {
				Data struct {
					Result []struct {
						Value []any `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			_ = resp.Body.Close()
			last = string(b)
			if json.Unmarshal(b, &r) == nil && len(r.Data.Result) == 1 && len(r.Data.Result[0].Value) == 2 {
				if v, ok := r.Data.Result[0].Value[1].(string); ok && v == strconv.FormatFloat(want, 'f', -1, 64) {
					cancel()
					return time.Now()
				}
			}
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("query API: %s did not answer %v within 30s; last answer %s", query, want, last)
	return time.Time{}
}

// setupScenario creates the namespace and the predictor Deployment and starts
// the scenario's own scaler (one per scenario: they run in parallel and the
// Prometheus path's bare selector must see only its own pods).
func setupScenario(t *testing.T, c *cluster, ns string, replicas int32) (scalerAddrs, *proc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.createNamespace(ctx, ns))
	addrs, p := startScaler(t, ns)
	createDeployment(t, c, ns, predictor, replicas)
	return addrs, p
}

// assertScalerClean checks the scaler is still up and logged no error.
func assertScalerClean(t *testing.T, p *proc) {
	t.Helper()
	assert.False(t, p.exited(), "scaler still running")
	assert.NotContains(t, p.log(), `"level":"ERROR"`, "scaler logged errors:\n%s", p.tail(20))
}

// TestScaleOpenTelemetryPath: the seed's OpenTelemetry path. The ScaledObject
// is the one KServe v0.16 generates for InferenceService huggingface-qwen
// with a PodMetric (backend opentelemetry, query vllm:num_requests_running,
// target 4, min 1, max 5); the pods' collectors export as KServe's sidecar
// does. Twelve running requests give exactly 3 replicas through KEDA's
// operator, its metrics adapter and the HPA controller; removing them
// returns the Deployment to 1.
func TestScaleOpenTelemetryPath(t *testing.T) {
	c := needCluster(t)
	t.Parallel()
	const ns = "kserve-otel"
	addrs, scaler := setupScenario(t, c, ns, 1)
	tl := watchScenario(t, c, "otel", ns, predictor, predictor)
	fixture := loadFixture(t)
	cfg := sidecarConfig(t, "vllm:num_requests_running") // the InferenceService's metricNames
	pods := startPodRunner(t, c, ns, predictor, cfg, addrs.OTLPGRPC, fixture)
	// A pod of another predictor in the same namespace, busy: KServe's
	// namespace and deployment matchers must keep it out of the sum.
	startFakePod(t, cfg, addrs.OTLPGRPC, ns, "other-predictor", "other-predictor-5d8b9-x2x7q", fixture, 100)

	// KServe's keda reconciler: trigger type external, metricQuery
	// sum(<query>{namespace="<ns>", deployment="<component>"}), targetValue
	// formatted with %f, scalerAddress from metricScalerEndpoint, no
	// metricType (AverageValue), no pollingInterval or cooldownPeriod, the
	// stabilisation windows from its configmap.
	createScaledObject(t, c, ns, fmt.Sprintf(`
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  scaleTargetRef:
    name: %[1]s
  minReplicaCount: 1
  maxReplicaCount: 5
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleUp:
          stabilizationWindowSeconds: 0
        scaleDown:
          stabilizationWindowSeconds: %[4]d
  triggers:
    - type: external
      metadata:
        metricQuery: sum(vllm:num_requests_running{namespace="%[2]s", deployment="%[1]s"})
        targetValue: "4.000000"
        scalerAddress: %[3]s
`, predictor, ns, addrs.Scaler, scaleDownWindow))

	pods.waitPods(t, 1, 60*time.Second)
	waitHPA(t, c, tl, ns, predictor, 1, "0") // idle: the chain answers 0 before any load
	loadAt := tl.note("load: 12 running requests on the pod")
	pods.SetLoad(12)
	up := tl.waitSpec(t, 3, scenarioTimeout)
	waitHPA(t, c, tl, ns, predictor, 3, "4") // 12 over 3 replicas: on target, stays at 3
	pods.waitPods(t, 3, 60*time.Second)
	// Three more HPA syncs at 3 replicas with the new pods reporting 0.
	time.Sleep(3 * hpaSyncPeriod)
	waitHPA(t, c, tl, ns, predictor, 3, "4")

	idleAt := tl.note("load removed: 0 running requests")
	pods.SetLoad(0)
	down := tl.waitSpec(t, 1, scenarioTimeout+scaleDownWindow*time.Second)
	waitHPA(t, c, tl, ns, predictor, 1, "0")
	tl.Stop()

	tl.print()
	report("otel: 12 running requests -> 3 replicas %.1fs after the load changed (scrape %s, HPA sync %s); load removed -> 1 replica after %.1fs (scale-down window %ds)",
		up.Sub(loadAt).Seconds(), scrapeInterval, hpaSyncPeriod, down.Sub(idleAt).Seconds(), scaleDownWindow)
	assert.Equal(t, []int32{1, 3, 1}, tl.replicaSequence(), "replica sequence")
	assertScalerClean(t, scaler)
}

// TestScalePrometheusPath: the seed's Prometheus path. The ScaledObject is
// the one KServe generates for an External metric with backend prometheus
// (KEDA's prometheus scaler, query vllm:num_requests_running, threshold 2),
// with serverAddress pointing at this scaler's Prometheus-compatible HTTP
// API instead of a Prometheus server. Six running requests give exactly 3
// replicas; removing them returns the Deployment to 1.
//
// The seed's query is a bare selector, which KEDA's prometheus scaler
// accepts only while it matches one series ("returned multiple elements"
// otherwise, from any Prometheus): as in the seed, one pod serves the six
// requests, so the pods the new replicas would start are not run here.
func TestScalePrometheusPath(t *testing.T) {
	c := needCluster(t)
	t.Parallel()
	const ns = "kserve-prom"
	addrs, scaler := setupScenario(t, c, ns, 1)
	tl := watchScenario(t, c, "prometheus", ns, predictor, predictor)

	// The predictor's one pod, under the name the ReplicaSet gave it.
	var podName string
	require.NoError(t, waitFor(context.Background(), nil, "the predictor's pod", 60*time.Second, func(ctx context.Context) error {
		l, err := c.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + predictor})
		if err != nil {
			return err
		}
		if len(l.Items) != 1 {
			return fmt.Errorf("%d pods", len(l.Items))
		}
		podName = l.Items[0].Name
		return nil
	}))
	pod := startFakePod(t, sidecarConfig(t, "vllm:num_requests_running"), addrs.OTLPGRPC, ns, predictor, podName, loadFixture(t), 0)

	createScaledObject(t, c, ns, fmt.Sprintf(`
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  scaleTargetRef:
    name: %[1]s
  minReplicaCount: 1
  maxReplicaCount: 5
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleUp:
          stabilizationWindowSeconds: 0
        scaleDown:
          stabilizationWindowSeconds: %[4]d
  triggers:
    - type: prometheus
      metadata:
        serverAddress: http://%[3]s
        query: vllm:num_requests_running
        threshold: "2.000000"
`, predictor, ns, addrs.HTTP, scaleDownWindow))

	// Idle, and the pod's series is there: KEDA's query returns one element.
	waitQueryAPI(t, addrs.HTTP, "vllm:num_requests_running", 0)
	waitHPA(t, c, tl, ns, predictor, 1, "0")
	loadAt := tl.note("load: 6 running requests")
	pod.vllm.Set(6)
	answered := waitQueryAPI(t, addrs.HTTP, "vllm:num_requests_running", 6)
	tl.add(answered, "query API answers 6 (as KEDA asks: time=now in RFC 3339)", -1)
	up := tl.waitSpec(t, 3, scenarioTimeout)
	waitHPA(t, c, tl, ns, predictor, 3, "2") // 6 over 3 replicas: on target
	idleAt := tl.note("load removed")
	pod.vllm.Set(0)
	down := tl.waitSpec(t, 1, scenarioTimeout+scaleDownWindow*time.Second)
	waitHPA(t, c, tl, ns, predictor, 1, "0")
	tl.Stop()

	tl.print()
	report("prometheus: 6 running requests -> 3 replicas %.1fs after the load changed (the query API answered 6 after %.1fs); load removed -> 1 replica after %.1fs",
		up.Sub(loadAt).Seconds(), answered.Sub(loadAt).Seconds(), down.Sub(idleAt).Seconds())
	assert.Equal(t, []int32{1, 3, 1}, tl.replicaSequence(), "replica sequence")
	assertScalerClean(t, scaler)
}
