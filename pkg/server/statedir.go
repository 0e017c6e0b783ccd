package server

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// snapshotFile is the store's snapshot inside --state-dir.
const snapshotFile = "store.snapshot"

// restoreState loads <StateDir>/store.snapshot into the empty store before
// the listeners serve. A missing file is a first start; an unreadable or
// corrupt one costs one warm-up and is never fatal (the next shutdown
// replaces it). It reports whether the restored samples are fresh enough
// to skip warm-up: the newest younger than the freshness window
// (keda-contract.md §8.2).
func (s *Server) restoreState() (fresh bool) {
	dir := s.cfg.Server.StateDir
	if dir == "" {
		return false
	}
	path := filepath.Join(dir, snapshotFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		s.logger.Info("No store snapshot to restore", "path", path)
		return false
	}
	if err != nil {
		s.logger.Warn("Store snapshot unreadable; starting empty", "path", path, "err", err)
		return false
	}
	defer func() { _ = f.Close() }()
	restored, newest, err := s.store.ReadSnapshot(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		s.logger.Warn("Store snapshot ignored; starting empty", "path", path, "err", err)
		return false
	}
	if restored == 0 {
		s.logger.Info("Store snapshot held no samples within the retention", "path", path)
		return false
	}
	age := s.set.Now().Sub(time.UnixMilli(newest))
	fresh = age < s.cfg.Store.Freshness
	s.logger.Info("Store restored", "path", path, "series", restored, "newest_sample_age", age.Round(time.Millisecond), "skip_warmup", fresh)
	return fresh
}

// saveState writes the store to <StateDir>/store.snapshot atomically: a
// temporary file in the same directory, fsync, rename, then fsync of the
// directory, so a crash leaves either the old snapshot or the new one.
func (s *Server) saveState() error {
	dir := s.cfg.Server.StateDir
	if dir == "" {
		return nil
	}
	start := time.Now()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create --state-dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, snapshotFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // no-op after the rename
	bw := bufio.NewWriterSize(tmp, 1<<20)
	err = s.store.WriteSnapshot(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write snapshot %s: %w", tmp.Name(), err)
	}
	path := filepath.Join(dir, snapshotFile)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename snapshot: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: makes the rename durable on most filesystems
		_ = d.Close()
	}
	s.logger.Info("Store saved", "path", path, "series", s.store.NumSeries(), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}
