package query

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNoHTTPInQuery is issue #15 item 3: the HTTP API lives in pkg/promapi,
// and no package of this module that pkg/query builds on imports net/http.
// `go list -deps ./pkg/query` still lists net/http, because Prometheus's
// parser imports its storage package, which imports client_golang (expvar,
// expfmt); so the test checks that every importer of net/http among the
// dependencies is one the parser already brings in.
func TestNoHTTPInQuery(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH")
	}
	importers := func(pkg string) map[string]bool {
		t.Helper()
		out, err := exec.Command(goBin, "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, pkg).Output()
		require.NoError(t, err, "go list -deps %s", pkg)
		got := map[string]bool{}
		for line := range strings.Lines(string(out)) {
			fields := strings.Fields(line)
			if len(fields) > 1 && slices.Contains(fields[1:], "net/http") {
				got[fields[0]] = true
			}
		}
		return got
	}
	ours := importers(".")
	parser := importers("github.com/prometheus/prometheus/promql/parser")
	require.NotEmpty(t, parser, "the premise: the parser brings net/http in")
	for pkg := range ours {
		assert.False(t, strings.HasPrefix(pkg, "github.com/keda-otel-scaler/"), "%s imports net/http", pkg)
		assert.True(t, parser[pkg], "%s imports net/http and is not a dependency of Prometheus's parser", pkg)
	}
}
