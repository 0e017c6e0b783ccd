package interest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func sel(t *testing.T, q string) Selectors {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(q)
	require.NoError(t, err)
	return FromExpr(e)
}

func TestFromExpr(t *testing.T) {
	for _, tc := range []struct {
		q    string
		want Selectors
	}{
		{`sum(vllm:num_requests_waiting{namespace="a"})`, Selectors{Names: []string{"vllm:num_requests_waiting"}}},
		{`sum({__name__=~"vllm:num_requests_(running|waiting)"})`, Selectors{Regexps: []string{"vllm:num_requests_(running|waiting)"}}},
		{`histogram_quantile(0.9, sum by (le) (rate(x_bucket[1m]))) / y + x_bucket`, Selectors{Names: []string{"x_bucket", "y"}}},
		{`sum({job="a"})`, Selectors{Any: true}},
		{`sum({__name__!="a", job="x"})`, Selectors{Any: true}},
		{`vector(1)`, Selectors{}},
	} {
		t.Run(tc.q, func(t *testing.T) { assert.Equal(t, tc.want, sel(t, tc.q)) })
	}
}

func TestFilterAllowList(t *testing.T) {
	f, err := NewFilter(`vllm:num_requests_.*|vllm:time_to_first_token_seconds_bucket`, nil)
	require.NoError(t, err)
	assert.Equal(t, Admitted, f.Admit([]string{"vllm:num_requests_waiting"}))
	assert.Equal(t, Admitted, f.Admit([]string{"vllm:time_to_first_token_seconds_bucket", "vllm:time_to_first_token_seconds_count"}))
	assert.Equal(t, NotAllowed, f.Admit([]string{"vllm:kv_cache_usage_perc"}))
	assert.Equal(t, NotAllowed, f.Admit([]string{"xvllm:num_requests_waiting"}), "matched against whole names")
	f, err = NewFilter("", nil)
	require.NoError(t, err)
	assert.Nil(t, f, "no allow-list and no lazy mode: no filter")
	_, err = NewFilter("(", nil)
	require.ErrorContains(t, err, "--metric-allow-list")
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// TestLazyRegistry: a trigger's names are wanted while it holds them, a
// family first wanted warms up for --warmup, one already wanted (or fresh
// in the store) does not, an API ask lasts its TTL and is bounded.
func TestLazyRegistry(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	r := NewRegistry(30*time.Second, time.Minute, 3, c.now)
	f, err := NewFilter("", r)
	require.NoError(t, err)
	now := func() int64 { return c.now().UnixNano() }
	g0 := f.Gen(now())
	assert.Equal(t, NotRequested, f.Admit([]string{"a"}))

	h1, err := r.Acquire(sel(t, `sum(a) + sum({__name__=~"b_.*"})`), nil)
	require.NoError(t, err)
	assert.NotEqual(t, g0, f.Gen(now()), "a change bumps the generation")
	assert.Equal(t, now()+int64(30*time.Second), h1.ReadyAt(), "new families warm up")
	assert.Equal(t, Admitted, f.Admit([]string{"a"}))
	assert.Equal(t, Admitted, f.Admit([]string{"b_bucket", "b_count"}))
	assert.Equal(t, NotRequested, f.Admit([]string{"c"}))

	c.add(10 * time.Second)
	h2, err := r.Acquire(sel(t, `sum(a)`), nil)
	require.NoError(t, err)
	assert.Equal(t, h1.ReadyAt(), h2.ReadyAt(), "a family already wanted warms up no longer")
	h3, err := r.Acquire(sel(t, `b_sum`), nil)
	require.NoError(t, err)
	assert.Equal(t, h1.ReadyAt(), h3.ReadyAt(), "wanted through another matcher since then")
	h4, err := r.Acquire(sel(t, `restored`), func(n string) bool { return n == "restored" })
	require.NoError(t, err)
	assert.LessOrEqual(t, h4.ReadyAt(), now(), "fresh in the store: no warm-up")

	h1.Release()
	assert.Equal(t, Admitted, f.Admit([]string{"a"}), "h2 still holds a")
	assert.Equal(t, Admitted, f.Admit([]string{"b_sum"}), "h3 holds b_sum")
	assert.Equal(t, NotRequested, f.Admit([]string{"b_bucket"}), "nobody holds b_.* any more")
	h2.Release()
	h3.Release()
	h4.Release()
	assert.Equal(t, NotRequested, f.Admit([]string{"a"}))
	assert.Zero(t, r.Len())

	// API asks: wanted for the TTL after the last ask; selectors without a
	// name ask for nothing; at most maxAsked entries, oldest dropped.
	r.Ask(sel(t, `sum({job="x"})`))
	assert.Zero(t, r.Len())
	r.Ask(sel(t, `q1`))
	c.add(time.Second)
	r.Ask(sel(t, `q2 + q3`))
	assert.Equal(t, Admitted, f.Admit([]string{"q1"}))
	c.add(time.Second)
	r.Ask(sel(t, `q4`))
	f.Gen(now())
	assert.Equal(t, NotRequested, f.Admit([]string{"q1"}), "the oldest ask is dropped beyond maxAsked")
	assert.Equal(t, 3, r.Len())
	c.add(59 * time.Second)
	f.Gen(now())
	assert.Equal(t, NotRequested, f.Admit([]string{"q2"}), "expired")
	assert.Equal(t, Admitted, f.Admit([]string{"q4"}), "asked 59 s ago")
	r.Ask(sel(t, `q4`))
	c.add(30 * time.Second)
	f.Gen(now())
	assert.Equal(t, Admitted, f.Admit([]string{"q4"}), "a new ask extends it")

	// A held name that is also asked outlives its hold until the ask ends.
	h5, err := r.Acquire(sel(t, `q4`), nil)
	require.NoError(t, err)
	h5.Release()
	assert.Equal(t, Admitted, f.Admit([]string{"q4"}))
	c.add(31 * time.Second)
	f.Gen(now())
	assert.Equal(t, NotRequested, f.Admit([]string{"q4"}))
	assert.Zero(t, r.Len())

	// A selector without a name holds every family.
	h6, err := r.Acquire(sel(t, `sum({job="x"})`), nil)
	require.NoError(t, err)
	assert.Equal(t, Admitted, f.Admit([]string{"anything"}))
	h6.Release()
	assert.Equal(t, NotRequested, f.Admit([]string{"anything"}))
}

// TestLazyRegistryConcurrent: readers see consistent snapshots while
// triggers come and go (run with -race).
func TestLazyRegistryConcurrent(t *testing.T) {
	r := NewRegistry(time.Second, time.Minute, 64, nil)
	f, err := NewFilter("", r)
	require.NoError(t, err)
	var wg, rd sync.WaitGroup
	stop := make(chan struct{})
	rd.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			f.Gen(time.Now().UnixNano())
			f.Admit([]string{"m1", "m2_bucket"})
		}
	})
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				h, err := r.Acquire(Selectors{Names: []string{fmt.Sprintf("m%d", (w+i)%5)}, Regexps: []string{"m2_.*"}}, nil)
				if err != nil {
					t.Error(err)
					return
				}
				r.Ask(Selectors{Names: []string{fmt.Sprintf("api%d", i%100)}})
				h.Release()
			}
		})
	}
	wg.Wait()
	close(stop)
	rd.Wait()
	// Every hold is released: only asks remain, within the bound.
	assert.LessOrEqual(t, r.Len(), 64)
}
