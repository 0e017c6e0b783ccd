package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestStatusCommand: after KEDA's calls, `status --server` prints one row
// per trigger with its value, state, series and last error.
func TestStatusCommand(t *testing.T) {
	a := startServer(t)
	conn, err := grpc.NewClient(a.Scaler, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	client := externalscaler.NewExternalScalerClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ref := func(name, q string) *externalscaler.ScaledObjectRef {
		return &externalscaler.ScaledObjectRef{Namespace: "llm", Name: name, ScalerMetadata: map[string]string{
			"metricQuery": q, "targetValue": "4", "activationThreshold": "5", "apiToken": "SECRET-TOKEN",
		}}
	}
	mv, err := client.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref("qwen", `sum(vllm:num_requests_waiting{model_name="qwen"})`)})
	require.NoError(t, err)
	require.InDelta(t, 7, mv.GetMetricValues()[0].GetMetricValueFloat(), 0)
	_, err = client.IsActive(ctx, ref("broken", `vllm:num_requests_waiting * 2`))
	require.Error(t, err)

	code, out, errOut := runCLI(t, "status", "--server", "http://"+a.HTTP)
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	assert.Contains(t, lines[0], "NAMESPACE/NAME")
	assert.Contains(t, lines[0], "LAST ERROR")
	assert.Contains(t, lines[1], "llm/broken")
	assert.Contains(t, lines[1], "error")
	assert.Contains(t, lines[1], "FailedPrecondition")
	assert.Contains(t, lines[2], "llm/qwen")
	assert.Regexp(t, `\sactive\s+7\s+`, lines[2], "7 > activation 5")
	assert.Contains(t, lines[2], "4/5")
	assert.Regexp(t, `\s2\s+sum\(`, lines[2], "two series selected")
	assert.NotContains(t, out, "SECRET-TOKEN")

	code, out, _ = runCLI(t, "status", "--server", "http://"+a.HTTP, "--name", "qwen", "--json")
	require.Equal(t, 0, code)
	assert.Contains(t, out, `"name": "qwen"`)
	assert.Contains(t, out, `"apiToken"`)
	assert.NotContains(t, out, "SECRET-TOKEN")

	code, _, errOut = runCLI(t, "status", "--server", "http://"+a.HTTP, "--limit", "5000")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "bad_data")
	code, _, errOut = runCLI(t, "status", "--server", "http://127.0.0.1:1")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "127.0.0.1:1")
}
