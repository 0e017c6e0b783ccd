package receiver

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Memory held by requests is accounted in one byte budget,
// Config.MaxInFlightBytes, charged before the memory is allocated: the
// request body as it is read, its decompressed form as it is produced,
// the decompressor's state, and (for JSON) the decoded object tree. A
// request that would take the budget past its limit fails at once with
// Unavailable (503), which every exporter retries, and frees what it
// held. So the memory the receiver holds for requests is bounded by the
// configuration, not by how many requests arrive at once or how far they
// expand: a 64 KB gzip bomb stops at the budget (or at MaxRecvSize, 413),
// however many are sent together.
//
// In-flight slots (Config.MaxInFlight) are taken only once a body is
// complete and decompressed, so a slow sender holds its own connection
// and the bytes it has sent, never a slot.

// errCorrupt wraps a decompression failure.
var errCorrupt = errors.New("corrupt gzip body")

// charge is the part of the in-flight byte budget one request holds.
type charge struct {
	r *Receiver
	n int64
}

// add charges n more bytes, failing with errOverloaded when that would
// take the budget past its limit while other requests hold part of it. A
// request alone is let through whatever its size, so one request can
// always make progress (MaxRecvSize bounds it).
func (c *charge) add(n int64) error {
	total := c.r.inflightBytes.Add(n)
	if total > c.r.cfg.MaxInFlightBytes && total > c.n+n {
		c.r.inflightBytes.Add(-n)
		c.r.m.overloaded.Inc()
		return errOverloaded
	}
	c.n += n
	return nil
}

// sub returns n bytes to the budget.
func (c *charge) sub(n int64) {
	c.r.inflightBytes.Add(-n)
	c.n -= n
}

// release returns everything the request holds.
func (c *charge) release() { c.sub(c.n) }

// minBodyBuf is the first buffer of a body of unknown size.
const minBodyBuf = 32 << 10

// alloc returns an empty buffer of capacity at least n, its capacity
// charged to ch; free returns it.
func alloc(n int64, ch *charge) ([]byte, error) {
	if err := ch.add(n); err != nil {
		return nil, err
	}
	b := getBuf(int(n))
	if extra := int64(cap(b)) - n; extra > 0 {
		if err := ch.add(extra); err != nil {
			ch.sub(n)
			putBuf(b)
			return nil, err
		}
	}
	return b, nil
}

// free returns a buffer from alloc and its charge.
func free(b []byte, ch *charge) {
	ch.sub(int64(cap(b)))
	putBuf(b)
}

// readAll reads rd to EOF into a buffer from alloc, which the caller
// returns with free. hint, when >= 0, is the expected size
// (Content-Length, a gzip trailer's ISIZE, a gRPC message's length): the
// buffer never grows past it unless the hint was wrong. eager sizes the
// buffer to the hint at once, for sources already in memory; otherwise
// (a network body) nothing is allocated before the first byte arrives
// and the buffer doubles as bytes arrive, so a sender holds at most twice
// what it has sent plus 4 KiB, whatever length it claims. More than limit
// bytes fail with errTooLarge, an exhausted budget with errOverloaded;
// both free the buffer first. Errors of rd are returned as they are.
func readAll(rd io.Reader, limit, hint int64, eager bool, ch *charge) ([]byte, error) {
	const firstBuf = 4 << 10
	var (
		buf []byte
		err error
	)
	if eager {
		size := int64(minBodyBuf)
		if hint >= 0 {
			size = hint
		}
		if buf, err = alloc(min(size, limit+1), ch); err != nil {
			return nil, err
		}
	} else {
		var one [1]byte
		n, err := readSome(rd, one[:])
		if n == 0 {
			if errors.Is(err, io.EOF) {
				return alloc(0, ch)
			}
			return nil, err
		}
		size := int64(firstBuf)
		if hint > 0 {
			size = min(size, hint)
		}
		if buf, err = alloc(min(size, limit+1), ch); err != nil {
			return nil, err
		}
		buf = append(buf, one[0])
	}
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				free(buf, ch)
				return nil, errTooLarge
			}
			// Full: either the end (the usual case with a right hint)
			// or more is coming and the buffer must grow.
			var one [1]byte
			n, err := readSome(rd, one[:])
			if n == 0 {
				if errors.Is(err, io.EOF) {
					return buf, nil
				}
				free(buf, ch)
				return nil, err
			}
			next := max(2*int64(cap(buf)), firstBuf)
			if hint > int64(len(buf)) {
				next = min(next, hint)
			}
			nb, err := alloc(min(next, limit+1), ch)
			if err != nil {
				free(buf, ch)
				return nil, err
			}
			nb = append(append(nb, buf...), one[0])
			free(buf, ch)
			buf = nb
			continue
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			if int64(len(buf)) > limit {
				free(buf, ch)
				return nil, errTooLarge
			}
			return buf, nil
		}
		if err != nil {
			free(buf, ch)
			return nil, err
		}
	}
}

// readSome reads into p until it reads something or fails (a Reader may
// return 0, nil).
func readSome(rd io.Reader, p []byte) (int, error) {
	for range 100 {
		n, err := rd.Read(p)
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, io.ErrNoProgress
}

// gzipState is what one decompression holds besides its output (flate's
// 32 KiB window, its tables and the reader), charged while it runs.
const gzipState = 64 << 10

var gzipReaders sync.Pool // *gzip.Reader

// inflate decompresses the gzip stream src into a buffer from alloc
// (returned by the caller with free). The output is
// sized from the stream's ISIZE trailer, so an honest body is inflated
// into one exact allocation; a trailer that claims more than limit fails
// with errTooLarge without inflating anything, and a dishonest one only
// makes the buffer grow, charged, up to limit. Corrupt input fails with
// an error wrapping errCorrupt.
func inflate(src []byte, limit int64, ch *charge) ([]byte, error) {
	hint := int64(-1)
	// The smallest gzip member: a 10-byte header starting 1f 8b, an
	// 8-byte trailer. Anything else fails in the reader below.
	if len(src) >= 18 && src[0] == 0x1f && src[1] == 0x8b {
		hint = int64(binary.LittleEndian.Uint32(src[len(src)-4:]))
		if hint > limit {
			return nil, errTooLarge
		}
	}
	if err := ch.add(gzipState); err != nil {
		return nil, err
	}
	defer ch.sub(gzipState)
	zr, _ := gzipReaders.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(bytes.NewReader(src))
	} else {
		err = zr.Reset(bytes.NewReader(src))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	defer gzipReaders.Put(zr)
	out, err := readAll(zr, limit, hint, true, ch)
	switch {
	case err == nil, errors.Is(err, errTooLarge), errors.Is(err, errOverloaded):
		return out, err
	default:
		return nil, fmt.Errorf("%w: %w", errCorrupt, err)
	}
}

// gzipLimit is the most compressed bytes a body of at most limit bytes
// can take: deflate's stored blocks add 5 bytes per 64 KiB, gzip 18 bytes
// of header and trailer; a larger body decompresses past limit.
func gzipLimit(limit int64) int64 { return limit + limit>>10 + 1<<10 }
