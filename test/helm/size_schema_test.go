package helm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sizeInputs are the strings TestSizePatternsMatchParseSize offers both
// the chart's schema and the server's size parser (config.ParseSize):
// the accepted forms, each suffix's longest number and one digit more, and
// every near miss a values file might carry.
var sizeInputs = []string{
	"0", "1", "1024", "64MiB", "512KiB", "1GiB", "0MiB", "0GiB",
	"999999999999999999", "1000000000000000000",
	"999999999999999KiB", "1000000000000000KiB",
	"999999999999MiB", "1000000000000MiB",
	"999999999GiB", "1000000000GiB",
	"+5", "-1", "-0", " 5", "5 ", "5 MiB", "064MiB", "00", "1.5MiB", "1e6",
	"5B", "5TiB", "5KB", "5MB", "5mib", "5Mi", "MiB", "KiB5", "5KiBKiB", "lots",
}

// TestSizePatternsMatchParseSize checks that every size value's pattern in
// values.schema.json accepts exactly what the server's size flags accept:
// a value the schema lets through must not stop the server at start, and
// a value the server takes must not be refused by the schema. The size
// flags are found from the server's --help (their usage names the KiB
// suffix), the server's verdict from parsing --<flag>=<input> --help (exit
// 0: parsed; 2: refused). The empty string is the schema's "server
// default" (the chart renders no variable; TestConfigEnv) and is not a size.
func TestSizePatternsMatchParseSize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the server")
	}
	bin := buildServer(t)
	help := runServer(t, bin, "--help")
	require.Zero(t, help.code, help.out)
	var sizeFlags []string
	for _, m := range regexp.MustCompile(`(?m)^\s+-{1,2}([a-z0-9-]+) [a-z]+\n\s+(.*)$`).FindAllStringSubmatch(help.out, -1) {
		if strings.Contains(m[2], "KiB") {
			sizeFlags = append(sizeFlags, m[1])
		}
	}
	require.NotEmpty(t, sizeFlags, help.out)

	accepted := map[string]bool{}
	for _, in := range sizeInputs {
		r := runServer(t, bin, "--"+sizeFlags[0]+"="+in, "--help")
		require.Containsf(t, []int{0, 2}, r.code, "%q: %s", in, r.out)
		accepted[in] = r.code == 0
	}
	assert.True(t, accepted["64MiB"], "the server takes 64MiB")

	patterns := sizeSchemaPatterns(t)
	keyOf := map[string]string{} // env twin -> chart key
	for _, tc := range configEnv {
		keyOf[tc.env] = tc.key
	}
	for _, flag := range sizeFlags {
		key, ok := keyOf["KOS_"+strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))]
		require.Truef(t, ok, "size flag --%s has no chart value in configEnv", flag)
		pat, ok := patterns[key]
		require.Truef(t, ok, "config.%s (--%s) has no size pattern in values.schema.json", key, flag)
		re := regexp.MustCompile(pat)
		assert.Truef(t, re.MatchString(""), "config.%s: \"\" means the server default", key)
		for _, in := range sizeInputs {
			assert.Equalf(t, accepted[in], re.MatchString(in), "config.%s %q: server accepts %v, schema pattern %s", key, in, accepted[in], pat)
		}
		delete(patterns, key)
	}
	assert.Empty(t, patterns, "size patterns in values.schema.json for values that are no size flag")

	// Integers: the schema's bound is the 18-digit limit; what the chart
	// renders from an integer the server parses.
	for _, tc := range []struct {
		v  int64
		ok bool
	}{{0, true}, {1 << 20, true}, {999_999_999_999_999_999, true}, {1_000_000_000_000_000_000, false}} {
		o, err := render(t, set("config.otlpMaxRecvSize", tc.v))
		if !tc.ok {
			require.Error(t, err, "%d", tc.v)
			continue
		}
		require.NoError(t, err, "%d", tc.v)
		v := envMap(container(t, o))["KOS_OTLP_MAX_RECV_SIZE"]
		assert.Zero(t, runServer(t, bin, "--otlp-max-recv-size="+v, "--help").code, "rendered %q", v)
	}
}

// sizeSchemaPatterns returns the string pattern of every config value in
// values.schema.json whose pattern names a KiB suffix.
func sizeSchemaPatterns(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	require.NoError(t, err)
	var schema struct {
		Properties struct {
			Config struct {
				Properties map[string]struct {
					Pattern string `json:"pattern"`
					AnyOf   []struct {
						Type    string `json:"type"`
						Pattern string `json:"pattern"`
					} `json:"anyOf"`
				} `json:"properties"`
			} `json:"config"`
		} `json:"properties"`
	}
	require.NoError(t, json.Unmarshal(raw, &schema))
	out := map[string]string{}
	for key, p := range schema.Properties.Config.Properties {
		pats := []string{p.Pattern}
		for _, a := range p.AnyOf {
			pats = append(pats, a.Pattern)
		}
		for _, pat := range pats {
			if strings.Contains(pat, "KiB") {
				out[key] = pat
			}
		}
	}
	return out
}

type serverRun struct {
	code int
	out  string
}

// runServer runs the server binary with args and returns its exit code
// and output; it must exit (--help does) within 30 s.
func runServer(t *testing.T, bin string, args ...string) serverRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return serverRun{0, out.String()}
	case errors.As(err, &ee):
		return serverRun{ee.ExitCode(), out.String()}
	}
	require.NoError(t, err)
	return serverRun{}
}
