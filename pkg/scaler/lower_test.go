package scaler

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// fullParse is Prometheus's unrestricted parser, so lowering is tested
// independently of which functions pkg/query implements.
func fullParse(q string) (parser.Expr, error) { return parser.NewParser(parser.Options{}).ParseExpr(q) }

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
// go test -run '^$' -fuzz '^FuzzLower$' -fuzztime 30s ./pkg/scaler
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
