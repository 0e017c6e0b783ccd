package scaler

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestSecretKey(t *testing.T) {
	for _, tc := range []struct {
		key    string
		secret bool
	}{
		{"tlsClientKey", true},
		{"tlsClientCert", true},
		{"caCert", true},
		{"ca", true},
		{"token", true},
		{"bearerToken", true},
		{"apiKey", true},
		{"apikey", true},
		{"X-API-Key", true},
		{"accessToken", true},
		{"passwordFromEnv", true}, // KEDA sends FromEnv keys with the resolved value
		{"PASSWORD", true},
		{"db_passwd", true},
		{"clientSecret", true},
		{"authModes", true},
		{"authorization", true},
		{"credentials", true},
		{"gcpCredentialsJson", true},
		{"privateKeyPem", true},
		{"HTTPToken", true},
		{"metricQuery", false},
		{"query", false},
		{"targetValue", false},
		{"activationThreshold", false},
		{"scalerAddress", false}, // "ca" only as a word
		{"unsafeSsl", false},
		{"window", false},
		{"operationOverTime", false},
		{"cascade", false},
		{"valueIfEmpty", false},
	} {
		t.Run(tc.key, func(t *testing.T) {
			assert.Equal(t, tc.secret, SecretKey(tc.key))
		})
	}
}

func TestShowMetadata(t *testing.T) {
	md := map[string]string{
		"metricQuery":   "sum(x)",
		"targetValue":   "4",
		"scalerAddress": "keda-otel-scaler.keda.svc:4318",
		"tlsClientKey":  "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----",
		"tlsClientCert": "-----BEGIN CERTIFICATE-----\nMIID\n-----END CERTIFICATE-----",
		"caCert":        "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----",
		"innocent":      "-----BEGIN RSA PRIVATE KEY-----\nabc",
		"header":        "Bearer abcdefghijklmnop",
		"long":          strings.Repeat("v", 2*maxShownValue),
	}
	got := ShowMetadata(md)
	shown := map[string]MetadataEntry{}
	var keys []string
	for _, e := range got {
		shown[e.Key] = e
		keys = append(keys, e.Key)
		assert.NotContains(t, e.Value, "BEGIN", e.Key)
		assert.NotContains(t, e.Value, "abcdefghijklmnop", e.Key)
	}
	assert.IsIncreasing(t, keys)
	assert.Equal(t, "sum(x)", shown["metricQuery"].Value)
	assert.Equal(t, "keda-otel-scaler.keda.svc:4318", shown["scalerAddress"].Value)
	for _, k := range []string{"tlsClientKey", "tlsClientCert", "caCert", "innocent", "header"} {
		assert.Equal(t, Redacted, shown[k].Value, k)
	}
	assert.Len(t, shown["long"].Value, maxShownValue)
	assert.True(t, shown["long"].Truncated)

	many := map[string]string{}
	for i := range 3 * maxShownKeys {
		many[fmt.Sprintf("k%03d", i)] = strings.Repeat("x", 400)
	}
	got = ShowMetadata(many)
	total := 0
	for _, e := range got[:len(got)-1] {
		total += len(e.Key) + len(e.Value)
	}
	assert.LessOrEqual(t, total, maxShownBytes)
	assert.LessOrEqual(t, len(got), maxShownKeys+1)
	assert.Equal(t, "…", got[len(got)-1].Key, "dropped keys are counted")
}

// findTrigger returns the listed trigger of ScaledObject ns/so with query q.
func findTrigger(t *testing.T, s *Scaler, q string) TriggerStatus {
	t.Helper()
	for _, ts := range s.Triggers() {
		if ts.Namespace == "ns" && ts.Name == "so" && ts.Query == q {
			return ts
		}
	}
	t.Fatalf("trigger ns/so %s not listed in %+v", q, s.Triggers())
	return TriggerStatus{}
}

// TestTriggerStatusRecordsAnswers: values, activity, evaluation times,
// errors with their codes, the warm-up, pushes, edges and streams appear
// in Triggers as they happened.
func TestTriggerStatusRecordsAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, Config{Warmup: 10 * time.Second})
		md := map[string]string{"metricQuery": "sum(x)", "targetValue": "1", "activationThreshold": "5", "tlsClientKey": "PRIVATE"}
		_, err := e.s.GetMetricSpec(t.Context(), ref(md))
		require.NoError(t, err)

		_, err = e.s.IsActive(t.Context(), ref(md))
		require.Equal(t, codes.Unavailable, status.Code(err))
		ts := findTrigger(t, e.s, md["metricQuery"])
		require.NotNil(t, ts.LastError)
		assert.True(t, ts.LastError.WarmingUp)
		assert.Equal(t, "Unavailable", ts.LastError.Code)
		assert.Equal(t, methodIsActive, ts.LastError.Method)
		assert.Nil(t, ts.Last, "no evaluation during warm-up")
		assert.Equal(t, "external", ts.Type)
		assert.Equal(t, "ns-so", ts.MetricName)
		assert.Equal(t, "sum(x)", ts.Evaluated)
		assert.InDelta(t, 5, ts.Activation, 0)
		assert.NotNil(t, ts.LastSpec)
		for _, m := range ts.Metadata {
			if m.Key == "tlsClientKey" {
				assert.Equal(t, Redacted, m.Value)
			}
		}

		time.Sleep(10 * time.Second)
		e.push(t, "x", 3)
		_, err = e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{MetricName: "s2-ns-so", ScaledObjectRef: ref(md)})
		require.NoError(t, err)
		ts = findTrigger(t, e.s, md["metricQuery"])
		require.NotNil(t, ts.Last)
		assert.InDelta(t, 3, ts.Last.Value, 0)
		assert.False(t, ts.Last.Active)
		assert.Equal(t, time.Now().UnixMilli(), ts.Last.Time.UnixMilli())
		assert.Equal(t, "s2-ns-so", ts.RequestedMetricName)
		assert.Equal(t, 2, ts.TriggerIndex)
		assert.Equal(t, uint64(1), ts.Evaluations)

		time.Sleep(time.Second)
		e.push(t, "x", 7, "pod", "b")
		r, err := e.s.IsActive(t.Context(), ref(md))
		require.NoError(t, err)
		require.True(t, r.GetResult())
		ts = findTrigger(t, e.s, md["metricQuery"])
		assert.InDelta(t, 10, ts.Last.Value, 0)
		assert.True(t, ts.Last.Active)

		// An error answer: the query now returns two series.
		bad := map[string]string{"metricQuery": "x + 0", "targetValue": "1"} // not summed: two series
		_, err = e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(bad)})
		require.Equal(t, codes.FailedPrecondition, status.Code(err))
		badTS := findTrigger(t, e.s, "x + 0")
		require.NotNil(t, badTS.LastError)
		assert.Equal(t, "FailedPrecondition", badTS.LastError.Code)
		assert.Contains(t, badTS.LastError.Message, "more than one series")
		assert.Equal(t, uint64(1), badTS.Errors)
		require.NotEmpty(t, badTS.History)
		assert.True(t, badTS.History[len(badTS.History)-1].Failed)

		// A push: a stream opens (the trigger becomes external-push), the
		// value falls below and rises above the activation threshold.
		time.Sleep(time.Second)
		e.push(t, "x", 0)
		e.push(t, "x", 0, "pod", "b")
		fs, cancel := e.open(t, md)
		synctest.Wait()
		assert.Equal(t, int64(1), findTrigger(t, e.s, md["metricQuery"]).OpenStreams)
		time.Sleep(time.Second)
		e.push(t, "x", 9)
		synctest.Wait()
		require.Equal(t, []bool{true}, fs.got())
		ts = findTrigger(t, e.s, md["metricQuery"])
		assert.Equal(t, "external-push", ts.Type)
		assert.Equal(t, uint64(1), ts.Pushes)
		assert.Equal(t, uint64(1), ts.Edges)
		require.NotNil(t, ts.LastPush)
		assert.Equal(t, time.Now().UnixMilli(), ts.LastPush.UnixMilli())
		assert.InDelta(t, 9, ts.Last.Value, 0)
		require.NoError(t, cancel())
		assert.Equal(t, int64(0), findTrigger(t, e.s, md["metricQuery"]).OpenStreams)
	})
}

// TestTriggerHistory: one point per bucket with an evaluation (the last
// value in it), failed buckets marked, and evaluations per minute counted
// over the last complete minute.
func TestTriggerHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		time.Sleep(time.Duration(histBucketMs-time.Now().UnixMilli()%histBucketMs) * time.Millisecond) // align to a bucket
		e := newEnv(t, Config{})
		md := map[string]string{"metricQuery": "sum(x)", "targetValue": "1", "ignoreNullValues": "false"}
		for i := range 12 { // 12 evaluations 5 s apart: 4 in each of 3 buckets
			e.push(t, "x", float64(i))
			_, err := e.s.GetMetrics(t.Context(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref(md)})
			require.NoError(t, err)
			time.Sleep(5 * time.Second)
		}
		ts := findTrigger(t, e.s, md["metricQuery"])
		require.Len(t, ts.History, 3)
		assert.InDelta(t, 3, ts.History[0].Value, 0)
		assert.InDelta(t, 7, ts.History[1].Value, 0)
		assert.InDelta(t, 11, ts.History[2].Value, 0)
		// 12 evaluations 5 s apart; now is 0 s into the bucket after them:
		// the last 60 s plus the current bucket hold the last 12.
		assert.InDelta(t, 12, ts.EvaluationsPerMinute, 0)
		time.Sleep(time.Duration(histBuckets*histBucketMs) * time.Millisecond)
		ts = findTrigger(t, e.s, md["metricQuery"])
		assert.Empty(t, ts.History, "older than the history")
		assert.Zero(t, ts.EvaluationsPerMinute)
		assert.Equal(t, uint64(12), ts.Evaluations)
	})
}

// TestRejectedTriggersListed: a trigger that fails validation is listed,
// not compiled, with its code and redacted metadata, and the list is
// bounded.
func TestRejectedTriggersListed(t *testing.T) {
	e := newEnv(t, Config{})
	md := map[string]string{"metricQuery": "sum(", "targetValue": "1", "password": "hunter2"}
	_, err := e.s.GetMetricSpec(t.Context(), ref(md))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	_, err = e.s.IsActive(t.Context(), ref(md))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	ts := findTrigger(t, e.s, md["metricQuery"])
	assert.False(t, ts.Compiled)
	require.NotNil(t, ts.LastError)
	assert.Equal(t, "InvalidArgument", ts.LastError.Code)
	assert.Equal(t, methodIsActive, ts.LastError.Method)
	assert.Equal(t, uint64(2), ts.Errors)
	assert.Equal(t, "sum(", ts.Query)
	for _, m := range ts.Metadata {
		assert.NotContains(t, m.Value, "hunter2")
	}
	// The list keeps the newest maxRejected: the first entry and the
	// oldest bad ones are dropped, every call is refused meanwhile.
	for i := range 3 * maxRejected {
		_, err := e.s.GetMetricSpec(t.Context(), &externalscaler.ScaledObjectRef{Namespace: "ns", Name: fmt.Sprint("bad", i), ScalerMetadata: md})
		require.Equal(t, codes.InvalidArgument, status.Code(err), "bad%d", i)
	}
	var names, want []string
	for _, ts := range e.s.Triggers() {
		names = append(names, ts.Name)
	}
	for i := 2 * maxRejected; i < 3*maxRejected; i++ {
		want = append(want, fmt.Sprint("bad", i))
	}
	assert.ElementsMatch(t, want, names, "the newest maxRejected are kept")
}

// TestTriggerStatsSeqlock: readers never see a value from one evaluation
// with the time of another, while a writer records under the trigger's
// lock as evalLocked does (run with -race).
func TestTriggerStatsSeqlock(t *testing.T) {
	st := newTriggerStats(nil, 0)
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			st.evaluated(i, float64(i), i%2 == 0, true)
			mu.Unlock()
		}
	})
	for range 20_000 {
		ms, v, active := st.lastEval(&mu)
		if ms == 0 {
			continue
		}
		require.InDelta(t, float64(ms), v, 0)
		require.Equal(t, ms%2 == 0, active)
	}
	close(stop)
	wg.Wait()
}

// TestTriggerStatsHotPathAllocs gates what GetMetrics, IsActive and a push
// add per call: no allocation.
func TestTriggerStatsHotPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	st := newTriggerStats(map[string]string{"metricQuery": "sum(x)"}, 1)
	st.noteKEDAName("s0-ns-so")
	ms := int64(1_700_000_000_000)
	for name, f := range map[string]func(){
		"evaluated":    func() { ms += 15_000; st.evaluated(ms, 3, true, true) },
		"failed_eval":  func() { ms += 15_000; st.evaluated(ms, 0, false, false) },
		"keda_name":    func() { st.noteKEDAName("s0-ns-so") },
		"push":         func() { st.pushes.Add(1); st.lastPushMs.Store(ms) },
		"edge":         func() { st.edges.Add(1); st.lastEdgeMs.Store(ms) },
		"stream_count": func() { st.streams.Add(1); st.streams.Add(-1) },
	} {
		assert.Zero(t, testing.AllocsPerRun(100, f), name)
	}
	_, v, _ := st.lastEval(&sync.Mutex{})
	assert.False(t, math.IsNaN(v))
}

// FuzzShowMetadata: whatever the keys and values, a secret key's value is
// never shown, a PEM block never is, and the shown metadata stays within
// its bounds.
func FuzzShowMetadata(f *testing.F) {
	f.Add("tlsClientKey", "-----BEGIN PRIVATE KEY-----\nMIIE", "metricQuery", "sum(x)")
	f.Add("caCert", "abc", "scalerAddress", "a:1")
	f.Add("X_API-Token", "t", "innocent", "-----BEGIN CERTIFICATE-----")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		got := ShowMetadata(map[string]string{k1: v1, k2: v2})
		total := 0
		for _, e := range got {
			total += len(e.Key) + len(e.Value)
			if e.Key == "…" {
				continue
			}
			require.LessOrEqual(t, len(e.Key), maxShownKey)
			require.LessOrEqual(t, len(e.Value), maxShownQuery)
			if SecretKey(e.Key) {
				require.Equal(t, Redacted, e.Value)
			}
			require.NotContains(t, e.Value, "-----BEGIN ")
		}
		require.LessOrEqual(t, total, maxShownBytes+64)
	})
}
