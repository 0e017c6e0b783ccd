package store

import (
	"sync/atomic"
	"time"

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
	// Histogram samples (hist.go): for a float series, malformed or too
	// large, and one that --max-sample-memory cannot hold.
	reasonSampleKind       = "histogram_for_float_series"
	reasonInvalidHistogram = "invalid_histogram"
	reasonSampleMemory     = "sample_memory"
)

var reasons = []string{
	reasonSeriesLimit, reasonSeriesPerMetric, reasonTooManyLabels, reasonLabelNameTooLong,
	reasonLabelValueTooLong, reasonOutOfOrder, reasonDuplicate, reasonTooOld, reasonUnknownSeries,
	reasonSampleKind, reasonInvalidHistogram, reasonSampleMemory,
}

// Bounds that thin a ring, the values of the thinned-samples metric's
// bound label.
const (
	boundSamplesPerSeries = "max_samples_per_series"
	boundSampleMemory     = "max_sample_memory"
)

type metrics struct {
	samples stripedCounter
	// Samples removed from rings while still within the retention, by
	// the bound that stopped the ring (ring.go: thin, mergeable).
	thinnedCap, thinnedMem stripedCounter
	created                prometheus.Counter
	removed                prometheus.Counter
	rejected               map[string]prometheus.Counter // fixed after newMetrics
}

// stripedCounter counts appends without making every writer share one
// cache line: writers of different series usually hit different stripes.
type stripedCounter struct {
	c [16]struct {
		n atomic.Uint64
		_ [56]byte
	}
}

// addAt adds n to key's stripe (an Appender's Commit: the stripe of its
// last series, so concurrent requests spread over the stripes too).
func (c *stripedCounter) addAt(key uint32, n uint64) { c.c[key&15].n.Add(n) }

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
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "keda_otel_scaler_store_samples_thinned_total",
			Help:        thinnedHelp,
			ConstLabels: prometheus.Labels{"bound": boundSamplesPerSeries},
		}, func() float64 { return float64(m.thinnedCap.load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "keda_otel_scaler_store_samples_thinned_total",
			Help:        thinnedHelp,
			ConstLabels: prometheus.Labels{"bound": boundSampleMemory},
		}, func() float64 { return float64(m.thinnedMem.load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keda_otel_scaler_store_sample_memory_bytes",
			Help: "Bytes of every series' ring of samples (allocation sizes), bounded by --max-sample-memory.",
		}, func() float64 { return float64(s.rl.used.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keda_otel_scaler_store_sample_memory_limit_bytes",
			Help: "--max-sample-memory: rings that would grow beyond it are thinned instead.",
		}, func() float64 { return float64(s.rl.budget) }),
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

// thinned counts n samples a ring of ref dropped within the retention.
func (m *metrics) thinned(ref SeriesRef, n int, atCap bool) {
	if atCap {
		m.thinnedCap.addAt(uint32(ref), uint64(n))
	} else {
		m.thinnedMem.addAt(uint32(ref), uint64(n))
	}
}

const thinnedHelp = "Samples removed from a series' ring while still within the retention, so that the ring keeps covering the retention at a coarser resolution, by the bound the ring reached: max_samples_per_series (--max-samples-per-series) or max_sample_memory (--max-sample-memory)."

// thinLogEvery is the least time between two "Series thinned" logs.
const thinLogEvery = int64(10_000) // ms

// noteThinned logs, at most once per thinLogEvery store-wide, that a
// series' ring was thinned, with what its window still covers. The
// counters say how often.
func (s *Store) noteThinned(ms *memSeries, atCap bool) {
	now := s.nowMs()
	next := s.thinLogNext.Load()
	if now < next || !s.thinLogNext.CompareAndSwap(next, now+thinLogEvery) {
		return
	}
	_, _, c := unpackMeta(ms.meta.Load())
	bound := boundSampleMemory
	if atCap {
		bound = boundSamplesPerSeries
	}
	gap := time.Duration(s.rl.thinGap(max(c, minRingCap))) * time.Millisecond
	s.logger.Warn("Series thinned to fit its bound; its window still covers the retention at a coarser resolution",
		"metric", s.syms.str(ms.metricID), "bound", bound, "ring_samples", c, "window", s.cfg.Retention,
		"sample_interval_min", gap/2, "sample_interval_max", gap,
		"sample_memory_bytes", s.rl.used.Load(), "max_sample_memory_bytes", s.rl.budget)
}

// MemoryEstimate returns the store's estimated memory in bytes: rings,
// series headers and table slots, the hash index, postings and interned
// symbols. It walks the postings, so call it at scrape rate, not per
// sample.
func (s *Store) MemoryEstimate() int64 {
	b := s.rl.used.Load()
	b += s.live.Load() * 48                                                                                                 // memSeries
	b += int64(s.series.chunks()+s.sets.chunks()+s.syms.tab.chunks()+s.starts.tab.chunks()+s.hists.chunks()) * 8 * chunkLen // table chunks
	b += s.histLive.Load() * histSeriesBytes                                                                                // their logs are in rl.used
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
