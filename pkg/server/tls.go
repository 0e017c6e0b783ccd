package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/bearer"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/reload"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/tlsreload"
)

// Listener names, the listener label of the TLS reload counters.
const (
	tlsListenerOTLP  = "otlp"
	tlsListenerKEDA  = "keda"
	tlsListenerHTTP  = "http"
	otlpExportMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
)

// security is the process's transport security: TLS on each listener whose
// flags are set, the bearer-token check on ingest, and the one watcher
// that reloads every certificate, key, CA and token file. The watcher's
// goroutine is started by Start and stopped by Shutdown.
type security struct {
	watcher          *reload.Watcher
	otlp, keda, http *tlsreload.Source // nil: plaintext
	auth             *bearer.Auth      // nil: no authentication
}

// newSecurity loads every configured file; a missing or unusable one fails
// the start with the flag that names it.
func newSecurity(cfg config.Config, logger *slog.Logger, reg prometheus.Registerer) (*security, error) {
	sec := &security{watcher: reload.New(cfg.Server.ReloadInterval, logger.With("component", "reload"))}
	kedaFiles := config.TLSFiles{CertFile: cfg.Server.TLSCertFile, KeyFile: cfg.Server.TLSKeyFile, ClientCAFile: cfg.Server.TLSClientCAFile}
	var m *tlsreload.Metrics
	for _, l := range []struct {
		name, prefix string
		files        config.TLSFiles
		alpn         []string
		dst          **tlsreload.Source
	}{
		{tlsListenerOTLP, "otlp-tls", cfg.Server.OTLPTLS, []string{"h2"}, &sec.otlp},
		{tlsListenerKEDA, "tls", kedaFiles, []string{"h2"}, &sec.keda},
		{tlsListenerHTTP, "http-tls", cfg.Server.HTTPTLS, []string{"h2", "http/1.1"}, &sec.http},
	} {
		if !l.files.Enabled() {
			continue
		}
		if m == nil {
			m = tlsreload.NewMetrics(reg)
		}
		src, err := tlsreload.Watch(sec.watcher, m, l.name, tlsreload.Files{Cert: l.files.CertFile, Key: l.files.KeyFile, ClientCA: l.files.ClientCAFile}, l.alpn)
		if err != nil {
			return nil, fmt.Errorf("load --%[1]s-cert-file %[2]q, --%[1]s-key-file %[3]q, --%[1]s-client-ca-file %[4]q: %[5]w",
				l.prefix, l.files.CertFile, l.files.KeyFile, l.files.ClientCAFile, err)
		}
		*l.dst = src
	}
	if f := cfg.Receiver.BearerTokenFile; f != "" {
		a, err := bearer.New(sec.watcher, f, reg)
		if err != nil {
			return nil, fmt.Errorf("load --otlp-bearer-token-file %q: %w", f, err)
		}
		sec.auth = a
		if sec.otlp == nil || sec.http == nil {
			// Allowed (a mesh may encrypt the hop), but a reviewer should see it.
			logger.Warn("Bearer tokens are accepted on a plaintext OTLP listener; set --otlp-tls-* and --http-tls-*",
				"otlp_tls", sec.otlp != nil, "http_tls", sec.http != nil)
		}
	}
	return sec, nil
}

// otlpOptions are the OTLP gRPC server's TLS credentials and the bearer
// check, which refuses an unauthenticated Export stream as soon as its
// headers arrive (grpc.InTapHandle), before its message is received.
func (sec *security) otlpOptions() []grpc.ServerOption {
	var opts []grpc.ServerOption
	if sec.otlp != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(sec.otlp.ServerConfig())))
	}
	if sec.auth != nil {
		opts = append(opts, grpc.InTapHandle(sec.auth.TapHandle(otlpExportMethod)))
	}
	return opts
}

// kedaOptions are the KEDA gRPC server's TLS credentials.
func (sec *security) kedaOptions() []grpc.ServerOption {
	if sec.keda == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(sec.keda.ServerConfig()))}
}

// ingest wraps the OTLP/HTTP handler with the bearer check.
func (sec *security) ingest(h http.Handler) http.Handler {
	if sec.auth == nil {
		return h
	}
	return sec.auth.HTTP(h)
}

// httpTLS is the HTTP listener's TLS config, nil for plaintext.
func (sec *security) httpTLS() *tls.Config {
	if sec.http == nil {
		return nil
	}
	return sec.http.ServerConfig()
}
