package scaler

import (
	"sync"
	"time"
)

// Bounds of the trigger warnings logged: a client can make the scaler
// compile triggers as fast as it sends distinct metadata, each with
// warnings, so logging every one would let it flood the log. Most real
// triggers have none; after a restart the first warnBurst are logged at
// once and the rest at one a second (200 KServe v0.15 triggers, which all
// warn, within about three minutes). Every warning is counted either way.
const (
	warnBurst = 20
	warnEvery = time.Second
)

// logLimiter is a token bucket over unix nanoseconds: burst tokens, one
// more every `every` ns. It is used only when a trigger enters the cache,
// so a mutex is cheap enough.
type logLimiter struct {
	burst int64
	every int64

	mu      sync.Mutex
	started bool
	tokens  int64
	last    int64 // unix ns when tokens was last refilled
}

// allow takes a token at now (unix ns) and reports whether there was one.
func (l *logLimiter) allow(now int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		l.started, l.tokens, l.last = true, l.burst, now
	}
	if n := (now - l.last) / l.every; n > 0 {
		l.tokens = min(l.burst, l.tokens+n)
		l.last += n * l.every
	}
	if l.tokens == 0 {
		return false
	}
	l.tokens--
	return true
}
