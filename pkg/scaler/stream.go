package scaler

import (
	"sync"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// subscription is one open StreamIsActive stream. Its dirty channel has
// capacity 1: OnIngest marks it without blocking (drain-then-send is not
// needed because a pending mark already means "evaluate"), and any number
// of marks before the stream evaluates coalesce into one evaluation.
type subscription struct {
	t     *trigger
	dirty chan struct{}
}

func (sub *subscription) mark() {
	select {
	case sub.dirty <- struct{}{}:
	default: // already marked; the pending evaluation will see the new data
	}
}

// subIndex finds the subscriptions an ingested metric affects, so OnIngest
// costs O(touched metrics + affected subscriptions), not O(open streams).
type subIndex struct {
	mu       sync.RWMutex // guards the maps; OnIngest holds it shared
	byMetric map[uint32]map[*subscription]struct{}
	any      map[*subscription]struct{} // triggers whose selectors have no fixed metric name
}

func newSubIndex() *subIndex {
	return &subIndex{byMetric: map[uint32]map[*subscription]struct{}{}, any: map[*subscription]struct{}{}}
}

func (x *subIndex) add(sub *subscription) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if sub.t.anyMetric {
		x.any[sub] = struct{}{}
	}
	for _, id := range sub.t.metricIDs {
		set := x.byMetric[id]
		if set == nil {
			set = map[*subscription]struct{}{}
			x.byMetric[id] = set
		}
		set[sub] = struct{}{}
	}
}

func (x *subIndex) remove(sub *subscription) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.any, sub)
	for _, id := range sub.t.metricIDs {
		if set := x.byMetric[id]; set != nil {
			delete(set, sub)
			if len(set) == 0 {
				delete(x.byMetric, id)
			}
		}
	}
}

func (x *subIndex) mark(metricIDs []uint32) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for sub := range x.any {
		sub.mark()
	}
	for _, id := range metricIDs {
		for sub := range x.byMetric[id] {
			sub.mark()
		}
	}
}

func (x *subIndex) markAll() {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for sub := range x.any {
		sub.mark()
	}
	for _, set := range x.byMetric {
		for sub := range set {
			sub.mark()
		}
	}
}

// OnIngest is the receiver's hook: it marks every subscription whose query
// reads one of the touched metrics. It never blocks on a stream: marking is
// a non-blocking send, and the shared lock is only ever held exclusively
// for a map insert or delete when a stream opens or closes.
func (s *Scaler) OnIngest(metricIDs []uint32) {
	s.subs.mark(metricIDs)
}

// evalErrLogEvery rate-limits the per-stream evaluation-error log.
const evalErrLogEvery = time.Minute

// StreamIsActive pushes true on every inactive-to-active edge of the
// trigger, and at once on open if it is already active (keda-contract.md
// §7.2). It never sends false, honours the push hold-off, pushes nothing
// during warm-up, and ends with an error only for invalid metadata.
func (s *Scaler) StreamIsActive(ref *externalscaler.ScaledObjectRef, stream grpc.ServerStreamingServer[externalscaler.IsActiveResponse]) error {
	t, err := s.hold(ref) // the subscription uses t's metric IDs: keep them
	if err != nil {
		return s.toStatus(methodStreamIsActive, err)
	}
	defer s.unhold(t)
	if s.draining.Load() {
		s.m.rpc(methodStreamIsActive, codes.OK)
		return nil
	}
	sub := &subscription{t: t, dirty: make(chan struct{}, 1)}
	s.subs.add(sub)
	s.m.streams.Inc()
	defer func() {
		s.subs.remove(sub)
		s.m.streams.Dec()
	}()

	ctx := stream.Context()
	holdoff := s.cfg.PushHoldoff
	var (
		active   bool      // last known state; starts inactive
		sentAt   time.Time // when the last true was sent; zero before the first
		pending  bool      // an edge waits for the hold-off to expire
		holdT    *time.Timer
		holdC    <-chan time.Time
		lastLog  time.Time
		expiring bool
	)
	defer func() {
		if holdT != nil {
			holdT.Stop()
		}
	}()
	sub.mark() // evaluate the initial state at once
	for {
		expiring = false
		select {
		case <-ctx.Done():
			s.m.rpc(methodStreamIsActive, codes.Canceled)
			return nil
		case <-s.drainCh:
			s.m.rpc(methodStreamIsActive, codes.OK)
			return nil
		case <-sub.dirty:
		case <-holdC:
			holdC, expiring = nil, true
		}
		if s.warmingUp() != nil {
			// No change during warm-up; the warm-up timer marks every
			// subscription when it ends.
			continue
		}
		v, err := s.evaluate(ctx, t)
		if err != nil {
			// Transient: keep the state and the stream (keda-contract.md §7.3).
			if now := time.Now(); now.Sub(lastLog) >= evalErrLogEvery {
				lastLog = now
				s.logger.Warn("Stream evaluation failed", "namespace", t.namespace, "scaled_object", t.name, "err", err)
			}
			continue
		}
		now := v > t.activation
		switch {
		case now && (!active || pending):
			if wait := holdoff - time.Since(sentAt); sentAt.IsZero() || holdoff <= 0 || wait <= 0 {
				if err := stream.Send(&externalscaler.IsActiveResponse{Result: true}); err != nil {
					s.logger.Warn("Stream send failed", "namespace", t.namespace, "scaled_object", t.name, "err", err)
					s.m.rpc(methodStreamIsActive, codes.Unavailable)
					return nil
				}
				if s.onPush != nil {
					s.onPush()
				}
				s.m.pushes.Inc()
				sentAt, pending = time.Now(), false
			} else if !pending {
				pending = true
				if holdT == nil {
					holdT = time.NewTimer(wait)
				} else {
					holdT.Reset(wait)
				}
				holdC = holdT.C
			}
		case !now && expiring:
			pending = false // the deferred edge lapsed: inactive at expiry
		}
		active = now
	}
}

// Drain ends every open stream with status OK and makes GetMetrics and
// IsActive answer Unavailable. It is idempotent.
func (s *Scaler) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drained {
		return
	}
	s.drained = true
	s.draining.Store(true)
	if s.warmTimer != nil {
		s.warmTimer.Stop()
	}
	close(s.drainCh)
}
