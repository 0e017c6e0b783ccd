package demo

import (
	"math"
	"math/rand/v2"
	"slices"
)

// PodState is the lifecycle phase of a simulated pod.
type PodState int

// Pod states, in lifecycle order.
const (
	// PodStarting: created, loading the model; serves nothing, exports nothing.
	PodStarting PodState = iota
	// PodReady: receives requests from the gateway and exports metrics.
	PodReady
	// PodTerminating: no new requests; finishes what it holds until the
	// grace period ends, then aborts the rest.
	PodTerminating
)

// Pod is one simulated vLLM pod.
type Pod struct {
	Name    string
	State   PodState
	Created float64 // simulated seconds
	ReadyAt float64
	// Deadline is the end of the termination grace period.
	Deadline float64
	Engine   *Engine
	// Exported is set once the pod has pushed metrics: its series exist
	// in the server and must be ended with stale markers when it goes.
	Exported bool
}

// FleetConfig configures the pods and the gateway.
type FleetConfig struct {
	Engine EngineConfig
	// StartupDelay is how long a new pod loads before it is ready (s).
	StartupDelay float64
	// TerminationGrace is how long a terminating pod may drain (s).
	TerminationGrace float64
	// GatewayCapacity bounds the gateway's pending queue; arrivals beyond
	// it are rejected and counted.
	GatewayCapacity int
	// Seed makes arrivals, request sizes and pod names reproducible.
	Seed uint64
	// Deployment names the pods (Deployment-style names).
	Deployment string
	// Prompt and output lengths are log-normal around these medians.
	PromptMedian, OutputMedian float64
}

// DefaultFleetConfig returns the fleet used by the demo.
func DefaultFleetConfig() FleetConfig {
	return FleetConfig{
		Engine:           DefaultEngineConfig(),
		StartupDelay:     20,
		TerminationGrace: 30,
		GatewayCapacity:  10_000,
		Seed:             1,
		Deployment:       "qwen-predictor",
		PromptMedian:     400,
		OutputMedian:     150,
	}
}

// Fleet is the gateway plus the pods behind it. One goroutine drives it.
type Fleet struct {
	cfg  FleetConfig
	rng  *rand.Rand
	now  float64
	pods []*Pod

	pending   []*Request // held by the gateway while no pod is ready
	unitClock float64    // integrated arrival intensity
	nextUnit  float64    // next arrival when unitClock reaches it

	// Totals for the summary.
	Arrived, Rejected int
	// MaxGatewayWait is the longest time a request waited at the gateway.
	MaxGatewayWait float64

	goneTTFT, goneE2E Histogram // histograms of pods that have gone
	goneAborted       float64
}

// NewFleet returns an empty fleet at simulated time 0.
func NewFleet(cfg FleetConfig) *Fleet {
	f := &Fleet{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x6b65646120)),
		goneTTFT: NewHistogram(ttftBounds),
		goneE2E:  NewHistogram(requestLatencyBounds),
	}
	f.nextUnit = f.rng.ExpFloat64()
	return f
}

// Now returns the fleet's simulated time.
func (f *Fleet) Now() float64 { return f.now }

// Pods returns the current pods; the slice is valid until the next call
// that changes the fleet.
func (f *Fleet) Pods() []*Pod { return f.pods }

// maxSubstep bounds one simulation sub-step (s): arrivals inside it are
// routed at its start.
const maxSubstep = 0.1

// Advance moves the fleet to simulated time to with offered load rate(t)
// (requests per second). It returns the pods that finished terminating;
// they are no longer part of the fleet.
func (f *Fleet) Advance(to float64, rate func(t float64) float64) []*Pod {
	var gone []*Pod
	for f.now < to {
		t1 := min(to, f.now+maxSubstep)
		f.unitClock += max(rate(f.now), 0) * (t1 - f.now)
		for f.unitClock >= f.nextUnit {
			f.nextUnit += f.rng.ExpFloat64()
			f.arrive(f.now)
		}
		for _, p := range f.pods {
			if p.State == PodStarting && t1 >= p.ReadyAt {
				p.State = PodReady
			}
		}
		f.flushGateway(f.now)
		for _, p := range f.pods {
			if p.State != PodStarting {
				p.Engine.Advance(t1)
			}
		}
		f.pods = slices.DeleteFunc(f.pods, func(p *Pod) bool {
			if p.State != PodTerminating || !p.Engine.Idle() && t1 < p.Deadline {
				return false
			}
			p.Engine.AbortAll()
			f.goneAborted += p.Engine.success[reasonAbort]
			f.goneTTFT.Add(p.Engine.ttft)
			f.goneE2E.Add(p.Engine.e2e)
			gone = append(gone, p)
			return true
		})
		f.now = t1
	}
	return gone
}

func (f *Fleet) arrive(t float64) {
	f.Arrived++
	r := &Request{
		Arrival: t,
		Prompt:  f.logNormal(f.cfg.PromptMedian, 0.6, 16, 4000),
		Output:  f.logNormal(f.cfg.OutputMedian, 0.7, 8, f.cfg.Engine.MaxTokens),
	}
	if p := f.route(); p != nil {
		p.Engine.Add(r, t)
		return
	}
	if len(f.pending) >= f.cfg.GatewayCapacity {
		f.Rejected++
		return
	}
	f.pending = append(f.pending, r)
}

func (f *Fleet) logNormal(median, sigma float64, lo, hi int) int {
	v := int(math.Round(median * math.Exp(sigma*f.rng.NormFloat64())))
	return min(max(v, lo), hi)
}

// route picks the ready pod with the fewest waiting plus running requests
// (the production-stack router's least-loaded policy); nil if none is ready.
func (f *Fleet) route() *Pod {
	var best *Pod
	for _, p := range f.pods {
		if p.State == PodReady && (best == nil || p.Engine.Load() < best.Engine.Load()) {
			best = p
		}
	}
	return best
}

func (f *Fleet) flushGateway(t float64) {
	for len(f.pending) > 0 {
		p := f.route()
		if p == nil {
			return
		}
		r := f.pending[0]
		f.pending = f.pending[1:]
		f.MaxGatewayWait = max(f.MaxGatewayWait, t-r.Arrival)
		p.Engine.Add(r, t)
	}
}

// Scale makes the number of starting plus ready pods n, as a ReplicaSet
// would: new pods start loading; surplus pods go starting ones first, then
// the newest ready ones, which drain for the grace period.
func (f *Fleet) Scale(n int) {
	live := 0
	for _, p := range f.pods {
		if p.State != PodTerminating {
			live++
		}
	}
	for ; live < n; live++ {
		f.pods = append(f.pods, &Pod{
			Name:    f.podName(),
			State:   PodStarting,
			Created: f.now,
			ReadyAt: f.now + f.cfg.StartupDelay,
			Engine:  NewEngine(f.cfg.Engine, f.now),
		})
	}
	for _, want := range []PodState{PodStarting, PodReady} {
		for i := len(f.pods) - 1; i >= 0 && live > n; i-- {
			p := f.pods[i]
			if p.State != want {
				continue
			}
			live--
			if want == PodStarting {
				f.pods = slices.Delete(f.pods, i, i+1)
				continue
			}
			p.State = PodTerminating
			p.Deadline = f.now + f.cfg.TerminationGrace
		}
	}
}

const podNameAlphabet = "bcdfghjklmnpqrstvwxz2456789" // Kubernetes' safe characters

func (f *Fleet) podName() string {
	b := []byte(f.cfg.Deployment + "-6f9c8d7b5-")
	for range 5 {
		b = append(b, podNameAlphabet[f.rng.IntN(len(podNameAlphabet))])
	}
	return string(b)
}

// Counts returns the number of starting, ready and terminating pods.
func (f *Fleet) Counts() (starting, ready, terminating int) {
	for _, p := range f.pods {
		switch p.State {
		case PodStarting:
			starting++
		case PodReady:
			ready++
		case PodTerminating:
			terminating++
		}
	}
	return starting, ready, terminating
}

// Pending returns the gateway's queue length.
func (f *Fleet) Pending() int { return len(f.pending) }

// Waiting returns the requests in the pods' waiting queues.
func (f *Fleet) Waiting() int {
	n := 0
	for _, p := range f.pods {
		n += p.Engine.Waiting()
	}
	return n
}

// Running returns the requests in the pods' running batches.
func (f *Fleet) Running() int {
	n := 0
	for _, p := range f.pods {
		n += p.Engine.Running()
	}
	return n
}

// KVUsage returns the mean KV-cache usage of the serving pods (NaN if none).
func (f *Fleet) KVUsage() float64 {
	var sum float64
	n := 0
	for _, p := range f.pods {
		if p.State != PodStarting {
			sum += p.Engine.KVUsage()
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// TTFT returns the fleet-wide cumulative TTFT histogram, gone pods included.
func (f *Fleet) TTFT() Histogram {
	h := f.goneTTFT.Clone()
	for _, p := range f.pods {
		h.Add(p.Engine.ttft)
	}
	return h
}

// Finished returns the requests finished fleet-wide by reason index.
func (f *Fleet) Finished() (ok, aborted float64) {
	h := f.goneE2E.Count
	for _, p := range f.pods {
		h += p.Engine.e2e.Count
		aborted += p.Engine.success[reasonAbort]
	}
	return float64(h), aborted + f.goneAborted
}
