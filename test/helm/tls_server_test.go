package helm

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pemCert creates a certificate (a CA when parent is nil) for 127.0.0.1.
func pemCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return c, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

var addrRE = regexp.MustCompile(`(otlp_grpc_addr|scaler_addr|http_addr)=(127\.0\.0\.1:[0-9]+)`)

// TestRenderedTLSConfigStartsServer runs the real server with the env
// ci/tls-all-values.yaml renders: every mounted file the env names is
// created under a temporary directory (a cert-manager style tls.crt,
// tls.key and ca.crt, and a token file), and the server must serve HTTPS
// with client certificates, with the TLS reload and auth metrics on
// /metrics.
func TestRenderedTLSConfigStartsServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	bin := buildServer(t)
	caCert, caKey, caPEM, _ := pemCert(t, "ca", nil, nil)
	_, _, srvPEM, srvKeyPEM := pemCert(t, "keda-otel-scaler", caCert, caKey)
	_, _, cliPEM, cliKeyPEM := pemCert(t, "prometheus", caCert, caKey)
	files := map[string][]byte{"tls.crt": srvPEM, "tls.key": srvKeyPEM, "ca.crt": caPEM, "tokens": []byte("t0k3n\n")}

	o := mustRender(t, readValues(t, "tls-all-values.yaml"))
	c := container(t, o)
	root := t.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "KOS_LOG_FORMAT=text"}
	for _, e := range c.Env {
		v := e.Value
		if strings.HasSuffix(e.Name, "_FILE") {
			require.True(t, strings.HasPrefix(v, "/etc/keda-otel-scaler/"), e.Name)
			v = filepath.Join(root, v)
			require.NoError(t, os.MkdirAll(filepath.Dir(v), 0o700))
			b, ok := files[filepath.Base(v)]
			require.True(t, ok, "%s names %s", e.Name, v)
			require.NoError(t, os.WriteFile(v, b, 0o600))
		}
		if e.Name == "KOS_LOG_FORMAT" {
			continue
		}
		env = append(env, e.Name+"="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(append([]string{}, c.Args...),
		"--otlp-grpc-addr=127.0.0.1:0", "--scaler-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0")...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	addrc := make(chan map[string]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := addrRE.FindAllStringSubmatch(sc.Text(), -1); len(m) == 3 {
				a := map[string]string{}
				for _, kv := range m {
					a[kv[1]] = kv[2]
				}
				addrc <- a
				break
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	var addrs map[string]string
	select {
	case addrs = <-addrc:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("server did not report its addresses")
	}

	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	kp, err := tls.X509KeyPair(cliPEM, cliKeyPEM)
	require.NoError(t, err)
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}}}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	base := "https://" + addrs["http_addr"]
	require.Eventually(t, func() bool {
		resp, err := withCert.Get(base + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond)
	_, err = noCert.Get(base + "/readyz")
	require.Error(t, err, "mutual TLS: no client certificate, no answer")
	resp, err := withCert.Get(base + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.NoError(t, err)
	for _, name := range []string{"keda_otel_scaler_tls_reload_errors_total", "keda_otel_scaler_tls_reloads_total", "keda_otel_scaler_receiver_auth_total"} {
		assert.Contains(t, string(body), "\n# TYPE "+name+" ", name)
	}
	for _, l := range []string{"otlp", "keda", "http"} {
		assert.Contains(t, string(body), `keda_otel_scaler_tls_reload_errors_total{listener="`+l+`"} 0`)
	}
	// The gRPC listeners serve TLS with the same certificate.
	for _, k := range []string{"otlp_grpc_addr", "scaler_addr"} {
		conn, err := tls.Dial("tcp", addrs[k], &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
		require.NoError(t, err, k)
		assert.Equal(t, "keda-otel-scaler", conn.ConnectionState().PeerCertificates[0].Subject.CommonName, k)
		_ = conn.Close()
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, cmd.Wait(), "server exits cleanly on SIGTERM")
}
