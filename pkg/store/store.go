// Package store keeps a short window of samples for every series pushed to
// the scaler, under concurrent OTLP writes and concurrent query reads.
//
// Series are identified by a 64-bit identity hash computed by the caller
// (the receiver hashes the metric name, the visible labels and every
// resource attribute, so pods that report identical visible labels stay
// distinct). Each series gets a dense SeriesRef and a fixed window of
// samples; readers address series by ref.
//
// All times are milliseconds taken from the samples or from the injected
// clock in Settings, never from time.Now deep inside, so tests can load
// historical data.
package store

import (
	"errors"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
)

// SeriesRef is the dense ID of a live series. A ref stays bound to the same
// series until that series is deleted; Generation changes on every create
// and delete, so holders of cached refs know when to re-select.
type SeriesRef uint32

// Sample is one float sample. T is a unix time in milliseconds.
type Sample struct {
	T int64
	V float64
}

// Errors returned by Create and Append. The receiver maps them to OTLP
// rejection reasons.
var (
	// ErrSeriesLimit means the total series limit is reached.
	ErrSeriesLimit = errors.New("series limit reached")
	// ErrSeriesPerMetricLimit means the per-metric-name series limit is reached.
	ErrSeriesPerMetricLimit = errors.New("series per metric limit reached")
	// ErrOutOfOrder means the sample is older than the newest stored one.
	ErrOutOfOrder = errors.New("out of order sample")
	// ErrDuplicateTimestamp means a different value already exists at that timestamp.
	ErrDuplicateTimestamp = errors.New("duplicate sample for timestamp")
	// ErrTooOld means the sample is older than the retention.
	ErrTooOld = errors.New("sample older than retention")
	// ErrUnknownSeries means the ref names no live series.
	ErrUnknownSeries = errors.New("unknown series")
)

// Config configures the store. The zero value of a field means its default.
type Config struct {
	// Retention is how long samples stay visible. Default 10m.
	Retention time.Duration
	// Freshness is the floor of each series' freshness window: a series
	// whose newest sample is older than max(Freshness, 3 × its observed
	// interval) reads as ended (a synthetic stale marker) from then on.
	// Negative disables freshness (conformance tests). Default 30s.
	Freshness time.Duration
	// MaxSeries caps live series. Default 1,000,000.
	MaxSeries int
	// MaxSeriesPerMetric caps live series per metric name. Default 200,000.
	MaxSeriesPerMetric int
	// MaxSamplesPerSeries caps each series' window. Default 1024.
	MaxSamplesPerSeries int
}

func (c Config) withDefaults() Config {
	if c.Retention <= 0 {
		c.Retention = 10 * time.Minute
	}
	if c.Freshness == 0 {
		c.Freshness = 30 * time.Second
	}
	if c.MaxSeries <= 0 {
		c.MaxSeries = 1_000_000
	}
	if c.MaxSeriesPerMetric <= 0 {
		c.MaxSeriesPerMetric = 200_000
	}
	if c.MaxSamplesPerSeries <= 0 {
		c.MaxSamplesPerSeries = 1024
	}
	return c
}

// Settings carries what the developer, not the operator, provides.
type Settings struct {
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock used for retention; nil means time.Now.
	Now func() time.Time
}

// Store is the in-memory series store. It is safe for concurrent use.
type Store struct {
	cfg    Config
	now    func() time.Time
	logger *slog.Logger

	gen atomic.Uint64

	mu       sync.RWMutex // guards the fields below
	byHash   map[uint64]SeriesRef
	series   []*memSeries // index = ref; nil for free slots
	free     []SeriesRef
	perName  map[uint32]int
	names    map[string]uint32
	nameList []string
	live     int
}

type memSeries struct {
	lset     labels.Labels
	hash     uint64
	metricID uint32

	mu      sync.Mutex
	samples []Sample // ring buffer of capacity cap(samples)
	head    int      // index of the oldest sample
	n       int
}

// New returns an empty store.
func New(cfg Config, set Settings) *Store {
	cfg = cfg.withDefaults()
	if set.Now == nil {
		set.Now = time.Now
	}
	if set.Logger == nil {
		set.Logger = slog.New(slog.DiscardHandler)
	}
	return &Store{
		cfg:     cfg,
		now:     set.Now,
		logger:  set.Logger.With("component", "store"),
		byHash:  make(map[uint64]SeriesRef),
		series:  []*memSeries{nil}, // ref 0 is never used, so a zero ref is "none"
		perName: make(map[uint32]int),
		names:   make(map[string]uint32),
	}
}

// Retention returns the configured retention.
func (s *Store) Retention() time.Duration { return s.cfg.Retention }

// Generation changes whenever a series is created or deleted.
func (s *Store) Generation() uint64 { return s.gen.Load() }

// NumSeries returns the number of live series.
func (s *Store) NumSeries() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.live
}

// Lookup returns the series with the given identity hash.
func (s *Store) Lookup(hash uint64) (SeriesRef, bool) {
	s.mu.RLock()
	ref, ok := s.byHash[hash]
	s.mu.RUnlock()
	return ref, ok
}

// Create returns the series with the given identity hash, creating it with
// lset when it does not exist. lset must be sorted and carry __name__; the
// store keeps it, so the caller must not modify it afterwards.
func (s *Store) Create(hash uint64, lset labels.Labels) (SeriesRef, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ref, ok := s.byHash[hash]; ok {
		return ref, nil
	}
	if s.live >= s.cfg.MaxSeries {
		return 0, ErrSeriesLimit
	}
	mid := s.internLocked(lset.Get(labels.MetricName))
	if s.perName[mid] >= s.cfg.MaxSeriesPerMetric {
		return 0, ErrSeriesPerMetricLimit
	}
	ms := &memSeries{lset: lset, hash: hash, metricID: mid, samples: make([]Sample, 0, 8)}
	var ref SeriesRef
	if n := len(s.free); n > 0 {
		ref = s.free[n-1]
		s.free = s.free[:n-1]
		s.series[ref] = ms
	} else {
		ref = SeriesRef(len(s.series))
		s.series = append(s.series, ms)
	}
	s.byHash[hash] = ref
	s.perName[mid]++
	s.live++
	s.gen.Add(1)
	return ref, nil
}

// MetricID returns the dense ID of a metric name, interning it. IDs are
// stable for the life of the store; subscriptions use them to learn which
// metrics an append touched.
func (s *Store) MetricID(name string) uint32 {
	s.mu.RLock()
	id, ok := s.names[name]
	s.mu.RUnlock()
	if ok {
		return id
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.internLocked(name)
}

func (s *Store) internLocked(name string) uint32 {
	if id, ok := s.names[name]; ok {
		return id
	}
	id := uint32(len(s.nameList))
	s.names[name] = id
	s.nameList = append(s.nameList, name)
	return id
}

// SeriesMetricID returns the metric-name ID of a series.
func (s *Store) SeriesMetricID(ref SeriesRef) (uint32, bool) {
	ms := s.get(ref)
	if ms == nil {
		return 0, false
	}
	return ms.metricID, true
}

func (s *Store) get(ref SeriesRef) *memSeries {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if int(ref) >= len(s.series) {
		return nil
	}
	return s.series[ref]
}

// Append adds a sample to a series. A sample equal in time and value to the
// newest one is dropped silently (retried batches); a stale marker at or
// before the newest sample is ignored.
func (s *Store) Append(ref SeriesRef, t int64, v float64) error {
	ms := s.get(ref)
	if ms == nil {
		return ErrUnknownSeries
	}
	if t < s.now().Add(-s.cfg.Retention).UnixMilli() {
		return ErrTooOld
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.n > 0 {
		last := ms.at(ms.n - 1)
		switch {
		case value.IsStaleNaN(v) && t <= last.T:
			return nil
		case t < last.T:
			return ErrOutOfOrder
		case t == last.T:
			if math.Float64bits(v) == math.Float64bits(last.V) {
				return nil
			}
			return ErrDuplicateTimestamp
		}
	}
	if ms.n < cap(ms.samples) {
		ms.samples = ms.samples[:ms.n+1]
		ms.samples[(ms.head+ms.n)%cap(ms.samples)] = Sample{t, v}
		ms.n++
		return nil
	}
	if cap(ms.samples) < s.cfg.MaxSamplesPerSeries {
		grown := make([]Sample, ms.n, min(2*cap(ms.samples), s.cfg.MaxSamplesPerSeries))
		for i := range ms.n {
			grown[i] = ms.at(i)
		}
		ms.samples, ms.head = grown, 0
		ms.samples = ms.samples[:ms.n+1]
		ms.samples[ms.n] = Sample{t, v}
		ms.n++
		return nil
	}
	ms.samples[ms.head] = Sample{t, v}
	ms.head = (ms.head + 1) % cap(ms.samples)
	return nil
}

// at returns the i-th oldest sample; ms.mu must be held.
func (ms *memSeries) at(i int) Sample {
	return ms.samples[(ms.head+i)%cap(ms.samples)]
}

// Labels returns the series' labels, or an empty set for an unknown ref. The
// result is shared and must not be modified.
func (s *Store) Labels(ref SeriesRef) labels.Labels {
	ms := s.get(ref)
	if ms == nil {
		return labels.EmptyLabels()
	}
	return ms.lset
}

// Latest returns the newest sample with T <= maxt. When that sample is the
// series' newest and maxt is past the series' freshness window, it returns
// a stale marker at the end of the window instead, as if the sender had
// written one. Callers treat a StaleNaN value as "absent".
func (s *Store) Latest(ref SeriesRef, maxt int64) (Sample, bool) {
	ms := s.get(ref)
	if ms == nil {
		return Sample{}, false
	}
	mint := s.now().Add(-s.cfg.Retention).UnixMilli()
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for i := ms.n - 1; i >= 0; i-- {
		sm := ms.at(i)
		if sm.T < mint {
			return Sample{}, false
		}
		if sm.T > maxt {
			continue
		}
		if i == ms.n-1 && s.cfg.Freshness > 0 {
			if end := sm.T + ms.freshnessLocked(s.cfg.Freshness); maxt >= end {
				return Sample{T: end, V: math.Float64frombits(value.StaleNaN)}, true
			}
		}
		return sm, true
	}
	return Sample{}, false
}

// freshnessLocked is max(floor, 3 × the newest observed interval).
func (ms *memSeries) freshnessLocked(floor time.Duration) int64 {
	f := floor.Milliseconds()
	if ms.n >= 2 {
		if iv := 3 * (ms.at(ms.n-1).T - ms.at(ms.n-2).T); iv > f {
			f = iv
		}
	}
	return f
}

// Range appends to dst the samples with mint < T <= maxt, oldest first,
// stale markers included, and returns the extended slice.
func (s *Store) Range(dst []Sample, ref SeriesRef, mint, maxt int64) []Sample {
	ms := s.get(ref)
	if ms == nil {
		return dst
	}
	mint = max(mint, s.now().Add(-s.cfg.Retention).UnixMilli()-1)
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for i := range ms.n {
		sm := ms.at(i)
		if sm.T > mint && sm.T <= maxt {
			dst = append(dst, sm)
		}
	}
	return dst
}

// Select appends to dst the refs of live series matching every matcher, in
// ascending order, and returns the extended slice.
func (s *Store) Select(dst []SeriesRef, ms ...*labels.Matcher) []SeriesRef {
	s.mu.RLock()
	defer s.mu.RUnlock()
next:
	for ref, se := range s.series {
		if se == nil {
			continue
		}
		for _, m := range ms {
			if !m.Matches(se.lset.Get(m.Name)) {
				continue next
			}
		}
		dst = append(dst, SeriesRef(ref))
	}
	return dst
}
