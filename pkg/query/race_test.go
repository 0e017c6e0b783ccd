//go:build race

package query

// raceEnabled is true under -race, whose instrumentation makes heap
// measurements meaningless; the heap gates run without it in make gates.
const raceEnabled = true
