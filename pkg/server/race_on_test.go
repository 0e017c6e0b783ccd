//go:build race

package server

// raceEnabled: the race detector slows the 2,000-stream fan-out about
// twentyfold and distorts timing; latency tests run in make gates instead.
const raceEnabled = true
