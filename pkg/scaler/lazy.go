package scaler

import (
	"fmt"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/interest"
)

// Lazy ingestion (--lazy-ingest, pkg/interest): the receiver stores only
// the metric families some query asked for. Every cached trigger holds the
// metric-name matchers of its query in the registry from compilation until
// it leaves the cache, so its families keep being stored while KEDA may
// ask for it. A family nobody wanted before is not in the store yet: the
// trigger answers Unavailable (ErrWarmingUp) until it has been stored for
// --warmup, the same rule as after a start, unless the store already holds
// fresh samples under that name (a --state-dir restore, or the family was
// wanted through another matcher).

// holdInterest registers t's names in the lazy registry.
func (s *Scaler) holdInterest(t *trigger, expr parser.Expr) error {
	if s.interest == nil {
		return nil
	}
	sel := interest.FromExpr(expr)
	if sel.Any {
		s.logger.Warn("Trigger selector names no metric; lazy ingestion stores every family while it is cached",
			"namespace", t.namespace, "scaled_object", t.name, "query", clip(t.queryText()))
	}
	h, err := s.interest.Acquire(sel, s.hasFresh)
	if err != nil {
		return fmt.Errorf("ScaledObject %s/%s: %w: %w", t.namespace, t.name, ErrBadMetadata, err)
	}
	t.interest, t.lazyReadyAt = h, h.ReadyAt()
	return nil
}

// hasFresh reports whether some series of the metric name has a sample
// within the freshness window. It looks at a few series at most.
func (s *Scaler) hasFresh(name string) bool {
	m, err := labels.NewMatcher(labels.MatchEqual, labels.MetricName, name)
	if err != nil {
		return false
	}
	refs := s.store.Select(nil, m)
	cutoff := s.now().Add(-s.cfg.FreshWindow).UnixMilli()
	for i, ref := range refs {
		if i == 16 {
			break
		}
		if t, ok := s.store.LastSampleTime(ref); ok && t >= cutoff {
			return true
		}
	}
	return false
}

// lazyWarming returns an ErrWarmingUp error while a family t reads has
// been wanted for less than --warmup.
func (s *Scaler) lazyWarming(t *trigger) error {
	if t.lazyReadyAt == 0 {
		return nil
	}
	now := s.now().UnixNano()
	if now >= t.lazyReadyAt {
		return nil
	}
	return fmt.Errorf("%w: ScaledObject %s/%s reads a metric family first requested under --lazy-ingest; stored for %s more; KEDA keeps the current replicas meanwhile",
		ErrWarmingUp, t.namespace, t.name, time.Duration(t.lazyReadyAt-now).Round(time.Second))
}
