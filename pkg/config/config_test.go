package config

import (
	"bytes"
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultIsValid(t *testing.T) {
	require.NoError(t, Default().Validate())
}

func TestLoadPrecedence(t *testing.T) {
	env := map[string]string{
		"KOS_OTLP_GRPC_ADDR": "127.0.0.1:1111",
		"KOS_SCALER_ADDR":    "127.0.0.1:2222",
		"KOS_RETENTION":      "20m",
		"KOS_SERIES_TTL":     "15m",
	}
	c, err := Load("t", []string{"--scaler-addr", "127.0.0.1:0", "--freshness", "1m", "--max-series-per-metric", "5000"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:1111", c.Server.OTLPGRPCAddr, "env applies")
	assert.Equal(t, "127.0.0.1:0", c.Server.ScalerAddr, "flag wins over env")
	assert.Equal(t, 20*time.Minute, c.Store.Retention)
	assert.Equal(t, time.Minute, c.Store.Freshness)
	assert.Equal(t, ":8080", c.Server.HTTPAddr, "default kept")
	assert.Equal(t, 15*time.Minute, c.Store.SeriesTTL)
	assert.Equal(t, 5000, c.Store.MaxSeriesPerMetric)
	assert.Equal(t, 1_000_000, c.Store.MaxSeries, "default kept")
}

func TestLoadReportsEveryProblem(t *testing.T) {
	_, err := Load("t", nil, func(k string) string {
		return map[string]string{"KOS_RETENTION": "soon"}[k]
	}, &bytes.Buffer{})
	require.ErrorContains(t, err, "KOS_RETENTION")

	_, err = Load("t", []string{"--http-addr", "nope", "--log-format", "xml", "--max-series", "0", "--max-series-per-metric", "-1"}, func(string) string { return "" }, &bytes.Buffer{})
	require.Error(t, err)
	for _, want := range []string{"--http-addr", "--log-format", "--max-series", "--max-series-per-metric"} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestHelpListsEveryFlagWithUnit(t *testing.T) {
	var out bytes.Buffer
	_, err := Load("t", []string{"--help"}, func(string) string { return "" }, &out)
	require.ErrorIs(t, err, flag.ErrHelp)
	c := Default()
	NewFlagSet("t", &c, &bytes.Buffer{}).VisitAll(func(f *flag.Flag) {
		assert.Contains(t, out.String(), "-"+f.Name)
		name, _ := flag.UnquoteUsage(f)
		assert.NotEmpty(t, name, "flag %s must name its unit in backquotes", f.Name)
	})
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"30s", 30 * time.Second, false},
		{"2m", 2 * time.Minute, false},
		{"1m30s", 90 * time.Second, false},
		{"500ms", 500 * time.Millisecond, false},
		{"1.5s", 1500 * time.Millisecond, false},
		{"45", 45 * time.Second, false},
		{"0", 0, false},
		{"5x", 0, true},
		{"-1s", 0, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDuration(tc.in)
			if tc.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // -1: refused
	}{
		{"1024", 1024},
		{"64MiB", 64 << 20},
		{"1GiB", 1 << 30},
		{"512KiB", 512 << 10},
		{"0", 0},
		{"0MiB", 0},
		{"999999999999999999", 999_999_999_999_999_999},
		{"999999999999999KiB", 999_999_999_999_999 << 10},
		{"999999999999MiB", 999_999_999_999 << 20},
		{"999999999GiB", 999_999_999 << 30},
		// One digit more than each suffix allows.
		{"1000000000000000000", -1},
		{"1000000000000000KiB", -1},
		{"1000000000000MiB", -1},
		{"1000000000GiB", -1},
		// Signs, spaces, leading zeros, fractions, other units and cases.
		{"+5", -1},
		{"-1", -1},
		{"-0", -1},
		{" 5", -1},
		{"5 ", -1},
		{"5 MiB", -1},
		{"064MiB", -1},
		{"00", -1},
		{"1.5MiB", -1},
		{"5B", -1},
		{"5TiB", -1},
		{"5MB", -1},
		{"5mib", -1},
		{"MiB", -1},
		{"", -1},
		{"lots", -1},
		{"5KiBKiB", -1},
	} {
		got, err := ParseSize(tc.in)
		if tc.want < 0 {
			require.Error(t, err, "%q", tc.in)
			continue
		}
		if assert.NoError(t, err, "%q", tc.in) {
			assert.Equal(t, tc.want, got, "%q", tc.in)
		}
	}
}

func TestEnvName(t *testing.T) {
	assert.Equal(t, "KOS_OTLP_GRPC_ADDR", EnvName("otlp-grpc-addr"))
}

func TestReceiverFlags(t *testing.T) {
	env := map[string]string{"KOS_OTLP_DELTA": "ingest", "KOS_MAX_LABEL_VALUE_LENGTH": "8192"}
	c, err := Load("t", []string{"--otlp-promote-resource-attributes", "k8s.node.name, host.name,", "--max-labels-per-series", "32"},
		func(k string) string { return env[k] }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "ingest", c.Receiver.Delta)
	assert.Equal(t, []string{"k8s.node.name", "host.name"}, c.Receiver.PromoteResourceAttributes)
	assert.Equal(t, 32, c.Receiver.MaxLabelsPerSeries)
	assert.Equal(t, 8192, c.Receiver.MaxLabelValueLength)
	assert.Equal(t, 1024, c.Receiver.MaxLabelNameLength, "default kept")

	_, err = Load("t", []string{"--otlp-delta", "keep", "--max-metric-name-length", "0"}, func(string) string { return "" }, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--otlp-delta")
	assert.Contains(t, err.Error(), "--max-metric-name-length")
}

func TestInFlightBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  string
		want int64
		err  bool
	}{
		{name: "default: 2 x recv size, resolved by the receiver", want: 0},
		{name: "flag", args: []string{"--otlp-max-inflight-bytes", "512MiB"}, want: 512 << 20},
		{name: "env twin", env: "256MiB", want: 256 << 20},
		{name: "equal to the recv size", args: []string{"--otlp-max-recv-size", "16MiB", "--otlp-max-inflight-bytes", "16MiB"}, want: 16 << 20},
		{name: "below the recv size", args: []string{"--otlp-max-inflight-bytes", "1MiB"}, err: true},
		{name: "negative", args: []string{"--otlp-max-inflight-bytes", "-1"}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load("t", tc.args, func(k string) string {
				return map[string]string{"KOS_OTLP_MAX_INFLIGHT_BYTES": tc.env}[k]
			}, &bytes.Buffer{})
			if tc.err {
				require.ErrorContains(t, err, "otlp-max-inflight-bytes")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.Receiver.MaxInFlightBytes)
		})
	}
}

func TestTriggerCacheFlags(t *testing.T) {
	c, err := Load("t", nil, func(string) string { return "" }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, 10*time.Minute, c.Scaler.TriggerTTL)
	assert.Equal(t, 10_000, c.Scaler.MaxTriggers)
	assert.Equal(t, int64(2<<20), c.Scaler.MaxTriggerBytes)
	assert.Equal(t, int64(64<<20), c.Scaler.TriggerCacheBytes)

	env := map[string]string{"KOS_TRIGGER_CACHE_BYTES": "16MiB", "KOS_TRIGGER_TTL": "5m"}
	c, err = Load("t", []string{"--max-trigger-bytes", "512KiB", "--max-triggers", "500"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, 5*time.Minute, c.Scaler.TriggerTTL)
	assert.Equal(t, 500, c.Scaler.MaxTriggers)
	assert.Equal(t, int64(512<<10), c.Scaler.MaxTriggerBytes)
	assert.Equal(t, int64(16<<20), c.Scaler.TriggerCacheBytes)

	_, err = Load("t", []string{"--trigger-ttl", "0", "--max-triggers", "0", "--max-trigger-bytes", "4MiB", "--trigger-cache-bytes", "1MiB"},
		func(string) string { return "" }, &bytes.Buffer{})
	require.Error(t, err)
	for _, want := range []string{"--trigger-ttl", "--max-triggers", "--trigger-cache-bytes 1048576 must be >= --max-trigger-bytes 4194304"} {
		assert.Contains(t, err.Error(), want)
	}
	_, err = Load("t", []string{"--max-trigger-bytes", "0"}, func(string) string { return "" }, &bytes.Buffer{})
	assert.ErrorContains(t, err, "--max-trigger-bytes 0 must be > 0")
}

func TestStateDir(t *testing.T) {
	for _, tc := range []struct {
		name, flagVal, env, want string
		err                      bool
	}{
		{name: "default off"},
		{name: "absolute", flagVal: "/var/lib/kos", want: "/var/lib/kos"},
		{name: "relative", flagVal: "state", want: "state"},
		{name: "env twin", env: "/data", want: "/data"},
		{name: "nul", flagVal: "a\x00b", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			if tc.flagVal != "" {
				args = []string{"--state-dir", tc.flagVal}
			}
			c, err := Load("t", args, func(k string) string {
				return map[string]string{"KOS_STATE_DIR": tc.env}[k]
			}, &bytes.Buffer{})
			if tc.err {
				require.ErrorContains(t, err, "--state-dir")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.Server.StateDir)
		})
	}
}

func TestSampleBoundsAndCheckpointFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, c Config) {
			assert.Equal(t, 1024, c.Store.MaxSamplesPerSeries)
			assert.Equal(t, int64(512<<20), c.Store.MaxSampleMemory)
			assert.Equal(t, time.Minute, c.Server.CheckpointInterval)
		}},
		{name: "flags", args: []string{"--max-samples-per-series", "64", "--max-sample-memory", "1GiB", "--checkpoint-interval", "30s"}, check: func(t *testing.T, c Config) {
			assert.Equal(t, 64, c.Store.MaxSamplesPerSeries)
			assert.Equal(t, int64(1<<30), c.Store.MaxSampleMemory)
			assert.Equal(t, 30*time.Second, c.Server.CheckpointInterval)
		}},
		{name: "env twins", env: map[string]string{"KOS_MAX_SAMPLES_PER_SERIES": "4095", "KOS_MAX_SAMPLE_MEMORY": "64MiB", "KOS_CHECKPOINT_INTERVAL": "0"}, check: func(t *testing.T, c Config) {
			assert.Equal(t, 4095, c.Store.MaxSamplesPerSeries)
			assert.Equal(t, int64(64<<20), c.Store.MaxSampleMemory)
			assert.Zero(t, c.Server.CheckpointInterval, "0: only on shutdown")
		}},
		{name: "cap too small", args: []string{"--max-samples-per-series", "3"}, wantErr: "--max-samples-per-series"},
		{name: "cap too large", args: []string{"--max-samples-per-series", "4096"}, wantErr: "--max-samples-per-series"},
		{name: "no sample memory", args: []string{"--max-sample-memory", "0"}, wantErr: "--max-sample-memory"},
		{name: "checkpoint too often", args: []string{"--checkpoint-interval", "10ms"}, wantErr: "--checkpoint-interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load("t", tc.args, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			tc.check(t, c)
		})
	}
}

func TestQueryFlags(t *testing.T) {
	env := map[string]string{"KOS_QUERY_MAX_SAMPLES": "1000000"}
	c, err := Load("t", []string{"--query-max-concurrency", "2", "--query-timeout", "30s"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, Query{MaxLabelBytes: 8 << 20, MaxConcurrency: 2, MaxSamples: 1_000_000, Timeout: 30 * time.Second}, c.Query)
	assert.Equal(t, Query{MaxLabelBytes: 8 << 20, MaxConcurrency: 4, MaxSamples: 5_000_000, Timeout: 2 * time.Minute}, Default().Query)

	_, err = Load("t", []string{"--query-max-concurrency", "0", "--query-max-samples", "-1", "--query-timeout", "0"}, func(string) string { return "" }, &bytes.Buffer{})
	require.Error(t, err)
	for _, want := range []string{"--query-max-concurrency", "--query-max-samples", "--query-timeout"} {
		assert.Contains(t, err.Error(), want)
	}
}

// TestMaxConnections: each listener's connection cap has a flag and an env
// twin, and must be between 1 and MaxConnectionsLimit: 0 would read as
// "unbounded", which the caps exist to rule out.
func TestMaxConnections(t *testing.T) {
	env := map[string]string{"KOS_SCALER_MAX_CONNECTIONS": "16"}
	c, err := Load("t", []string{"--otlp-max-connections", "4096"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, 4096, c.Server.OTLPMaxConnections)
	assert.Equal(t, 16, c.Server.ScalerMaxConnections)
	assert.Equal(t, 1024, c.Server.HTTPMaxConnections, "default kept")

	_, err = Load("t", []string{"--otlp-max-connections", "0", "--scaler-max-connections", "-1", "--http-max-connections", "2000000"},
		func(string) string { return "" }, &bytes.Buffer{})
	require.Error(t, err)
	for _, want := range []string{"--otlp-max-connections 0", "--scaler-max-connections -1", "--http-max-connections 2000000"} {
		assert.Contains(t, err.Error(), want)
	}
}

// TestReadyPeersFlags: --ready-peers and its timeout and TLS flags, with
// env twins; the list needs --ready-after-fresh and well-formed http(s)
// base URLs.
func TestReadyPeersFlags(t *testing.T) {
	env := map[string]string{"KOS_READY_PEERS": "http://a-0.h:8080, https://a-1.h:8080/", "KOS_READY_AFTER_FRESH": "true"}
	args := []string{
		"--ready-peers-timeout", "1m", "--ready-peers-ca-file", "/ca", "--ready-peers-cert-file", "/c",
		"--ready-peers-key-file", "/k", "--ready-peers-server-name", "kos.ns.svc",
	}
	c, err := Load("t", args, func(k string) string { return env[k] }, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, []string{"http://a-0.h:8080", "https://a-1.h:8080/"}, c.Scaler.ReadyPeers)
	assert.Equal(t, time.Minute, c.Scaler.ReadyPeersTimeout)
	assert.Equal(t, PeerTLS{CAFile: "/ca", CertFile: "/c", KeyFile: "/k", ServerName: "kos.ns.svc"}, c.Scaler.ReadyPeersTLS)
	assert.Equal(t, 3*time.Minute, Default().Scaler.ReadyPeersTimeout)
	assert.Empty(t, Default().Scaler.ReadyPeers)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ready-peers", "http://a:1"}, "--ready-peers needs --ready-after-fresh"},
		{[]string{"--ready-after-fresh", "--ready-peers", "a:8080"}, `--ready-peers "a:8080"`},
		{[]string{"--ready-after-fresh", "--ready-peers", "ftp://a:1"}, "want http://host:port"},
		{[]string{"--ready-after-fresh", "--ready-peers", "http://a:1/?x=1"}, "want http://host:port"},
		{[]string{"--ready-after-fresh", "--ready-peers", "http://user@a:1"}, "want http://host:port"},
		{[]string{"--ready-after-fresh", "--ready-peers", "http://"}, "want http://host:port"},
		{[]string{"--ready-peers-timeout", "0"}, "--ready-peers-timeout 0s must be > 0"},
		{[]string{"--ready-peers-cert-file", "/c"}, "--ready-peers-cert-file and --ready-peers-key-file must be set together"},
		{[]string{"--ready-peers-ca-file", "a\x00b"}, "not a path"},
	} {
		_, err := Load("t", tc.args, func(string) string { return "" }, &bytes.Buffer{})
		require.Error(t, err, "%q", tc.args)
		assert.Contains(t, err.Error(), tc.want, "%q", tc.args)
	}
	many := "http://a:1"
	for range MaxReadyPeers {
		many += ",http://a:1"
	}
	_, err = Load("t", []string{"--ready-after-fresh", "--ready-peers", many}, func(string) string { return "" }, &bytes.Buffer{})
	require.ErrorContains(t, err, "at most 64")
}
