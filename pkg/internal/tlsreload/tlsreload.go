// Package tlsreload serves TLS on a listener from certificate, key and
// client-CA files that may be replaced while the process runs (cert-manager
// and Kubernetes rotate a mounted Secret by swapping a symlink).
//
// Every handshake takes the listener's current *tls.Config through
// GetConfigForClient. The config holds the certificate and the client-CA
// pool together and is replaced as a whole by one atomic store, so a
// handshake never pairs a new certificate with an old pool or the reverse.
// Connections already established keep the config they were made with:
// open streams stay up across a rotation.
//
// A new file set that does not parse in full (a half-written PEM file, a
// key that does not match the certificate, a CA file without a certificate)
// is refused: the previous config stays in force, and the failure is logged
// and counted in keda_otel_scaler_tls_reload_errors_total{listener}.
package tlsreload

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/reload"
)

// MinVersion is the oldest TLS version any listener accepts.
const MinVersion = tls.VersionTLS12

// Files names one listener's TLS material. ClientCA is optional: when set,
// clients must present a certificate that chains to it (mutual TLS).
type Files struct {
	Cert, Key, ClientCA string
}

// Metrics counts reloads per listener. One Metrics serves every listener
// of a process.
type Metrics struct {
	reloads *prometheus.CounterVec
	errors  *prometheus.CounterVec
}

// NewMetrics registers the reload counters with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_tls_reloads_total",
			Help: "Certificate or client-CA changes applied without a restart, by listener.",
		}, []string{"listener"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_tls_reload_errors_total",
			Help: "Changed certificate, key or client-CA files that could not be used (the previous ones stay in force), by listener.",
		}, []string{"listener"}),
	}
	if reg != nil {
		reg.MustRegister(m.reloads, m.errors)
	}
	return m
}

// Source is one listener's current TLS config.
type Source struct {
	listener   string
	nextProtos []string
	mutual     bool
	// cur is written by the watcher's goroutine (one store per accepted
	// reload) and read by every handshake; a *tls.Config is never changed
	// after it is stored.
	cur atomic.Pointer[tls.Config]
}

// Watch loads f for listener now (an error here fails the start) and
// registers it with w for reloads. nextProtos are the ALPN protocols the
// listener offers ("h2" for gRPC; "h2", "http/1.1" for HTTP).
func Watch(w *reload.Watcher, m *Metrics, listener string, f Files, nextProtos []string) (*Source, error) {
	s := &Source{listener: listener, nextProtos: nextProtos, mutual: f.ClientCA != ""}
	files := []string{f.Cert, f.Key}
	if s.mutual {
		files = append(files, f.ClientCA)
	}
	result := func(err error) {
		if err != nil {
			m.errors.WithLabelValues(listener).Inc()
			return
		}
		m.reloads.WithLabelValues(listener).Inc()
	}
	// Both series exist from the start, so an alert on an increase sees
	// the first error.
	m.errors.WithLabelValues(listener)
	m.reloads.WithLabelValues(listener)
	if err := w.Add(listener+" TLS", files, s.parse, result); err != nil {
		return nil, fmt.Errorf("%s TLS: %w", listener, err)
	}
	return s, nil
}

// ServerConfig returns the config to serve: every handshake takes the
// current certificate and client-CA pool.
func (s *Source) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: MinVersion,
		NextProtos: s.nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load(), nil
		},
	}
}

// Leaf returns the certificate currently served (for tests and logs).
func (s *Source) Leaf() *x509.Certificate {
	return s.cur.Load().Certificates[0].Leaf
}

// parse builds a config from the files' contents and stores it, or
// changes nothing.
func (s *Source) parse(contents [][]byte) error {
	certPEM, keyPEM := contents[0], contents[1]
	if err := strictPEM(certPEM); err != nil {
		return fmt.Errorf("certificate file: %w", err)
	}
	if err := strictPEM(keyPEM); err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("certificate and key: %w", err)
	}
	c := &tls.Config{MinVersion: MinVersion, NextProtos: s.nextProtos, Certificates: []tls.Certificate{kp}}
	if s.mutual {
		pool, err := certPool(contents[2])
		if err != nil {
			return fmt.Errorf("client CA file: %w", err)
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	s.cur.Store(c)
	return nil
}

// certPool parses every certificate of a PEM bundle; any block that is
// not a parseable certificate fails the bundle (x509's AppendCertsFromPEM
// would skip it and serve a partial bundle).
func certPool(b []byte) (*x509.CertPool, error) {
	if err := strictPEM(b); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}

// strictPEM fails when anything but whitespace is left after the last
// complete PEM block: a file cut short mid-block, which PEM decoders
// otherwise skip silently.
func strictPEM(b []byte) error {
	for {
		blk, rest := pem.Decode(b)
		if blk == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				return errors.New("incomplete or malformed PEM data")
			}
			return nil
		}
		b = rest
	}
}
