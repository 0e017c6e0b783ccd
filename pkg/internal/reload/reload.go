// Package reload keeps file-backed settings (TLS certificates, keys, CA
// bundles, bearer-token files) current without a restart. One Watcher polls
// every registered file set from one goroutine; when a file's identity
// changes it reads the set again and hands the bytes to the owner's parse
// function, which either swaps in the new value atomically or fails, in
// which case the previous value stays in force.
//
// Polling, not inotify: Kubernetes updates a mounted Secret or ConfigMap by
// swapping the ..data symlink of the volume, which inotify on the file
// path does not report reliably, and polling needs no new dependency. The
// cost is bounded: per interval, one stat per file; files are read only when
// a stat differs, and at most MaxFileSize bytes of each.
package reload

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// MaxFileSize is the most read from one watched file. Certificates, keys,
// CA bundles and token files are kilobytes; a larger file is an error, not
// an allocation.
const MaxFileSize = 1 << 20

// ParseFunc checks and applies the contents of a file set, in the order
// the files were given. It returns an error, and changes nothing, when the
// contents are unusable (a half-written file, a key that does not match its
// certificate). It must not retain the slices.
type ParseFunc func(contents [][]byte) error

// ResultFunc is told the outcome of every reload attempt after the first
// load (nil on success), for the owner's counters.
type ResultFunc func(err error)

// Watcher polls file sets and reloads the ones that changed.
type Watcher struct {
	interval time.Duration
	logger   *slog.Logger

	mu    sync.Mutex // guards sets; held by Check for a whole poll
	sets  []*fileSet
	stop  chan struct{}
	done  chan struct{}
	start sync.Once
	halt  sync.Once
}

// fileSet is one registered group of files; it is read and written only
// with Watcher.mu held.
type fileSet struct {
	name    string
	files   []string
	parse   ParseFunc
	result  ResultFunc
	stamps  []stamp
	attempt [sha256.Size]byte // digest of the contents last handed to parse
}

// stamp identifies what a path resolves to: the file's identity (device
// and inode through os.SameFile), size and modification time, or the error
// stat gave. A symlink swap changes the identity even when size and time
// are equal.
type stamp struct {
	info os.FileInfo
	err  string
}

func (a stamp) equal(b stamp) bool {
	if a.err != b.err || (a.info == nil) != (b.info == nil) {
		return false
	}
	if a.info == nil {
		return true
	}
	return os.SameFile(a.info, b.info) && a.info.Size() == b.info.Size() && a.info.ModTime().Equal(b.info.ModTime())
}

// New returns a Watcher that polls every interval once started. An
// interval <= 0 never polls: files are read once, at Add.
func New(interval time.Duration, logger *slog.Logger) *Watcher {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{interval: interval, logger: logger, stop: make(chan struct{}), done: make(chan struct{})}
}

// Add reads files now and applies them through parse; an error here (a
// missing or unusable file at start) is returned and nothing is
// registered. Later changes are applied by the poll; result is told of
// each attempt. name identifies the set in logs.
func (w *Watcher) Add(name string, files []string, parse ParseFunc, result ResultFunc) error {
	fs := &fileSet{name: name, files: files, parse: parse, result: result}
	stamps := statAll(files)
	contents, err := readAll(files)
	if err != nil {
		return err
	}
	if err := parse(contents); err != nil {
		return err
	}
	fs.stamps, fs.attempt = stamps, digest(contents)
	w.mu.Lock()
	w.sets = append(w.sets, fs)
	w.mu.Unlock()
	return nil
}

// Start starts the polling goroutine; Stop ends it. Without a positive
// interval, or with nothing added, Start does nothing. Add every file set
// before Start.
func (w *Watcher) Start() {
	w.mu.Lock()
	empty := len(w.sets) == 0
	w.mu.Unlock()
	if w.interval <= 0 || empty {
		return
	}
	w.start.Do(func() {
		go func() {
			// done is closed by this goroutine, or by Stop when it never ran.
			defer close(w.done)
			t := time.NewTicker(w.interval)
			defer t.Stop()
			for {
				select {
				case <-w.stop:
					return
				case <-t.C:
					w.Check()
				}
			}
		}()
	})
}

// Stop ends the polling goroutine and waits for it. It is idempotent and
// safe to call without Start.
func (w *Watcher) Stop() {
	w.halt.Do(func() {
		close(w.stop)
		w.start.Do(func() { close(w.done) }) // never started: a later Start is a no-op
		<-w.done
	})
}

// Check polls every file set once. The goroutine started by Start calls
// it; tests call it to reload without waiting for the interval.
func (w *Watcher) Check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fs := range w.sets {
		w.check(fs)
	}
}

// check reloads fs when a stamp changed. Stamps are taken before the
// files are read: a change that lands during the read shows in the next
// poll's stamps, so it can cause one extra read but never a missed one.
// The same bytes as the last attempt (a touched file, or a rewrite that
// restores it) are not parsed again, so a failure is logged and counted
// once per change, not once per poll.
func (w *Watcher) check(fs *fileSet) {
	stamps := statAll(fs.files)
	same := true
	for i := range stamps {
		if !stamps[i].equal(fs.stamps[i]) {
			same = false
			break
		}
	}
	if same {
		return
	}
	fs.stamps = stamps
	contents, err := readAll(fs.files)
	var d [sha256.Size]byte
	if err == nil {
		d = digest(contents)
		if d == fs.attempt {
			return
		}
		err = fs.parse(contents)
	} else {
		d = sha256.Sum256([]byte(err.Error()))
		if d == fs.attempt {
			return
		}
	}
	fs.attempt = d
	if fs.result != nil {
		fs.result(err)
	}
	if err != nil {
		w.logger.Warn("Reload failed; keeping the previous version", "name", fs.name, "err", err)
		return
	}
	w.logger.Info("Reloaded", "name", fs.name, "files", fs.files)
}

func statAll(files []string) []stamp {
	out := make([]stamp, len(files))
	for i, f := range files {
		fi, err := os.Stat(f) // follows the ..data symlink chain to the real file
		if err != nil {
			out[i] = stamp{err: err.Error()}
			continue
		}
		out[i] = stamp{info: fi}
	}
	return out
}

// errTooLarge is returned for a watched file over MaxFileSize.
var errTooLarge = errors.New("file exceeds 1 MiB")

func readAll(files []string) ([][]byte, error) {
	out := make([][]byte, len(files))
	for i, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		if len(b) > MaxFileSize {
			return nil, fmt.Errorf("%s: %w", name, errTooLarge)
		}
		out[i] = b
	}
	return out, nil
}

// digest hashes the contents with their lengths, so moving bytes from one
// file to the next changes it.
func digest(contents [][]byte) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	for _, c := range contents {
		l := len(c)
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write(c)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}
