package k8s

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

const (
	// kubeVersion and kedaVersion are what kube/go.mod and keda/go.mod
	// require; TestToolVersions checks that the binaries report them.
	kubeVersion = "v1.36.3"
	kubeMajor   = "1"
	kubeMinor   = "36"
	kedaVersion = "2.21.0"
	// collectorVersion is test/e2e's collector (test/e2e/procs_test.go).
	collectorVersion = "v0.161.0"
	// promOperatorModule holds the ServiceMonitor CRD the chart's optional
	// ServiceMonitor is validated against (v0.85.0 is the newest release of
	// the root module the Go module proxy lists).
	promOperatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
	kedaModule         = "github.com/kedacore/keda/v2"
)

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

// sourceKey hashes the named files (relative to dir), the linker flags and
// the Go toolchain: a cached binary is reused only for the same sources,
// flags and Go.
func sourceKey(dir, ldflags string, files ...string) (string, error) {
	h := sha256.New()
	_, _ = fmt.Fprintf(h, "ldflags %q\n", ldflags)
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", f, err)
		}
		_, _ = fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	h.Write([]byte(runtime.Version() + runtime.GOOS + runtime.GOARCH))
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// goCmd is `go args...` in dir, under `nice -n 15` when nice exists and
// K8S_E2E_NICE is not "0": the first build compiles Kubernetes and KEDA
// (tens of CPU-minutes) and must not starve other work on the machine.
func goCmd(ctx context.Context, dir string, args ...string) *exec.Cmd {
	name, argv := "go", args
	if os.Getenv("K8S_E2E_NICE") != "0" {
		if nice, err := exec.LookPath("nice"); err == nil {
			name, argv = nice, append([]string{"-n", "15", "go"}, args...)
		}
	}
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.Dir = dir
	return cmd
}

// cachedBuild builds the packages into cacheDir/<name>-<key>/ unless that
// directory already holds every binary. The directory appears atomically
// (built into a temporary sibling, then renamed), so an interrupted build
// leaves nothing that looks complete.
func cachedBuild(ctx context.Context, logw io.Writer, cacheDir, name, moduleDir, ldflags string, hashFiles, bins, pkgs []string) (string, error) {
	key, err := sourceKey(moduleDir, ldflags, hashFiles...)
	if err != nil {
		return "", err
	}
	// Absolute: go build runs in moduleDir.
	if cacheDir, err = filepath.Abs(cacheDir); err != nil {
		return "", err
	}
	out := filepath.Join(cacheDir, name+"-"+key)
	complete := true
	for _, b := range bins {
		if _, err := os.Stat(filepath.Join(out, b)); err != nil {
			complete = false
		}
	}
	if complete {
		buildLog(logw, "using cached %s in %s", name, out)
		return out, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cacheDir, name+"-tmp-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	buildLog(logw, "building %s into %s (first run: this compiles it from the Go module proxy; see test/k8s/README.md)", name, out)
	start := time.Now()
	cmd := goCmd(ctx, moduleDir, append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", tmp + string(os.PathSeparator)}, pkgs...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", name, err, b)
	}
	for _, b := range bins {
		if _, err := os.Stat(filepath.Join(tmp, b)); err != nil {
			return "", fmt.Errorf("build %s: %s missing after go build: %w", name, b, err)
		}
	}
	_ = os.RemoveAll(out)
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	buildLog(logw, "%s built in %s", name, time.Since(start).Round(time.Second))
	return out, nil
}

// buildCollector builds test/e2e's collector distribution into test/e2e's
// own cache under the name test/e2e uses (buildCollector in
// test/e2e/procs_test.go), so either test reuses the other's build.
func buildCollector(ctx context.Context, logw io.Writer) (string, error) {
	if p := os.Getenv("E2E_OTELCOL"); p != "" {
		return p, nil
	}
	const e2eDir = "../e2e"
	h := sha256.New()
	for _, f := range []string{"otelcol/go.mod", "otelcol/go.sum", "otelcol/main.go"} {
		b, err := os.ReadFile(filepath.Join(e2eDir, f))
		if err != nil {
			return "", fmt.Errorf("hash collector sources: %w", err)
		}
		h.Write(b)
	}
	h.Write([]byte(runtime.Version() + runtime.GOOS + runtime.GOARCH))
	abs, err := filepath.Abs(filepath.Join(e2eDir, ".cache", fmt.Sprintf("otelcol-e2e-%s-%s", collectorVersion, hex.EncodeToString(h.Sum(nil))[:12])))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err == nil {
		buildLog(logw, "using cached collector %s", abs)
		return abs, nil
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return "", err
	}
	buildLog(logw, "building OpenTelemetry Collector %s into %s", collectorVersion, abs)
	start := time.Now()
	tmp := abs + ".tmp"
	if b, err := goCmd(ctx, filepath.Join(e2eDir, "otelcol"), "build", "-trimpath", "-o", tmp, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build collector: %w\n%s", err, b)
	}
	if err := os.Rename(tmp, abs); err != nil {
		return "", err
	}
	buildLog(logw, "collector built in %s", time.Since(start).Round(time.Second))
	return abs, nil
}

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

// buildTools builds or finds every binary. Kubernetes and KEDA are cached in
// .cache/ keyed by their module files and the Go version; the collector is
// shared with test/e2e; the scaler is built from the working tree on every
// run (a relink when only this repository changed).
func buildTools(ctx context.Context, logw io.Writer) (*toolset, error) {
	start := time.Now()
	var ts toolset
	// The version stamps Kubernetes' and KEDA's own release builds set, so
	// /version and KEDA's logs report the real versions.
	const cb = "k8s.io/component-base/version."
	kubeLD := fmt.Sprintf("-X %sgitVersion=%s -X %sgitMajor=%s -X %sgitMinor=%s -X %sgitTreeState=clean",
		cb, kubeVersion, cb, kubeMajor, cb, kubeMinor, cb)
	kube, err := cachedBuild(ctx, logw, ".cache", "kube", "kube", kubeLD,
		[]string{"go.mod", "go.sum", "etcd/main.go", "kube-apiserver/main.go", "kube-controller-manager/main.go"},
		[]string{"etcd", "kube-apiserver", "kube-controller-manager"},
		[]string{"./etcd", "./kube-apiserver", "./kube-controller-manager"})
	if err != nil {
		return nil, err
	}
	ts.Etcd, ts.APIServer, ts.ControllerManager = filepath.Join(kube, "etcd"), filepath.Join(kube, "kube-apiserver"), filepath.Join(kube, "kube-controller-manager")
	keda, err := cachedBuild(ctx, logw, ".cache", "keda", "keda", "-X "+kedaModule+"/version.Version="+kedaVersion,
		[]string{"go.mod", "go.sum", "tools.go"},
		[]string{"operator", "adapter"},
		[]string{kedaModule + "/cmd/operator", kedaModule + "/cmd/adapter"})
	if err != nil {
		return nil, err
	}
	ts.Operator, ts.Adapter = filepath.Join(keda, "operator"), filepath.Join(keda, "adapter")
	if ts.Collector, err = buildCollector(ctx, logw); err != nil {
		return nil, err
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
