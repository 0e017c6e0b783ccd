// Package otlpwire walks the protobuf wire format of an OTLP
// ExportMetricsServiceRequest without building an object tree: it hands
// views of each resource, scope, metric and data point to a Handler, and
// those views alias the request bytes or the Walker's reusable scratch.
//
// Acceptance is defined by go.opentelemetry.io/collector/pdata, the
// reference decoder: the walker accepts exactly the inputs pdata's
// UnmarshalProto accepts (same tag, varint, length and wire-type checks,
// same "last one wins" for singular fields and oneofs, same merge of
// repeated singular messages, same packed/unpacked handling), so a fuzz
// test can require identical results from both. The low-level readers
// therefore mirror pdata's rather than protowire's (protowire rejects an
// over-long tenth varint byte that pdata accepts); protowire supplies the
// wire-type constants and is used to encode payloads in tests.
//
// Walk makes two passes: the first validates the whole request and emits
// nothing, the second emits. A request that fails to decode therefore
// never reaches the store half-applied. The first pass keeps what it
// decoded of number points (most of any request), so the second emits
// those without decoding them again; attributes are not decoded in the
// second pass at all unless the handler asks for them (Point.Attributes).
package otlpwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrMalformed matches every decode error.
var ErrMalformed = errors.New("malformed OTLP protobuf")

// MaxValueDepth is the deepest AnyValue nesting (arrays and maps inside
// attribute values) the walker decodes: a value holding an AnyValue
// nested deeper than this (the attribute's own value is at depth 0) is
// reported as KindTooDeep, and the bytes below the limit are neither
// decoded nor validated. That bounds the walk's stack and time whatever
// the input (a Go stack overflow is fatal, not a recoverable panic), and
// it costs the request nothing else: the handler decides what a too-deep
// value means (the receiver rejects the point that carries it). pdata has
// no limit; nothing real comes close to this one.
const MaxValueDepth = 64

// ValueKind is the type of an attribute value, as pcommon.ValueType.
type ValueKind uint8

// Attribute value kinds.
const (
	KindEmpty ValueKind = iota
	KindStr
	KindBool
	KindInt
	KindDouble
	KindBytes
	KindArray
	KindMap
	// KindPreformatted carries a value already rendered as text in Str (the
	// pdata adapter uses it for arrays and maps).
	KindPreformatted
	// KindTooDeep is an array or map value that nests AnyValues deeper
	// than MaxValueDepth; it carries nothing else.
	KindTooDeep
)

// AnyValue is a view of an attribute value. Str holds the string, bytes,
// or, for KindArray/KindMap, the encoded ArrayValue/KeyValueList payload.
type AnyValue struct {
	Kind   ValueKind
	Bool   bool
	Int    int64
	Double float64
	Str    []byte
}

// KeyValue is a view of one attribute.
type KeyValue struct {
	Key   []byte
	Value AnyValue
}

// MetricType is the data case of a Metric.
type MetricType uint8

// Metric data types, as pmetric.MetricType.
const (
	TypeEmpty MetricType = iota
	TypeGauge
	TypeSum
	TypeHistogram
	TypeExponentialHistogram
	TypeSummary
)

// Metric is a view of a metric's header. Temporality is the raw enum value
// (0 unspecified, 1 delta, 2 cumulative; anything else is passed through).
type Metric struct {
	Name, Unit  []byte
	Type        MetricType
	Temporality int32
	Monotonic   bool
}

// NumberKind says which value a number point carries.
type NumberKind uint8

// Number point value kinds.
const (
	NumberNone NumberKind = iota
	NumberDouble
	NumberInt
)

// Quantile is one summary quantile.
type Quantile struct{ Quantile, Value float64 }

// Point is a view of one data point of any type; fields that the metric's
// type does not have are zero.
//
// The Walker does not decode a point's attributes when it emits the point:
// it sets Raw and RawAttrs, and Attributes decodes them on first use. A
// handler that has seen the same RawAttrs before (in the same context)
// knows the attributes without decoding them. Other producers of Points
// (the pdata adapter, tests) fill Attrs and leave Raw false.
type Point struct {
	// Attrs are the decoded attributes; while a lazy decode is pending
	// they are empty. Read them through Attributes.
	Attrs []KeyValue
	// RawAttrs, when Raw is set, is the span of the encoded point from the
	// first attribute field's tag to the end of the last attribute field
	// (empty when the point has none). Every attribute field lies inside
	// it and other fields may too, so two points of the same metric type
	// with byte-identical spans have identical attributes. It aliases the
	// request bytes.
	RawAttrs []byte
	Raw      bool

	attrField int32 // field number of attributes, for the lazy decode
	pending   bool  // Attrs not decoded yet

	StartTime uint64
	Time      uint64
	Flags     uint32

	// Number points.
	NumberKind NumberKind
	Double     float64
	Int        int64

	// Histogram, exponential histogram and summary points. For an
	// exponential histogram BucketCounts holds the positive side's
	// counts.
	Count        uint64
	Sum          float64
	HasSum       bool
	BucketCounts []uint64
	Bounds       []float64
	Quantiles    []Quantile

	// Exponential histogram points: the scale, the zero bucket, each
	// side's first bucket index (offset) and the negative side's counts
	// (the positive side's are BucketCounts). A side stops collecting
	// counts past MaxExpBuckets and sets BucketsOverflow instead, so a
	// request of one-byte varints cannot expand eightfold in memory.
	Scale           int32
	ZeroCount       uint64
	ZeroThreshold   float64
	PosOffset       int32
	NegOffset       int32
	NegCounts       []uint64
	BucketsOverflow bool
	// hasExp says the exponential-histogram fields above may be set, so
	// reset must clear them.
	hasExp bool
}

// MaxExpBuckets bounds the bucket counts one side of an exponential
// histogram point may carry (Point.BucketsOverflow). OpenTelemetry SDKs
// default to 160.
const MaxExpBuckets = 1 << 16

// Attributes returns the point's attributes, decoding them from RawAttrs
// on the first call after the Walker emitted the point. The result is
// valid only during the Handler call.
func (p *Point) Attributes() []KeyValue {
	if p.pending {
		p.pending = false
		p.Attrs = decodeAttrs(p.RawAttrs, p.attrField, p.Attrs[:0])
	}
	return p.Attrs
}

// SetRawAttrs makes p a point of a metric of type t with no other fields
// whose attributes are raw, an attribute span a Walker emitted as
// Point.RawAttrs (valid as long as the request it aliases), decoded on the
// first Attributes call. Handlers that keep a point's span past the
// Handler call use it to see its attributes again.
func (p *Point) SetRawAttrs(raw []byte, t MetricType) {
	p.reset()
	p.clearExp()
	p.Raw, p.RawAttrs, p.attrField, p.pending = true, raw, pointLayout[t].attrs, len(raw) > 0
}

// reset zeroes every field but the exponential-histogram ones and empties
// the slices, keeping their arrays. Field by field, because assigning a
// whole Point literal clears the struct through a slower typed path
// (measured: 15 % of a walk). Callers follow it with
//
//	if p.hasExp {
//		p.clearExp()
//	}
//
// which zeroes the rest only after a point that may have set them: reset
// stays within the compiler's inlining budget, and the walk of number
// points costs what it cost before exponential histograms were decoded
// (a reset that is a call measured 7 % of the second pass).
// TestPointReset checks that no field is forgotten.
func (p *Point) reset() {
	p.Attrs, p.BucketCounts, p.Bounds, p.Quantiles = p.Attrs[:0], p.BucketCounts[:0], p.Bounds[:0], p.Quantiles[:0]
	p.RawAttrs, p.Raw, p.attrField, p.pending = nil, false, 0, false
	p.StartTime, p.Time, p.Flags = 0, 0, 0
	p.NumberKind, p.Double, p.Int = NumberNone, 0, 0
	p.Count, p.Sum, p.HasSum = 0, 0, false
}

// clearExp zeroes the exponential-histogram fields (reset).
func (p *Point) clearExp() {
	p.Scale, p.ZeroCount, p.ZeroThreshold, p.PosOffset, p.NegOffset = 0, 0, 0, 0, 0
	p.NegCounts, p.BucketsOverflow, p.hasExp = p.NegCounts[:0], false, false
}

// decodeAttrs decodes every attribute field (number field) of a span the
// first pass has validated, so errors cannot occur; should one anyway, the
// attributes decoded so far are returned.
func decodeAttrs(b []byte, field int32, attrs []KeyValue) []KeyValue {
	for pos := 0; pos < len(b); {
		num, wt, p, err := consumeTag(b, pos)
		if err != nil {
			return attrs
		}
		if num != field {
			if pos, err = skip(b, p, wt); err != nil {
				return attrs
			}
			continue
		}
		s, e, err := consumeLen(b, p)
		if err != nil {
			return attrs
		}
		attrs = append(attrs, KeyValue{})
		if keyValue(b[s:e], &attrs[len(attrs)-1], 0, nil) != nil {
			return attrs
		}
		pos = e
	}
	return attrs
}

// Handler receives a request's content in order. Every slice it is given
// aliases the request or the Walker's scratch and is valid only during the
// call; the handler must copy what it keeps.
type Handler interface {
	// Resource starts a ResourceMetrics with all its resource attributes.
	Resource(attrs []KeyValue)
	// Scope starts a ScopeMetrics of the current resource.
	Scope(name, version []byte, attrs []KeyValue)
	// Metric starts a metric of the current scope; returning false skips
	// its points.
	Metric(m *Metric, points int) bool
	// Point delivers one data point of the current metric.
	Point(p *Point)
}

// Walker holds the reusable scratch of a walk. The zero value is ready; a
// Walker is not safe for concurrent use.
type Walker struct {
	h    Handler
	emit bool

	resAttrs   []KeyValue
	scopeAttrs []KeyValue
	m          Metric

	// recs are the number points the first pass decoded, in request
	// order (at most maxRecs), so the second pass emits them without
	// decoding them again; cursor is the second pass's position in recs.
	recs   []pointRec
	cursor int

	// deep counts the values of the last walk's first pass that were cut
	// at MaxValueDepth (ValuesTooDeep).
	deep int

	pt Point
}

// pointRec is a number point as the first pass decoded it. at identifies
// the point: the address of its first payload byte (its encoded message
// within the request, which outlives the walk), so the second pass, which
// visits a subsequence of the first pass's points in the same order,
// matches records by address and skips those it does not visit (data
// replaced by a later oneof occurrence, or deprecated fields pdata
// ignores). Attribute offsets are relative to the point's payload.
type pointRec struct {
	at               uintptr
	startTime, time  uint64
	value            uint64 // Double or Int bits, per kind
	rawStart, rawEnd int32  // rawStart < 0: no attributes
	flags            uint32
	kind             NumberKind
}

// maxRecs bounds the first pass's records (48 B each) to 3 MiB during a
// walk; points beyond it are decoded twice. Afterwards a walker keeps room
// for keepRecs (192 KiB), enough for the usual 1000-point requests.
const (
	maxRecs  = 1 << 16
	keepRecs = 1 << 12
)

// Walk decodes buf, an encoded ExportMetricsServiceRequest, and hands its
// content to h. It returns an error wrapping ErrMalformed, without calling
// h at all, when pdata would fail to decode buf.
func (w *Walker) Walk(buf []byte, h Handler) error {
	w.h = nil
	w.emit = false
	w.recs, w.cursor = w.recs[:0], 0
	w.deep = 0
	if err := w.request(buf); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if h == nil {
		return nil
	}
	w.h, w.emit = h, true
	defer func() { w.h = nil }()
	if err := w.request(buf); err != nil {
		// Unreachable: the first pass accepted the same bytes.
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	w.trim()
	return nil
}

// Validate reports whether buf decodes, without emitting anything.
func (w *Walker) Validate(buf []byte) error { return w.Walk(buf, nil) }

// ValuesTooDeep returns how many AnyValues the last Walk or Validate
// found below MaxValueDepth, wherever they were (resource, scope, point,
// exemplar or metadata attributes, including values a later oneof field
// replaced): their bytes were not validated.
func (w *Walker) ValuesTooDeep() int { return w.deep }

// trim drops scratch that a single huge request grew, so a pooled Walker
// does not pin it.
func (w *Walker) trim() {
	const keep = 1 << 14
	if cap(w.pt.BucketCounts) > keep {
		w.pt.BucketCounts = nil
	}
	if cap(w.pt.Bounds) > keep {
		w.pt.Bounds = nil
	}
	if cap(w.pt.NegCounts) > keep {
		w.pt.NegCounts = nil
	}
	if cap(w.pt.Attrs) > keep {
		w.pt.Attrs = nil
	}
	if cap(w.pt.Quantiles) > keep {
		w.pt.Quantiles = nil
	}
	if cap(w.resAttrs) > keep {
		w.resAttrs = nil
	}
	if cap(w.scopeAttrs) > keep {
		w.scopeAttrs = nil
	}
	if cap(w.recs) > keepRecs {
		w.recs = nil
	}
}

// --- low-level readers, mirroring pdata's internal/proto ---

var (
	errIntOverflow   = errors.New("integer overflow")
	errInvalidLength = errors.New("negative length")
	errEndOfGroup    = errors.New("unexpected end of group")
	errBadFieldLen   = errors.New("packed field length is not a multiple of its element size")
	errBadID         = errors.New("trace or span id of wrong length")
)

func consumeVarint(b []byte, pos int) (uint64, int, error) {
	var num uint64
	for shift := uint(0); ; shift += 7 {
		if shift >= 64 {
			return 0, 0, errIntOverflow
		}
		if pos >= len(b) {
			return 0, 0, io.ErrUnexpectedEOF
		}
		c := b[pos]
		pos++
		num |= uint64(c&0x7F) << shift
		if c < 0x80 {
			return num, pos, nil
		}
	}
}

func consumeTag(b []byte, pos int) (int32, protowire.Type, int, error) {
	// Fast path: one-byte tags are nearly all of them.
	if pos < len(b) && b[pos] < 0x80 && b[pos] >= 8 {
		c := b[pos]
		return int32(c >> 3), protowire.Type(c & 7), pos + 1, nil
	}
	tag, pos, err := consumeVarint(b, pos)
	if err != nil {
		return 0, 0, 0, err
	}
	num := int32(tag >> 3)
	if num <= 0 {
		return 0, 0, 0, fmt.Errorf("illegal field number %d", num)
	}
	return num, protowire.Type(tag & 7), pos, nil
}

// consumeLen returns the payload bounds [start, end) of a LEN field.
func consumeLen(b []byte, pos int) (int, int, error) {
	n, pos, err := consumeVarint(b, pos)
	if err != nil {
		return 0, 0, err
	}
	l := int(n)
	if l < 0 {
		return 0, 0, errInvalidLength
	}
	end := pos + l
	if end < 0 || end > len(b) {
		return 0, 0, io.ErrUnexpectedEOF
	}
	return pos, end, nil
}

func consumeI64(b []byte, pos int) (uint64, int, error) {
	end := pos + 8
	if end < 0 || end > len(b) {
		return 0, 0, io.ErrUnexpectedEOF
	}
	return binary.LittleEndian.Uint64(b[pos:]), end, nil
}

func consumeI32(b []byte, pos int) (int, error) {
	end := pos + 4
	if end < 0 || end > len(b) {
		return 0, io.ErrUnexpectedEOF
	}
	return end, nil
}

// skip consumes an unknown field, with pdata's group handling.
func skip(b []byte, pos int, wt protowire.Type) (int, error) {
	var err error
	depth := 0
	for pos < len(b) {
		switch wt {
		case protowire.VarintType:
			_, pos, err = consumeVarint(b, pos)
			return pos, err
		case protowire.Fixed64Type:
			_, pos, err = consumeI64(b, pos)
			return pos, err
		case protowire.BytesType:
			_, pos, err = consumeLen(b, pos)
			return pos, err
		case protowire.StartGroupType:
			depth++
		case protowire.EndGroupType:
			if depth == 0 {
				return 0, errEndOfGroup
			}
			depth--
		case protowire.Fixed32Type:
			pos, err = consumeI32(b, pos)
			return pos, err
		default:
			return 0, fmt.Errorf("illegal wire type %d", wt)
		}
		if depth == 0 {
			return pos, nil
		}
		_, wt, pos, err = consumeTag(b, pos)
		if err != nil {
			return 0, err
		}
	}
	return 0, io.ErrUnexpectedEOF
}

func wrongType(field string, wt protowire.Type) error {
	return fmt.Errorf("wrong wire type %d for field %s", wt, field)
}

// --- messages ---
//
// Every message loop below reads its tags and lengths the same way, on
// purpose: a one-byte tag (fields 1-15) and a one-byte length (under 128
// bytes), nearly every tag and length of a real request, are decoded in
// place ("inlined"), and only the rest calls consumeTag or consumeLen,
// which the compiler does not inline. Calling them at every site instead
// costs 48 % more instructions per walk (BenchmarkWalk/pass=both on 1,000
// points: 1,121 against 1,661 Ir per point; pass=validate 834 against
// 1,237; callgrind, GC off).

func (w *Walker) request(b []byte) error {
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		if num == 1 {
			if wt != protowire.BytesType {
				return wrongType("ResourceMetrics", wt)
			}
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			if err := w.resourceMetrics(b[s:e]); err != nil {
				return err
			}
			pos = e
			continue
		}
		if pos, err = skip(b, p, wt); err != nil {
			return err
		}
	}
	return nil
}

func (w *Walker) resourceMetrics(b []byte) error {
	w.resAttrs = w.resAttrs[:0]
	nScope := 0
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		switch num {
		case 1, 2, 3, 1000:
			if wt != protowire.BytesType {
				return wrongType("ResourceMetrics."+fmt.Sprint(num), wt)
			}
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			switch num {
			case 1:
				if w.resAttrs, err = resource(b[s:e], w.resAttrs, w.cuts()); err != nil {
					return err
				}
			case 2:
				nScope++
				fallthrough
			case 1000:
				if !w.emit {
					if err := w.scopeMetrics(b[s:e]); err != nil {
						return err
					}
				}
			}
			pos = e
		default:
			if pos, err = skip(b, p, wt); err != nil {
				return err
			}
		}
	}
	if !w.emit {
		return nil
	}
	w.h.Resource(w.resAttrs)
	// pdata's MigrateMetrics: the deprecated instrumentation_library_metrics
	// (field 1000) count only when there is no scope_metrics entry.
	want := int32(2)
	if nScope == 0 {
		want = 1000
	}
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		if num == want {
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			if err := w.scopeMetrics(b[s:e]); err != nil {
				return err
			}
			pos = e
			continue
		}
		if pos, err = skip(b, p, wt); err != nil {
			return err
		}
	}
	return nil
}

func resource(b []byte, attrs []KeyValue, cuts *int) ([]KeyValue, error) {
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return attrs, err
		}
		switch num {
		case 1, 3:
			if wt != protowire.BytesType {
				return attrs, wrongType("Resource", wt)
			}
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return attrs, err
			}
			if num == 1 {
				attrs = append(attrs, KeyValue{})
				if err := keyValue(b[s:e], &attrs[len(attrs)-1], 0, cuts); err != nil {
					return attrs, err
				}
			} else if err := entityRef(b[s:e]); err != nil {
				return attrs, err
			}
			pos = e
		case 2:
			if wt != protowire.VarintType {
				return attrs, wrongType("Resource.dropped_attributes_count", wt)
			}
			if _, pos, err = consumeVarint(b, p); err != nil {
				return attrs, err
			}
		default:
			if pos, err = skip(b, p, wt); err != nil {
				return attrs, err
			}
		}
	}
	return attrs, nil
}

func entityRef(b []byte) error {
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		if num >= 1 && num <= 4 {
			if wt != protowire.BytesType {
				return wrongType("EntityRef", wt)
			}
			if _, pos, err = consumeLen(b, p); err != nil {
				return err
			}
			continue
		}
		if pos, err = skip(b, p, wt); err != nil {
			return err
		}
	}
	return nil
}

// keyValue decodes a KeyValue into kv, merging into what kv already holds
// (a repeated value field merges, as in pdata).
func keyValue(b []byte, kv *KeyValue, depth int, cuts *int) error {
	// Fast path: key, then a value holding only a string, with one-byte
	// lengths: the shape SDKs and collectors write for nearly every
	// attribute. It accepts and yields exactly what the loop below does
	// for these bytes: every caller passes a zero kv, so there is nothing
	// to merge.
	if i := strKeyValue(b); i > 0 {
		kv.Key = b[2:i]
		kv.Value = AnyValue{Kind: KindStr, Str: b[i+4:]}
		return nil
	}
	return keyValueSlow(b, kv, depth, cuts)
}

// strKeyValue reports whether b has keyValue's fast-path shape (key, then
// a value holding only a string, one-byte lengths) by returning the offset
// of the value's tag, or 0 when it does not: then the key is b[2:i] and
// the string b[i+4:].
//
// It is small enough to inline into the walker's attribute loop.
func strKeyValue(b []byte) int {
	n := len(b)
	// Bytes 0 and 1: tag 0x0a, key length < 0x80.
	if n < 6 || binary.LittleEndian.Uint16(b)&0x80ff != 0x000a {
		return 0
	}
	if i := 2 + int(b[1]); i+4 <= n {
		// Bytes i..i+3, little-endian: tag 0x12, length < 0x80, tag
		// 0x0a, length < 0x80; the two lengths run exactly to the end.
		x := binary.LittleEndian.Uint32(b[i:])
		if x&0x80ff80ff == 0x000a0012 && int(x>>8&0xff) == n-i-2 && int(x>>24) == n-i-4 {
			return i
		}
	}
	return 0
}

// checkKeyValueSlow validates an attribute that lacks the fast-path shape
// by decoding it in full. The first pass only validates: an attribute with
// the fast-path shape (strKeyValue) is valid as it is, so it is neither
// decoded nor stored (no stores, no write barriers).
func (w *Walker) checkKeyValueSlow(b []byte) error {
	var kv KeyValue
	return keyValueSlow(b, &kv, 0, &w.deep)
}

// cuts is where the current pass counts values cut at MaxValueDepth: the
// first pass counts, the second decodes the same bytes again.
func (w *Walker) cuts() *int {
	if w.emit {
		return nil
	}
	return &w.deep
}

// keyValueSlow is keyValue without the fast path.
func keyValueSlow(b []byte, kv *KeyValue, depth int, cuts *int) error {
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		switch num {
		case 1, 2:
			if wt != protowire.BytesType {
				return wrongType("KeyValue", wt)
			}
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			if num == 1 {
				kv.Key = b[s:e]
			} else if err := anyValue(b[s:e], &kv.Value, depth, cuts); err != nil {
				return err
			}
			pos = e
		case 3:
			if wt != protowire.VarintType {
				return wrongType("KeyValue.key_strindex", wt)
			}
			if _, pos, err = consumeVarint(b, p); err != nil {
				return err
			}
		default:
			if pos, err = skip(b, p, wt); err != nil {
				return err
			}
		}
	}
	return nil
}

// anyValue decodes an AnyValue at depth (0 for an attribute's own value)
// into v, merging as pdata does: every oneof field replaces v, so a
// too-deep array followed by a string is the string, as in pdata. Values
// below MaxValueDepth are counted in *cuts when cuts is not nil.
func anyValue(b []byte, v *AnyValue, depth int, cuts *int) error {
	if depth > MaxValueDepth {
		// Not decoded, not validated: the bytes are bounds-checked by
		// the enclosing length and nothing below is looked at.
		*v = AnyValue{Kind: KindTooDeep}
		if cuts != nil {
			*cuts++
		}
		return nil
	}
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		switch num {
		case 1, 5, 6, 7:
			if wt != protowire.BytesType {
				return wrongType("AnyValue", wt)
			}
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			sub := b[s:e]
			switch num {
			case 1:
				*v = AnyValue{Kind: KindStr, Str: sub}
			case 5, 6:
				check, kind := arrayValue, KindArray
				if num == 6 {
					check, kind = kvList, KindMap
				}
				deep, err := check(sub, depth+1, cuts)
				if err != nil {
					return err
				}
				if deep {
					kind, sub = KindTooDeep, nil
				}
				*v = AnyValue{Kind: kind, Str: sub}
			case 7:
				*v = AnyValue{Kind: KindBytes, Str: sub}
			}
			pos = e
		case 2, 3, 8:
			if wt != protowire.VarintType {
				return wrongType("AnyValue", wt)
			}
			var n uint64
			if n, pos, err = consumeVarint(b, p); err != nil {
				return err
			}
			switch num {
			case 2:
				*v = AnyValue{Kind: KindBool, Bool: n != 0}
			case 3:
				*v = AnyValue{Kind: KindInt, Int: int64(n)}
			case 8:
				// string_value_strindex (profiles only): pdata reports the
				// value as empty.
				*v = AnyValue{Kind: KindEmpty}
			}
		case 4:
			if wt != protowire.Fixed64Type {
				return wrongType("AnyValue.double_value", wt)
			}
			var n uint64
			if n, pos, err = consumeI64(b, p); err != nil {
				return err
			}
			*v = AnyValue{Kind: KindDouble, Double: math.Float64frombits(n)}
		default:
			if pos, err = skip(b, p, wt); err != nil {
				return err
			}
		}
	}
	return nil
}

// arrayValue validates an ArrayValue whose elements are at depth and
// reports whether one of them is too deep.
func arrayValue(b []byte, depth int, cuts *int) (bool, error) {
	return repeatedValues(b, "ArrayValue.values", func(m []byte) (bool, error) {
		var v AnyValue
		err := anyValue(m, &v, depth, cuts)
		return v.Kind == KindTooDeep, err
	})
}

// kvList validates a KeyValueList whose values are at depth and reports
// whether one of them is too deep: every entry is, below MaxValueDepth.
func kvList(b []byte, depth int, cuts *int) (bool, error) {
	return repeatedValues(b, "KeyValueList.values", func(m []byte) (bool, error) {
		if depth > MaxValueDepth {
			// The entry's value is below the limit whether or not it
			// is present (pdata gives every entry a value).
			if cuts != nil {
				*cuts++
			}
			return true, nil
		}
		var kv KeyValue
		err := keyValue(m, &kv, depth, cuts)
		return kv.Value.Kind == KindTooDeep, err
	})
}

// repeatedValues validates field 1 (a repeated message, named field in
// errors) of a nested ArrayValue or KeyValueList with decode, skipping
// unknown fields, and reports whether decode found an element too deep.
// Every element is validated either way, as pdata would. Nested values
// are rare, so this path favours one loop over inlined speed.
func repeatedValues(b []byte, field string, decode func(m []byte) (bool, error)) (bool, error) {
	deep := false
	for pos := 0; pos < len(b); {
		num, wt, p, err := consumeTag(b, pos)
		if err != nil {
			return false, err
		}
		if num != 1 {
			if pos, err = skip(b, p, wt); err != nil {
				return false, err
			}
			continue
		}
		if wt != protowire.BytesType {
			return false, wrongType(field, wt)
		}
		s, e, err := consumeLen(b, p)
		if err != nil {
			return false, err
		}
		d, err := decode(b[s:e])
		if err != nil {
			return false, err
		}
		deep = deep || d
		pos = e
	}
	return deep, nil
}

func (w *Walker) scopeMetrics(b []byte) error {
	var name, version []byte
	w.scopeAttrs = w.scopeAttrs[:0]
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		switch num {
		case 1, 2, 3:
			if wt != protowire.BytesType {
				return wrongType("ScopeMetrics", wt)
			}
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			switch num {
			case 1:
				if name, version, err = w.scope(b[s:e], name, version); err != nil {
					return err
				}
			case 2:
				if !w.emit {
					if err := w.metric(b[s:e]); err != nil {
						return err
					}
				}
			}
			pos = e
		default:
			if pos, err = skip(b, p, wt); err != nil {
				return err
			}
		}
	}
	if !w.emit {
		return nil
	}
	w.h.Scope(name, version, w.scopeAttrs)
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		if num == 2 {
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			if err := w.metric(b[s:e]); err != nil {
				return err
			}
			pos = e
			continue
		}
		if pos, err = skip(b, p, wt); err != nil {
			return err
		}
	}
	return nil
}

// scope merges an InstrumentationScope into name, version and w.scopeAttrs.
func (w *Walker) scope(b, name, version []byte) ([]byte, []byte, error) {
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return nil, nil, err
		}
		switch num {
		case 1, 2, 3:
			if wt != protowire.BytesType {
				return nil, nil, wrongType("InstrumentationScope", wt)
			}
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return nil, nil, err
			}
			switch num {
			case 1:
				name = b[s:e]
			case 2:
				version = b[s:e]
			case 3:
				w.scopeAttrs = append(w.scopeAttrs, KeyValue{})
				if err := keyValue(b[s:e], &w.scopeAttrs[len(w.scopeAttrs)-1], 0, w.cuts()); err != nil {
					return nil, nil, err
				}
			}
			pos = e
		case 4:
			if wt != protowire.VarintType {
				return nil, nil, wrongType("InstrumentationScope.dropped_attributes_count", wt)
			}
			if _, pos, err = consumeVarint(b, p); err != nil {
				return nil, nil, err
			}
		default:
			if pos, err = skip(b, p, wt); err != nil {
				return nil, nil, err
			}
		}
	}
	return name, version, nil
}

func (w *Walker) metric(b []byte) error {
	// The Metric lives in the Walker: a local would escape through the
	// Handler interface and cost an allocation per metric.
	m := &w.m
	*m = Metric{}
	var data []byte
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		switch num {
		case 1, 2, 3, 5, 7, 9, 10, 11, 12:
			if wt != protowire.BytesType {
				return wrongType("Metric", wt)
			}
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			sub := b[s:e]
			switch num {
			case 1:
				m.Name = sub
			case 3:
				m.Unit = sub
			case 5, 7, 9, 10, 11:
				// oneof data: every occurrence replaces the previous one.
				m.Type = metricType(num)
				data = sub
				if !w.emit {
					if err := w.data(sub, m.Type, nil); err != nil {
						return err
					}
				}
			case 12:
				var kv KeyValue
				if err := keyValue(sub, &kv, 0, w.cuts()); err != nil {
					return err
				}
			}
			pos = e
		default:
			if pos, err = skip(b, p, wt); err != nil {
				return err
			}
		}
	}
	if !w.emit {
		return nil
	}
	if m.Type == TypeEmpty {
		w.h.Metric(m, 0)
		return nil
	}
	return w.data(data, m.Type, m)
}

func metricType(field int32) MetricType {
	switch field {
	case 5:
		return TypeGauge
	case 7:
		return TypeSum
	case 9:
		return TypeHistogram
	case 10:
		return TypeExponentialHistogram
	default:
		return TypeSummary
	}
}

// data walks a Gauge, Sum, Histogram, ExponentialHistogram or Summary.
// With m == nil it only validates.
func (w *Walker) data(b []byte, t MetricType, m *Metric) error {
	points := 0
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		switch {
		case num == 1:
			if wt != protowire.BytesType {
				return wrongType("data_points", wt)
			}
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			points++
			if m == nil {
				if err := w.point(b[s:e], t); err != nil {
					return err
				}
			}
			pos = e
		case num == 2 && (t == TypeSum || t == TypeHistogram || t == TypeExponentialHistogram),
			num == 3 && t == TypeSum:
			if wt != protowire.VarintType {
				return wrongType("aggregation_temporality/is_monotonic", wt)
			}
			var n uint64
			if n, pos, err = consumeVarint(b, p); err != nil {
				return err
			}
			if m != nil {
				if num == 2 {
					m.Temporality = int32(n)
				} else {
					m.Monotonic = n != 0
				}
			}
		default:
			if pos, err = skip(b, p, wt); err != nil {
				return err
			}
		}
	}
	if m == nil || !w.h.Metric(m, points) {
		return nil
	}
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		if num == 1 {
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			if !w.fromRecord(b[s:e], t) {
				if err := w.point(b[s:e], t); err != nil {
					return err
				}
			}
			w.h.Point(&w.pt)
			pos = e
			continue
		}
		if pos, err = skip(b, p, wt); err != nil {
			return err
		}
	}
	return nil
}

// addr is the address of a point's first payload byte, its record key.
// An empty payload still has a distinct address: its tag and length
// bytes precede it, so no other point starts there.
func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// record keeps the number point the first pass just decoded.
func (w *Walker) record(b []byte, rawStart, rawEnd int) {
	if len(w.recs) >= maxRecs || len(b) > math.MaxInt32 {
		return
	}
	pt := &w.pt
	r := pointRec{
		at: addr(b), startTime: pt.StartTime, time: pt.Time, flags: pt.Flags, kind: pt.NumberKind,
		rawStart: int32(rawStart), rawEnd: int32(rawEnd),
	}
	switch pt.NumberKind {
	case NumberDouble:
		r.value = math.Float64bits(pt.Double)
	case NumberInt:
		r.value = uint64(pt.Int)
	}
	w.recs = append(w.recs, r)
}

// fromRecord fills w.pt from the first pass's record of the point b, if
// there is one.
func (w *Walker) fromRecord(b []byte, t MetricType) bool {
	if t != TypeGauge && t != TypeSum {
		return false
	}
	a := addr(b)
	for w.cursor < len(w.recs) && w.recs[w.cursor].at < a {
		w.cursor++ // a point this pass does not visit
	}
	if w.cursor == len(w.recs) || w.recs[w.cursor].at != a {
		return false
	}
	r := &w.recs[w.cursor]
	w.cursor++
	pt := &w.pt
	pt.reset()
	if pt.hasExp {
		pt.clearExp()
	}
	pt.StartTime, pt.Time, pt.Flags, pt.NumberKind = r.startTime, r.time, r.flags, r.kind
	switch r.kind {
	case NumberDouble:
		pt.Double = math.Float64frombits(r.value)
	case NumberInt:
		pt.Int = int64(r.value)
	}
	pt.Raw, pt.attrField = true, pointLayout[t].attrs
	if r.rawStart >= 0 {
		pt.RawAttrs, pt.pending = b[r.rawStart:r.rawEnd], true
	} else {
		pt.RawAttrs = b[:0]
	}
	return true
}

// Field numbers of the point messages, by metric type.
type pointFields struct {
	attrs, exemplars, flags int32
}

var pointLayout = [...]pointFields{
	TypeGauge:                {attrs: 7, exemplars: 5, flags: 8},
	TypeSum:                  {attrs: 7, exemplars: 5, flags: 8},
	TypeHistogram:            {attrs: 9, exemplars: 8, flags: 10},
	TypeExponentialHistogram: {attrs: 1, exemplars: 11, flags: 10},
	TypeSummary:              {attrs: 7, exemplars: -1, flags: 8},
}

// point decodes one data point of type t into w.pt. The first pass
// decodes (validates) attributes and drops them; the second records their
// span for Point.Attributes instead.
func (w *Walker) point(b []byte, t MetricType) error {
	pt := &w.pt
	if w.emit {
		pt.reset()
		if pt.hasExp {
			pt.clearExp()
		}
	} else {
		// The first pass reads back only what record keeps; the repeated
		// fields must start empty.
		pt.BucketCounts, pt.Bounds, pt.Quantiles, pt.NegCounts = pt.BucketCounts[:0], pt.Bounds[:0], pt.Quantiles[:0], pt.NegCounts[:0]
		pt.StartTime, pt.Time, pt.Flags = 0, 0, 0
		pt.NumberKind, pt.Double, pt.Int = NumberNone, 0, 0
	}
	if t == TypeExponentialHistogram {
		pt.hasExp = true
	}
	lay := pointLayout[t]
	rawStart, rawEnd := -1, 0
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		switch num {
		case lay.attrs, lay.exemplars:
			if wt != protowire.BytesType {
				return wrongType("attributes/exemplars", wt)
			}
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			switch {
			case num != lay.attrs:
				if !w.emit { // validated by the first pass
					err = w.exemplar(b[s:e])
				}
			default:
				if rawStart < 0 {
					rawStart = pos
				}
				rawEnd = e
				if !w.emit {
					if strKeyValue(b[s:e]) == 0 {
						err = w.checkKeyValueSlow(b[s:e])
					}
				}
			}
			if err != nil {
				return err
			}
			pos = e
		case lay.flags:
			if wt != protowire.VarintType {
				return wrongType("flags", wt)
			}
			var n uint64
			if n, pos, err = consumeVarint(b, p); err != nil {
				return err
			}
			pt.Flags = uint32(n)
		case 2, 3:
			if wt != protowire.Fixed64Type {
				return wrongType("time", wt)
			}
			var n uint64
			if n, pos, err = consumeI64(b, p); err != nil {
				return err
			}
			if num == 2 {
				pt.StartTime = n
			} else {
				pt.Time = n
			}
		default:
			var handled bool
			var err error
			switch t {
			case TypeGauge, TypeSum:
				handled, pos, err = w.numberField(b, p, num, wt)
			case TypeHistogram:
				handled, pos, err = histogramField(b, p, num, wt, pt, &pt.BucketCounts, &pt.Bounds)
			case TypeExponentialHistogram:
				handled, pos, err = expHistogramField(b, p, num, wt, pt)
			case TypeSummary:
				handled, pos, err = summaryField(b, p, num, wt, pt, &pt.Quantiles)
			}
			if err != nil {
				return err
			}
			if !handled {
				if pos, err = skip(b, p, wt); err != nil {
					return err
				}
			}
		}
	}
	switch {
	case w.emit:
		pt.Raw, pt.attrField = true, lay.attrs
		if rawStart >= 0 {
			pt.RawAttrs, pt.pending = b[rawStart:rawEnd], true
		} else {
			pt.RawAttrs = b[:0]
		}
	case t == TypeGauge || t == TypeSum:
		w.record(b, rawStart, rawEnd)
	}
	return nil
}

func (w *Walker) numberField(b []byte, p int, num int32, wt protowire.Type) (bool, int, error) {
	if num != 4 && num != 6 {
		return false, p, nil
	}
	if wt != protowire.Fixed64Type {
		return true, 0, wrongType("NumberDataPoint.value", wt)
	}
	n, pos, err := consumeI64(b, p)
	if err != nil {
		return true, 0, err
	}
	if num == 4 {
		w.pt.NumberKind, w.pt.Double, w.pt.Int = NumberDouble, math.Float64frombits(n), 0
	} else {
		w.pt.NumberKind, w.pt.Int, w.pt.Double = NumberInt, int64(n), 0
	}
	return true, pos, nil
}

func histogramField(b []byte, p int, num int32, wt protowire.Type, pt *Point, counts *[]uint64, bounds *[]float64) (bool, int, error) {
	switch num {
	case 4, 5, 11, 12:
		if wt != protowire.Fixed64Type {
			return true, 0, wrongType("HistogramDataPoint", wt)
		}
		n, pos, err := consumeI64(b, p)
		if err != nil {
			return true, 0, err
		}
		switch num {
		case 4:
			pt.Count = n
		case 5:
			pt.Sum, pt.HasSum = math.Float64frombits(n), true
		}
		return true, pos, nil
	case 6, 7:
		switch wt {
		case protowire.BytesType:
			var s, e int
			var err error
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return true, 0, err
			}
			if (e-s)%8 != 0 {
				return true, 0, errBadFieldLen
			}
			// A packed occurrence replaces earlier values (pdata).
			if num == 6 {
				*counts = (*counts)[:0]
				for i := s; i < e; i += 8 {
					*counts = append(*counts, binary.LittleEndian.Uint64(b[i:]))
				}
			} else {
				*bounds = (*bounds)[:0]
				for i := s; i < e; i += 8 {
					*bounds = append(*bounds, math.Float64frombits(binary.LittleEndian.Uint64(b[i:])))
				}
			}
			return true, e, nil
		case protowire.Fixed64Type:
			n, pos, err := consumeI64(b, p)
			if err != nil {
				return true, 0, err
			}
			if num == 6 {
				*counts = append(*counts, n)
			} else {
				*bounds = append(*bounds, math.Float64frombits(n))
			}
			return true, pos, nil
		default:
			return true, 0, wrongType("HistogramDataPoint buckets", wt)
		}
	}
	return false, p, nil
}

func expHistogramField(b []byte, p int, num int32, wt protowire.Type, pt *Point) (bool, int, error) {
	switch num {
	case 4, 5, 7, 12, 13, 14:
		if wt != protowire.Fixed64Type {
			return true, 0, wrongType("ExponentialHistogramDataPoint", wt)
		}
		n, pos, err := consumeI64(b, p)
		if err != nil {
			return true, 0, err
		}
		switch num {
		case 4:
			pt.Count = n
		case 5:
			pt.Sum, pt.HasSum = math.Float64frombits(n), true
		case 7:
			pt.ZeroCount = n
		case 14:
			pt.ZeroThreshold = math.Float64frombits(n)
		}
		return true, pos, nil
	case 6:
		if wt != protowire.VarintType {
			return true, 0, wrongType("ExponentialHistogramDataPoint.scale", wt)
		}
		n, pos, err := consumeVarint(b, p)
		pt.Scale = int32(protowire.DecodeZigZag(n)) // sint32, truncated as pdata does
		return true, pos, err
	case 8, 9:
		if wt != protowire.BytesType {
			return true, 0, wrongType("ExponentialHistogramDataPoint buckets", wt)
		}
		var s, e int
		var err error
		if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
			s, e = p+1, p+1+int(b[p])
		} else if s, e, err = consumeLen(b, p); err != nil {
			return true, 0, err
		}
		// A repeated occurrence merges into the side, as pdata's does:
		// the offset is replaced, the counts are appended.
		if num == 8 {
			return true, e, expBuckets(b[s:e], &pt.PosOffset, &pt.BucketCounts, &pt.BucketsOverflow)
		}
		return true, e, expBuckets(b[s:e], &pt.NegOffset, &pt.NegCounts, &pt.BucketsOverflow)
	}
	return false, p, nil
}

// expBuckets decodes one side of an exponential histogram into offset and
// counts (at most MaxExpBuckets; past that it sets overflow).
func expBuckets(b []byte, offset *int32, counts *[]uint64, overflow *bool) error {
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		switch num {
		case 1:
			if wt != protowire.VarintType {
				return wrongType("Buckets.offset", wt)
			}
			var n uint64
			if n, pos, err = consumeVarint(b, p); err != nil {
				return err
			}
			*offset = int32(protowire.DecodeZigZag(n)) // sint32, as pdata
		case 2:
			add := func(n uint64) {
				if len(*counts) < MaxExpBuckets {
					*counts = append(*counts, n)
				} else {
					*overflow = true
				}
			}
			switch wt {
			case protowire.BytesType:
				var s, e int
				if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
					s, e = p+1, p+1+int(b[p])
				} else if s, e, err = consumeLen(b, p); err != nil {
					return err
				}
				for q := s; q < e; {
					var n uint64
					if n, q, err = consumeVarint(b[:e], q); err != nil {
						return err
					}
					add(n)
				}
				pos = e
			case protowire.VarintType:
				var n uint64
				if n, pos, err = consumeVarint(b, p); err != nil {
					return err
				}
				add(n)
			default:
				return wrongType("Buckets.bucket_counts", wt)
			}
		default:
			if pos, err = skip(b, p, wt); err != nil {
				return err
			}
		}
	}
	return nil
}

func summaryField(b []byte, p int, num int32, wt protowire.Type, pt *Point, qs *[]Quantile) (bool, int, error) {
	switch num {
	case 4, 5:
		if wt != protowire.Fixed64Type {
			return true, 0, wrongType("SummaryDataPoint", wt)
		}
		n, pos, err := consumeI64(b, p)
		if err != nil {
			return true, 0, err
		}
		if num == 4 {
			pt.Count = n
		} else {
			pt.Sum, pt.HasSum = math.Float64frombits(n), true
		}
		return true, pos, nil
	case 6:
		if wt != protowire.BytesType {
			return true, 0, wrongType("SummaryDataPoint.quantile_values", wt)
		}
		var s, e int
		var err error
		if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
			s, e = p+1, p+1+int(b[p])
		} else if s, e, err = consumeLen(b, p); err != nil {
			return true, 0, err
		}
		var q Quantile
		sub := b[s:e]
		for pos := 0; pos < len(sub); {
			n, wt, p2, err := consumeTag(sub, pos)
			if err != nil {
				return true, 0, err
			}
			if n == 1 || n == 2 {
				if wt != protowire.Fixed64Type {
					return true, 0, wrongType("ValueAtQuantile", wt)
				}
				var v uint64
				if v, pos, err = consumeI64(sub, p2); err != nil {
					return true, 0, err
				}
				if n == 1 {
					q.Quantile = math.Float64frombits(v)
				} else {
					q.Value = math.Float64frombits(v)
				}
				continue
			}
			if pos, err = skip(sub, p2, wt); err != nil {
				return true, 0, err
			}
		}
		*qs = append(*qs, q)
		return true, e, nil
	}
	return false, p, nil
}

func (w *Walker) exemplar(b []byte) error {
	for pos := 0; pos < len(b); {
		var (
			num int32
			wt  protowire.Type
			p   int
			err error
		)
		if c := b[pos]; c < 0x80 && c >= 8 { // one-byte tag, inlined
			num, wt, p = int32(c>>3), protowire.Type(c&7), pos+1
		} else if num, wt, p, err = consumeTag(b, pos); err != nil {
			return err
		}
		switch num {
		case 7, 4, 5:
			if wt != protowire.BytesType {
				return wrongType("Exemplar", wt)
			}
			var s, e int
			if p < len(b) && b[p] < 0x80 && p+1+int(b[p]) <= len(b) { // one-byte length, inlined
				s, e = p+1, p+1+int(b[p])
			} else if s, e, err = consumeLen(b, p); err != nil {
				return err
			}
			switch {
			case num == 7:
				var kv KeyValue
				if err := keyValue(b[s:e], &kv, 0, w.cuts()); err != nil {
					return err
				}
			case num == 5 && e-s != 0 && e-s != 16, num == 4 && e-s != 0 && e-s != 8:
				return errBadID
			}
			pos = e
		case 2, 3, 6:
			if wt != protowire.Fixed64Type {
				return wrongType("Exemplar", wt)
			}
			if _, pos, err = consumeI64(b, p); err != nil {
				return err
			}
		default:
			if pos, err = skip(b, p, wt); err != nil {
				return err
			}
		}
	}
	return nil
}
