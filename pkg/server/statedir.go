package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// The state directory (--state-dir) holds one file, the store's checkpoint
// store.snapshot, written on shutdown and every --checkpoint-interval as a
// temporary file store.snapshot.tmp-* that is fsynced, renamed over it and
// made durable by an fsync of the directory: a crash at any point leaves
// the previous checkpoint or the new one, and a SIGKILL loses at most the
// samples of one interval. A checkpoint that cannot be restored is kept
// aside as store.snapshot.corrupt (one, the latest), so the next
// checkpoint does not destroy what may still be read from it.
const (
	snapshotFile  = "store.snapshot"
	tmpPattern    = snapshotFile + ".tmp-*"
	corruptSuffix = ".corrupt"
)

// Restore outcomes, the values of keda_otel_scaler_state_restores_total's
// result label, and checkpoint outcomes, those of
// keda_otel_scaler_state_checkpoints_total's.
const (
	restoreRestored   = "restored"
	restoreEmpty      = "empty" // intact, but nothing within the retention
	restoreMissing    = "missing"
	restoreTruncated  = "truncated"
	restoreCorrupt    = "corrupt"
	restoreVersion    = "unsupported_version"
	restoreUnreadable = "unreadable"
	checkpointOK      = "ok"
	checkpointFailed  = "error"
)

// stateDir runs the state directory: the checks at start, the restore, the
// periodic checkpoints and the last one at shutdown. Checkpoints read the
// store as queries do (Store.WriteSnapshot takes no lock), so ingestion and
// KEDA's calls never wait for one; they run on their own goroutine.
type stateDir struct {
	// Fields above saveMu are immutable after newStateDir.
	dir      string
	interval time.Duration
	st       *store.Store
	logger   *slog.Logger
	now      func() time.Time

	restores    *prometheus.CounterVec
	checkpoints *prometheus.CounterVec
	duration    prometheus.Gauge
	size        prometheus.Gauge
	lastOK      prometheus.Gauge

	saveMu sync.Mutex // one checkpoint at a time: the periodic ones and the last

	loopMu sync.Mutex // guards the loop's lifecycle below
	cancel context.CancelFunc
	done   chan struct{}
}

// newStateDir returns the state directory of dir (empty: off) and
// registers its self-metrics with reg.
func newStateDir(dir string, interval time.Duration, st *store.Store, logger *slog.Logger, now func() time.Time, reg prometheus.Registerer) *stateDir {
	d := &stateDir{
		dir: dir, interval: interval, st: st, logger: logger, now: now,
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_state_restores_total",
			Help: "Starts with --state-dir, by what the checkpoint gave: restored, empty, missing, truncated, corrupt, unsupported_version or unreadable (the last four are kept aside as store.snapshot.corrupt).",
		}, []string{"result"}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_state_checkpoints_total",
			Help: "Checkpoints of the store written to --state-dir (periodic and at shutdown), by result: ok or error.",
		}, []string{"result"}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keda_otel_scaler_state_checkpoint_duration_seconds",
			Help: "Wall time of the last successful checkpoint, fsyncs included.",
		}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keda_otel_scaler_state_checkpoint_size_bytes",
			Help: "Size of the last successful checkpoint.",
		}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keda_otel_scaler_state_checkpoint_last_success_timestamp_seconds",
			Help: "When the last successful checkpoint started: every sample acknowledged before it is in it.",
		}),
	}
	for _, r := range []string{restoreRestored, restoreEmpty, restoreMissing, restoreTruncated, restoreCorrupt, restoreVersion, restoreUnreadable} {
		d.restores.WithLabelValues(r)
	}
	d.checkpoints.WithLabelValues(checkpointOK)
	d.checkpoints.WithLabelValues(checkpointFailed)
	for _, c := range []prometheus.Collector{d.restores, d.checkpoints, d.duration, d.size, d.lastOK} {
		if err := reg.Register(c); err != nil {
			logger.Warn("Self-metric not registered", "err", err)
		}
	}
	return d
}

func (d *stateDir) enabled() bool { return d.dir != "" }

// prepare runs before anything listens: it creates the directory, removes
// temporary files a kill during a checkpoint left behind, and checks that
// a checkpoint can be written there, so an unusable directory stops the
// start instead of failing the first checkpoint or the shutdown.
func (d *stateDir) prepare() error {
	if err := os.MkdirAll(d.dir, 0o750); err != nil {
		return fmt.Errorf("--state-dir %s: create: %w", d.dir, err)
	}
	stale, err := filepath.Glob(filepath.Join(d.dir, tmpPattern))
	if err != nil {
		return fmt.Errorf("--state-dir %s: %w", d.dir, err)
	}
	for _, p := range stale {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--state-dir %s: remove the interrupted checkpoint %s: %w", d.dir, filepath.Base(p), err)
		}
	}
	if len(stale) > 0 {
		d.logger.Info("Removed interrupted checkpoints", "state_dir", d.dir, "files", len(stale))
	}
	probe, err := os.CreateTemp(d.dir, tmpPattern)
	if err != nil {
		return fmt.Errorf("--state-dir %s is not writable: %w", d.dir, err)
	}
	_, werr := probe.Write([]byte("probe"))
	if err := errors.Join(werr, probe.Sync(), probe.Close(), os.Remove(probe.Name())); err != nil {
		return fmt.Errorf("--state-dir %s is not writable: %w", d.dir, err)
	}
	return nil
}

// restore loads the checkpoint into the empty store before the listeners
// serve. A missing checkpoint is a first start; an unreadable, truncated,
// corrupt or future-version one is logged, counted and kept aside, and the
// server starts empty and warms up. It reports whether the restored
// samples are fresh enough (younger than freshness) to skip warm-up
// (keda-contract.md §8.2).
func (d *stateDir) restore(freshness time.Duration) (fresh bool) {
	path := filepath.Join(d.dir, snapshotFile)
	restored, newest, err := d.read(path)
	result := classifyRestore(err, restored)
	d.restores.WithLabelValues(result).Inc()
	switch result {
	case restoreMissing:
		d.logger.Info("No store checkpoint to restore", "path", path)
		return false
	case restoreEmpty:
		d.logger.Info("Store checkpoint held no samples within the retention", "path", path)
		return false
	case restoreRestored:
		age := d.now().Sub(time.UnixMilli(newest))
		fresh = age < freshness
		d.logger.Info("Store restored", "path", path, "series", restored, "newest_sample_age", age.Round(time.Millisecond), "skip_warmup", fresh)
		return fresh
	}
	aside := path + corruptSuffix
	if rerr := os.Rename(path, aside); rerr != nil {
		d.logger.Error("Store checkpoint not restored and not kept aside; starting empty", "path", path, "result", result, "err", err, "rename_err", rerr)
		return false
	}
	d.logger.Warn("Store checkpoint not restored; kept aside, starting empty", "path", path, "kept_as", aside, "result", result, "err", err)
	return false
}

// read restores the file at path into the store.
func (d *stateDir) read(path string) (int, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, 0, fmt.Errorf("%s is not a regular file", path)
	}
	return d.st.ReadSnapshotAt(f, fi.Size())
}

// classifyRestore names the outcome of a restore for the metric.
func classifyRestore(err error, restored int) string {
	switch {
	case err == nil && restored > 0:
		return restoreRestored
	case err == nil:
		return restoreEmpty
	case errors.Is(err, fs.ErrNotExist):
		return restoreMissing
	case errors.Is(err, store.ErrSnapshotVersion):
		return restoreVersion
	case errors.Is(err, store.ErrSnapshotTruncated):
		return restoreTruncated
	case errors.Is(err, store.ErrBadSnapshot):
		return restoreCorrupt
	default:
		return restoreUnreadable
	}
}

// startLoop starts the periodic checkpoints; stopLoop ends them.
func (d *stateDir) startLoop() {
	if d.interval <= 0 {
		return
	}
	d.loopMu.Lock()
	defer d.loopMu.Unlock()
	if d.done != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan struct{})
	go d.loop(ctx, d.done)
}

func (d *stateDir) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(d.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := d.save(ctx, false); err != nil && ctx.Err() == nil {
				// Serving goes on; the next tick tries again.
				d.logger.Error("Store checkpoint failed", "state_dir", d.dir, "err", err)
			}
		}
	}
}

// stopLoop cancels a checkpoint in progress and waits for the loop to
// exit. It is idempotent and safe without startLoop.
func (d *stateDir) stopLoop() {
	d.loopMu.Lock()
	cancel, done := d.cancel, d.done
	d.loopMu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// save writes a checkpoint atomically (see the file comment). ctx ending
// abandons it, leaving the previous one.
func (d *stateDir) save(ctx context.Context, final bool) error {
	d.saveMu.Lock()
	defer d.saveMu.Unlock()
	start := d.now()
	wall := time.Now()
	n, err := d.write(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.checkpoints.WithLabelValues(checkpointFailed).Inc()
		}
		return err
	}
	took := time.Since(wall)
	d.checkpoints.WithLabelValues(checkpointOK).Inc()
	d.duration.Set(took.Seconds())
	d.size.Set(float64(n))
	d.lastOK.Set(float64(start.UnixMilli()) / 1000)
	log := d.logger.Debug // every interval: not lifecycle
	if final {
		log = d.logger.Info
	}
	log("Store checkpoint written", "path", filepath.Join(d.dir, snapshotFile), "series", d.st.NumSeries(), "bytes", n, "duration", took.Round(time.Millisecond))
	return nil
}

func (d *stateDir) write(ctx context.Context) (int64, error) {
	tmp, err := os.CreateTemp(d.dir, tmpPattern)
	if err != nil {
		return 0, fmt.Errorf("create checkpoint: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // no-op after the rename
	// WriteSnapshot buffers (64 KiB writes): another buffer here would
	// only copy every byte once more.
	cw := &ctxWriter{ctx: ctx, w: tmp}
	err = d.st.WriteSnapshot(cw)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("write checkpoint %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(d.dir, snapshotFile)); err != nil {
		return 0, fmt.Errorf("rename checkpoint: %w", err)
	}
	// The rename is durable once the directory is. (A file system that
	// cannot sync a directory says EINVAL; there the rename is as durable
	// as it gets.)
	dir, err := os.Open(d.dir)
	if err != nil {
		return 0, fmt.Errorf("sync --state-dir: %w", err)
	}
	if err := errors.Join(dir.Sync(), dir.Close()); err != nil && !errors.Is(err, syscall.EINVAL) {
		return 0, fmt.Errorf("sync --state-dir: %w", err)
	}
	return cw.n, nil
}

// ctxWriter fails every write once ctx has ended, so a checkpoint stops
// within 64 KiB (WriteSnapshot's buffer) of its cancellation.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
	n   int64
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
