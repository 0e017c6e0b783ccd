package demo

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunSpikeScalesUpAndDown runs the whole demo (real server, OTLP over
// gRPC, KEDA API) for a ten-minute simulated spike compressed into 10 s of
// wall-clock time, and checks the story the control loop must tell:
// activation from zero through StreamIsActive, scale-out under the spike,
// scale-in after it, and scale to zero after the cooldown.
func TestRunSpikeScalesUpAndDown(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for 10 s of wall-clock time")
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{
		Profile:  "spike",
		Duration: 10 * time.Second,
		Speed:    60, // 600 simulated seconds
		Out:      t.TempDir(),
		Stdout:   &out,
	})
	t.Log("\n" + out.String())
	require.NoError(t, err)
	require.NotEmpty(t, res.Samples)
	require.NotEmpty(t, res.Events)

	// Scale from zero happens through the push stream, with no pod (and so
	// no vLLM series) in existence: the gateway's signal activates.
	first := res.Events[0]
	assert.Equal(t, "push", first.Source, "the first activation comes from StreamIsActive: %v", first)
	assert.Equal(t, 0, first.From)
	assert.Equal(t, 1, first.To)
	assert.Greater(t, first.T, 0.05*res.SimEnd, "nothing activates before load arrives")

	phase := func(name string) PhaseStats {
		for _, p := range res.Phases() {
			if p.Name == name {
				return p
			}
		}
		t.Fatalf("no phase %q", name)
		return PhaseStats{}
	}
	base, spike, after := phase("base"), phase("spike"), phase("after")
	assert.GreaterOrEqual(t, spike.MaxDesired, 4, "the HPA scales out under the spike")
	assert.Greater(t, spike.MaxDesired, base.MaxDesired, "the spike needs more replicas than the base load")
	assert.GreaterOrEqual(t, spike.MaxReady, 4, "the new pods become ready during the spike")
	assert.Less(t, after.EndReady, spike.MaxReady, "after the spike the HPA scales back in once the stabilisation window passes")

	last := res.Samples[len(res.Samples)-1]
	assert.Equal(t, 0, last.Desired, "after the cooldown KEDA scales to zero")
	lastEvent := res.Events[len(res.Events)-1]
	assert.Equal(t, "cooldown", lastEvent.Source)
	assert.Equal(t, 0, lastEvent.To)

	assert.Zero(t, res.Rejected, "the gateway never overflows")
	assert.Positive(t, res.Finished)
	assert.Zero(t, res.RPCErrors, "every KEDA call succeeded")
	assert.Positive(t, res.Pushes, "StreamIsActive delivered true")
	assert.Contains(t, res.Exports, " 0 failed", "every OTLP export reached the server")

	requireSVGFile(t, res.SVGPath)
	requirePNGFile(t, res.PNGPath)
	assert.Contains(t, out.String(), res.SVGPath, "the picture paths are printed")
	assert.Contains(t, out.String(), res.PNGPath)
}

func TestRunRejectsBadOptions(t *testing.T) {
	t.Parallel()
	_, err := Run(context.Background(), Options{Profile: "tsunami"})
	require.ErrorContains(t, err, `unknown profile "tsunami"`)
	_, err = Run(context.Background(), Options{MetricType: "Utilization"})
	require.ErrorContains(t, err, "AverageValue or Value")
}

func TestRunReportsAnInvalidQuery(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	_, err := Run(context.Background(), Options{Query: "sum(", Duration: time.Second, Out: t.TempDir(), Stdout: &out})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "InvalidArgument", "the server's GetMetricSpec rejects the trigger: %v", err)
}
