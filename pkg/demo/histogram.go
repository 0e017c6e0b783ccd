package demo

import (
	"math"
	"slices"
)

// vLLM's bucket bounds (vllm/v1/metrics/loggers.py), without +Inf.
var (
	// ttftBounds are the bounds of vllm:time_to_first_token_seconds.
	ttftBounds = []float64{
		0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
		1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
	}
	// requestLatencyBounds are the bounds of vllm:e2e_request_latency_seconds
	// and of the request_{queue,inference,prefill,decode}_time_seconds family.
	requestLatencyBounds = []float64{
		0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
		40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
	}
)

// Histogram is a fixed-bucket histogram as prometheus_client keeps it:
// Counts[i] counts observations v <= Bounds[i] and > Bounds[i-1]; the last
// element of Counts is the +Inf bucket. Counts are not cumulative (OTLP's
// layout).
type Histogram struct {
	Bounds []float64
	Counts []uint64
	Sum    float64
	Count  uint64
}

// NewHistogram returns an empty histogram over bounds, which must ascend.
// bounds is shared, never modified.
func NewHistogram(bounds []float64) Histogram {
	return Histogram{Bounds: bounds, Counts: make([]uint64, len(bounds)+1)}
}

// Observe adds one observation.
func (h *Histogram) Observe(v float64) {
	i, _ := slices.BinarySearch(h.Bounds, v) // first bound >= v: le semantics
	h.Counts[i]++
	h.Sum += v
	h.Count++
}

// Clone returns a deep copy.
func (h Histogram) Clone() Histogram {
	h.Counts = slices.Clone(h.Counts)
	return h
}

// Add adds o's observations to h; both must have the same bounds.
func (h *Histogram) Add(o Histogram) {
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.Sum += o.Sum
	h.Count += o.Count
}

// Sub returns h minus an earlier snapshot of the same histogram.
func (h Histogram) Sub(earlier Histogram) Histogram {
	out := h.Clone()
	if len(earlier.Counts) != len(h.Counts) {
		return out
	}
	for i := range out.Counts {
		out.Counts[i] -= earlier.Counts[i]
	}
	out.Sum -= earlier.Sum
	out.Count -= earlier.Count
	return out
}

// Quantile estimates the q-quantile as PromQL's histogram_quantile does:
// linear interpolation inside the bucket, 0 as the lower edge of the first
// bucket, and the highest finite bound when the rank falls in +Inf. It
// returns NaN for an empty histogram.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	q = min(max(q, 0), 1)
	rank := q * float64(h.Count)
	var cum float64
	for i, c := range h.Counts {
		prev := cum
		cum += float64(c)
		if cum < rank || c == 0 {
			continue
		}
		if i == len(h.Bounds) {
			return h.Bounds[len(h.Bounds)-1]
		}
		lower := 0.0
		if i > 0 {
			lower = h.Bounds[i-1]
		}
		return lower + (h.Bounds[i]-lower)*(rank-prev)/float64(c)
	}
	return h.Bounds[len(h.Bounds)-1]
}
