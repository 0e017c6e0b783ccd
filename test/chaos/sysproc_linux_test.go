package chaos

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the server die with the test process, so a test
// that times out (and runs no cleanup) leaves no server behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
