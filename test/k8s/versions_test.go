package k8s

import (
	"debug/buildinfo"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// depVersion is the version of module mod linked into the binary.
func depVersion(t *testing.T, bin, mod string) string {
	t.Helper()
	bi, err := buildinfo.ReadFile(bin)
	require.NoError(t, err, bin)
	if bi.Main.Path == mod { // a command built from a dependency module
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == mod {
			if d.Replace != nil {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	t.Fatalf("%s does not link %s", bin, mod)
	return ""
}

// TestToolVersions checks that the processes under test are the releases the
// README names, from the binaries' own build information and the API
// server's /version, and prints the "Tested with" line.
func TestToolVersions(t *testing.T) {
	c := needCluster(t)
	assert.Equal(t, kubeVersion, depVersion(t, tools.APIServer, "k8s.io/kubernetes"))
	assert.Equal(t, kubeVersion, depVersion(t, tools.ControllerManager, "k8s.io/kubernetes"))
	etcd := depVersion(t, tools.Etcd, "go.etcd.io/etcd/server/v3")
	assert.Equal(t, "v"+kedaVersion, depVersion(t, tools.Operator, kedaModule))
	assert.Equal(t, "v"+kedaVersion, depVersion(t, tools.Adapter, kedaModule))
	collector := depVersion(t, tools.Collector, "go.opentelemetry.io/collector/otelcol")
	assert.Equal(t, collectorVersion, collector)

	v, err := c.kube.Discovery().ServerVersion()
	require.NoError(t, err)
	assert.Equal(t, kubeVersion, v.GitVersion, "the API server reports its release")
	report("tested with: Kubernetes %s (kube-apiserver, kube-controller-manager; etcd %s), KEDA v%s (operator, metrics adapter), OpenTelemetry Collector %s, %s",
		v.GitVersion, etcd, kedaVersion, collector, runtime.Version())
}
