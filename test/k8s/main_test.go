package k8s

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	// theCluster is started by TestMain in the isolated child process;
	// clusterErr says why it is nil.
	theCluster *cluster
	clusterErr error
	tools      *toolset
)

// TestMain has two roles. Run by `go test`, it builds (or finds in the
// per-user binary cache, test/bincache) every binary, then re-runs this test binary isolated in new network and
// PID namespaces (runIsolated) and exits with its code. In that child it
// brings up the control plane and KEDA, runs the tests, and stops every
// process it started.
func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv(envProbe) != "" {
		os.Exit(probeMain())
	}
	if testing.Short() {
		os.Exit(m.Run()) // every test skips itself
	}
	if os.Getenv(envInNetns) == "" {
		os.Exit(parentMain())
	}
	os.Exit(childMain(m))
}

func parentMain() int {
	// Namespaces first: a machine that cannot create them should learn it
	// in a second, not after a build of tens of minutes.
	withUser, err := probeIsolation()
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s:", err)
		return 1
	}
	if withUser {
		buildLog(os.Stderr, "namespaces: with a user namespace (not root, or no CAP_SYS_ADMIN)")
	} else {
		buildLog(os.Stderr, "namespaces: as root")
	}
	if os.Getenv(envPreflightOnly) != "" {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Minute)
	defer cancel()
	ts, err := buildTools(ctx, os.Stderr)
	defer func() {
		if binCache != nil {
			_ = binCache.Close()
		}
	}()
	if ts != nil && ts.TmpDir != "" {
		defer func() { _ = os.RemoveAll(ts.TmpDir) }()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s: build:", err)
		return 1
	}
	b, err := json.Marshal(ts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s:", err)
		return 1
	}
	code, err := runIsolated(b, withUser)
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s:", err)
		return 1
	}
	return code
}

func childMain(m *testing.M) int {
	if err := isolate(); err != nil {
		fmt.Fprintln(os.Stderr, "k8s: namespaces:", err)
		return 1
	}
	var ts toolset
	if err := json.Unmarshal([]byte(os.Getenv(envTools)), &ts); err != nil {
		fmt.Fprintln(os.Stderr, "k8s: toolset:", err)
		return 1
	}
	tools = &ts
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	c, err := startCluster(ctx, &ts, os.Stderr)
	cancel()
	if err != nil {
		clusterErr = err
	} else {
		theCluster = c
		names := make([]string, 0, len(theCluster.started))
		for n := range theCluster.started {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool { return theCluster.started[names[i]] < theCluster.started[names[j]] })
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = fmt.Sprintf("%s %s", n, theCluster.started[n].Round(100*time.Millisecond))
		}
		report("cluster up (ready, from start): %s", strings.Join(parts, ", "))
	}
	code := m.Run()
	if theCluster != nil {
		theCluster.stop(code != 0)
	}
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1")); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	return code
}

// needCluster returns the cluster, failing the test if it did not start.
func needCluster(t *testing.T) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a Kubernetes control plane and KEDA (make e2e-k8s)")
	}
	if theCluster == nil {
		t.Fatalf("cluster did not start: %v", clusterErr)
	}
	return theCluster
}

// report prints a line of the run's report (grep "K8S REPORT").
func report(format string, args ...any) {
	fmt.Fprintln(os.Stderr, "K8S REPORT: "+fmt.Sprintf(format, args...))
}
