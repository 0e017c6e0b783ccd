package helm

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// Golden collector configs: test/e2e runs exactly these (with loopback
// addresses substituted) and validates them with the collector binary, and
// TestCollectorConfigGolden keeps them equal to what the chart renders for
// ci/ha-values.yaml, ci/ha-tls-values.yaml and ci/router-values.yaml.
// UPDATE_GOLDEN=1 rewrites them.
const (
	fanoutGolden    = "../e2e/testdata/ha-fanout-collector.yaml"
	fanoutTLSGolden = "../e2e/testdata/ha-fanout-tls-collector.yaml"
	routerGolden    = "../e2e/testdata/ha-router-collector.yaml"
)

// renderedCollector returns the collector config the release renders.
func renderedCollector(t *testing.T, o objects) (raw string, cfg map[string]any) {
	t.Helper()
	var cm corev1.ConfigMap
	o.decode(t, "ConfigMap/keda-otel-scaler-collector", &cm)
	raw = cm.Data["config.yaml"]
	require.NotEmpty(t, raw)
	require.NoError(t, yaml.Unmarshal([]byte(raw), &cfg), raw)
	return raw, cfg
}

func path(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func TestCollectorConfigGolden(t *testing.T) {
	for _, tc := range []struct{ values, golden string }{
		{"ha-values.yaml", fanoutGolden},
		{"ha-tls-values.yaml", fanoutTLSGolden},
		{"router-values.yaml", routerGolden},
	} {
		t.Run(tc.values, func(t *testing.T) {
			raw, _ := renderedCollector(t, mustRender(t, readValues(t, tc.values)))
			if os.Getenv("UPDATE_GOLDEN") != "" {
				require.NoError(t, os.WriteFile(tc.golden, []byte(raw), 0o644))
			}
			want, err := os.ReadFile(tc.golden)
			require.NoError(t, err)
			assert.Equal(t, string(want), raw, "%s is stale: run UPDATE_GOLDEN=1 go test -run TestCollectorConfigGolden in test/helm, then make e2e", filepath.Base(tc.golden))
		})
	}
}

// TestHA renders HA mode: a StatefulSet with stable names behind a headless
// Service that publishes not-ready addresses, a fan-out collector in every
// pod owning the OTLP port of the Service KServe's sidecars export to, one
// otlp exporter per replica (itself included) with a sending queue and
// retries, the scaler on its own OTLP port with --ready-after-fresh, and a
// PodDisruptionBudget.
func TestHA(t *testing.T) {
	for _, replicas := range []int{2, 3} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			vals := readValues(t, "ha-values.yaml")
			vals["ha"].(map[string]any)["replicas"] = replicas
			o := mustRender(t, vals)
			assert.NotContains(t, o, "Deployment/keda-otel-scaler", "HA replaces the Deployment")

			var ss appsv1.StatefulSet
			o.decode(t, "StatefulSet/keda-otel-scaler", &ss)
			assert.Equal(t, int32(replicas), *ss.Spec.Replicas)
			assert.Equal(t, "keda-otel-scaler-headless", ss.Spec.ServiceName)
			assert.Equal(t, appsv1.ParallelPodManagement, ss.Spec.PodManagementPolicy)
			assert.Equal(t, appsv1.RollingUpdateStatefulSetStrategyType, ss.Spec.UpdateStrategy.Type)
			pod := ss.Spec.Template.Spec
			require.Len(t, pod.Containers, 2)
			sc, fan := pod.Containers[0], pod.Containers[1]
			assert.Equal(t, "keda-otel-scaler", sc.Name)
			assert.Equal(t, "fanout", fan.Name)
			env := envMap(sc)
			assert.Equal(t, ":4319", env["KOS_OTLP_GRPC_ADDR"], "the scaler moves off 4317, which the fan-out owns")
			assert.Equal(t, ":4318", env["KOS_SCALER_ADDR"])
			assert.Equal(t, "true", env["KOS_READY_AFTER_FRESH"])
			assert.Equal(t, "otel/opentelemetry-collector-contrib:0.161.0", fan.Image)
			assert.Equal(t, []string{"--config=/etc/otelcol/config.yaml"}, fan.Args)
			assert.NotNil(t, fan.ReadinessProbe)
			assert.NotNil(t, fan.Resources.Limits.Memory())
			assert.Contains(t, ss.Spec.Template.Annotations, "checksum/collector-config", "pods roll when the config changes")
			var cfgVol *corev1.Volume
			for i := range pod.Volumes {
				if pod.Volumes[i].Name == "collector-config" {
					cfgVol = &pod.Volumes[i]
				}
			}
			require.NotNil(t, cfgVol)
			assert.Equal(t, "keda-otel-scaler-collector", cfgVol.ConfigMap.Name)
			assertPortNames(t, pod, o, "Service/keda-otel-scaler", "Service/keda-otel-scaler-headless")

			var svc, headless corev1.Service
			o.decode(t, "Service/keda-otel-scaler", &svc)
			o.decode(t, "Service/keda-otel-scaler-headless", &headless)
			assert.Empty(t, svc.Spec.ClusterIP, "KEDA and the sidecars use a ClusterIP Service of ready pods")
			assert.False(t, svc.Spec.PublishNotReadyAddresses)
			assert.Equal(t, intstr.FromString("otlp-grpc"), svc.Spec.Ports[0].TargetPort)
			assert.Equal(t, int32(4317), svc.Spec.Ports[0].Port)
			assert.Equal(t, corev1.ClusterIPNone, headless.Spec.ClusterIP)
			assert.True(t, headless.Spec.PublishNotReadyAddresses, "a warming replica must still receive the stream")
			assert.Equal(t, svc.Spec.Selector, headless.Spec.Selector)
			assert.Equal(t, int32(4319), headless.Spec.Ports[0].Port)

			var pdb policyv1.PodDisruptionBudget
			o.decode(t, "PodDisruptionBudget/keda-otel-scaler", &pdb)
			assert.Equal(t, intstr.FromInt32(1), *pdb.Spec.MaxUnavailable)
			assert.Equal(t, ss.Spec.Selector.MatchLabels, pdb.Spec.Selector.MatchLabels)

			_, cfg := renderedCollector(t, o)
			assert.Equal(t, "0.0.0.0:4317", path(cfg, "receivers", "otlp", "protocols", "grpc", "endpoint"))
			exps := cfg["exporters"].(map[string]any)
			require.Len(t, exps, replicas, "one exporter per replica")
			var names []any
			for i := range replicas {
				name := fmt.Sprintf("otlp/keda-otel-scaler-%d", i)
				names = append(names, name)
				e, ok := exps[name].(map[string]any)
				require.Truef(t, ok, "exporter %s", name)
				assert.Equal(t, fmt.Sprintf("keda-otel-scaler-%d.keda-otel-scaler-headless.keda.svc.cluster.local:4319", i), e["endpoint"])
				assert.Equal(t, true, path(e, "sending_queue", "enabled"))
				assert.InDelta(t, 1, path(e, "sending_queue", "num_consumers"), 0, "in-order catch-up")
				assert.Equal(t, "bytes", path(e, "sending_queue", "sizer"))
				assert.Equal(t, true, path(e, "retry_on_failure", "enabled"))
				assert.Equal(t, "none", e["compression"])
			}
			pipe := path(cfg, "service", "pipelines", "metrics").(map[string]any)
			assert.Equal(t, []any{"otlp"}, pipe["receivers"])
			assert.Equal(t, []any{"memory_limiter", "batch"}, pipe["processors"])
			assert.Equal(t, names, pipe["exporters"])
			assert.Equal(t, "0s", path(cfg, "processors", "batch", "timeout"), "the batch processor delays nothing")
		})
	}
}

// assertPortNames checks every Service's named targetPort exists in the pod.
func assertPortNames(t *testing.T, pod corev1.PodSpec, o objects, services ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			assert.Falsef(t, have[p.Name], "port name %s used twice in the pod", p.Name)
			have[p.Name] = true
		}
	}
	for _, s := range services {
		var svc corev1.Service
		o.decode(t, s, &svc)
		for _, p := range svc.Spec.Ports {
			assert.Truef(t, have[p.TargetPort.StrVal], "%s port %s targets %q, which no container has", s, p.Name, p.TargetPort.StrVal)
		}
	}
}

// TestRouter renders the shard router: collectors only, behind the Service
// that owns the OTLP address, one pipeline per shard that keeps only the
// shard's namespaces, and no scaler or KEDA port.
func TestRouter(t *testing.T) {
	o := mustRender(t, readValues(t, "router-values.yaml"))
	var d appsv1.Deployment
	o.decode(t, "Deployment/keda-otel-scaler", &d)
	assert.Equal(t, int32(2), *d.Spec.Replicas)
	require.Len(t, d.Spec.Template.Spec.Containers, 1)
	assert.Equal(t, "router", d.Spec.Template.Spec.Containers[0].Name)
	assertPortNames(t, d.Spec.Template.Spec, o, "Service/keda-otel-scaler")
	var svc corev1.Service
	o.decode(t, "Service/keda-otel-scaler", &svc)
	require.Len(t, svc.Spec.Ports, 1, "a router serves only OTLP")
	assert.Equal(t, int32(4317), svc.Spec.Ports[0].Port)
	var pdb policyv1.PodDisruptionBudget
	o.decode(t, "PodDisruptionBudget/keda-otel-scaler", &pdb)

	_, cfg := renderedCollector(t, o)
	for _, tc := range []struct{ shard, endpoint, cond string }{
		{"team-a", "keda-otel-scaler-team-a.keda.svc:4317", `not (attributes["k8s.namespace.name"] == "team-a")`},
		{
			"team-b", "keda-otel-scaler-team-b.keda.svc:4317",
			`not (attributes["k8s.namespace.name"] == "team-b" or attributes["k8s.namespace.name"] == "team-b-batch")`,
		},
	} {
		assert.Equal(t, tc.endpoint, path(cfg, "exporters", "otlp/"+tc.shard, "endpoint"))
		assert.Equal(t, []any{tc.cond}, path(cfg, "processors", "filter/"+tc.shard, "metrics", "resource"))
		pipe := path(cfg, "service", "pipelines", "metrics/"+tc.shard).(map[string]any)
		assert.Equal(t, []any{"memory_limiter", "filter/" + tc.shard, "batch"}, pipe["processors"])
		assert.Equal(t, []any{"otlp/" + tc.shard}, pipe["exporters"])
	}
	assert.Len(t, path(cfg, "service", "pipelines"), 2, "no default pipeline: unmatched namespaces are dropped")

	t.Run("default endpoint", func(t *testing.T) {
		vals := readValues(t, "router-values.yaml")
		vals["router"].(map[string]any)["defaultEndpoint"] = "keda-otel-scaler-rest.keda.svc:4317"
		_, cfg := renderedCollector(t, mustRender(t, vals))
		assert.Equal(t, []any{`attributes["k8s.namespace.name"] == "team-a" or attributes["k8s.namespace.name"] == "team-b" or attributes["k8s.namespace.name"] == "team-b-batch"`},
			path(cfg, "processors", "filter/default", "metrics", "resource"))
		assert.Equal(t, "keda-otel-scaler-rest.keda.svc:4317", path(cfg, "exporters", "otlp/default", "endpoint"))
	})
}

// TestScalingModesRejected: combinations that cannot work fail at render.
func TestScalingModesRejected(t *testing.T) {
	shard := []any{map[string]any{"name": "a", "endpoint": "x.keda.svc:4317", "values": []any{"a"}}}
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"ha and router", set("ha.enabled", true, "router.enabled", true, "router.shards", shard), "exclude each other"},
		{"router without shards", set("router.enabled", true), "router.shards"},
		{"router with a ServiceMonitor", set("router.enabled", true, "router.shards", shard, "serviceMonitor.enabled", true), "router.enabled renders only"},
		{"shard name not a DNS label", set("router.enabled", true, "router.shards", []any{map[string]any{"name": "A_b", "endpoint": "x:1", "values": []any{"a"}}}), "name"},
		{"shard without values", set("router.enabled", true, "router.shards", []any{map[string]any{"name": "a", "endpoint": "x:1", "values": []any{}}}), "values"},
		{"endpoint without port", set("router.enabled", true, "router.shards", []any{map[string]any{"name": "a", "endpoint": "x", "values": []any{"a"}}}), "endpoint"},
		{"zero replicas", set("ha.enabled", true, "ha.replicas", 0), "replicas"},
		{"unknown compression", set("collector.compression", "snappy"), "compression"},
		{"typo in ha", set("ha.replica", 3), "replica"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, tc.vals)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestSingleReplicaUnchanged: without ha or router the release is the
// single-replica Deployment it was, with no collector.
func TestSingleReplicaUnchanged(t *testing.T) {
	o := mustRender(t, nil)
	assert.Equal(t, []string{"Deployment/keda-otel-scaler", "Service/keda-otel-scaler", "ServiceAccount/keda-otel-scaler"}, o.kinds())
	c := container(t, o)
	assert.Equal(t, ":4317", envMap(c)["KOS_OTLP_GRPC_ADDR"])
	assert.NotContains(t, envMap(c), "KOS_READY_AFTER_FRESH")
	var d appsv1.Deployment
	o.decode(t, "Deployment/keda-otel-scaler", &d)
	assert.Equal(t, appsv1.RecreateDeploymentStrategyType, d.Spec.Strategy.Type)
	assert.Empty(t, d.Spec.Template.Annotations)
}

// TestHAStateDirClaimPerReplica: with stateDir.volumeClaimTemplate the HA
// StatefulSet gets a volumeClaimTemplate "state", so each replica mounts
// its own claim (state-keda-otel-scaler-<i>) at the state dir instead of a
// pod volume; the retention policy passes through; combinations that would
// share one claim between replicas, or need a StatefulSet without HA, fail
// at render.
func TestHAStateDirClaimPerReplica(t *testing.T) {
	claim := map[string]any{
		"accessModes":      []any{"ReadWriteOnce"},
		"storageClassName": "fast",
		"resources":        map[string]any{"requests": map[string]any{"storage": "2Gi"}},
	}
	vals := readValues(t, "ha-values.yaml")
	vals["stateDir"] = map[string]any{
		"enabled": true, "volumeClaimTemplate": claim,
		"claimRetentionPolicy": map[string]any{"whenDeleted": "Delete", "whenScaled": "Retain"},
	}
	o := mustRender(t, vals)
	var ss appsv1.StatefulSet
	o.decode(t, "StatefulSet/keda-otel-scaler", &ss)
	require.Len(t, ss.Spec.VolumeClaimTemplates, 1)
	pvc := ss.Spec.VolumeClaimTemplates[0]
	assert.Equal(t, "state", pvc.Name)
	assert.Equal(t, ss.Spec.Selector.MatchLabels, pvc.Labels)
	assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, pvc.Spec.AccessModes)
	require.NotNil(t, pvc.Spec.StorageClassName)
	assert.Equal(t, "fast", *pvc.Spec.StorageClassName)
	assert.Equal(t, "2Gi", pvc.Spec.Resources.Requests.Storage().String())
	require.NotNil(t, ss.Spec.PersistentVolumeClaimRetentionPolicy)
	assert.Equal(t, appsv1.DeletePersistentVolumeClaimRetentionPolicyType, ss.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted)
	assert.Equal(t, appsv1.RetainPersistentVolumeClaimRetentionPolicyType, ss.Spec.PersistentVolumeClaimRetentionPolicy.WhenScaled)

	pod := ss.Spec.Template.Spec
	for _, v := range pod.Volumes {
		assert.NotEqual(t, "state", v.Name, "the claim template provides the volume; a pod volume of the same name would shadow it")
	}
	sc := pod.Containers[0]
	assert.Equal(t, "/var/lib/keda-otel-scaler", envMap(sc)["KOS_STATE_DIR"])
	var mounted bool
	for _, m := range sc.VolumeMounts {
		if m.Name == "state" {
			mounted = true
			assert.Equal(t, "/var/lib/keda-otel-scaler", m.MountPath)
			assert.False(t, m.ReadOnly)
		}
	}
	assert.True(t, mounted, "the scaler mounts its claim")

	t.Run("without a claim template HA keeps the pod volume", func(t *testing.T) {
		vals := readValues(t, "ha-values.yaml")
		vals["stateDir"] = map[string]any{"enabled": true}
		var ss appsv1.StatefulSet
		mustRender(t, vals).decode(t, "StatefulSet/keda-otel-scaler", &ss)
		assert.Empty(t, ss.Spec.VolumeClaimTemplates)
		assert.Nil(t, ss.Spec.PersistentVolumeClaimRetentionPolicy)
	})

	shared := map[string]any{"persistentVolumeClaim": map[string]any{"claimName": "x"}}
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"claim template without HA", set("stateDir.enabled", true, "stateDir.volumeClaimTemplate", claim), "need ha.enabled"},
		{"retention policy without HA", set("stateDir.enabled", true, "stateDir.claimRetentionPolicy", map[string]any{"whenDeleted": "Delete"}), "need ha.enabled"},
		{"claim template without stateDir", set("ha.enabled", true, "stateDir.volumeClaimTemplate", claim), "needs stateDir.enabled"},
		{"claim template and volume", set("ha.enabled", true, "stateDir.enabled", true, "stateDir.volumeClaimTemplate", claim, "stateDir.volume", map[string]any{"emptyDir": map[string]any{}}), "exclude each other"},
		{"one claim shared by the replicas", set("ha.enabled", true, "stateDir.enabled", true, "stateDir.volume", shared), "volumeClaimTemplate"},
		{"bad retention policy", set("ha.enabled", true, "stateDir.enabled", true, "stateDir.volumeClaimTemplate", claim, "stateDir.claimRetentionPolicy", map[string]any{"whenDeleted": "Remove"}), "whenDeleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, tc.vals)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("a single replica may still use one claim", func(t *testing.T) {
		_, err := render(t, set("stateDir.enabled", true, "stateDir.volume", shared))
		require.NoError(t, err)
	})
}

// TestHASecured renders HA mode with tls.otlp and otlpAuth: the fan-out
// collector's otlp receiver serves the scaler's OTLP certificate, requires
// client certificates from its CA and authenticates Exports with the same
// token file through bearertokenauth; its exporters reach the replicas
// over TLS, verifying the Service name, with a client certificate and the
// token; the fan-out container mounts exactly what its config reads, and
// the scalers keep their own TLS and token checks on the internal port.
func TestHASecured(t *testing.T) {
	o := mustRender(t, readValues(t, "ha-tls-values.yaml"))
	var ss appsv1.StatefulSet
	o.decode(t, "StatefulSet/keda-otel-scaler", &ss)
	pod := ss.Spec.Template.Spec
	require.Len(t, pod.Containers, 2)
	sc, fan := pod.Containers[0], pod.Containers[1]
	env := envMap(sc)
	assert.Equal(t, ":4319", env["KOS_OTLP_GRPC_ADDR"])
	assert.Equal(t, "/etc/keda-otel-scaler/tls-otlp/tls.crt", env["KOS_OTLP_TLS_CERT_FILE"], "the replica serves TLS on its own port")
	assert.Equal(t, "/etc/keda-otel-scaler/tls-otlp/ca.crt", env["KOS_OTLP_TLS_CLIENT_CA_FILE"])
	assert.Equal(t, "/etc/keda-otel-scaler/otlp-auth/tokens", env["KOS_OTLP_BEARER_TOKEN_FILE"], "and checks tokens")

	mounts := map[string]string{}
	for _, m := range fan.VolumeMounts {
		assert.Truef(t, m.ReadOnly, "fan-out mount %s is read-only", m.Name)
		mounts[m.Name] = m.MountPath
	}
	assert.Equal(t, map[string]string{
		"collector-config":  "/etc/otelcol",
		"tls-otlp":          "/etc/keda-otel-scaler/tls-otlp",
		"otlp-auth":         "/etc/keda-otel-scaler/otlp-auth",
		"fanout-client-tls": "/etc/keda-otel-scaler/fanout-client-tls",
	}, mounts)
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	items := func(name string) []string {
		v, ok := vols[name]
		require.Truef(t, ok, "volume %s", name)
		require.NotNil(t, v.Secret)
		var keys []string
		for _, it := range v.Secret.Items {
			keys = append(keys, it.Key)
		}
		return keys
	}
	assert.Equal(t, []string{"tls.crt", "tls.key", "ca.crt"}, items("tls-otlp"), "the CA is mounted once")
	assert.Equal(t, "keda-otel-scaler-fanout-client", vols["fanout-client-tls"].Secret.SecretName)
	assert.Equal(t, []string{"tls.crt", "tls.key"}, items("fanout-client-tls"))

	_, cfg := renderedCollector(t, o)
	grpcCfg := path(cfg, "receivers", "otlp", "protocols", "grpc").(map[string]any)
	assert.Equal(t, map[string]any{
		"cert_file": "/etc/keda-otel-scaler/tls-otlp/tls.crt", "key_file": "/etc/keda-otel-scaler/tls-otlp/tls.key",
		"client_ca_file": "/etc/keda-otel-scaler/tls-otlp/ca.crt", "client_ca_file_reload": true, "reload_interval": "1m",
	}, grpcCfg["tls"])
	assert.Equal(t, "bearertokenauth/senders", path(grpcCfg, "auth", "authenticator"))
	for _, ext := range []string{"bearertokenauth/senders", "bearertokenauth/replicas"} {
		assert.Equal(t, "/etc/keda-otel-scaler/otlp-auth/tokens", path(cfg, "extensions", ext, "filename"), "the scaler's own token file")
	}
	assert.Equal(t, []any{"bearertokenauth/senders", "bearertokenauth/replicas"}, path(cfg, "service", "extensions"))
	for i := range 2 {
		e := path(cfg, "exporters", fmt.Sprintf("otlp/keda-otel-scaler-%d", i)).(map[string]any)
		assert.Equal(t, map[string]any{
			"ca_file": "/etc/keda-otel-scaler/tls-otlp/ca.crt", "server_name_override": "keda-otel-scaler.keda.svc",
			"cert_file": "/etc/keda-otel-scaler/fanout-client-tls/tls.crt", "key_file": "/etc/keda-otel-scaler/fanout-client-tls/tls.key",
			"reload_interval": "1m",
		}, e["tls"])
		assert.Equal(t, "bearertokenauth/replicas", path(e, "auth", "authenticator"))
	}

	t.Run("without a client Secret the server certificate is presented", func(t *testing.T) {
		vals := readValues(t, "ha-tls-values.yaml")
		vals["ha"].(map[string]any)["exporterTLS"] = map[string]any{"serverName": "scaler.example"}
		o := mustRender(t, vals)
		_, cfg := renderedCollector(t, o)
		tlsCfg := path(cfg, "exporters", "otlp/keda-otel-scaler-0", "tls").(map[string]any)
		assert.Equal(t, "/etc/keda-otel-scaler/tls-otlp/tls.crt", tlsCfg["cert_file"])
		assert.Equal(t, "scaler.example", tlsCfg["server_name_override"])
		var ss appsv1.StatefulSet
		o.decode(t, "StatefulSet/keda-otel-scaler", &ss)
		for _, v := range ss.Spec.Template.Spec.Volumes {
			assert.NotEqual(t, "fanout-client-tls", v.Name)
		}
	})
	t.Run("TLS without client certificates or tokens", func(t *testing.T) {
		vals := readValues(t, "ha-values.yaml")
		vals["tls"] = map[string]any{"otlp": map[string]any{"enabled": true, "secretName": "s"}}
		o := mustRender(t, vals)
		_, cfg := renderedCollector(t, o)
		assert.Nil(t, cfg["extensions"])
		assert.Nil(t, path(cfg, "receivers", "otlp", "protocols", "grpc", "auth"))
		assert.Nil(t, path(cfg, "receivers", "otlp", "protocols", "grpc", "tls", "client_ca_file"))
		tlsCfg := path(cfg, "exporters", "otlp/keda-otel-scaler-1", "tls").(map[string]any)
		assert.NotContains(t, tlsCfg, "cert_file", "no client certificate is asked for")
		assert.Equal(t, "/etc/keda-otel-scaler/tls-otlp/ca.crt", tlsCfg["ca_file"])
		var ss appsv1.StatefulSet
		o.decode(t, "StatefulSet/keda-otel-scaler", &ss)
		for _, v := range ss.Spec.Template.Spec.Volumes {
			if v.Name == "tls-otlp" {
				require.Len(t, v.Secret.Items, 3, "the exporters' CA is added to the listener's certificate and key")
				assert.Equal(t, "ca.crt", v.Secret.Items[2].Key)
			}
		}
	})
	t.Run("plain HA is unchanged", func(t *testing.T) {
		_, cfg := renderedCollector(t, mustRender(t, readValues(t, "ha-values.yaml")))
		assert.Nil(t, cfg["extensions"])
		assert.Equal(t, map[string]any{"insecure": true}, path(cfg, "exporters", "otlp/keda-otel-scaler-0", "tls"))
	})
	shard := []any{map[string]any{"name": "a", "endpoint": "x.keda.svc:4317", "values": []any{"a"}}}
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"tokens without TLS", set("ha.enabled", true, "otlpAuth.enabled", true, "otlpAuth.secretName", "t"), "needs tls.otlp.enabled"},
		{"router with tokens", set("router.enabled", true, "router.shards", shard, "otlpAuth.enabled", true, "otlpAuth.secretName", "t"), "router.enabled does not support"},
		{"router with TLS", set("router.enabled", true, "router.shards", shard, "tls.otlp.enabled", true, "tls.otlp.secretName", "s"), "router.enabled does not support"},
		{"typo in exporterTLS", set("ha.enabled", true, "ha.exporterTLS.caFile", "x"), "caFile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, tc.vals)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// scalerEnv is the HA scaler container's environment.
func scalerEnv(t *testing.T, o objects) map[string]string {
	t.Helper()
	var ss appsv1.StatefulSet
	o.decode(t, "StatefulSet/keda-otel-scaler", &ss)
	require.NotEmpty(t, ss.Spec.Template.Spec.Containers)
	return envMap(ss.Spec.Template.Spec.Containers[0])
}

// TestHAReadyPeers: in HA mode with readyAfterFresh every replica gets the
// same --ready-peers, every replica's HTTP listener by its headless name
// (https when tls.http serves TLS, with the CA, the Service name to verify
// and, when tls.http requires client certificates, the HTTP certificate
// as the client's); the NetworkPolicy lets the replicas reach each other's
// HTTP port.
func TestHAReadyPeers(t *testing.T) {
	peer := func(scheme string, i int) string {
		return fmt.Sprintf("%s://keda-otel-scaler-%d.keda-otel-scaler-headless.keda.svc.cluster.local:8080", scheme, i)
	}
	for _, replicas := range []int{2, 3} {
		vals := readValues(t, "ha-values.yaml")
		vals["ha"].(map[string]any)["replicas"] = replicas
		env := scalerEnv(t, mustRender(t, vals))
		var want []string
		for i := range replicas {
			want = append(want, peer("http", i))
		}
		assert.Equal(t, strings.Join(want, ","), env["KOS_READY_PEERS"], "replicas=%d", replicas)
		for _, k := range []string{"KOS_READY_PEERS_CA_FILE", "KOS_READY_PEERS_CERT_FILE", "KOS_READY_PEERS_SERVER_NAME", "KOS_READY_PEERS_TIMEOUT"} {
			assert.NotContains(t, env, k, "plain HTTP")
		}
	}
	for _, off := range []string{"ha.readyPeers", "ha.readyAfterFresh"} {
		vals := readValues(t, "ha-values.yaml")
		vals["ha"].(map[string]any)[strings.TrimPrefix(off, "ha.")] = false
		assert.NotContains(t, scalerEnv(t, mustRender(t, vals)), "KOS_READY_PEERS", off+"=false")
	}
	assert.NotContains(t, envMap(container(t, mustRender(t, nil))), "KOS_READY_PEERS", "single replica")

	httpItems := func(o objects) []string {
		var ss appsv1.StatefulSet
		o.decode(t, "StatefulSet/keda-otel-scaler", &ss)
		for _, v := range ss.Spec.Template.Spec.Volumes {
			if v.Name == "tls-http" {
				var keys []string
				for _, it := range v.Secret.Items {
					keys = append(keys, it.Key)
				}
				return keys
			}
		}
		t.Fatal("no tls-http volume")
		return nil
	}
	t.Run("mutual TLS on the HTTP listener", func(t *testing.T) {
		vals := readValues(t, "ha-values.yaml")
		vals["tls"] = map[string]any{"http": map[string]any{"enabled": true, "secretName": "h", "caKey": "ca.crt"}}
		vals["config"] = map[string]any{"readyPeersTimeout": "5m"}
		o := mustRender(t, vals)
		env := scalerEnv(t, o)
		assert.Equal(t, peer("https", 0)+","+peer("https", 1), env["KOS_READY_PEERS"])
		assert.Equal(t, "/etc/keda-otel-scaler/tls-http/ca.crt", env["KOS_READY_PEERS_CA_FILE"])
		assert.Equal(t, "keda-otel-scaler.keda.svc", env["KOS_READY_PEERS_SERVER_NAME"])
		assert.Equal(t, "/etc/keda-otel-scaler/tls-http/tls.crt", env["KOS_READY_PEERS_CERT_FILE"])
		assert.Equal(t, "/etc/keda-otel-scaler/tls-http/tls.key", env["KOS_READY_PEERS_KEY_FILE"])
		assert.Equal(t, "5m", env["KOS_READY_PEERS_TIMEOUT"])
		assert.Equal(t, []string{"tls.crt", "tls.key", "ca.crt"}, httpItems(o), "the CA is mounted once")
	})
	t.Run("server TLS only", func(t *testing.T) {
		vals := readValues(t, "ha-values.yaml")
		vals["tls"] = map[string]any{"http": map[string]any{"enabled": true, "secretName": "h"}}
		vals["ha"].(map[string]any)["peerTLS"] = map[string]any{"caKey": "issuer.crt", "serverName": "scaler.example"}
		o := mustRender(t, vals)
		env := scalerEnv(t, o)
		assert.Equal(t, "/etc/keda-otel-scaler/tls-http/issuer.crt", env["KOS_READY_PEERS_CA_FILE"])
		assert.Equal(t, "scaler.example", env["KOS_READY_PEERS_SERVER_NAME"])
		assert.NotContains(t, env, "KOS_READY_PEERS_CERT_FILE", "no client certificate is asked for")
		assert.Equal(t, []string{"tls.crt", "tls.key", "issuer.crt"}, httpItems(o), "the peers' CA is added")
	})
	t.Run("NetworkPolicy admits the peers", func(t *testing.T) {
		vals := readValues(t, "ha-values.yaml")
		from := []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "monitoring"}}}}
		vals["networkPolicy"] = map[string]any{"enabled": true, "httpFrom": from}
		var np networkingv1.NetworkPolicy
		mustRender(t, vals).decode(t, "NetworkPolicy/keda-otel-scaler", &np)
		var httpRule *networkingv1.NetworkPolicyIngressRule
		for i, r := range np.Spec.Ingress {
			if len(r.Ports) == 1 && r.Ports[0].Port.String() == "http" {
				httpRule = &np.Spec.Ingress[i]
			}
		}
		require.NotNil(t, httpRule)
		require.Len(t, httpRule.From, 2)
		require.NotNil(t, httpRule.From[1].PodSelector)
		assert.Equal(t, "keda-otel-scaler", httpRule.From[1].PodSelector.MatchLabels["app.kubernetes.io/name"])
	})
	t.Run("NetworkPolicy admits the fan-out to every replica", func(t *testing.T) {
		// Each pod's collector exports to every replica's otlp-scaler
		// port; without a rule for it a NetworkPolicy cut HA to one
		// replica's own batches.
		vals := readValues(t, "ha-values.yaml")
		vals["networkPolicy"] = map[string]any{"enabled": true}
		var np networkingv1.NetworkPolicy
		mustRender(t, vals).decode(t, "NetworkPolicy/keda-otel-scaler", &np)
		var rule *networkingv1.NetworkPolicyIngressRule
		for i, r := range np.Spec.Ingress {
			if len(r.Ports) == 1 && r.Ports[0].Port.String() == "otlp-scaler" {
				rule = &np.Spec.Ingress[i]
			}
		}
		require.NotNil(t, rule, "a rule for the replicas' own OTLP port")
		require.Len(t, rule.From, 1)
		require.NotNil(t, rule.From[0].PodSelector)
		assert.Equal(t, "keda-otel-scaler", rule.From[0].PodSelector.MatchLabels["app.kubernetes.io/name"])

		single := map[string]any{"networkPolicy": map[string]any{"enabled": true}}
		var np1 networkingv1.NetworkPolicy
		mustRender(t, single).decode(t, "NetworkPolicy/keda-otel-scaler", &np1)
		for _, r := range np1.Spec.Ingress {
			for _, p := range r.Ports {
				assert.NotEqual(t, "otlp-scaler", p.Port.String(), "no such port without HA")
			}
		}
	})
	t.Run("typo in peerTLS", func(t *testing.T) {
		_, err := render(t, set("ha.enabled", true, "ha.peerTLS.caFile", "x"))
		require.ErrorContains(t, err, "caFile")
	})
}
