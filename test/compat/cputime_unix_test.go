//go:build unix

package compat

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user + system) the process has used,
// garbage collection included. Unlike wall time it does not grow while the
// process waits for a core, which on a shared 2-core machine is most of
// the noise.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
