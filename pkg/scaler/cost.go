package scaler

import (
	"regexp/syntax"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Defaults of the compiled-trigger cache's byte bounds (Config).
const (
	// DefaultMaxTriggerBytes bounds one compiled trigger. Every query
	// the engine parses (at most 16 KiB and 2,048 tokens) fits unless its
	// regular expressions compile large (query.MaxQueryRegexSize lets
	// them add about 0.5 MB): the largest regex-free shapes are
	// estimated at 1.8 MB (about 1.2 MB measured), real triggers at
	// 3.5–5 KB (2.7–3.5 KB measured; TestTriggerCostBoundsHeap).
	DefaultMaxTriggerBytes = 2 << 20
	// DefaultTriggerCacheBytes bounds the whole cache: 10,000 real
	// triggers (the default MaxTriggers) fit, and at least 32 of the
	// largest.
	DefaultTriggerCacheBytes = 64 << 20
)

// Coefficients of triggerCost, in bytes, calibrated by
// TestTriggerCostBoundsHeap, which measures the heap that cached triggers
// of many shapes hold and requires each estimate to be at least that (and
// not more than a small factor above it).
const (
	// costBase is a trigger with an empty query: the trigger and plan
	// structs, the cache's map entry (the key alone is 448 B) and the spec.
	costBase = 2 << 10
	// Nodes of the lowered expression as the plan holds them: operator
	// structs, matchers, label lists and scratch vectors.
	costSelector   = 600
	costMatcher    = 120 // plus its name and value
	costMatrix     = 160
	costCall       = 320
	costBinary     = 320 // between vectors; with a scalar side, costSmallNode
	costAggregate  = 320
	costGroupLabel = 48  // plus its bytes
	costSmallNode  = 64  // numbers, strings, unary minus, parentheses
	costName       = 160 // a metric name's symbol in the store and its copies, plus its bytes
	costRegexInst  = 64  // one compiled instruction (a 40 B Inst and its share of rune ranges)
	costRegexByte  = 16  // per pattern byte: literal sets and prefix matchers of Prometheus's FastRegexMatcher
	costRegexRune  = 4   // per distinct rune-range element
)

// triggerCost estimates the bytes a cached trigger holds, for the cache's
// bounds: its kept strings, its plan (by the lowered expression's nodes,
// texts and regular expressions) and the metric names it holds in the
// store. Regular expressions are costed by their compiled size, which a
// short pattern can make large ("[a-z]{1000}" is 11 bytes and compiles
// to about 1,000 instructions, 42 KB).
func triggerCost(t *trigger, expr parser.Expr, names []string) int64 {
	c := int64(costBase) + int64(t.key.bytes()+len(t.metricName)+len(t.rewritten)+len(t.plan.String()))
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			c += costSelector
			for _, m := range n.LabelMatchers {
				c += costMatcher + int64(len(m.Name)+len(m.Value))
				if m.Type == labels.MatchRegexp || m.Type == labels.MatchNotRegexp {
					c += regexCost(m.Value)
				}
			}
		case *parser.MatrixSelector:
			c += costMatrix
		case *parser.Call:
			c += costCall
			// label_replace(v, dst, replacement, src, regex) compiles its
			// regex into the plan.
			if n.Func.Name == "label_replace" && len(n.Args) == 5 {
				if sl, ok := n.Args[4].(*parser.StringLiteral); ok {
					c += regexCost(sl.Val)
				}
			}
		case *parser.BinaryExpr:
			if n.LHS.Type() == parser.ValueTypeScalar || n.RHS.Type() == parser.ValueTypeScalar {
				c += costSmallNode
			} else {
				c += costBinary
			}
			if n.VectorMatching != nil {
				for _, l := range append(n.VectorMatching.MatchingLabels, n.VectorMatching.Include...) {
					c += costGroupLabel + int64(len(l))
				}
			}
		case *parser.AggregateExpr:
			c += costAggregate
			for _, l := range n.Grouping {
				c += costGroupLabel + int64(len(l))
			}
		case *parser.StringLiteral:
			c += costSmallNode + int64(len(n.Val))
		default:
			c += costSmallNode
		}
		return nil
	})
	for _, n := range names {
		c += int64(len(n)) + costName
	}
	return c
}

// regexCost estimates a regular expression as the engine compiles it
// (anchored): its instructions, its distinct rune ranges and its pattern.
// It is 0 if re does not compile: the engine rejected it already.
func regexCost(re string) int64 {
	r, err := syntax.Parse("^(?s:"+re+")$", syntax.Perl)
	if err != nil {
		return 0
	}
	prog, err := syntax.Compile(r.Simplify())
	if err != nil {
		return 0
	}
	c := int64(len(prog.Inst))*costRegexInst + int64(len(re))*costRegexByte
	// Repeats share one rune slice between their instructions: count each
	// once.
	seen := map[*rune]struct{}{}
	for i := range prog.Inst {
		if rs := prog.Inst[i].Rune; len(rs) > 0 {
			if _, ok := seen[&rs[0]]; !ok {
				seen[&rs[0]] = struct{}{}
				c += int64(len(rs)) * costRegexRune
			}
		}
	}
	return c
}
