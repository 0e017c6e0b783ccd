package scaler

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseNumber(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
	}{{"4", 4}, {"4.000000", 4}, {".5", 0.5}, {"+4", 4}, {"600m", 0.6}, {"2k", 2000}, {"1e3", 1000}, {"1Ki", 1024}, {"1M", 1e6}} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseNumber(tc.in)
			require.NoError(t, err)
			assert.InDelta(t, tc.want, got, 1e-12)
		})
	}
	for _, bad := range []string{"NaN", "Inf", "-Inf", "abc", "1x", "m", "1e3k"} {
		_, err := parseNumber(bad)
		assert.Error(t, err, bad)
	}
}

func TestMetricName(t *testing.T) {
	assert.Equal(t, "default-my-so", metricName("Default", "My_SO"))
	assert.Equal(t, "ns", metricName("ns", ""))
	assert.Equal(t, "keda-otel-scaler", metricName("", ""))
	long := metricName("ns", strings.Repeat("a", 300))
	assert.Len(t, long, 200)
	assert.Equal(t, long, metricName("ns", strings.Repeat("a", 300)), "stable")
	assert.NotEqual(t, long, metricName("ns", strings.Repeat("a", 299)+"b"))
}

// TestQueryErrorShowsQueryOnce: a metricQuery that does not parse is
// named once in the error KEDA gets, clipped with its length stated,
// and the parser's position counts in the whole query, also when it is
// inside KServe's wrapper.
func TestQueryErrorShowsQueryOnce(t *testing.T) {
	head := `x{a="` + strings.Repeat("a", 10_000) + `"} +`
	for _, tc := range []struct {
		name, q string
		at      int // where head starts in q
	}{
		{"plain", head, 0},
		{"KServe", `sum(` + head + `{namespace="ns", deployment="d"})`, len("sum(")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newMemEnv(t, Config{})
			_, err := e.s.GetMetricSpec(context.Background(), &externalscaler.ScaledObjectRef{
				Namespace: "ns", Name: "so", ScalerMetadata: map[string]string{"metricQuery": tc.q, "targetValue": "1"},
			})
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			msg := status.Convert(err).Message()
			assert.Equal(t, 1, strings.Count(msg, `x{a=\"aaa`), msg[:min(len(msg), 400)])
			assert.Contains(t, msg, fmt.Sprintf("(%d bytes)", len(tc.q)))
			assert.Less(t, len(msg), 1024)
			// The parser's own position for head alone, moved to where
			// head starts in the query.
			_, perr := fullParse(head)
			require.Error(t, perr)
			var line, col int
			_, scanErr := fmt.Sscanf(perr.Error(), "%d:%d:", &line, &col)
			require.NoError(t, scanErr)
			assert.Contains(t, msg, fmt.Sprintf("%d:%d: parse error", line, col+tc.at))
		})
	}
}
