package bincache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fixture is a cache directory and a module directory with two hashed
// files; build counts its calls and writes every binary of the spec.
type fixture struct {
	t      *testing.T
	dir    string // cache
	src    string // module
	builds atomic.Int32
	delay  time.Duration
	logs   strings.Builder
	logMu  sync.Mutex
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), src: t.TempDir()}
	t.Setenv(EnvDir, f.dir)
	f.write("go.mod", "module x\n")
	f.write("main.go", "package main\n")
	return f
}

func (f *fixture) write(name, content string) {
	require.NoError(f.t, os.WriteFile(filepath.Join(f.src, name), []byte(content), 0o644))
}

func (f *fixture) spec(tool string) Spec {
	return Spec{Tool: tool, Dir: f.src, Files: []string{"go.mod", "main.go"}, LDFlags: "-s", Bins: []string{"a", "b"}}
}

// open is one test process's view of the cache: its own lock files.
func (f *fixture) open() *Cache {
	f.t.Helper()
	c, err := Open(filepath.Join(f.t.TempDir(), "fallback"), func(format string, args ...any) {
		f.logMu.Lock()
		defer f.logMu.Unlock()
		fmt.Fprintf(&f.logs, format+"\n", args...)
	})
	require.NoError(f.t, err)
	c.build = func(ctx context.Context, s Spec, out string) error {
		f.builds.Add(1)
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		for _, b := range s.Bins {
			if err := os.WriteFile(filepath.Join(out, b), []byte(s.Tool), 0o755); err != nil {
				return err
			}
		}
		return nil
	}
	f.t.Cleanup(func() { _ = c.Close() })
	return c
}

// names lists the cache directory, lock files and all.
func (f *fixture) names() []string {
	es, err := os.ReadDir(f.dir)
	require.NoError(f.t, err)
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	sort.Strings(n)
	return n
}

func TestGetBuildsOnceThenReuses(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p1, err := f.open().Get(ctx, f.spec("kube"))
	require.NoError(t, err)
	assert.Equal(t, int32(1), f.builds.Load())
	key, err := Key(f.spec("kube"))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(f.dir, "kube-"+key), p1)
	assert.FileExists(t, filepath.Join(p1, "a"))
	assert.Equal(t, []string{"kube-" + key, "kube-" + key + ".lock"}, f.names(), "no temporary left")

	c := f.open() // a later process, e.g. CI's next clean clone
	p2, err := c.Get(ctx, f.spec("kube"))
	require.NoError(t, err)
	assert.Equal(t, p1, p2)
	p3, err := c.Get(ctx, f.spec("kube"))
	require.NoError(t, err)
	assert.Equal(t, p1, p3)
	assert.Equal(t, int32(1), f.builds.Load(), "a complete entry is reused")
	assert.Contains(t, f.logs.String(), "using cached kube")

	f.write("main.go", "package main // changed\n")
	c4 := f.open()
	p4, err := c4.Get(ctx, f.spec("kube"))
	require.NoError(t, err)
	assert.NotEqual(t, p1, p4, "a changed source is another key")
	assert.Equal(t, int32(2), f.builds.Load())

	// Damaged after its user finished (a user holds the entry shared, so a
	// rebuild waits for it: TestWaitEndsWithContext).
	require.NoError(t, c4.Close())
	require.NoError(t, os.Remove(filepath.Join(p4, "b")))
	p5, err := f.open().Get(ctx, f.spec("kube"))
	require.NoError(t, err)
	assert.Equal(t, p4, p5)
	assert.Equal(t, int32(3), f.builds.Load(), "an incomplete entry is rebuilt")
	assert.FileExists(t, filepath.Join(p5, "b"))
}

// TestConcurrentProcessesBuildOnce: Caches opened separately hold separate
// open files, so flock(2) arbitrates between them exactly as between test
// processes: one builds, the others wait and reuse.
func TestConcurrentProcessesBuildOnce(t *testing.T) {
	f := newFixture(t)
	f.delay = 300 * time.Millisecond
	const n = 4
	paths := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		c := f.open()
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			paths[i], errs[i] = c.Get(ctx, f.spec("keda"))
		}()
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		assert.Equal(t, paths[0], paths[i])
	}
	assert.Equal(t, int32(1), f.builds.Load(), "one process builds a key")
	assert.Contains(t, f.logs.String(), "waiting for another process")
	assert.FileExists(t, filepath.Join(paths[0], "a"))
}

// TestWaitEndsWithContext: a process waiting for another's build gives up
// when its context ends, with an error saying what it waited for.
func TestWaitEndsWithContext(t *testing.T) {
	f := newFixture(t)
	key, err := Key(f.spec("kube"))
	require.NoError(t, err)
	lock, err := os.OpenFile(filepath.Join(f.dir, "kube-"+key+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	require.NoError(t, err)
	defer func() { _ = lock.Close() }()
	require.NoError(t, syscall.Flock(int(lock.Fd()), syscall.LOCK_EX)) // "another process" builds
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	_, err = f.open().Get(ctx, f.spec("kube"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "kube-"+key)
	assert.Equal(t, int32(0), f.builds.Load())
}

func TestFailedBuildLeavesNothingComplete(t *testing.T) {
	f := newFixture(t)
	c := f.open()
	c.build = func(_ context.Context, _ Spec, out string) error {
		f.builds.Add(1)
		require.NoError(t, os.WriteFile(filepath.Join(out, "a"), nil, 0o755)) // half done
		return errors.New("compiler killed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.Get(ctx, f.spec("kube"))
	require.ErrorContains(t, err, "compiler killed")
	key, _ := Key(f.spec("kube"))
	assert.Equal(t, []string{"kube-" + key + ".lock"}, f.names(), "neither an entry nor a temporary")

	// A build killed outright leaves its temporary: the next build of the
	// key removes it.
	require.NoError(t, os.Mkdir(filepath.Join(f.dir, "kube-"+key+".tmp-123"), 0o755))
	_, err = f.open().Get(ctx, f.spec("kube"))
	require.NoError(t, err)
	assert.Equal(t, []string{"kube-" + key, "kube-" + key + ".lock"}, f.names())
}

// TestRenameWins: when another build of the key completes first, the
// entry in place is kept and this build's output dropped.
func TestRenameWins(t *testing.T) {
	f := newFixture(t)
	c := f.open()
	key, _ := Key(f.spec("kube"))
	winner := filepath.Join(f.dir, "kube-"+key)
	c.build = func(_ context.Context, s Spec, out string) error {
		require.NoError(t, os.Mkdir(winner, 0o755))
		for _, b := range s.Bins {
			require.NoError(t, os.WriteFile(filepath.Join(winner, b), []byte("winner"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(out, b), []byte("loser"), 0o755))
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := c.Get(ctx, f.spec("kube"))
	require.NoError(t, err)
	assert.Equal(t, winner, p)
	b, err := os.ReadFile(filepath.Join(p, "a"))
	require.NoError(t, err)
	assert.Equal(t, "winner", string(b))
	assert.Equal(t, []string{"kube-" + key, "kube-" + key + ".lock"}, f.names())
}

// TestPrune: after a lookup, the tool keeps the entry used and its most
// recently used other key (if used within MaxAge); older keys, their locks
// and temporaries go; entries in use and other tools' entries stay.
func TestPrune(t *testing.T) {
	now := time.Now()
	mk := func(t *testing.T, f *fixture, name string, age time.Duration) {
		t.Helper()
		p := filepath.Join(f.dir, name)
		require.NoError(t, os.Mkdir(p, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(p, "a"), nil, 0o755))
		require.NoError(t, os.WriteFile(p+".lock", nil, 0o644))
		require.NoError(t, os.Chtimes(p, now.Add(-age), now.Add(-age)))
	}
	for _, tc := range []struct {
		name  string
		have  map[string]time.Duration // entry → age of last use
		inUse string
		want  []string // entries left besides the current one
	}{
		{"newest other kept", map[string]time.Duration{"kube-000000000001": time.Hour, "kube-000000000002": 2 * time.Hour, "kube-000000000003": 30 * 24 * time.Hour}, "", []string{"kube-000000000001"}},
		{"other unused for 7 days removed", map[string]time.Duration{"kube-000000000001": 8 * 24 * time.Hour}, "", nil},
		{"entry in use kept", map[string]time.Duration{"kube-000000000001": time.Hour, "kube-000000000002": 30 * 24 * time.Hour}, "kube-000000000002", []string{"kube-000000000001", "kube-000000000002"}},
		{"other tools untouched", map[string]time.Duration{"kube-extra-000000000001": 30 * 24 * time.Hour, "keda-000000000001": 30 * 24 * time.Hour}, "", []string{"keda-000000000001", "kube-extra-000000000001"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			for n, age := range tc.have {
				mk(t, f, n, age)
			}
			// A killed build of an old key.
			require.NoError(t, os.Mkdir(filepath.Join(f.dir, "kube-000000000009.tmp-1"), 0o755))
			old := now.Add(-30 * 24 * time.Hour)
			require.NoError(t, os.Chtimes(filepath.Join(f.dir, "kube-000000000009.tmp-1"), old, old))
			if tc.inUse != "" {
				l, err := os.Open(filepath.Join(f.dir, tc.inUse+".lock"))
				require.NoError(t, err)
				defer func() { _ = l.Close() }()
				require.NoError(t, syscall.Flock(int(l.Fd()), syscall.LOCK_SH))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p, err := f.open().Get(ctx, f.spec("kube"))
			require.NoError(t, err)
			var left []string
			for _, n := range f.names() {
				if !strings.HasSuffix(n, ".lock") && filepath.Join(f.dir, n) != p {
					left = append(left, n)
				}
			}
			assert.Equal(t, tc.want, left)
			for _, n := range left {
				assert.FileExists(t, filepath.Join(f.dir, n+".lock"), "a kept entry keeps its lock")
			}
			assert.NoFileExists(t, filepath.Join(f.dir, "kube-000000000003.lock"), "a removed entry's lock goes too")
		})
	}
}

func TestKey(t *testing.T) {
	f := newFixture(t)
	base, err := Key(f.spec("kube"))
	require.NoError(t, err)
	assert.Regexp(t, `^[0-9a-f]{12}$`, base)
	for _, tc := range []struct {
		name string
		edit func(s *Spec)
		same bool
	}{
		{"file order does not matter", func(s *Spec) { s.Files = []string{"main.go", "go.mod"} }, true},
		{"the tool name is not hashed", func(s *Spec) { s.Tool = "other" }, true},
		{"linker flags", func(s *Spec) { s.LDFlags = "-s -w" }, false},
		{"another file set", func(s *Spec) { s.Files = []string{"go.mod"} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := f.spec("kube")
			tc.edit(&s)
			k, err := Key(s)
			require.NoError(t, err)
			assert.Equal(t, tc.same, k == base)
		})
	}
	_, err = Key(Spec{Dir: f.src, Files: []string{"missing.go"}})
	require.ErrorContains(t, err, "missing.go")
}

func TestOpenChoosesDirectory(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "a-file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	fallback := filepath.Join(tmp, "fallback")
	for _, tc := range []struct {
		name, env, xdg string
		want           string
		wantErr        string
	}{
		{"per-user cache", "", filepath.Join(tmp, "xdg"), filepath.Join(tmp, "xdg", "keda-otel-scaler"), ""},
		{"KOS_TEST_CACHE wins", filepath.Join(tmp, "env"), filepath.Join(tmp, "xdg"), filepath.Join(tmp, "env"), ""},
		{"unwritable per-user cache: the fallback", "", filepath.Join(file, "sub"), fallback, ""},
		{"unwritable KOS_TEST_CACHE is an error", filepath.Join(file, "sub"), filepath.Join(tmp, "xdg"), "", EnvDir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvDir, tc.env)
			t.Setenv("XDG_CACHE_HOME", tc.xdg)
			var logs strings.Builder
			c, err := Open(fallback, func(format string, args ...any) { fmt.Fprintf(&logs, format, args...) })
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.Dir())
			assert.DirExists(t, c.Dir())
			if tc.want == fallback {
				assert.Contains(t, logs.String(), "per-user cache directory unusable")
			}
		})
	}
}

// TestGoBuild builds a real (tiny) module the way the suites build theirs:
// go build with the linker flags, under nice.
func TestGoBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	f := newFixture(t)
	f.write("go.mod", "module example.com/hello\n\ngo 1.22\n")
	f.write("main.go", "package main\n\nimport \"os\"\n\nvar v = \"unset\"\n\nfunc main() { os.Stdout.WriteString(v) }\n")
	c, err := Open(t.TempDir(), t.Logf)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := Spec{Tool: "hello", Dir: f.src, Files: []string{"go.mod", "main.go"}, LDFlags: "-X main.v=stamped", Pkgs: []string{"."}, Bins: []string{"hello"}, Nice: true}
	p, err := c.Get(ctx, s)
	require.NoError(t, err)
	out, err := exec.CommandContext(ctx, filepath.Join(p, "hello")).Output()
	require.NoError(t, err)
	assert.Equal(t, "stamped", string(out))

	s.Pkgs = []string{"./nothing-here"}
	s.LDFlags = "-X main.v=other"
	_, err = c.Get(ctx, s)
	require.ErrorContains(t, err, "nothing-here", "go build's own message is kept")
}
