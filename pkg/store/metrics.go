package store

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Rejection reasons, the values of the rejected_total metric's reason label.
const (
	reasonSeriesLimit       = "series_limit"
	reasonSeriesPerMetric   = "series_per_metric_limit"
	reasonTooManyLabels     = "too_many_labels"
	reasonLabelNameTooLong  = "label_name_too_long"
	reasonLabelValueTooLong = "label_value_too_long"
	reasonOutOfOrder        = "out_of_order"
	reasonDuplicate         = "duplicate_timestamp"
	reasonTooOld            = "too_old"
	reasonUnknownSeries     = "unknown_series"
)

var reasons = []string{
	reasonSeriesLimit, reasonSeriesPerMetric, reasonTooManyLabels, reasonLabelNameTooLong,
	reasonLabelValueTooLong, reasonOutOfOrder, reasonDuplicate, reasonTooOld, reasonUnknownSeries,
}

type metrics struct {
	samples   stripedCounter
	ringBytes atomic.Int64
	created   prometheus.Counter
	removed   prometheus.Counter
	rejected  map[string]prometheus.Counter // fixed after newMetrics
}

// stripedCounter counts appends without making every writer share one
// cache line: writers of different series usually hit different stripes.
type stripedCounter struct {
	c [16]struct {
		n atomic.Uint64
		_ [56]byte
	}
}

func (c *stripedCounter) add(key uint32) { c.c[key&15].n.Add(1) }

// addN adds n batched counts; batches are rare enough for one stripe.
func (c *stripedCounter) addN(n uint64) { c.c[0].n.Add(n) }

func (c *stripedCounter) load() uint64 {
	var n uint64
	for i := range c.c {
		n += c.c[i].n.Load()
	}
	return n
}

func newMetrics(s *Store, reg prometheus.Registerer) *metrics {
	m := &metrics{
		created: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_store_series_created_total",
			Help: "Series created in the store.",
		}),
		removed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_store_series_removed_total",
			Help: "Series removed from the store by the TTL sweep.",
		}),
		rejected: make(map[string]prometheus.Counter, len(reasons)),
	}
	rej := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keda_otel_scaler_store_rejected_total",
		Help: "Series creations and samples the store rejected, by reason.",
	}, []string{"reason"})
	for _, r := range reasons {
		m.rejected[r] = rej.WithLabelValues(r)
	}
	if reg == nil {
		return m
	}
	for _, c := range []prometheus.Collector{
		m.created, m.removed, rej,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keda_otel_scaler_store_series",
			Help: "Live series in the store.",
		}, func() float64 { return float64(s.NumSeries()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keda_otel_scaler_store_samples_appended_total",
			Help: "Samples appended to the store.",
		}, func() float64 { return float64(m.samples.load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keda_otel_scaler_store_symbols",
			Help: "Interned label names, label values and metric names in the store (freed ones excluded).",
		}, func() float64 { n, _ := s.syms.stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keda_otel_scaler_store_memory_bytes",
			Help: "Estimated bytes held by the store: rings, series headers, index, postings and interned labels.",
		}, func() float64 { return float64(s.MemoryEstimate()) }),
	} {
		if err := reg.Register(c); err != nil {
			s.logger.Warn("Self-metric not registered", "err", err)
		}
	}
	return m
}

func (m *metrics) reject(reason string) { m.rejected[reason].Inc() }

// MemoryEstimate returns the store's estimated memory in bytes: rings,
// series headers and table slots, the hash index, postings and interned
// symbols. It walks the postings, so call it at scrape rate, not per
// sample.
func (s *Store) MemoryEstimate() int64 {
	b := s.m.ringBytes.Load()
	b += s.live.Load() * 48                                                                                // memSeries
	b += int64(s.series.chunks()+s.sets.chunks()+s.syms.tab.chunks()+s.starts.tab.chunks()) * 8 * chunkLen // table chunks
	b += s.index.bytes()
	s.postings.Range(func(_, v any) bool {
		b += v.(*u32list).bytes() + 64
		return true
	})
	s.mu.Lock()
	b += s.setBytes
	s.mu.Unlock()
	_, sb := s.syms.stats() // freed symbols are already subtracted
	b += sb
	return b
}
