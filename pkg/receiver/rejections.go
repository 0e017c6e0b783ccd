package receiver

import (
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Rejection examples for the status page (issue #18): the last few
// rejections, one per reason and request, with a bounded copy of the
// request's first example for that reason. Recording happens in finish,
// once per request and reason that rejected points, so accepted points
// cost nothing and the rejecting request pays one short critical section.

const (
	// rejectionExamples is how many examples are kept.
	rejectionExamples = 16
	// maxExampleMetric and maxExampleMessage bound a kept example's strings.
	maxExampleMetric  = 128
	maxExampleMessage = 256
)

// RejectionExample is one recent rejection.
type RejectionExample struct {
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
	// Metric is the metric name of the request's first point rejected
	// for Reason.
	Metric string `json:"metric"`
	// Points is how many points of the request were rejected for Reason.
	Points int `json:"points"`
	// Message is that point's series (or OTLP metric name), clipped.
	Message string `json:"message"`
}

// rejectionLog is a ring of the last rejectionExamples examples. Its zero
// value is ready; mu guards everything.
type rejectionLog struct {
	mu   sync.Mutex
	next int // the slot the next example goes to
	n    int // examples held
	ring [rejectionExamples]RejectionExample
}

func (l *rejectionLog) record(now time.Time, r reason, points int, example string) {
	metric := example
	if i := strings.IndexByte(metric, '{'); i >= 0 {
		metric = metric[:i]
	}
	e := RejectionExample{
		Time:    now,
		Reason:  r.String(),
		Metric:  strings.Clone(truncateUTF8(metric, maxExampleMetric)),
		Points:  points,
		Message: strings.Clone(truncateUTF8(example, maxExampleMessage)),
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = e
	l.next = (l.next + 1) % rejectionExamples
	l.n = min(l.n+1, rejectionExamples)
}

// list returns the examples, newest first.
func (l *rejectionLog) list() []RejectionExample {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]RejectionExample, 0, l.n)
	for i := 1; i <= l.n; i++ {
		out = append(out, l.ring[(l.next-i+rejectionExamples)%rejectionExamples])
	}
	return out
}

// Status is the receiver's view for the status page.
type Status struct {
	// Accepted is keda_otel_scaler_receiver_points_accepted_total.
	Accepted uint64 `json:"pointsAccepted"`
	// Rejected is keda_otel_scaler_receiver_points_rejected_total by
	// reason; reasons with no rejected point are left out.
	Rejected map[string]uint64 `json:"pointsRejected"`
	// Overloaded counts Exports refused because the in-flight bound was
	// reached.
	Overloaded uint64 `json:"overloaded"`
	// Examples are the last rejections, newest first.
	Examples []RejectionExample `json:"rejectionExamples"`
}

// Status returns the receiver's counters and the last rejection examples.
// It reads the self-metrics, so it is for the status page, not a hot path.
func (r *Receiver) Status() Status {
	st := Status{Accepted: readCounter(r.m.accepted), Overloaded: readCounter(r.m.overloaded), Rejected: map[string]uint64{}}
	for i, c := range r.m.rejected {
		if reason(i) == reasonNone {
			continue
		}
		if v := readCounter(c); v > 0 {
			st.Rejected[reason(i).String()] = v
		}
	}
	st.Examples = r.rejections.list()
	return st
}

type metricWriter interface{ Write(*dto.Metric) error }

func readCounter(c metricWriter) uint64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}
