package k8s

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIsolationPreflight: where the namespaces cannot be created, the
// parent says so with what to change, at once and before building anything;
// root without CAP_SYS_ADMIN (an unprivileged container) falls back to a
// user namespace. Each case runs this test binary's parent up to its
// preflight (envPreflightOnly) inside `unshare --user --map-root-user`,
// where user.max_user_namespaces can be set for that namespace alone and
// setpriv drops CAP_SYS_ADMIN from the bounding set (as Docker does).
func TestIsolationPreflight(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare(1)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv(1)")
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, envInNetns+"=") && !strings.HasPrefix(e, envTools+"=") {
			env = append(env, e)
		}
	}
	env = append(env, envPreflightOnly+"=1")
	for _, tc := range []struct {
		name        string
		userns      bool // user namespaces may be created
		capSysAdmin bool
		wantCode    int
		want        []string
	}{
		{"root with CAP_SYS_ADMIN", false, true, 0, []string{"k8s: namespaces: as root"}},
		{"root without CAP_SYS_ADMIN, user namespaces allowed", true, false, 0, []string{"k8s: namespaces: with a user namespace"}},
		{"root without CAP_SYS_ADMIN, no user namespaces", false, false, 1, []string{
			"cannot create them here", "as root: ", "operation not permitted",
			"in a user namespace: ", "no space left on device", "user.max_user_namespaces", "--privileged",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script := ""
			if !tc.userns {
				script += "echo 0 > /proc/sys/user/max_user_namespaces || exit 97; "
			}
			if tc.capSysAdmin {
				script += `exec "$0" -test.run='^$'`
			} else {
				script += `exec "$1" --bounding-set=-sys_admin "$0" -test.run='^$'`
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, unshare, "--user", "--map-root-user", "sh", "-c", script, os.Args[0], setpriv)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			require.NoError(t, ctx.Err(), "the preflight must not hang:\n%s", out)
			code := 0
			var ee *exec.ExitError
			if err != nil {
				require.ErrorAs(t, err, &ee, "%s", out)
				code = ee.ExitCode()
			}
			if code == 97 {
				t.Skipf("cannot set up the case here (unshare --user): %s", out)
			}
			require.Equal(t, tc.wantCode, code, "%s", out)
			for _, w := range tc.want {
				assert.Contains(t, string(out), w)
			}
			assert.NotContains(t, string(out), "building", "nothing is built before the preflight")
		})
	}
}
