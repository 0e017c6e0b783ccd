package demo

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestDesiredReplicas(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		metricType string
		v, target  float64
		current    int
		want       int
	}{
		// keda-contract.md §6 examples.
		{"sum running 6, target 2", AverageValue, 6, 2, 1, 3},
		{"sum running 12, target 4", AverageValue, 12, 4, 2, 3},
		{"avg under AverageValue under-scales", AverageValue, 4, 4, 3, 1},
		{"kv sum 2.7, target 0.5", AverageValue, 2.7, 0.5, 3, 6},
		{"inside tolerance up", AverageValue, 10.5, 5, 2, 2},  // ratio 1.05
		{"inside tolerance down", AverageValue, 9.1, 5, 2, 2}, // ratio 0.91
		{"just outside tolerance", AverageValue, 11.1, 5, 2, 3},
		{"zero value scales to zero proposal", AverageValue, 0, 5, 4, 0},
		{"value type scales with current", Value, 0.9, 0.6, 2, 3},
		{"value type inside tolerance", Value, 0.63, 0.6, 4, 4},
		{"value type down", Value, 0.2, 0.6, 6, 2},
		{"no replicas: HPA does not act", AverageValue, 100, 1, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, DesiredReplicas(tc.metricType, tc.v, tc.target, tc.current, 0.1))
		})
	}
}

func TestStabilizer(t *testing.T) {
	t.Parallel()
	b := HPABehavior{Tolerance: 0.1, UpWindow: 0, DownWindow: 60, MinReplicas: 1, MaxReplicas: 8}
	type step struct {
		t                float64
		desired, current int
		want             int
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"scale-up is immediate", []step{{0, 3, 1, 3}}},
		{"scale-up adds at most max(4, 100%) per sync", []step{{0, 20, 1, 5}, {15, 20, 5, 8}}},
		{"scale-down waits for the window", []step{
			{0, 6, 6, 6}, {15, 2, 6, 6}, {30, 2, 6, 6}, {45, 2, 6, 6}, {60, 2, 6, 2},
		}},
		{"scale-down goes to the window's highest recommendation", []step{
			{0, 6, 6, 6}, {15, 4, 6, 6}, {30, 2, 6, 6}, {61, 2, 6, 4}, {76, 2, 4, 2},
		}},
		{"min clamps", []step{{0, 0, 1, 1}}},
		{"max clamps", []step{{0, 7, 6, 7}, {15, 30, 7, 8}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var s Stabilizer
			for i, st := range tc.steps {
				assert.Equal(t, st.want, s.Next(st.t, st.desired, st.current, b), "step %d at t=%g", i, st.t)
			}
		})
	}
}

func TestStabilizerResetForgetsHistory(t *testing.T) {
	t.Parallel()
	b := HPABehavior{DownWindow: 60, MinReplicas: 1, MaxReplicas: 8}
	var s Stabilizer
	assert.Equal(t, 6, s.Next(0, 6, 2, b))
	s.Reset()
	assert.Equal(t, 2, s.Next(10, 2, 1, b), "after scale to zero the old high recommendation must not hold")
}
