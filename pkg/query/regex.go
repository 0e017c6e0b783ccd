package query

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/strutil"
)

// Regular expressions cost what their compiled program costs, not what
// their text does. Go's regexp unrolls a counted repetition into copies,
// so `.{0,1000}` (9 bytes) is a program of about 2,000 instructions:
// compiling it allocates about 1.4 MB, and matching costs up to the
// program's size per byte of the value (regexp is linear in the value,
// not in the program). Under MaxQueryLength, one selector of 1,500 such
// copies took 2.4 s and 1.1 GB to parse (Prometheus's parser compiles every
// matcher), and `(?:.?){1000}` repeated ten times (124 bytes) took 23 ms
// per 74-byte label value. So every regular expression of a query (label
// matchers and label_replace) is measured on its syntax tree, before
// anything compiles it, against MaxRegexSize and MaxQueryRegexSize.

// MaxRegexSize bounds the estimated program of one regular expression,
// in instructions as Go's compiler lays them out (an upper bound within
// about 2× of the real count). Hand-written patterns are far below it
// (`vllm:num_requests_(running|waiting)` is 42, `[a-z0-9-]{1,63}` 128);
// `[a-z]{1000}` (2,005) is about the most it accepts. With values of at
// most 4 KiB a match is then at most a few million steps.
const MaxRegexSize = 2048

// MaxQueryRegexSize bounds the estimated programs of all the regular
// expressions of one query (or of one /api/v1/series request's match[]
// selectors) together, so that many small ones cannot add up to what one
// large one may not be: at most about 6 MB and a few milliseconds of
// compiling.
const MaxQueryRegexSize = 4 * MaxRegexSize

// ErrRegexTooComplex means a regular expression, or a query's regular
// expressions together, would compile to more than MaxRegexSize or
// MaxQueryRegexSize instructions. From Parse it arrives wrapped in a
// *ParseError; the HTTP API answers it as bad_data, the scaler as
// InvalidArgument.
var ErrRegexTooComplex = errors.New("regular expression too complex")

// regexBudget sums the sizes of a query's regular expressions.
type regexBudget struct{ total int }

// add measures re (the pattern as written, anchored and with (?s) as
// Prometheus compiles it) and charges it. pos is its byte offset in the
// query, for the message. matcher tells a label matcher's pattern, which
// Prometheus matches as a set of strings without compiling it when it is
// a plain alternation of literals (labels.FastRegexMatcher); label_replace
// compiles every pattern. A pattern that does not parse is left to the
// caller, which reports it in its own words.
func (b *regexBudget) add(re string, pos int, matcher bool) error {
	if matcher && literalAlternation(re) {
		return nil
	}
	tree, err := syntax.Parse(re, syntax.Perl|syntax.DotNL)
	if err != nil {
		return nil
	}
	n := regexSize(tree, MaxQueryRegexSize+1)
	if n > MaxRegexSize {
		return fmt.Errorf("%w: %q at position %d would compile to about %d instructions, more than %d (a repetition such as {1000} counts each copy)",
			ErrRegexTooComplex, clipText(re, 64), pos, n, MaxRegexSize)
	}
	if b.total += n; b.total > MaxQueryRegexSize {
		return fmt.Errorf("%w: the regular expressions up to position %d would compile to about %d instructions together, more than %d",
			ErrRegexTooComplex, pos, b.total, MaxQueryRegexSize)
	}
	return nil
}

// literalAlternation reports whether re is a plain alternation of
// literals, which labels.NewFastRegexMatcher matches without compiling
// (its optimizeAlternatingLiterals).
func literalAlternation(re string) bool {
	for part := range strings.SplitSeq(re, "|") {
		if regexp.QuoteMeta(part) != part {
			return false
		}
	}
	return true
}

// regexSize estimates the instructions Go's regexp compiles tree to,
// from above: what each node adds as regexp/syntax's compiler lays it
// out, with a counted repetition unrolled. It stops counting past limit.
// syntax.Parse bounds the tree's depth (1,000), so the recursion does
// too.
func regexSize(tree *syntax.Regexp, limit int) int {
	switch tree.Op {
	case syntax.OpLiteral:
		return len(tree.Rune)
	case syntax.OpCapture:
		return min(2+regexSize(tree.Sub[0], limit), limit)
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		return min(1+regexSize(tree.Sub[0], limit), limit)
	case syntax.OpRepeat:
		copies := tree.Max
		if copies < 0 {
			copies = tree.Min + 1
		}
		if copies == 0 {
			return 1 // x{0} is the empty match
		}
		sub := 1 + regexSize(tree.Sub[0], limit)
		if sub > limit/copies {
			return limit
		}
		return min(copies*sub, limit)
	case syntax.OpConcat, syntax.OpAlternate:
		n := len(tree.Sub)
		for _, s := range tree.Sub {
			if n += regexSize(s, limit); n >= limit {
				return limit
			}
		}
		return n
	default:
		return 1
	}
}

// checkMatcherRegexes measures the regular expressions of q's label
// matchers (every string after =~ or !~, as Prometheus's lexer reads q,
// comments skipped as its parser does) against one budget, before
// Prometheus's parser compiles them. It stops at the first lexing error,
// where the parser stops too. The lexer is the parser's with its default
// options; only the conformance runner's parser enables unquoted UTF-8
// names, which lex differently.
func checkMatcherRegexes(q string, b *regexBudget) error {
	l := parser.Lex(q)
	var it parser.Item
	prev := parser.ItemType(0)
	for {
		l.NextItem(&it)
		switch it.Typ {
		case parser.EOF, parser.ERROR:
			return nil
		case parser.COMMENT:
			continue
		case parser.STRING:
			if prev == parser.EQL_REGEX || prev == parser.NEQ_REGEX {
				if re, err := strutil.Unquote(it.Val); err == nil {
					if err := b.add(re, int(it.Pos), true); err != nil {
						return err
					}
				}
			}
		}
		prev = it.Typ
	}
}

// CheckSelectorRegexes applies MaxRegexSize and MaxQueryRegexSize to the
// label matchers of selectors, together, before they are parsed: the
// HTTP API calls it on the match[] selectors of a listing request, which
// it parses with Prometheus's parser directly. The error matches
// ErrRegexTooComplex.
func CheckSelectorRegexes(selectors []string) error {
	var b regexBudget
	for _, s := range selectors {
		if err := checkMatcherRegexes(s, &b); err != nil {
			return err
		}
	}
	return nil
}
