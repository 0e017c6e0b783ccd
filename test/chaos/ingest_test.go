package chaos

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
)

const exportMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

// template is one pre-encoded ExportMetricsServiceRequest whose points'
// times and values are rewritten in place before each send, so the
// exporters' own cost stays small beside the server's.
type template struct {
	body    []byte
	timeOff []int // offset of each point's 8-byte time_unix_nano
	valOff  []int // offset of each point's 8-byte as_double
}

// gaugePoint is one point of a template: its attributes, in order.
type gaugePoint struct{ attrs [][2]string }

// encodeGauge encodes one request of gauge metric name with the given
// points under one resource (service.name=chaos, service.instance.id=inst).
func encodeGauge(name, inst string, pts []gaugePoint) template {
	var dps []byte
	var tRel, vRel []int
	for _, p := range pts {
		var dp []byte
		for _, a := range p.attrs {
			dp = appendKV(dp, 7, a[0], a[1]) // NumberDataPoint.attributes
		}
		dp = protowire.AppendTag(dp, 3, protowire.Fixed64Type) // time_unix_nano
		t := len(dp)
		dp = protowire.AppendFixed64(dp, 0)
		dp = protowire.AppendTag(dp, 4, protowire.Fixed64Type) // as_double
		v := len(dp)
		dp = protowire.AppendFixed64(dp, 0)
		dps = protowire.AppendTag(dps, 1, protowire.BytesType) // Gauge.data_points
		dps = protowire.AppendVarint(dps, uint64(len(dp)))
		tRel, vRel = append(tRel, len(dps)+t), append(vRel, len(dps)+v)
		dps = append(dps, dp...)
	}
	// Metric{name=1, gauge=5}; ScopeMetrics{scope=1, metrics=2};
	// ResourceMetrics{resource=1, scope_metrics=2}; request{resource_metrics=1}.
	// Each level is length-prefixed, so offsets shift by the prefix bytes
	// added in front of the data points: track the base as we wrap.
	metric := appendStr(nil, 1, name)
	metric = protowire.AppendTag(metric, 5, protowire.BytesType)
	metric = protowire.AppendVarint(metric, uint64(len(dps)))
	base := len(metric)
	metric = append(metric, dps...)

	sm := appendMsg(nil, 1, appendStr(nil, 1, "chaos"))
	sm = protowire.AppendTag(sm, 2, protowire.BytesType)
	sm = protowire.AppendVarint(sm, uint64(len(metric)))
	base += len(sm)
	sm = append(sm, metric...)

	res := appendKV(nil, 1, "service.name", "chaos")
	res = appendKV(res, 1, "service.instance.id", inst)
	rm := appendMsg(nil, 1, res)
	rm = protowire.AppendTag(rm, 2, protowire.BytesType)
	rm = protowire.AppendVarint(rm, uint64(len(sm)))
	base += len(rm)
	rm = append(rm, sm...)

	out := protowire.AppendTag(nil, 1, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(len(rm)))
	base += len(out)
	out = append(out, rm...)

	tm := template{body: out}
	for i := range tRel {
		tm.timeOff = append(tm.timeOff, base+tRel[i])
		tm.valOff = append(tm.valOff, base+vRel[i])
	}
	return tm
}

func (tm *template) set(i int, tsMs int64, v float64) {
	binary.LittleEndian.PutUint64(tm.body[tm.timeOff[i]:], uint64(tsMs)*1e6) //nolint:gosec // positive unix ms
	binary.LittleEndian.PutUint64(tm.body[tm.valOff[i]:], math.Float64bits(v))
}

func appendStr(b []byte, field protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendMsg(b []byte, field protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

func appendKV(b []byte, field protowire.Number, k, v string) []byte {
	kv := appendStr(nil, 1, k)
	kv = appendMsg(kv, 2, appendStr(nil, 1, v))
	return appendMsg(b, field, kv)
}

// sampleValue is the exact value exporter e sends for its series s at
// sample time seq (unix ms): a single division of an integer below 2^40, so it is
// reproducible bit for bit and has no short decimal form (a lossy
// formatting anywhere on the path would change it).
func sampleValue(e, s, seq int) float64 {
	x := uint64(e)<<48 ^ uint64(s)<<24 ^ uint64(seq) //nolint:gosec // small non-negative ints
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x%(1<<40)) / 7
}

// exportResult is what one Export came back with.
type exportResult struct {
	ok       bool   // OK / 200
	retry    bool   // Unavailable / 503: overload, the sender retries later
	rejected int64  // partial_success.rejected_data_points
	msg      string // partial_success.error_message or the error
}

// parseExportResponse reads partial_success from an encoded
// ExportMetricsServiceResponse.
func parseExportResponse(b []byte) (rejected int64, msg string, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, "", protowire.ParseError(n)
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return 0, "", protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		ps, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return 0, "", protowire.ParseError(n)
		}
		b = b[n:]
		for len(ps) > 0 {
			num, typ, n := protowire.ConsumeTag(ps)
			if n < 0 {
				return 0, "", protowire.ParseError(n)
			}
			ps = ps[n:]
			switch {
			case num == 1 && typ == protowire.VarintType:
				v, n := protowire.ConsumeVarint(ps)
				if n < 0 {
					return 0, "", protowire.ParseError(n)
				}
				rejected, ps = int64(v), ps[n:] //nolint:gosec // a count
			case num == 2 && typ == protowire.BytesType:
				s, n := protowire.ConsumeBytes(ps)
				if n < 0 {
					return 0, "", protowire.ParseError(n)
				}
				msg, ps = string(s), ps[n:]
			default:
				n := protowire.ConsumeFieldValue(num, typ, ps)
				if n < 0 {
					return 0, "", protowire.ParseError(n)
				}
				ps = ps[n:]
			}
		}
	}
	return rejected, msg, nil
}

// sender sends one encoded request over one transport.
type sender interface {
	send(ctx context.Context, body []byte) exportResult
	close()
}

type grpcSender struct{ conn *grpc.ClientConn }

func (g grpcSender) send(ctx context.Context, body []byte) exportResult {
	in, out := receiver.RawBytes(body), receiver.RawBytes(nil)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := g.conn.Invoke(ctx, exportMethod, &in, &out, grpc.ForceCodecV2(receiver.Codec{})); err != nil {
		return exportResult{retry: status.Code(err) == codes.Unavailable, msg: err.Error()}
	}
	rej, msg, err := parseExportResponse(out)
	if err != nil {
		return exportResult{msg: "response: " + err.Error()}
	}
	return exportResult{ok: true, rejected: rej, msg: msg}
}

func (g grpcSender) close() { _ = g.conn.Close() }

type httpSender struct {
	url string
	c   *http.Client
}

func (h httpSender) send(ctx context.Context, body []byte) exportResult {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return exportResult{msg: err.Error()}
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := h.c.Do(req)
	if err != nil {
		return exportResult{msg: err.Error()}
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return exportResult{msg: err.Error()}
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return exportResult{retry: true, msg: resp.Status}
	default:
		return exportResult{msg: fmt.Sprintf("%s: %.200s", resp.Status, b)}
	}
	rej, msg, err := parseExportResponse(b)
	if err != nil {
		return exportResult{msg: "response: " + err.Error()}
	}
	return exportResult{ok: true, rejected: rej, msg: msg}
}

func (h httpSender) close() { h.c.CloseIdleConnections() }

// sentReq is the bookkeeping of one Export of an ingest exporter: which
// block of series it carried, its sample time, and whether (and when) it
// was acknowledged. Values follow from sampleValue.
type sentReq struct {
	block   int
	tsMs    int64
	acked   bool
	ackedAt int64 // unix ns, client clock, after the answer arrived
}

// exporter pushes its series at full speed, one request at a time (so each
// series' samples arrive in order), rotating over its blocks of
// pointsPerReq series. Only its own goroutine writes reqs until it stops.
type exporter struct {
	id        int
	name      string
	transport string
	tick      time.Duration
	tmpl      []template // one per block
	tmplTs    []int64    // the sample time each template holds
	snd       sender
	reqs      []sentReq
	errs      []string // unexpected failures, at most 10 kept
	nErrs     int
	retries   int
}

func newExporter(id int, transport string, series, perReq int, tick time.Duration, snd sender) *exporter {
	e := &exporter{id: id, name: "e" + strconv.Itoa(id), transport: transport, tick: tick, snd: snd}
	for b := 0; b*perReq < series; b++ {
		pts := make([]gaugePoint, 0, perReq)
		for s := b * perReq; s < min((b+1)*perReq, series); s++ {
			pts = append(pts, gaugePoint{attrs: [][2]string{
				{"exporter", e.name}, {"block", strconv.Itoa(b)}, {"series", strconv.Itoa(s)}, {"shard", strconv.Itoa(s % shards)},
			}})
		}
		e.tmpl = append(e.tmpl, encodeGauge("chaos_ingest", e.name, pts))
	}
	e.tmplTs = make([]int64, len(e.tmpl))
	return e
}

// shards splits each exporter's series for the healthy and the stream
// triggers (sum over one shard).
const shards = 10

// blockSeries is series index s of block b's point i.
func (e *exporter) blockSeries(b, i int) int { return b*len(e.tmpl[0].timeOff) + i }

// stamp sets block b's template to sample time ts (unix ms) and the
// values that go with it.
func (e *exporter) stamp(b int, ts int64) {
	tm := &e.tmpl[b]
	for i := range tm.timeOff {
		tm.set(i, ts, sampleValue(e.id, e.blockSeries(b, i), int(ts)))
	}
	e.tmplTs[b] = ts
}

// create sends every block once, five seconds back, and records it: the
// exporter's series exist before anything else runs.
func (e *exporter) create(ctx context.Context) error {
	ts := time.Now().Add(-5 * time.Second).Truncate(e.tick).UnixMilli()
	for b := range e.tmpl {
		e.stamp(b, ts)
		res := e.snd.send(ctx, e.tmpl[b].body)
		if !res.ok || res.rejected != 0 {
			return fmt.Errorf("create %s block %d: %+v", e.name, b, res)
		}
		e.reqs = append(e.reqs, sentReq{block: b, tsMs: ts, acked: true, ackedAt: time.Now().UnixNano()})
	}
	return nil
}

// run sends until ctx ends, as fast as the server answers. Sample times
// follow the wall clock one second behind it, on a grid of e.tick: within
// a tick a block is sent again with the same samples, which the store
// drops as identical resends after decoding and looking each one up (a
// Collector's retry looks the same). So ingestion runs at full speed while
// each series gains one sample per tick: memory stays bounded and every
// sample stays exact (no series reaches --max-samples-per-series, where it
// would be thinned).
func (e *exporter) run(ctx context.Context, r *runState) {
	for seq := 0; ctx.Err() == nil; seq++ {
		b := seq % len(e.tmpl)
		ts := time.Now().Add(-time.Second).Truncate(e.tick).UnixMilli()
		if ts > e.tmplTs[b] {
			e.stamp(b, ts)
		}
		ph := r.phase.Load()
		tm := &e.tmpl[b]
		res := e.snd.send(ctx, tm.body)
		rec := sentReq{block: b, tsMs: e.tmplTs[b]}
		switch {
		case res.ok && res.rejected == 0:
			rec.acked, rec.ackedAt = true, time.Now().UnixNano()
			r.points[ph].Add(int64(len(tm.timeOff)))
		case ctx.Err() != nil || r.killed.Load():
		case res.retry:
			e.retries++
			r.retries[ph].Add(1)
		default:
			// An ingest exporter's points are never refused: its series
			// exist before the series flood, and it sends nothing invalid.
			e.nErrs++
			if len(e.errs) < 10 {
				e.errs = append(e.errs, fmt.Sprintf("phase %s seq %d: ok=%v rejected=%d: %s", r.phaseName(int(ph)), seq, res.ok, res.rejected, res.msg))
			}
		}
		e.reqs = append(e.reqs, rec)
	}
}

// runState is shared by every load and fault goroutine of one run.
type runState struct {
	phase   atomic.Int32
	names   []string
	points  [maxPhases]atomic.Int64 // acknowledged ingest points per phase
	retries [maxPhases]atomic.Int64
	killed  atomic.Bool
}

const maxPhases = 64

func (r *runState) phaseName(i int) string {
	if i < len(r.names) {
		return r.names[i]
	}
	return strconv.Itoa(i)
}
