package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"
)

// The chart's collector layers (deploy/helm/keda-otel-scaler,
// templates/_collectors.tpl), as test/helm renders them for
// ci/ha-values.yaml, ci/ha-tls-values.yaml and ci/router-values.yaml and
// keeps them in these files (TestCollectorConfigGolden). The tests below
// run them unchanged except for addresses (cluster DNS names become
// loopback ports), the directories of mounted Secrets and the collector's
// own telemetry (off, so several collectors share the host).
const (
	fanoutGolden    = "testdata/ha-fanout-collector.yaml"
	fanoutTLSGolden = "testdata/ha-fanout-tls-collector.yaml"
	routerGolden    = "testdata/ha-router-collector.yaml"
)

// freeAddr returns a loopback address with a port nothing listens on now.
// A scaler that restarts must come back on the same address, so HA tests
// pick ports up front instead of using port 0.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// layerConfig writes the golden collector config with its OTLP receiver on
// recv and each named exporter's endpoint replaced; every other setting is
// the chart's.
func layerConfig(t *testing.T, golden, recv string, endpoints map[string]string) string {
	t.Helper()
	return layerConfigDirs(t, golden, recv, endpoints, nil)
}

// layerConfigDirs is layerConfig that also moves the files the config reads:
// every occurrence of a key of dirs (a mount path of the chart) becomes its
// value (a local directory).
func layerConfigDirs(t *testing.T, golden, recv string, endpoints, dirs map[string]string) string {
	t.Helper()
	raw, err := os.ReadFile(golden)
	require.NoError(t, err)
	for from, to := range dirs {
		require.Containsf(t, string(raw), from, "%s reads nothing under %s", golden, from)
		raw = []byte(strings.ReplaceAll(string(raw), from, to))
	}
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &cfg))
	grpcCfg := cfg["receivers"].(map[string]any)["otlp"].(map[string]any)["protocols"].(map[string]any)["grpc"].(map[string]any)
	grpcCfg["endpoint"] = recv
	exps := cfg["exporters"].(map[string]any)
	require.Len(t, exps, len(endpoints), "the test maps every exporter of %s", golden)
	for name, ep := range endpoints {
		e, ok := exps[name].(map[string]any)
		require.Truef(t, ok, "%s has exporter %s", golden, name)
		e["endpoint"] = ep
	}
	cfg["service"].(map[string]any)["telemetry"] = map[string]any{
		"metrics": map[string]any{"level": "none"},
		"logs":    map[string]any{"level": "warn"},
	}
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), filepath.Base(golden))
	require.NoError(t, os.WriteFile(path, out, 0o600))
	return path
}

// replica is one scaler process on fixed addresses.
type replica struct {
	name             string
	otlp, keda, http string
	args             []string
	p                *proc
	client           *kedaClient
}

func newReplica(t *testing.T, name string, extra ...string) *replica {
	t.Helper()
	r := &replica{name: name, otlp: freeAddr(t), keda: freeAddr(t), http: freeAddr(t)}
	r.args = append([]string{
		"--otlp-grpc-addr=" + r.otlp, "--scaler-addr=" + r.keda, "--http-addr=" + r.http,
		"--log-format=json", "--log-level=info", "--freshness=" + freshness.String(),
	}, extra...)
	return r
}

func (r *replica) start(t *testing.T, bin, procName string) {
	t.Helper()
	r.p = startProc(t, procName, bin, r.args, []string{"PATH=" + os.Getenv("PATH")})
	waitServing(t, r.p, 30*time.Second)
	if r.client == nil {
		r.client = dialKEDA(t, r.keda) // the client reconnects to a restarted replica
	}
}

// readyz returns the replica's /readyz status code (0 when unreachable).
func (r *replica) readyz() int {
	resp, err := http.Get("http://" + r.http + "/readyz")
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

func (r *replica) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	require.Eventuallyf(t, func() bool { return r.readyz() == http.StatusOK }, timeout, 50*time.Millisecond,
		"%s not ready within %s\n%s", r.name, timeout, r.p.tail(20))
}

// query evaluates q at ts through the replica's Prometheus API and returns
// the result's JSON, which two replicas holding the same samples return
// byte for byte.
func (r *replica) query(t *testing.T, q string, ts time.Time) string {
	t.Helper()
	u := fmt.Sprintf("http://%s/api/v1/query?query=%s&time=%s", r.http, url.QueryEscape(q),
		strconv.FormatFloat(float64(ts.UnixMilli())/1e3, 'f', 3, 64))
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "success", body.Status, q)
	return string(body.Data)
}

func ctx5s() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// TestHAFanout runs the chart's HA shape with real processes: two scaler
// replicas, each with the fan-out collector the chart renders for its pod,
// and KServe-like sidecars each exporting to one pod's collector (the
// Service balances a sidecar's connection to one pod). Every batch reaches
// both replicas, so both answer KEDA identically; a replica that is killed
// and restarted while the load changes answers Unavailable until it has
// fresh data and then matches the survivor at once, and the survivor
// answers correctly throughout.
func TestHAFanout(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an OpenTelemetry Collector and runs real processes")
	}
	colBin, scalerBin := tools(t)
	report := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		t.Log(line)
		fmt.Fprintln(os.Stderr, "E2E REPORT: "+line)
	}
	// After a restart each fan-out collector reconnects to the replica on
	// its own schedule: its exporter retries a queued batch at most 5 s
	// apart (max_interval), and its gRPC connection reconnects with gRPC's
	// backoff (1 s, growing 1.6x per failed attempt, ±20 %). The warm-up
	// clock starts at the first fresh sample, which the FIRST collector
	// delivers, so with a 2 s warm-up alone the replica was ready while the
	// second collector was still backing off and answered with half of the
	// load (2 of 5 runs). --ready-peers closes that: past its warm-up the
	// replica stays warming up until it holds as many fresh series as its
	// ready peer. Both replicas list both HTTP addresses, as the chart
	// renders one list for every pod (a replica ignores itself: it is not
	// ready while it polls). E2E_HA_NO_PEERS=1 leaves the flag out, to show
	// the hole it closes (README "Scaling out").
	const warmup = 2 * time.Second
	reps := []*replica{
		newReplica(t, "keda-otel-scaler-0", "--ready-after-fresh", "--warmup="+warmup.String()),
		newReplica(t, "keda-otel-scaler-1", "--ready-after-fresh", "--warmup="+warmup.String()),
	}
	peers := "--ready-peers=http://" + reps[0].http + ",http://" + reps[1].http
	withPeers := os.Getenv("E2E_HA_NO_PEERS") == ""
	if withPeers {
		for _, r := range reps {
			r.args = append(r.args, peers)
		}
	}
	for _, r := range reps {
		r.start(t, scalerBin, r.name)
	}
	// Before any data arrives neither replica is ready, and KEDA gets
	// Unavailable, not a value read from an empty store.
	const ns, deploy = "ns", "d"
	running := kserveRef(ns, deploy, "vllm:num_requests_running", "4", nil)
	for _, r := range reps {
		assert.Equal(t, http.StatusServiceUnavailable, r.readyz(), r.name)
		ctx, cancel := ctx5s()
		_, err := r.client.value(ctx, running)
		cancel()
		require.Equal(t, codes.Unavailable, status.Code(err), "%s answered from an empty store: %v", r.name, err)
	}

	endpoints := map[string]string{
		"otlp/keda-otel-scaler-0": reps[0].otlp,
		"otlp/keda-otel-scaler-1": reps[1].otlp,
	}
	var fanouts []*proc
	var fanoutAddrs []string
	for i := range reps {
		addr := freeAddr(t)
		cfg := layerConfig(t, fanoutGolden, addr, endpoints)
		fanouts = append(fanouts, startProc(t, fmt.Sprintf("fanout-%d", i), colBin, []string{"--config=file:" + cfg},
			[]string{"PATH=" + os.Getenv("PATH")}))
		fanoutAddrs = append(fanoutAddrs, addr)
	}
	sidecar := sidecarConfig(t, "none") // KServe's sidecar: uncompressed
	fixture := loadFixture(t)
	start := time.Now()
	pods := []*pod{
		startPod(t, colBin, sidecar, fanoutAddrs[0], ns, deploy, "d-1", fixture, 2),
		startPod(t, colBin, sidecar, fanoutAddrs[1], ns, deploy, "d-2", fixture, 3),
	}
	waitScraped(t, pods, 60*time.Second)
	for _, r := range reps {
		r.waitReady(t, 60*time.Second)
		r.client.waitValue(t, running, 2+3, 30*time.Second)
	}
	report("HA: both replicas ready with the full stream %s after the sidecars started", time.Since(start).Round(10*time.Millisecond))

	// Identical answers: the same queries at the same evaluation time
	// return the same bytes from both replicas, and KEDA's calls the same
	// value while the load holds still.
	at := time.Now().Add(-2 * scrapeInterval) // older than any batch in flight
	for _, q := range []string{
		fmt.Sprintf(`sum(vllm:num_requests_running{namespace=%q, deployment=%q})`, ns, deploy),
		`sum by (pod) (rate(vllm:prompt_tokens_total[10s]))`,
		`histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[10s])))`,
		`count({__name__=~"vllm:.+"})`,
	} {
		assert.Equal(t, reps[0].query(t, q, at), reps[1].query(t, q, at), "replicas disagree on %s at the same time", q)
	}
	for range 10 {
		var vals [2]float64
		for i, r := range reps {
			ctx, cancel := ctx5s()
			v, err := r.client.value(ctx, running)
			cancel()
			require.NoError(t, err)
			vals[i] = v
		}
		assert.InDelta(t, vals[0], vals[1], 0, "GetMetrics differs between replicas")
		time.Sleep(50 * time.Millisecond)
	}

	// A load change reaches both replicas within one fan-out delivery.
	pods[0].vllm.Set(7, 0, 0.1)
	var seen [2]time.Time
	var wg sync.WaitGroup
	for i, r := range reps {
		wg.Go(func() {
			r.client.waitValue(t, running, 7+3, 30*time.Second)
			seen[i] = time.Now()
		})
	}
	wg.Wait()
	skew := seen[0].Sub(seen[1])
	report("HA: a load change was visible on the two replicas %s apart (polled every 50 ms; scrape interval %s)",
		time.Duration(math.Abs(float64(skew))).Round(time.Millisecond), scrapeInterval)

	// Kill replica 1 (SIGKILL, like a node failure). The survivor keeps
	// answering, correctly, while the load changes.
	survivor, victim := reps[0], reps[1]
	valid := map[float64]bool{10: true}
	var validMu sync.Mutex
	setLoad := func(p *pod, running, total float64) {
		validMu.Lock()
		valid[total] = true
		validMu.Unlock()
		p.vllm.Set(running, 0, 0.1)
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	var watch sync.WaitGroup
	var survivorErrs, survivorBad []string
	var survivorCalls int
	watch.Go(func() {
		for watchCtx.Err() == nil {
			ctx, cancel := ctx5s()
			v, err := survivor.client.value(ctx, running)
			cancel()
			survivorCalls++
			validMu.Lock()
			switch {
			case err != nil:
				survivorErrs = append(survivorErrs, err.Error())
			case !valid[v]:
				survivorBad = append(survivorBad, strconv.FormatFloat(v, 'g', -1, 64))
			}
			validMu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	})
	victim.p.Kill()
	setLoad(pods[0], 4, 4+3)
	survivor.client.waitValue(t, running, 7, 30*time.Second)
	time.Sleep(2 * scrapeInterval) // the fan-out queues what the victim misses

	// Restart it on the same addresses. Until it reports ready it answers
	// Unavailable; meanwhile the load changes again; its first answers
	// once ready equal the survivor's.
	restarted := time.Now()
	victim.start(t, scalerBin, victim.name+"-restarted")
	setLoad(pods[1], 6, 4+6)
	var unavailable, early int
	for victim.readyz() != http.StatusOK {
		require.Less(t, time.Since(restarted), 60*time.Second, "restarted replica not ready\n%s", victim.p.tail(20))
		ctx, cancel := ctx5s()
		v, err := victim.client.value(ctx, running)
		cancel()
		if err != nil {
			require.Equal(t, codes.Unavailable, status.Code(err), "a warming replica answers Unavailable: %v", err)
			unavailable++
		} else {
			// Warm-up ended between the readiness check and the call.
			early++
			ctx, cancel := ctx5s()
			sv, serr := survivor.client.value(ctx, running)
			cancel()
			require.NoError(t, serr)
			require.InDelta(t, sv, v, 0, "restarted replica answered %v before it was ready; survivor %v", v, sv)
		}
		time.Sleep(50 * time.Millisecond)
	}
	readyAfter := time.Since(restarted)
	gate := "--ready-peers off (E2E_HA_NO_PEERS)"
	if withPeers {
		log := victim.p.log()
		clock := logTime(t, log, "Warm-up clock ended; waiting to catch up with ready peers")
		caught := logTime(t, log, "Caught up with the ready peers; warm-up ended")
		require.False(t, clock.IsZero() || caught.IsZero(), "the restarted replica caught up with its peer, not by timeout\n%s", victim.p.tail(20))
		gate = fmt.Sprintf("--ready-peers held it %s after its warm-up clock ended", caught.Sub(clock).Round(10*time.Millisecond))
	}
	for range 10 {
		ctx, cancel := ctx5s()
		v, err := victim.client.value(ctx, running)
		cancel()
		require.NoError(t, err, "a ready replica answers")
		ctx, cancel = ctx5s()
		sv, serr := survivor.client.value(ctx, running)
		cancel()
		require.NoError(t, serr)
		require.InDelta(t, sv, v, 0, "the restarted replica disagrees with the survivor once ready")
		time.Sleep(50 * time.Millisecond)
	}
	at = time.Now().Add(-2 * scrapeInterval)
	q := fmt.Sprintf(`sum(vllm:num_requests_running{namespace=%q, deployment=%q})`, ns, deploy)
	assert.Equal(t, survivor.query(t, q, at), victim.query(t, q, at))
	stopWatch()
	watch.Wait()
	assert.Empty(t, survivorErrs, "the survivor failed calls while its peer was down")
	assert.Empty(t, survivorBad, "the survivor answered values of no load state")
	assert.Greater(t, survivorCalls, 20)
	assert.Positive(t, unavailable, "the restarted replica was asked while warming up")
	report("HA: restarted replica ready %s after its start (--warmup %s from its first fresh sample; %s); %d calls answered Unavailable before, %d early answers matched; survivor answered %d calls, all correct",
		readyAfter.Round(10*time.Millisecond), warmup, gate, unavailable, early, survivorCalls)

	for _, f := range fanouts {
		assert.False(t, f.exited(), "fan-out collector %s still running", f.name)
	}
	for _, r := range reps {
		assert.NotContains(t, r.p.log(), `"level":"ERROR"`, "%s logged errors:\n%s", r.name, r.p.tail(20))
	}
}

// logTime returns the time of the first JSON log line with message msg,
// or the zero time.
func logTime(t *testing.T, log, msg string) time.Time {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		var rec struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg {
			return rec.Time
		}
	}
	return time.Time{}
}

// TestShardRouter runs the chart's shard router (router.enabled) with real
// processes: sidecars of three namespaces export to the router, which sends
// team-a to one scaler release and team-b to another and drops the
// namespace no shard names. Each scaler answers only for its own.
func TestShardRouter(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an OpenTelemetry Collector and runs real processes")
	}
	colBin, scalerBin := tools(t)
	shardA, shardB := newReplica(t, "keda-otel-scaler-team-a", "--warmup=0"), newReplica(t, "keda-otel-scaler-team-b", "--warmup=0")
	for _, r := range []*replica{shardA, shardB} {
		r.start(t, scalerBin, r.name)
	}
	routerAddr := freeAddr(t)
	cfg := layerConfig(t, routerGolden, routerAddr, map[string]string{"otlp/team-a": shardA.otlp, "otlp/team-b": shardB.otlp})
	router := startProc(t, "router", colBin, []string{"--config=file:" + cfg}, []string{"PATH=" + os.Getenv("PATH")})

	sidecar := sidecarConfig(t, "none")
	fixture := loadFixture(t)
	pods := []*pod{
		startPod(t, colBin, sidecar, routerAddr, "team-a", "d", "a-1", fixture, 2),
		startPod(t, colBin, sidecar, routerAddr, "team-b-batch", "d", "b-1", fixture, 4),
		startPod(t, colBin, sidecar, routerAddr, "team-c", "d", "c-1", fixture, 8),
	}
	waitScraped(t, pods, 60*time.Second)
	strict := map[string]string{"ignoreNullValues": "false"}
	shardA.client.waitValue(t, kserveRef("team-a", "d", "vllm:num_requests_running", "4", strict), 2, 60*time.Second)
	shardB.client.waitValue(t, kserveRef("team-b-batch", "d", "vllm:num_requests_running", "4", strict), 4, 60*time.Second)
	time.Sleep(2 * scrapeInterval) // every pod has exported several times

	for _, tc := range []struct {
		r     *replica
		own   string
		other []string
	}{
		{shardA, "team-a", []string{"team-b-batch", "team-c"}},
		{shardB, "team-b-batch", []string{"team-a", "team-c"}},
	} {
		var res struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		}
		require.NoError(t, json.Unmarshal([]byte(tc.r.query(t, `count by (namespace) ({__name__=~".+"})`, time.Now())), &res))
		var nss []string
		for _, s := range res.Result {
			nss = append(nss, s.Metric["namespace"])
		}
		assert.Equal(t, []string{tc.own}, nss, "%s holds only its shard's namespaces", tc.r.name)
		for _, other := range tc.other {
			ctx, cancel := ctx5s()
			_, err := tc.r.client.value(ctx, kserveRef(other, "d", "vllm:num_requests_running", "4", strict))
			cancel()
			assert.Equal(t, codes.NotFound, status.Code(err), "%s answers for %s: %v", tc.r.name, other, err)
		}
	}
	assert.False(t, router.exited())
	assert.NotContains(t, slices.Concat([]byte(shardA.p.log()), []byte(shardB.p.log())), []byte(`"level":"ERROR"`))
}

// TestHACollectorConfigsValidate runs the collector's validate command on
// the chart's fan-out and router configs exactly as rendered.
func TestHACollectorConfigsValidate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an OpenTelemetry Collector")
	}
	colBin, _ := tools(t)
	for _, f := range []string{fanoutGolden, fanoutTLSGolden, routerGolden} {
		t.Run(filepath.Base(f), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, colBin, "validate", "--config=file:"+f).CombinedOutput()
			require.NoError(t, err, "collector validate:\n%s", out)
		})
	}
	t.Run("a broken filter condition is rejected", func(t *testing.T) {
		raw, err := os.ReadFile(routerGolden)
		require.NoError(t, err)
		var cfg map[string]any
		require.NoError(t, yaml.Unmarshal(raw, &cfg))
		f := cfg["processors"].(map[string]any)["filter/team-a"].(map[string]any)
		f["metrics"] = map[string]any{"resource": []any{`not (attributes["k8s.namespace.name"] == "team-a"`}}
		out, err := yaml.Marshal(cfg)
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), "broken.yaml")
		require.NoError(t, os.WriteFile(path, out, 0o600))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		b, err := exec.CommandContext(ctx, colBin, "validate", "--config=file:"+path).CombinedOutput()
		require.Error(t, err, "validate accepted a broken condition:\n%s", b)
	})
}
