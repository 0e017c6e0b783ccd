package server

import (
	"net/http"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/interest"
)

// newIngestFilter builds the receiver's ingest filter from
// --metric-allow-list and --lazy-ingest (pkg/interest), and the lazy
// registry that triggers and API queries register with. Asks of API
// queries last --trigger-ttl; a family first asked for by a trigger
// warms up for --warmup.
func (s *Server) newIngestFilter() (*interest.Filter, error) {
	rc := s.cfg.Receiver
	if rc.LazyIngest {
		s.lazy = interest.NewRegistry(s.cfg.Scaler.Warmup, s.cfg.Scaler.TriggerTTL, interest.DefaultMaxAsked, s.set.Now)
	}
	return interest.NewFilter(rc.MetricAllowList, s.lazy)
}

// asking wraps the query API so that, with --lazy-ingest, the metric names
// a query or query_range read are asked for once it has answered: the
// families are stored from the next Export on (that first answer may be
// empty). The API has parsed the form by then; the query text is parsed
// again with the engine's limits, and a text that does not parse asks for
// nothing (the API reported the error).
func (s *Server) asking(h http.Handler) http.Handler {
	if s.lazy == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if r.Form == nil || (r.URL.Path != "/api/v1/query" && r.URL.Path != "/api/v1/query_range") {
			return
		}
		if expr, err := s.engine.Parse(r.Form.Get("query")); err == nil {
			s.lazy.Ask(interest.FromExpr(expr))
		}
	})
}
