package scaler

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var sumX = map[string]string{"metricQuery": "sum(x)", "targetValue": "1", "activationThreshold": "5"}

func evaluations(t *testing.T, s *Scaler) uint64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, s.m.evalSeconds.Write(&m))
	return m.GetHistogram().GetSampleCount()
}

// Time logic of the push path under testing/synctest (performance.md T7:
// the per-PR gate): initial send, edges only, coalescing, hold-off, warm-up,
// no send to a closed stream.
func TestStreamInitialActiveSendsTrueAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{})
		e.push(t, "x", 9)
		fs, _ := e.open(t, sumX)
		synctest.Wait()
		assert.Equal(t, []bool{true}, fs.got(), "active on open: true without waiting for new data")
	})
}

func TestStreamEdgesOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{})
		fs, _ := e.open(t, sumX)
		synctest.Wait()
		assert.Empty(t, fs.got(), "inactive on open: nothing, never false")

		e.push(t, "x", 3) // still inactive (3 <= 5)
		synctest.Wait()
		assert.Empty(t, fs.got())

		time.Sleep(time.Second)
		e.push(t, "x", 6) // inactive -> active
		synctest.Wait()
		assert.Equal(t, []bool{true}, fs.got())

		for i := range 5 { // repeated activity: no more pushes
			time.Sleep(time.Second)
			e.push(t, "x", float64(7+i))
			synctest.Wait()
		}
		assert.Equal(t, []bool{true}, fs.got())

		time.Sleep(time.Second)
		e.push(t, "x", 5) // equal to the threshold: inactive, nothing sent
		synctest.Wait()
		time.Sleep(time.Second)
		e.push(t, "x", 8) // active again: one more true (hold-off 0)
		synctest.Wait()
		assert.Equal(t, []bool{true, true}, fs.got(), "one true per edge and no false")
	})
}

func TestStreamIgnoresOtherMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{})
		e.open(t, sumX)
		synctest.Wait()
		before := evaluations(t, e.s)
		for i := range 10 {
			time.Sleep(time.Second)
			e.push(t, "y", float64(100+i))
		}
		synctest.Wait()
		assert.Equal(t, before, evaluations(t, e.s), "data the trigger does not read causes no evaluation")
	})
}

func TestStreamCoalescesAndSlowClientDoesNotBlockIngest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{})
		e.push(t, "x", 9)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		slow := &fakeStream{ctx: ctx, block: make(chan struct{})}
		done := make(chan error, 1)
		go func() { done <- e.s.StreamIsActive(ref(sumX), slow) }()
		synctest.Wait() // the slow stream is stuck in Send of its initial true
		require.Equal(t, uint64(1), evaluations(t, e.s))

		// Another trigger's stream still gets its edge while ingest goes on.
		other := map[string]string{"metricQuery": "sum(x)", "targetValue": "1", "activationThreshold": "50"}
		fast, _ := e.open(t, other)
		synctest.Wait()
		for i := range 100 { // OnIngest never blocks on the stuck stream
			time.Sleep(time.Millisecond)
			e.push(t, "x", float64(60+i))
		}
		synctest.Wait()
		assert.Equal(t, []bool{true}, fast.got(), "the other stream is not delayed")

		n := evaluations(t, e.s)
		close(slow.block)
		synctest.Wait()
		assert.Equal(t, []bool{true}, slow.got(), "the stuck stream's mailbox kept only the latest state: still active, nothing more to send")
		assert.Equal(t, n, evaluations(t, e.s), "a stream released from a stuck Send reads its mailbox; it does not evaluate")
		cancel()
		require.NoError(t, <-done)
	})
}

func TestStreamHoldoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{PushHoldoff: 5 * time.Second})
		fs, _ := e.open(t, sumX)
		synctest.Wait()
		e.push(t, "x", 9) // first true after open is never delayed
		synctest.Wait()
		require.Equal(t, []bool{true}, fs.got())
		t0 := time.Now()

		time.Sleep(time.Second)
		e.push(t, "x", 1) // inactive
		time.Sleep(time.Second)
		e.push(t, "x", 9) // edge inside the hold-off: deferred
		synctest.Wait()
		assert.Equal(t, []bool{true}, fs.got())
		time.Sleep(5*time.Second - time.Since(t0) - time.Millisecond)
		synctest.Wait()
		assert.Equal(t, []bool{true}, fs.got(), "not before the hold-off expires")
		time.Sleep(time.Millisecond)
		synctest.Wait()
		assert.Equal(t, []bool{true, true}, fs.got(), "delivered at expiry, still active")
		t1 := time.Now()

		// An edge that lapses before expiry is not sent.
		time.Sleep(time.Second)
		e.push(t, "x", 1)
		time.Sleep(time.Second)
		e.push(t, "x", 9) // deferred
		time.Sleep(time.Second)
		e.push(t, "x", 1) // inactive again before expiry
		time.Sleep(5*time.Second - time.Since(t1) + time.Second)
		synctest.Wait()
		assert.Equal(t, []bool{true, true}, fs.got(), "inactive at expiry: nothing")

		e.push(t, "x", 9) // hold-off long over: sent at once
		synctest.Wait()
		assert.Equal(t, []bool{true, true, true}, fs.got())
	})
}

func TestWarmup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{Warmup: 30 * time.Second})
		e.push(t, "x", 9)
		fs, _ := e.open(t, sumX)

		time.Sleep(12 * time.Second)
		e.push(t, "x", 10)
		synctest.Wait()
		assert.Empty(t, fs.got(), "streams push nothing during warm-up")
		_, err := e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(sumX)})
		assert.Equal(t, codes.Unavailable, status.Code(err))
		require.ErrorContains(t, err, "warming up: receiving metrics for 12s of 30s")
		_, err = e.s.IsActive(t.Context(), ref(sumX))
		assert.Equal(t, codes.Unavailable, status.Code(err))
		spec, err := e.s.GetMetricSpec(t.Context(), ref(sumX))
		require.NoError(t, err, "GetMetricSpec is unaffected by warm-up")
		assert.Len(t, spec.GetMetricSpecs(), 1)

		time.Sleep(18 * time.Second) // warm-up ends: every stream evaluates
		synctest.Wait()
		assert.Equal(t, []bool{true}, fs.got(), "active at warm-up end: true without new data")
		mv, err := e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(sumX)})
		require.NoError(t, err)
		assert.InDelta(t, 10, mv.GetMetricValues()[0].GetMetricValueFloat(), 0)
	})
}

func TestStreamSurvivesEvaluationErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{})
		md := map[string]string{"metricQuery": "sum by (a) (x)", "targetValue": "1", "ignoreNullValues": "false"}
		fs, _ := e.open(t, md) // empty: NotFound on every evaluation
		for i := range 10 {
			time.Sleep(time.Second)
			e.push(t, "x", float64(i), "a", "1", "b", "1")
			e.push(t, "x", float64(i), "a", "2") // two groups: FailedPrecondition
		}
		synctest.Wait()
		assert.Empty(t, fs.got())
		time.Sleep(2 * time.Minute) // both series vanish (lookback 2m)
		e.push(t, "x", 3, "a", "3")
		synctest.Wait()
		assert.Equal(t, []bool{true}, fs.got(), "the stream stayed open through the errors")
	})
}

func TestStreamEndsOnCancelAndDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{})
		fs, cancel := e.open(t, sumX)
		fs2, _ := e.open(t, sumX) // overlapping stream, same trigger
		synctest.Wait()
		require.NoError(t, cancel())
		e.push(t, "x", 9)
		synctest.Wait()
		assert.Empty(t, fs.got(), "no send to a closed stream")
		assert.Equal(t, []bool{true}, fs2.got(), "cancelling one stream does not affect the other")

		ctx, c := context.WithCancel(context.Background())
		defer c()
		done := make(chan error, 1)
		go func() { done <- e.s.StreamIsActive(ref(sumX), &fakeStream{ctx: ctx}) }()
		synctest.Wait()
		e.s.Drain()
		require.NoError(t, <-done, "drain ends streams with OK")
		synctest.Wait() // the overlapping stream ends too
		e.s.subs.mu.RLock()
		defer e.s.subs.mu.RUnlock()
		assert.Empty(t, e.s.subs.byMetric, "every subscription released")
	})
}

func TestStreamInvalidMetadata(t *testing.T) {
	e := newEnv(t, Config{})
	err := e.s.StreamIsActive(ref(map[string]string{"metricQuery": "sum(x", "targetValue": "1"}), &fakeStream{ctx: t.Context()})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
}

// Overload (an evaluation over its budget) is "no change" for a stream too.
func TestStreamSurvivesBudgetErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{MaxSamples: 50})
		fs, cancel := e.open(t, sumX)
		synctest.Wait() // the initial evaluation (empty: inactive) is done
		// One request's worth of series, then one notification: every
		// evaluation the stream makes sees all 100 series.
		for i := range 100 {
			e.append(t, "x", 9, "i", fmt.Sprint(i))
		}
		e.s.OnIngest([]uint32{e.st.MetricID("x")})
		synctest.Wait()
		assert.Empty(t, fs.got(), "over budget: ResourceExhausted, no push, stream open")
		_, err := e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(sumX)})
		assert.Equal(t, codes.ResourceExhausted, status.Code(err))
		e.s.subs.mu.RLock()
		open := len(e.s.subs.byMetric[e.st.MetricID("x")])
		e.s.subs.mu.RUnlock()
		assert.Equal(t, 1, open, "the stream is still subscribed")
		require.NoError(t, cancel(), "and ends with OK when KEDA goes away")
	})
}

// TestStreamEvaluationsBounded (issue #13 item 7): push triggers over a
// metric ingested at full speed evaluate at most Config.MaxStreamEvals at
// a time, all triggers together, and each still ends on the newest data.
// Before the bound, 16 triggers evaluated on 16 goroutines at once (the
// chaos suite's 500 streams on 50 triggers cut ingestion to 13 % of its
// clean rate on 2 cores).
func TestStreamEvaluationsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{MaxStreamEvals: 2})
		var running, peak atomic.Int32
		e.s.evalHook = func(*trigger) {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(time.Millisecond) // a costly evaluation, under the trigger's lock
			running.Add(-1)
		}
		const triggers = 16
		var streams []*fakeStream
		for i := range triggers {
			md := map[string]string{"metricQuery": fmt.Sprintf("sum(x) + %d", i), "targetValue": "1", "activationThreshold": "100"}
			fs, _ := e.open(t, md)
			streams = append(streams, fs)
		}
		synctest.Wait()
		for i := range 20 {
			time.Sleep(time.Millisecond)
			e.push(t, "x", float64(i)) // marks every feed, as an Export does
		}
		synctest.Wait()
		time.Sleep(time.Millisecond)
		e.push(t, "x", 1000)    // every trigger turns active
		time.Sleep(time.Second) // every queued evaluation runs (fake time)
		synctest.Wait()
		assert.Equal(t, int32(2), peak.Load(), "evaluations at once, all triggers together")
		for i, fs := range streams {
			assert.Equal(t, []bool{true}, fs.got(), "trigger %d saw the newest data", i)
		}
	})
}

// TestStreamEvaluationDuty (issue #13 item 7): while ingestion keeps
// marking every push trigger, their evaluations together spend at most
// MaxStreamEvals/(1+streamEvalRest) seconds per second beyond the
// pacer's burst. 16 triggers marked every millisecond for a second with
// 1 ms evaluations and 2 slots: at most 500 + 50 (the burst) evaluations
// (without the budget, 2,000: both slots always busy, which left
// ingestion half of a 2-core machine in test/chaos).
func TestStreamEvaluationDuty(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{MaxStreamEvals: 2})
		var evals atomic.Int32
		e.s.evalHook = func(*trigger) {
			evals.Add(1)
			time.Sleep(time.Millisecond)
		}
		for i := range 16 {
			e.open(t, map[string]string{"metricQuery": fmt.Sprintf("sum(x) + %d", i), "targetValue": "1"})
		}
		synctest.Wait()
		time.Sleep(time.Second) // the opening evaluations; the bucket refills
		synctest.Wait()
		evals.Store(0)
		for i := range 1000 {
			time.Sleep(time.Millisecond)
			e.push(t, "x", float64(i))
		}
		n := int(evals.Load())
		rate := 2 * 1000 / (1 + streamEvalRest)
		burst := int(streamEvalBurst / time.Millisecond)
		assert.LessOrEqual(t, n, rate+burst+2, "evaluations in 1 s")
		assert.GreaterOrEqual(t, n, rate-20, "the budget keeps being spent")
	})
}

// TestStreamEvaluationBurst: a thousand streams opened at once (KEDA
// restarting) each evaluate once without waiting for the pacer when the
// evaluations fit in its burst.
func TestStreamEvaluationBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{MaxStreamEvals: 1})
		var evals atomic.Int32
		e.s.evalHook = func(*trigger) {
			evals.Add(1)
			time.Sleep(20 * time.Microsecond)
		}
		e.push(t, "x", 9)
		start := time.Now()
		var streams []*fakeStream
		for i := range 1000 {
			fs, _ := e.open(t, map[string]string{"metricQuery": fmt.Sprintf("sum(x) + %d", i), "targetValue": "1"})
			streams = append(streams, fs)
		}
		for evals.Load() < 1000 {
			time.Sleep(time.Millisecond)
		}
		assert.LessOrEqual(t, time.Since(start), 25*time.Millisecond, "1,000 evaluations of 20 µs: 20 ms, no pacing")
		synctest.Wait()
		for i, fs := range streams {
			assert.Equal(t, []bool{true}, fs.got(), "stream %d told it is active", i)
		}
	})
}
