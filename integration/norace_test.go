//go:build !race

package integration

// raceEnabled is true when the tests run with -race.
const raceEnabled = false
