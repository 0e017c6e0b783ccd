package scaler

// Readiness after fresh data (--ready-after-fresh, keda-contract.md §8.2).
//
// The timer warm-up counts from the moment the listeners serve, so a
// replica that receives nothing (its fan-out layer not yet delivering, a
// network policy in the way) becomes ready after --warmup with an empty
// store and answers KEDA 0. With ReadyAfterFresh the clock starts only
// when the first request stores a sample no older than FreshWindow, so a
// replica is ready --warmup after fresh data began to arrive and never
// while its store is empty. Samples older than that (a fan-out queue
// replaying what the replica missed while it was down) are stored but do
// not start the clock: they say nothing about whether the live stream
// reaches this replica. A restore from --state-dir with fresh samples ends
// warm-up at once as before (EndWarmup).

// SawSample is told the newest sample time (unix ms) of each request that
// stored samples. It costs one atomic load once the clock has started.
func (s *Scaler) SawSample(newestMs int64) {
	if !s.awaitFresh.Load() {
		return
	}
	if s.now().UnixMilli()-newestMs > s.cfg.FreshWindow.Milliseconds() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drained || !s.awaitFresh.Load() {
		return
	}
	s.awaitFresh.Store(false)
	s.logger.Info("Fresh sample stored; warm-up started", "warmup", s.cfg.Warmup)
	s.startWarmClockLocked()
}

// caughtUp is the CatchUp gate's done: it ends warm-up once (the
// --ready-peers gate, pkg/server/peers.go). Before the clock ran out, after
// EndWarmup or after Drain it does nothing.
func (s *Scaler) caughtUp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drained || !s.catchingUp.Swap(false) {
		return
	}
	s.warmIsDone.Store(true)
	s.logger.Info("Warm-up ended", "warmup", s.cfg.Warmup, "caught_up_with_peers", true)
	s.subs.markAll()
	s.notifyWarm()
}

// Warm reports whether warm-up has ended: GetMetrics and IsActive answer
// instead of Unavailable.
func (s *Scaler) Warm() bool { return s.warmingUp() == nil }

// notifyWarm tells the server that warm-up ended.
func (s *Scaler) notifyWarm() {
	if s.onWarm != nil {
		s.onWarm()
	}
}
