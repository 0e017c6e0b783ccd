package query

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

func loadStore(t *testing.T, series map[string][]store.Sample) *store.Store {
	t.Helper()
	st := store.New(store.Config{Retention: time.Hour, Freshness: -1}, store.Settings{Now: func() time.Time { return time.UnixMilli(3_600_000) }})
	p := NewEngine(st)
	var h uint64
	for desc, samples := range series {
		expr, err := p.parser.ParseMetric(desc)
		require.NoError(t, err)
		h++
		ref, err := st.Create(h, expr)
		require.NoError(t, err)
		for _, s := range samples {
			require.NoError(t, st.Append(ref, s.T, s.V))
		}
	}
	return st
}

func TestEvalAggregations(t *testing.T) {
	st := loadStore(t, map[string][]store.Sample{
		`x{pod="a",job="j1"}`: {{T: 10_000, V: 1}, {T: 20_000, V: 2}},
		`x{pod="b",job="j1"}`: {{T: 20_000, V: 4}},
		`x{pod="c",job="j2"}`: {{T: 20_000, V: 8}},
		`y{pod="a"}`:          {{T: 20_000, V: 100}},
	})
	e := NewEngine(st)
	for _, tc := range []struct {
		q    string
		want map[string]float64
	}{
		{`sum(x)`, map[string]float64{`{}`: 14}},
		{`sum by (job) (x)`, map[string]float64{`{job="j1"}`: 6, `{job="j2"}`: 8}},
		{`max without (pod) (x)`, map[string]float64{`{job="j1"}`: 4, `{job="j2"}`: 8}},
		{`avg(x{job="j1"})`, map[string]float64{`{}`: 3}},
		{`count(x{pod!="a"})`, map[string]float64{`{}`: 2}},
		{`min(x{pod=~"a|b"})`, map[string]float64{`{}`: 2}},
		{`x{pod!~"a|b"}`, map[string]float64{`{__name__="x", job="j2", pod="c"}`: 8}}, // selectors keep __name__ (§4.1)
		{`sum(nothing)`, map[string]float64{}},
	} {
		t.Run(tc.q, func(t *testing.T) {
			p, err := e.Query(tc.q, Options{})
			require.NoError(t, err)
			res, err := p.Eval(context.Background(), 30_000)
			require.NoError(t, err)
			got := map[string]float64{}
			for _, s := range res.Vector {
				got[s.Labels.String()] = s.F
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestLookbackWindowIsLeftOpen(t *testing.T) {
	st := loadStore(t, map[string][]store.Sample{`x`: {{T: 300_000, V: 1}}})
	p, err := NewEngine(st).Query("x", Options{})
	require.NoError(t, err)
	res, err := p.Eval(context.Background(), 599_999)
	require.NoError(t, err)
	assert.Len(t, res.Vector, 1)
	res, err = p.Eval(context.Background(), 600_000)
	require.NoError(t, err)
	assert.Empty(t, res.Vector, "a sample exactly lookback old is out")
}

func TestCompileRejectsUnsupported(t *testing.T) {
	e := NewEngine(store.New(store.Config{}, store.Settings{}))
	_, err := e.Query(`start_timestamp(x)`, Options{})
	require.ErrorIs(t, err, ErrUnsupported)
	_, err = e.Query(`sum(x`, Options{})
	var pe *ParseError
	require.ErrorAs(t, err, &pe)
}

// TestParseErrorEcho: a parse error repeats a short query whole and a long
// one cut at MaxQueryEcho bytes (on a UTF-8 boundary) with its length
// stated; the parser's position still counts in the whole query.
func TestParseErrorEcho(t *testing.T) {
	e := NewEngine(store.New(store.Config{}, store.Settings{}))
	_, err := e.Query(`sum(x`, Options{})
	require.EqualError(t, err, `parse "sum(x": 1:6: parse error: unclosed left parenthesis`)

	long := `x{a="` + strings.Repeat("é", 3000) + `"} +`
	_, err = e.Query(long, Options{})
	require.Error(t, err)
	msg := err.Error()
	head := long[:MaxQueryEcho-1] // MaxQueryEcho would split an "é"
	assert.True(t, strings.HasPrefix(msg, `parse "`+strings.ReplaceAll(head, `"`, `\"`)+`…" (`+strconv.Itoa(len(long))+` bytes): `), msg)
	assert.Contains(t, msg, fmt.Sprintf("1:%d: parse error: unexpected end of input", len(long)+1))
	assert.Less(t, len(msg), 2*MaxQueryEcho+100)

	// The limits' errors are cut the same way.
	_, err = e.Query(strings.Repeat(" ", MaxQueryLength)+"x", Options{})
	assert.EqualError(t, err, `parse "`+strings.Repeat(" ", MaxQueryEcho)+`…" (16385 bytes): query longer than 16384 bytes`)
}
