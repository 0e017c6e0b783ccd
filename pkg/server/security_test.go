package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

// leafPEM issues a certificate for 127.0.0.1 signed by ca and returns the
// PEM of the certificate and of its key.
func (ca *testCA) leafPEM(t *testing.T, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func (ca *testCA) clientCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	c, k := ca.leafPEM(t, cn, x509.ExtKeyUsageClientAuth)
	kp, err := tls.X509KeyPair(c, k)
	require.NoError(t, err)
	return kp
}

// secretDir lays files out the way the kubelet mounts a Secret: each key
// is a symlink to ..data/<key>, ..data is a symlink to a versioned
// directory, and an update writes a new directory and renames a new
// ..data symlink over the old one (one atomic swap).
type secretDir struct {
	dir string
	n   int
}

func newSecretDir(t *testing.T, files map[string][]byte) *secretDir {
	t.Helper()
	d := &secretDir{dir: t.TempDir()}
	d.swap(t, files)
	for name := range files {
		require.NoError(t, os.Symlink(filepath.Join("..data", name), filepath.Join(d.dir, name)))
	}
	return d
}

func (d *secretDir) swap(t *testing.T, files map[string][]byte) {
	t.Helper()
	d.n++
	v := fmt.Sprintf("..v%d", d.n)
	require.NoError(t, os.Mkdir(filepath.Join(d.dir, v), 0o700))
	for name, b := range files {
		require.NoError(t, os.WriteFile(filepath.Join(d.dir, v, name), b, 0o600))
	}
	tmp := filepath.Join(d.dir, "..data_tmp")
	require.NoError(t, os.Symlink(v, tmp))
	require.NoError(t, os.Rename(tmp, filepath.Join(d.dir, "..data")))
}

func (d *secretDir) path(name string) string { return filepath.Join(d.dir, name) }

// tlsFiles points a listener at the secretDir's tls.crt, tls.key and (when
// mutual) ca.crt.
func (d *secretDir) tlsFiles(mutual bool) (cert, key, ca string) {
	cert, key = d.path("tls.crt"), d.path("tls.key")
	if mutual {
		ca = d.path("ca.crt")
	}
	return cert, key, ca
}

// listeners are the three listeners as the tests address them.
var listeners = []string{tlsListenerOTLP, tlsListenerKEDA, tlsListenerHTTP}

// setTLS configures listener l of cfg.
func setTLS(cfg *config.Config, l, cert, key, ca string) {
	switch l {
	case tlsListenerOTLP:
		cfg.Server.OTLPTLS = config.TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: ca}
	case tlsListenerKEDA:
		cfg.Server.TLSCertFile, cfg.Server.TLSKeyFile, cfg.Server.TLSClientCAFile = cert, key, ca
	case tlsListenerHTTP:
		cfg.Server.HTTPTLS = config.TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: ca}
	}
}

func addrOf(s *Server, l string) string {
	a := s.Addrs()
	switch l {
	case tlsListenerOTLP:
		return a.OTLPGRPC
	case tlsListenerKEDA:
		return a.Scaler
	default:
		return a.HTTP
	}
}

// call makes one real request on listener l: an OTLP Export, a KEDA
// GetMetricSpec or an HTTP GET /readyz. A nil tc is plaintext.
func call(s *Server, l string, tc *tls.Config) error {
	addr := addrOf(s, l)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if l == tlsListenerHTTP {
		scheme, tr := "http", &http.Transport{}
		if tc != nil {
			scheme, tr.TLSClientConfig = "https", tc
		}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /readyz: %d", resp.StatusCode)
		}
		return nil
	}
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if l == tlsListenerOTLP {
		_, err = pmetricotlp.NewGRPCClient(conn).Export(ctx, gaugeRequest("tls_probe", 1))
		return err
	}
	_, err = externalscaler.NewExternalScalerClient(conn).GetMetricSpec(ctx, &externalscaler.ScaledObjectRef{
		Name: "so", Namespace: "ns", ScalerMetadata: map[string]string{"metricQuery": "x", "targetValue": "1"},
	})
	return err
}

// gaugeRequest is one OTLP gauge point name{pod="a"} = v at now.
func gaugeRequest(name string, v float64) pmetricotlp.ExportRequest {
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName(name)
	dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.Attributes().PutStr("pod", "a")
	dp.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
	dp.SetDoubleValue(v)
	return pmetricotlp.NewExportRequestFromMetrics(md)
}

// servedCN is the common name of the certificate a new handshake on addr
// gets.
func servedCN(t *testing.T, addr string, tc *tls.Config) string {
	t.Helper()
	c := tc.Clone()
	c.NextProtos = []string{"h2"}
	conn, err := tls.Dial("tcp", addr, c)
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// TestMutualTLSEveryListener: each of the three listeners, given a
// certificate and a client CA, accepts a client certificate from that CA
// and refuses no certificate, another CA's certificate, plaintext and
// TLS 1.1.
func TestMutualTLSEveryListener(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	certPEM, keyPEM := ca.leafPEM(t, "server", x509.ExtKeyUsageServerAuth)
	d := newSecretDir(t, map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": ca.pem})
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	good, foreign := ca.clientCert(t, "collector"), other.clientCert(t, "intruder")
	for _, l := range listeners {
		t.Run("listener="+l, func(t *testing.T) {
			cfg := servertest.Config()
			cert, key, caFile := d.tlsFiles(true)
			setTLS(&cfg, l, cert, key, caFile)
			s, err := New(cfg, Settings{})
			require.NoError(t, err)
			servertest.Start(t, s)
			for _, tc := range []struct {
				name string
				tc   *tls.Config
				ok   bool
			}{
				{"client certificate from the CA", &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{good}, MinVersion: tls.VersionTLS12}, true},
				{"no client certificate", &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, false},
				{"another CA's client certificate", &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{foreign}, MinVersion: tls.VersionTLS12}, false},
				{"tls 1.1", &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{good}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, false},
				{"plaintext", nil, false},
			} {
				err := call(s, l, tc.tc)
				if tc.ok {
					require.NoError(t, err, tc.name)
				} else {
					require.Error(t, err, tc.name)
				}
			}
			// The other two listeners stay as configured: plaintext.
			for _, o := range listeners {
				if o != l {
					require.NoError(t, call(s, o, nil), "listener %s stays plaintext", o)
				}
			}
		})
	}
}

// TestCertificateRotation: all three listeners serve one shared set of
// files (certificate A, client CA 1). The files are rewritten to B and
// client CA 2 through a kubelet-style symlink swap; new handshakes see B
// within seconds, clients of CA 2 are accepted and those of CA 1 refused,
// and a StreamIsActive stream opened before the swap stays open and still
// gets its push.
func TestCertificateRotation(t *testing.T) {
	caA, caB, client1, client2 := newTestCA(t), newTestCA(t), newTestCA(t), newTestCA(t)
	certA, keyA := caA.leafPEM(t, "server-A", x509.ExtKeyUsageServerAuth)
	certB, keyB := caB.leafPEM(t, "server-B", x509.ExtKeyUsageServerAuth)
	d := newSecretDir(t, map[string][]byte{"tls.crt": certA, "tls.key": keyA, "ca.crt": client1.pem})
	roots := x509.NewCertPool()
	roots.AddCert(caA.cert)
	roots.AddCert(caB.cert)
	c1, c2 := client1.clientCert(t, "c1"), client2.clientCert(t, "c2")
	with := func(c tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
	}

	reg := newRegistry()
	cfg := servertest.Config()
	cfg.Server.ReloadInterval = 100 * time.Millisecond
	for _, l := range listeners {
		cert, key, ca := d.tlsFiles(true)
		setTLS(&cfg, l, cert, key, ca)
	}
	s, err := New(cfg, Settings{Registry: reg})
	require.NoError(t, err)
	servertest.Start(t, s)

	for _, l := range listeners {
		assert.Equal(t, "server-A", servedCN(t, addrOf(s, l), with(c1)), l)
		require.NoError(t, call(s, l, with(c1)), l)
	}

	// A push stream opened before the rotation, on a connection made with A.
	conn, err := grpc.NewClient(s.Addrs().Scaler, grpc.WithTransportCredentials(credentials.NewTLS(with(c1))))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := externalscaler.NewExternalScalerClient(conn).StreamIsActive(ctx, &externalscaler.ScaledObjectRef{
		Name: "so", Namespace: "ns", ScalerMetadata: map[string]string{"metricQuery": "sum(rotation_queue)", "targetValue": "1"},
	})
	require.NoError(t, err)
	msgs := make(chan error, 1)
	go func() {
		m, err := stream.Recv()
		if err == nil && !m.GetResult() {
			err = fmt.Errorf("got false")
		}
		msgs <- err
	}()

	d.swap(t, map[string][]byte{"tls.crt": certB, "tls.key": keyB, "ca.crt": client2.pem})
	for _, l := range listeners {
		require.Eventually(t, func() bool { return servedCN(t, addrOf(s, l), with(c2)) == "server-B" }, 5*time.Second, 20*time.Millisecond, l)
		require.NoError(t, call(s, l, with(c2)), "listener %s accepts the new client CA", l)
		require.Error(t, call(s, l, with(c1)), "listener %s refuses the old client CA", l)
		assert.InDelta(t, 1.0, counter(t, reg, "keda_otel_scaler_tls_reloads_total", map[string]string{"listener": l}), 0, l)
		assert.InDelta(t, 0.0, counter(t, reg, "keda_otel_scaler_tls_reload_errors_total", map[string]string{"listener": l}), 0, l)
	}

	// The stream from before the swap is still open: a push over OTLP/HTTP
	// (new certificate, new client CA) reaches it.
	body, err := gaugeRequest("rotation_queue", 3).MarshalProto()
	require.NoError(t, err)
	tr := &http.Transport{TLSClientConfig: with(c2)}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("https://"+s.Addrs().HTTP+"/v1/metrics", "application/x-protobuf", bytes.NewReader(body))
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	select {
	case err := <-msgs:
		require.NoError(t, err, "the stream opened before the rotation got its push")
	case <-time.After(5 * time.Second):
		t.Fatal("no push on the stream opened before the rotation")
	}
}

// TestCorruptRotationKeepsCertificate: a half-written certificate, a key
// that does not match, a truncated CA bundle and a missing file each keep
// certificate A in service; each change is counted once however often the
// files are polled; a good rotation afterwards is applied.
func TestCorruptRotationKeepsCertificate(t *testing.T) {
	caA, caB, client := newTestCA(t), newTestCA(t), newTestCA(t)
	certA, keyA := caA.leafPEM(t, "server-A", x509.ExtKeyUsageServerAuth)
	certB, keyB := caB.leafPEM(t, "server-B", x509.ExtKeyUsageServerAuth)
	good := map[string][]byte{"tls.crt": certA, "tls.key": keyA, "ca.crt": client.pem}
	d := newSecretDir(t, good)
	roots := x509.NewCertPool()
	roots.AddCert(caA.cert)
	roots.AddCert(caB.cert)
	tc := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{client.clientCert(t, "c")}, MinVersion: tls.VersionTLS12}

	reg := newRegistry()
	cfg := servertest.Config()
	cfg.Server.ReloadInterval = 0 // polled by hand below
	for _, l := range listeners {
		cert, key, ca := d.tlsFiles(true)
		setTLS(&cfg, l, cert, key, ca)
	}
	var logs servertest.Logs
	s, err := New(cfg, Settings{Registry: reg, Logger: slogTo(&logs)})
	require.NoError(t, err)
	servertest.Start(t, s)

	caBundle := append(append([]byte{}, client.pem...), caB.pem...)
	for i, bad := range []struct {
		name  string
		files map[string][]byte
	}{
		{"half-written certificate", map[string][]byte{"tls.crt": certB[:len(certB)/2], "tls.key": keyB, "ca.crt": client.pem}},
		{"key of another certificate", map[string][]byte{"tls.crt": certB, "tls.key": keyA, "ca.crt": client.pem}},
		{"truncated CA bundle", map[string][]byte{"tls.crt": certB, "tls.key": keyB, "ca.crt": caBundle[:len(caBundle)-40]}},
		{"CA file missing", map[string][]byte{"tls.crt": certB, "tls.key": keyB}},
		{"empty certificate", map[string][]byte{"tls.crt": {}, "tls.key": keyB, "ca.crt": client.pem}},
	} {
		d.swap(t, bad.files)
		for range 3 {
			s.sec.watcher.Check()
		}
		for _, l := range listeners {
			assert.Equal(t, "server-A", servedCN(t, addrOf(s, l), tc), "%s: listener %s", bad.name, l)
			require.NoError(t, call(s, l, tc), "%s: listener %s", bad.name, l)
			assert.InDelta(t, float64(i+1), counter(t, reg, "keda_otel_scaler_tls_reload_errors_total", map[string]string{"listener": l}), 0, "%s: listener %s", bad.name, l)
		}
	}
	assert.Equal(t, 5*len(listeners), logs.Count("Reload failed"), "one warning per change and listener:\n%s", logs.String())

	d.swap(t, map[string][]byte{"tls.crt": certB, "tls.key": keyB, "ca.crt": client.pem})
	s.sec.watcher.Check()
	for _, l := range listeners {
		assert.Equal(t, "server-B", servedCN(t, addrOf(s, l), tc), l)
		assert.InDelta(t, 1.0, counter(t, reg, "keda_otel_scaler_tls_reloads_total", map[string]string{"listener": l}), 0, l)
	}
}

// TestTLSStartErrorsNameTheFlag: a listener whose files cannot be used
// fails the start with the flag that names them.
func TestTLSStartErrorsNameTheFlag(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM := ca.leafPEM(t, "server", x509.ExtKeyUsageServerAuth)
	d := newSecretDir(t, map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "garbage": []byte("not pem")})
	for _, tc := range []struct {
		l, flag string
	}{{tlsListenerOTLP, "--otlp-tls-client-ca-file"}, {tlsListenerHTTP, "--http-tls-client-ca-file"}, {tlsListenerKEDA, "--tls-client-ca-file"}} {
		cfg := servertest.Config()
		setTLS(&cfg, tc.l, d.path("tls.crt"), d.path("tls.key"), d.path("garbage"))
		_, err := New(cfg, Settings{})
		require.ErrorContains(t, err, tc.flag)
		require.ErrorContains(t, err, "client CA file")
	}
	cfg := servertest.Config()
	cfg.Receiver.BearerTokenFile = filepath.Join(t.TempDir(), "missing")
	_, err := New(cfg, Settings{})
	require.ErrorContains(t, err, "--otlp-bearer-token-file")
}

// TestBearerTokenIngest: with --otlp-bearer-token-file, an Export on
// either transport is stored only with a token from the file; a missing
// or wrong token gets Unauthenticated / 401 (with WWW-Authenticate:
// Bearer), is counted by outcome, and stores nothing. The file is
// reloaded on change. Health and the read endpoints need no token.
func TestBearerTokenIngest(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(tokFile, []byte("tok-one\n\n  tok-two  \n"), 0o600))
	reg := newRegistry()
	cfg := servertest.Config()
	cfg.Receiver.BearerTokenFile = tokFile
	cfg.Server.ReloadInterval = 0
	s, err := New(cfg, Settings{Registry: reg})
	require.NoError(t, err)
	servertest.Start(t, s)

	conn, err := grpc.NewClient(s.Addrs().OTLPGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	exportGRPC := func(name, authz string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if authz != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", authz)
		}
		_, err := pmetricotlp.NewGRPCClient(conn).Export(ctx, gaugeRequest(name, 1))
		return err
	}
	exportHTTP := func(name, authz string) *http.Response {
		body, err := gaugeRequest(name, 1).MarshalProto()
		require.NoError(t, err)
		req, err := http.NewRequest(http.MethodPost, "http://"+s.Addrs().HTTP+"/v1/metrics", bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-protobuf")
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp
	}
	stored := func(name string) bool {
		code, body := get(t, "http://"+s.Addrs().HTTP+"/api/v1/series?match[]="+name)
		require.Equal(t, http.StatusOK, code)
		return strings.Contains(body, name)
	}

	for i, tc := range []struct {
		name, authz, outcome string
	}{
		{"first token", "Bearer tok-one", "accepted"},
		{"second token, trimmed in the file", "Bearer tok-two", "accepted"},
		{"scheme is case-insensitive", "bearer tok-one", "accepted"},
		{"no authorization", "", "missing"},
		{"another scheme", "Basic dG9rLW9uZQ==", "missing"},
		{"wrong token", "Bearer tok-three", "invalid"},
		{"prefix of a token", "Bearer tok-on", "invalid"},
		{"token with a suffix", "Bearer tok-one2", "invalid"},
	} {
		g, h := fmt.Sprintf("auth_grpc_%d", i), fmt.Sprintf("auth_http_%d", i)
		gerr := exportGRPC(g, tc.authz)
		resp := exportHTTP(h, tc.authz)
		if tc.outcome == "accepted" {
			require.NoError(t, gerr, tc.name)
			assert.Equal(t, http.StatusOK, resp.StatusCode, tc.name)
			assert.True(t, stored(g) && stored(h), tc.name)
			continue
		}
		assert.Equal(t, codes.Unauthenticated, status.Code(gerr), tc.name)
		assert.Equal(t, "missing or invalid bearer token", status.Convert(gerr).Message(), "%s: no detail", tc.name)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, tc.name)
		assert.Equal(t, "Bearer", resp.Header.Get("WWW-Authenticate"), tc.name)
		assert.False(t, stored(g) || stored(h), "%s: nothing stored", tc.name)
	}
	for _, tr := range []string{"grpc", "http"} {
		for o, n := range map[string]float64{"accepted": 3, "missing": 2, "invalid": 3} {
			assert.InDelta(t, n, counter(t, reg, "keda_otel_scaler_receiver_auth_total", map[string]string{"transport": tr, "outcome": o}), 0, "%s %s", tr, o)
		}
	}

	// The check runs before the message is decoded: undecodable bytes
	// with a wrong token are Unauthenticated, not InvalidArgument.
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer nope"), 5*time.Second)
	defer cancel()
	garbage := &healthpb.HealthCheckRequest{Service: "garbage"} // not an ExportMetricsServiceRequest
	err = conn.Invoke(ctx, otlpExportMethod, garbage, &healthpb.HealthCheckResponse{})
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	ctx = metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer tok-one")
	err = conn.Invoke(ctx, otlpExportMethod, garbage, &healthpb.HealthCheckResponse{})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "the same bytes with a token reach the decoder")

	// Health and reads need no token.
	require.NoError(t, healthCheck(s.Addrs().OTLPGRPC))
	code, _ := get(t, "http://"+s.Addrs().HTTP+"/metrics")
	assert.Equal(t, http.StatusOK, code)

	// Reload: tok-one is revoked, tok-four added.
	require.NoError(t, os.WriteFile(tokFile+".new", []byte("tok-two\ntok-four\n"), 0o600))
	require.NoError(t, os.Rename(tokFile+".new", tokFile))
	s.sec.watcher.Check()
	assert.Equal(t, codes.Unauthenticated, status.Code(exportGRPC("auth_revoked", "Bearer tok-one")))
	require.NoError(t, exportGRPC("auth_new", "Bearer tok-four"))
	assert.Equal(t, http.StatusOK, exportHTTP("auth_new_http", "Bearer tok-four").StatusCode)
	// An emptied file (a writer mid-rewrite) keeps the tokens in force.
	require.NoError(t, os.WriteFile(tokFile, nil, 0o600))
	s.sec.watcher.Check()
	require.NoError(t, exportGRPC("auth_kept", "Bearer tok-four"))
	assert.InDelta(t, 1.0, counter(t, reg, "keda_otel_scaler_receiver_auth_token_reloads_total", nil), 0)
	assert.InDelta(t, 1.0, counter(t, reg, "keda_otel_scaler_receiver_auth_token_reload_errors_total", nil), 0)
}
