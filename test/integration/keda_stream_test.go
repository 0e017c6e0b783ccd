package integration

// StreamIsActive over a real gRPC connection (keda-contract.md §7, §12
// items 31-38). Timing logic is proven under synctest in pkg/scaler; here
// waits are only upper bounds ("nothing arrives within 200 ms") or lower
// bounds the implementation guarantees (a deferred edge never arrives
// before its hold-off), never gates on speed.

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
)

const quiet = 200 * time.Millisecond

// openStreams waits until the server reports n open streams.
func (e *kedaEnv) waitStreams(t testing.TB, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d open streams", n), func() bool {
		return e.selfMetric(t, "keda_otel_scaler_scaler_open_streams") == float64(n)
	})
	e.evaluatedAfter(t, -1) // and their initial evaluations are done
}

// evaluationCountAbove waits until the server has evaluated more than n
// times.
func (e *kedaEnv) evaluationCountAbove(t testing.TB, n float64) {
	t.Helper()
	waitFor(t, "an evaluation", func() bool {
		return e.selfMetric(t, "keda_otel_scaler_scaler_evaluation_seconds_count") > n
	})
}

// evaluatedAfter waits until the server has evaluated more than n times
// and no further evaluation follows within 20 ms, so a stream has seen the
// latest data before the next Export (which would otherwise coalesce with
// it).
func (e *kedaEnv) evaluatedAfter(t testing.TB, n float64) {
	t.Helper()
	last := -1.0
	waitFor(t, "an evaluation", func() bool {
		c := e.selfMetric(t, "keda_otel_scaler_scaler_evaluation_seconds_count")
		if c > n && c == last {
			return true
		}
		last = c
		time.Sleep(20 * time.Millisecond)
		return false
	})
}

// Items 31, 32, 33: initial state, edges only, never false.
func TestKEDAStreamEdges(t *testing.T) {
	e := startKEDA(t, false, nil)
	ctx := e.ctx(t)
	e.export(t, point{name: "up1", v: 1})
	s, err := e.client.StreamIsActive(ctx, soRef(md("sum(up1)")))
	require.NoError(t, err)
	v, ok := startRecv(s).next(10 * time.Second)
	require.True(t, ok)
	assert.True(t, v, "item 31: active on open: true first")

	m := md("sum(x)", "activationThreshold", "5")
	s, err = e.client.StreamIsActive(ctx, soRef(m))
	require.NoError(t, err)
	r := startRecv(s)
	e.waitStreams(t, 2)
	e.export(t, point{name: "x", v: 5}) // equal: inactive
	_, ok = r.next(quiet)
	assert.False(t, ok, "item 32: nothing while inactive (and never false)")

	evals := e.selfMetric(t, "keda_otel_scaler_scaler_evaluation_seconds_count")
	e.export(t, point{name: "x", v: 6})
	v, ok = r.next(10 * time.Second)
	require.True(t, ok)
	assert.True(t, v)
	e.evaluatedAfter(t, evals)
	for i := range 5 {
		e.export(t, point{name: "x", v: float64(7 + i)})
	}
	_, ok = r.next(quiet)
	assert.False(t, ok, "repeated activity: no more messages")

	evals = e.selfMetric(t, "keda_otel_scaler_scaler_evaluation_seconds_count")
	e.export(t, point{name: "x", v: 0})
	e.evaluatedAfter(t, evals) // the stream saw the fall to inactive
	e.export(t, point{name: "x", v: 9})
	v, ok = r.next(10 * time.Second)
	require.True(t, ok)
	assert.True(t, v, "one more true on the next edge (hold-off 0)")
	_, ok = r.next(quiet)
	assert.False(t, ok)
}

// Item 32, hold-off: a deferred edge arrives at expiry, a lapsed one never.
func TestKEDAStreamHoldoff(t *testing.T) {
	const holdoff = time.Second
	e := startKEDA(t, false, func(c *config.Config) { c.Scaler.PushHoldoff = holdoff })
	s, err := e.client.StreamIsActive(e.ctx(t), soRef(md("sum(x)")))
	require.NoError(t, err)
	r := startRecv(s)
	e.waitStreams(t, 1)

	edge := func(v float64) {
		evals := e.selfMetric(t, "keda_otel_scaler_scaler_evaluation_seconds_count")
		e.export(t, point{name: "x", v: v})
		e.evaluatedAfter(t, evals)
	}
	first := time.Now() // before the server sent the first true
	edge(1)
	_, ok := r.next(10 * time.Second)
	require.True(t, ok, "the first true is never delayed")
	edge(0)
	edge(1) // inside the hold-off: deferred
	v, ok := r.next(10 * time.Second)
	require.True(t, ok)
	assert.True(t, v)
	assert.GreaterOrEqual(t, time.Since(first), holdoff, "not before the hold-off expired")

	second := time.Now()
	edge(0)
	edge(1)
	edge(0) // inactive again before expiry
	time.Sleep(holdoff - time.Since(second) + quiet)
	_, ok = r.next(0)
	assert.False(t, ok, "a lapsed edge is not sent")
}

// Item 34: warm-up, empty data and evaluation errors never end the stream.
func TestKEDAStreamSurvivesTransientProblems(t *testing.T) {
	e := startKEDA(t, false, func(c *config.Config) { c.Scaler.Warmup = time.Second })
	ctx := e.ctx(t)
	s, err := e.client.StreamIsActive(ctx, soRef(md("sum by (a) (x)", "ignoreNullValues", "false")))
	require.NoError(t, err)
	r := startRecv(s)
	e.export(t, point{name: "y", v: 1})
	_, ok := r.next(time.Second + quiet) // warm-up, then empty → NotFound evaluations
	assert.False(t, ok)
	for i := range 10 { // two groups → FailedPrecondition evaluations
		e.export(t, point{name: "x", v: float64(i + 1), kv: []string{"a", "1"}}, point{name: "x", v: 1, kv: []string{"a", "2"}})
		time.Sleep(50 * time.Millisecond)
	}
	_, ok = r.next(quiet)
	assert.False(t, ok)
	select {
	case err := <-r.end:
		t.Fatalf("stream ended: %v", err)
	default:
	}
	// Still serving: make it valid and active through a second stream's
	// trigger on the same connection, and this one via the data.
	_, err = e.client.GetMetricSpec(ctx, soRef(md("sum(x)")))
	require.NoError(t, err)
}

// Item 37: overlapping streams are independent; 500 abandoned streams
// leave no goroutines behind.
func TestKEDAStreamOverlapAndAbandon(t *testing.T) {
	e := startKEDA(t, false, nil)
	m := md("sum(x)")
	ctx1, cancel1 := context.WithCancel(e.ctx(t))
	s1, err := e.client.StreamIsActive(ctx1, soRef(m))
	require.NoError(t, err)
	s2, err := e.client.StreamIsActive(e.ctx(t), soRef(m))
	require.NoError(t, err)
	r1, r2 := startRecv(s1), startRecv(s2)
	e.waitStreams(t, 2)
	cancel1()
	assert.Equal(t, codes.Canceled, status.Code(<-r1.end))
	e.waitStreams(t, 1)
	e.export(t, point{name: "x", v: 1})
	v, ok := r2.next(10 * time.Second)
	require.True(t, ok, "the other stream still gets its edge")
	assert.True(t, v)

	baseline := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	for i := range 500 {
		_, err := e.client.StreamIsActive(ctx, soRef(md(fmt.Sprintf("sum(abandoned_%d)", i))))
		require.NoError(t, err)
	}
	e.waitStreams(t, 501)
	cancel() // KEDA goes away without reading
	e.waitStreams(t, 1)
	waitFor(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= baseline+5 })
}

// Item 38: a client that never reads does not delay ingestion or another
// stream's push. (A Send that blocks forever is covered deterministically
// in pkg/scaler TestStreamCoalescesAndSlowClientDoesNotBlockIngest.)
func TestKEDAStreamSlowClient(t *testing.T) {
	e := startKEDA(t, false, nil)
	ctx := e.ctx(t)
	_, err := e.client.StreamIsActive(ctx, soRef(md("sum(slow)"))) // never read
	require.NoError(t, err)
	fast, err := e.client.StreamIsActive(ctx, soRef(md("sum(fast)")))
	require.NoError(t, err)
	r := startRecv(fast)
	e.waitStreams(t, 2)
	for i := range 300 { // edges for the unread stream
		e.export(t, point{name: "slow", v: float64(i % 2)})
	}
	e.export(t, point{name: "fast", v: 1})
	v, ok := r.next(10 * time.Second)
	require.True(t, ok)
	assert.True(t, v)
	require.Positive(t, e.selfMetric(t, "keda_otel_scaler_scaler_pushes_total"))
}

// Item 35 with KEDA's reconnect semantics: invalid metadata ends at once.
func TestKEDAStreamInvalidMetadataEndsAtOnce(t *testing.T) {
	e := startKEDA(t, false, nil)
	for _, m := range []map[string]string{md("sum(x)", "targetValue", "0"), md("sum(x)", "window", "5x"), {"targetValue": "1"}} {
		s, err := e.client.StreamIsActive(e.ctx(t), soRef(m))
		require.NoError(t, err)
		_, err = s.Recv()
		assert.Equal(t, codes.InvalidArgument, status.Code(err))
	}
}
