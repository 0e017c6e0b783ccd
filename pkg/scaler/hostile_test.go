package scaler

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// callRecovering calls f the way a gRPC panic boundary does (pkg/server's
// interceptors): a panic is recovered and returned.
func callRecovering(f func()) (recovered any) {
	defer func() { recovered = recover() }()
	f()
	return nil
}

// cachedTrigger returns the compiled trigger the scaler holds for md.
func cachedTrigger(t *testing.T, s *Scaler, md map[string]string) *trigger {
	t.Helper()
	tr, err := s.compile(ref(md))
	require.NoError(t, err)
	return tr
}

// TestEvalPanicReleasesTriggerLock is issue #12 class 2's lock half: an
// evaluation that panics while it holds the trigger's mutex releases it,
// so the next GetMetrics/IsActive on the same trigger answers instead of
// blocking forever. Before the deferred unlock, the mutex stayed locked
// after the first panic (TryLock below failed, and the next call hung).
func TestEvalPanicReleasesTriggerLock(t *testing.T) {
	for _, method := range []string{methodGetMetrics, methodIsActive} {
		t.Run(method, func(t *testing.T) {
			// One evaluation slot: the next call is answered only if the
			// panicking one gave its slot back too.
			e := newEnv(t, Config{MaxEvaluations: 1})
			e.push(t, "x", 9)
			var armed atomic.Bool
			armed.Store(true)
			e.s.evalHook = func(*trigger) {
				if armed.CompareAndSwap(true, false) {
					panic("injected evaluation panic")
				}
			}
			call := func() error {
				var err error
				if method == methodGetMetrics {
					_, err = e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(sumX)})
				} else {
					_, err = e.s.IsActive(t.Context(), ref(sumX))
				}
				return err
			}
			require.Equal(t, "injected evaluation panic", callRecovering(func() { _ = call() }))
			tr := cachedTrigger(t, e.s, sumX)
			require.True(t, tr.mu.TryLock(), "the trigger's lock was released by the panicking evaluation")
			tr.mu.Unlock()
			require.NoError(t, call(), "the next call on the same trigger is answered")
		})
	}
}

// TestStreamEvalPanicIsContained: a panic in a trigger's shared push
// evaluation (a goroutine no RPC boundary covers) is recovered, reported
// to OnPanic and counted as one failed evaluation; the stream stays open,
// the lock is free, and the next edge is pushed.
func TestStreamEvalPanicIsContained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := store.New(store.Config{Retention: 10 * time.Minute}, store.Settings{})
		var panics atomic.Int32
		s := New(query.NewEngine(st), st, Config{}, Settings{OnPanic: func(method string, p any, stack []byte) {
			assert.Equal(t, methodStreamIsActive, method)
			assert.Equal(t, "injected evaluation panic", p)
			assert.NotEmpty(t, stack)
			panics.Add(1)
		}})
		t.Cleanup(s.Drain)
		e := &env{st: st, s: s}
		var armed atomic.Bool
		s.evalHook = func(*trigger) {
			if armed.CompareAndSwap(true, false) {
				panic("injected evaluation panic")
			}
		}
		fs, _ := e.open(t, sumX)
		synctest.Wait()
		armed.Store(true)
		e.push(t, "x", 9) // this edge's evaluation panics
		synctest.Wait()
		assert.Equal(t, int32(1), panics.Load())
		assert.Empty(t, fs.got())
		tr := cachedTrigger(t, s, sumX)
		require.True(t, tr.mu.TryLock(), "the trigger's lock was released")
		tr.mu.Unlock()
		time.Sleep(time.Second)
		e.push(t, "x", 10)
		synctest.Wait()
		assert.Equal(t, []bool{true}, fs.got(), "the stream survived the panic and gets the edge")
	})
}

// TestStreamOneEvaluationPerEdge is issue #12 class 7's fan-out half: all
// streams of one trigger share one evaluation per change. Before the
// shared feed, each of the 50 streams evaluated the trigger itself, under
// its lock, so one edge cost 50 serialised evaluations.
func TestStreamOneEvaluationPerEdge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{})
		const streams, edges = 50, 10
		fss := make([]*fakeStream, streams)
		for i := range fss {
			fss[i], _ = e.open(t, sumX)
		}
		synctest.Wait()
		before := evaluations(t, e.s)
		for range edges {
			time.Sleep(time.Second)
			e.push(t, "x", 9) // inactive -> active
			synctest.Wait()
			time.Sleep(time.Second)
			e.push(t, "x", 0) // back to inactive
			synctest.Wait()
		}
		assert.Equal(t, uint64(2*edges), evaluations(t, e.s)-before, "one evaluation per change, whatever the number of streams")
		for i, fs := range fss {
			assert.Len(t, fs.got(), edges, "stream %d got every edge", i)
		}
	})
}

// TestStalledStreamsDoNotDelayOthers: 500 streams whose client stopped
// reading (every Send blocks) on the same trigger as a healthy stream.
// The healthy stream gets every edge, the stalled ones are each stuck in
// their first Send with nothing queued behind it (the mailbox keeps the
// latest state only), and evaluations stay one per change.
func TestStalledStreamsDoNotDelayOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		const stalled, edges = 500, 20
		block := make(chan struct{}) // never closed: the clients never read
		done := make(chan error, stalled)
		stalls := make([]*fakeStream, stalled)
		for i := range stalls {
			stalls[i] = &fakeStream{ctx: ctx, block: block}
			go func() { done <- e.s.StreamIsActive(ref(sumX), stalls[i]) }()
		}
		healthy, _ := e.open(t, sumX)
		synctest.Wait()
		before := evaluations(t, e.s)
		for range edges {
			time.Sleep(time.Second)
			e.push(t, "x", 9)
			synctest.Wait()
			time.Sleep(time.Second)
			e.push(t, "x", 0)
			synctest.Wait()
		}
		assert.Len(t, healthy.got(), edges, "the healthy stream got every edge")
		assert.Equal(t, uint64(2*edges), evaluations(t, e.s)-before, "stalled streams cost no evaluation")
		for _, fs := range stalls {
			require.Empty(t, fs.got(), "a stalled stream is still in its first Send")
			require.Equal(t, int32(1), fs.calls.Load(), "one Send attempted; the later edges overwrote its mailbox")
		}
		cancel()
		for range stalled {
			require.NoError(t, <-done)
		}
	})
}

// TestMaxStreams: open StreamIsActive and StreamMetricSpec streams together
// are capped by Config.MaxStreams; one more is ResourceExhausted, and a
// closed stream frees its slot. Before the cap, any number could be opened.
func TestMaxStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{MaxStreams: 3})
		_, c1 := e.open(t, sumX)
		_, _ = e.open(t, map[string]string{"metricQuery": "sum(y)", "targetValue": "1"})
		specCtx, specCancel := context.WithCancel(context.Background())
		defer specCancel()
		specDone := make(chan error, 1)
		go func() { specDone <- e.s.StreamMetricSpec(ref(sumX), &specStream{ctx: specCtx}) }()
		synctest.Wait()

		err := e.s.StreamIsActive(ref(sumX), &fakeStream{ctx: t.Context()})
		assert.Equal(t, codes.ResourceExhausted, status.Code(err), "a fourth stream: %v", err)
		err = e.s.StreamMetricSpec(ref(sumX), &specStream{ctx: t.Context()})
		assert.Equal(t, codes.ResourceExhausted, status.Code(err), "a fourth spec stream: %v", err)

		require.NoError(t, c1())
		fs, _ := e.open(t, sumX)
		e.push(t, "x", 9)
		synctest.Wait()
		assert.Equal(t, []bool{true}, fs.got(), "a closed stream's slot is reused")
		specCancel()
		require.NoError(t, <-specDone)
	})
}

// specStream is a StreamMetricSpec server stream that accepts every send.
type specStream struct {
	fakeStream
	ctx context.Context
}

func (f *specStream) Context() context.Context { return f.ctx }

func (f *specStream) Send(*externalscaler.GetMetricSpecResponse) error { return nil }

// TestPolledEvaluationsBounded: GetMetrics and IsActive on distinct
// triggers evaluate at most Config.MaxEvaluations at once, whatever the number
// of concurrent calls, so the memory of evaluations in flight (each within
// its budgets) is bounded by configuration; a call that cannot get a slot
// within EvalBudget fails with ResourceExhausted and KEDA retries.
func TestPolledEvaluationsBounded(t *testing.T) {
	const maxEvals, calls = 2, 8
	trig := func(i int) map[string]string {
		return map[string]string{"metricQuery": fmt.Sprintf("sum(x) + %d", i), "targetValue": "1"}
	}
	t.Run("at most MaxEvaluations at once", func(t *testing.T) {
		e := newEnv(t, Config{MaxEvaluations: maxEvals, EvalBudget: time.Minute})
		e.push(t, "x", 1)
		var running, most atomic.Int32
		release := make(chan struct{})
		e.s.evalHook = func(*trigger) {
			n := running.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			<-release
			running.Add(-1)
		}
		errs := make(chan error, calls)
		for i := range calls {
			go func() {
				var err error
				if i%2 == 0 {
					_, err = e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(trig(i))})
				} else {
					_, err = e.s.IsActive(t.Context(), ref(trig(i)))
				}
				errs <- err
			}()
		}
		// Every call has reached the scaler: two evaluate, the rest wait
		// for a slot (the trigger cache holds all eight).
		require.Eventually(t, func() bool {
			return running.Load() == maxEvals && e.s.cache.len() == calls
		}, 10*time.Second, time.Millisecond)
		close(release)
		for range calls {
			require.NoError(t, <-errs)
		}
		assert.Equal(t, int32(maxEvals), most.Load(), "evaluations running at once")
	})
	t.Run("busy slots answer ResourceExhausted", func(t *testing.T) {
		e := newEnv(t, Config{MaxEvaluations: 1, EvalBudget: 50 * time.Millisecond})
		e.push(t, "x", 1)
		entered, release := make(chan struct{}), make(chan struct{})
		blocked := cachedTrigger(t, e.s, trig(0))
		e.s.evalHook = func(tr *trigger) {
			if tr == blocked {
				close(entered)
				<-release
			}
		}
		first := make(chan error, 1)
		go func() {
			_, err := e.s.IsActive(t.Context(), ref(trig(0)))
			first <- err
		}()
		<-entered
		_, err := e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(trig(1))})
		require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
		require.ErrorContains(t, err, "--max-evaluations")
		close(release)
		assert.Equal(t, codes.ResourceExhausted, status.Code(<-first), "held past its own 50 ms budget")
		e.s.evalHook = nil
		_, err = e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(trig(1))})
		require.NoError(t, err, "the slot is free again")
	})
}
