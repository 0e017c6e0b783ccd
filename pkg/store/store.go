package store

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// SeriesRef is the dense ID of a live series. A ref stays bound to the same
// series until that series is deleted; Generation changes on every create
// and delete, so holders of cached refs know when to re-select. A deleted
// series' ref is handed to a new series no earlier than the sweep after
// the one that deleted it (see Sweep).
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
	// ErrTooManyLabels means a new series has more labels than MaxLabelsPerSeries.
	ErrTooManyLabels = errors.New("too many labels")
	// ErrLabelNameTooLong means a label name is longer than MaxLabelNameLength.
	ErrLabelNameTooLong = errors.New("label name too long")
	// ErrLabelValueTooLong means a label value is longer than MaxLabelValueLength.
	ErrLabelValueTooLong = errors.New("label value too long")
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
	// interval), capped at Retention, reads as ended (a synthetic stale
	// marker) from then on. Negative disables freshness (conformance
	// tests). Default 30s.
	Freshness time.Duration
	// SeriesTTL is how long a series may go without a sample before the
	// sweeper deletes it. Default Retention.
	SeriesTTL time.Duration
	// SweepInterval is the period of the TTL sweep started by Start.
	// Default SeriesTTL/4, at least 1s and at most 1m.
	SweepInterval time.Duration
	// MaxSeries caps live series. Default 1,000,000.
	MaxSeries int
	// MaxSeriesPerMetric caps live series per metric name. Default 200,000.
	MaxSeriesPerMetric int
	// MaxSamplesPerSeries caps each series' ring, in samples (12 B each;
	// a histogram sample's entry in its log is extra, hist.go).
	// A series pushed faster than MaxSamplesPerSeries samples per
	// Retention is thinned: its ring keeps covering the whole retention
	// with its samples at least Retention/(MaxSamplesPerSeries−1) and at
	// most twice that apart (ring.go). Between 4 and 4095; default 1024.
	MaxSamplesPerSeries int
	// MaxSampleMemory caps the bytes of every series' ring together
	// (allocation sizes, counted by the store). A ring that would grow
	// beyond it is thinned instead, as at MaxSamplesPerSeries. A series'
	// first ring (2 samples, 48 B) is part of its fixed cost and always
	// granted, so rings hold at most MaxSampleMemory + 48 B × MaxSeries.
	// Default 512 MiB: 1M series × 10 minutes at 15 s.
	MaxSampleMemory int64
	// MaxLabelsPerSeries caps the labels of a new series, __name__
	// included. Default 64.
	MaxLabelsPerSeries int
	// MaxLabelNameLength caps label name length in bytes. Default 1024.
	MaxLabelNameLength int
	// MaxLabelValueLength caps label value length in bytes. Default 4096.
	MaxLabelValueLength int
}

// maxRetention keeps every retained sample's offset from its ring's base
// inside a uint32 with room for re-basing.
const maxRetention = 24 * time.Hour

// DefaultMaxSampleMemory is Config.MaxSampleMemory's default: room for 1M
// series of 41 samples (10 minutes at 15 s; 512 B rings).
const DefaultMaxSampleMemory = 512 << 20

func (c Config) withDefaults() Config {
	if c.Retention <= 0 {
		c.Retention = 10 * time.Minute
	}
	c.Retention = min(c.Retention, maxRetention)
	if c.Freshness == 0 {
		c.Freshness = 30 * time.Second
	}
	if c.SeriesTTL <= 0 {
		c.SeriesTTL = c.Retention
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = min(max(c.SeriesTTL/4, time.Second), time.Minute)
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
	c.MaxSamplesPerSeries = max(min(c.MaxSamplesPerSeries, maxRingCap), minRingCap)
	if c.MaxSampleMemory <= 0 {
		c.MaxSampleMemory = DefaultMaxSampleMemory
	}
	if c.MaxLabelsPerSeries <= 0 {
		c.MaxLabelsPerSeries = DefaultMaxLabelsPerSeries
	}
	if c.MaxLabelNameLength <= 0 {
		c.MaxLabelNameLength = DefaultMaxLabelNameLength
	}
	if c.MaxLabelValueLength <= 0 {
		c.MaxLabelValueLength = DefaultMaxLabelValueLength
	}
	return c
}

// Defaults of the label limits. The store enforces them for every writer;
// the receiver checks the same limits per point first and takes its
// defaults from here, so the two cannot disagree.
const (
	DefaultMaxLabelsPerSeries  = 64
	DefaultMaxLabelNameLength  = 1 << 10
	DefaultMaxLabelValueLength = 4 << 10
)

// DefaultConfig returns the store's defaults, the one place they are
// written: New fills every zero field from them, and pkg/config's flags
// start from them. SeriesTTL and SweepInterval hold the values derived
// from the default Retention; a zero SeriesTTL derives them from the
// configured one.
func DefaultConfig() Config { return Config{}.withDefaults() }

// Validate reports configuration the store cannot honour.
func (c Config) Validate() error {
	var errs []error
	if c.Retention > maxRetention {
		errs = append(errs, fmt.Errorf("store retention %v exceeds %v", c.Retention, maxRetention))
	}
	if c.MaxSamplesPerSeries > maxRingCap || c.MaxSamplesPerSeries > 0 && c.MaxSamplesPerSeries < minRingCap {
		errs = append(errs, fmt.Errorf("store max samples per series %d outside [%d, %d]", c.MaxSamplesPerSeries, minRingCap, maxRingCap))
	}
	return errors.Join(errs...)
}

// Settings carries what the developer, not the operator, provides.
type Settings struct {
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock used for retention, freshness and the TTL sweep;
	// nil means time.Now.
	Now func() time.Time
	// Registerer receives the store's self-metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Store is the in-memory series store. It is safe for concurrent use:
// appends and reads take no store-wide lock (see memSeries, hashIndex,
// chunked and u32list for each structure's contract); only series
// creation and deletion serialise on mu.
type Store struct {
	// Fields above mu are immutable after New, or synchronise themselves.
	cfg         Config
	now         func() time.Time
	logger      *slog.Logger
	retentionMs int64
	freshMs     int64  // < 0: freshness disabled
	nameID      uint32 // symbol of __name__
	m           *metrics
	// rl bounds every ring; its used counter synchronises itself.
	rl ringLimits

	// clock is the injected clock's reading, refreshed every clockTick by
	// the background loop while it runs (0 otherwise). Append, Latest and
	// Range need "now" for the retention edge, once per sample or series:
	// a clock read costs 20–50 ns with a vDSO (509 ns measured on this
	// sandbox), against a 15 µs budget for 1k series (performance.md T6a).
	// The edge is thus up to clockTick late while the loop runs; without
	// it (tests) every call reads the injected clock.
	clock       atomic.Int64
	thinLogNext atomic.Int64 // unix ms before which noteThinned stays silent
	gen         atomic.Uint64
	clog        createLog // refs by creation generation, for CreatedSince
	live        atomic.Int64
	nextRef     atomic.Uint32 // refs below it may name a series
	index       hashIndex
	series      chunked[atomic.Pointer[memSeries]]
	sets        chunked[atomic.Pointer[labelSet]]
	syms        symbols
	// postings maps pairKey(name, value) → *u32list of refs, and
	// nameValues maps a name symbol → *u32list of its value symbols.
	// sync.Map reads take no lock.
	postings   sync.Map
	nameValues sync.Map
	aliases    aliasTable // legacy names (alias.go)
	starts     startTimes // per-series start times (starttime.go)
	// hists holds each histogram series' log by ref (hist.go); growth
	// serialises on mu. histScratch pools the histograms an append
	// decodes the previous sample into.
	hists       chunked[atomic.Pointer[histSeries]]
	histScratch sync.Pool
	histLive    atomic.Int64 // live histogram series, for MemoryEstimate

	mu         sync.Mutex // serialises series creation and deletion; guards the fields below
	perMetric  map[uint32]int
	setIDs     map[string]uint32
	nextSet    uint32
	freeRefs   []SeriesRef
	quarantine []SeriesRef // refs freed by the last sweep, reusable after the next
	freeSets   []uint32
	quarSets   []uint32
	scratch    []uint32
	setBytes   int64               // estimated bytes of live label sets
	dirty      map[uint64]struct{} // postings holding deleted refs
	emptied    []string            // metric names whose last series the current sweep removed (aliases)

	runMu  sync.Mutex // guards the sweeper's lifecycle
	stop   chan struct{}
	done   chan struct{}
	closed bool
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
	s := &Store{
		cfg:         cfg,
		now:         set.Now,
		logger:      set.Logger.With("component", "store"),
		retentionMs: cfg.Retention.Milliseconds(),
		freshMs:     cfg.Freshness.Milliseconds(),
		perMetric:   make(map[uint32]int),
		setIDs:      make(map[string]uint32),
		dirty:       make(map[uint64]struct{}),
	}
	if cfg.Freshness < 0 {
		s.freshMs = -1
	}
	s.rl.retention, s.rl.maxCap, s.rl.budget = s.retentionMs, cfg.MaxSamplesPerSeries, cfg.MaxSampleMemory
	s.nextRef.Store(1) // ref 0 is never used, so a zero ref is "none"
	s.nextSet = 1
	s.nameID = s.syms.pin(model.MetricNameLabel)
	s.m = newMetrics(s, set.Registerer)
	return s
}

// Retention returns the configured retention.
func (s *Store) Retention() time.Duration { return s.cfg.Retention }

// Generation changes whenever a series is created or deleted.
func (s *Store) Generation() uint64 { return s.gen.Load() }

// NumSeries returns the number of live series.
func (s *Store) NumSeries() int { return int(s.live.Load()) }

// Lookup returns the series with the given identity hash. It takes no lock.
func (s *Store) Lookup(hash uint64) (SeriesRef, bool) { return s.index.lookup(hash) }

// nowMs returns the current time in unix ms, from the refreshed reading
// when the background loop runs.
func (s *Store) nowMs() int64 {
	if c := s.clock.Load(); c != 0 {
		return c
	}
	return s.now().UnixMilli()
}

// get returns the live series behind ref, or nil.
func (s *Store) get(ref SeriesRef) *memSeries {
	p := s.series.at(uint32(ref))
	if p == nil {
		return nil
	}
	return p.Load()
}

// Create returns the series with the given identity hash, creating it with
// lset when it does not exist. lset must be sorted and carry __name__. The
// store copies what it needs (interned), so the caller may reuse lset.
// Over a limit it returns an error wrapping ErrSeriesLimit,
// ErrSeriesPerMetricLimit, ErrTooManyLabels, ErrLabelNameTooLong or
// ErrLabelValueTooLong; existing series are never affected.
func (s *Store) Create(hash uint64, lset labels.Labels) (SeriesRef, error) {
	return s.create(hash, lset, false)
}

// CreateHistogram is Create for a histogram series: one that takes native
// histogram samples (AppendHistogram) as well as floats. A series that
// exists already is returned as it is, float series or not.
func (s *Store) CreateHistogram(hash uint64, lset labels.Labels) (SeriesRef, error) {
	return s.create(hash, lset, true)
}

func (s *Store) create(hash uint64, lset labels.Labels, hist bool) (SeriesRef, error) {
	if ref, ok := s.index.lookup(hash); ok {
		return ref, nil
	}
	if err := s.checkLabels(lset); err != nil {
		return 0, err
	}
	name := lset.Get(model.MetricNameLabel)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ref, ok := s.index.lookup(hash); ok {
		return ref, nil
	}
	if s.live.Load() >= int64(s.cfg.MaxSeries) {
		s.m.reject(reasonSeriesLimit)
		return 0, ErrSeriesLimit
	}
	// The per-metric count is looked up before the name is interned, so a
	// refused series leaves no symbol behind (a name no series, alias or
	// hold uses is never in the table; symbols.go).
	if id, ok := s.syms.id(name); ok && s.perMetric[id] >= s.cfg.MaxSeriesPerMetric {
		s.m.reject(reasonSeriesPerMetric)
		return 0, ErrSeriesPerMetricLimit
	}
	mid := s.syms.intern(name)
	s.syms.acquireOne(mid) // the series' use of its name; released when the sweeper removes it
	setID, ls := s.internSetLocked(lset)

	var ref SeriesRef
	if n := len(s.freeRefs); n > 0 {
		ref = s.freeRefs[n-1]
		s.freeRefs = s.freeRefs[:n-1]
	} else {
		ref = SeriesRef(s.nextRef.Load())
	}
	s.starts.clear(ref) // before publication (starttime.go)
	ms := &memSeries{metricID: mid, setID: setID}
	if hist || s.hists.at(uint32(ref)) != nil {
		// Before publication, like the start time: a reader that finds
		// ms finds its histogram state (or none) too.
		var hs *histSeries
		if hist {
			hs = &histSeries{ms: ms}
			s.histLive.Add(1)
		}
		s.hists.ensure(uint32(ref)).Store(hs)
	}
	s.series.ensure(uint32(ref)).Store(ms)
	if uint32(ref) >= s.nextRef.Load() {
		s.nextRef.Store(uint32(ref) + 1)
	}
	// Postings, then the hash index: a Lookup that finds the ref finds a
	// fully indexed series.
	s.postingsAppendLocked(s.nameSym(), mid, ref)
	for p, i := ls.pairs(), 0; i < len(p); i += 2 {
		s.postingsAppendLocked(p[i], p[i+1], ref)
	}
	s.index.insert(hash, ref)
	s.perMetric[mid]++
	s.live.Add(1)
	s.clog.created(s.gen.Load()+1, ref) // before the generation moves (createLog)
	s.gen.Add(1)
	s.m.created.Inc()
	return ref, nil
}

func (s *Store) checkLabels(lset labels.Labels) error {
	if lset.Len() > s.cfg.MaxLabelsPerSeries {
		s.m.reject(reasonTooManyLabels)
		return fmt.Errorf("%w: %d > %d", ErrTooManyLabels, lset.Len(), s.cfg.MaxLabelsPerSeries)
	}
	var err error
	lset.Range(func(l labels.Label) {
		switch {
		case err != nil:
		case len(l.Name) > s.cfg.MaxLabelNameLength:
			s.m.reject(reasonLabelNameTooLong)
			err = fmt.Errorf("%w: %d bytes > %d", ErrLabelNameTooLong, len(l.Name), s.cfg.MaxLabelNameLength)
		case len(l.Value) > s.cfg.MaxLabelValueLength:
			s.m.reject(reasonLabelValueTooLong)
			err = fmt.Errorf("%w: label %s has %d bytes > %d", ErrLabelValueTooLong, l.Name, len(l.Value), s.cfg.MaxLabelValueLength)
		}
	})
	return err
}

func (s *Store) nameSym() uint32 { return s.nameID }

// internSetLocked returns the ID of lset's labels without __name__,
// interning them, and takes a reference on the set.
func (s *Store) internSetLocked(lset labels.Labels) (uint32, *labelSet) {
	p := s.scratch[:0]
	lset.Range(func(l labels.Label) {
		if l.Name == model.MetricNameLabel || l.Value == "" {
			return
		}
		p = append(p, s.syms.intern(l.Name), s.syms.intern(l.Value))
	})
	s.scratch = p
	if id, ok := s.setIDs[pairsKey(p)]; ok {
		ls := s.sets.at(id).Load()
		ls.refs++
		return id, ls
	}
	ls := &labelSet{key: strings.Clone(pairsKey(p)), refs: 1}
	s.syms.acquire(p)
	s.setBytes += setCost(ls)
	var id uint32
	if n := len(s.freeSets); n > 0 {
		id = s.freeSets[n-1]
		s.freeSets = s.freeSets[:n-1]
	} else {
		id = s.nextSet
		s.nextSet++
	}
	s.sets.ensure(id).Store(ls)
	s.setIDs[ls.key] = id
	return id, ls
}

func (s *Store) postingsAppendLocked(name, val uint32, ref SeriesRef) {
	k := pairKey(name, val)
	v, ok := s.postings.Load(k)
	if !ok {
		v = &u32list{}
		s.postings.Store(k, v)
		vl, ok := s.nameValues.Load(name)
		if !ok {
			vl = &u32list{}
			s.nameValues.Store(name, vl)
		}
		vl.(*u32list).append(val)
	}
	v.(*u32list).append(uint32(ref))
}

// MetricID returns the dense ID of a metric name, interning it and pinning
// it for the life of the store: it is never freed (see symbols), so it is
// for fixed names and tests only. It takes no lock for a known pinned
// name. The IDs the receiver reports to subscriptions come from series
// (SeriesMetricID) and aliases (AddAlias), which stay valid while those
// live; code that needs a name's ID for a while holds it with
// AcquireMetricID.
func (s *Store) MetricID(name string) uint32 { return s.syms.pin(name) }

// AcquireMetricID returns the metric-name ID that SeriesMetricID and
// AddAlias give name, and holds it until a matching
// ReleaseMetricIDs: while held, the ID keeps naming name. The scaler holds
// the names a compiled trigger's query reads, so its push subscriptions
// match the IDs the receiver reports, and releases them when the trigger
// leaves its cache; a name that no series, alias or other hold keeps is
// then freed (its ID is reused no earlier than the next sweep). Every call
// must be matched by one release.
func (s *Store) AcquireMetricID(name string) uint32 { return s.syms.hold(name) }

// ReleaseMetricIDs drops one hold, taken by AcquireMetricID, on each ID in
// ids (an ID held twice appears twice). It takes the store's creation lock:
// call it on a cold path.
func (s *Store) ReleaseMetricIDs(ids []uint32) {
	if len(ids) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syms.unhold(ids)
}

// SeriesMetricID returns the metric-name ID of a series.
func (s *Store) SeriesMetricID(ref SeriesRef) (uint32, bool) {
	ms := s.get(ref)
	if ms == nil {
		return 0, false
	}
	return ms.metricID, true
}

// Prefetch reads what Append to ref reads (the series header, the base of
// its ring and its newest slot) and changes nothing. Called for a batch of
// series before appending to each, it lets their cache misses overlap
// instead of queueing one behind another: at 1M series ingest is bound by
// memory latency (performance.md §2).
func (s *Store) Prefetch(ref SeriesRef) {
	ms := s.get(ref)
	if ms == nil {
		return
	}
	m, w := ms.snapshot() // a consistent (capacity, ring) pair, as readers take it
	if head, n, c := unpackMeta(m); w != nil && n > 0 {
		_ = slotT(w, wrap(head+n-1, c))
	}
}

// prefetchBatch is how many series PrefetchAll handles per group of passes
// (its scratch arrays live on the stack).
const prefetchBatch = 64

// PrefetchAll is Prefetch for every ref in refs (ref 0 is skipped), and
// touches the start-time slot and the ring slot the next append writes
// too. It works in passes over up to prefetchBatch refs: first the series
// pointers and start-time slots, then the series headers, then the rings.
// Within a pass no load depends on another, so the CPU overlaps their
// misses; one Prefetch per series would instead chain its three misses
// (pointer table, header, ring) one after the other. Like Prefetch it
// only reads, through the same atomics and the reader's snapshot (the
// compiler keeps atomic loads whose results are unused).
func (s *Store) PrefetchAll(refs []SeriesRef) {
	var ms [prefetchBatch]*memSeries
	for len(refs) > 0 {
		n := min(len(refs), prefetchBatch)
		for i, ref := range refs[:n] {
			ms[i] = nil
			if ref != 0 {
				ms[i] = s.get(ref)
				if p := s.starts.tab.at(uint32(ref)); p != nil {
					_ = p.Load()
				}
			}
		}
		for _, m := range ms[:n] {
			if m != nil {
				_ = m.meta.Load()
			}
		}
		for _, m := range ms[:n] {
			if m == nil {
				continue
			}
			meta, w := m.snapshot()
			if head, k, c := unpackMeta(meta); w != nil && k > 0 {
				next := head // full: the append overwrites the oldest slot
				if k < c {
					next = wrap(head+k, c)
				}
				_, _ = slotT(w, wrap(head+k-1, c)), offAt(w, next)
			}
		}
		refs = refs[n:]
	}
}

// Labels returns the series' labels, or an empty set for an unknown ref.
// The result is shared and must not be modified. The first call per series
// builds and caches the set; later calls do not allocate.
func (s *Store) Labels(ref SeriesRef) labels.Labels {
	ms := s.get(ref)
	if ms == nil {
		return labels.EmptyLabels()
	}
	if b := ms.lcache.Load(); b != nil {
		return b.l
	}
	ls := s.sets.at(ms.setID).Load()
	if ls == nil { // impossible for a published series; be safe
		return labels.EmptyLabels()
	}
	var b labels.ScratchBuilder
	b.Add(model.MetricNameLabel, s.syms.str(ms.metricID))
	for p, i := ls.pairs(), 0; i < len(p); i += 2 {
		b.Add(s.syms.str(p[i]), s.syms.str(p[i+1]))
	}
	b.Sort()
	// The strings above are right only if ms was still published after
	// they were read: a published series holds its set, which holds its
	// symbols, and removal is final (a ref gets a new memSeries). If the
	// sweeper removed ms meanwhile, its symbols may have been reused.
	if s.get(ref) != ms {
		return labels.EmptyLabels()
	}
	box := &labelsBox{l: b.Labels()}
	if ms.lcache.CompareAndSwap(nil, box) {
		return box.l
	}
	return ms.lcache.Load().l
}

// labelValue returns the value symbol of label name (a symbol) for ms.
func (s *Store) labelValue(ms *memSeries, name uint32) (uint32, bool) {
	if name == s.nameSym() {
		return ms.metricID, true
	}
	ls := s.sets.at(ms.setID).Load()
	if ls == nil {
		return 0, false
	}
	return ls.get(name)
}

// Latest returns the newest sample with T <= maxt. When maxt is past that
// sample's freshness window F (max(Freshness, 3 × the interval before it),
// capped at the retention), it returns a stale marker at T+F instead, as if
// the sender had written one there (otlp-contract.md §9.5). Callers treat a
// StaleNaN value as "absent". Samples older than the retention are
// invisible. It takes no lock and does not allocate.
func (s *Store) Latest(ref SeriesRef, maxt int64) (Sample, bool) {
	ms := s.get(ref)
	if ms == nil {
		return Sample{}, false
	}
	return ms.latest(maxt, s.nowMs()-s.retentionMs, s.freshMs, s.retentionMs)
}

// Range appends to dst the samples with mint < T <= maxt, oldest first,
// stale markers included, and returns the extended slice. Samples older
// than the retention are invisible. It takes no lock and allocates only to
// grow dst.
func (s *Store) Range(dst []Sample, ref SeriesRef, mint, maxt int64) []Sample {
	ms := s.get(ref)
	if ms == nil {
		return dst
	}
	mint = max(mint, s.nowMs()-s.retentionMs-1)
	return ms.appendRange(dst, mint, maxt)
}

// LastSampleTime returns the time of the series' newest sample.
func (s *Store) LastSampleTime(ref SeriesRef) (int64, bool) {
	ms := s.get(ref)
	if ms == nil {
		return 0, false
	}
	return ms.lastT()
}
