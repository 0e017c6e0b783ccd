package k8s

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/keda-otel-scaler/keda-otel-scaler/test/bincache"
)

const (
	// kubeVersion and kedaVersion are what kube/go.mod and keda/go.mod
	// require; TestToolVersions checks that the binaries report them.
	kubeVersion = "v1.36.3"
	kubeMajor   = "1"
	kubeMinor   = "36"
	kedaVersion = "2.21.0"
	// collectorVersion is test/e2e's collector (test/e2e/otelcol/go.mod).
	collectorVersion = "v0.161.0"
	// promOperatorModule holds the ServiceMonitor CRD the chart's optional
	// ServiceMonitor is validated against (v0.85.0 is the newest release of
	// the root module the Go module proxy lists).
	promOperatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
	kedaModule         = "github.com/kedacore/keda/v2"
)

// binCache is the per-user binary cache buildTools opened; parentMain
// closes it. Package-level so that its lock files are not finalised (and
// unlocked) while the isolated child uses the binaries.
var binCache *bincache.Cache

// toolset is every binary and manifest directory the cluster needs. The
// parent process builds it (network allowed) and hands it to the child in the
// network namespace as JSON in envTools.
type toolset struct {
	Etcd              string `json:"etcd"`
	APIServer         string `json:"apiserver"`
	ControllerManager string `json:"controller_manager"`
	Operator          string `json:"operator"`
	Adapter           string `json:"adapter"`
	Collector         string `json:"collector"`
	Scaler            string `json:"scaler"`
	KEDACRDs          string `json:"keda_crds"`
	PromOperatorCRDs  string `json:"prom_operator_crds"`
	// TmpDir holds the per-run scaler build; the parent removes it.
	TmpDir string `json:"tmp_dir"`
}

// buildLog reports build steps and their durations on the test's stderr.
func buildLog(w io.Writer, format string, args ...any) {
	_, _ = fmt.Fprintf(w, "k8s: "+format+"\n", args...)
}

// nice reports whether builds run under `nice -n 15`: the first build
// compiles Kubernetes and KEDA (tens of CPU-minutes) and must not starve
// other work on the machine. K8S_E2E_NICE=0 turns it off.
func nice() bool { return os.Getenv("K8S_E2E_NICE") != "0" }

// goCmd is `go args...` in dir, under `nice -n 15` when nice() and nice
// exists.
func goCmd(ctx context.Context, dir string, args ...string) *exec.Cmd {
	name, argv := "go", args
	if nice() {
		if n, err := exec.LookPath("nice"); err == nil {
			name, argv = n, append([]string{"-n", "15", "go"}, args...)
		}
	}
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.Dir = dir
	return cmd
}

// coldBuild is how long building Kubernetes and KEDA takes when nothing is
// cached (test/k8s/README.md, "Build and cache").
const coldBuild = "from an empty Go build cache about 45 CPU-minutes (~25 min on 2 idle cores, longer under load), " +
	"from a warm one a relink of about a minute"

// moduleDir asks the go command where a module's files are, downloading the
// module (not its dependencies) when it is not in the module cache yet.
func moduleDir(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	if m.Dir == "" {
		return "", fmt.Errorf("go %s: no directory (%s)", strings.Join(args, " "), m.Error)
	}
	return m.Dir, nil
}

// buildTools builds or finds every binary. Kubernetes, KEDA and test/e2e's
// collector come from the per-user binary cache (test/bincache:
// ~/.cache/keda-otel-scaler, or $KOS_TEST_CACHE), keyed by their module
// files, linker flags and the Go toolchain, so a fresh clone reuses them;
// the collector entry is the one `make e2e` uses. The scaler is built from
// the working tree on every run (a relink when only this repository
// changed). The cache, and with it the shared locks that keep its entries
// from being pruned while the cluster runs them, stays open in binCache
// until parentMain returns.
func buildTools(ctx context.Context, logw io.Writer) (*toolset, error) {
	start := time.Now()
	var ts toolset
	cache, err := bincache.Open(".cache", func(format string, args ...any) { buildLog(logw, format, args...) })
	if err != nil {
		return nil, err
	}
	binCache = cache
	// The version stamps Kubernetes' and KEDA's own release builds set, so
	// /version and KEDA's logs report the real versions.
	const cb = "k8s.io/component-base/version."
	kube, err := cache.Get(ctx, bincache.Spec{
		Tool: "kube", Dir: "kube", Nice: nice(), Expect: coldBuild,
		LDFlags: fmt.Sprintf("-X %sgitVersion=%s -X %sgitMajor=%s -X %sgitMinor=%s -X %sgitTreeState=clean",
			cb, kubeVersion, cb, kubeMajor, cb, kubeMinor, cb),
		Files: []string{"go.mod", "go.sum", "etcd/main.go", "kube-apiserver/main.go", "kube-controller-manager/main.go"},
		Bins:  []string{"etcd", "kube-apiserver", "kube-controller-manager"},
		Pkgs:  []string{"./etcd", "./kube-apiserver", "./kube-controller-manager"},
	})
	if err != nil {
		return nil, err
	}
	ts.Etcd, ts.APIServer, ts.ControllerManager = filepath.Join(kube, "etcd"), filepath.Join(kube, "kube-apiserver"), filepath.Join(kube, "kube-controller-manager")
	keda, err := cache.Get(ctx, bincache.Spec{
		Tool: "keda", Dir: "keda", Nice: nice(), Expect: coldBuild,
		LDFlags: "-X " + kedaModule + "/version.Version=" + kedaVersion,
		Files:   []string{"go.mod", "go.sum", "tools.go"},
		Bins:    []string{"operator", "adapter"},
		Pkgs:    []string{kedaModule + "/cmd/operator", kedaModule + "/cmd/adapter"},
	})
	if err != nil {
		return nil, err
	}
	ts.Operator, ts.Adapter = filepath.Join(keda, "operator"), filepath.Join(keda, "adapter")
	if p := os.Getenv("E2E_OTELCOL"); p != "" {
		ts.Collector = p
	} else {
		col := bincache.Collector("../e2e/otelcol")
		col.Nice = nice()
		dir, err := cache.Get(ctx, col)
		if err != nil {
			return nil, err
		}
		ts.Collector = filepath.Join(dir, "otelcol")
	}
	kedaDir, err := moduleDir(ctx, "keda", "list", "-m", "-json", kedaModule)
	if err != nil {
		return nil, err
	}
	ts.KEDACRDs = filepath.Join(kedaDir, "config", "crd", "bases")
	promDir, err := moduleDir(ctx, "keda", "mod", "download", "-json", promOperatorModule)
	if err != nil {
		return nil, err
	}
	ts.PromOperatorCRDs = filepath.Join(promDir, "example", "prometheus-operator-crd")
	if ts.TmpDir, err = os.MkdirTemp("", "kos-k8s-"); err != nil {
		return nil, err
	}
	if p := os.Getenv("E2E_SCALER"); p != "" {
		ts.Scaler = p
	} else {
		ts.Scaler = filepath.Join(ts.TmpDir, "keda-otel-scaler")
		if b, err := goCmd(ctx, "../..", "build", "-o", ts.Scaler, "./cmd/keda-otel-scaler").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build scaler: %w\n%s", err, b)
		}
	}
	buildLog(logw, "tools ready in %s", time.Since(start).Round(time.Second))
	return &ts, nil
}
