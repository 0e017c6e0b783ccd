package status

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
)

// SeriesInfo is what a trigger's query currently selects: per selector of
// the lowered query, the series with a sample in its lookback (or range),
// and the largest of them by their latest value.
type SeriesInfo struct {
	Selectors []SelectorSeries `json:"selectors"`
	// Skipped says why the selectors were not evaluated (the request's
	// budget or deadline was spent).
	Skipped string `json:"skipped,omitempty"`
}

// SelectorSeries is one selector's series.
type SelectorSeries struct {
	Selector string `json:"selector"`
	// Lookback is how far back a series' latest sample may be: the
	// trigger's lookbackDelta, or the range of a range selector.
	Lookback string `json:"lookback"`
	Count    int    `json:"count"`
	// AtLeast is set when the selector matched more series than a status
	// request evaluates: Count is then a lower bound.
	AtLeast bool           `json:"atLeast,omitempty"`
	Top     []SeriesSample `json:"top"`
	Error   string         `json:"error,omitempty"`
}

// SeriesSample is one series and its latest value.
type SeriesSample struct {
	Labels string `json:"labels"`
	Value  Number `json:"value"`
}

// Number is a float that encodes NaN and ±Inf as JSON strings, as
// Prometheus's API does for every value.
type Number float64

// MarshalJSON encodes finite numbers as numbers, others as "NaN", "+Inf"
// or "-Inf".
func (n Number) MarshalJSON() ([]byte, error) {
	f := float64(n)
	switch {
	case math.IsNaN(f):
		return []byte(`"NaN"`), nil
	case math.IsInf(f, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(f, -1):
		return []byte(`"-Inf"`), nil
	}
	return strconv.AppendFloat(nil, f, 'g', -1, 64), nil
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (n *Number) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		f, err := strconv.ParseFloat(s, 64)
		*n = Number(f)
		return err
	}
	var f float64
	err := json.Unmarshal(b, &f)
	*n = Number(f)
	return err
}

// budget is the series a status request may still touch.
type budget struct{ left int }

// selectSeries evaluates each selector of the lowered query q at nowMs.
func selectSeries(ctx context.Context, e *query.Engine, q string, lookback time.Duration, nowMs int64, b *budget) *SeriesInfo {
	info := &SeriesInfo{Selectors: []SelectorSeries{}}
	if b.left <= 0 {
		info.Skipped = "this request's series budget is spent; ask for fewer triggers (namespace, name, limit)"
		return info
	}
	if ctx.Err() != nil {
		info.Skipped = "this request's time for series is spent; ask for fewer triggers (namespace, name, limit)"
		return info
	}
	expr, err := e.Parse(q)
	if err != nil {
		info.Skipped = err.Error()
		return info
	}
	type sel struct {
		vs  *parser.VectorSelector
		rng time.Duration
	}
	var sels []sel
	seen := map[string]bool{}
	parser.Inspect(expr, func(n parser.Node, path []parser.Node) error {
		var s sel
		switch n := n.(type) {
		case *parser.MatrixSelector:
			vs, ok := n.VectorSelector.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			s = sel{vs, n.Range}
		case *parser.VectorSelector:
			if len(path) > 0 {
				if _, ok := path[len(path)-1].(*parser.MatrixSelector); ok {
					return nil // evaluated as the range selector
				}
			}
			s = sel{vs: n}
		default:
			return nil
		}
		key := s.vs.String() + "/" + s.rng.String()
		if !seen[key] && len(sels) < maxSelectors {
			seen[key] = true
			sels = append(sels, s)
		}
		return nil
	})
	for _, s := range sels {
		info.Selectors = append(info.Selectors, evalSelector(ctx, e, s.vs, max(lookback, s.rng), nowMs, b))
	}
	return info
}

func evalSelector(ctx context.Context, e *query.Engine, vs *parser.VectorSelector, lookback time.Duration, nowMs int64, b *budget) SelectorSeries {
	out := SelectorSeries{Selector: vs.String(), Lookback: lookback.String(), Top: []SeriesSample{}}
	limit := min(selectorBudget, b.left)
	if limit <= 0 {
		out.Error = "this request's series budget is spent"
		return out
	}
	// A fresh instant selector with the same name, matchers and offset:
	// the series it answers are those with a sample in the lookback.
	inst := &parser.VectorSelector{Name: vs.Name, LabelMatchers: vs.LabelMatchers, OriginalOffset: vs.OriginalOffset}
	plan, err := e.Compile(inst, query.Options{LookbackDelta: lookback, MaxSamples: limit, MaxSeries: limit})
	if err != nil {
		out.Error = err.Error()
		return out
	}
	res, err := plan.Eval(ctx, nowMs)
	if err != nil {
		if errors.Is(err, query.ErrBudgetExceeded) {
			out.Count, out.AtLeast = limit, true
			b.left -= limit
		}
		out.Error = err.Error()
		return out
	}
	b.left -= len(res.Vector)
	out.Count = len(res.Vector)
	idx := make([]int, len(res.Vector))
	for i := range idx {
		idx[i] = i
	}
	// Largest first; NaN last.
	// A native histogram's value is shown as its count of observations.
	val := func(s query.Sample) float64 {
		if s.H != nil {
			return s.H.Count
		}
		return s.F
	}
	slices.SortFunc(idx, func(i, j int) int {
		a, c := val(res.Vector[i]), val(res.Vector[j])
		switch {
		case math.IsNaN(a) && math.IsNaN(c):
			return 0
		case math.IsNaN(a):
			return 1
		case math.IsNaN(c):
			return -1
		}
		return cmp.Compare(c, a)
	})
	for _, i := range idx[:min(len(idx), topSeries)] {
		out.Top = append(out.Top, SeriesSample{Labels: res.Vector[i].Labels.String(), Value: Number(val(res.Vector[i]))})
	}
	return out
}
