// Package procstat reads what the load tools measure of a server process
// from outside it (its CPU time and resident set from /proc) and
// summarises latencies. The capacity sweep (test/load/capacity) and the
// same-run comparison with kedify/otel-add-on (test/peer) use it, so both
// measure the two servers alike.
package procstat

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// Proc names a running process's /proc files.
type Proc struct {
	stat, status string
}

// Of returns the Proc of pid.
func Of(pid int) Proc {
	return Proc{stat: fmt.Sprintf("/proc/%d/stat", pid), status: fmt.Sprintf("/proc/%d/status", pid)}
}

// CPU is the process's user + system CPU time so far (0 once it is gone):
// CPU time, not wall time, because the machine is shared.
func (p Proc) CPU() time.Duration {
	b, err := os.ReadFile(p.stat)
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 (1-based) of the whole line, in clock ticks.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// RSS returns the process's peak (VmHWM) and current (VmRSS) resident set
// in bytes (0, 0 once it is gone).
func (p Proc) RSS() (peak, now int64) {
	b, err := os.ReadFile(p.status)
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			peak = kb << 10
		case "VmRSS:":
			now = kb << 10
		}
	}
	return peak, now
}

// Quantile returns the q-quantile of v (nearest rank, 0 for none).
func Quantile(v []time.Duration, q float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// MiB is b in mebibytes.
func MiB(b int64) float64 { return float64(b) / (1 << 20) }

// US is d in microseconds.
func US(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// LoadAvg is the machine's 1, 5 and 15 minute load averages, or "?".
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
