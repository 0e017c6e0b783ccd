//go:build race

package chaos

// raceEnabled: under the race detector the load generator, not the
// server, becomes the bottleneck; the suite skips (make test runs it
// without -race).
const raceEnabled = true
