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

// nestedValue returns an AnyValue whose leaf string sits under n arrays,
// so the leaf is at depth n (the attribute's own value is at depth 0). It
// is written outside in, in linear time, from lengths computed inside out.
func nestedValue(n int, leaf []byte) []byte {
	// lens[i]: length of the AnyValue i levels above the leaf; arr[i]: of
	// the ArrayValue it holds.
	lens, arrs := make([]int, n+1), make([]int, n+1)
	lens[0] = protowire.SizeTag(1) + protowire.SizeBytes(len(leaf))
	for i := 1; i <= n; i++ {
		arrs[i] = protowire.SizeTag(1) + protowire.SizeBytes(lens[i-1])
		lens[i] = protowire.SizeTag(5) + protowire.SizeBytes(arrs[i])
	}
	out := make([]byte, 0, lens[n])
	for i := n; i >= 1; i-- {
		out = protowire.AppendTag(out, 5, protowire.BytesType) // AnyValue.array_value
		out = protowire.AppendVarint(out, uint64(arrs[i]))
		out = protowire.AppendTag(out, 1, protowire.BytesType) // ArrayValue.values
		out = protowire.AppendVarint(out, uint64(lens[i-1]))
	}
	out = protowire.AppendTag(out, 1, protowire.BytesType)
	return protowire.AppendBytes(out, leaf) // AnyValue{string_value}
}

// resourceWith returns a request whose only resource has one attribute
// "k" holding the encoded AnyValue v, and one gauge with one point whose
// attribute "p" holds v too.
func resourceWith(v []byte) []byte {
	kv := protowire.AppendTag(nil, 1, protowire.BytesType)
	kv = protowire.AppendString(kv, "k")
	kv = protowire.AppendTag(kv, 2, protowire.BytesType)
	kv = protowire.AppendBytes(kv, v)
	res := protowire.AppendTag(nil, 1, protowire.BytesType) // Resource.attributes
	res = protowire.AppendBytes(res, kv)
	dp := protowire.AppendTag(nil, 7, protowire.BytesType) // NumberDataPoint.attributes
	dp = protowire.AppendBytes(dp, kv)
	dp = protowire.AppendTag(dp, 3, protowire.Fixed64Type) // time_unix_nano
	dp = protowire.AppendFixed64(dp, 42)
	gauge := protowire.AppendTag(nil, 1, protowire.BytesType) // Gauge.data_points
	gauge = protowire.AppendBytes(gauge, dp)
	m := protowire.AppendTag(nil, 1, protowire.BytesType) // Metric.name
	m = protowire.AppendString(m, "g")
	m = protowire.AppendTag(m, 5, protowire.BytesType) // Metric.gauge
	m = protowire.AppendBytes(m, gauge)
	sm := protowire.AppendTag(nil, 2, protowire.BytesType) // ScopeMetrics.metrics
	sm = protowire.AppendBytes(sm, m)
	rm := protowire.AppendTag(nil, 1, protowire.BytesType) // ResourceMetrics.resource
	rm = protowire.AppendBytes(rm, res)
	rm = protowire.AppendTag(rm, 2, protowire.BytesType) // ResourceMetrics.scope_metrics
	rm = protowire.AppendBytes(rm, sm)
	out := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendBytes(out, rm)
}

// TestWalkErrors checks that malformed input fails before anything is
// emitted.
func TestWalkErrors(t *testing.T) {
	t.Parallel()
	valid := synth.Config{Seed: 1, Series: 10, PointsPerRequest: 10, Metrics: 2}.Cover(42)[0].Bytes
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"truncated", valid[:len(valid)-1]},
		{"field_zero", []byte{0x00}},
		{"wrong_wire_type", []byte{0x08, 0x01}},
		{"overlong_length", []byte{0x0a, 0x7f}},
		{"end_group", []byte{0x0c}},
		{"malformed_value_above_the_limit", resourceWith(nestedValue(MaxValueDepth, []byte{0xff}))[:40]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w Walker
			var c collect
			err := w.Walk(tc.in, &c)
			require.ErrorIs(t, err, ErrMalformed)
			assert.Zero(t, c.resources+c.points, "nothing emitted")
		})
	}
}

// attrCollect records the kinds of the resource's and the points'
// attribute values.
type attrCollect struct{ res, pts []ValueKind }

func (c *attrCollect) Resource(attrs []KeyValue) {
	for _, a := range attrs {
		c.res = append(c.res, a.Value.Kind)
	}
}
func (*attrCollect) Scope(_, _ []byte, _ []KeyValue) {}
func (*attrCollect) Metric(*Metric, int) bool        { return true }
func (c *attrCollect) Point(p *Point) {
	for _, a := range p.Attributes() {
		c.pts = append(c.pts, a.Value.Kind)
	}
}

// TestValueTooDeep checks the nesting limit: a value nested to
// MaxValueDepth decodes; one level deeper it is KindTooDeep, in the
// resource and in points alike, the request still decodes and every
// point is emitted, and nothing below the cut is looked at (bounded
// stack, time and allocations even a million levels down).
func TestValueTooDeep(t *testing.T) {
	garbage := []byte{0x00, 0xff} // field 0: malformed if decoded
	arrayThen := func(v []byte, tail []byte) []byte { return append(append([]byte{}, v...), tail...) }
	str := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "s")
	for _, tc := range []struct {
		name  string
		value []byte
		want  ValueKind
		deep  int
	}{
		{"at_limit", nestedValue(MaxValueDepth, []byte("x")), KindArray, 0},
		{"one_deeper", nestedValue(MaxValueDepth+1, []byte("x")), KindTooDeep, 2},
		{"garbage_below_the_cut", nestedValue(MaxValueDepth+1, garbage), KindTooDeep, 2},
		{"a_later_string_wins", arrayThen(nestedValue(MaxValueDepth+1, []byte("x")), str), KindStr, 2},
		{"million_levels", nestedValue(1_000_000, []byte("x")), KindTooDeep, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := resourceWith(tc.value)
			var w Walker
			var c attrCollect
			allocs := testing.AllocsPerRun(3, func() {
				c = attrCollect{}
				require.NoError(t, w.Walk(in, &c))
			})
			assert.Equal(t, []ValueKind{tc.want}, c.res)
			assert.Equal(t, []ValueKind{tc.want}, c.pts)
			assert.Equal(t, tc.deep, w.ValuesTooDeep(), "values cut (resource and point, first pass)")
			assert.LessOrEqual(t, allocs, 8.0, "nothing below the cut is decoded")
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
		Scale: 1, ZeroCount: 2, ZeroThreshold: 3, PosOffset: 4, NegOffset: 5, NegCounts: []uint64{6}, BucketsOverflow: true,
		hasExp: true,
	}
	// Every field is set above: a new field must be added there too.
	v := reflect.ValueOf(p)
	for i := range v.NumField() {
		require.False(t, v.Field(i).IsZero(), "field %s not set by the test", v.Type().Field(i).Name)
	}
	p.reset()
	if p.hasExp { // as every caller of reset does
		p.clearExp()
	}
	for _, n := range []int{len(p.Attrs), len(p.BucketCounts), len(p.Bounds), len(p.Quantiles), len(p.NegCounts)} {
		require.Zero(t, n)
	}
	require.NotZero(t, cap(p.Attrs))
	p.Attrs, p.BucketCounts, p.Bounds, p.Quantiles, p.NegCounts = nil, nil, nil, nil, nil
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
		errF := keyValue(b, &fast, 0, nil)
		errS := keyValueSlow(b, &slow, 0, nil)
		require.Equal(t, errS == nil, errF == nil, "fast %v, slow %v", errF, errS)
		var errC error
		if strKeyValue(b) == 0 {
			var w Walker
			errC = w.checkKeyValueSlow(b)
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
