package promapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
)

// discardWriter is a ResponseWriter that counts and drops the body.
type discardWriter struct {
	h http.Header
	n int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(int)     {}
func (w *discardWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return len(p), nil
}

// BenchmarkAPIQueryRange measures one range query of 50 series × 1000
// steps through the handler: evaluation, assembly and JSON encoding.
//
// go test -run '^$' -bench '^BenchmarkAPIQueryRange$' -benchmem -cpu 2 ./pkg/promapi
func BenchmarkAPIQueryRange(b *testing.B) {
	st := boundsStore(b, 50)
	api := New(query.NewEngine(st), st, Config{}, Settings{})
	mux := http.NewServeMux()
	api.Register(mux)
	target := "/api/v1/query_range?" + url.Values{"query": {"x"}, "start": {"2000.123"}, "end": {"2999.123"}, "step": {"1"}}.Encode()
	b.Run(fmt.Sprintf("points=%d", 50*1000), func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for b.Loop() {
			w := &discardWriter{h: http.Header{}}
			mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
			n = w.n
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/50000, "ns/point")
		b.ReportMetric(float64(n), "body-bytes")
	})
}
