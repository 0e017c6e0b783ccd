package reload

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a file set's parse and result functions; "bad" content
// fails to parse.
type recorder struct {
	current string
	parses  int
	results []error
}

func (r *recorder) parse(c [][]byte) error {
	r.parses++
	s := string(c[0])
	if strings.HasPrefix(s, "bad") {
		return errors.New("unusable")
	}
	r.current = s
	return nil
}

func (r *recorder) result(err error) { r.results = append(r.results, err) }

func write(t *testing.T, path, s string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(s), 0o600))
	require.NoError(t, os.Rename(tmp, path)) // a new inode, as a Secret update gives
}

func TestWatcher(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	write(t, f, "v1")
	w := New(0, nil)
	r := &recorder{}
	require.NoError(t, w.Add("f", []string{f}, r.parse, r.result))
	assert.Equal(t, "v1", r.current)

	w.Check()
	assert.Equal(t, 1, r.parses, "unchanged files are not read again")

	write(t, f, "v1") // a new file with the same bytes
	w.Check()
	assert.Equal(t, 1, r.parses, "same bytes are not parsed again")
	assert.Empty(t, r.results)

	write(t, f, "v2")
	w.Check()
	assert.Equal(t, "v2", r.current)
	assert.Equal(t, []error{nil}, r.results)

	write(t, f, "bad1")
	for range 5 {
		w.Check()
	}
	assert.Equal(t, "v2", r.current, "an unusable file keeps the previous value")
	require.Len(t, r.results, 2)
	require.Error(t, r.results[1], "counted once, not once per poll")

	require.NoError(t, os.Remove(f))
	for range 3 {
		w.Check()
	}
	assert.Equal(t, "v2", r.current)
	require.Len(t, r.results, 3, "a missing file is one failure")

	write(t, f, "bad1") // back to bytes that failed before: a change all the same
	w.Check()
	require.Len(t, r.results, 4)
	write(t, f, "v3")
	w.Check()
	assert.Equal(t, "v3", r.current)
	assert.NoError(t, r.results[4])
}

func TestWatcherAddFails(t *testing.T) {
	dir := t.TempDir()
	w := New(time.Second, nil)
	r := &recorder{}
	require.Error(t, w.Add("missing", []string{filepath.Join(dir, "nope")}, r.parse, r.result))
	bad := filepath.Join(dir, "bad")
	write(t, bad, "bad")
	require.Error(t, w.Add("bad", []string{bad}, r.parse, r.result))
	big := filepath.Join(dir, "big")
	write(t, big, strings.Repeat("x", MaxFileSize+1))
	require.ErrorIs(t, w.Add("big", []string{big}, r.parse, r.result), errTooLarge)
	w.Start() // nothing was added: no goroutine
	w.Stop()
}

func TestWatcherPolls(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	write(t, f, "v1")
	w := New(10*time.Millisecond, nil)
	got := make(chan error, 10)
	var cur string
	parse := func(c [][]byte) error { cur = string(c[0]); return nil }
	require.NoError(t, w.Add("f", []string{f}, parse, func(err error) { got <- err }))
	w.Start()
	w.Start()
	defer w.Stop()
	write(t, f, "v2")
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the change was not picked up")
	}
	w.Stop()
	w.Stop()
	assert.Equal(t, "v2", cur) // read after Stop: the goroutine has exited
}

func TestStopWithoutStart(*testing.T) {
	w := New(time.Second, nil)
	w.Stop()
	w.Start() // after Stop: no goroutine
}
