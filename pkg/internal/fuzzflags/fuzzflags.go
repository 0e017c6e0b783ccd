// Package fuzzflags gives the project's fuzz targets a bounded
// minimisation whatever command line runs them.
//
// When the fuzzer finds an input that reaches new code, it minimises it:
// it tries removing every byte and then every (i, j) range of the input,
// a number of runs quadratic in its length, for -fuzzminimizetime (60 s
// by default) per input. Go's coverage counters wrap past 255 (they never
// return to zero), so an input of kilobytes often reaches "new" counter
// values that no shorter input has, and the minimiser spends its whole
// minute on it while the run reports 0 execs/s: FuzzCompile stalled this
// way on every fresh run. A time bound ends by the coordinator killing the
// worker; a count ends cleanly and does not depend on the machine's load.
package fuzzflags

import "flag"

// MinimizeDefault is -test.fuzzminimizetime when the command line does
// not give one: at most this many runs of the target per minimisation
// (the Makefile's FUZZ_MINIMIZE). A 50-byte input minimises completely
// within it.
const MinimizeDefault = "1000x"

// Init parses the test binary's flags and sets -test.fuzzminimizetime to
// MinimizeDefault unless the command line set it. Call it first in a
// fuzzing package's TestMain: testing registers its flags before TestMain
// runs, and reads this one only when fuzzing starts.
func Init() {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.fuzzminimizetime" })
	if !given && flag.Lookup("test.fuzzminimizetime") != nil {
		if err := flag.Set("test.fuzzminimizetime", MinimizeDefault); err != nil {
			panic(err)
		}
	}
}
