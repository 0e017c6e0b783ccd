package receiver

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/fuzzflags"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestMain bounds fuzz minimisation (fuzzflags) and checks for leaked
// goroutines.
func TestMain(m *testing.M) {
	fuzzflags.Init()
	goleak.VerifyTestMain(m)
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func post(t *testing.T, url, ct, enc string, body []byte) (*http.Response, []byte) {
	t.Helper()
	hr, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	hr.Header.Set("Content-Type", ct)
	if enc != "" {
		hr.Header.Set("Content-Encoding", enc)
	}
	resp, err := http.DefaultClient.Do(hr)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, out
}

// TestHTTP covers OTLP/HTTP (§14 items 4–7): protobuf and JSON, plain and
// gzip, answered in the request's encoding; 405, 415, 413 and 400.
func TestHTTP(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxRecvSize: 1 << 20}, store.Config{})
	srv := httptest.NewServer(f.r)
	t.Cleanup(srv.Close)
	url := srv.URL + "/v1/metrics"

	good := func(name string) *colmetricpb.ExportMetricsServiceRequest {
		return req(rm(nil, gauge(name, "", dpD(nil, tsNs(10), 1), dpD(nil, 0, 1))))
	}
	for _, tc := range []struct {
		name, ct, enc string
	}{
		{"pb_plain", "application/x-protobuf", ""},
		{"pb_gzip", "application/x-protobuf", "gzip"},
		{"json_plain", "application/json; charset=utf-8", ""},
		{"json_gzip", "application/json", "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good(tc.name)
			var body []byte
			if strings.HasPrefix(tc.ct, "application/json") {
				var err error
				body, err = protojson.Marshal(r)
				require.NoError(t, err)
			} else {
				body = mustMarshal(t, r)
			}
			if tc.enc == "gzip" {
				body = gzipBytes(t, body)
			}
			resp, out := post(t, url, tc.ct, tc.enc, body)
			require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
			var got colmetricpb.ExportMetricsServiceResponse
			if strings.HasPrefix(tc.ct, "application/json") {
				assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
				require.NoError(t, protojson.Unmarshal(out, &got))
			} else {
				assert.Equal(t, "application/x-protobuf", resp.Header.Get("Content-Type"))
				require.NoError(t, proto.Unmarshal(out, &got))
			}
			assert.Equal(t, int64(1), got.GetPartialSuccess().GetRejectedDataPoints())
			assert.Contains(t, got.GetPartialSuccess().GetErrorMessage(), "missing_timestamp=1")
			assert.Contains(t, dump(f.st), ser(tc.name))
		})
	}

	t.Run("empty_request_success", func(t *testing.T) {
		resp, out := post(t, url, "application/json", "", []byte(`{}`))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.JSONEq(t, `{}`, string(out))
		resp, out = post(t, url, "application/x-protobuf", "", nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Empty(t, out)
	})

	t.Run("json_encoding_variants", func(t *testing.T) {
		body := `{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"j"}}]},
		  "unknownField":{"x":1},
		  "scopeMetrics":[{"scope":{"name":"s"},"metrics":[
		    {"name":"c","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[
		      {"timeUnixNano":"` + itoa(tsNs(10)) + `","asInt":"5"},
		      {"timeUnixNano":` + itoa(tsNs(9)) + `,"asInt":6}]}},
		    {"name":"n","gauge":{"dataPoints":[{"time_unix_nano":"` + itoa(tsNs(10)) + `","asDouble":"NaN"}]}}]}]}]}`
		resp, out := post(t, url, "application/json", "", []byte(body))
		require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
		assert.JSONEq(t, `{}`, string(out))
		got := dump(f.st)
		assert.Equal(t, []sampleBits{sb(tsMs(10), 5), sb(tsMs(9), 6)}, got[ser("c_total", "job", "j")])
		assert.Len(t, got[ser("n", "job", "j")], 1)
	})

	for _, tc := range []struct {
		name, method, ct, enc string
		body                  []byte
		want                  int
	}{
		{"get", http.MethodGet, "application/x-protobuf", "", nil, http.StatusMethodNotAllowed},
		{"text_plain", http.MethodPost, "text/plain", "", []byte("x"), http.StatusUnsupportedMediaType},
		{"gzip_bomb", http.MethodPost, "application/x-protobuf", "gzip", gzipBytes(t, make([]byte, 2<<20)), http.StatusRequestEntityTooLarge},
		{"over_limit_plain", http.MethodPost, "application/x-protobuf", "", make([]byte, 1<<20+1), http.StatusRequestEntityTooLarge},
		{"brotli", http.MethodPost, "application/x-protobuf", "br", []byte("x"), http.StatusBadRequest},
		{"corrupt_gzip", http.MethodPost, "application/x-protobuf", "gzip", []byte("not gzip"), http.StatusBadRequest},
		{"garbage_pb", http.MethodPost, "application/x-protobuf", "", []byte("\xff\xff\xff"), http.StatusBadRequest},
		{"garbage_json", http.MethodPost, "application/json", "", []byte("{nope"), http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := dump(f.st)
			hr, err := http.NewRequestWithContext(t.Context(), tc.method, url, bytes.NewReader(tc.body))
			require.NoError(t, err)
			hr.Header.Set("Content-Type", tc.ct)
			if tc.enc != "" {
				hr.Header.Set("Content-Encoding", tc.enc)
			}
			resp, err := http.DefaultClient.Do(hr)
			require.NoError(t, err)
			out, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			assert.Equal(t, tc.want, resp.StatusCode, string(out))
			var st spb.Status
			if resp.Header.Get("Content-Type") == "application/x-protobuf" {
				require.NoError(t, proto.Unmarshal(out, &st))
			} else {
				require.NoError(t, protojson.Unmarshal(out, &st))
			}
			assert.NotEmpty(t, st.GetMessage())
			assert.Equal(t, before, dump(f.st))
		})
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

// grpcServer serves r on 127.0.0.1:0 the way pkg/server does.
func grpcServer(t *testing.T, r *Receiver, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(r.ServerOptions()...)
	r.RegisterGRPC(srv)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(1 << 30)),
	}, opts...)
	conn, err := grpc.NewClient(lis.Addr().String(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		wg.Wait()
	})
	return conn
}

// TestGRPC covers OTLP/gRPC (§14 items 2, 3, 7, 8, 9, 10, 33): plain and
// gzip Exports, partial success, InvalidArgument for garbage,
// ResourceExhausted without RetryInfo over the limit, Unavailable with
// RetryInfo when overloaded or draining, and concurrent Exports of one
// series.
func TestGRPC(t *testing.T) {
	t.Parallel()
	const limit = 1 << 20
	f := newFixture(t, Config{MaxRecvSize: limit, MaxInFlight: 1}, store.Config{})
	conn := grpcServer(t, f.r)
	client := colmetricpb.NewMetricsServiceClient(conn)
	ctx := t.Context()

	for _, gz := range []bool{false, true} {
		var opts []grpc.CallOption
		name := "plain"
		if gz {
			opts, name = append(opts, grpc.UseCompressor(grpcgzip.Name)), "gzip"
		}
		t.Run(name, func(t *testing.T) {
			resp, err := client.Export(ctx, req(rm(nil, gauge("g_"+name, "", dpD(nil, tsNs(10), 1), dpD(nil, tsNs(700), 1)))), opts...)
			require.NoError(t, err)
			assert.Equal(t, int64(1), resp.GetPartialSuccess().GetRejectedDataPoints())
			assert.Contains(t, resp.GetPartialSuccess().GetErrorMessage(), "too_old=1")
			assert.Contains(t, dump(f.st), ser("g_"+name))

			resp, err = client.Export(ctx, req(), opts...)
			require.NoError(t, err)
			assert.Nil(t, resp.GetPartialSuccess(), "empty request: partial_success unset")

			// Just under and just over the limit (uncompressed size).
			under := sizedRequest(t, limit-64)
			_, err = client.Export(ctx, under, opts...)
			require.NoError(t, err)
			over := sizedRequest(t, limit+64)
			_, err = client.Export(ctx, over, opts...)
			require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
			assert.Nil(t, retryInfo(err))

			before := dump(f.st)
			var out RawBytes
			garbage := RawBytes("\x0a\x05\x0a\x03\xff")
			err = conn.Invoke(ctx, exportMethod, &garbage, &out, grpc.ForceCodecV2(Codec{}))
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			assert.Equal(t, before, dump(f.st))
		})
	}

	t.Run("overload_then_recover", func(t *testing.T) {
		entered, unblock := make(chan struct{}), make(chan struct{})
		f.r.testHook = func() {
			entered <- struct{}{}
			<-unblock
		}
		var wg sync.WaitGroup
		var firstErr error
		wg.Go(func() {
			_, firstErr = client.Export(context.WithoutCancel(ctx), req(rm(nil, gauge("slow", "", dpD(nil, tsNs(10), 1)))))
		})
		<-entered
		_, err := client.Export(ctx, req(rm(nil, gauge("fast", "", dpD(nil, tsNs(10), 1)))))
		require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
		require.NotNil(t, retryInfo(err))
		close(unblock)
		wg.Wait()
		require.NoError(t, firstErr)
		f.r.testHook = nil
		_, err = client.Export(ctx, req(rm(nil, gauge("fast", "", dpD(nil, tsNs(10), 1)))))
		require.NoError(t, err)
		got := dump(f.st)
		assert.Contains(t, got, ser("slow"))
		assert.Contains(t, got, ser("fast"))
	})
}

// TestGRPCConcurrentSameSeries sends 10 concurrent Exports carrying the
// same series (§14 item 10).
func TestGRPCConcurrentSameSeries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, store.Config{})
	client := colmetricpb.NewMetricsServiceClient(grpcServer(t, f.r))
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			dps := make([]*metricspb.NumberDataPoint, 0, 20)
			for j := range 20 {
				sec := 100 - (i*20+j)/2 // pairs of exports share timestamps
				dps = append(dps, dpD(nil, tsNs(sec), float64(100-sec)))
			}
			_, err := client.Export(t.Context(), req(rm(nil, gauge("same", "", dps...))))
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	got := dump(f.st)[ser("same")]
	require.NotEmpty(t, got)
	for i := 1; i < len(got); i++ {
		assert.Less(t, got[i-1].T, got[i].T, "timestamps strictly increasing")
	}
}

// TestDraining checks Unavailable (gRPC, with RetryInfo) and 503 (HTTP,
// with Retry-After) after Drain (§14 item 9).
func TestDraining(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{}, store.Config{})
	client := colmetricpb.NewMetricsServiceClient(grpcServer(t, f.r))
	srv := httptest.NewServer(f.r)
	t.Cleanup(srv.Close)
	f.r.Drain()
	_, err := client.Export(t.Context(), req(rm(nil, gauge("g", "", dpD(nil, tsNs(10), 1)))))
	require.Equal(t, codes.Unavailable, status.Code(err))
	assert.NotNil(t, retryInfo(err))
	resp, _ := post(t, srv.URL+"/v1/metrics", "application/x-protobuf", "", nil)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	assert.Empty(t, dump(f.st))
}

func retryInfo(err error) *errdetails.RetryInfo {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri
		}
	}
	return nil
}

// sizedRequest returns a valid request whose encoding is about n bytes.
func sizedRequest(t *testing.T, n int) *colmetricpb.ExportMetricsServiceRequest {
	t.Helper()
	r := req(rm(nil, gauge("pad", "", dpD(nil, tsNs(10), 1))))
	r.ResourceMetrics[0].SchemaUrl = strings.Repeat("x", n-proto.Size(r)-4)
	for proto.Size(r) < n {
		r.ResourceMetrics[0].SchemaUrl += "x"
	}
	return r
}

// TestHTTPOverload checks 503 with Retry-After at the in-flight bound and
// success once load drops (§14 item 8, HTTP side).
func TestHTTPOverload(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxInFlight: 1}, store.Config{})
	srv := httptest.NewServer(f.r)
	t.Cleanup(srv.Close)
	url := srv.URL + "/v1/metrics"
	entered, unblock := make(chan struct{}), make(chan struct{})
	f.r.testHook = func() {
		entered <- struct{}{}
		<-unblock
	}
	body := mustMarshal(t, req(rm(nil, gauge("slow", "", dpD(nil, tsNs(10), 1)))))
	var wg sync.WaitGroup
	var code int
	wg.Go(func() {
		hr, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(body))
		hr.Header.Set("Content-Type", "application/x-protobuf")
		resp, err := http.DefaultClient.Do(hr)
		if err == nil {
			code = resp.StatusCode
			_ = resp.Body.Close()
		}
	})
	<-entered
	resp, _ := post(t, url, "application/x-protobuf", "", mustMarshal(t, req(rm(nil, gauge("fast", "", dpD(nil, tsNs(10), 1))))))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	close(unblock)
	wg.Wait()
	assert.Equal(t, http.StatusOK, code)
	f.r.testHook = nil
	resp, _ = post(t, url, "application/x-protobuf", "", mustMarshal(t, req(rm(nil, gauge("fast", "", dpD(nil, tsNs(10), 1))))))
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, dump(f.st), ser("slow"))
	assert.Contains(t, dump(f.st), ser("fast"))
}

// TestGRPCDefaultLimit checks the 64 MiB default receive limit (§14 item
// 3): 60 MiB (uncompressed) is accepted plain and gzip, 65 MiB gets
// ResourceExhausted without RetryInfo, and the server keeps serving.
// Heavy (hundreds of MiB moved): skipped under -short and -race.
func TestGRPCDefaultLimit(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("moves hundreds of MiB; run without -short and -race")
	}
	f := newFixture(t, Config{}, store.Config{})
	conn := grpcServer(t, f.r)
	client := colmetricpb.NewMetricsServiceClient(conn)
	ok, tooBig := sizedRequest(t, 60<<20), sizedRequest(t, 65<<20)
	for _, opts := range [][]grpc.CallOption{nil, {grpc.UseCompressor(grpcgzip.Name)}} {
		_, err := client.Export(t.Context(), ok, opts...)
		require.NoError(t, err)
		_, err = client.Export(t.Context(), tooBig, opts...)
		require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
		assert.Nil(t, retryInfo(err))
	}
	_, err := client.Export(t.Context(), req(rm(nil, gauge("after", "", dpD(nil, tsNs(10), 1)))))
	require.NoError(t, err)
	assert.Contains(t, dump(f.st), ser("after"))
}
