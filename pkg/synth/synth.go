// Package synth generates deterministic, seeded OTLP metric payloads for
// tests, benchmarks and load generation, so that our code and every
// baseline see identical bytes and samples.
//
// Payloads are encoded directly with protowire, and every data point's
// time_unix_nano offset is recorded, so a benchmark or load generator can
// re-stamp a pre-encoded request in place (SetTime) instead of encoding it
// again: that keeps the sender's cost out of what is measured.
package synth

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"

	"google.golang.org/protobuf/encoding/protowire"
)

// Config describes a family of series and how requests cover it.
type Config struct {
	// Seed makes values reproducible.
	Seed uint64
	// Series is the number of distinct series.
	Series int
	// Metrics is the number of metric names the series are spread over.
	// Default 100.
	Metrics int
	// PointsPerRequest is the number of data points per request. Default 1000.
	PointsPerRequest int
	// Histogram makes every metric a 10-bucket cumulative histogram instead
	// of a monotonic cumulative double sum with 3 attributes per point.
	Histogram bool
}

func (c Config) withDefaults() Config {
	if c.Metrics <= 0 {
		c.Metrics = 100
	}
	if c.PointsPerRequest <= 0 {
		c.PointsPerRequest = 1000
	}
	if c.Series <= 0 {
		c.Series = c.PointsPerRequest
	}
	return c
}

// Payload is one encoded ExportMetricsServiceRequest.
type Payload struct {
	// Bytes is the encoded request.
	Bytes []byte
	// TimeOffsets are the offsets of every data point's 8-byte
	// time_unix_nano value in Bytes.
	TimeOffsets []int
	// Points is the number of data points.
	Points int
}

// SetTime sets every data point's time to tNanos, in place.
func (p *Payload) SetTime(tNanos uint64) {
	for _, off := range p.TimeOffsets {
		binary.LittleEndian.PutUint64(p.Bytes[off:], tNanos)
	}
}

// MetricName returns the OTLP name of metric m.
func MetricName(m int) string { return fmt.Sprintf("synth.requests.%03d", m) }

// ResourceAttrs are the resource attributes of every generated request:
// five, like a typical SDK or collector resource.
var ResourceAttrs = [][2]string{
	{"service.name", "synth"},
	{"service.instance.id", "localhost:8000"},
	{"k8s.namespace.name", "bench"},
	{"host.name", "node-1"},
	{"telemetry.sdk.language", "go"},
}

// Request encodes the points for the given series indices (each in
// [0, Series)) at time tNanos. Series i is metric i % Metrics with label
// combination i / Metrics; points are grouped by metric.
func (c Config) Request(series []int, tNanos uint64) Payload {
	c = c.withDefaults()
	rng := rand.New(rand.NewPCG(c.Seed, uint64(len(series))))
	byMetric := make([][]int, c.Metrics)
	for _, s := range series {
		byMetric[s%c.Metrics] = append(byMetric[s%c.Metrics], s/c.Metrics)
	}
	var p Payload
	// ScopeMetrics.scope: InstrumentationScope{name, version}.
	scope := appendMsg(nil, 1, appendStr(appendStr(nil, 1, "synth"), 2, "1.0.0"))
	var metrics []byte
	var rels []int // time offsets relative to metrics
	for m, combos := range byMetric {
		if len(combos) == 0 {
			continue
		}
		var dps []byte
		var dpRel []int
		attrField := protowire.Number(7) // NumberDataPoint.attributes
		if c.Histogram {
			attrField = 9 // HistogramDataPoint.attributes
		}
		for _, combo := range combos {
			var dp []byte
			dp = appendKV(dp, attrField, "pod", fmt.Sprintf("pod-%d", combo))
			dp = appendKV(dp, attrField, "model_name", fmt.Sprintf("model-%d", combo%7))
			dp = appendKV(dp, attrField, "http.method", "GET")
			dp = protowire.AppendTag(dp, 2, protowire.Fixed64Type) // start_time_unix_nano
			dp = protowire.AppendFixed64(dp, tNanos-3600e9)
			dp = protowire.AppendTag(dp, 3, protowire.Fixed64Type)
			tOff := len(dp)
			dp = protowire.AppendFixed64(dp, tNanos)
			if c.Histogram {
				dp = appendHistogramFields(dp, rng)
			} else {
				dp = protowire.AppendTag(dp, 4, protowire.Fixed64Type) // as_double
				dp = protowire.AppendFixed64(dp, math.Float64bits(float64(rng.IntN(1_000_000))))
			}
			dps = protowire.AppendTag(dps, 1, protowire.BytesType) // data_points
			dps = protowire.AppendVarint(dps, uint64(len(dp)))
			dpRel = append(dpRel, len(dps)+tOff)
			dps = append(dps, dp...)
			p.Points++
		}
		var data []byte
		data = append(data, dps...)
		dataField := protowire.Number(7) // Sum
		if c.Histogram {
			dataField = 9 // Histogram
			data = protowire.AppendTag(data, 2, protowire.VarintType)
			data = protowire.AppendVarint(data, 2) // cumulative
		} else {
			data = protowire.AppendTag(data, 2, protowire.VarintType)
			data = protowire.AppendVarint(data, 2) // cumulative
			data = protowire.AppendTag(data, 3, protowire.VarintType)
			data = protowire.AppendVarint(data, 1) // monotonic
		}
		var metric []byte
		metric = appendStr(metric, 1, MetricName(m))
		metric = protowire.AppendTag(metric, dataField, protowire.BytesType)
		metric = protowire.AppendVarint(metric, uint64(len(data)))
		base := len(metric)
		metric = append(metric, data...)
		metrics = protowire.AppendTag(metrics, 2, protowire.BytesType) // ScopeMetrics.metrics
		metrics = protowire.AppendVarint(metrics, uint64(len(metric)))
		mbase := len(metrics) + base
		metrics = append(metrics, metric...)
		for _, r := range dpRel {
			rels = append(rels, mbase+r)
		}
	}
	sm := scope
	smBase := len(sm)
	sm = append(sm, metrics...)

	var res []byte
	for _, a := range ResourceAttrs {
		res = appendKV(res, 1, a[0], a[1])
	}
	var rmb []byte
	rmb = appendMsg(rmb, 1, res)
	rmb = protowire.AppendTag(rmb, 2, protowire.BytesType)
	rmb = protowire.AppendVarint(rmb, uint64(len(sm)))
	rmBase := len(rmb) + smBase
	rmb = append(rmb, sm...)

	out := protowire.AppendTag(nil, 1, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(len(rmb)))
	reqBase := len(out) + rmBase
	out = append(out, rmb...)
	p.Bytes = out
	for _, r := range rels {
		p.TimeOffsets = append(p.TimeOffsets, reqBase+r)
	}
	return p
}

// Cover returns requests that together hold one point for every series,
// in order: request r holds series [r·PointsPerRequest, (r+1)·PointsPerRequest).
func (c Config) Cover(tNanos uint64) []Payload {
	c = c.withDefaults()
	var out []Payload
	for start := 0; start < c.Series; start += c.PointsPerRequest {
		end := min(start+c.PointsPerRequest, c.Series)
		idx := make([]int, 0, end-start)
		for i := start; i < end; i++ {
			idx = append(idx, i)
		}
		out = append(out, c.Request(idx, tNanos))
	}
	return out
}

// Scattered returns n requests of PointsPerRequest series each, drawn
// uniformly without replacement from all Series with the seed, so that
// consecutive points hit unrelated series (a realistic cache-miss pattern
// at 1M) and no series appears twice. n·PointsPerRequest must not exceed
// Series.
func (c Config) Scattered(n int, tNanos uint64) []Payload {
	c = c.withDefaults()
	rng := rand.New(rand.NewPCG(c.Seed, 0x5ca77e7ed))
	out := make([]Payload, 0, n)
	seen := make(map[int]bool, n*c.PointsPerRequest)
	for range n {
		idx := make([]int, 0, c.PointsPerRequest)
		for len(idx) < min(c.PointsPerRequest, c.Series-len(seen)) {
			s := rng.IntN(c.Series)
			if !seen[s] {
				seen[s] = true
				idx = append(idx, s)
			}
		}
		out = append(out, c.Request(idx, tNanos))
	}
	return out
}

func appendHistogramFields(dp []byte, rng *rand.Rand) []byte {
	bounds := []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
	counts := make([]uint64, len(bounds)+1)
	var total uint64
	for i := range counts {
		counts[i] = uint64(rng.IntN(100))
		total += counts[i]
	}
	dp = protowire.AppendTag(dp, 4, protowire.Fixed64Type) // count
	dp = protowire.AppendFixed64(dp, total)
	dp = protowire.AppendTag(dp, 5, protowire.Fixed64Type) // sum
	dp = protowire.AppendFixed64(dp, math.Float64bits(float64(total)*0.3))
	dp = protowire.AppendTag(dp, 6, protowire.BytesType) // bucket_counts, packed
	dp = protowire.AppendVarint(dp, uint64(8*len(counts)))
	for _, c := range counts {
		dp = protowire.AppendFixed64(dp, c)
	}
	dp = protowire.AppendTag(dp, 7, protowire.BytesType) // explicit_bounds, packed
	dp = protowire.AppendVarint(dp, uint64(8*len(bounds)))
	for _, b := range bounds {
		dp = protowire.AppendFixed64(dp, math.Float64bits(b))
	}
	return dp
}

func appendStr(b []byte, field protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendMsg(b []byte, field protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

// appendKV appends a KeyValue with a string value as field.
func appendKV(b []byte, field protowire.Number, k, v string) []byte {
	anyV := appendStr(nil, 1, v)
	kv := appendStr(nil, 1, k)
	kv = appendMsg(kv, 2, anyV)
	return appendMsg(b, field, kv)
}
