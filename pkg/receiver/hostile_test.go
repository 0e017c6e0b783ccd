package receiver

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/otlpwire"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/synth"
)

// nested returns leaf under n arrays (or maps, key "k"): an attribute
// value whose leaf is at depth n.
func nested(n int, leaf any, asMap bool) any {
	v := leaf
	for range n {
		if asMap {
			v = map[string]any{"k": v}
		} else {
			v = []any{v}
		}
	}
	return v
}

// tenGoodAndOne is a request of ten good gauge points (series g{i="0"} to
// g{i="9"}) and one more whose attribute "deep" holds bad.
func tenGoodAndOne(bad *commonpb.AnyValue) *colmetricpb.ExportMetricsServiceRequest {
	var dps []*metricspb.NumberDataPoint
	for i := range 10 {
		dps = append(dps, dpD(attrs("i", fmt.Sprint(i)), tsNs(10), float64(i)))
	}
	dps = append(dps, dpD([]*commonpb.KeyValue{kv("i", "10"), {Key: "deep", Value: bad}}, tsNs(10), 10))
	return req(rm(nil, gauge("g", "", dps...)))
}

// wantTenGood checks a partial success of one attribute_too_deep point and
// the ten good series stored.
func wantTenGood(t *testing.T, st *store.Store, rejected int64, msg string) {
	t.Helper()
	assert.Equal(t, int64(1), rejected)
	assert.Contains(t, msg, "attribute_too_deep=1")
	got := dump(st)
	for i := range 10 {
		assert.Contains(t, got, ser("g", "i", fmt.Sprint(i)))
	}
	assert.NotContains(t, got, ser("g", "i", "10"))
}

// TestAttributeTooDeep is the regression test of issue #12 class 1 on the
// protobuf path: a point whose attribute nests deeper than
// otlpwire.MaxValueDepth is rejected as attribute_too_deep (partial
// success) and the other points of the request are stored, over gRPC and
// HTTP, plain and gzip. Before, the whole Export failed with
// InvalidArgument, which exporters do not retry. A value nested exactly
// MaxValueDepth deep is still a label.
func TestAttributeTooDeep(t *testing.T) {
	t.Parallel()
	for _, asMap := range []bool{false, true} {
		deep := anyv(nested(otlpwire.MaxValueDepth+1, "x", asMap))
		t.Run(fmt.Sprintf("map=%v", asMap), func(t *testing.T) {
			t.Run("grpc", func(t *testing.T) {
				for _, opts := range [][]grpc.CallOption{nil, {grpc.UseCompressor(grpcgzip.Name)}} {
					f := newFixture(t, Config{}, store.Config{})
					client := colmetricpb.NewMetricsServiceClient(grpcServer(t, f.r))
					resp, err := client.Export(t.Context(), tenGoodAndOne(deep), opts...)
					require.NoError(t, err)
					wantTenGood(t, f.st, resp.GetPartialSuccess().GetRejectedDataPoints(), resp.GetPartialSuccess().GetErrorMessage())
				}
			})
			t.Run("http_json", func(t *testing.T) {
				f := newFixture(t, Config{}, store.Config{})
				srv := httptest.NewServer(f.r)
				t.Cleanup(srv.Close)
				body, err := protojson.Marshal(tenGoodAndOne(deep))
				require.NoError(t, err)
				resp, out := post(t, srv.URL+"/v1/metrics", "application/json", "", body)
				require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
				var got colmetricpb.ExportMetricsServiceResponse
				require.NoError(t, protojson.Unmarshal(out, &got))
				wantTenGood(t, f.st, got.GetPartialSuccess().GetRejectedDataPoints(), got.GetPartialSuccess().GetErrorMessage())
			})
		})
	}
	t.Run("at_the_limit_is_a_label", func(t *testing.T) {
		f := newFixture(t, Config{}, store.Config{})
		res := f.export(t, tenGoodAndOne(anyv(nested(otlpwire.MaxValueDepth, "x", false))))
		assert.Zero(t, res.rejected, res.message)
	})
	t.Run("resource_and_scope", func(t *testing.T) {
		f := newFixture(t, Config{}, store.Config{})
		deep := &commonpb.KeyValue{Key: "deep", Value: anyv(nested(otlpwire.MaxValueDepth+1, "x", false))}
		badRes := rm([]*commonpb.KeyValue{deep}, gauge("r", "", dpD(nil, tsNs(10), 1), dpD(nil, tsNs(9), 1)))
		badScope := rm(nil, gauge("s", "", dpD(nil, tsNs(10), 1)))
		badScope.ScopeMetrics[0].Scope.Attributes = []*commonpb.KeyValue{deep}
		res := f.export(t, req(badRes, badScope, rm(nil, gauge("ok", "", dpD(nil, tsNs(10), 1)))))
		assert.Equal(t, int64(3), res.rejected)
		assert.Contains(t, res.message, "attribute_too_deep=3")
		assert.Equal(t, []string{ser("ok")}, keys(dump(f.st)))
	})
}

// deepJSONBody is an OTLP/JSON request of ten good points and one whose
// attribute value nests levels arrayValues deep (written without
// building a tree, so a million levels cost only their bytes).
func deepJSONBody(levels int) []byte {
	head, tail := deepJSONParts()
	deep := strings.Repeat(`{"arrayValue":{"values":[`, levels) + `{"stringValue":"x"}` + strings.Repeat("]}}", levels)
	return []byte(head + deep + tail)
}

// deepJSONParts are deepJSONBody's request around the deep value.
func deepJSONParts() (head, tail string) {
	good, err := protojson.Marshal(tenGoodAndOne(anyv("placeholder")))
	if err != nil {
		panic(err)
	}
	head, tail, _ = strings.Cut(string(good), `{"stringValue":"placeholder"}`)
	return head, tail
}

// deepJSONGzip is deepJSONBody(levels) gzip'd as a series of gzip members
// (which decompress as their concatenation, as a multi-member file does),
// each level chunk compressed once and repeated: a million levels cost
// the test a few milliseconds, not seconds of compression.
func deepJSONGzip(t testing.TB, levels int) (zipped []byte, plainLen int) {
	const chunk = 10_000
	require.Zero(t, levels%chunk)
	head, tail := deepJSONParts()
	open := gzipped(t, []byte(strings.Repeat(`{"arrayValue":{"values":[`, chunk)))
	closing := gzipped(t, []byte(strings.Repeat("]}}", chunk)))
	zipped = gzipped(t, []byte(head))
	for range levels / chunk {
		zipped = append(zipped, open...)
	}
	zipped = append(zipped, gzipped(t, []byte(`{"stringValue":"x"}`))...)
	for range levels / chunk {
		zipped = append(zipped, closing...)
	}
	zipped = append(zipped, gzipped(t, []byte(tail))...)
	return zipped, len(head) + levels*(25+3) + len(`{"stringValue":"x"}`) + len(tail)
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	require.NoError(t, err)
	_, err = zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// TestJSONDeepNesting is the regression test of issue #12 class 1 on the
// OTLP/JSON path: a point whose attribute value is an arrayValue nested a
// million levels deep (a 28 MB body; 64 KB gzip'd in one member, 38 KB
// as sent here) is rejected as attribute_too_deep and the ten other
// points are stored, with bounded memory: the bytes allocated while
// serving it are under twice the decompressed body plus what it is
// charged for decoding. Part of make gates (no -race). Before, pdata recursed once per
// level: a fatal stack overflow (the test binary dies), and at 200k levels
// seconds and hundreds of MiB. Values deep enough to be too deep but
// short of the scan's cut take pdata's path and get the same answer.
func TestJSONDeepNesting(t *testing.T) {
	deepest := 1_000_000
	if raceEnabled {
		deepest = 200_000 // the race detector makes the scan 15× slower; make gates runs a million
	}
	for _, levels := range []int{otlpwire.MaxValueDepth + 1, jsonValueCut / 3, deepest} {
		t.Run(fmt.Sprint(levels), func(t *testing.T) {
			body := deepJSONBody(levels)
			var zbody []byte
			if levels < 10_000 {
				zbody = gzipped(t, body)
			} else {
				var n int
				zbody, n = deepJSONGzip(t, levels)
				require.Equal(t, len(body), n)
			}
			f := newFixture(t, Config{}, store.Config{})
			srv := httptest.NewServer(f.r)
			t.Cleanup(srv.Close)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			resp, out := post(t, srv.URL+"/v1/metrics", "application/json", "gzip", zbody)
			runtime.ReadMemStats(&after)
			require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
			var got colmetricpb.ExportMetricsServiceResponse
			require.NoError(t, protojson.Unmarshal(out, &got))
			wantTenGood(t, f.st, got.GetPartialSuccess().GetRejectedDataPoints(), got.GetPartialSuccess().GetErrorMessage())
			allocated := after.TotalAlloc - before.TotalAlloc
			sc, err := scanJSON(append([]byte(nil), body...))
			require.NoError(t, err)
			bound := uint64(2*len(body)) + uint64(sc.treeBytes(int64(len(body)))) + 16<<20
			t.Logf("levels %d: body %d B (gzip %d B), allocated %d B, bound %d B", levels, len(body), len(zbody), allocated, bound)
			assert.LessOrEqual(t, allocated, bound)
		})
	}
}

// TestScanJSON checks the scan itself: values nested past the cut
// are replaced by a too-deep value of the same decoded meaning, values
// short of it and everything outside values are left alone, and bodies
// that nest deeply outside values or do not balance fail.
func TestScanJSON(t *testing.T) {
	t.Parallel()
	require.LessOrEqual(t, len(tooDeepJSON), 2*jsonValueCut, "the replacement fits in any value it replaces")
	short := deepJSONBody(jsonValueCut / 3)
	long := deepJSONBody(jsonValueCut)
	for _, tc := range []struct {
		name     string
		in       string
		replaced int
		err      string
	}{
		{"short_value_untouched", string(short), 0, ""},
		{"long_value_replaced", string(long), 1, ""},
		{"two_long_values", `{"a":[{"value":{"b":` + strings.Repeat("[", 2000) + strings.Repeat("]", 2000) + `}},{"value" :` + strings.Repeat("{", 1100) + strings.Repeat("}", 1100) + `}]}`, 2, ""},
		{"brackets_in_strings_ignored", `{"value":{"k":"` + strings.Repeat("[", 3000) + `\"]"}}`, 0, ""},
		{"deep_outside_values", `{"a":` + strings.Repeat("[", jsonStructDepth+1) + strings.Repeat("]", jsonStructDepth+1) + `}`, 0, "nested deeper than 64 levels outside an attribute value"},
		{"unclosed", `{"resourceMetrics":[{"value":{"a":` + strings.Repeat("[", 3000), 0, "ends inside"},
		{"unbalanced", `{}}`, 0, "unbalanced"},
		{"mismatched_value_close", `{"value":{` + strings.Repeat("[", 1100) + strings.Repeat("]", 1100) + `]}`, 0, "closed with ']'"},
		{"unterminated_string", `{"value":"abc`, 0, "unterminated string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := []byte(tc.in)
			sc, err := scanJSON(b)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.replaced, sc.replaced)
			assert.Len(t, b, len(tc.in), "in place")
			if sc.replaced == 0 {
				assert.Equal(t, tc.in, string(b))
			}
		})
	}
	t.Run("replacement_decodes_as_too_deep", func(t *testing.T) {
		b := append([]byte(nil), long...)
		_, err := scanJSON(b)
		require.NoError(t, err)
		er := pmetricotlp.NewExportRequest()
		require.NoError(t, er.UnmarshalJSON(b))
		f := newFixture(t, Config{}, store.Config{})
		res := f.r.ingestPdata(er.Metrics())
		wantTenGood(t, f.st, res.rejected, res.message)
	})
}

// TestJSONTreeBytes measures what pdata allocates to decode a JSON body
// and the receiver to map it, on honest shapes (synthetic counters and
// histograms, the vLLM fixture) and hostile ones (empty points, long
// number arrays, empty attributes and values, nested values up to the
// cut), and checks that jsonScan.treeBytes, what the request is charged,
// covers it.
func TestJSONTreeBytes(t *testing.T) {
	fx, _ := promToOTLP(t, fixturePath, tsNs(5))
	many := func(item string, n int) string { return strings.Repeat(item+",", n-1) + item }
	point := func(fields string) string {
		return `{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[` + fields + `]}}]}]}]}`
	}
	ts := `"timeUnixNano":"` + itoa(tsNs(5)) + `","asDouble":1`
	bodies := map[string][]byte{
		"deep_values":  deepJSONBody(jsonValueCut / 3),
		"empty_points": []byte(point(many("{}", 100_000))),
		"empty_attrs":  []byte(point(`{` + ts + `,"attributes":[` + many("{}", 100_000) + `]}`)),
		"empty_values": []byte(point(`{` + ts + `,"attributes":[{"key":"a","value":{"arrayValue":{"values":[` + many("{}", 100_000) + `]}}}]}`)),
		"buckets": []byte(`{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h","histogram":{"aggregationTemporality":2,"dataPoints":[{` +
			ts + `,"count":"1","bucketCounts":[` + many("1", 200_000) + `]}]}}]}]}]}`),
		"empty_quantiles": []byte(`{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"s","summary":{"dataPoints":[{` +
			ts + `,"quantileValues":[` + many("{}", 100_000) + `]}]}}]}]}]}`),
	}
	for name, pb := range map[string][]byte{
		"vllm":      mustMarshal(t, fx),
		"counters":  synth.Config{Seed: 1, Series: 1000, PointsPerRequest: 1000, Metrics: 10}.Cover(tsNs(5))[0].Bytes,
		"histogram": synth.Config{Seed: 1, Series: 100, PointsPerRequest: 100, Metrics: 10, Histogram: true}.Cover(tsNs(5))[0].Bytes,
	} {
		er := pmetricotlp.NewExportRequest()
		require.NoError(t, er.UnmarshalProto(pb))
		js, err := er.MarshalJSON()
		require.NoError(t, err)
		bodies[name] = js
	}
	f := newFixture(t, Config{}, store.Config{})
	for name, body := range bodies {
		b := make([]byte, len(body))
		ingest := func() jsonScan {
			copy(b, body)
			sc, err := scanJSON(b)
			require.NoError(t, err)
			_, err = f.r.ingestJSON(b)
			require.NoError(t, err)
			return sc
		}
		ingest() // the store's new series are not the request's
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		sc := ingest()
		runtime.ReadMemStats(&after)
		allocated := after.TotalAlloc - before.TotalAlloc
		charged := sc.treeBytes(int64(len(body)))
		t.Logf("%s: %d B body, %d B allocated (%.1f per body byte), %d B charged", name, len(body), allocated,
			float64(allocated)/float64(len(body)), charged)
		assert.LessOrEqual(t, allocated, uint64(charged), name)
	}
}

// bomb is a valid Export request of about size bytes (a long schema URL)
// and its gzip form, a few KB: the shape of a decompression bomb that
// also decodes.
func bomb(t *testing.T, size int) (plain, zipped []byte) {
	t.Helper()
	plain = mustMarshal(t, sizedRequest(t, size))
	return plain, gzipped(t, plain)
}

// passthroughGzip is a legacy client compressor that sends bytes that are
// already gzip'd as they are, so a test's clients do not hold the
// decompressed bombs they send.
type passthroughGzip struct{}

func (passthroughGzip) Do(w io.Writer, p []byte) error { _, err := w.Write(p); return err }
func (passthroughGzip) Type() string                   { return "gzip" }

// heapPeak samples the heap (live and unswept objects) until stop is
// closed and returns the largest value seen.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		for {
			rtmetrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-stop:
				out <- peak
				return
			case <-time.After(50 * time.Microsecond):
			}
		}
	}()
	return out
}

// TestMemory is the regression test of issue #12 class 4: concurrent
// gzip bombs (each a few KB inflating to just under the receive limit),
// four times as many as the budget can hold, over gRPC and over HTTP,
// raise the heap by less than a bound derived from the configured
// in-flight byte budget: every byte of inflated output is charged before
// it is allocated, and what does not fit is refused with Unavailable /
// 503 (retried by exporters). Before, each inflated to the limit and was
// copied again before the budget was checked: the peak grew with the
// number of senders. Afterwards the budget is whole again and an honest
// Export succeeds. Part of make gates (no -race).
func TestMemory(t *testing.T) {
	const (
		limit  = 4 << 20
		budget = 2 * limit
		n      = 8 * budget / limit * 4 // senders: 32× the requests the budget holds
	)
	plain, zipped := bomb(t, limit-1024)
	require.Less(t, len(zipped), 64<<10)
	// The bound: what the budget holds, plus per sender its compressed
	// body twice (the transport's and the decompressor's copy), the
	// transports' buffers and goroutines, 64 KiB in all, with the GC's
	// headroom (GOGC 50 while measuring) and 8 MiB of slack; without a
	// budget the peak grows with n × limit.
	const perSender = 64 << 10
	bound := uint64(3*(budget+n*perSender)/2 + 8<<20)
	require.Less(t, bound, uint64(n*limit)/2, "the bound separates bounded from unbounded")

	run := func(t *testing.T, send func() (ok bool)) {
		defer debug.SetGCPercent(debug.SetGCPercent(50))
		runtime.GC()
		base := heapPeak(closed())
		baseline := <-base
		stop := make(chan struct{})
		peak := heapPeak(stop)
		var wg sync.WaitGroup
		var oks atomic.Int32
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				<-start
				if send() {
					oks.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		close(stop)
		top := <-peak
		growth := top - min(baseline, top)
		t.Logf("%d senders of %d B gzip (%d B inflated): %d accepted, heap peak growth %d MiB, bound %d MiB",
			n, len(zipped), len(plain), oks.Load(), growth>>20, bound>>20)
		assert.Positive(t, oks.Load(), "some bombs fit in the budget and are served")
		assert.LessOrEqual(t, growth, bound)
	}

	t.Run("grpc", func(t *testing.T) {
		f := newFixture(t, Config{MaxRecvSize: limit, MaxInFlightBytes: budget}, store.Config{})
		conn := grpcServer(t, f.r, grpc.WithCompressor(passthroughGzip{})) //nolint:staticcheck // sends pre-compressed bytes
		run(t, func() bool {
			in, out := RawBytes(zipped), RawBytes(nil)
			err := conn.Invoke(t.Context(), exportMethod, &in, &out, grpc.ForceCodecV2(Codec{}))
			if err != nil {
				assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
				assert.NotNil(t, retryInfo(err))
			}
			return err == nil
		})
		assert.Zero(t, f.r.inflightBytes.Load(), "every charge returned")
		in, out := RawBytes(gzipped(t, mustMarshal(t, req(rm(nil, gauge("after", "", dpD(nil, tsNs(10), 1))))))), RawBytes(nil)
		require.NoError(t, conn.Invoke(t.Context(), exportMethod, &in, &out, grpc.ForceCodecV2(Codec{})))
		assert.Contains(t, dump(f.st), ser("after"))
	})
	t.Run("http", func(t *testing.T) {
		f := newFixture(t, Config{MaxRecvSize: limit, MaxInFlightBytes: budget}, store.Config{})
		srv := httptest.NewServer(f.r)
		t.Cleanup(srv.Close)
		url := srv.URL + "/v1/metrics"
		run(t, func() bool {
			hr, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(zipped))
			require.NoError(t, err)
			hr.Header.Set("Content-Type", "application/x-protobuf")
			hr.Header.Set("Content-Encoding", "gzip")
			resp, err := http.DefaultClient.Do(hr)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
				assert.NotEmpty(t, resp.Header.Get("Retry-After"))
			}
			return resp.StatusCode == http.StatusOK
		})
		assert.Zero(t, f.r.inflightBytes.Load(), "every charge returned")
		resp, _ := post(t, url, "application/x-protobuf", "", mustMarshal(t, req(rm(nil, gauge("after", "", dpD(nil, tsNs(10), 1))))))
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	})
}

func closed() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// firstRead calls entered once, on the first read of the body it wraps.
type firstRead struct {
	io.ReadCloser
	once    sync.Once
	entered func()
}

func (f *firstRead) Read(p []byte) (int, error) {
	f.once.Do(f.entered)
	return f.ReadCloser.Read(p)
}

// TestSlowSendersHoldNoSlot is the regression test of issue #12 class 3:
// HTTP senders that send their headers and then trickle the body (here:
// stop after one byte of a claimed 60 MiB) hold their own connection
// only: no in-flight slot and only a few KiB of the byte budget. With
// every sender's handler reading its body, and more of them than
// in-flight slots, an OTLP Export over gRPC and one over HTTP succeed. Before, the slot was
// taken before the body was read, so they answered Unavailable / 503
// until the slow senders finished or timed out.
func TestSlowSendersHoldNoSlot(t *testing.T) {
	t.Parallel()
	const slots, slow = 2, 8
	f := newFixture(t, Config{MaxInFlight: slots}, store.Config{})
	reading := make(chan struct{}, slow)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("X-Slow") != "" {
			// Signalled once the handler waits for the body, or has
			// answered without reading it.
			fr := &firstRead{ReadCloser: req.Body, entered: func() { reading <- struct{}{} }}
			defer fr.once.Do(fr.entered)
			req.Body = fr
		}
		f.r.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	var conns []net.Conn
	for range slow {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() }) // before srv.Close, which waits for the handlers
		conns = append(conns, c)
		_, err = fmt.Fprintf(c, "POST /v1/metrics HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\nContent-Type: application/x-protobuf\r\nContent-Length: %d\r\n\r\n\x0a", 60<<20)
		require.NoError(t, err)
	}
	for range slow {
		select { // every slow sender's handler waits for its body (or has answered)
		case <-reading:
		case <-time.After(time.Minute):
			require.FailNow(t, "slow senders not served")
		}
	}
	// Each claims 60 MiB and has sent one byte: it holds a few KiB of the
	// byte budget, not what it claims.
	assert.LessOrEqual(t, f.r.inflightBytes.Load(), int64(slow*(8<<10)))
	_, err := colmetricpb.NewMetricsServiceClient(grpcServer(t, f.r)).Export(t.Context(), req(rm(nil, gauge("grpc", "", dpD(nil, tsNs(10), 1)))))
	require.NoError(t, err, "a gRPC Export while slow HTTP senders wait")
	resp, out := post(t, srv.URL+"/v1/metrics", "application/x-protobuf", "", mustMarshal(t, req(rm(nil, gauge("http", "", dpD(nil, tsNs(10), 1))))))
	require.Equal(t, http.StatusOK, resp.StatusCode, "an HTTP Export while slow HTTP senders wait: %s", out)
	for _, c := range conns {
		_ = c.Close()
	}
	assert.Contains(t, dump(f.st), ser("grpc"))
	assert.Contains(t, dump(f.st), ser("http"))
}

// TestHTTPErrorsHaveMessages is the regression test of issue #12 class 10
// (the OTLP part): every 400 carries a message, in either encoding. The
// class: decode errors that quote the request's bytes (pdata's JSON
// errors show the bytes around the error) are not valid UTF-8 when the
// request is not, and a google.rpc.Status whose message is not UTF-8
// does not marshal, so the body, and the client's message, were empty.
func TestHTTPErrorsHaveMessages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, store.Config{})
	srv := httptest.NewServer(f.r)
	t.Cleanup(srv.Close)
	for _, tc := range []struct{ name, ct, enc, body string }{
		{"json_invalid_utf8_key", "application/json", "", "{\"resourceMetrics\":[{\"x\xff\xfe\":1,}]}"},
		{"json_invalid_utf8_value", "application/json", "", "{\"resourceMetrics\":\xff}"},
		{"json_invalid_utf8_int", "application/json", "", `{"resourceMetrics":[{"resource":{"attributes":[{"key":"k","value":{"intValue":"` + "\xff" + `"}}]}}]}`},
		{"json_only_invalid_utf8", "application/json", "", "\xff\xfe"},
		{"json_truncated", "application/json", "", `{"resourceMetrics":[{"scopeMetrics":[`},
		{"json_deep_outside_values", "application/json", "", strings.Repeat("[", 100) + strings.Repeat("]", 100)},
		{"json_empty", "application/json", "", ""},
		{"pb_garbage", "application/x-protobuf", "", "\xff\xff\xff"},
		{"pb_invalid_utf8_garbage", "application/x-protobuf", "", "\x0a\x03\xff\xfe\xfd\x00"},
		{"corrupt_gzip", "application/json", "gzip", "\x1f\x8b\x08\x00\xff\xfe"},
		{"unsupported_encoding", "application/json", "zstd", "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := post(t, srv.URL+"/v1/metrics", tc.ct, tc.enc, []byte(tc.body))
			if tc.name == "json_empty" && resp.StatusCode == http.StatusOK {
				return // an empty body is the empty request
			}
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
			var st spb.Status
			if tc.ct == "application/json" {
				require.NoError(t, protojson.Unmarshal(out, &st), "body %q", out)
			} else {
				require.NoError(t, proto.Unmarshal(out, &st), "body %q", out)
			}
			assert.NotEmpty(t, st.GetMessage())
			assert.True(t, utf8.ValidString(st.GetMessage()))
		})
	}
}
