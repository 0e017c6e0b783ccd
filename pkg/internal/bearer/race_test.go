//go:build race

package bearer

// raceEnabled is true under -race, which allocates on its own.
const raceEnabled = true
