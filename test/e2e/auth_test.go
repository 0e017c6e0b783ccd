package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// exampleTLSCollectorConfig is the collector config of examples/tls.
const exampleTLSCollectorConfig = "../../examples/tls/collector-exporters.yaml"

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into dir as ca.crt, server.crt/server.key and
// tls.crt/tls.key (the names examples/tls/collector-exporters.yaml reads).
func testPKI(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	write := func(name string, typ string, der []byte) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	}
	write("ca.crt", "CERTIFICATE", caDER)
	for i, leaf := range []struct {
		name  string
		usage x509.ExtKeyUsage
	}{{"server", x509.ExtKeyUsageServerAuth}, {"tls", x509.ExtKeyUsageClientAuth}} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: leaf.name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{leaf.usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		kder, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		write(leaf.name+".crt", "CERTIFICATE", der)
		write(leaf.name+".key", "EC PRIVATE KEY", kder)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool
}

// tlsCollectorConfig is examples/tls/collector-exporters.yaml made
// runnable (runnableConfig) and exporting through exporter.
func tlsCollectorConfig(t *testing.T, exporter string) string {
	t.Helper()
	raw, err := os.ReadFile(exampleTLSCollectorConfig)
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &cfg))
	pipe := cfg["service"].(map[string]any)["pipelines"].(map[string]any)["metrics"].(map[string]any)
	require.Equal(t, []any{"otlp"}, pipe["exporters"])
	pipe["exporters"] = []any{exporter}
	return runnableConfig(t, cfg, "")
}

// TestCollectorBearerTokenTLS is issue #13 item 3 with the real collector:
// the scaler serves OTLP/gRPC and OTLP/HTTP over mutual TLS and requires a
// bearer token (--otlp-bearer-token-file); collectors run
// examples/tls/collector-exporters.yaml, with its bearertokenauth extension
// on the otlp and on the otlphttp exporter. Collectors with the right
// token are stored; collectors with a wrong one are refused (counted as
// invalid per transport) and nothing of theirs is stored.
func TestCollectorBearerTokenTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an OpenTelemetry Collector and runs real processes")
	}
	colBin, scalerBin := tools(t)
	dir := t.TempDir()
	roots := testPKI(t, dir)
	tokens := filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("old-token\ne2e-token\n"), 0o600))
	good, bad := filepath.Join(dir, "good-token"), filepath.Join(dir, "bad-token")
	require.NoError(t, os.WriteFile(good, []byte("e2e-token\n"), 0o600))
	require.NoError(t, os.WriteFile(bad, []byte("e2e-token-guess\n"), 0o600))

	srv := startProc(t, "scaler", scalerBin, []string{
		"--otlp-grpc-addr=127.0.0.1:0", "--scaler-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0",
		"--log-format=json", "--warmup=0",
		"--otlp-tls-cert-file=" + filepath.Join(dir, "server.crt"), "--otlp-tls-key-file=" + filepath.Join(dir, "server.key"),
		"--otlp-tls-client-ca-file=" + filepath.Join(dir, "ca.crt"),
		"--http-tls-cert-file=" + filepath.Join(dir, "server.crt"), "--http-tls-key-file=" + filepath.Join(dir, "server.key"),
		"--http-tls-client-ca-file=" + filepath.Join(dir, "ca.crt"),
		"--otlp-bearer-token-file=" + tokens,
	}, []string{"PATH=" + os.Getenv("PATH")})
	addrs := waitServing(t, srv, 30*time.Second)

	fixture := loadFixture(t)
	grpcCfg, httpCfg := tlsCollectorConfig(t, "otlp"), tlsCollectorConfig(t, "otlphttp")
	type collector struct {
		name, cfg, token string
		stored           bool
	}
	cols := []collector{
		{"grpc-good", grpcCfg, good, true},
		{"http-good", httpCfg, good, true},
		{"grpc-bad", grpcCfg, bad, false},
		{"http-bad", httpCfg, bad, false},
	}
	var pods []*pod
	for _, c := range cols {
		f := startFakeVLLM(t, fixture, 7, 0, 0.1)
		env := []string{
			"PATH=" + os.Getenv("PATH"),
			"HOME=" + os.Getenv("HOME"),
			"SCRAPE_INTERVAL=" + scrapeInterval.String(),
			"VLLM_METRICS_TARGET=" + f.Addr(),
			"KEDA_OTEL_SCALER_ENDPOINT=" + addrs.OTLPGRPC,
			"KEDA_OTEL_SCALER_HTTP_ENDPOINT=https://" + addrs.HTTP,
			"OTLP_TLS_DIR=" + dir,
			"OTLP_TOKEN_FILE=" + c.token,
			"OTEL_RESOURCE_ATTRIBUTES=k8s.namespace.name=ns,k8s.deployment.name=auth,k8s.pod.name=" + c.name,
		}
		pods = append(pods, &pod{name: c.name, vllm: f, col: startProc(t, "collector-"+c.name, colBin, []string{"--config=file:" + c.cfg}, env)})
	}
	waitScraped(t, pods, 60*time.Second)

	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	require.NoError(t, err)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	get := func(path string) string {
		resp, err := client.Get("https://" + addrs.HTTP + path)
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
		return string(b)
	}
	series := func(pod string) string {
		return get("/api/v1/series?match[]=" + url.QueryEscape(fmt.Sprintf(`vllm:num_requests_running{pod=%q}`, pod)))
	}
	authCount := func(transport, outcome string) float64 {
		m := regexp.MustCompile(fmt.Sprintf(`keda_otel_scaler_receiver_auth_total\{outcome="%s",transport="%s"\} ([0-9.e+]+)`, outcome, transport)).
			FindStringSubmatch(get("/metrics"))
		require.NotNil(t, m, "auth counter %s %s", transport, outcome)
		v, err := strconv.ParseFloat(m[1], 64)
		require.NoError(t, err)
		return v
	}

	// The good collectors' points arrive over both transports, and both
	// bad collectors have been refused at least twice each (they retry).
	require.Eventually(t, func() bool {
		return strings.Contains(series("grpc-good"), `"pod":"grpc-good"`) && strings.Contains(series("http-good"), `"pod":"http-good"`) &&
			authCount("grpc", "invalid") >= 2 && authCount("http", "invalid") >= 2
	}, 60*time.Second, 200*time.Millisecond, "scaler log:\n%s", srv.tail(20))
	for _, c := range cols {
		if !c.stored {
			assert.JSONEq(t, `{"status":"success","data":[]}`, series(c.name), "%s: nothing stored", c.name)
		}
	}
	assert.Positive(t, authCount("grpc", "accepted"))
	assert.Positive(t, authCount("http", "accepted"))
	assert.Zero(t, authCount("grpc", "missing"), "the bearertokenauth extension always sends its token")
	assert.Zero(t, authCount("http", "missing"))
	for _, p := range pods {
		assert.False(t, p.col.exited(), "collector %s is still running", p.name)
	}
}
