//go:build !unix

package compat

import "time"

// processCPU is unavailable here; TestSpeedRatio then gates on wall time.
func processCPU() time.Duration { return 0 }
