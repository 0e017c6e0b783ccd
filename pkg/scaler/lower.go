package scaler

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/parser/posrange"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
)

// kserveWrapper is the shape KServe >= v0.16 gives every metricQuery:
// sum(<q>{namespace="…", deployment="…"}) (keda-contract.md §10.2).
var kserveWrapper = regexp.MustCompile(`(?s)^sum\s*\((.+)\{\s*namespace\s*=\s*"([^"]*)"\s*,\s*deployment\s*=\s*"([^"]*)"\s*\}\s*\)$`)

// lowering is the result of normalising a trigger's query.
type lowering struct {
	expr parser.Expr
	// kserve is set when the KServe wrapper was unwrapped; rewritten then
	// holds the query that is evaluated instead. outer are the wrapper's
	// matchers.
	kserve bool
	outer  []*labels.Matcher
	// repaired is set when the legacy repair made the query parse;
	// repairedText is what was parsed.
	repaired     bool
	repairedText string
	// summed is set when a bare selector at the root was summed.
	summed    bool
	rewritten string
}

// lower normalises metricQuery in the order of keda-contract.md §9: KServe
// unwrapping, parse (with the legacy repair on failure), the KServe
// matchers, the default sum of a bare selector, then operationOverTime.
// parse is the engine's parser; the error is the problem text for the
// metricQuery key.
func lower(parse func(string) (parser.Expr, error), q, op string, window time.Duration) (lowering, error) {
	var lw lowering
	full := strings.TrimSpace(q)
	text := full
	at := 0 // where text starts in full
	var outer []*labels.Matcher
	if m := kserveWrapper.FindStringSubmatchIndex(full); m != nil {
		lw.kserve = true
		inner := full[m[2]:m[3]]
		text = strings.TrimSpace(inner)
		at = m[2] + strings.Index(inner, text)
		outer = []*labels.Matcher{
			labels.MustNewMatcher(labels.MatchEqual, "namespace", full[m[4]:m[5]]),
			labels.MustNewMatcher(labels.MatchEqual, "deployment", full[m[6]:m[7]]),
		}
		lw.outer = outer
	}
	expr, err := parse(text)
	if err != nil {
		if fixed, changed := repairLegacy(text); changed {
			if e2, err2 := parse(fixed); err2 == nil {
				expr, err, lw.repaired, lw.repairedText = e2, nil, true, fixed
			}
		}
	}
	if err != nil {
		if lw.kserve {
			// The caller shows the whole query; the positions are made
			// to count in it, not in the wrapped expression.
			shiftPositions(err, full, at)
			return lw, fmt.Errorf("KServe-generated query: the expression it wraps is not valid PromQL (%s): the InferenceService's autoScaling query must be a PromQL expression such as vllm:num_requests_running", parseProblem(err))
		}
		return lw, err
	}
	if lw.kserve {
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				for _, m := range outer {
					vs.LabelMatchers = append(vs.LabelMatchers, labels.MustNewMatcher(m.Type, m.Name, m.Value))
				}
			}
			return nil
		})
		expr = &parser.AggregateExpr{Op: parser.SUM, Expr: expr, PosRange: expr.PositionRange()}
	}
	// A bare selector at the root is summed, as the older add-on did.
	if vs, ok := unwrapParens(expr).(*parser.VectorSelector); ok {
		expr = &parser.AggregateExpr{Op: parser.SUM, Expr: vs, PosRange: vs.PosRange}
		lw.summed = true
	}
	if fn, ok := overTimeFunc[op]; ok {
		expr = rewriteOverTime(expr, parser.Functions[fn], window)
	}
	lw.expr = expr
	if lw.kserve || lw.repaired || op != opLastOne {
		lw.rewritten = expr.String()
	}
	return lw, nil
}

// parseProblem is err's text without the query a *query.ParseError
// repeats: the parser's message, with its positions, for messages that
// show the query already.
func parseProblem(err error) string {
	var pe *query.ParseError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// shiftPositions moves the positions of the parse or unsupported-construct
// error err by at bytes, and makes parse positions count lines and
// columns in full, the text the failed one starts at byte at of.
func shiftPositions(err error, full string, at int) {
	parser.EnrichParseError(err, func(pe *parser.ParseErr) {
		pe.PositionRange.Start += posrange.Pos(at)
		pe.PositionRange.End += posrange.Pos(at)
		pe.Query = full
	})
	var ue *query.UnsupportedError
	if errors.As(err, &ue) {
		ue.Pos.Start += posrange.Pos(at)
		ue.Pos.End += posrange.Pos(at)
	}
}

// notes says in words what lowering changed, in the order it was done;
// none when the query is evaluated as written. op and window are the
// operationOverTime and window lowering applied.
func (lw lowering) notes(op string, window time.Duration) []string {
	var n []string
	if lw.kserve {
		ms := make([]string, len(lw.outer))
		for i, m := range lw.outer {
			ms[i] = m.String()
		}
		n = append(n, fmt.Sprintf("KServe's sum(<query>{%s}) wrapper was unwrapped: its matchers were added to every selector of <query> and the result summed (docs/keda-contract.md §10.2)",
			strings.Join(ms, ", ")))
	}
	if lw.repaired {
		n = append(n, fmt.Sprintf("an older query form was repaired (unquoted label values quoted, dotted names escaped) and parsed as %s (docs/keda-contract.md §9)", lw.repairedText))
	}
	if lw.summed {
		n = append(n, "a bare selector is summed, as the older add-on did (docs/keda-contract.md §9)")
	}
	if fn, ok := overTimeFunc[op]; ok {
		n = append(n, fmt.Sprintf("operationOverTime %s: every instant selector s not already inside a range function became %s(s[%s]) (window)", op, fn, model.Duration(window)))
	}
	return n
}

func unwrapParens(e parser.Expr) parser.Expr {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			return e
		}
		e = p.Expr
	}
}

// rewriteOverTime replaces every instant selector that is not already the
// argument of a range function (inside a range selector or a subquery)
// with fn(sel[window]).
func rewriteOverTime(e parser.Expr, fn *parser.Function, window time.Duration) parser.Expr {
	switch n := e.(type) {
	case *parser.VectorSelector:
		return &parser.Call{
			Func:     fn,
			Args:     parser.Expressions{&parser.MatrixSelector{VectorSelector: n, Range: window, EndPos: n.PosRange.End}},
			PosRange: n.PosRange,
		}
	case *parser.MatrixSelector, *parser.SubqueryExpr:
		return e
	case *parser.ParenExpr:
		n.Expr = rewriteOverTime(n.Expr, fn, window)
	case *parser.AggregateExpr:
		n.Expr = rewriteOverTime(n.Expr, fn, window)
	case *parser.BinaryExpr:
		n.LHS = rewriteOverTime(n.LHS, fn, window)
		n.RHS = rewriteOverTime(n.RHS, fn, window)
	case *parser.UnaryExpr:
		n.Expr = rewriteOverTime(n.Expr, fn, window)
	case *parser.StepInvariantExpr:
		n.Expr = rewriteOverTime(n.Expr, fn, window)
	case *parser.Call:
		for i, a := range n.Args {
			n.Args[i] = rewriteOverTime(a, fn, window)
		}
	}
	return e
}

// repairLegacy rewrites kedify/otel-add-on's query forms into PromQL
// (keda-contract.md §9 step 2): inside each {…} block, unquoted matcher
// values are quoted (a value runs to the next , or }, spaces trimmed) and
// label names with characters outside [a-zA-Z0-9_] are escaped like OTLP
// attribute keys; outside braces a "." in a metric name becomes "_".
// changed reports whether anything was rewritten.
func repairLegacy(q string) (string, bool) {
	var sb strings.Builder
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := skipQuoted(q, i)
			sb.WriteString(q[i:j])
			i = j
		case c == '{':
			end := strings.IndexByte(q[i:], '}')
			if end < 0 {
				sb.WriteString(q[i:])
				i = len(q)
				continue
			}
			sb.WriteByte('{')
			sb.WriteString(repairMatchers(q[i+1 : i+end]))
			sb.WriteByte('}')
			i += end + 1
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(q) && q[i+1] >= '0' && q[i+1] <= '9':
			// A number literal (0.5, 1e3): its dots stay.
			j := i + 1
			for j < len(q) && (isIdentChar(q[j]) || q[j] == '.') {
				j++
			}
			sb.WriteString(q[i:j])
			i = j
		case isIdentStart(c):
			j := i + 1
			for j < len(q) && (isIdentChar(q[j]) || q[j] == '.' && j+1 < len(q) && isIdentChar(q[j+1])) {
				j++
			}
			sb.WriteString(strings.ReplaceAll(q[i:j], ".", "_"))
			i = j
		default:
			sb.WriteByte(c)
			i++
		}
	}
	out := sb.String()
	return out, out != q
}

// repairMatchers repairs the inside of one {…} block.
func repairMatchers(body string) string {
	parts := splitMatchers(body)
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		opAt, opLen := -1, 0
		for j := 0; j < len(p); j++ {
			if p[j] == '=' || p[j] == '!' {
				opAt, opLen = j, 1
				if j+1 < len(p) && (p[j+1] == '=' || p[j+1] == '~') {
					opLen = 2
				}
				break
			}
		}
		if opAt <= 0 {
			parts[i] = p
			continue
		}
		key := strings.TrimSpace(p[:opAt])
		if !strings.HasPrefix(key, `"`) {
			key = sanitizeLabel(key)
		}
		val := strings.TrimSpace(p[opAt+opLen:])
		if val == "" || val[0] != '"' && val[0] != '\'' && val[0] != '`' {
			val = strconv.Quote(val)
		}
		parts[i] = key + p[opAt:opAt+opLen] + val
	}
	return strings.Join(parts, ", ")
}

// splitMatchers splits on commas outside quotes.
func splitMatchers(body string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(body); {
		switch body[i] {
		case '"', '\'', '`':
			i = skipQuoted(body, i)
			continue
		case ',':
			parts = append(parts, body[start:i])
			start = i + 1
		}
		i++
	}
	return append(parts, body[start:])
}

// skipQuoted returns the index just past the quoted string starting at i.
func skipQuoted(s string, i int) int {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if q != '`' {
				j++
			}
		case q:
			return j + 1
		}
	}
	return len(s)
}

// sanitizeLabel escapes an attribute key the way the receiver names OTLP
// attributes: characters outside [a-zA-Z0-9_] become "_", and a leading
// digit gets a "key_" prefix.
func sanitizeLabel(k string) string {
	b := []byte(k)
	for i, c := range b {
		if !isIdentChar(c) || c == ':' {
			b[i] = '_'
		}
	}
	if len(b) > 0 && b[0] >= '0' && b[0] <= '9' {
		return "key_" + string(b)
	}
	return string(b)
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdentChar(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9'
}
