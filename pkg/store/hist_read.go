package store

import (
	"math"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
)

// HSample is a histogram sample copied out of the store. T is a unix
// time in milliseconds.
type HSample struct {
	T int64
	H histogram.FloatHistogram
}

// LatestHistogram is Latest for a series that may hold histograms
// (Handle.Histograms): when the sample it returns is a histogram, the
// histogram is copied into fh (its slices reused, so a warm caller does
// not allocate), isHist is true and s.V is meaningless. A float sample or
// a stale marker is returned in s as Latest returns it. It takes no lock.
func (r Reader) LatestHistogram(h Handle, maxt int64, fh *histogram.FloatHistogram) (s Sample, isHist, ok bool) {
	ms := h.ms
	if ms == nil {
		return Sample{}, false, false
	}
	for {
		m, w := ms.snapshot()
		head, n, c := unpackMeta(m)
		if m&metaDead != 0 || n == 0 {
			return Sample{}, false, false
		}
		base := int64(atomic.LoadUint64(&w[0]))
		j := n - 1
		sl := wrap(head+j, c)
		off := offAt(w, sl)
		if off > maxt-base {
			j = searchAfter(w, head, c, 0, n-1, maxt-base) - 1
			if j < 0 {
				if ms.meta.Load() == m {
					return Sample{}, false, false
				}
				continue
			}
			sl = wrap(head+j, c)
			off = offAt(w, sl)
		}
		v := slotV(w, sl)
		f := r.freshMs
		if f >= 0 && j > 0 {
			f = max(f, 3*(off-offAt(w, wrap(head+j-1, c))))
		}
		hist := false
		if b := math.Float64bits(v); isMark(b) && h.hs != nil {
			if !h.hs.decodeMark(h.hs.log.Load(), b, fh) {
				if ms.meta.Load() == m {
					return Sample{}, false, false // cannot happen: a consistent entry decodes
				}
				continue
			}
			hist = true
		}
		if ms.meta.Load() != m {
			continue
		}
		t := base + off
		if t < r.oldest {
			return Sample{}, false, false
		}
		if r.freshMs >= 0 && !value.IsStaleNaN(v) {
			if end := t + min(f, r.retention); maxt >= end {
				return Sample{T: end, V: math.Float64frombits(value.StaleNaN)}, false, true
			}
		}
		return Sample{T: t, V: v}, hist, true
	}
}

// RangeHistograms is Range for a series that may hold histograms: it
// appends h's samples with mint < T <= maxt, oldest first, the floats
// (stale markers included) to fdst and the histograms to hdst, and
// returns both. An element of hdst past its length (within its capacity)
// is reused with its slices, so a caller that passes the same buffers
// back does not allocate once they have grown. It retries on a
// concurrent write and takes no lock.
func (r Reader) RangeHistograms(h Handle, mint, maxt int64, fdst []Sample, hdst []HSample) ([]Sample, []HSample) {
	ms := h.ms
	if ms == nil {
		return fdst, hdst
	}
	mint = max(mint, r.oldest-1)
	f0, h0 := len(fdst), len(hdst)
	for {
		fdst, hdst = fdst[:f0], hdst[:h0]
		m, w := ms.snapshot()
		head, n, c := unpackMeta(m)
		if m&metaDead != 0 || n == 0 {
			return fdst, hdst
		}
		base := int64(atomic.LoadUint64(&w[0]))
		hi := searchAfter(w, head, c, 0, n, maxt-base)
		lo := searchAfter(w, head, c, 0, hi, mint-base)
		var (
			lg      *histLog
			layouts [][]float64
		)
		if h.hs != nil {
			lg, layouts = h.hs.log.Load(), h.hs.layoutList()
		}
		torn := false
		for i := lo; i < hi; i++ {
			j := wrap(head+i, c)
			t := base + offAt(w, j)
			v := slotV(w, j)
			b := math.Float64bits(v)
			if !isMark(b) || lg == nil {
				fdst = append(fdst, Sample{T: t, V: v})
				continue
			}
			if len(hdst) < cap(hdst) {
				hdst = hdst[:len(hdst)+1]
			} else {
				hdst = append(hdst, HSample{})
			}
			hs := &hdst[len(hdst)-1]
			hs.T = t
			if !decodeEntry(lg.w, markOff(b), &hs.H, layouts) {
				hdst = hdst[:len(hdst)-1]
				if ms.meta.Load() != m {
					torn = true
					break
				}
				continue // cannot happen: a consistent entry decodes
			}
			hs.H.CounterResetHint = markHint(b)
		}
		if ms.meta.Load() == m && !torn {
			return fdst, hdst
		}
	}
}
