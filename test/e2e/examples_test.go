package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"
)

// exampleTrigger is one trigger of a ScaledObject under examples/.
type exampleTrigger struct {
	file, name, typ string
	ns, so          string
	metadata        map[string]string
}

func exampleTriggers(t *testing.T) []exampleTrigger {
	t.Helper()
	files, err := filepath.Glob("../../examples/*/*.yaml")
	require.NoError(t, err)
	var out []exampleTrigger
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, doc := range bytes.Split(raw, []byte("\n---")) {
			var so struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name      string `json:"name"`
					Namespace string `json:"namespace"`
				} `json:"metadata"`
				Spec struct {
					Triggers []struct {
						Type     string            `json:"type"`
						Name     string            `json:"name"`
						Metadata map[string]string `json:"metadata"`
					} `json:"triggers"`
				} `json:"spec"`
			}
			if yaml.Unmarshal(doc, &so) != nil || so.Kind != "ScaledObject" {
				continue
			}
			for _, tr := range so.Spec.Triggers {
				out = append(out, exampleTrigger{f, tr.Name, tr.Type, so.Metadata.Namespace, so.Metadata.Name, tr.Metadata})
			}
		}
	}
	return out
}

// TestExampleTriggersAccepted sends every trigger of the example
// ScaledObjects to the real scaler as KEDA would (GetMetricSpec, GetMetrics,
// IsActive, and StreamIsActive for external-push): each is accepted, and with
// no data yet answers 0 / inactive.
func TestExampleTriggersAccepted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the scaler")
	}
	_, scalerBin := tools(t)
	args := []string{"--otlp-grpc-addr=127.0.0.1:0", "--scaler-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0", "--log-format=json"}
	if ok, err := scalerHasFlag(scalerBin, "warmup"); err == nil && ok {
		args = append(args, "--warmup=0")
	}
	srv := startProc(t, "scaler", scalerBin, args, []string{"PATH=" + os.Getenv("PATH")})
	keda := dialKEDA(t, waitServing(t, srv, 30*time.Second).Scaler)

	trs := exampleTriggers(t)
	require.GreaterOrEqual(t, len(trs), 7, "example triggers found")
	for _, tr := range trs {
		t.Run(filepath.Base(tr.file)+"/"+tr.name, func(t *testing.T) {
			ref := &externalscaler.ScaledObjectRef{Name: tr.so, Namespace: tr.ns, ScalerMetadata: tr.metadata}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			spec, err := keda.c.GetMetricSpec(ctx, ref)
			if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument &&
				strings.Contains(st.Message(), "unknown function") {
				// The query needs PromQL functions (rate, histogram_quantile)
				// this scaler build does not have yet.
				t.Skipf("scaler build lacks a function this example uses: %s", st.Message())
			}
			require.NoError(t, err)
			require.Len(t, spec.MetricSpecs, 1)
			mv, err := keda.c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref, MetricName: spec.MetricSpecs[0].MetricName})
			require.NoError(t, err)
			require.Len(t, mv.MetricValues, 1)
			assert.Zero(t, mv.MetricValues[0].MetricValueFloat, "no data yet")
			act, err := keda.c.IsActive(ctx, ref)
			require.NoError(t, err)
			assert.False(t, act.Result)
			if tr.typ == "external-push" {
				sctx, scancel := context.WithCancel(ctx)
				stream, err := keda.c.StreamIsActive(sctx, ref)
				require.NoError(t, err)
				// An accepted stream stays open and silent while inactive; a
				// rejected one ends at once with InvalidArgument.
				errc := make(chan error, 1)
				go func() {
					_, err := stream.Recv()
					errc <- err
				}()
				select {
				case err := <-errc:
					t.Fatalf("stream ended while inactive: %v", err)
				case <-time.After(300 * time.Millisecond):
				}
				scancel()
				assert.Equal(t, codes.Canceled, status.Code(<-errc), "the stream ends with the client's cancel")
			}
		})
	}
}
