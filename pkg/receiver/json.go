package receiver

import (
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
)

// OTLP/JSON is decoded by pdata (the reference decoder; otlp-contract.md
// §4), which recurses once per nesting level with no limit: an attribute
// value nested a million levels deep in a 63 KB gzip body is a fatal
// stack overflow, and 200k levels cost seconds and hundreds of MiB.
// scanJSON therefore scans the body first, iteratively and in place, so
// pdata never recurses deeper than a fixed bound:
//
//   - Inside an attribute value (an object under a "value" key) the JSON
//     may nest up to jsonValueCut levels; a value that nests deeper is
//     overwritten, in place, by tooDeepJSON, a value nested just past
//     otlpwire.MaxValueDepth, padded with spaces. Either way the value is
//     too deep by the rule both decoders share, and its point (or its
//     resource's or scope's points) is rejected as attribute_too_deep;
//     the rest of the request is stored. As on the protobuf path, the
//     bytes below the cut are not validated.
//   - Outside attribute values OTLP nests about a dozen levels;
//     jsonStructDepth levels fail the request (400), as does a body whose
//     brackets do not balance.
const (
	jsonValueCut    = 1024
	jsonStructDepth = 64
)

// tooDeepJSON is an AnyValue whose innermost (empty) value sits at depth
// otlpwire.MaxValueDepth+1. It is shorter than any value it replaces,
// which spans at least 2 × jsonValueCut brackets.
var tooDeepJSON = strings.Repeat(`{"arrayValue":{"values":[`, otlpwire.MaxValueDepth+1) + "{}" +
	strings.Repeat("]}}", otlpwire.MaxValueDepth+1)

// tooDeepContainers counts the objects and arrays of tooDeepJSON.
var tooDeepContainers = int64(strings.Count(tooDeepJSON, "{") + strings.Count(tooDeepJSON, "["))

// errJSONStructure wraps the scan's errors.
var errJSONStructure = errors.New("malformed JSON")

// jsonScan is what scanJSON learnt of a body.
type jsonScan struct {
	replaced   int   // values overwritten with tooDeepJSON
	containers int64 // objects and arrays
	commas     int64 // separators outside strings: array elements and object members
}

// treeBytes bounds what pdata allocates to decode the body (n bytes) and
// the receiver to map it: strings are copied (2n), each object becomes a
// pdata struct in a slice that grows by doubling (measured at most 222 B
// per object, on attribute lists of empty objects), each separator an
// element of such a slice (at most 50 B, on long bucket-count arrays).
// TestJSONTreeBytes checks the bound on honest and hostile shapes; honest
// bodies are charged about twelve times their size, four times what they
// allocate (JSON is the costly encoding: send big batches as protobuf).
func (s jsonScan) treeBytes(n int64) int64 { return 2*n + 256*s.containers + 64*s.commas }

// scanJSON rewrites b in place as described above and measures it. It
// allocates nothing and reads b once.
func scanJSON(b []byte) (jsonScan, error) {
	var (
		sc          jsonScan
		depth       int
		anchor      int      // depth of the attribute value being scanned; 0: none
		anchorStart int      // its opening brace
		cut         bool     // it nests deeper than jsonValueCut
		afterValue  bool     // the last token was the key "value" and its colon
		atAnchor    jsonScan // the counts when the value opened
	)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case ' ', '\t', '\n', '\r':
		case '"':
			j := i + 1
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' {
					j++ // the escaped byte cannot end the string
				}
				j++
			}
			if j >= len(b) {
				return jsonScan{}, fmt.Errorf("%w: unterminated string starting at byte %d", errJSONStructure, i)
			}
			key := b[i+1 : j]
			i = j
			j++
			for j < len(b) && (b[j] == ' ' || b[j] == '\t' || b[j] == '\n' || b[j] == '\r') {
				j++
			}
			afterValue = false
			if j < len(b) && b[j] == ':' {
				afterValue, i = string(key) == "value", j
			}
		case ',':
			sc.commas++
			afterValue = false
		case '{', '[':
			sc.containers++
			depth++
			switch {
			case anchor != 0:
				cut = cut || depth-anchor >= jsonValueCut
			case c == '{' && afterValue:
				anchor, anchorStart, atAnchor = depth, i, sc
			case depth > jsonStructDepth:
				return jsonScan{}, fmt.Errorf("%w: nested deeper than %d levels outside an attribute value at byte %d", errJSONStructure, jsonStructDepth, i)
			}
			afterValue = false
		case '}', ']':
			if depth == 0 {
				return jsonScan{}, fmt.Errorf("%w: unbalanced %q at byte %d", errJSONStructure, c, i)
			}
			if depth == anchor {
				if c != '}' {
					return jsonScan{}, fmt.Errorf("%w: attribute value opened with '{' closed with ']' at byte %d", errJSONStructure, i)
				}
				if cut {
					n := copy(b[anchorStart:], tooDeepJSON)
					for k := anchorStart + n; k <= i; k++ {
						b[k] = ' '
					}
					// What pdata will see of the value is the replacement.
					sc.containers, sc.commas = atAnchor.containers+tooDeepContainers, atAnchor.commas
					sc.replaced++
				}
				anchor, cut = 0, false
			}
			depth--
			afterValue = false
		default:
			afterValue = false
		}
	}
	if depth != 0 {
		return jsonScan{}, fmt.Errorf("%w: the body ends inside %d unclosed objects or arrays", errJSONStructure, depth)
	}
	return sc, nil
}

// ingestJSON decodes an OTLP/JSON body that scanJSON has accepted (and
// rewritten) with pdata and maps it into the store.
func (r *Receiver) ingestJSON(data []byte) (result, error) {
	er := pmetricotlp.NewExportRequest()
	if err := er.UnmarshalJSON(data); err != nil {
		return result{}, err
	}
	return r.ingestPdata(er.Metrics()), nil
}
