package scaler

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// fullParse is Prometheus's unrestricted parser, so lowering is tested
// independently of which functions pkg/query implements.
func fullParse(q string) (parser.Expr, error) { return parser.NewParser(parser.Options{}).ParseExpr(q) }

func TestLower(t *testing.T) {
	const w = 7 * time.Second
	for _, tc := range []struct {
		name, q, op, want string
	}{
		{"plain", `sum(x{a="b"})`, opLastOne, `sum(x{a="b"})`},
		{"bare selector summed", `x`, opLastOne, `sum(x)`},
		{"bare selector in parens", `(x{a="b"})`, opLastOne, `sum(x{a="b"})`},
		{"kedify unquoted", `avg(m{a=1, b=2})`, opLastOne, `avg(m{a="1",b="2"})`},
		{
			"kedify slash value", `sum(vllm:num_requests_waiting{model_name=meta-llama/Llama-3.1-8B-Instruct})`, opLastOne,
			`sum(vllm:num_requests_waiting{model_name="meta-llama/Llama-3.1-8B-Instruct"})`,
		},
		{
			"kedify dotted key", `max(vcs_change_duration{vcs.repository.name=otel-add-on})`, opLastOne,
			`max(vcs_change_duration{vcs_repository_name="otel-add-on"})`,
		},
		{"kedify dotted metric", `sum(http.server.duration{a=b})`, opLastOne, `sum(http_server_duration{a="b"})`},
		{"spaces", `max( m )`, opLastOne, `max(m)`},
		{"avg over time", `sum(x)`, opAvg, `sum(avg_over_time(x[7s]))`},
		{"min over time", `x`, opMin, `sum(min_over_time(x[7s]))`},
		{"max over time", `x`, opMax, `sum(max_over_time(x[7s]))`},
		{"count over time", `x`, opCount, `sum(count_over_time(x[7s]))`},
		{"rate", `sum by (a) (c)`, opRate, `sum by (a) (rate(c[7s]))`},
		{"range function kept", `sum(rate(c[1m])) + sum(c)`, opAvg, `sum(rate(c[1m])) + sum(avg_over_time(c[7s]))`},
		{
			"kserve bare", `sum(vllm:num_requests_running{namespace="ns", deployment="d"})`, opLastOne,
			`sum(vllm:num_requests_running{deployment="d",namespace="ns"})`,
		},
		{
			"kserve matchers", `sum(vllm:num_requests_running{model_name="m"}{namespace="ns", deployment="d"})`, opLastOne,
			`sum(vllm:num_requests_running{deployment="d",model_name="m",namespace="ns"})`,
		},
		{
			"kserve agg", `sum(sum(vllm:num_requests_waiting){namespace="ns", deployment="d"})`, opLastOne,
			`sum(sum(vllm:num_requests_waiting{deployment="d",namespace="ns"}))`,
		},
		{
			"kserve avg", `sum(avg(vllm:kv_cache_usage_perc){namespace="ns", deployment="d"})`, opLastOne,
			`sum(avg(vllm:kv_cache_usage_perc{deployment="d",namespace="ns"}))`,
		},
		{
			"kserve rate", `sum(rate(vllm:request_success_total[1m]){namespace="ns", deployment="d"})`, opLastOne,
			`sum(rate(vllm:request_success_total{deployment="d",namespace="ns"}[1m]))`,
		},
		{
			"kserve binary", `sum(vllm:num_requests_waiting + vllm:num_requests_running{namespace="ns", deployment="d"})`, opLastOne,
			`sum(vllm:num_requests_waiting{deployment="d",namespace="ns"} + vllm:num_requests_running{deployment="d",namespace="ns"})`,
		},
		{
			"kserve histogram_quantile", `sum(histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[1m]))){namespace="ns", deployment="d"})`, opLastOne,
			`sum(histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{deployment="d",namespace="ns"}[1m]))))`,
		},
		{
			"kserve conflicting namespace", `sum(x{namespace="other"}{namespace="ns", deployment="d"})`, opLastOne,
			`sum(x{deployment="d",namespace="ns",namespace="other"})`,
		},
		{
			"kserve with operationOverTime", `sum(x{namespace="ns", deployment="d"})`, opAvg,
			`sum(avg_over_time(x{deployment="d",namespace="ns"}[7s]))`,
		},
		{"kserve legacy inside", `sum(x{a=b}{namespace="ns", deployment="d"})`, opLastOne, `sum(x{a="b",deployment="d",namespace="ns"})`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lw, err := lower(fullParse, tc.q, tc.op, w)
			require.NoError(t, err)
			want, err := fullParse(tc.want)
			require.NoError(t, err)
			assert.Equal(t, want.String(), lw.expr.String())
		})
	}
}

func TestLowerErrors(t *testing.T) {
	for _, tc := range []struct{ q, want string }{
		{`sum(x`, "1:6"}, // the parser's position
		{`sum(sum(x{namespace="ns", deployment="d"})`, "1:10"}, // KServe: the position in the whole query
		{`sum(x{a="b"}[5m]`, "parse error"},
	} {
		_, err := lower(fullParse, tc.q, opLastOne, time.Minute)
		require.Error(t, err, tc.q)
		assert.Contains(t, err.Error(), tc.want)
	}
	_, err := lower(fullParse, `sum(sum(x{namespace="ns", deployment="d"})`, opLastOne, time.Minute)
	assert.Contains(t, err.Error(), "InferenceService")
}

func TestRepairLegacyLeavesNumbersAndQuotes(t *testing.T) {
	out, _ := repairLegacy(`sum(x{a="1.5", b='c.d'}) * 0.5`)
	assert.Equal(t, `sum(x{a="1.5", b='c.d'}) * 0.5`, out)
}

// FuzzLower lowers arbitrary text with the parser the scaler uses (the
// engine's, with its length and token limits and its functions): lowering
// never panics, and what it lowers to prints as PromQL that parses again.
// Prometheus's own parser (fullParse) has no limits and is quadratic on
// kilobytes of nesting, so fuzzing lower through it spent the run on
// inputs the scaler refuses before parsing. The limit seeds put the
// branches only kilobyte inputs reach into the baseline coverage (see
// limitSeeds in pkg/query).
//
// go test -run '^$' -fuzz '^FuzzLower$' -fuzztime 30s -fuzzminimizetime 5s ./pkg/scaler
func FuzzLower(f *testing.F) {
	for _, s := range []string{`sum(x)`, `avg(m{a=1, b=2})`, `sum(x{namespace="ns", deployment="d"})`, `max( m )`, `x{vcs.repository.name=otel-add-on}`, `{`, `"`} {
		f.Add(s, "avg")
	}
	tooComplex := strings.Repeat("x ", query.MaxQueryTokens) + "x"
	tooLong := strings.Repeat(" ", query.MaxQueryLength) + "x"
	for _, s := range []string{tooComplex, tooLong, `sum(` + tooComplex + `{namespace="ns", deployment="d"})`} {
		f.Add(s, "avg")
	}
	parse := query.NewEngine(store.New(store.Config{}, store.Settings{})).Parse
	f.Fuzz(func(t *testing.T, q, op string) {
		lw, err := lower(parse, q, op, time.Minute)
		if err != nil {
			return
		}
		if lw.expr == nil {
			t.Fatal("nil expression without error")
		}
		// The lowered query is valid PromQL: it prints and parses again.
		if _, err := fullParse(lw.expr.String()); err != nil {
			t.Fatalf("lowered %q to %q, which does not parse: %v", q, lw.expr.String(), err)
		}
	})
}
