package tlsreload

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/reload"
)

// selfSigned returns a certificate and key PEM with common name cn.
func selfSigned(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestParse(t *testing.T) {
	certA, keyA := selfSigned(t, "A")
	certB, keyB := selfSigned(t, "B")
	bundle := append(append([]byte{}, certA...), certB...)
	for _, tc := range []struct {
		name           string
		cert, key, ca  []byte
		mutual, wantOK bool
	}{
		{"pair", certA, keyA, nil, false, true},
		{"pair and CA bundle", certA, keyA, bundle, true, true},
		{"CA bundle with trailing blank lines", certA, keyA, append(append([]byte{}, bundle...), "\n\n"...), true, true},
		{"mismatched key", certA, keyB, nil, false, false},
		{"truncated certificate", certA[:len(certA)-30], keyA, nil, false, false},
		{"truncated key", certA, keyA[:len(keyA)/2], nil, false, false},
		{"certificate with a cut-off second block", append(append([]byte{}, certA...), certB[:40]...), keyA, nil, false, false},
		{"truncated CA bundle", certA, keyA, bundle[:len(bundle)-30], true, false},
		{"CA file without a certificate", certA, keyA, []byte("\n"), true, false},
		{"CA file with a key", certA, keyA, keyA, true, false},
		{"empty certificate", nil, keyA, nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Source{listener: "x", mutual: tc.mutual}
			contents := [][]byte{tc.cert, tc.key}
			if tc.mutual {
				contents = append(contents, tc.ca)
			}
			err := s.parse(contents)
			if !tc.wantOK {
				require.Error(t, err)
				assert.Nil(t, s.cur.Load(), "nothing stored")
				return
			}
			require.NoError(t, err)
			c := s.cur.Load()
			assert.Equal(t, uint16(tls.VersionTLS12), c.MinVersion)
			assert.Equal(t, "A", s.Leaf().Subject.CommonName)
			if tc.mutual {
				assert.Equal(t, tls.RequireAndVerifyClientCert, c.ClientAuth)
				assert.Len(t, c.ClientCAs.Subjects(), 2) //nolint:staticcheck // only counts the bundle's certificates
			} else {
				assert.Equal(t, tls.NoClientCert, c.ClientAuth)
			}
		})
	}
}

func TestWatchCountsPerListener(t *testing.T) {
	dir := t.TempDir()
	certA, keyA := selfSigned(t, "A")
	certB, keyB := selfSigned(t, "B")
	cf, kf := filepath.Join(dir, "c"), filepath.Join(dir, "k")
	require.NoError(t, os.WriteFile(cf, certA, 0o600))
	require.NoError(t, os.WriteFile(kf, keyA, 0o600))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	w := reload.New(0, nil)
	s, err := Watch(w, m, "otlp", Files{Cert: cf, Key: kf}, []string{"h2"})
	require.NoError(t, err)
	sc := s.ServerConfig()
	assert.Equal(t, uint16(tls.VersionTLS12), sc.MinVersion)
	got, err := sc.GetConfigForClient(nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"h2"}, got.NextProtos, "ALPN survives GetConfigForClient")

	require.NoError(t, os.WriteFile(kf+".new", keyB, 0o600))
	require.NoError(t, os.Rename(kf+".new", kf)) // key first: a mismatch until the certificate follows
	w.Check()
	assert.Equal(t, "A", s.Leaf().Subject.CommonName)
	assert.InDelta(t, 1, testutil.ToFloat64(m.errors.WithLabelValues("otlp")), 0)
	require.NoError(t, os.WriteFile(cf+".new", certB, 0o600))
	require.NoError(t, os.Rename(cf+".new", cf))
	w.Check()
	assert.Equal(t, "B", s.Leaf().Subject.CommonName)
	assert.InDelta(t, 1, testutil.ToFloat64(m.reloads.WithLabelValues("otlp")), 0)
	got2, err := sc.GetConfigForClient(nil)
	require.NoError(t, err)
	assert.NotSame(t, got, got2, "a reload stores a new config; the old one is not changed")
	assert.Equal(t, "A", got.Certificates[0].Leaf.Subject.CommonName)

	_, err = Watch(w, m, "http", Files{Cert: cf, Key: filepath.Join(dir, "missing")}, nil)
	require.Error(t, err)
}
