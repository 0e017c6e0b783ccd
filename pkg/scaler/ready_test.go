package scaler

import (
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

// TestReadyAfterFresh: with ReadyAfterFresh the warm-up clock waits for
// a fresh sample however long that takes; stale samples (a fan-out queue
// replaying what the replica missed) do not start it; once a fresh one is
// stored the scaler answers --warmup later, and OnWarm is told.
func TestReadyAfterFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := store.New(store.Config{Retention: 10 * time.Minute}, store.Settings{})
		var warmed atomic.Int32
		s := New(query.NewEngine(st), st, Config{Warmup: 10 * time.Second, ReadyAfterFresh: true, FreshWindow: 5 * time.Second},
			Settings{OnWarm: func() { warmed.Add(1) }})
		t.Cleanup(s.Drain)
		e := &env{st: st, s: s}
		s.Start()
		get := func() (float64, error) {
			mv, err := s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(sumX)})
			if err != nil {
				return 0, err
			}
			return mv.GetMetricValues()[0].GetMetricValueFloat(), nil
		}

		time.Sleep(time.Hour) // nothing arrives: never ready on a timer alone
		_, err := get()
		require.Equal(t, codes.Unavailable, status.Code(err))
		assert.Contains(t, err.Error(), "no fresh sample")
		assert.False(t, s.Warm())

		e.push(t, "x", 3)
		s.SawSample(time.Now().Add(-6 * time.Second).UnixMilli()) // older than FreshWindow: replayed data
		time.Sleep(time.Minute)
		_, err = get()
		require.Equal(t, codes.Unavailable, status.Code(err), "a stale sample does not start the clock")
		assert.Zero(t, warmed.Load())

		s.SawSample(time.Now().Add(-time.Second).UnixMilli())
		time.Sleep(9 * time.Second)
		_, err = get()
		require.Equal(t, codes.Unavailable, status.Code(err), "warm-up runs --warmup from the fresh sample")
		s.SawSample(time.Now().UnixMilli()) // later samples do not restart it
		time.Sleep(time.Second + time.Millisecond)
		synctest.Wait()
		e.push(t, "x", 3)
		e.push(t, "x", 4, "pod", "b")
		v, err := get()
		require.NoError(t, err)
		assert.InDelta(t, 7, v, 0)
		assert.True(t, s.Warm())
		assert.Equal(t, int32(1), warmed.Load(), "OnWarm once the clock ran out")
	})
}

// TestReadyAfterFreshRestore: a fresh --state-dir restore (EndWarmup)
// needs no sample, as without the rule.
func TestReadyAfterFreshRestore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{Warmup: 10 * time.Second, ReadyAfterFresh: true})
		e.s.EndWarmup()
		e.s.Start()
		assert.True(t, e.s.Warm())
	})
}

// TestReadyAfterFreshCatchUp: with a CatchUp gate the warm-up clock's end
// hands warm-up to the gate, once; the scaler answers Unavailable however
// long the gate takes, and its done ends warm-up (OnWarm told once). Done
// after Drain does nothing.
func TestReadyAfterFreshCatchUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := store.New(store.Config{Retention: 10 * time.Minute}, store.Settings{})
		var warmed, calls atomic.Int32
		var done func()
		s := New(query.NewEngine(st), st, Config{Warmup: 10 * time.Second, ReadyAfterFresh: true, FreshWindow: 5 * time.Second},
			Settings{OnWarm: func() { warmed.Add(1) }, CatchUp: func(d func()) { calls.Add(1); done = d }})
		t.Cleanup(s.Drain)
		e := &env{st: st, s: s}
		s.Start()
		e.push(t, "x", 3)
		s.SawSample(time.Now().UnixMilli())
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		require.Equal(t, int32(1), calls.Load(), "the clock's end calls CatchUp")
		time.Sleep(time.Hour) // the clock alone never ends warm-up now
		_, err := s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(sumX)})
		require.Equal(t, codes.Unavailable, status.Code(err))
		assert.Contains(t, err.Error(), "--ready-peers")
		assert.False(t, s.Warm())
		assert.Zero(t, warmed.Load())

		e.push(t, "x", 3)
		done()
		done() // a second call changes nothing
		assert.True(t, s.Warm())
		assert.Equal(t, int32(1), warmed.Load())
		_, err = s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(sumX)})
		require.NoError(t, err)
		assert.Equal(t, int32(1), calls.Load())
	})
}

// TestCatchUpOnlyWithReadyAfterFresh: without ReadyAfterFresh the gate is
// never consulted; the timer warm-up ends on its own.
func TestCatchUpOnlyWithReadyAfterFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := store.New(store.Config{Retention: 10 * time.Minute}, store.Settings{})
		var calls atomic.Int32
		s := New(query.NewEngine(st), st, Config{Warmup: 10 * time.Second}, Settings{CatchUp: func(func()) { calls.Add(1) }})
		t.Cleanup(s.Drain)
		s.Start()
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		assert.True(t, s.Warm())
		assert.Zero(t, calls.Load())
	})
}
