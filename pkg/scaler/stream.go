package scaler

import (
	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// subscription is one open StreamIsActive stream. Its dirty channel has
// capacity 1: OnIngest marks it without blocking, and any number of marks
// before the stream evaluates coalesce into one evaluation.
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

// OnIngest is the receiver's hook: it marks every subscription whose query
// reads one of the touched metrics. It never blocks.
func (s *Scaler) OnIngest(metricIDs []uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sub := range s.subs {
		if sub.t.anyMetric {
			sub.mark()
			continue
		}
	match:
		for _, want := range sub.t.metricIDs {
			for _, got := range metricIDs {
				if want == got {
					sub.mark()
					break match
				}
			}
		}
	}
}

// StreamIsActive pushes true on every inactive-to-active edge of the
// trigger, and at once on open if it is already active. It never sends
// false, and ends with an error only for invalid metadata.
func (s *Scaler) StreamIsActive(ref *externalscaler.ScaledObjectRef, stream grpc.ServerStreamingServer[externalscaler.IsActiveResponse]) error {
	t, err := s.compile(ref)
	if err != nil {
		return s.toStatus("StreamIsActive", err)
	}
	sub := &subscription{t: t, dirty: make(chan struct{}, 1)}
	s.mu.Lock()
	if s.drained {
		s.mu.Unlock()
		return nil
	}
	s.subs[sub] = struct{}{}
	s.m.streams.Inc()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.m.streams.Dec()
		s.mu.Unlock()
	}()

	ctx := stream.Context()
	active := false
	sub.mark() // evaluate the initial state at once
	for {
		select {
		case <-ctx.Done():
			s.m.rpcs.WithLabelValues("StreamIsActive", codes.Canceled.String()).Inc()
			return nil
		case <-s.drainCh:
			s.m.rpcs.WithLabelValues("StreamIsActive", codes.OK.String()).Inc()
			return nil
		case <-sub.dirty:
		}
		v, err := s.evaluate(ctx, t)
		if err != nil {
			// Transient: keep the state and the stream (keda-contract.md §7.3).
			s.logger.Debug("Stream evaluation failed", "namespace", t.namespace, "scaled_object", t.name, "err", err)
			continue
		}
		now := v > t.activation
		if now && !active {
			if err := stream.Send(&externalscaler.IsActiveResponse{Result: true}); err != nil {
				s.logger.Warn("Stream send failed", "namespace", t.namespace, "scaled_object", t.name, "err", err)
				return nil
			}
			s.m.pushes.Inc()
		}
		active = now
	}
}

// Drain ends every open stream with status OK and makes GetMetrics and
// IsActive answer Unavailable. It is idempotent.
func (s *Scaler) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.drained {
		s.drained = true
		close(s.drainCh)
	}
}

func (s *Scaler) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drained
}
