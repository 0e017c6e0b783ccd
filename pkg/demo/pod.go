package demo

import (
	"fmt"
	"slices"
)

// EngineConfig sizes one simulated vLLM engine. The defaults describe a
// small model on one GPU: about 20 concurrent requests fit in the KV cache
// and a pod serves about 4 to 5 requests per second.
type EngineConfig struct {
	// KVBlocks is the number of KV-cache blocks (vLLM's num_gpu_blocks).
	KVBlocks int
	// BlockSize is the number of tokens per block (vLLM's block_size, 16).
	BlockSize int
	// MaxNumSeqs bounds the running batch (vLLM's max_num_seqs).
	MaxNumSeqs int
	// MaxBatchedTokens is the token budget of one engine step
	// (max_num_batched_tokens): decode tokens plus prefill chunks.
	MaxBatchedTokens int
	// StepBase, StepPerSeq and StepPerPrefillToken model the duration of
	// one engine step in simulated seconds: a fixed cost, a cost per
	// scheduled sequence and a cost per prefill token.
	StepBase, StepPerSeq, StepPerPrefillToken float64
	// MaxTokens is the request's max_tokens; a request that reaches it
	// finishes with reason "length".
	MaxTokens int
}

// DefaultEngineConfig returns the engine used by the demo.
func DefaultEngineConfig() EngineConfig {
	return EngineConfig{
		KVBlocks:            768, // 12,288 tokens
		BlockSize:           16,
		MaxNumSeqs:          48,
		MaxBatchedTokens:    2048,
		StepBase:            0.015,
		StepPerSeq:          0.00035,
		StepPerPrefillToken: 0.00005,
		MaxTokens:           512,
	}
}

// Finished reasons of vllm:request_success_total, all exported from start.
var finishedReasons = [...]string{"stop", "length", "abort", "error", "repetition"}

const (
	reasonStop   = 0
	reasonLength = 1
	reasonAbort  = 2
)

// Request is one inference request. Times are simulated seconds.
type Request struct {
	// Arrival is when the request reached the gateway; EngineArrival when
	// the engine received it (vLLM measures TTFT and e2e from there).
	Arrival, EngineArrival float64
	// Prompt is the prompt length; Output the number of tokens the request
	// will generate before it stops (== MaxTokens means it hits the limit).
	Prompt, Output int

	computed   int     // tokens whose KV is in the cache
	generated  int     // output tokens sampled so far
	blocks     int     // KV blocks held
	scheduled  float64 // first time it was scheduled; 0 = never
	firstToken float64 // when the first token was sampled; 0 = not yet
}

// prefillEnd is the number of tokens that must be computed before the next
// token can be sampled: the prompt, plus every output token but the last
// after a preemption wiped the cache.
func (r *Request) prefillEnd() int {
	if r.generated == 0 {
		return r.Prompt
	}
	return r.Prompt + r.generated - 1
}

// Engine is one vLLM engine (one pod, engine "0"). It is driven by one
// goroutine; it has no locks.
type Engine struct {
	cfg   EngineConfig
	clock float64 // simulated time the engine has executed up to

	waiting []*Request // FCFS; preempted requests go back to the front
	running []*Request // admission order; the newest is preempted first
	used    int        // KV blocks in use

	// Cumulative metrics, as the pod's /metrics would show them.
	promptTokens, generationTokens float64
	preemptions                    float64
	success                        [len(finishedReasons)]float64
	ttft, e2e, queueTime           Histogram

	batch []scheduled // scratch of step, reused
}

// NewEngine returns an idle engine whose clock starts at now.
func NewEngine(cfg EngineConfig, now float64) *Engine {
	return &Engine{
		cfg:       cfg,
		clock:     now,
		ttft:      NewHistogram(ttftBounds),
		e2e:       NewHistogram(requestLatencyBounds),
		queueTime: NewHistogram(requestLatencyBounds),
	}
}

// Add enqueues a request that arrives at the engine at now.
func (e *Engine) Add(r *Request, now float64) {
	r.EngineArrival = now
	e.waiting = append(e.waiting, r)
}

// Waiting returns the number of requests in the waiting queue.
func (e *Engine) Waiting() int { return len(e.waiting) }

// Running returns the number of requests in the running batch.
func (e *Engine) Running() int { return len(e.running) }

// KVUsage returns the fraction of KV-cache blocks in use (0 to 1), like
// vllm:kv_cache_usage_perc.
func (e *Engine) KVUsage() float64 { return float64(e.used) / float64(e.cfg.KVBlocks) }

// Load returns waiting plus running, the gateway's routing key.
func (e *Engine) Load() int { return len(e.waiting) + len(e.running) }

// Idle reports whether the engine holds no request.
func (e *Engine) Idle() bool { return e.Load() == 0 }

// Advance runs engine steps until the engine's clock reaches to. An idle
// engine jumps to to. A step that starts before to may end after it.
func (e *Engine) Advance(to float64) {
	for e.clock < to {
		if e.Idle() {
			e.clock = to
			return
		}
		e.step()
	}
}

// AbortAll finishes every held request with reason "abort" (the pod was
// killed at the end of its grace period) and returns how many there were.
func (e *Engine) AbortAll() int {
	n := len(e.waiting) + len(e.running)
	for _, r := range e.running {
		e.free(r)
	}
	e.success[reasonAbort] += float64(n)
	e.waiting, e.running = nil, nil
	return n
}

func blocksFor(tokens, blockSize int) int { return (tokens + blockSize - 1) / blockSize }

// reserve grows r's block allocation to hold tokens; false if the cache is full.
func (e *Engine) reserve(r *Request, tokens int) bool {
	need := blocksFor(tokens, e.cfg.BlockSize) - r.blocks
	if need <= 0 {
		return true
	}
	if e.used+need > e.cfg.KVBlocks {
		return false
	}
	e.used += need
	r.blocks += need
	return true
}

func (e *Engine) free(r *Request) {
	e.used -= r.blocks
	r.blocks = 0
}

type scheduled struct {
	r      *Request
	tokens int // prefill chunk, or 1 for a decode step
}

// step is one engine iteration of vLLM's V1 scheduler, in outline: first
// the running requests (decode one token, or the next prefill chunk),
// preempting the newest running request by recomputation when the KV cache
// cannot grow; then, if nothing was preempted, waiting requests in FCFS
// order while the batch, the token budget and the cache allow.
func (e *Engine) step() {
	budget := e.cfg.MaxBatchedTokens
	batch := e.batch[:0]
	defer func() { e.batch = batch[:0] }()
	prefillTokens := 0
	preempted := false

	for i := 0; i < len(e.running) && budget > 0; i++ {
		r := e.running[i]
		n := 1
		prefill := r.computed < r.prefillEnd()
		if prefill {
			n = min(r.prefillEnd()-r.computed, budget)
		}
		for !e.reserve(r, r.computed+n) {
			victim := e.running[len(e.running)-1]
			e.running = e.running[:len(e.running)-1]
			e.free(victim)
			victim.computed = 0
			e.waiting = slices.Insert(e.waiting, 0, victim)
			e.preemptions++
			preempted = true
			if victim == r {
				n = 0
				break
			}
		}
		if n == 0 {
			break // r itself was preempted; everything after it already was
		}
		batch = append(batch, scheduled{r, n})
		budget -= n
		if prefill {
			prefillTokens += n
		}
	}

	if !preempted {
		for len(e.waiting) > 0 && len(e.running) < e.cfg.MaxNumSeqs && budget > 0 {
			r := e.waiting[0]
			n := min(r.prefillEnd()-r.computed, budget)
			if !e.reserve(r, r.computed+n) {
				break // the head does not fit: FCFS, nobody overtakes it
			}
			e.waiting = e.waiting[1:]
			e.running = append(e.running, r)
			if r.scheduled == 0 {
				r.scheduled = e.clock
				e.queueTime.Observe(e.clock - r.EngineArrival)
			}
			batch = append(batch, scheduled{r, n})
			budget -= n
			prefillTokens += n
		}
	}
	if len(batch) == 0 {
		// Nothing fits even alone: drop the head so the engine cannot
		// wedge (vLLM rejects prompts longer than the cache at admission).
		if !preempted && len(e.waiting) > 0 && len(e.running) == 0 {
			e.waiting = e.waiting[1:]
			e.success[reasonAbort]++
		}
		return
	}

	e.clock += e.cfg.StepBase + e.cfg.StepPerSeq*float64(len(batch)) + e.cfg.StepPerPrefillToken*float64(prefillTokens)
	done := 0
	for _, s := range batch {
		r := s.r
		r.computed += s.tokens
		if r.computed < r.prefillEnd() {
			continue // a chunk of a longer prefill
		}
		r.generated++
		e.generationTokens++
		if r.generated == 1 {
			r.firstToken = e.clock
			e.promptTokens += float64(r.Prompt)
			e.ttft.Observe(e.clock - r.EngineArrival)
		}
		if r.generated >= r.Output {
			reason := reasonStop
			if r.Output >= e.cfg.MaxTokens {
				reason = reasonLength
			}
			e.success[reason]++
			e.e2e.Observe(e.clock - r.EngineArrival)
			e.free(r)
			r.computed = -1 // marks finished for the sweep below
			done++
		}
	}
	if done > 0 {
		e.running = slices.DeleteFunc(e.running, func(r *Request) bool { return r.computed < 0 })
	}
}

// String summarises the engine for test failures.
func (e *Engine) String() string {
	return fmt.Sprintf("engine{t=%.2f waiting=%d running=%d kv=%d/%d}", e.clock, len(e.waiting), len(e.running), e.used, e.cfg.KVBlocks)
}
