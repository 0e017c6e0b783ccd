package scaler

import (
	"cmp"
	"hash/maphash"
	"math"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unsafe"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Trigger statistics for the status endpoint (issue #18, docs/operations.md
// "Trigger status"): what the running scaler last did for each trigger.
//
// Costs on the hot paths (GetMetrics, IsActive, a push evaluation) are
// atomic loads and stores on the trigger's own triggerStats: no lock, no
// allocation (TestTriggerStatsHotPathAllocs). Errors, the compile path
// and reading the figures may allocate.

// History of recent values: histBuckets buckets of histBucketMs each, so
// the sparkline covers the last 10 minutes at the HPA's 15 s rhythm.
const (
	histBuckets  = 30
	histBucketMs = 20_000
	// perMinuteBuckets complete buckets make the last minute.
	perMinuteBuckets = 60_000 / histBucketMs
)

// Bounds of what a trigger keeps for display.
const (
	maxShownKeys     = 32   // metadata keys shown per trigger
	maxShownKey      = 128  // bytes of a key name
	maxShownValue    = 512  // bytes of a non-query value
	maxShownQuery    = 4096 // bytes of a query value
	maxShownBytes    = 8192 // bytes of one trigger's shown metadata in all
	maxErrorMessage  = 1024 // bytes of a kept error message
	maxRejected      = 32   // triggers kept that failed to compile
	seqlockReadTries = 1000
)

// Redacted replaces the value of a metadata key that may hold a secret.
const Redacted = "<redacted>"

// MetadataEntry is one metadata key as the trigger received it, its value
// redacted when the key may hold a secret (SecretKey) and clipped to a
// display bound.
type MetadataEntry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	// Truncated is set when the value was clipped for display.
	Truncated bool `json:"truncated,omitempty"`
}

// secretWords are the words of a metadata key (or flag) name that mark its
// value as a secret; keys are split into words at case changes and at
// non-letters, so caCert is "ca cert" and scalerAddress is not "ca".
// Long words also match inside a word (apitoken, clientsecret).
var (
	secretWords    = []string{"token", "password", "passwd", "pwd", "secret", "key", "cert", "ca", "auth", "bearer", "credential", "credentials", "private", "pem", "jwt", "cookie", "session"}
	secretInfixes  = []string{"token", "password", "passwd", "secret", "bearer", "credential", "apikey", "privatekey", "auth"}
	secretSuffixes = []string{"key", "cert", "pem", "pwd"}
	// pemLike catches a secret under an innocent key name.
	pemLike = regexp.MustCompile(`-----BEGIN|PRIVATE KEY|^(?i:bearer|basic) [A-Za-z0-9+/=._~-]{8,}$`)
)

// SecretKey reports whether a metadata key or flag name may hold a secret:
// a word of it (split at case changes, digits and punctuation) is one of
// token, password, secret, key, cert, ca, auth, bearer, credential (and a
// few more), a long one of them occurs inside a word, or it ends in key,
// cert or pem. KEDA's tlsClientCert, tlsClientKey and caCert match, and so
// does every FromEnv twin of such a key (KEDA sends FromEnv keys with the
// resolved value).
func SecretKey(name string) bool {
	for _, w := range splitWords(name) {
		if slices.Contains(secretWords, w) {
			return true
		}
		for _, s := range secretInfixes {
			if strings.Contains(w, s) {
				return true
			}
		}
		for _, s := range secretSuffixes {
			if strings.HasSuffix(w, s) {
				return true
			}
		}
	}
	return false
}

// splitWords splits "tlsClientKey" into tls, client, key and
// "X-API_token.v2" into x, api, token, v, 2, all lower-cased.
func splitWords(s string) []string {
	var words []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			words = append(words, string(cur))
			cur = cur[:0]
		}
	}
	rs := []rune(s)
	for i, r := range rs {
		switch {
		case unicode.IsUpper(r):
			// A new word starts at an upper-case letter after a lower-case
			// one, or before a lower-case one in a run (HTTPToken: http, token).
			if i > 0 && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1]) && unicode.IsUpper(rs[i-1])) {
				flush()
			}
			cur = append(cur, unicode.ToLower(r))
		case unicode.IsLower(r):
			cur = append(cur, r)
		case unicode.IsDigit(r):
			if i > 0 && !unicode.IsDigit(rs[i-1]) {
				flush()
			}
			cur = append(cur, r)
		default:
			flush()
		}
	}
	flush()
	return words
}

// redactValue returns what is shown for key's value.
func redactValue(key, value string) (string, bool) {
	if SecretKey(key) || pemLike.MatchString(value) {
		return Redacted, false
	}
	limit := maxShownValue
	if key == "metricQuery" || key == "query" {
		limit = maxShownQuery
	}
	if len(value) > limit {
		return strings.Clone(clipUTF8(value, limit)), true
	}
	return strings.Clone(value), false
}

// ShowMetadata returns md as shown: sorted by key, secrets redacted,
// bounded in keys and bytes (entries past the bounds are dropped and
// counted in a last entry "…" whose value says how many).
func ShowMetadata(md map[string]string) []MetadataEntry {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]MetadataEntry, 0, min(len(keys), maxShownKeys+1))
	used, dropped := 0, 0
	for _, k := range keys {
		v, cut := redactValue(k, md[k])
		kk := k
		if len(kk) > maxShownKey {
			kk, cut = clipUTF8(kk, maxShownKey), true
		}
		if len(out) >= maxShownKeys || used+len(kk)+len(v) > maxShownBytes {
			dropped++
			continue
		}
		used += len(kk) + len(v)
		out = append(out, MetadataEntry{Key: strings.Clone(kk), Value: v, Truncated: cut})
	}
	if dropped > 0 {
		out = append(out, MetadataEntry{Key: "…", Value: strconv.Itoa(dropped) + " more keys not shown", Truncated: true})
	}
	return out
}

// clipUTF8 cuts s to at most n bytes on a rune boundary.
func clipUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// errorRecord is a failed answer, published whole through an atomic
// pointer (the error path allocates anyway).
type errorRecord struct {
	ms     int64
	method string
	code   codes.Code
	msg    string
}

func newErrorRecord(ms int64, method string, err error) *errorRecord {
	st, _ := status.FromError(err)
	return &errorRecord{ms: ms, method: method, code: st.Code(), msg: strings.Clone(clipUTF8(st.Message(), maxErrorMessage))}
}

// Flags of the last evaluation.
const (
	flagActive = 1 << iota
)

// triggerStats is what the scaler has done for one trigger. It hangs off
// the trigger (trigger.stats) and lives as long as it.
//
// Contract:
//   - created and metadata are immutable after newTriggerStats.
//   - The last evaluation (lastMs, lastVal, lastFlags) is a seqlock.
//     Writer: evaluated, which runs inside evalLocked with the trigger's
//     mutex held, so there is one writer at a time. It makes seq odd,
//     stores the three words, then makes seq even. Readers (lastEval)
//     load seq, the words, then seq again, and retry while seq was odd or
//     changed (torn-read detection); after many torn reads in a row they
//     take the trigger's mutex, which excludes the writer.
//   - hist and count are arrays of single words, epoch<<32 | payload, so a
//     bucket is never torn: the epoch (unix ms / histBucketMs) tells a
//     reader whether the bucket is current. Written by evaluated only
//     (the same single writer; count's read-modify-write relies on it).
//   - Every other field is one atomic word, written by any goroutine
//     (RPC handlers, stream goroutines, the feed): each is meaningful on
//     its own, and lastErr is published whole through a pointer.
type triggerStats struct {
	createdMs int64
	metadata  []MetadataEntry

	seq       atomic.Uint64
	lastMs    atomic.Int64  // evaluation time of the last successful evaluation, unix ms; 0 before
	lastVal   atomic.Uint64 // its value, float64 bits
	lastFlags atomic.Uint32 // flagActive

	evals atomic.Uint64 // evaluations, failed ones included
	hist  [histBuckets]atomic.Uint64
	count [histBuckets]atomic.Uint64

	errors   atomic.Uint64
	lastErr  atomic.Pointer[errorRecord]
	specMs   atomic.Int64 // last GetMetricSpec or StreamMetricSpec, unix ms
	kedaName atomic.Pointer[string]

	streams    atomic.Int64 // open StreamIsActive streams
	streamed   atomic.Bool  // a StreamIsActive stream was ever opened: external-push
	pushes     atomic.Uint64
	lastPushMs atomic.Int64
	edges      atomic.Uint64 // inactive-to-active edges the push feed saw
	lastEdgeMs atomic.Int64
}

func newTriggerStats(md map[string]string, nowMs int64) *triggerStats {
	return &triggerStats{createdMs: nowMs, metadata: ShowMetadata(md)}
}

// evaluated records one evaluation at ms (the query's evaluation time).
// Only evalLocked calls it, with the trigger's mutex held.
func (st *triggerStats) evaluated(ms int64, v float64, active, ok bool) {
	st.evals.Add(1)
	e := uint64(ms / histBucketMs)
	i := e % histBuckets
	hv := uint64(math.Float32bits(float32(math.NaN())))
	if ok {
		var f uint32
		if active {
			f = flagActive
		}
		s := st.seq.Add(1) // odd: writing
		st.lastMs.Store(ms)
		st.lastVal.Store(math.Float64bits(v))
		st.lastFlags.Store(f)
		st.seq.Store(s + 1)
		hv = uint64(math.Float32bits(float32(v)))
	}
	st.hist[i].Store(e<<32 | hv)
	if w := st.count[i].Load(); w>>32 == e {
		st.count[i].Store(w + 1)
	} else {
		st.count[i].Store(e<<32 | 1)
	}
}

// lastEval returns the last successful evaluation; ms is 0 before one.
// writer is the lock evaluated runs under (the trigger's mutex): after
// seqlockReadTries torn reads in a row the reader takes it, which waits
// for at most one evaluation, so a reader always gets a consistent answer
// and the hot path never waits for a reader that is not stuck.
func (st *triggerStats) lastEval(writer sync.Locker) (ms int64, v float64, active bool) {
	for range seqlockReadTries {
		s := st.seq.Load()
		if s&1 == 0 {
			ms, v, f := st.lastMs.Load(), math.Float64frombits(st.lastVal.Load()), st.lastFlags.Load()
			if st.seq.Load() == s {
				return ms, v, f&flagActive != 0
			}
		}
		runtime.Gosched()
	}
	writer.Lock()
	defer writer.Unlock()
	return st.lastMs.Load(), math.Float64frombits(st.lastVal.Load()), st.lastFlags.Load()&flagActive != 0
}

// failed records an answer that was an error, with its gRPC status.
func (st *triggerStats) failed(ms int64, method string, err error) {
	st.errors.Add(1)
	st.lastErr.Store(newErrorRecord(ms, method, err))
}

// noteKEDAName records the metric name GetMetrics was asked for; it
// allocates only when the name changes.
func (st *triggerStats) noteKEDAName(name string) {
	if p := st.kedaName.Load(); p != nil && *p == name {
		return
	}
	c := strings.Clone(clipUTF8(name, maxShownKey*2))
	st.kedaName.Store(&c)
}

// HistoryPoint is one bucket of a trigger's recent history: the last value
// evaluated in it, or Failed when the last evaluation in it failed.
type HistoryPoint struct {
	Time   time.Time `json:"time"` // start of the bucket
	Value  float64   `json:"value"`
	Failed bool      `json:"failed,omitempty"`
}

// history returns the buckets of the last histBuckets×histBucketMs before
// nowMs that hold an evaluation, oldest first, and the evaluations per
// minute over the current bucket and the perMinuteBuckets before it (60 to
// 80 s).
func (st *triggerStats) history(nowMs int64) (pts []HistoryPoint, perMinute float64) {
	var recent uint64
	cur := uint64(nowMs / histBucketMs)
	for back := uint64(histBuckets - 1); ; back-- {
		if back <= cur {
			e := cur - back
			w := st.hist[e%histBuckets].Load()
			if w>>32 == e {
				f := math.Float32frombits(uint32(w))
				p := HistoryPoint{Time: time.UnixMilli(int64(e) * histBucketMs)}
				if f != f { // NaN: failed
					p.Failed = true
				} else {
					p.Value = float64(f)
				}
				pts = append(pts, p)
			}
			if back <= perMinuteBuckets {
				if c := st.count[e%histBuckets].Load(); c>>32 == e {
					recent += c & math.MaxUint32
				}
			}
		}
		if back == 0 {
			break
		}
	}
	span := nowMs - (int64(cur)-perMinuteBuckets)*histBucketMs
	return pts, math.Round(float64(recent)*600_000/float64(span)) / 10
}

// TriggerStatus is what the status endpoint shows about one trigger
// (docs/operations.md "Trigger status").
type TriggerStatus struct {
	// ID distinguishes triggers of one ScaledObject (its cache hash).
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// MetricName is the name GetMetricSpec returns; KEDA names the HPA's
	// metric s<trigger index>-MetricName.
	MetricName string `json:"metricName"`
	// RequestedMetricName is the name the last GetMetrics asked for, as
	// KEDA sent it (KEDA 2.x strips its s<index>- prefix before sending,
	// so the trigger index is not known to the scaler; TriggerIndex is -1
	// unless the prefix was sent).
	RequestedMetricName string `json:"requestedMetricName,omitempty"`
	TriggerIndex        int    `json:"triggerIndex"`
	// Type is "external-push" once a StreamIsActive stream was opened for
	// the trigger, else "external" (polled only); KEDA does not send it.
	Type string `json:"type"`
	// Metadata is the trigger metadata as received, secrets redacted.
	Metadata []MetadataEntry `json:"metadata"`
	// Query is metricQuery as received; Evaluated is the lowered query
	// that is evaluated (KServe unwrapping, repairs, operationOverTime).
	Query             string        `json:"query"`
	Evaluated         string        `json:"evaluated"`
	OperationOverTime string        `json:"operationOverTime"`
	Window            time.Duration `json:"-"`
	LookbackDelta     time.Duration `json:"-"`
	Target            float64       `json:"target"`
	Activation        float64       `json:"activationThreshold"`
	Created           time.Time     `json:"created"`
	LastSpec          *time.Time    `json:"lastMetricSpec,omitempty"`
	// Last is the last successful evaluation (nil before one).
	Last *Evaluation `json:"last,omitempty"`
	// LastError is the last answer that was an error (nil before one); it
	// may be older than Last.
	LastError            *TriggerError  `json:"lastError,omitempty"`
	Evaluations          uint64         `json:"evaluations"`
	EvaluationsPerMinute float64        `json:"evaluationsPerMinute"`
	Errors               uint64         `json:"errors"`
	OpenStreams          int64          `json:"openStreams"`
	Pushes               uint64         `json:"pushes"`
	LastPush             *time.Time     `json:"lastPush,omitempty"`
	Edges                uint64         `json:"activationEdges"`
	LastEdge             *time.Time     `json:"lastActivationEdge,omitempty"`
	History              []HistoryPoint `json:"history"`
	// Compiled is false for a trigger that failed validation or
	// compilation (kept among the last few such, with LastError).
	Compiled bool `json:"compiled"`
}

// Evaluation is a trigger's evaluated value and activity.
type Evaluation struct {
	Time   time.Time `json:"time"`
	Value  float64   `json:"value"`
	Active bool      `json:"active"`
}

// TriggerError is an answer that was an error.
type TriggerError struct {
	Time    time.Time `json:"time"`
	Method  string    `json:"method"`
	Code    string    `json:"code"`
	Message string    `json:"message"`
	// WarmingUp is set for the warm-up answer (Unavailable): KEDA and the
	// HPA hold the current replicas.
	WarmingUp bool `json:"warmingUp,omitempty"`
}

func msTime(ms int64) *time.Time {
	if ms == 0 {
		return nil
	}
	t := time.UnixMilli(ms)
	return &t
}

// kedaIndex parses the trigger index out of KEDA's s<index>-<name>.
var kedaIndex = regexp.MustCompile(`^s(\d{1,6})-`)

// Triggers returns every trigger the scaler holds, and the last few that
// failed to compile, sorted by namespace, name and ID. It takes the cache's
// read lock only to list the triggers.
func (s *Scaler) Triggers() []TriggerStatus {
	nowMs := s.now().UnixMilli()
	var ts []*trigger
	s.cache.each(func(t *trigger) { ts = append(ts, t) })
	out := make([]TriggerStatus, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.status(nowMs))
	}
	out = append(out, s.rejected.list(nowMs, s.cfg.TriggerTTL.Milliseconds())...)
	slices.SortFunc(out, func(a, b TriggerStatus) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out
}

func (t *trigger) status(nowMs int64) TriggerStatus {
	st := t.stats
	ts := TriggerStatus{
		ID:                strconv.FormatUint(t.hash, 16),
		Namespace:         t.namespace,
		Name:              t.name,
		MetricName:        t.metricName,
		TriggerIndex:      -1,
		Type:              "external",
		Query:             clipUTF8(t.query, maxShownQuery),
		Evaluated:         clipUTF8(t.plan.String(), maxShownQuery),
		OperationOverTime: t.op,
		Window:            t.window,
		LookbackDelta:     t.lookback,
		Target:            t.target,
		Activation:        t.activation,
		Compiled:          true,
	}
	if st == nil {
		return ts
	}
	ts.Metadata = st.metadata
	ts.Created = time.UnixMilli(st.createdMs)
	ts.LastSpec = msTime(st.specMs.Load())
	if p := st.kedaName.Load(); p != nil {
		ts.RequestedMetricName = *p
		if m := kedaIndex.FindStringSubmatch(*p); m != nil {
			ts.TriggerIndex, _ = strconv.Atoi(m[1])
		}
	}
	if st.streamed.Load() {
		ts.Type = "external-push"
	}
	if ms, v, active := st.lastEval(&t.mu); ms != 0 {
		ts.Last = &Evaluation{Time: time.UnixMilli(ms), Value: v, Active: active}
	}
	ts.LastError = st.lastErr.Load().export()
	ts.Evaluations, ts.Errors = st.evals.Load(), st.errors.Load()
	ts.OpenStreams, ts.Pushes, ts.Edges = st.streams.Load(), st.pushes.Load(), st.edges.Load()
	ts.LastPush, ts.LastEdge = msTime(st.lastPushMs.Load()), msTime(st.lastEdgeMs.Load())
	ts.History, ts.EvaluationsPerMinute = st.history(nowMs)
	return ts
}

func (r *errorRecord) export() *TriggerError {
	if r == nil {
		return nil
	}
	return &TriggerError{
		Time: time.UnixMilli(r.ms), Method: r.method, Code: r.code.String(), Message: r.msg,
		WarmingUp: r.code == codes.Unavailable && strings.HasPrefix(r.msg, ErrWarmingUp.Error()),
	}
}

// fail maps err to its gRPC status (toStatus) and records it: on the
// trigger when there is one, else among the triggers that failed to
// compile.
func (s *Scaler) fail(method string, t *trigger, ref *externalscaler.ScaledObjectRef, err error) error {
	serr := s.toStatus(method, err)
	ms := s.now().UnixMilli()
	if t != nil && t.stats != nil {
		t.stats.failed(ms, method, serr)
	} else {
		s.rejected.note(ref, ms, method, serr)
	}
	return serr
}

// rejectedTriggers are the last maxRejected ScaledObjects whose trigger
// failed validation or compilation, one entry per namespace/name and
// metadata hash, newest first. The compile error path already parses, so
// the lock and the copies cost nothing on a hot path.
type rejectedTriggers struct {
	seed    maphash.Seed
	mu      sync.Mutex
	entries []rejectedTrigger
}

func newRejectedTriggers() *rejectedTriggers { return &rejectedTriggers{seed: maphash.MakeSeed()} }

// hash identifies a ScaledObjectRef's metadata; entries are combined by
// addition because map iteration order is random.
func (r *rejectedTriggers) hash(ns, name string, md map[string]string) uint64 {
	h := maphash.String(r.seed, ns)*0x9E3779B97F4A7C15 ^ maphash.String(r.seed, name)
	for k, v := range md {
		h += (maphash.String(r.seed, k)*0x9E3779B97F4A7C15 ^ maphash.String(r.seed, v)) * 0xBF58476D1CE4E5B9
	}
	return h
}

type rejectedTrigger struct {
	key      string
	ns, name string
	metadata []MetadataEntry
	query    string
	err      *errorRecord
	errors   uint64
	firstMs  int64
}

func (r *rejectedTriggers) note(ref *externalscaler.ScaledObjectRef, ms int64, method string, err error) {
	if ref == nil {
		return
	}
	ns, name := clipUTF8(ref.GetNamespace(), maxShownKey*2), clipUTF8(ref.GetName(), maxShownKey*2)
	md := ref.GetScalerMetadata()
	key := ns + "/" + name + "/" + strconv.FormatUint(r.hash(ns, name, md), 16)
	rec := newErrorRecord(ms, method, err)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, e := range r.entries {
		if e.key == key {
			e.err, e.errors = rec, e.errors+1
			copy(r.entries[1:i+1], r.entries[:i])
			r.entries[0] = e
			return
		}
	}
	q, _, _, _ := lookup(md, "metricQuery", "query")
	e := rejectedTrigger{
		key: strings.Clone(key), ns: strings.Clone(ns), name: strings.Clone(name),
		metadata: ShowMetadata(md), query: strings.Clone(clipUTF8(q, maxShownQuery)),
		err: rec, errors: 1, firstMs: ms,
	}
	if len(r.entries) < maxRejected {
		r.entries = append(r.entries, rejectedTrigger{})
	}
	copy(r.entries[1:], r.entries[:len(r.entries)-1])
	r.entries[0] = e
}

// list returns the entries whose last error is younger than ttlMs.
func (r *rejectedTriggers) list(nowMs, ttlMs int64) []TriggerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []TriggerStatus
	for _, e := range r.entries {
		if nowMs-e.err.ms > ttlMs {
			continue
		}
		out = append(out, TriggerStatus{
			ID: e.key[strings.LastIndexByte(e.key, '/')+1:], Namespace: e.ns, Name: e.name,
			MetricName: metricName(e.ns, e.name), TriggerIndex: -1, Type: "unknown",
			Metadata: e.metadata, Query: e.query, Created: time.UnixMilli(e.firstMs),
			LastError: e.err.export(), Errors: e.errors,
		})
	}
	return out
}

// cost is the estimated bytes a trigger's stats hold at most, counted in
// the trigger's cost (the cache's byte bound): the struct, the shown
// metadata, and room for the last error and the requested metric name.
func (st *triggerStats) cost() int64 {
	n := int64(unsafe.Sizeof(*st)) + int64(cap(st.metadata))*int64(unsafe.Sizeof(MetadataEntry{}))
	for _, e := range st.metadata {
		n += int64(len(e.Key) + len(e.Value))
	}
	return n + int64(unsafe.Sizeof(errorRecord{})) + maxErrorMessage + 2*maxShownKey + 16
}
