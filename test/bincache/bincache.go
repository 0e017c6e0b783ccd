// Package bincache keeps the binaries the end-to-end suites build from the Go
// module proxy (test/e2e's OpenTelemetry Collector, test/k8s's Kubernetes
// and KEDA) in a per-user directory outside the repository, so that a fresh
// clone (what CI tests) reuses them instead of relinking them from the Go
// build cache on every run. test/e2e and test/k8s both use it; it is a
// module of its own, with no dependency, so neither pulls in the other's
// module graph.
//
// Layout of the cache directory:
//
//	<tool>-<key>/        a complete entry: every binary of the Spec
//	<tool>-<key>.lock    flock(2) file of that entry
//	<tool>-<key>.tmp-*   a build in progress (or one that was killed)
//
// The key hashes what decides the binary: the hashed source and module
// files, the linker flags, the Go toolchain and GOOS/GOARCH.
//
// Concurrency contract (several test processes, several clones, one
// directory): a process that uses an entry holds a shared lock on its lock
// file from lookup until Close (the test process's lifetime). Building
// needs the exclusive lock, so one process builds a key while the others
// wait, then find it complete. A build goes into a temporary directory in
// the same directory and appears with one rename, so an interrupted build
// never looks complete; should two builds of one key finish anyway (a lock
// file removed under a waiter), the first rename wins and the second
// build's output is discarded. Pruning removes an entry only under a
// non-blocking exclusive lock, never while a process uses or builds it.
//
// Bound, per tool, applied after every lookup: the entry just used is kept;
// of the tool's other keys, only the most recently used one is kept (Keep
// = 2 entries per tool), and only while it was used within the last MaxAge
// (7 days). A lookup marks its entry used (the directory's mtime).
package bincache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// EnvDir names the cache directory, overriding the per-user default.
const EnvDir = "KOS_TEST_CACHE"

// Defaults of the per-tool bound (see the package comment).
const (
	DefaultKeep   = 2
	DefaultMaxAge = 7 * 24 * time.Hour
)

// Spec is one cache entry's recipe: `go build -trimpath -ldflags LDFlags
// -o <entry>/ Pkgs...` run in Dir, producing Bins.
type Spec struct {
	// Tool names the entry ("kube", "keda", "otelcol-e2e"): lower-case
	// letters, digits and '-'. Entries of one tool bound each other.
	Tool string
	// Dir is the module directory the build runs in; Files are relative
	// to it.
	Dir string
	// Files are hashed into the key: the module files and sources that
	// decide the binaries.
	Files   []string
	LDFlags string
	Pkgs    []string
	// Bins must all exist in a complete entry.
	Bins []string
	// Nice runs the build under `nice -n 15` (when nice exists): a build
	// of tens of CPU-minutes must not starve the rest of the machine.
	Nice bool
	// Expect is printed when the entry has to be built: how long a build
	// takes, so that a first run does not look hung.
	Expect string
}

var toolRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// Key is the hash an entry of s is stored under: the linker flags, each
// file's name, length and contents (sorted by name) and the Go toolchain
// with GOOS/GOARCH.
func Key(s Spec) (string, error) {
	h := sha256.New()
	_, _ = fmt.Fprintf(h, "ldflags %q\n", s.LDFlags)
	files := append([]string(nil), s.Files...)
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(s.Dir, f))
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", f, err)
		}
		_, _ = fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	h.Write([]byte(runtime.Version() + runtime.GOOS + runtime.GOARCH))
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// Cache is an open cache directory. Its methods are safe for concurrent use;
// Get calls are serialised (a build runs under the Cache's lock).
type Cache struct {
	dir    string
	logf   func(format string, args ...any)
	Keep   int
	MaxAge time.Duration

	// build is the builder; tests replace it.
	build func(ctx context.Context, s Spec, out string) error

	mu   sync.Mutex
	got  map[string]string // entry name → path, found by this Cache
	held []*os.File        // shared locks of the entries in got
}

// Open returns the cache in $KOS_TEST_CACHE when set (an error if it cannot
// be written), else in os.UserCacheDir()/keda-otel-scaler
// (~/.cache/keda-otel-scaler), else, when that is not writable, in
// fallback (the calling suite's in-clone .cache/). logf reports what the
// cache does.
func Open(fallback string, logf func(format string, args ...any)) (*Cache, error) {
	dir, err := chooseDir(fallback, logf)
	if err != nil {
		return nil, err
	}
	return &Cache{dir: dir, logf: logf, Keep: DefaultKeep, MaxAge: DefaultMaxAge, build: goBuild, got: map[string]string{}}, nil
}

func chooseDir(fallback string, logf func(string, ...any)) (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		if err := writable(d); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvDir, d, err)
		}
		return filepath.Abs(d)
	}
	base, err := os.UserCacheDir()
	if err == nil {
		d := filepath.Join(base, "keda-otel-scaler")
		if err = writable(d); err == nil {
			return d, nil
		}
	}
	if err := writable(fallback); err != nil {
		return "", fmt.Errorf("no writable cache directory: %w", err)
	}
	abs, aerr := filepath.Abs(fallback)
	if aerr != nil {
		return "", aerr
	}
	logf("per-user cache directory unusable (%v); caching in %s (set %s to choose)", err, abs, EnvDir)
	return abs, nil
}

func writable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".probe-")
	if err != nil {
		return err
	}
	_ = f.Close()
	return os.Remove(f.Name())
}

// Dir is the cache directory in use.
func (c *Cache) Dir() string { return c.dir }

// Close releases the shared locks of the entries this Cache returned; their
// paths must not be used afterwards. A test process may instead leave them
// to its exit.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, f := range c.held {
		errs = append(errs, f.Close())
	}
	c.held, c.got = nil, map[string]string{}
	return errors.Join(errs...)
}

// Get returns the directory holding s's binaries, building them first when
// no complete entry for s's key exists. The entry stays locked (shared)
// until Close.
func (c *Cache) Get(ctx context.Context, s Spec) (string, error) {
	if !toolRe.MatchString(s.Tool) {
		return "", fmt.Errorf("bincache: bad tool name %q", s.Tool)
	}
	key, err := Key(s)
	if err != nil {
		return "", err
	}
	name := s.Tool + "-" + key
	out := filepath.Join(c.dir, name)
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.got[name]; ok {
		return p, nil
	}
	lock, err := os.OpenFile(filepath.Join(c.dir, name+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", err
	}
	if err := c.get(ctx, s, name, out, lock); err != nil {
		_ = lock.Close()
		return "", err
	}
	c.got[name] = out
	c.held = append(c.held, lock)
	c.prune(s.Tool, key)
	return out, nil
}

// get runs with lock open and returns with it held shared and out complete.
func (c *Cache) get(ctx context.Context, s Spec, name, out string, lock *os.File) error {
	if err := c.flock(ctx, lock, syscall.LOCK_SH, name); err != nil {
		return err
	}
	if !complete(out, s.Bins) {
		// Upgrading is not atomic (flock(2)): the shared lock may be gone
		// while we wait, so completeness is checked again under the
		// exclusive one.
		if err := c.flock(ctx, lock, syscall.LOCK_EX, name); err != nil {
			return err
		}
		if !complete(out, s.Bins) {
			if err := c.buildEntry(ctx, s, name, out); err != nil {
				return err
			}
		}
		// Downgrading cannot conflict: no one else holds this lock.
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_SH); err != nil {
			return fmt.Errorf("lock %s: %w", name, err)
		}
	} else {
		c.logf("using cached %s (%s)", s.Tool, out)
	}
	// Under the shared lock no one builds this key: leftovers of a killed
	// build of it are garbage.
	c.removeTemps(name)
	now := time.Now()
	return os.Chtimes(out, now, now) // marks the entry used, for pruning
}

// buildEntry builds s into a temporary sibling of out and renames it into
// place. It runs under the exclusive lock of name.
func (c *Cache) buildEntry(ctx context.Context, s Spec, name, out string) error {
	c.removeTemps(name)
	if _, err := os.Lstat(out); err == nil {
		c.logf("%s is incomplete; rebuilding it", out)
		if err := os.RemoveAll(out); err != nil {
			return err
		}
	}
	tmp, err := os.MkdirTemp(c.dir, name+".tmp-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	msg := ""
	if s.Expect != "" {
		msg = ": " + s.Expect
	}
	c.logf("building %s into %s (not cached for this key%s)", s.Tool, out, msg)
	start := time.Now()
	if err := c.build(ctx, s, tmp); err != nil {
		return err
	}
	for _, b := range s.Bins {
		if _, err := os.Stat(filepath.Join(tmp, b)); err != nil {
			return fmt.Errorf("build %s: %s missing after the build: %w", s.Tool, b, err)
		}
	}
	if err := os.Rename(tmp, out); err != nil {
		// A directory cannot replace a non-empty one: another build of
		// this key got there first (see the package comment). Use it.
		if complete(out, s.Bins) {
			c.logf("%s appeared during the build; using it", out)
			return nil
		}
		return fmt.Errorf("build %s: %w", s.Tool, err)
	}
	c.logf("%s built in %s", s.Tool, time.Since(start).Round(time.Second))
	return nil
}

// flock takes the lock (LOCK_SH or LOCK_EX) on f, polling so that ctx can
// end the wait; it says once that it waits for another process.
func (c *Cache) flock(ctx context.Context, f *os.File, how int, name string) error {
	waited := false
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("lock %s: %w", name, err)
		}
		if !waited {
			waited = true
			c.logf("waiting for another process building or using %s", name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the lock of %s: %w", name, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func complete(out string, bins []string) bool {
	for _, b := range bins {
		if st, err := os.Stat(filepath.Join(out, b)); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

func (c *Cache) removeTemps(name string) {
	tmps, _ := filepath.Glob(filepath.Join(c.dir, name+".tmp-*"))
	for _, t := range tmps {
		_ = os.RemoveAll(t)
	}
}

// prune applies the bound (package comment) to tool's keys other than
// current. Failures only leave more on disk.
func (c *Cache) prune(tool, current string) {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(tool) + `-([0-9a-f]{12})(\.lock|\.tmp-.*)?$`)
	lastUse := map[string]time.Time{} // key → its entry's mtime, else its newest file's
	hasEntry := map[string]bool{}
	for _, e := range entries {
		m := re.FindStringSubmatch(e.Name())
		if m == nil || m[1] == current {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		k := m[1]
		isEntry := m[2] == "" && e.IsDir()
		switch {
		case isEntry:
			lastUse[k], hasEntry[k] = info.ModTime(), true
		case !hasEntry[k] && info.ModTime().After(lastUse[k]):
			lastUse[k] = info.ModTime()
		}
	}
	keys := make([]string, 0, len(lastUse))
	for k := range lastUse {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return lastUse[keys[i]].After(lastUse[keys[j]]) })
	for i, k := range keys {
		if i < c.Keep-1 && time.Since(lastUse[k]) < c.MaxAge {
			continue
		}
		c.remove(tool + "-" + k)
	}
}

// remove deletes an entry, its temporaries and its lock file if no process
// holds its lock.
func (c *Cache) remove(name string) {
	lockPath := filepath.Join(c.dir, name+".lock")
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer func() { _ = f.Close() }()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return // in use or being built
	}
	c.removeTemps(name)
	if err := os.RemoveAll(filepath.Join(c.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return
	}
	// Removed last, while still locked: a process that opened the old file
	// and waits on it finds no entry and builds (rename wins, see above).
	_ = os.Remove(lockPath)
	c.logf("removed %s from the cache (bound: %d entries per tool, unused for at most %s)", name, c.Keep, c.MaxAge)
}

// goBuild runs `go build` for s with its output directory out.
func goBuild(ctx context.Context, s Spec, out string) error {
	args := append([]string{"build", "-trimpath", "-ldflags", s.LDFlags, "-o", out + string(os.PathSeparator)}, s.Pkgs...)
	name := "go"
	if s.Nice {
		if nice, err := exec.LookPath("nice"); err == nil {
			name, args = nice, append([]string{"-n", "15", "go"}, args...)
		}
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.Dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %s: %w\n%s", s.Tool, strings.Join(cmd.Args, " "), err, b)
	}
	return nil
}

// Collector is test/e2e's OpenTelemetry Collector distribution (the module
// in test/e2e/otelcol, dir here), one spec for test/e2e and test/k8s so
// that either reuses the other's build.
func Collector(dir string) Spec {
	return Spec{
		Tool:   "otelcol-e2e",
		Dir:    dir,
		Files:  []string{"go.mod", "go.sum", "main.go"},
		Pkgs:   []string{"."},
		Bins:   []string{"otelcol"},
		Expect: "about 8 minutes on 2 idle cores from an empty Go build cache, about a minute as a relink",
	}
}
