package integration

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEveryFuzzTargetInMakefile: make fuzz runs only the targets listed in
// the Makefile's FUZZ_TARGETS (docs/style.md: every parser and decoder has
// a fuzz target, listed there). A Fuzz function of the main module that is
// not listed is never fuzzed; this finds it.
func TestEveryFuzzTargetInMakefile(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^FUZZ_TARGETS\s*=((?:.*\\\n)*.*)$`).FindSubmatch(mk)
	require.NotNil(t, m, "no FUZZ_TARGETS in the Makefile")
	listed := map[string]bool{}
	for _, f := range strings.Fields(strings.ReplaceAll(string(m[1]), "\\\n", " ")) {
		listed[f] = true
	}

	fuzzFunc := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(\w+ \*testing\.F\)`)
	var found []string
	require.NoError(t, filepath.WalkDir("../../pkg", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, f := range fuzzFunc.FindAllSubmatch(src, -1) {
			found = append(found, "./"+filepath.ToSlash(filepath.Dir(strings.TrimPrefix(path, "../../")))+":"+string(f[1]))
		}
		return nil
	}))
	require.NotEmpty(t, found)
	for _, f := range found {
		assert.Truef(t, listed[f], "%s is not in the Makefile's FUZZ_TARGETS", f)
		delete(listed, f)
	}
	assert.Empty(t, listed, "FUZZ_TARGETS names targets that do not exist")
}
