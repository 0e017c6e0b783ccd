package promapi

import (
	"io"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
)

// flushSize is how many bytes jsonWriter gathers before writing them out.
// An answer is encoded straight to the connection through this buffer, so
// its JSON is never held whole: a range query of 5M points is ~100 MB of
// JSON, while the points themselves take 80 MB (issue #12 class 6 measured
// 480 MB per buffered answer). One label value can push the buffer past
// flushSize by at most its escaped length (6 × --max-label-value-length).
const flushSize = 32 << 10

// jsonWriter encodes an answer piece by piece into a bounded buffer and
// writes it out whenever the buffer fills. It keeps the first write error
// and then drops everything, so callers check err only to stop early.
type jsonWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func newJSONWriter(w io.Writer) *jsonWriter {
	return &jsonWriter{w: w, buf: make([]byte, 0, flushSize+flushSize/4)}
}

func (j *jsonWriter) raw(s string) { j.buf = append(j.buf, s...) }

func (j *jsonWriter) char(b byte) { j.buf = append(j.buf, b) }

func (j *jsonWriter) str(s string) {
	j.buf = appendString(j.buf, s)
	j.maybeFlush()
}

// maybeFlush writes the buffer out once it holds flushSize bytes.
func (j *jsonWriter) maybeFlush() {
	if len(j.buf) >= flushSize {
		j.flush()
	}
}

// flush writes out what the buffer holds.
func (j *jsonWriter) flush() {
	if j.err == nil && len(j.buf) > 0 {
		_, j.err = j.w.Write(j.buf)
	}
	j.buf = j.buf[:0]
}

// labels writes a label set as a JSON object. Labels are sorted by name,
// which is also the key order encoding/json gives a map.
func (j *jsonWriter) labelSet(l labels.Labels) {
	j.char('{')
	first := true
	l.Range(func(lb labels.Label) {
		if !first {
			j.char(',')
		}
		first = false
		j.buf = appendString(j.buf, lb.Name)
		j.char(':')
		j.buf = appendString(j.buf, lb.Value)
		j.maybeFlush()
	})
	j.char('}')
}

// point writes [seconds, "value"].
func (j *jsonWriter) point(t int64, f float64) {
	j.buf = appendPoint(j.buf, t, f)
	j.maybeFlush()
}

// histPoint writes [seconds, {histogram}] in Prometheus's encoding
// (jsonutil.MarshalHistogram): count and sum as strings, then the
// non-empty buckets as [boundaries, "lower", "upper", "count"], where
// boundaries is 0 (upper inclusive), 1 (lower inclusive), 2 (neither) or
// 3 (both).
func (j *jsonWriter) histPoint(t int64, h *histogram.FloatHistogram) {
	j.char('[')
	j.buf = appendTimestamp(j.buf, t)
	j.raw(`,{"count":"`)
	j.buf = appendFloat(j.buf, h.Count)
	j.raw(`","sum":"`)
	j.buf = appendFloat(j.buf, h.Sum)
	j.char('"')
	found := false
	for it := query.Buckets(h); it.Next(); {
		b := it.At()
		if b.Count == 0 {
			continue
		}
		if found {
			j.char(',')
		} else {
			j.raw(`,"buckets":[`)
			found = true
		}
		boundaries := byte('2')
		switch {
		case b.LowerInclusive && b.UpperInclusive:
			boundaries = '3'
		case b.LowerInclusive:
			boundaries = '1'
		case b.UpperInclusive:
			boundaries = '0'
		}
		j.char('[')
		j.char(boundaries)
		j.raw(`,"`)
		j.buf = appendFloat(j.buf, b.Lower)
		j.raw(`","`)
		j.buf = appendFloat(j.buf, b.Upper)
		j.raw(`","`)
		j.buf = appendFloat(j.buf, b.Count)
		j.raw(`"]`)
		j.maybeFlush()
	}
	if found {
		j.char(']')
	}
	j.raw("}]")
	j.maybeFlush()
}

// strings writes a JSON array of strings.
func (j *jsonWriter) stringList(ss []string) {
	j.char('[')
	for i, s := range ss {
		if i > 0 {
			j.char(',')
		}
		j.str(s)
	}
	j.char(']')
}

// appendPoint writes [seconds, "value"] exactly as Prometheus's jsonutil
// does: seconds with up to three fraction digits, the value as a string.
func appendPoint(b []byte, t int64, f float64) []byte {
	b = append(b, '[')
	b = appendTimestamp(b, t)
	b = append(b, ',', '"')
	b = appendFloat(b, f)
	return append(b, '"', ']')
}

func appendTimestamp(b []byte, t int64) []byte {
	// Unsigned, so that math.MinInt64 has a magnitude.
	u := uint64(t)
	if t < 0 {
		b = append(b, '-')
		u = -u
	}
	b = strconv.AppendUint(b, u/1000, 10)
	if frac := u % 1000; frac != 0 {
		b = append(b, '.')
		if frac < 100 {
			b = append(b, '0')
		}
		if frac < 10 {
			b = append(b, '0')
		}
		b = strconv.AppendUint(b, frac, 10)
	}
	return b
}

// appendFloat formats a sample value as Prometheus does: plain decimal,
// exponent form below 1e-6 and from 1e21, "NaN", "+Inf" and "-Inf".
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string byte for byte as encoding/json
// does with its default HTML escaping (which the API used before it
// streamed): <, > and & as \u003c…, control characters as \n, \t, \u0001…,
// invalid UTF-8 as \ufffd, and U+2028/U+2029 escaped. FuzzAppendString
// checks it against encoding/json.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
