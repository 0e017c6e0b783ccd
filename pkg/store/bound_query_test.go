package store_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestRateOverThinnedSeries (issue #12 class 9): a counter pushed every
// 100 ms for longer than its 6-minute retention does not fit a ring of
// 1024 samples (the default). Through the real query engine, rate and
// increase over ranges up to 5 minutes must agree with the same series
// kept at full resolution (a store whose rings hold every sample) within
// the bound the README states: two thinning gaps over the range. Before
// thinning the ring held the last 102 s only, and rate(x[5m]) came out at
// a third of the truth.
func TestRateOverThinnedSeries(t *testing.T) {
	const (
		retention = 6 * time.Minute
		every     = int64(100)
		t0        = int64(1_700_000_000_000)
	)
	var now int64
	clock := func() time.Time { return time.UnixMilli(now) }
	thinned := store.New(store.Config{Retention: retention, Freshness: -1}, store.Settings{Now: clock})
	full := store.New(store.Config{Retention: retention, Freshness: -1, MaxSamplesPerSeries: 4095}, store.Settings{Now: clock})
	lset := labels.FromStrings("__name__", "requests_total", "pod", "a")
	var refs [2]store.SeriesRef
	for i, s := range []*store.Store{thinned, full} {
		ref, err := s.Create(1, lset)
		require.NoError(t, err)
		refs[i] = ref
	}
	v := 0.0
	end := t0 + 2*retention.Milliseconds()
	for i, ts := 0, t0; ts <= end; i, ts = i+1, ts+every {
		now = ts
		switch {
		case i%2401 == 2400:
			v = 3 // a counter reset
		case i%7 == 0:
			// flat: merges equal values
		default:
			v += float64(i%5) + 0.5
		}
		for k, s := range []*store.Store{thinned, full} {
			require.NoError(t, s.Append(refs[k], ts, v))
		}
	}
	kept := len(thinned.Range(nil, refs[0], math.MinInt64, math.MaxInt64))
	all := len(full.Range(nil, refs[1], math.MinInt64, math.MaxInt64))
	require.GreaterOrEqual(t, all, int(retention.Milliseconds()/every), "the reference keeps every sample of the retention")
	require.Less(t, kept, all/3, "the default ring is thinned")
	gap := 2 * float64(retention.Milliseconds()) / 1023 // README: thinning gap at 1024 samples

	for _, tc := range []struct {
		q   string
		rng time.Duration
	}{
		{"rate(requests_total[5m])", 5 * time.Minute},
		{"increase(requests_total[5m])", 5 * time.Minute},
		{"increase(requests_total[2m])", 2 * time.Minute},
		{"rate(requests_total[1m])", time.Minute},
		{"rate(requests_total[30s])", 30 * time.Second},
	} {
		got := eval(t, thinned, tc.q, end)
		want := eval(t, full, tc.q, end)
		tol := 2 * gap / float64(tc.rng.Milliseconds())
		assert.InEpsilon(t, want, got, tol, "%s: thinned %v, full resolution %v (bound %.2f %%)", tc.q, got, want, 100*tol)
		t.Logf("%s: thinned %.6g, full resolution %.6g (%.3f %%, bound %.2f %%)", tc.q, got, want, 100*math.Abs(got-want)/want, 100*tol)
	}
}

// eval returns the single value of q at ts.
func eval(t *testing.T, s *store.Store, q string, ts int64) float64 {
	t.Helper()
	plan, err := query.NewEngine(s).Query(q, query.Options{})
	require.NoError(t, err)
	res, err := plan.Eval(context.Background(), ts)
	require.NoError(t, err)
	require.Len(t, res.Vector, 1, q)
	return res.Vector[0].F
}
