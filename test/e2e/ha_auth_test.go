package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// haPKI is the key material of TestHAFanoutSecured, laid out as the chart
// mounts it: dirs maps each mount path of ci/ha-tls-values.yaml to a local
// directory.
type haPKI struct {
	tlsOTLP    string // tls.otlp Secret: tls.crt/tls.key (server), ca.crt
	auth       string // otlpAuth Secret: tokens
	fanClient  string // ha.exporterTLS.clientSecretName: tls.crt/tls.key (client)
	sender     string // a sidecar's mount (examples/tls): ca.crt, tls.crt/tls.key (client)
	goodToken  string // file with a token of the tokens file
	wrongToken string // file with a token that is not
	dirs       map[string]string
}

// newHAPKI issues a CA, the replicas' OTLP server certificate (valid for
// the Service name the fan-out exporters verify and for 127.0.0.1, which
// the sidecars dial here), and client certificates for the fan-out and for
// the sidecars.
func newHAPKI(t *testing.T) haPKI {
	t.Helper()
	root := t.TempDir()
	p := haPKI{
		tlsOTLP: filepath.Join(root, "tls-otlp"), auth: filepath.Join(root, "otlp-auth"),
		fanClient: filepath.Join(root, "fanout-client"), sender: filepath.Join(root, "sender"),
	}
	for _, d := range []string{p.tlsOTLP, p.auth, p.fanClient, p.sender} {
		require.NoError(t, os.MkdirAll(d, 0o700))
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e HA CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	write := func(path, typ string, der []byte) {
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	}
	issue := func(dir string, serial int64, usage x509.ExtKeyUsage, dns []string, ips []net.IP) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: filepath.Base(dir)},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: dns, IPAddresses: ips,
		}, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		kder, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		write(filepath.Join(dir, "tls.crt"), "CERTIFICATE", der)
		write(filepath.Join(dir, "tls.key"), "EC PRIVATE KEY", kder)
		write(filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER)
	}
	issue(p.tlsOTLP, 2, x509.ExtKeyUsageServerAuth, []string{"keda-otel-scaler.keda.svc"}, []net.IP{net.ParseIP("127.0.0.1")})
	issue(p.fanClient, 3, x509.ExtKeyUsageClientAuth, nil, nil)
	issue(p.sender, 4, x509.ExtKeyUsageClientAuth, nil, nil)
	// Two tokens, as during a rotation: the fan-out forwards the first,
	// the sidecars send the second; the replicas accept both.
	require.NoError(t, os.WriteFile(filepath.Join(p.auth, "tokens"), []byte("fanout-token\nsidecar-token\n"), 0o600))
	p.goodToken, p.wrongToken = filepath.Join(root, "good-token"), filepath.Join(root, "wrong-token")
	require.NoError(t, os.WriteFile(p.goodToken, []byte("sidecar-token\n"), 0o600))
	require.NoError(t, os.WriteFile(p.wrongToken, []byte("sidecar-token-guess\n"), 0o600))
	p.dirs = map[string]string{
		"/etc/keda-otel-scaler/tls-otlp":          p.tlsOTLP,
		"/etc/keda-otel-scaler/otlp-auth":         p.auth,
		"/etc/keda-otel-scaler/fanout-client-tls": p.fanClient,
	}
	return p
}

// TestHAFanoutSecured runs the chart's HA shape with ci/ha-tls-values.yaml:
// both replicas serve OTLP over mutual TLS with bearer tokens, and each
// pod's fan-out collector runs the config the chart renders, with its
// Secrets' files. A sidecar with a client certificate and a valid token
// reaches both replicas through one pod's fan-out; a sidecar with a wrong
// token is refused by the fan-out (bearertokenauth's error, not the
// scaler's) and stored nowhere; a sender that dials a replica's own port
// with a wrong token is refused by the replica. So the fan-out accepts
// only what the scaler would.
func TestHAFanoutSecured(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an OpenTelemetry Collector and runs real processes")
	}
	colBin, scalerBin := tools(t)
	pki := newHAPKI(t)
	secure := []string{
		"--ready-after-fresh", "--warmup=1s",
		"--otlp-tls-cert-file=" + filepath.Join(pki.tlsOTLP, "tls.crt"), "--otlp-tls-key-file=" + filepath.Join(pki.tlsOTLP, "tls.key"),
		"--otlp-tls-client-ca-file=" + filepath.Join(pki.tlsOTLP, "ca.crt"),
		"--otlp-bearer-token-file=" + filepath.Join(pki.auth, "tokens"),
	}
	reps := []*replica{newReplica(t, "keda-otel-scaler-0", secure...), newReplica(t, "keda-otel-scaler-1", secure...)}
	// As the chart renders ha.readyPeers for ci/ha-tls-values.yaml (the HTTP
	// listener is plaintext there).
	for _, r := range reps {
		r.args = append(r.args, "--ready-peers=http://"+reps[0].http+",http://"+reps[1].http)
	}
	for _, r := range reps {
		r.start(t, scalerBin, r.name)
	}
	endpoints := map[string]string{"otlp/keda-otel-scaler-0": reps[0].otlp, "otlp/keda-otel-scaler-1": reps[1].otlp}
	var fanoutAddrs []string
	var fanouts []*proc
	for i := range reps {
		addr := freeAddr(t)
		cfg := layerConfigDirs(t, fanoutTLSGolden, addr, endpoints, pki.dirs)
		fanouts = append(fanouts, startProc(t, fmt.Sprintf("fanout-%d", i), colBin, []string{"--config=file:" + cfg}, []string{"PATH=" + os.Getenv("PATH")}))
		fanoutAddrs = append(fanoutAddrs, addr)
	}

	// Sidecars run examples/tls/collector-exporters.yaml: TLS with a client
	// certificate and the bearertokenauth extension.
	sidecar := tlsCollectorConfig(t, "otlp")
	fixture := loadFixture(t)
	type sender struct {
		name, deploy, addr, token string
		running                   float64
	}
	senders := []sender{
		{"good", "good", fanoutAddrs[0], pki.goodToken, 3},
		{"wrong-token", "bad", fanoutAddrs[1], pki.wrongToken, 5},
		{"direct-wrong-token", "direct", reps[0].otlp, pki.wrongToken, 7},
	}
	var pods []*pod
	for _, s := range senders {
		f := startFakeVLLM(t, fixture, s.running, 0, 0.1)
		env := []string{
			"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
			"SCRAPE_INTERVAL=" + scrapeInterval.String(),
			"VLLM_METRICS_TARGET=" + f.Addr(),
			"KEDA_OTEL_SCALER_ENDPOINT=" + s.addr,
			"OTLP_TLS_DIR=" + pki.sender,
			"OTLP_TOKEN_FILE=" + s.token,
			"OTEL_RESOURCE_ATTRIBUTES=k8s.namespace.name=ns,k8s.deployment.name=" + s.deploy + ",k8s.pod.name=" + s.name,
		}
		pods = append(pods, &pod{name: s.name, vllm: f, col: startProc(t, "collector-"+s.name, colBin, []string{"--config=file:" + sidecar}, env)})
	}
	waitScraped(t, pods, 60*time.Second)

	good := kserveRef("ns", "good", "vllm:num_requests_running", "4", nil)
	for _, r := range reps {
		r.waitReady(t, 60*time.Second)
		r.client.waitValue(t, good, 3, 30*time.Second)
	}
	// The refused senders have tried and been told why: the fan-out's
	// bearertokenauth refuses the wrong token, the replica's own check the
	// direct one.
	require.Eventually(t, func() bool {
		return regexp.MustCompile(`provided authorization does not match`).MatchString(pods[1].col.log()) &&
			regexp.MustCompile(`missing or invalid bearer token`).MatchString(pods[2].col.log())
	}, 60*time.Second, 200*time.Millisecond, "wrong-token sender:\n%s\ndirect sender:\n%s", pods[1].col.tail(10), pods[2].col.tail(10))

	at := time.Now().Add(-2 * scrapeInterval)
	for _, r := range reps {
		assert.JSONEq(t, `{"resultType":"vector","result":[]}`, r.query(t, `count by (deployment) (vllm:num_requests_running{deployment!="good"})`, time.Now()),
			"%s stored points of a refused sender", r.name)
		assert.Zero(t, authCounter(t, r, "missing"), "%s: the fan-out always sends its token", r.name)
		assert.Positive(t, authCounter(t, r, "accepted"), "%s: the fan-out's token is accepted", r.name)
	}
	assert.Positive(t, authCounter(t, reps[0], "invalid"), "the replica refused the direct sender itself")
	q := `sum by (pod) (vllm:num_requests_running)`
	assert.Equal(t, reps[0].query(t, q, at), reps[1].query(t, q, at), "both replicas hold the same samples")
	for _, f := range fanouts {
		assert.False(t, f.exited(), "fan-out collector %s still running", f.name)
	}
	assert.NotContains(t, pods[0].col.log(), "Exporting failed", "the good sender's exports all succeeded")
}

// authCounter reads keda_otel_scaler_receiver_auth_total{transport="grpc"}
// for outcome from the replica's /metrics (0 when absent).
func authCounter(t *testing.T, r *replica, outcome string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + r.http + "/metrics")
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	m := regexp.MustCompile(fmt.Sprintf(`keda_otel_scaler_receiver_auth_total\{outcome="%s",transport="grpc"\} ([0-9.e+]+)`, outcome)).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)
	return v
}
