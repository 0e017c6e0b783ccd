//go:build race

package scaler

// raceEnabled is true under -race, whose instrumentation makes heap
// measurements and parse-heavy loops meaningless or slow; the heap gates
// run without it in make gates.
const raceEnabled = true
