package receiver

import (
	"bytes"
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/value"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// baseline is what every bad-input case starts from.
func baseline() *colmetricpb.ExportMetricsServiceRequest {
	return req(rm(attrs("service.name", "svc"),
		gauge("base", "", dpD(attrs("pod", "a"), tsNs(30), 1)),
		hist("bh", "", cumulative, hdp(attrs("pod", "a"), tsNs(30), []float64{1}, []uint64{1, 1}, ptr(3.0))),
	))
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}

// withInvalidUTF8 marshals m and replaces every "ZZZZ" with 4 bytes of
// invalid UTF-8 (go proto refuses to marshal invalid strings; the wire
// carries them anyway).
func withInvalidUTF8(t *testing.T, m proto.Message) []byte {
	t.Helper()
	return bytes.ReplaceAll(mustMarshal(t, m), []byte("ZZZZ"), []byte{0xff, 0xfe, 0xc3, 0x28})
}

// TestBadInput covers otlp-contract.md §14 items 27 and 33–42: each case
// snapshots the store, sends bad input, and checks the exact outcome:
// a decode error, or the rejections by reason (counters and
// partial_success), the siblings stored, and nothing else changed.
func TestBadInput(t *testing.T) {
	t.Parallel()
	bigAttrs := make([]*commonpb.KeyValue, 10_000)
	for i := range bigAttrs {
		bigAttrs[i] = kv("k"+strconv.Itoa(i), "v")
	}
	base := ser("base", "job", "svc", "pod", "a")
	sibling := func() *metricspb.Metric { return gauge("sibling", "", dpD(nil, tsNs(10), 5)) }
	siblingAdded := map[string][]sampleBits{ser("sibling", "job", "svc"): {sb(tsMs(10), 5)}}
	valid := mustMarshal(t, req(rm(nil, gauge("g", "", dpD(nil, tsNs(10), 1)))))
	for _, tc := range []struct {
		name         string
		body         []byte
		wantErr      bool
		wantRejected map[reason]int
		wantAdded    map[string][]sampleBits
	}{
		{name: "random_bytes", body: []byte("\x8a\x01\xff\xff\xff\xff\x0f garbage"), wantErr: true},
		{name: "truncated", body: valid[:len(valid)-3], wantErr: true},
		{name: "wrong_wire_type", body: protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7), wantErr: true},
		{name: "wrong_wire_type_deep", body: bytes.Replace(valid, []byte{0x19}, []byte{0x18}, 1), wantErr: true},
		{
			name:         "empty_name",
			body:         mustMarshal(t, req(rm(attrs("service.name", "svc"), gauge("", "", dpD(nil, tsNs(10), 1), dpD(nil, tsNs(9), 1)), sibling()))),
			wantRejected: map[reason]int{reasonEmptyName: 2},
			wantAdded:    siblingAdded,
		},
		{
			name:         "too_many_labels",
			body:         mustMarshal(t, req(rm(attrs("service.name", "svc"), gauge("sibling", "", dpD(bigAttrs, tsNs(11), 1), dpD(nil, tsNs(10), 5))))),
			wantRejected: map[reason]int{reasonTooManyLabels: 1},
			wantAdded:    siblingAdded,
		},
		{
			name:         "label_value_too_long",
			body:         mustMarshal(t, req(rm(attrs("service.name", "svc"), gauge("sibling", "", dpD(attrs("big", strings.Repeat("x", 1<<20)), tsNs(11), 1), dpD(nil, tsNs(10), 5))))),
			wantRejected: map[reason]int{reasonLabelValueTooLong: 1},
			wantAdded:    siblingAdded,
		},
		{
			name:         "label_name_too_long",
			body:         mustMarshal(t, req(rm(attrs("service.name", "svc"), gauge("sibling", "", dpD(attrs(strings.Repeat("n", 2000), "v"), tsNs(11), 1), dpD(nil, tsNs(10), 5))))),
			wantRejected: map[reason]int{reasonLabelNameTooLong: 1},
			wantAdded:    siblingAdded,
		},
		{
			name:         "name_too_long",
			body:         mustMarshal(t, req(rm(attrs("service.name", "svc"), gauge(strings.Repeat("m", 1025), "", dpD(nil, tsNs(10), 1)), sibling()))),
			wantRejected: map[reason]int{reasonNameTooLong: 1},
			wantAdded:    siblingAdded,
		},
		{
			name: "timestamps",
			body: mustMarshal(t, req(rm(attrs("service.name", "svc"), gauge("sibling", "",
				dpD(nil, 0, 1), dpD(nil, uint64(testNow.Add(time.Hour).UnixNano()), 1),
				dpD(nil, uint64(testNow.Add(-11*time.Minute).UnixNano()), 1), dpD(nil, tsNs(10), 5))))),
			wantRejected: map[reason]int{reasonMissingTimestamp: 1, reasonTooFarInFuture: 1, reasonTooOld: 1},
			wantAdded:    siblingAdded,
		},
		{
			name: "invalid_histograms",
			body: mustMarshal(t, req(rm(attrs("service.name", "svc"),
				hist("h", "", cumulative,
					&metricspb.HistogramDataPoint{TimeUnixNano: tsNs(10), ExplicitBounds: []float64{1, 2}, BucketCounts: []uint64{1, 1}, Count: 2},
					&metricspb.HistogramDataPoint{TimeUnixNano: tsNs(10), ExplicitBounds: []float64{2, 1}, BucketCounts: []uint64{1, 1, 1}, Count: 3},
					&metricspb.HistogramDataPoint{TimeUnixNano: tsNs(10), ExplicitBounds: []float64{1, math.Inf(1)}, BucketCounts: []uint64{1, 1, 1}, Count: 3},
					&metricspb.HistogramDataPoint{TimeUnixNano: tsNs(10), ExplicitBounds: []float64{1}, BucketCounts: []uint64{1, 1}, Count: 3},
				), sibling()))),
			wantRejected: map[reason]int{reasonInvalidHistogram: 4},
			wantAdded:    siblingAdded,
		},
		{
			name:         "missing_value",
			body:         mustMarshal(t, req(rm(attrs("service.name", "svc"), gauge("sibling", "", &metricspb.NumberDataPoint{TimeUnixNano: tsNs(11)}, dpD(nil, tsNs(10), 5))))),
			wantRejected: map[reason]int{reasonMissingValue: 1},
			wantAdded:    siblingAdded,
		},
		{
			name: "invalid_utf8_and_duplicate_label",
			body: withInvalidUTF8(t, req(rm(attrs("service.name", "svc"),
				gauge("nameZZZZ", "", dpD(nil, tsNs(10), 1)),
				gauge("sibling", "",
					dpD(attrs("kZZZZ", "v"), tsNs(13), 1),
					dpD(attrs("k", "vZZZZ"), tsNs(12), 1),
					dpD(attrs("k", "a", "k", "b"), tsNs(11), 1),
					dpD(nil, tsNs(10), 5))))),
			wantRejected: map[reason]int{reasonInvalidUTF8: 3, reasonDuplicateLabel: 1},
			wantAdded:    siblingAdded,
		},
		{
			name:         "invalid_label_name",
			body:         mustMarshal(t, req(rm(attrs("service.name", "svc"), gauge("sibling", "", dpD(attrs("__", "v"), tsNs(11), 1), dpD(nil, tsNs(10), 5))))),
			wantRejected: map[reason]int{reasonInvalidLabelName: 1},
			wantAdded:    siblingAdded,
		},
		{
			// §14 item 27: out of order, same time and value (silent),
			// same time with another value.
			name: "order_and_duplicates",
			body: mustMarshal(t, req(rm(attrs("service.name", "svc"), gauge("base", "",
				dpD(attrs("pod", "a"), tsNs(40), 9), dpD(attrs("pod", "a"), tsNs(30), 1), dpD(attrs("pod", "a"), tsNs(30), 2))))),
			wantRejected: map[reason]int{reasonOutOfOrder: 1, reasonDuplicateTimestamp: 1},
		},
		{
			name:         "marker_for_unknown_series_creates_nothing",
			body:         mustMarshal(t, req(rm(attrs("service.name", "svc"), gauge("nope", "", &metricspb.NumberDataPoint{TimeUnixNano: tsNs(10), Flags: 1})))),
			wantRejected: map[reason]int{},
		},
		{
			name:      "base_updates_alongside",
			body:      mustMarshal(t, req(rm(attrs("service.name", "svc"), gauge("base", "", dpD(attrs("pod", "a"), tsNs(20), 2))))),
			wantAdded: map[string][]sampleBits{base: {sb(tsMs(30), 1), sb(tsMs(20), 2)}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{}, store.Config{})
			res := f.export(t, baseline())
			require.Zero(t, res.rejected, res.message)
			before := dump(f.st)
			res, err := f.r.ingestProto(tc.body)
			after := dump(f.st)
			want := before
			for k, v := range tc.wantAdded {
				want[k] = v
			}
			assert.Equal(t, want, after, "store after bad input")
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			total := 0
			for r := reason(1); r < numReasons; r++ {
				assert.InDelta(t, float64(tc.wantRejected[r]), counterValue(t, f.r.m.rejected[r]), 0, r.String())
				total += tc.wantRejected[r]
			}
			assert.Equal(t, int64(total), res.rejected, res.message)
			assert.LessOrEqual(t, len(res.message), maxMessage)
			for r := range tc.wantRejected {
				assert.Contains(t, res.message, r.String()+"=")
			}
		})
	}
}

// TestSeriesLimit pushes new series past the store's limit: exactly the
// excess is rejected as series_limit, existing series keep updating, and
// partial_success reports it (§14 item 41).
func TestSeriesLimit(t *testing.T) {
	t.Parallel()
	const limit, existing, pushed = 1000, 100, 1200
	f := newFixture(t, Config{}, store.Config{MaxSeries: limit})
	mk := func(n int, sec int) *colmetricpb.ExportMetricsServiceRequest {
		dps := make([]*metricspb.NumberDataPoint, n)
		for i := range dps {
			dps[i] = dpD(attrs("i", strconv.Itoa(i)), tsNs(sec), float64(sec))
		}
		return req(rm(nil, gauge("g", "", dps...)))
	}
	res := f.export(t, mk(existing, 20))
	require.Zero(t, res.rejected)
	res = f.export(t, mk(pushed, 10))
	assert.Equal(t, int64(pushed-limit), res.rejected)
	assert.Contains(t, res.message, "series_limit=200")
	assert.InDelta(t, float64(pushed-limit), counterValue(t, f.r.m.rejected[reasonSeriesLimit]), 0)
	assert.Equal(t, limit, f.st.NumSeries())
	got := dump(f.st)
	assert.Equal(t, []sampleBits{sb(tsMs(20), 20), sb(tsMs(10), 10)}, got[ser("g", "i", "0")], "existing series updated")
}

// TestStaleness checks NoRecordedValue (§14 item 28): a gauge marker ends
// the series at T, a histogram marker ends every _bucket, _count and _sum,
// and a later point resumes.
func TestStaleness(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, store.Config{})
	res := f.export(t, baseline())
	require.Zero(t, res.rejected)
	marker := req(rm(attrs("service.name", "svc"),
		gauge("base", "", &metricspb.NumberDataPoint{Attributes: attrs("pod", "a"), TimeUnixNano: tsNs(20), Flags: 1}),
		hist("bh", "", cumulative, &metricspb.HistogramDataPoint{Attributes: attrs("pod", "a"), TimeUnixNano: tsNs(20), ExplicitBounds: []float64{1}, Flags: 1}),
	))
	res = f.export(t, marker)
	require.Zero(t, res.rejected, res.message)

	got := dump(f.st)
	require.Len(t, got, 5)
	for k, ss := range got {
		require.Len(t, ss, 2, k)
		assert.True(t, value.IsStaleNaN(math.Float64frombits(ss[1].V)), k)
		assert.Equal(t, tsMs(20), ss[1].T, k)
	}
	eng := query.NewEngine(f.st)
	for _, q := range []string{"base", "bh_bucket", "bh_count", "bh_sum"} {
		plan, err := eng.Query(q, query.Options{})
		require.NoError(t, err)
		out, err := plan.Eval(context.Background(), tsMs(19))
		require.NoError(t, err)
		assert.Empty(t, out.Vector, q)
	}
	res = f.export(t, req(rm(attrs("service.name", "svc"), gauge("base", "", dpD(attrs("pod", "a"), tsNs(10), 4)))))
	require.Zero(t, res.rejected)
	plan, err := eng.Query("base", query.Options{})
	require.NoError(t, err)
	out, err := plan.Eval(context.Background(), tsMs(9))
	require.NoError(t, err)
	require.Len(t, out.Vector, 1)
	assert.InDelta(t, 4.0, out.Vector[0].F, 0)
}

// TestSeriesPerMetricLimit: new series past the per-metric limit are
// rejected as series_per_metric_limit; other metrics are unaffected.
func TestSeriesPerMetricLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, store.Config{MaxSeriesPerMetric: 2})
	res := f.export(t, req(rm(nil,
		gauge("g", "", dpD(attrs("i", "1"), tsNs(10), 1), dpD(attrs("i", "2"), tsNs(10), 1), dpD(attrs("i", "3"), tsNs(10), 1)),
		gauge("other", "", dpD(attrs("i", "3"), tsNs(10), 1)),
	)))
	assert.Equal(t, int64(1), res.rejected)
	assert.Contains(t, res.message, "series_per_metric_limit=1")
	assert.InDelta(t, 1, counterValue(t, f.r.m.rejected[reasonSeriesPerMetricLimit]), 0)
	assert.Contains(t, dump(f.st), ser("other", "i", "3"))
}

// TestRejectionExample checks that the partial-success example names the
// rejected point's own series, also when its labels came from the cache.
func TestRejectionExample(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, store.Config{})
	mk := func(sec int) *colmetricpb.ExportMetricsServiceRequest {
		return req(rm(nil, gauge("g", "", dpD(attrs("pod", "a"), tsNs(sec), 1), dpD(attrs("pod", "b"), tsNs(sec), 2))))
	}
	f.export(t, mk(10))
	res := f.export(t, mk(20)) // older: both out of order, labels from the cache
	assert.Equal(t, int64(2), res.rejected)
	assert.Contains(t, res.message, `out_of_order=2 (first: g{pod="a"})`)
}
