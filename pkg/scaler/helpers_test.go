package scaler

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/fuzzflags"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// TestMain bounds fuzz minimisation (fuzzflags) and checks for leaked
// goroutines.
func TestMain(m *testing.M) {
	fuzzflags.Init()
	goleak.VerifyTestMain(m)
}

// env is a scaler over a fresh store; its clock is time.Now, which is fake
// inside a synctest bubble.
type env struct {
	st *store.Store
	s  *Scaler
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	st := store.New(store.Config{Retention: 10 * time.Minute}, store.Settings{})
	s := New(query.NewEngine(st), st, cfg, Settings{})
	t.Cleanup(s.Drain)
	return &env{st: st, s: s}
}

// push appends v now to the series name{kv...} and notifies the scaler as
// the receiver does.
func (e *env) push(t testing.TB, name string, v float64, kv ...string) {
	t.Helper()
	e.append(t, name, v, kv...)
	e.s.OnIngest([]uint32{e.st.MetricID(name)})
}

// append stores a sample without telling the scaler, so a test can land a
// whole batch before one OnIngest, as the receiver does per request.
func (e *env) append(t testing.TB, name string, v float64, kv ...string) {
	t.Helper()
	lset := labels.FromStrings(append([]string{labels.MetricName, name}, kv...)...)
	ref, err := e.st.Create(lset.Hash(), lset)
	require.NoError(t, err)
	require.NoError(t, e.st.Append(ref, time.Now().UnixMilli(), v))
}

func ref(md map[string]string) *externalscaler.ScaledObjectRef {
	return &externalscaler.ScaledObjectRef{Name: "so", Namespace: "ns", ScalerMetadata: md}
}

// fakeStream is a StreamIsActive server stream recording what was sent.
// block, when set, makes Send wait until it is closed or the context ends
// (a client that stops reading).
type fakeStream struct {
	grpc.ServerStream
	ctx   context.Context
	block chan struct{}
	calls atomic.Int32 // Send calls, including one still blocked

	mu   sync.Mutex
	sent []bool
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) Send(m *externalscaler.IsActiveResponse) error {
	f.calls.Add(1)
	if f.block != nil {
		select {
		case <-f.block:
		case <-f.ctx.Done():
			return f.ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, m.GetResult())
	return nil
}

func (f *fakeStream) got() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bool(nil), f.sent...)
}

// open starts StreamIsActive on a fake stream; cancel ends it and waits.
func (e *env) open(t testing.TB, md map[string]string) (fs *fakeStream, cancel func() error) {
	t.Helper()
	ctx, c := context.WithCancel(context.Background())
	fs = &fakeStream{ctx: ctx}
	done := make(chan error, 1)
	go func() { done <- e.s.StreamIsActive(ref(md), fs) }()
	var once sync.Once
	var err error
	cancel = func() error {
		once.Do(func() { c(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = cancel() })
	return fs, cancel
}

// heapLive returns the bytes of live heap objects after a full collection.
func heapLive() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
