package scaler

import (
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
)

// fullParse is Prometheus's unrestricted parser, so lowering is tested
// independently of which functions pkg/query implements.
func fullParse(q string) (parser.Expr, error) { return parser.NewParser(parser.Options{}).ParseExpr(q) }

func TestRepairLegacyLeavesNumbersAndQuotes(t *testing.T) {
	out, _ := repairLegacy(`sum(x{a="1.5", b='c.d'}) * 0.5`)
	assert.Equal(t, `sum(x{a="1.5", b='c.d'}) * 0.5`, out)
}

func FuzzLower(f *testing.F) {
	for _, s := range []string{`sum(x)`, `avg(m{a=1, b=2})`, `sum(x{namespace="ns", deployment="d"})`, `max( m )`, `x{vcs.repository.name=otel-add-on}`, `{`, `"`} {
		f.Add(s, "avg")
	}
	f.Fuzz(func(t *testing.T, q, op string) {
		lw, err := lower(fullParse, q, op, time.Minute)
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
