package fuzzflags

import (
	"flag"
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMain applies Init as the fuzzing packages do.
func TestMain(m *testing.M) {
	Init()
	m.Run()
}

// TestInit: without -fuzzminimizetime on the command line the bound is
// MinimizeDefault; one given on the command line is kept (checked in a
// child test binary started with it).
func TestInit(t *testing.T) {
	got := flag.Lookup("test.fuzzminimizetime").Value.String()
	if want := os.Getenv("FUZZFLAGS_WANT"); want != "" {
		if got != want {
			t.Fatalf("-test.fuzzminimizetime is %s, want %s", got, want)
		}
		return
	}
	assert.Equal(t, MinimizeDefault, got)

	cmd := exec.Command(os.Args[0], "-test.run=^TestInit$", "-test.fuzzminimizetime=7s")
	cmd.Env = append(os.Environ(), "FUZZFLAGS_WANT=7s")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "PASS")
}
