package otlpwire

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/synth"
)

// collect is a Handler that records what it is given.
type collect struct {
	resources, scopes, metrics, points int
	names                              []string
	times                              []uint64
}

func (c *collect) Resource([]KeyValue)             { c.resources++ }
func (c *collect) Scope(_, _ []byte, _ []KeyValue) { c.scopes++ }
func (c *collect) Metric(m *Metric, _ int) bool {
	c.metrics++
	c.names = append(c.names, string(m.Name))
	return true
}

func (c *collect) Point(p *Point) {
	c.points++
	c.times = append(c.times, p.Time)
}

func TestWalkSynth(t *testing.T) {
	t.Parallel()
	p := synth.Config{Seed: 1, Series: 50, PointsPerRequest: 50, Metrics: 5}.Cover(42)[0]
	var w Walker
	var c collect
	require.NoError(t, w.Walk(p.Bytes, &c))
	assert.Equal(t, 1, c.resources)
	assert.Equal(t, 1, c.scopes)
	assert.Equal(t, 5, c.metrics)
	assert.Equal(t, 50, c.points)
	for _, ts := range c.times {
		assert.Equal(t, uint64(42), ts)
	}
}

// TestWalkErrors checks that malformed input fails before anything is
// emitted, and that hostile nesting is bounded.
func TestWalkErrors(t *testing.T) {
	t.Parallel()
	nested := protowire.AppendTag(nil, 1, protowire.BytesType)
	nested = protowire.AppendString(nested, "leaf") // AnyValue{string_value}
	for range MaxValueDepth + 2 {
		arr := protowire.AppendTag(nil, 1, protowire.BytesType) // ArrayValue.values
		arr = protowire.AppendBytes(arr, nested)
		nested = protowire.AppendTag(nil, 5, protowire.BytesType) // AnyValue.array_value
		nested = protowire.AppendBytes(nested, arr)
	}
	kv := protowire.AppendTag(nil, 2, protowire.BytesType)
	kv = protowire.AppendBytes(kv, nested)
	res := protowire.AppendTag(nil, 1, protowire.BytesType)
	res = protowire.AppendBytes(res, kv)
	rm := protowire.AppendTag(nil, 1, protowire.BytesType)
	rm = protowire.AppendBytes(rm, res)
	deep := protowire.AppendTag(nil, 1, protowire.BytesType)
	deep = protowire.AppendBytes(deep, rm)

	valid := synth.Config{Seed: 1, Series: 10, PointsPerRequest: 10, Metrics: 2}.Cover(42)[0].Bytes
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"truncated", valid[:len(valid)-1], ErrMalformed},
		{"field_zero", []byte{0x00}, ErrMalformed},
		{"wrong_wire_type", []byte{0x08, 0x01}, ErrMalformed},
		{"overlong_length", []byte{0x0a, 0x7f}, ErrMalformed},
		{"end_group", []byte{0x0c}, ErrMalformed},
		{"too_deep", deep, ErrTooDeep},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w Walker
			var c collect
			err := w.Walk(tc.in, &c)
			require.Error(t, err)
			require.ErrorIs(t, err, tc.want)
			assert.Zero(t, c.resources+c.points, "nothing emitted")
		})
	}
}

// FuzzWalk never panics; a walk that succeeds once succeeds again with the
// same points.
//
// go test -run '^$' -fuzz '^FuzzWalk$' -fuzztime 30s ./pkg/internal/otlpwire
func FuzzWalk(f *testing.F) {
	f.Add(synth.Config{Seed: 1, Series: 10, PointsPerRequest: 10, Metrics: 2}.Cover(42)[0].Bytes)
	f.Add(synth.Config{Seed: 1, Series: 10, PointsPerRequest: 10, Metrics: 2, Histogram: true}.Cover(42)[0].Bytes)
	f.Fuzz(func(t *testing.T, b []byte) {
		var w Walker
		var c1, c2 collect
		err1 := w.Walk(b, &c1)
		err2 := w.Walk(b, &c2)
		require.Equal(t, err1 == nil, err2 == nil)
		require.Equal(t, c1, c2)
	})
}

// TestPointReset checks that reset leaves a Point equal to a zero one
// except for the capacity of its slices, so a field added later cannot
// leak from one point into the next.
func TestPointReset(t *testing.T) {
	t.Parallel()
	p := Point{
		Attrs: []KeyValue{{Key: []byte("k")}}, RawAttrs: []byte("r"), Raw: true,
		attrField: 7, pending: true, StartTime: 1, Time: 2, Flags: 3,
		NumberKind: NumberInt, Double: 4, Int: 5, Count: 6, Sum: 7, HasSum: true,
		BucketCounts: []uint64{1}, Bounds: []float64{1}, Quantiles: []Quantile{{1, 2}},
	}
	// Every field is set above: a new field must be added there too.
	v := reflect.ValueOf(p)
	for i := range v.NumField() {
		require.False(t, v.Field(i).IsZero(), "field %s not set by the test", v.Type().Field(i).Name)
	}
	p.reset()
	for _, n := range []int{len(p.Attrs), len(p.BucketCounts), len(p.Bounds), len(p.Quantiles)} {
		require.Zero(t, n)
	}
	require.NotZero(t, cap(p.Attrs))
	p.Attrs, p.BucketCounts, p.Bounds, p.Quantiles = nil, nil, nil, nil
	require.Equal(t, Point{}, p)
}

// FuzzKeyValueFastPath checks that keyValue's fast path accepts and yields
// exactly what the general decoder does, and that the first pass's check
// (strKeyValue, else checkKeyValueSlow) accepts exactly what it does.
//
// go test -run '^$' -fuzz '^FuzzKeyValueFastPath$' -fuzztime 30s ./pkg/internal/otlpwire
func FuzzKeyValueFastPath(f *testing.F) {
	str := func(k, v string) []byte {
		av := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), v)
		b := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), k)
		return protowire.AppendBytes(protowire.AppendTag(b, 2, protowire.BytesType), av)
	}
	f.Add(str("pod", "pod-1"))
	f.Add(str("", ""))
	f.Add(append(str("a", "b"), str("c", "d")...))
	f.Add(str("k", string(make([]byte, 200))))
	// One-byte lengths at their limit, and just past it (two-byte varints).
	f.Add(str("k", string(make([]byte, 0x7d))))
	f.Add(str("k", string(make([]byte, 0x7e))))
	f.Add(str("k", string(make([]byte, 0x80))))
	f.Add(str(string(make([]byte, 0x7f)), "v"))
	f.Add(str(string(make([]byte, 0x80)), "v"))
	f.Add(append(str("a", "b"), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, slow KeyValue
		errF := keyValue(b, &fast, 0)
		errS := keyValueSlow(b, &slow, 0)
		require.Equal(t, errS == nil, errF == nil, "fast %v, slow %v", errF, errS)
		var errC error
		if strKeyValue(b) == 0 {
			errC = checkKeyValueSlow(b)
		}
		require.Equal(t, errS == nil, errC == nil, "check %v, slow %v", errC, errS)
		if errS == nil {
			require.Equal(t, slow, fast)
		}
	})
}

// rawCollect records each point's raw attribute span and its lazily
// decoded attributes.
type rawCollect struct {
	raws  []string
	attrs [][]string
}

func (*rawCollect) Resource([]KeyValue)             {}
func (*rawCollect) Scope(_, _ []byte, _ []KeyValue) {}
func (*rawCollect) Metric(*Metric, int) bool        { return true }
func (c *rawCollect) Point(p *Point) {
	if !p.Raw {
		panic("the walker must emit raw attribute spans")
	}
	c.raws = append(c.raws, string(p.RawAttrs))
	var kvs []string
	for _, kv := range p.Attributes() {
		kvs = append(kvs, string(kv.Key)+"="+string(kv.Value.Str))
	}
	c.attrs = append(c.attrs, kvs)
}

// TestRawAttrs checks the span the walker emits: it holds every
// attribute, also when other fields sit between attributes, and
// Attributes decodes from it what is there.
func TestRawAttrs(t *testing.T) {
	t.Parallel()
	attr := func(k, v string) []byte {
		av := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), v)
		kv := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), k)
		kv = protowire.AppendBytes(protowire.AppendTag(kv, 2, protowire.BytesType), av)
		return protowire.AppendBytes(protowire.AppendTag(nil, 7, protowire.BytesType), kv) // NumberDataPoint.attributes
	}
	ts := func(n uint64) []byte {
		return protowire.AppendFixed64(protowire.AppendTag(nil, 3, protowire.Fixed64Type), n)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	tests := []struct {
		name  string
		point []byte
		raw   []byte
		attrs []string
	}{
		{"none", ts(1), nil, nil},
		{"leading", cat(attr("a", "1"), attr("b", "2"), ts(1)), cat(attr("a", "1"), attr("b", "2")), []string{"a=1", "b=2"}},
		{"trailing", cat(ts(1), attr("a", "1")), attr("a", "1"), []string{"a=1"}},
		{"interleaved", cat(attr("a", "1"), ts(7), attr("b", "2")), cat(attr("a", "1"), ts(7), attr("b", "2")), []string{"a=1", "b=2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gauge := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), tt.point)
			metric := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "m")
			metric = protowire.AppendBytes(protowire.AppendTag(metric, 5, protowire.BytesType), gauge)
			sm := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), metric)
			rm := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), sm)
			req := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), rm)
			var w Walker
			var c rawCollect
			require.NoError(t, w.Walk(req, &c))
			require.Len(t, c.raws, 1)
			assert.Equal(t, string(tt.raw), c.raws[0])
			assert.Equal(t, tt.attrs, c.attrs[0])
		})
	}
}

// valueCollect records each emitted number point.
type valueCollect struct{ got []string }

func (*valueCollect) Resource([]KeyValue)             {}
func (*valueCollect) Scope(_, _ []byte, _ []KeyValue) {}
func (*valueCollect) Metric(*Metric, int) bool        { return true }
func (c *valueCollect) Point(p *Point) {
	s := fmt.Sprintf("t=%d kind=%d d=%g i=%d flags=%d", p.Time, p.NumberKind, p.Double, p.Int, p.Flags)
	for _, kv := range p.Attributes() {
		s += " " + string(kv.Key) + "=" + string(kv.Value.Str)
	}
	c.got = append(c.got, s)
}

// TestRecordsFollowEmission checks that the second pass pairs the first
// pass's point records with the points it emits when it skips some: a
// metric whose data oneof occurs twice emits only the last occurrence,
// and deprecated instrumentation_library_metrics are ignored next to
// scope_metrics (pdata's rules).
func TestRecordsFollowEmission(t *testing.T) {
	t.Parallel()
	point := func(tm uint64, v float64, attr string) []byte {
		av := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), attr)
		kv := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "a")
		kv = protowire.AppendBytes(protowire.AppendTag(kv, 2, protowire.BytesType), av)
		dp := protowire.AppendBytes(protowire.AppendTag(nil, 7, protowire.BytesType), kv)
		dp = protowire.AppendFixed64(protowire.AppendTag(dp, 3, protowire.Fixed64Type), tm)
		return protowire.AppendFixed64(protowire.AppendTag(dp, 4, protowire.Fixed64Type), math.Float64bits(v))
	}
	data := func(pts ...[]byte) []byte {
		var d []byte
		for _, p := range pts {
			d = protowire.AppendBytes(protowire.AppendTag(d, 1, protowire.BytesType), p)
		}
		return d
	}
	metric := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "m")
	metric = protowire.AppendBytes(protowire.AppendTag(metric, 5, protowire.BytesType), data(point(1, 1, "x"), point(2, 2, "y"))) // gauge, replaced
	metric = protowire.AppendBytes(protowire.AppendTag(metric, 7, protowire.BytesType), data(point(3, 3, "z")))                   // sum, kept
	second := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "n")
	second = protowire.AppendBytes(protowire.AppendTag(second, 5, protowire.BytesType), data(point(4, 4, "w")))
	sm := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), metric)
	ignored := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "old")
	ignored = protowire.AppendBytes(protowire.AppendTag(ignored, 5, protowire.BytesType), data(point(9, 9, "ignored")))
	legacy := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), ignored)
	rm := protowire.AppendBytes(protowire.AppendTag(nil, 1000, protowire.BytesType), legacy) // ignored: scope_metrics present
	rm = protowire.AppendBytes(protowire.AppendTag(rm, 2, protowire.BytesType), sm)
	rm = protowire.AppendBytes(protowire.AppendTag(rm, 2, protowire.BytesType), protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), second))
	req := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), rm)

	var w Walker
	var c valueCollect
	require.NoError(t, w.Walk(req, &c))
	assert.Equal(t, []string{
		"t=3 kind=1 d=3 i=0 flags=0 a=z",
		"t=4 kind=1 d=4 i=0 flags=0 a=w",
	}, c.got)
	// Five number points were validated and recorded; the second pass
	// consumed the records up to the last one it emitted.
	assert.Len(t, w.recs, 5)
	assert.Equal(t, 5, w.cursor)
}

// TestMoreThanMaxRecs checks a request with more number points than the
// first pass keeps: the rest are decoded in the second pass, and every
// point arrives whole.
func TestMoreThanMaxRecs(t *testing.T) {
	t.Parallel()
	n := maxRecs + 100
	p := synth.Config{Seed: 1, Series: n, PointsPerRequest: n}.Cover(42)[0]
	var w Walker
	var c valueCollect
	require.NoError(t, w.Walk(p.Bytes, &c))
	require.Len(t, c.got, n)
	assert.Nil(t, w.recs, "a walker does not keep this many records")
	// Time, a double value, and three attributes.
	re := regexp.MustCompile(`^t=42 kind=1 d=\d+ i=0 flags=0 pod=pod-\d+ model_name=model-\d http.method=GET$`)
	for i, g := range c.got {
		if !re.MatchString(g) {
			t.Fatalf("point %d: %s", i, g)
		}
	}
}
