package demo

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHistogramQuantileMatchesPromQL(t *testing.T) {
	t.Parallel()
	// The fixture's vllm:time_to_first_token_seconds (cumulative): 1536
	// observations, le=0.5 → 1285, le=0.75 → 1403. histogram_quantile(0.9)
	// interpolates inside (0.5, 0.75]: 0.5 + 0.25 × (1382.4 − 1285) / 118.
	cum := []uint64{0, 0, 0, 0, 3, 26, 84, 159, 848, 1285, 1403, 1454, 1522, 1531, 1533, 1534, 1535, 1536, 1536, 1536, 1536, 1536, 1536}
	h := NewHistogram(ttftBounds)
	var prev uint64
	for i, c := range cum {
		h.Counts[i] = c - prev
		prev = c
	}
	h.Count = 1536
	assert.InDelta(t, 0.5+0.25*(1382.4-1285)/118, h.Quantile(0.9), 1e-12)
	assert.InDelta(t, 0.1+0.15*(768-159)/689.0, h.Quantile(0.5), 1e-12)
	assert.True(t, math.IsNaN(NewHistogram(ttftBounds).Quantile(0.9)), "an empty histogram has no quantile")

	over := NewHistogram(ttftBounds)
	over.Observe(5000)
	assert.InDelta(t, 2560.0, over.Quantile(0.9), 0, "the +Inf bucket answers the highest finite bound")
}

func TestHistogramObserveUsesLeBuckets(t *testing.T) {
	t.Parallel()
	h := NewHistogram([]float64{1, 2})
	for _, v := range []float64{0.5, 1, 1.5, 2, 3} {
		h.Observe(v)
	}
	assert.Equal(t, []uint64{2, 2, 1}, h.Counts, "v == bound falls in that bound's bucket (le)")
	assert.Equal(t, uint64(5), h.Count)
	assert.InDelta(t, 8.0, h.Sum, 1e-12)
	d := h.Sub(NewHistogram([]float64{1, 2}))
	assert.Equal(t, h.Counts, d.Counts)
}

// feed adds n requests of the given sizes at time t.
func feed(e *Engine, t float64, n, prompt, output int) []*Request {
	var rs []*Request
	for range n {
		r := &Request{Arrival: t, Prompt: prompt, Output: output}
		e.Add(r, t)
		rs = append(rs, r)
	}
	return rs
}

// checkInvariants asserts what must hold after every Advance.
func checkInvariants(t *testing.T, e *Engine) {
	t.Helper()
	require.LessOrEqual(t, e.used, e.cfg.KVBlocks, "KV blocks in use never exceed the cache: %v", e)
	require.GreaterOrEqual(t, e.used, 0)
	require.LessOrEqual(t, e.Running(), e.cfg.MaxNumSeqs, "the batch never exceeds max_num_seqs: %v", e)
	held := 0
	for _, r := range e.running {
		held += r.blocks
	}
	require.Equal(t, e.used, held, "every used block belongs to a running request")
	for _, r := range e.waiting {
		require.Zero(t, r.blocks, "a waiting request holds no blocks")
	}
}

func TestEngineQueueGrowsUnderOverloadAndDrains(t *testing.T) {
	t.Parallel()
	e := NewEngine(DefaultEngineConfig(), 0)
	// 30 req/s for 20 s, far above one pod's ~5 req/s.
	var waiting []int
	for i := range 200 {
		now := float64(i) * 0.1
		feed(e, now, 3, 400, 150)
		e.Advance(now + 0.1)
		checkInvariants(t, e)
		if i%50 == 49 {
			waiting = append(waiting, e.Waiting())
		}
	}
	require.Len(t, waiting, 4)
	for i := 1; i < len(waiting); i++ {
		assert.Greater(t, waiting[i], waiting[i-1], "the waiting queue grows while arrivals exceed capacity: %v", waiting)
	}
	assert.Positive(t, e.Running())
	ttftEarly := e.ttft.Clone()
	// The tail of the queue waited longer: later TTFTs are larger.
	for e.Load() > 0 {
		e.Advance(e.clock + 1)
		checkInvariants(t, e)
		require.Less(t, e.clock, 10_000.0, "the engine must drain: %v", e)
	}
	late := e.ttft.Sub(ttftEarly)
	assert.Greater(t, late.Quantile(0.5), ttftEarly.Quantile(0.5), "requests served later waited longer for their first token")
	fin := e.success[reasonStop] + e.success[reasonLength]
	assert.InDelta(t, 600.0, fin, 0, "every request finishes")
	assert.Equal(t, uint64(600), e.ttft.Count, "one TTFT per request")
	assert.Equal(t, uint64(600), e.e2e.Count)
	assert.InDelta(t, 600.0*400, e.promptTokens, 0)
	assert.InDelta(t, 600.0*150, e.generationTokens, 0)
	assert.Zero(t, e.used, "an idle engine holds no KV blocks")
}

func TestEngineUnderloadKeepsQueueEmpty(t *testing.T) {
	t.Parallel()
	e := NewEngine(DefaultEngineConfig(), 0)
	maxWaiting := 0
	for i := range 600 { // 1 req/s for 60 s
		now := float64(i) * 0.1
		if i%10 == 0 {
			feed(e, now, 1, 400, 150)
		}
		e.Advance(now + 0.1)
		checkInvariants(t, e)
		maxWaiting = max(maxWaiting, e.Waiting())
	}
	assert.LessOrEqual(t, maxWaiting, 1, "a lightly loaded engine admits at once")
	assert.Less(t, e.ttft.Quantile(0.9), 0.25, "TTFT stays at one prefill step")
}

func TestEngineBatchBoundedByKVCache(t *testing.T) {
	t.Parallel()
	cfg := DefaultEngineConfig()
	cfg.KVBlocks = 100 // 1,600 tokens
	cfg.MaxNumSeqs = 64
	e := NewEngine(cfg, 0)
	feed(e, 0, 20, 300, 400) // 19 blocks each to start
	maxRunning := 0
	for e.Load() > 0 && e.clock < 1000 {
		e.Advance(e.clock + 0.05)
		checkInvariants(t, e)
		maxRunning = max(maxRunning, e.Running())
	}
	assert.LessOrEqual(t, maxRunning, 5, "five 300-token prompts fill 100 blocks; max_num_seqs is not the bound")
	assert.Positive(t, e.preemptions, "decode growth beyond the cache preempts the newest request")
	assert.InDelta(t, 20.0, e.success[reasonStop]+e.success[reasonLength], 0, "preempted requests are recomputed and finish")
	assert.Equal(t, uint64(20), e.ttft.Count, "TTFT is recorded once even after a preemption")
}

func TestEngineFinishReasonLength(t *testing.T) {
	t.Parallel()
	cfg := DefaultEngineConfig()
	e := NewEngine(cfg, 0)
	feed(e, 0, 1, 10, cfg.MaxTokens)
	feed(e, 0, 1, 10, 5)
	for e.Load() > 0 {
		e.Advance(e.clock + 1)
	}
	assert.InDelta(t, 1.0, e.success[reasonLength], 0)
	assert.InDelta(t, 1.0, e.success[reasonStop], 0)
}

func TestFleetGatewayHoldsUntilReady(t *testing.T) {
	t.Parallel()
	cfg := DefaultFleetConfig()
	f := NewFleet(cfg)
	rate := func(float64) float64 { return 5 }
	f.Advance(10, rate)
	held := f.Pending()
	assert.Greater(t, held, 20, "with no pod the gateway holds every arrival")
	assert.Equal(t, f.Arrived, held)

	f.Scale(2)
	starting, ready, _ := f.Counts()
	assert.Equal(t, 2, starting)
	assert.Zero(t, ready)
	f.Advance(10+cfg.StartupDelay-1, rate)
	assert.Greater(t, f.Pending(), held, "starting pods serve nothing")

	f.Advance(10+cfg.StartupDelay+1, rate)
	_, ready, _ = f.Counts()
	assert.Equal(t, 2, ready)
	assert.Zero(t, f.Pending(), "ready pods drain the gateway")
	assert.GreaterOrEqual(t, f.MaxGatewayWait, cfg.StartupDelay)
	a, b := f.Pods()[0].Engine.Load(), f.Pods()[1].Engine.Load()
	assert.InDelta(t, a, b, 1, "least-loaded routing balances the pods")
}

func TestFleetScaleDownDrainsNewestFirst(t *testing.T) {
	t.Parallel()
	cfg := DefaultFleetConfig()
	f := NewFleet(cfg)
	f.Scale(3)
	rate := func(float64) float64 { return 6 }
	f.Advance(cfg.StartupDelay+5, rate)
	names := []string{f.Pods()[0].Name, f.Pods()[1].Name, f.Pods()[2].Name}

	f.Scale(1)
	_, ready, terminating := f.Counts()
	assert.Equal(t, 1, ready)
	assert.Equal(t, 2, terminating)
	assert.Equal(t, names[0], f.Pods()[0].Name, "the oldest pod stays")
	assert.Equal(t, PodReady, f.Pods()[0].State)

	var gone []*Pod
	for f.Now() < cfg.StartupDelay+5+cfg.TerminationGrace+1 {
		gone = append(gone, f.Advance(f.Now()+1, rate)...)
	}
	require.Len(t, gone, 2, "terminating pods leave once drained or at the grace deadline")
	assert.ElementsMatch(t, names[1:], []string{gone[0].Name, gone[1].Name})
	assert.Len(t, f.Pods(), 1)
	fin, aborted := f.Finished()
	assert.Positive(t, fin, "finished requests of gone pods still count")
	assert.Zero(t, aborted, "30 s are enough to drain a pod's requests")
}

func TestFleetScaleUpCancelsStartingPodsFirst(t *testing.T) {
	t.Parallel()
	f := NewFleet(DefaultFleetConfig())
	f.Scale(1)
	f.Advance(30, func(float64) float64 { return 0 })
	f.Scale(3)
	f.Scale(1)
	starting, ready, terminating := f.Counts()
	assert.Equal(t, [3]int{0, 1, 0}, [3]int{starting, ready, terminating}, "pods that never became ready are removed at once")
}

func TestEnginePreemptsNewestToTheFrontOfTheQueue(t *testing.T) {
	t.Parallel()
	cfg := DefaultEngineConfig()
	cfg.KVBlocks = 10
	e := NewEngine(cfg, 0)
	rs := feed(e, 0, 2, 64, 100) // 4 blocks each; growth needs more
	later := feed(e, 1, 1, 64, 100)
	for e.preemptions == 0 {
		e.Advance(e.clock + 0.01)
		checkInvariants(t, e)
		require.Less(t, e.clock, 100.0, "two growing requests must overflow 10 blocks: %v", e)
	}
	require.NotEmpty(t, e.waiting)
	assert.Same(t, rs[1], e.waiting[0], "the newest running request is preempted and goes back to the front, ahead of %p", later[0])
	assert.Zero(t, rs[1].computed, "preemption by recomputation drops its KV")
	assert.Positive(t, rs[1].generated, "its generated tokens are kept and recomputed")
}
