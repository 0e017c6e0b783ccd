package k8s

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// envInNetns marks the child test process that runs inside the private
// network and PID namespaces; envTools carries the toolset into it;
// envProbe marks probeIsolation's child, which only calls isolate;
// envPreflightOnly makes the parent stop after probeIsolation
// (TestIsolationPreflight).
const (
	envInNetns       = "K8S_E2E_IN_NETNS"
	envTools         = "K8S_E2E_TOOLS"
	envProbe         = "K8S_E2E_PROBE"
	envPreflightOnly = "K8S_E2E_PREFLIGHT_ONLY"
)

// isolatedCmd re-runs this test binary, with the same arguments, as PID 1
// of a new PID namespace inside a new network namespace that has only a
// loopback interface (and a mount namespace, for that PID namespace's own
// /proc: collectors read their own process through it). Every process the
// tests start (etcd, the API server, KEDA, collectors, the scaler) is its
// descendant, so:
//   - nothing they listen on is reachable from outside the namespace (KEDA's
//     adapter binds its metrics port on all interfaces, hard-coded);
//   - when the child exits for any reason, even SIGKILL, the kernel kills
//     every process left in its PID namespace;
//   - the child gets SIGKILL if the thread that started it dies
//     (Pdeathsig; callers lock their goroutine to its thread).
//
// withUser adds a user namespace that maps the caller to root inside it:
// what lets a non-root user, or root without CAP_SYS_ADMIN (an
// unprivileged container), create the others.
func isolatedCmd(ctx context.Context, env []string, withUser bool) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], os.Args[1:]...)
	cmd.Stdin = nil
	cmd.Env = append(os.Environ(), env...)
	attr := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}
	if withUser {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	cmd.SysProcAttr = attr
	return cmd
}

// probeIsolation checks, before anything is built, that this process can
// create the namespaces isolatedCmd needs and that isolate succeeds in
// them: it starts this binary there with envProbe, first without a user
// namespace when running as root, then with one. It reports whether the
// user namespace is needed, or an error that says what to change. The
// probe is bounded (30 s): a failure is reported, never waited on.
func probeIsolation() (withUser bool, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	modes := []bool{true}
	if os.Geteuid() == 0 {
		modes = []bool{false, true}
	}
	var problems []string
	for _, u := range modes {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := isolatedCmd(ctx, []string{envProbe + "=1"}, u).CombinedOutput()
		cancel()
		if err == nil {
			return u, nil
		}
		how := "as root"
		if u {
			how = "in a user namespace"
		}
		problems = append(problems, fmt.Sprintf("%s: %v %s", how, err, strings.TrimSpace(string(out))))
	}
	return false, fmt.Errorf("make e2e-k8s runs the cluster in new network, PID and mount namespaces and cannot create them here (%s); "+
		"run it as root with CAP_SYS_ADMIN (in a container: --privileged), or allow unprivileged user namespaces "+
		"(sysctl user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 where that sysctl exists; "+
		"kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu)", strings.Join(problems, "; "))
}

// probeMain is the probe's child: it only isolates itself.
func probeMain() int {
	if err := isolate(); err != nil {
		fmt.Fprintln(os.Stderr, "isolate:", err)
		return 1
	}
	return 0
}

// runIsolated runs the tests in the isolated child (isolatedCmd) and
// returns its exit code.
func runIsolated(toolsJSON []byte, withUser bool) (int, error) {
	// Pdeathsig fires when the thread that started the child exits: keep
	// this goroutine on its thread until the child is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := isolatedCmd(context.Background(), []string{envInNetns + "=1", envTools + "=" + string(toolsJSON)}, withUser)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return 1, fmt.Errorf("start the test in new network and PID namespaces: %w", err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() >= 0 {
			return ee.ExitCode(), nil
		}
		return 1, fmt.Errorf("isolated test process: %w", err)
	}
	return 0, err
}

// isolate runs first in the child: it mounts /proc for the new PID
// namespace (privately, the host's mounts are untouched), brings the network
// namespace's loopback interface up and checks that it is the only
// interface: the isolation runIsolated promises.
func isolate() error {
	if os.Getpid() != 1 {
		return fmt.Errorf("not PID 1 of a new PID namespace (pid %d)", os.Getpid())
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }()
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("network namespace has a non-loopback interface %q", i.Name)
		}
	}
	return nil
}
