package demo

import (
	"math"
	"slices"
)

// Metric types of a KEDA trigger (the trigger's metricType field).
const (
	AverageValue = "AverageValue"
	Value        = "Value"
)

// DesiredReplicas is the HPA's replica count for one external metric
// (kubernetes pkg/controller/podautoscaler/replica_calculator.go):
//
//   - AverageValue: usage ratio V / (T × current); outside the tolerance the
//     answer is ceil(V / T), a fleet total divided by the per-pod target.
//   - Value: usage ratio V / T; outside the tolerance ceil(ratio × current).
//
// Inside the tolerance (|ratio − 1| <= tolerance) the count is unchanged.
// current must be >= 1: the HPA does not run at zero replicas.
func DesiredReplicas(metricType string, v, target float64, current int, tolerance float64) int {
	if current < 1 || target <= 0 || math.IsNaN(v) {
		return current
	}
	var ratio float64
	if metricType == Value {
		ratio = v / target
	} else {
		ratio = v / (target * float64(current))
	}
	if math.Abs(ratio-1) <= tolerance {
		return current
	}
	if metricType == Value {
		return int(math.Ceil(ratio * float64(current)))
	}
	return int(math.Ceil(v / target))
}

// HPABehavior is the part of autoscaling/v2 behavior the demo applies.
type HPABehavior struct {
	// Tolerance is the HPA's --horizontal-pod-autoscaler-tolerance (0.1).
	Tolerance float64
	// UpWindow and DownWindow are the scale-up and scale-down
	// stabilisation windows in simulated seconds (defaults 0 and 300;
	// the demo shortens the latter).
	UpWindow, DownWindow float64
	// MinReplicas and MaxReplicas bound the result. The HPA that KEDA
	// creates has minReplicas max(minReplicaCount, 1).
	MinReplicas, MaxReplicas int
}

type recommendation struct {
	t float64
	n int
}

// Stabilizer keeps the HPA's recommendation history for one target.
type Stabilizer struct {
	recs []recommendation
}

// Next turns this sync's raw desired count into the replica count the HPA
// sets, as stabilizeRecommendationWithBehaviors and the default scaling
// policies do:
//
//  1. the scale-up limit is the smallest recommendation inside UpWindow, the
//     scale-down limit the largest inside DownWindow (both include this one);
//     the result is current moved to within [upLimit, downLimit];
//  2. a scale-up adds at most max(4 pods, 100 %) per sync (the default
//     scale-up policies, one period per sync), a scale-down has no rate limit
//     beyond the window (the default policy allows 100 %);
//  3. the result is clamped to [MinReplicas, MaxReplicas].
func (s *Stabilizer) Next(now float64, desired, current int, b HPABehavior) int {
	up, down := desired, desired
	for _, r := range s.recs {
		if r.t > now-b.UpWindow {
			up = min(up, r.n)
		}
		if r.t > now-b.DownWindow {
			down = max(down, r.n)
		}
	}
	horizon := now - max(b.UpWindow, b.DownWindow)
	s.recs = slices.DeleteFunc(s.recs, func(r recommendation) bool { return r.t <= horizon })
	s.recs = append(s.recs, recommendation{now, desired})

	n := current
	if n < up {
		n = up
	}
	if n > down {
		n = down
	}
	if n > current {
		n = min(n, max(2*current, current+4))
	}
	return min(max(n, b.MinReplicas), b.MaxReplicas)
}

// Reset forgets the history, as when KEDA scales the target to zero and
// the HPA stops acting on it.
func (s *Stabilizer) Reset() { s.recs = s.recs[:0] }
