package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files.
type testPKI struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newTestPKI(t *testing.T, dir, name string) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	p := testPKI{caFile: filepath.Join(dir, name+"-ca.crt")}
	require.NoError(t, os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
	issue := func(leaf string, usage x509.ExtKeyUsage) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: leaf},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		kder, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		certFile, keyFile := filepath.Join(dir, name+"-"+leaf+".crt"), filepath.Join(dir, name+"-"+leaf+".key")
		require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
		require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
		return certFile, keyFile
	}
	p.serverCert, p.serverKey = issue("server", x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = issue("client", x509.ExtKeyUsageClientAuth)
	return p
}

// TestStatusAndQueryOverMutualTLS: against an HTTP listener serving TLS
// and requiring client certificates (--http-tls-*), status and query
// succeed with --ca-file and a client certificate (or with
// --insecure-skip-verify), and fail, naming the reason, without them.
func TestStatusAndQueryOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir, "good")
	other := newTestPKI(t, dir, "other") // a CA the server does not trust
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))

	kp, err := tls.LoadX509KeyPair(pki.clientCert, pki.clientKey)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	b, err := os.ReadFile(pki.caFile)
	require.NoError(t, err)
	roots.AppendCertsFromPEM(b)
	pushTransport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}}
	defer pushTransport.CloseIdleConnections()
	a := startServerWith(t, func(c *config.Config) {
		c.Server.HTTPTLS = config.TLSFiles{CertFile: pki.serverCert, KeyFile: pki.serverKey, ClientCAFile: pki.caFile}
	}, &http.Client{Transport: pushTransport}, "https")
	https, plain := "https://"+a.HTTP, "http://"+a.HTTP
	good := []string{"--ca-file", pki.caFile, "--cert-file", pki.clientCert, "--key-file", pki.clientKey}

	for _, tc := range []struct {
		name     string
		flags    []string
		wantCode int
		wantErr  []string // on stderr, each
	}{
		{"ca and client certificate", append([]string{"--server", https}, good...), 0, nil},
		{"insecure-skip-verify with a client certificate", []string{"--server", https, "--insecure-skip-verify", "--cert-file", pki.clientCert, "--key-file", pki.clientKey}, 0, nil},
		{"no client certificate", []string{"--server", https, "--ca-file", pki.caFile}, 1, []string{https, "remote error: tls: certificate required"}},
		// Go's client offers only a certificate from a CA the server names.
		{"client certificate of another CA", []string{"--server", https, "--ca-file", pki.caFile, "--cert-file", other.clientCert, "--key-file", other.clientKey}, 1, []string{"certificate required"}},
		{"server certificate not trusted", []string{"--server", https, "--cert-file", pki.clientCert, "--key-file", pki.clientKey}, 1, []string{"certificate signed by unknown authority"}},
		{"server certificate from another CA", []string{"--server", https, "--ca-file", other.caFile, "--cert-file", pki.clientCert, "--key-file", pki.clientKey}, 1, []string{"certificate signed by unknown authority"}},
		{"plain http to a TLS listener", []string{"--server", plain}, 1, []string{plain, "400 Bad Request", "HTTP request to an HTTPS server"}},
		{"tls flags with http://", append([]string{"--server", plain}, good...), 2, []string{"need an https:// --server"}},
		{"cert without key", []string{"--server", https, "--cert-file", pki.clientCert}, 2, []string{"--cert-file and --key-file go together"}},
		{"key without cert", []string{"--server", https, "--key-file", pki.clientKey}, 2, []string{"--cert-file and --key-file go together"}},
		{"missing ca file", []string{"--server", https, "--ca-file", filepath.Join(dir, "nope.crt")}, 2, []string{"--ca-file", "nope.crt"}},
		{"ca file without a certificate", []string{"--server", https, "--ca-file", notPEM}, 2, []string{"no PEM certificate"}},
		{"unreadable key pair", []string{"--server", https, "--cert-file", pki.clientCert, "--key-file", notPEM}, 2, []string{"--cert-file/--key-file"}},
		{"not an http url", []string{"--server", "ftp://" + a.HTTP}, 2, []string{"want http://host:port or https://host:port"}},
		{"no scheme", []string{"--server", a.HTTP}, 2, []string{"want http://host:port or https://host:port"}},
	} {
		for _, cmd := range []struct {
			args []string
			want string // on stdout when it succeeds
		}{
			{[]string{"status", "--json"}, `"triggers"`},
			{[]string{"query", `sum(vllm:num_requests_waiting{model_name="qwen"})`}, "{} => 7 @ "},
		} {
			t.Run(cmd.args[0]+"/"+tc.name, func(t *testing.T) {
				code, out, errOut := runCLI(t, append(append([]string{}, cmd.args...), tc.flags...)...)
				require.Equal(t, tc.wantCode, code, "stdout: %s\nstderr: %s", out, errOut)
				if tc.wantCode == 0 {
					assert.Contains(t, out, cmd.want)
					return
				}
				assert.Contains(t, errOut, "keda-otel-scaler "+cmd.args[0]+": ")
				for _, w := range tc.wantErr {
					assert.Contains(t, errOut, w)
				}
			})
		}
	}
}
