package k8s

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// envInNetns marks the child test process that runs inside the private
// network and PID namespaces; envTools carries the toolset into it.
const (
	envInNetns = "K8S_E2E_IN_NETNS"
	envTools   = "K8S_E2E_TOOLS"
)

// runIsolated re-runs this test binary, with the same arguments, as PID 1 of
// a new PID namespace inside a new network namespace that has only a
// loopback interface (and a mount namespace, for that PID namespace's own
// /proc: collectors read their own process through it). Every process the tests start (etcd, the API server,
// KEDA, collectors, the scaler) is its descendant, so:
//   - nothing they listen on is reachable from outside the namespace (KEDA's
//     adapter binds its metrics port on all interfaces, hard-coded);
//   - when the child exits for any reason, even SIGKILL, the kernel kills
//     every process left in its PID namespace;
//   - the child gets SIGKILL if this process dies (Pdeathsig).
//
// Not root: a user namespace maps the caller to root inside it, which is
// enough to bring loopback up. It returns the child's exit code.
func runIsolated(toolsJSON []byte) (int, error) {
	// Pdeathsig fires when the thread that started the child exits: keep
	// this goroutine on its thread until the child is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envInNetns+"=1", envTools+"="+string(toolsJSON))
	attr := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}
	if os.Geteuid() != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	cmd.SysProcAttr = attr
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
