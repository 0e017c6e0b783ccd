package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// rawSeries is one series of a matrix answer: its labels and samples.
type rawSeries struct {
	labels map[string]string
	ts     []int64 // unix ms
	vs     []float64
}

// rawMatrix runs an instant query of a range selector (Prometheus's raw
// samples) at time at and parses the answer. The parser is written for
// pkg/promapi's encoding (metric before values, timestamps as seconds with
// at most three decimals, quoted values) and fails loudly on anything else.
func rawMatrix(ctx context.Context, p *proc, q string, at time.Time) ([]rawSeries, error) {
	form := url.Values{"query": {q}, "time": {strconv.FormatInt(at.Unix(), 10)}}
	code, body, err := p.query(ctx, "/api/v1/query", form.Encode())
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d: %.300s", q, code, body)
	}
	out, err := parseMatrix(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	return out, nil
}

var errFormat = errors.New("unexpected matrix encoding")

func parseMatrix(b []byte) ([]rawSeries, error) {
	i := bytes.Index(b, []byte(`"resultType":"matrix","result":[`))
	if i < 0 {
		return nil, fmt.Errorf("%w: %.200s", errFormat, b)
	}
	b = b[i+len(`"resultType":"matrix","result":[`):]
	var out []rawSeries
	for len(b) > 0 && b[0] != ']' {
		if b[0] == ',' {
			b = b[1:]
		}
		if !bytes.HasPrefix(b, []byte(`{"metric":`)) {
			return nil, fmt.Errorf("%w at %.80s", errFormat, b)
		}
		b = b[len(`{"metric":`):]
		end := bytes.IndexByte(b, '}') // label values in this suite have no braces
		if end < 0 {
			return nil, errFormat
		}
		var s rawSeries
		if err := json.Unmarshal(b[:end+1], &s.labels); err != nil {
			return nil, fmt.Errorf("metric: %w", err)
		}
		b = b[end+1:]
		if !bytes.HasPrefix(b, []byte(`,"values":[`)) {
			return nil, fmt.Errorf("%w at %.80s", errFormat, b)
		}
		b = b[len(`,"values":[`):]
		for len(b) > 0 && b[0] != ']' {
			if b[0] == ',' {
				b = b[1:]
			}
			// [1712345678.123,"1.5"]
			if len(b) == 0 || b[0] != '[' {
				return nil, fmt.Errorf("%w at %.80s", errFormat, b)
			}
			comma := bytes.IndexByte(b, ',')
			if comma < 0 {
				return nil, errFormat
			}
			ts, err := parseMs(b[1:comma])
			if err != nil {
				return nil, err
			}
			b = b[comma+1:]
			if len(b) == 0 || b[0] != '"' {
				return nil, fmt.Errorf("%w at %.80s", errFormat, b)
			}
			q := bytes.IndexByte(b[1:], '"')
			if q < 0 {
				return nil, errFormat
			}
			v, err := strconv.ParseFloat(string(b[1:1+q]), 64)
			if err != nil {
				return nil, err
			}
			b = b[q+2:]
			if len(b) == 0 || b[0] != ']' {
				return nil, fmt.Errorf("%w at %.80s", errFormat, b)
			}
			b = b[1:]
			s.ts, s.vs = append(s.ts, ts), append(s.vs, v)
		}
		if !bytes.HasPrefix(b, []byte("]}")) {
			return nil, fmt.Errorf("%w at %.80s", errFormat, b)
		}
		b = b[2:]
		out = append(out, s)
	}
	return out, nil
}

// parseMs reads a timestamp in seconds with at most three decimals
// (pkg/promapi writes three, Prometheus trims zeros) as unix milliseconds,
// exactly.
func parseMs(b []byte) (int64, error) {
	sec, frac, _ := bytes.Cut(b, []byte("."))
	s, err := strconv.ParseInt(string(sec), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("timestamp %q: %w", b, err)
	}
	ms := s * 1000
	if len(frac) > 0 {
		if len(frac) > 3 {
			return 0, fmt.Errorf("timestamp %q: %w", b, errFormat)
		}
		f, err := strconv.ParseInt(string(frac), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("timestamp %q: %w", b, err)
		}
		for range 3 - len(frac) {
			f *= 10
		}
		ms += f
	}
	return ms, nil
}

// verdict counts what verification found.
type verdict struct {
	ackedBefore   int // samples acknowledged before the last checkpoint started: must all be present
	ackedAfter    int // acknowledged after it: may be lost
	lostAfter     int // of those, missing after the restart
	presentUnack  int // present although never acknowledged (Unavailable, or cut by the kill): allowed, exact
	checked       int // samples compared bit for bit
	seriesChecked int
	problems      []string
	nProblems     int
}

func (v *verdict) fail(format string, args ...any) {
	v.nProblems++
	if len(v.problems) < 20 {
		v.problems = append(v.problems, fmt.Sprintf(format, args...))
	}
}

func sameBits(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

// sample is one (series block, time) an exporter sent, possibly several
// times: acknowledged if any of its Exports was, at the first such answer.
type sample struct {
	tsMs    int64
	acked   bool
	ackedAt int64
}

// blockSamples folds e's requests into each block's distinct samples, in
// time order.
func blockSamples(e *exporter) [][]sample {
	out := make([][]sample, len(e.tmpl))
	for _, r := range e.reqs {
		ss := out[r.block]
		if n := len(ss); n == 0 || ss[n-1].tsMs != r.tsMs {
			ss = append(ss, sample{tsMs: r.tsMs})
		}
		last := &ss[len(ss)-1]
		if r.acked && !last.acked {
			last.acked, last.ackedAt = true, r.ackedAt
		}
		out[r.block] = ss
	}
	return out
}

// verifyExporter checks every sample of e's series after the restart
// against what e sent: each present sample is one e sent, with its exact
// value; each sample acknowledged before ckpt is present.
func verifyExporter(ctx context.Context, p *proc, e *exporter, ckpt time.Time, at time.Time, v *verdict) error {
	perReq := len(e.tmpl[0].timeOff)
	ck := ckpt.UnixNano()
	for b, sent := range blockSamples(e) {
		nSeries := len(e.tmpl[b].timeOff)
		seen := make([]bool, nSeries)
		check := func(id int, ts []int64, vs []float64) {
			// Two pointers: the block's samples and the series', both in
			// time order.
			k := 0
			for _, r := range sent {
				for k < len(ts) && ts[k] < r.tsMs {
					v.fail("%s series %d: sample at %d was never sent", e.name, id, ts[k])
					k++
				}
				present := k < len(ts) && ts[k] == r.tsMs
				if present {
					if want := sampleValue(e.id, id, int(r.tsMs)); !sameBits(vs[k], want) {
						v.fail("%s series %d at %d: value %v, sent %v", e.name, id, r.tsMs, vs[k], want)
					}
					v.checked++
					k++
				}
				switch {
				case r.acked && r.ackedAt < ck:
					v.ackedBefore++
					if !present {
						v.fail("%s series %d at %d (acknowledged %s before the checkpoint started): missing",
							e.name, id, r.tsMs, time.Duration(ck-r.ackedAt))
					}
				case r.acked:
					v.ackedAfter++
					if !present {
						v.lostAfter++
					}
				case present:
					v.presentUnack++
				}
			}
			for ; k < len(ts); k++ {
				v.fail("%s series %d: sample at %d was never sent", e.name, id, ts[k])
			}
		}
		for sh := range shards {
			q := fmt.Sprintf(`chaos_ingest{exporter=%q,block="%d",shard="%d"}[10m]`, e.name, b, sh)
			series, err := rawMatrix(ctx, p, q, at)
			if err != nil {
				return err
			}
			for _, s := range series {
				id, err := strconv.Atoi(s.labels["series"])
				i := id - b*perReq
				if err != nil || i < 0 || i >= nSeries || seen[i] || id%shards != sh {
					v.fail("%s: unexpected series %v", q, s.labels)
					continue
				}
				seen[i] = true
				v.seriesChecked++
				check(id, s.ts, s.vs)
			}
		}
		for i, ok := range seen {
			if !ok { // no sample present: only allowed if none had to be
				check(b*perReq+i, nil, nil)
			}
		}
	}
	return nil
}

// verifyFlood checks the flood's series: exactly the accepted prefix of
// each acknowledged request is stored, with its exact value.
func verifyFlood(ctx context.Context, p *proc, floods []*floodFault, ckpt time.Time, at time.Time, v *verdict) error {
	ck := ckpt.UnixNano()
	type key struct{ round, req int }
	sent := map[key]floodReq{}
	for _, f := range floods {
		for _, r := range f.reqs {
			sent[key{r.round, r.req}] = r
		}
	}
	series, err := rawMatrix(ctx, p, `chaos_flood[10m]`, at)
	if err != nil {
		return err
	}
	present := map[key]map[int]bool{}
	for _, s := range series {
		round, err1 := strconv.Atoi(s.labels["round"])
		req, err2 := strconv.Atoi(s.labels["req"])
		i, err3 := strconv.Atoi(s.labels["i"])
		r, ok := sent[key{round, req}]
		if err1 != nil || err2 != nil || err3 != nil || !ok || len(s.ts) != 1 {
			v.fail("chaos_flood: unexpected series %v with %d samples", s.labels, len(s.ts))
			continue
		}
		if r.acked && i >= r.accepted {
			v.fail("chaos_flood round %d req %d point %d: stored, but the answer counted it rejected (accepted %d)", round, req, i, r.accepted)
		}
		if s.ts[0] != r.tsMs || !sameBits(s.vs[0], floodValue(round, req, i)) {
			v.fail("chaos_flood %v: sample (%d, %v), sent (%d, %v)", s.labels, s.ts[0], s.vs[0], r.tsMs, floodValue(round, req, i))
		}
		if !r.acked {
			v.presentUnack++
		}
		v.checked++
		v.seriesChecked++
		if present[key{round, req}] == nil {
			present[key{round, req}] = map[int]bool{}
		}
		present[key{round, req}][i] = true
	}
	for k, r := range sent {
		if !r.acked {
			continue
		}
		for i := range r.accepted {
			ok := present[k][i]
			if r.ackedAt < ck {
				v.ackedBefore++
				if !ok {
					v.fail("chaos_flood round %d req %d point %d: accepted before the checkpoint, missing", k.round, k.req, i)
				}
			} else {
				v.ackedAfter++
				if !ok {
					v.lostAfter++
				}
			}
		}
	}
	return nil
}
