package store

import (
	"cmp"
	"slices"
	"time"
)

// Status is the store's size against its limits, for the status page.
type Status struct {
	Series              int           `json:"series"`
	MaxSeries           int           `json:"maxSeries"`
	MaxSeriesPerMetric  int           `json:"maxSeriesPerMetric"`
	MaxSamplesPerSeries int           `json:"maxSamplesPerSeries"`
	Retention           time.Duration `json:"-"`
	Freshness           time.Duration `json:"-"`
	SeriesTTL           time.Duration `json:"-"`
	MemoryBytes         int64         `json:"memoryBytes"`
	// TopMetrics are the metric names with the most live series, most
	// first (at most topMetrics), against MaxSeriesPerMetric.
	TopMetrics []MetricSeries `json:"topMetrics"`
}

// MetricSeries is one metric name's live series.
type MetricSeries struct {
	Metric string `json:"metric"`
	Series int    `json:"series"`
}

// topMetrics is how many metric names Status lists.
const topMetrics = 5

// Status returns the store's size and limits. It walks the per-metric
// counts under the creation lock and the postings (MemoryEstimate), so it
// is for a status page, not a hot path.
func (s *Store) Status() Status {
	st := Status{
		Series:              s.NumSeries(),
		MaxSeries:           s.cfg.MaxSeries,
		MaxSeriesPerMetric:  s.cfg.MaxSeriesPerMetric,
		MaxSamplesPerSeries: s.cfg.MaxSamplesPerSeries,
		Retention:           s.cfg.Retention,
		Freshness:           s.cfg.Freshness,
		SeriesTTL:           s.cfg.SeriesTTL,
		MemoryBytes:         s.MemoryEstimate(),
	}
	type idCount struct {
		id uint32
		n  int
	}
	top := make([]idCount, 0, topMetrics+1)
	s.mu.Lock()
	for id, n := range s.perMetric {
		if n <= 0 || len(top) == topMetrics && n <= top[topMetrics-1].n {
			continue
		}
		top = append(top, idCount{id, n})
		slices.SortFunc(top, func(a, b idCount) int { return cmp.Compare(b.n, a.n) })
		top = top[:min(len(top), topMetrics)]
	}
	s.mu.Unlock()
	for _, e := range top {
		st.TopMetrics = append(st.TopMetrics, MetricSeries{Metric: s.syms.str(e.id), Series: e.n})
	}
	return st
}

// FreshSeries counts the live series whose newest sample is no older than
// window, by the store's clock. An HA replica compares its count with its
// peers' before it turns ready (--ready-peers, pkg/server/peers.go): a
// replica that the fan-out reaches only in part holds fewer fresh series.
// It walks every ref with one atomic snapshot per series and takes no
// lock, so it costs O(series) and allocates nothing; callers bound how
// often it runs (the freshness endpoint caches it, pkg/server/peers.go).
func (s *Store) FreshSeries(window time.Duration) int {
	floor := s.nowMs() - window.Milliseconds()
	n := 0
	for ref, end := uint32(1), s.nextRef.Load(); ref < end; ref++ {
		ms := s.get(SeriesRef(ref))
		if ms == nil {
			continue
		}
		if t, ok := ms.lastT(); ok && t >= floor {
			n++
		}
	}
	return n
}
