package k8s

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ca is a throwaway certificate authority for one test run.
type ca struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newCA(name string) (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ca{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// issue signs a leaf certificate for cn (organisation orgs) valid for
// server and client use on localhost and 127.0.0.1, and returns its PEM
// certificate and key.
func (c *ca) issue(cn string, orgs ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

// pki is every file the control plane and KEDA read, under dir.
type pki struct {
	CA, APIServerCert, APIServerKey   string // cluster CA; API server serving pair
	AdminCert, AdminKey               string // O=system:masters client
	FrontProxyCA                      string // aggregation: the adapter trusts this CA
	ProxyClientCert, ProxyClientKey   string // aggregation: the API server's client pair
	ServiceAccountKey, ServiceAccount string // SA signing key (private, public)
	KEDADir                           string // ca.crt, tls.crt, tls.key for KEDA's operator<->adapter gRPC and the adapter's serving
}

func writePKI(dir string) (*pki, error) {
	p := &pki{KEDADir: filepath.Join(dir, "keda")}
	if err := os.MkdirAll(p.KEDADir, 0o700); err != nil {
		return nil, err
	}
	write := func(name string, b []byte) (string, error) {
		path := filepath.Join(dir, name)
		return path, os.WriteFile(path, b, 0o600)
	}
	cluster, err := newCA("kubernetes-ca")
	if err != nil {
		return nil, err
	}
	front, err := newCA("front-proxy-ca")
	if err != nil {
		return nil, err
	}
	keda, err := newCA("keda-ca")
	if err != nil {
		return nil, err
	}
	type pair struct {
		ca        *ca
		cn        string
		orgs      []string
		cert, key *string
		certName  string
		keyName   string
	}
	for _, x := range []pair{
		{cluster, "kube-apiserver", nil, &p.APIServerCert, &p.APIServerKey, "apiserver.crt", "apiserver.key"},
		{cluster, "admin", []string{"system:masters"}, &p.AdminCert, &p.AdminKey, "admin.crt", "admin.key"},
		{front, "front-proxy-client", nil, &p.ProxyClientCert, &p.ProxyClientKey, "front-proxy-client.crt", "front-proxy-client.key"},
		{keda, "keda-operator", nil, new(string), new(string), "keda/tls.crt", "keda/tls.key"},
	} {
		c, k, err := x.ca.issue(x.cn, x.orgs...)
		if err != nil {
			return nil, fmt.Errorf("issue %s: %w", x.cn, err)
		}
		if *x.cert, err = write(x.certName, c); err != nil {
			return nil, err
		}
		if *x.key, err = write(x.keyName, k); err != nil {
			return nil, err
		}
	}
	if p.CA, err = write("ca.crt", cluster.certPEM); err != nil {
		return nil, err
	}
	if p.FrontProxyCA, err = write("front-proxy-ca.crt", front.certPEM); err != nil {
		return nil, err
	}
	if _, err = write("keda/ca.crt", keda.certPEM); err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	if p.ServiceAccountKey, err = write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})); err != nil {
		return nil, err
	}
	if p.ServiceAccount, err = write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})); err != nil {
		return nil, err
	}
	return p, nil
}
