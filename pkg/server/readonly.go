package server

import (
	"net/http"
	"strings"
)

// ingestPath is the one HTTP route that writes: OTLP/HTTP export.
const ingestPath = "/v1/metrics"

// readOnly is the HTTP listener's outermost handler and what makes the
// listener read-only by construction (README "Security"): apart from
// ingestPath, a request reaches the mux only with a method that cannot
// write, GET or HEAD, or POST under /api/v1/, where Prometheus's API takes
// form-encoded queries (Grafana sends them so). Every other request is
// answered 405 before any handler runs. The handlers behind it only read:
// the query API is given the engine and the store's read methods,
// /metrics the registry, the health endpoints a flag; none of them has a
// delete, reset or snapshot endpoint. TestHTTPReadOnly sends every method
// to every route and checks the store is unchanged.
func readOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == ingestPath:
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
		case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/api/v1/"):
		default:
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed: this endpoint is read-only", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}
