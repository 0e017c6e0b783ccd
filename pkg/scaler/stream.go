package scaler

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Push fan-out (issue #12 class 7). Every open StreamIsActive stream of one
// compiled trigger shares a feed: OnIngest marks the feed, the feed's
// goroutine evaluates the trigger once and posts the result to each
// stream's mailbox, and each stream's own goroutine decides on its edge and
// hold-off and calls Send. So:
//   - one evaluation per change for all streams of a trigger, not one per
//     stream (2,000 streams on one trigger no longer serialise 2,000
//     evaluations on its lock);
//   - at most Config.MaxStreamEvals feeds evaluate at once, all triggers
//     together, within a shared budget of evaluation time (evalPacer):
//     every Export marks each feed reading its metrics, so without a
//     bound the CPU push triggers take grows with their number times the
//     ingest rate; with it, push evaluation uses at most a quarter of
//     MaxStreamEvals cores beyond a 50 ms burst, and ingestion and
//     GetMetrics keep the rest;
//   - a mailbox holds one value, the latest (latest wins): a stream whose
//     client stopped reading is blocked in Send on its own goroutine while
//     newer states overwrite its mailbox, so nothing queues in the scaler
//     and neither the feed nor any other stream waits for it. gRPC itself
//     holds at most one push for such a stream: a push is deferred while
//     the previous one waits for the client (backlog.go), and the number
//     of streams is bounded by Config.MaxStreams.

// feed is the shared evaluation of one trigger for its open streams.
//
// Fields above subs are immutable after newFeed. subs is guarded by the
// subIndex's mutex.
type feed struct {
	s      *Scaler
	t      *trigger
	dirty  chan struct{} // capacity 1: marks coalesce into one evaluation
	ctx    context.Context
	cancel context.CancelFunc // called when the last stream leaves
	done   chan struct{}      // closed when run has returned

	subs map[*subscription]struct{}
}

func (f *feed) mark() {
	select {
	case f.dirty <- struct{}{}:
	default: // already marked; the pending evaluation will see the new data
	}
}

// A mailbox holds one uint64: the feed's edge count shifted left by two,
// and the state in the low bits. The edge count lets a stream that missed
// an inactive state (overwritten before it looked) still see that an
// inactive-to-active edge happened since its last look.
const (
	stateNone     = 0 // nothing posted yet
	stateInactive = 1
	stateActive   = 2
	stateMask     = 3
)

// subscription is one open StreamIsActive stream's mailbox. The feed
// stores the latest word, then, when the word carries a new edge or the
// stream asked for the next evaluation (want), makes a non-blocking send
// on notify (capacity 1); the stream, woken by notify, loads the word and
// so sees that post or a newer one. Any number of posts before the stream
// looks coalesce into the latest. A post without a new edge wakes no one
// else: the edge count already tells a stream what it missed, so 2,000
// streams on a trigger cost 2,000 wake-ups per edge, not per evaluation.
type subscription struct {
	f      *feed
	word   atomic.Uint64
	want   atomic.Bool // wake on the next post whatever it says (open, hold-off expiry)
	notify chan struct{}
}

func (sub *subscription) post(word uint64, edge bool) {
	sub.word.Store(word)
	if !edge && !sub.want.Swap(false) {
		return
	}
	select {
	case sub.notify <- struct{}{}:
	default: // a wake-up is pending; it will load the state just stored
	}
}

// subIndex finds the feeds an ingested metric affects, so OnIngest costs
// O(touched metrics + affected triggers), not O(open streams).
type subIndex struct {
	mu       sync.RWMutex // guards the maps and every feed's subs; OnIngest and posts hold it shared
	feeds    map[*trigger]*feed
	byMetric map[uint32]map[*feed]struct{}
	any      map[*feed]struct{} // triggers whose selectors have no fixed metric name
}

func newSubIndex() *subIndex {
	return &subIndex{feeds: map[*trigger]*feed{}, byMetric: map[uint32]map[*feed]struct{}{}, any: map[*feed]struct{}{}}
}

// add subscribes a new stream to t's feed, starting the feed (and its
// goroutine, owned by the index until the last stream leaves) when t has
// none, and marks the feed so the new stream learns the current state.
func (x *subIndex) add(s *Scaler, t *trigger) *subscription {
	x.mu.Lock()
	defer x.mu.Unlock()
	f := x.feeds[t]
	if f == nil {
		ctx, cancel := context.WithCancel(context.Background())
		f = &feed{s: s, t: t, dirty: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{}), subs: map[*subscription]struct{}{}}
		x.feeds[t] = f
		if t.anyMetric {
			x.any[f] = struct{}{}
		}
		for _, id := range t.metricIDs {
			set := x.byMetric[id]
			if set == nil {
				set = map[*feed]struct{}{}
				x.byMetric[id] = set
			}
			set[f] = struct{}{}
		}
		go f.run()
	}
	sub := &subscription{f: f, notify: make(chan struct{}, 1)}
	sub.want.Store(true) // the initial state, active or not
	f.subs[sub] = struct{}{}
	f.mark()
	return sub
}

// remove unsubscribes sub; the last stream of a feed stops it and waits for
// its goroutine (at most one evaluation, bounded by Config.EvalBudget).
func (x *subIndex) remove(sub *subscription) {
	f := sub.f
	x.mu.Lock()
	delete(f.subs, sub)
	last := len(f.subs) == 0
	if last {
		delete(x.feeds, f.t)
		delete(x.any, f)
		for _, id := range f.t.metricIDs {
			if set := x.byMetric[id]; set != nil {
				delete(set, f)
				if len(set) == 0 {
					delete(x.byMetric, id)
				}
			}
		}
	}
	x.mu.Unlock()
	if last {
		f.cancel()
		<-f.done
	}
}

func (x *subIndex) mark(metricIDs []uint32) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for f := range x.any {
		f.mark()
	}
	for _, id := range metricIDs {
		for f := range x.byMetric[id] {
			f.mark()
		}
	}
}

func (x *subIndex) markAll() {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for _, f := range x.feeds {
		f.mark()
	}
}

// post delivers one evaluation's result to every stream of f.
func (x *subIndex) post(f *feed, word uint64, edge bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for sub := range f.subs {
		sub.post(word, edge)
	}
}

// run evaluates the feed's trigger once per mark until the last stream
// leaves or the scaler drains.
func (f *feed) run() {
	defer close(f.done)
	var (
		lastLog time.Time
		active  bool   // the feed's last evaluated state
		edges   uint64 // inactive-to-active edges the feed has seen
		pause   *time.Timer
	)
	defer func() {
		if pause != nil {
			pause.Stop()
		}
	}()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.s.drainCh:
			return
		case <-f.dirty:
		}
		if f.s.warmingUp() != nil || f.s.lazyWarming(f.t) != nil {
			// No change during warm-up; the warm-up timer marks every
			// feed when it ends.
			continue
		}
		// A slot of Config.MaxStreamEvals, then the pacer's budget
		// (evalPacer), checked with the slot held so that at most
		// MaxStreamEvals evaluations overdraw it; marks arriving meanwhile
		// coalesce into the evaluation that follows.
		for {
			select {
			case f.s.evalSlots <- struct{}{}:
			case <-f.ctx.Done():
				return
			case <-f.s.drainCh:
				return
			}
			d := f.s.pacer.wait()
			if d <= 0 {
				break
			}
			<-f.s.evalSlots
			if pause == nil {
				pause = time.NewTimer(d)
			} else {
				pause.Reset(d)
			}
			select {
			case <-pause.C:
			case <-f.ctx.Done():
				return
			case <-f.s.drainCh:
				return
			}
		}
		start := time.Now()
		v, err := f.evaluate()
		f.s.pacer.charge(time.Since(start))
		<-f.s.evalSlots
		if err != nil {
			// Transient: keep every stream's state and the streams
			// (keda-contract.md §7.3).
			f.t.stats.failed(f.s.now().UnixMilli(), methodStreamIsActive, status.Error(codeOf(err), err.Error()))
			if now := time.Now(); now.Sub(lastLog) >= evalErrLogEvery {
				lastLog = now
				f.s.logger.Warn("Stream evaluation failed", "namespace", f.t.namespace, "scaled_object", f.t.name, "err", err)
			}
			continue
		}
		now := v > f.t.activation
		word, edge := uint64(stateInactive), false
		if now {
			if !active {
				edges++
				edge = true
				f.t.stats.edges.Add(1)
				f.t.stats.lastEdgeMs.Store(f.s.now().UnixMilli())
			}
			word = stateActive
		}
		active = now
		f.s.subs.post(f, edges<<2|word, edge)
	}
}

// Push evaluation's CPU budget (issue #13 item 7). Every Export marks each
// feed reading its metrics, so the evaluation work of push triggers grows
// with their number times the ingest rate. evalPacer is a token bucket of
// evaluation time shared by every feed: it fills at
// MaxStreamEvals/(1+streamEvalRest) seconds per second (a quarter of the
// slots' cores) up to streamEvalBurst, each evaluation spends its wall
// time, and a feed waits while the bucket is empty. A burst (KEDA opening
// a thousand streams at once, each evaluating once) fits in the bucket
// and waits for nothing; steady marking at full ingest speed is held to
// the rate. One evaluation is charged at most streamEvalMaxCharge: its
// wall time includes any time its thread was descheduled or assisting the
// GC, which must not stall every push for seconds.
const (
	streamEvalRest      = 3
	streamEvalBurst     = 50 * time.Millisecond
	streamEvalMaxCharge = 20 * time.Millisecond
)

// evalPacer is the shared token bucket; every field is guarded by mu.
type evalPacer struct {
	mu     sync.Mutex
	rate   float64       // seconds of evaluation per second
	credit time.Duration // negative: debt
	last   time.Time
}

func newEvalPacer(slots int) *evalPacer {
	return &evalPacer{rate: float64(slots) / (1 + streamEvalRest), credit: streamEvalBurst, last: time.Now()}
}

// wait returns how long a feed must wait before evaluating: zero while
// the bucket holds credit.
func (p *evalPacer) wait() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.credit = min(streamEvalBurst, p.credit+time.Duration(float64(now.Sub(p.last))*p.rate))
	p.last = now
	if p.credit >= 0 {
		return 0
	}
	return time.Duration(float64(-p.credit) / p.rate)
}

// charge spends one evaluation's duration.
func (p *evalPacer) charge(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.credit -= min(d, streamEvalMaxCharge)
}

// evaluate is Scaler.evaluate behind a panic boundary: the feed's goroutine
// serves no RPC, so no gRPC interceptor covers it. A panic is reported to
// Settings.OnPanic and is one failed evaluation; evaluate's deferred
// unlock has released the trigger.
func (f *feed) evaluate() (v float64, err error) {
	defer func() {
		if p := recover(); p != nil {
			f.s.onPanic(methodStreamIsActive, p, debug.Stack())
			v, err = 0, fmt.Errorf("ScaledObject %s/%s: %w: %v", f.t.namespace, f.t.name, ErrEvalPanic, p)
		}
	}()
	return f.s.evaluate(f.ctx, f.t)
}

// OnIngest is the receiver's hook: it marks every feed whose query reads
// one of the touched metrics. It never blocks on a stream: marking is a
// non-blocking send, and the shared lock is only ever held exclusively
// for a map insert or delete when a stream opens or closes.
func (s *Scaler) OnIngest(metricIDs []uint32) {
	s.subs.mark(metricIDs)
}

// evalErrLogEvery rate-limits the per-trigger evaluation-error log.
const evalErrLogEvery = time.Minute

// A push deferred because the client has not taken the previous one
// (backlog.go) is looked at again after backlogWaitFirst, then after twice
// as long each time, up to backlogWaitLongest: a reading client gets it within
// milliseconds, a stalled one costs a timer wake-up a second.
const (
	backlogWaitFirst   = 5 * time.Millisecond
	backlogWaitLongest = time.Second
)

// acquireStream counts one more open stream against Config.MaxStreams;
// release gives it back.
func (s *Scaler) acquireStream() error {
	if n := s.openStreams.Add(1); n > int64(s.cfg.MaxStreams) {
		s.openStreams.Add(-1)
		return fmt.Errorf("%w: %d StreamIsActive and StreamMetricSpec streams are open, the most --max-streams allows; KEDA retries", ErrTooManyStreams, s.cfg.MaxStreams)
	}
	return nil
}

func (s *Scaler) releaseStream() { s.openStreams.Add(-1) }

// StreamIsActive pushes true on every inactive-to-active edge of the
// trigger, and at once on open if it is already active (keda-contract.md
// §7.2). It never sends false, honours the push hold-off, pushes nothing
// during warm-up, and ends with an error only for invalid metadata or when
// Config.MaxStreams streams are already open (ResourceExhausted).
func (s *Scaler) StreamIsActive(ref *externalscaler.ScaledObjectRef, stream grpc.ServerStreamingServer[externalscaler.IsActiveResponse]) error {
	t, err := s.hold(ref) // the subscription uses t's metric IDs: keep them
	if err != nil {
		return s.fail(methodStreamIsActive, nil, ref, err)
	}
	defer s.unhold(t)
	if s.draining.Load() {
		s.m.rpc(methodStreamIsActive, codes.OK)
		return nil
	}
	if err := s.acquireStream(); err != nil {
		return s.fail(methodStreamIsActive, t, ref, err)
	}
	defer s.releaseStream()
	sub := s.subs.add(s, t)
	s.m.streams.Inc()
	t.stats.streamed.Store(true)
	t.stats.streams.Add(1)
	defer func() {
		s.subs.remove(sub)
		s.m.streams.Dec()
		t.stats.streams.Add(-1)
	}()

	ctx := stream.Context()
	bl := s.backlogOf(ctx) // before the first Send: nothing is queued yet
	holdoff := s.cfg.PushHoldoff
	var (
		active   bool      // last known state; starts inactive
		seen     uint64    // the feed's edge count at the last look
		sentAt   time.Time // when the last true was sent; zero before the first
		pending  bool      // an edge waits for the hold-off to expire, or for the client (backlog)
		holdT    *time.Timer
		holdC    <-chan time.Time
		expiring bool // the hold-off or a backlog wait expired; the next state decides the pending edge
		backT    *time.Timer
		backC    <-chan time.Time
		deferred bool          // the pending edge waits for the client (counted once)
		backWait time.Duration // the next backlog wait; doubles while the client takes nothing
	)
	defer func() {
		if holdT != nil {
			holdT.Stop()
		}
		if backT != nil {
			backT.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			s.m.rpc(methodStreamIsActive, codes.Canceled)
			return nil
		case <-s.drainCh:
			s.m.rpc(methodStreamIsActive, codes.OK)
			return nil
		case <-holdC:
			// Decide on a fresh evaluation, as the state may have changed
			// with time alone (staleness, windows).
			holdC, expiring = nil, true
			sub.want.Store(true)
			sub.f.mark()
			continue
		case <-backC:
			// Look again whether the client took the queued push. The
			// mailbox's latest state decides, without a fresh evaluation:
			// a stalled client must cost no evaluations.
			backC, expiring = nil, true
		case <-sub.notify:
		}
		word := sub.word.Load()
		if word&stateMask == stateNone {
			continue
		}
		now := word&stateMask == stateActive
		// An edge the feed saw while this stream was not looking (its
		// inactive state overwritten by the next post) is still an edge.
		missed := word>>2 != seen
		seen = word >> 2
		switch {
		case now && (!active || missed || pending):
			if wait := holdoff - time.Since(sentAt); sentAt.IsZero() || holdoff <= 0 || wait <= 0 {
				if bl.queued() {
					// The client has not taken the previous push: queue
					// nothing behind it (backlog.go), look again later.
					if !deferred {
						s.m.deferred.Inc()
					}
					pending, deferred = true, true
					if backC == nil {
						backWait = min(max(2*backWait, backlogWaitFirst), backlogWaitLongest)
						if backT == nil {
							backT = time.NewTimer(backWait)
						} else {
							backT.Reset(backWait)
						}
						backC = backT.C
					}
					break
				}
				if err := stream.Send(&externalscaler.IsActiveResponse{Result: true}); err != nil {
					s.logger.Warn("Stream send failed", "namespace", t.namespace, "scaled_object", t.name, "err", err)
					s.m.rpc(methodStreamIsActive, codes.Unavailable)
					return nil
				}
				if s.onPush != nil {
					s.onPush()
				}
				s.m.pushes.Inc()
				t.stats.pushes.Add(1)
				t.stats.lastPushMs.Store(s.now().UnixMilli())
				sentAt, pending, deferred, backWait = time.Now(), false, false, 0
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
			pending, deferred = false, false // the deferred edge lapsed: inactive at expiry
		}
		active, expiring = now, false
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
