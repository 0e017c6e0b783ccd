package promapi

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
)

// maxRangeSteps caps the points per series of a range query, as
// Prometheus does.
const maxRangeSteps = 11000

// errTooManySteps is Prometheus's message for a range query over
// maxRangeSteps.
var errTooManySteps = errors.New("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")

// minTime and maxTime are Prometheus's bounds for open time ranges
// (web/api/v1 MinTime and MaxTime): the widest times whose unix
// milliseconds fit an int64 with room for a 292-year offset either way.
// Clients such as client_golang send them formatted as RFC 3339, which
// time.Parse cannot read (years beyond 9999), so parseTime knows their
// text.
var (
	minTime          = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	maxTime          = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()
	minTimeFormatted = minTime.Format(time.RFC3339Nano)
	maxTimeFormatted = maxTime.Format(time.RFC3339Nano)
)

// parseTime accepts unix seconds with an optional fraction (rounded to the
// millisecond), RFC 3339, and Prometheus's minTime and maxTime texts, as
// Prometheus's API does.
func parseTime(s string) (time.Time, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		// Numeric times stay within [minTime, maxTime], so their
		// milliseconds fit an int64; Prometheus turns larger floats into
		// garbage instead.
		if math.IsNaN(f) || f < float64(minTime.Unix()) || f >= float64(maxTime.Unix()+1) {
			return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
		}
		sec, frac := math.Modf(f)
		frac = math.Round(frac*1000) / 1000
		return time.Unix(int64(sec), int64(frac*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	switch s {
	case minTimeFormatted:
		return minTime, nil
	case maxTimeFormatted:
		return maxTime, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

// parseDuration accepts seconds with an optional fraction or a Prometheus
// duration ("5m", "1h30m").
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		ts := f * float64(time.Second)
		// float64(math.MaxInt64) is 2^63, which an int64 cannot hold, and
		// NaN passes every comparison.
		if math.IsNaN(ts) || ts >= float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration. It overflows int64", s)
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}

func parseLimit(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, errors.New("limit must be non-negative")
	}
	return n, nil
}

// rangeGrid is the evaluation times of a range query: start, start+step, …
// up to end, in unix milliseconds.
type rangeGrid struct {
	start, step int64 // ms; step >= 1
	n           int   // number of evaluation times, >= 1
}

// at returns the k-th evaluation time. It does not overflow: the grid's
// last time is at most end.
func (g rangeGrid) at(k int) int64 { return int64(uint64(g.start) + uint64(k)*uint64(g.step)) }

// newRangeGrid checks Prometheus's resolution limit, (end−start)/step <=
// 11,000, exactly: time.Time.Sub saturates at ±292 years, so far-apart
// start and end with a large step slipped past Prometheus's own check
// (issue #12 class 6). The evaluation grid is in whole milliseconds, as in
// Prometheus's engine, and is checked too: a step of 1.9 ms runs every
// 1 ms. end must not be before start and step must be positive.
func newRangeGrid(start, end time.Time, step time.Duration) (rangeGrid, error) {
	span := new(big.Int).Mul(big.NewInt(end.Unix()-start.Unix()), big.NewInt(int64(time.Second)))
	span.Add(span, big.NewInt(int64(end.Nanosecond()-start.Nanosecond())))
	limit := new(big.Int).Mul(big.NewInt(maxRangeSteps+1), big.NewInt(int64(step)))
	if span.Cmp(limit) >= 0 {
		return rangeGrid{}, errTooManySteps
	}
	g := rangeGrid{start: start.UnixMilli(), step: max(step.Milliseconds(), 1)}
	// end >= start, and both fit an int64 of ms, so the difference fits a
	// uint64 even where it overflows an int64.
	steps := (uint64(end.UnixMilli()) - uint64(g.start)) / uint64(g.step)
	if steps > maxRangeSteps {
		return rangeGrid{}, errTooManySteps
	}
	g.n = int(steps) + 1
	return g, nil
}
