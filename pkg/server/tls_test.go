package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a leaf certificate and key to dir and returns their paths.
func (ca *testCA) issue(t *testing.T, dir, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	return certFile, keyFile
}

func specCall(addr string, creds credentials.TransportCredentials) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = externalscaler.NewExternalScalerClient(conn).GetMetricSpec(ctx, &externalscaler.ScaledObjectRef{
		Name: "so", Namespace: "ns", ScalerMetadata: map[string]string{"metricQuery": "x", "targetValue": "1"},
	})
	return err
}

func TestScalerListenerTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	serverCert, serverKey := ca.issue(t, dir, "server", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := ca.issue(t, dir, "client", x509.ExtKeyUsageClientAuth)
	caFile := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(caFile, ca.pem, 0o600))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.pem)
	kp, err := tls.LoadX509KeyPair(clientCert, clientKey)
	require.NoError(t, err)

	for _, tc := range []struct {
		name     string
		clientCA string
		creds    credentials.TransportCredentials
		ok       bool
	}{
		{"tls", "", credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}), true},
		{"plaintext client refused", "", insecure.NewCredentials(), false},
		{"tls 1.1 refused", "", credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}), false},
		{"mutual tls", caFile, credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}), true},
		{"mutual tls without client cert refused", caFile, credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := servertest.Config()
			cfg.Server.TLSCertFile, cfg.Server.TLSKeyFile, cfg.Server.TLSClientCAFile = serverCert, serverKey, tc.clientCA
			s, err := New(cfg, Settings{})
			require.NoError(t, err)
			servertest.Start(t, s)
			err = specCall(s.Addrs().Scaler, tc.creds)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
			// OTLP stays plaintext for collector sidecars.
			assert.NoError(t, healthCheck(s.Addrs().OTLPGRPC))
		})
	}
}

func TestScalerTLSBadFiles(t *testing.T) {
	cfg := servertest.Config()
	cfg.Server.TLSCertFile, cfg.Server.TLSKeyFile = "/nonexistent.crt", "/nonexistent.key"
	_, err := New(cfg, Settings{})
	require.ErrorContains(t, err, "--tls-cert-file")

	cfg = servertest.Config()
	cfg.Server.TLSCertFile = "a.crt"
	_, err = New(cfg, Settings{})
	require.ErrorContains(t, err, "must be set together")
}
