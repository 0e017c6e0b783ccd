package demo

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
)

// Names and labels of the simulated deployment, as KServe would set them.
const (
	modelName       = "qwen"
	demoNamespace   = "default"
	gatewayMetric   = "gateway_pending_requests"
	otlpScopeName   = "github.com/keda-otel-scaler/keda-otel-scaler/pkg/demo"
	gatewayPodName  = "gateway-0"
	gatewayWorkload = "gateway"
)

// exporter pushes OTLP over one gRPC connection, like one collector
// sidecar per pod sharing a channel. Points the server rejects (partial
// success) are counted, not treated as failures.
type exporter struct {
	client   pmetricotlp.GRPCClient
	requests int
	rejected int64
	failures int
	lastErr  string
}

func newExporter(conn *grpc.ClientConn) *exporter {
	return &exporter{client: pmetricotlp.NewGRPCClient(conn)}
}

func (e *exporter) export(ctx context.Context, md pmetric.Metrics) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e.requests++
	resp, err := e.client.Export(ctx, pmetricotlp.NewExportRequestFromMetrics(md))
	if err != nil {
		e.failures++
		e.lastErr = err.Error()
		return
	}
	if ps := resp.PartialSuccess(); ps.RejectedDataPoints() > 0 {
		e.rejected += ps.RejectedDataPoints()
		e.lastErr = ps.ErrorMessage()
	}
}

// resourceMetrics starts one ResourceMetrics with the attributes a
// k8sattributes processor (or KServe's sidecar) gives a pod.
func resourceMetrics(md pmetric.Metrics, service, workload, pod string) pmetric.MetricSlice {
	rm := md.ResourceMetrics().AppendEmpty()
	a := rm.Resource().Attributes()
	a.PutStr("service.name", service)
	a.PutStr("service.instance.id", pod)
	a.PutStr("k8s.namespace.name", demoNamespace)
	a.PutStr("k8s.deployment.name", workload)
	a.PutStr("k8s.pod.name", pod)
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(otlpScopeName)
	return sm.Metrics()
}

// pointWriter appends data points that share a timestamp, a start time and
// the staleness flag.
type pointWriter struct {
	ms        pmetric.MetricSlice
	ts, start pcommon.Timestamp
	stale     bool
}

func (w *pointWriter) attrs(m pcommon.Map, kv ...string) {
	m.PutStr("engine", "0")
	m.PutStr("model_name", modelName)
	for i := 0; i+1 < len(kv); i += 2 {
		m.PutStr(kv[i], kv[i+1])
	}
}

func (w *pointWriter) number(dp pmetric.NumberDataPoint, v float64, kv ...string) {
	dp.SetTimestamp(w.ts)
	dp.SetDoubleValue(v)
	w.attrs(dp.Attributes(), kv...)
	if w.stale {
		dp.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))
	}
}

func (w *pointWriter) gauge(name, desc string, v float64, kv ...string) pmetric.Gauge {
	m := w.ms.AppendEmpty()
	m.SetName(name)
	m.SetDescription(desc)
	g := m.SetEmptyGauge()
	w.number(g.DataPoints().AppendEmpty(), v, kv...)
	return g
}

func (w *pointWriter) counter(name, desc string, v float64) pmetric.Sum {
	m := w.ms.AppendEmpty()
	m.SetName(name)
	m.SetDescription(desc)
	s := m.SetEmptySum()
	s.SetIsMonotonic(true)
	s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	if v >= 0 {
		dp := s.DataPoints().AppendEmpty()
		dp.SetStartTimestamp(w.start)
		w.number(dp, v)
	}
	return s
}

func (w *pointWriter) histogram(name, desc string, h Histogram) {
	m := w.ms.AppendEmpty()
	m.SetName(name)
	m.SetDescription(desc)
	hist := m.SetEmptyHistogram()
	hist.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	dp := hist.DataPoints().AppendEmpty()
	dp.SetStartTimestamp(w.start)
	dp.SetTimestamp(w.ts)
	w.attrs(dp.Attributes())
	dp.ExplicitBounds().FromRaw(h.Bounds)
	dp.BucketCounts().FromRaw(h.Counts)
	dp.SetCount(h.Count)
	dp.SetSum(h.Sum)
	if w.stale {
		dp.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))
	}
}

// podMetrics builds what a collector scraping the pod's /metrics would
// export: vLLM's families under their /metrics names (counters with
// _total), labels {engine, model_name}, histograms with vLLM's bounds
// (+Inf dropped) and de-cumulated counts. With stale set every point
// carries the no-recorded-value flag, as the prometheus receiver sends
// when a target disappears.
func podMetrics(p *Pod, ts, start time.Time, stale bool) pmetric.Metrics {
	md := pmetric.NewMetrics()
	w := &pointWriter{
		ms:    resourceMetrics(md, "vllm", "qwen-predictor", p.Name),
		ts:    pcommon.NewTimestampFromTime(ts),
		start: pcommon.NewTimestampFromTime(start),
		stale: stale,
	}
	e := p.Engine
	w.gauge("vllm:num_requests_running", "Number of requests in model execution batches.", float64(e.Running()))
	w.gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", float64(e.Waiting()))
	g := w.gauge("vllm:num_requests_waiting_by_reason", "Number of waiting requests by reason.", float64(e.Waiting()), "reason", "capacity")
	w.number(g.DataPoints().AppendEmpty(), 0, "reason", "deferred")
	w.gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", e.KVUsage())

	w.counter("vllm:num_preemptions_total", "Cumulative number of preemption from the engine.", e.preemptions)
	w.counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", e.promptTokens)
	w.counter("vllm:generation_tokens_total", "Number of generation tokens processed.", e.generationTokens)
	s := w.counter("vllm:request_success_total", "Count of successfully processed requests.", -1)
	for i, reason := range finishedReasons {
		dp := s.DataPoints().AppendEmpty()
		dp.SetStartTimestamp(w.start)
		w.number(dp, e.success[i], "finished_reason", reason)
	}

	w.histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", e.ttft)
	w.histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", e.e2e)
	w.histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", e.queueTime)
	return md
}

// gatewayMetrics is the gateway's one signal: requests it holds because no
// pod is ready. It exists without pods, so it can activate from zero.
func gatewayMetrics(pending int, ts time.Time) pmetric.Metrics {
	md := pmetric.NewMetrics()
	ms := resourceMetrics(md, "gateway", gatewayWorkload, gatewayPodName)
	m := ms.AppendEmpty()
	m.SetName(gatewayMetric)
	m.SetDescription("Requests held by the gateway until a backend is ready.")
	dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.SetTimestamp(pcommon.NewTimestampFromTime(ts))
	dp.SetDoubleValue(float64(pending))
	dp.Attributes().PutStr("model_name", modelName)
	return md
}

// String describes the exporter's totals for the summary.
func (e *exporter) String() string {
	s := fmt.Sprintf("%d exports, %d failed, %d points rejected by the server", e.requests, e.failures, e.rejected)
	if e.lastErr != "" {
		s += " (last: " + e.lastErr + ")"
	}
	return s
}
