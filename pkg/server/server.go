// Package server wires the stages into one process: the store, the query
// engine, the KEDA scaler, the OTLP receiver and the HTTP endpoints, with
// the three listeners of interfaces.md, health and reflection
// (--grpc-reflection) on both gRPC servers, a panic boundary on every
// handler (recover.go), and a graceful shutdown that ends KEDA streams with
// status OK.
package server

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/config"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/interest"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/promapi"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/scaler"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/status"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// Settings carries what main or a test provides.
type Settings struct {
	// Logger receives every component's logs; nil discards them.
	Logger *slog.Logger
	// Registry collects self-metrics served on /metrics; nil makes a new one.
	Registry *prometheus.Registry
	// Now is the clock for retention and evaluation; nil means time.Now.
	Now func() time.Time
	// Version is reported in the startup log.
	Version string

	// Test seams, set only by this package's tests: wrapScaler wraps the
	// ExternalScaler implementation registered on the KEDA listener, and
	// register adds services or routes to the OTLP server and the mux
	// before the mux is wrapped, so the panic boundary is proven on the
	// servers New builds.
	wrapScaler func(externalscaler.ExternalScalerServer) externalscaler.ExternalScalerServer
	register   func(otlp *grpc.Server, mux *http.ServeMux)
	// handshakeTimeout replaces handshakeTimeout when set, so a test can
	// watch silent connections being closed without waiting 10 s.
	handshakeTimeout time.Duration
	// peerInterval and peerPollTimeout replace peerPollInterval and
	// peerPollTimeout when set, so the --ready-peers tests poll fast.
	peerInterval, peerPollTimeout time.Duration
}

// scalerKeepalive sets no MaxConnectionAge: its grace expiry would end
// KEDA's open StreamIsActive streams with an error, and KEDA pools one
// connection for every trigger (keda-contract.md §2). Time and Timeout
// detect dead clients (issue #12 class 7): after a minute without a frame
// from the client the server pings, and a client that has not answered
// within 20 s is disconnected, which ends its streams and frees what gRPC
// buffered for them. KEDA answers pings (every gRPC client does) and sends
// none itself (its dial options set no keepalive), so the enforcement
// policy never strikes it.
var scalerKeepalive = keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}

// otlpKeepalive detects dead collectors the same way: a connection silent
// for a minute is pinged, and closed when the ping is not answered within
// 20 s, so a collector that vanished (node lost, no FIN) gives its
// connection slot (--otlp-max-connections) back. It sets no
// MaxConnectionIdle or MaxConnectionAge: a collector keeps one long-lived
// connection and exports every few seconds; closing it would only add
// reconnects. A live client that answers pings but sends nothing keeps its
// slot: the connection cap bounds what such clients cost, and mutual TLS
// or bearer tokens (README, Security) decide who may hold one.
var otlpKeepalive = keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}

// handshakeTimeout bounds how long a new connection may take to become
// useful: on both gRPC listeners the TLS and HTTP/2 handshakes
// (grpc.ConnectionTimeout, 120 s if unset), on the HTTP listener the TLS
// handshake and each request's header (ReadHeaderTimeout; net/http bounds
// the handshake by it). A client that opens TCP and sends nothing holds a
// goroutine and its connection slot this long at most.
const handshakeTimeout = 10 * time.Second

// httpIdleTimeout closes an HTTP keep-alive connection idle this long. Set
// on its own (net/http would otherwise use ReadTimeout), so changing one
// does not silently change the other. Collectors' and Prometheus's HTTP
// clients reopen a closed idle connection transparently.
const httpIdleTimeout = time.Minute

// streamHeadroom is how many calls in flight one KEDA connection may have
// beside --max-streams open streams (grpc.MaxConcurrentStreams). KEDA
// pools one connection for every trigger, so the per-connection limit must
// hold all of them.
const streamHeadroom = 1024

// Addrs are the bound listener addresses (resolved when a port was 0).
type Addrs struct {
	OTLPGRPC string
	Scaler   string
	HTTP     string
}

// Server is one running keda-otel-scaler process.
type Server struct {
	cfg    config.Config
	set    Settings
	logger *slog.Logger

	store    *store.Store
	state    *stateDir
	engine   *query.Engine
	scaler   *scaler.Scaler
	receiver *receiver.Receiver
	boundary *panicBoundary
	status   *status.Handler
	// stopStatus ends the status page's rate sampler (Start to Shutdown).
	stopStatus context.CancelFunc
	lazy       *interest.Registry // --lazy-ingest; nil when off
	fresh      *freshCounter      // fresh series, for GET /api/v1/status/freshness
	peers      *peerGate          // --ready-peers (peers.go); nil when off

	otlpSrv, kedaSrv       *grpc.Server
	otlpHealth, kedaHealth *health.Server
	httpSrv                *http.Server
	otlpLis, kedaLis       net.Listener
	httpLis                net.Listener
	sec                    *security
	// Connection caps, one per listener (connlimit.go).
	otlpConns, kedaConns, httpConns *connLimit

	ready    atomic.Bool
	readyMu  sync.Mutex // guards serving and stopping, and orders health changes (applyReady)
	serving  bool
	stopping bool
	stopOnce sync.Once
	group    *errgroup.Group
}

// New builds every component; nothing is bound or started yet.
func New(cfg config.Config, set Settings) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if set.Logger == nil {
		set.Logger = slog.New(slog.DiscardHandler)
	}
	if set.Registry == nil {
		set.Registry = prometheus.NewRegistry()
		set.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if set.Now == nil {
		set.Now = time.Now
	}
	s := &Server{cfg: cfg, set: set, logger: set.Logger.With("component", "server")}
	s.store = store.New(cfg.StoreConfig(), store.Settings{Logger: set.Logger, Now: set.Now, Registerer: set.Registry})
	s.state = newStateDir(cfg.Server.StateDir, cfg.Server.CheckpointInterval, s.store, s.logger, set.Now, set.Registry)
	s.engine = query.NewEngine(s.store)
	// Every plan, the HTTP API's included, gets the label budget.
	s.engine.SetDefaults(cfg.QueryOptions())
	boundary := newPanicBoundary(s.logger, set.Registry)
	s.boundary = boundary
	filter, err := s.newIngestFilter()
	if err != nil {
		return nil, err
	}
	s.fresh = &freshCounter{count: func() int { return s.store.FreshSeries(cfg.Store.Freshness) }, now: set.Now}
	if s.peers, err = newPeerGate(cfg, s.fresh.fresh, set, set.Registry); err != nil {
		return nil, err
	}
	if s.peers != nil {
		s.peers.onPanic = func(p any, stack []byte) { boundary.record(listenerReadyPeers, "poll", p, stack) }
	}
	var catchUp func(done func())
	if s.peers != nil {
		catchUp = s.peers.begin
	}
	s.scaler = scaler.New(s.engine, s.store, cfg.ScalerConfig(), scaler.Settings{
		CatchUp: catchUp,
		Logger:  set.Logger, Registerer: set.Registry, Now: set.Now,
		OnPanic:  func(method string, p any, stack []byte) { boundary.record(listenerScaler, method, p, stack) },
		OnWarm:   s.applyReady,
		Interest: s.lazy,
	})
	rcfg := cfg.ReceiverConfig()
	rcfg.Filter = filter // built from --metric-allow-list and --lazy-ingest (lazy.go)
	s.receiver = receiver.New(s.store, rcfg, receiver.Settings{
		Logger: set.Logger, Registerer: set.Registry, OnIngest: s.scaler.OnIngest, Now: set.Now,
		OnStored: s.scaler.SawSample,
	})

	conns := newConnMetrics(set.Registry)
	s.otlpConns = conns.limit(listenerOTLP, cfg.Server.OTLPMaxConnections)
	s.kedaConns = conns.limit(listenerScaler, cfg.Server.ScalerMaxConnections)
	s.httpConns = conns.limit(listenerHTTP, cfg.Server.HTTPMaxConnections)
	hsTimeout := handshakeTimeout
	if set.handshakeTimeout > 0 {
		hsTimeout = set.handshakeTimeout
	}

	// TLS and bearer tokens (tls.go); their files are reloaded from Start to Shutdown.
	sec, err := newSecurity(cfg, set.Logger, set.Registry)
	if err != nil {
		return nil, err
	}
	s.sec = sec
	// Collectors ping as often as every 10 s, also between calls.
	kaPolicy := keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}
	otlpOpts := append(s.receiver.ServerOptions(), grpc.KeepaliveEnforcementPolicy(kaPolicy), grpc.KeepaliveParams(otlpKeepalive),
		grpc.ConnectionTimeout(hsTimeout))
	s.otlpSrv = grpc.NewServer(append(append(otlpOpts, boundary.serverOptions(listenerOTLP)...), sec.otlpOptions()...)...)
	s.receiver.RegisterGRPC(s.otlpSrv)
	kedaOpts := append([]grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(kaPolicy), grpc.KeepaliveParams(scalerKeepalive), grpc.ConnectionTimeout(hsTimeout),
		grpc.MaxConcurrentStreams(uint32(cfg.Scaler.MaxStreams) + streamHeadroom), //nolint:gosec // Validate bounds MaxStreams to 1<<24
	}, boundary.serverOptions(listenerScaler)...)
	s.kedaSrv = grpc.NewServer(append(kedaOpts, sec.kedaOptions()...)...)
	var impl externalscaler.ExternalScalerServer = s.scaler
	if set.wrapScaler != nil {
		impl = set.wrapScaler(impl)
	}
	externalscaler.RegisterExternalScalerServer(s.kedaSrv, impl)
	s.otlpHealth, s.kedaHealth = health.NewServer(), health.NewServer()
	for _, p := range []struct {
		srv *grpc.Server
		h   *health.Server
	}{{s.otlpSrv, s.otlpHealth}, {s.kedaSrv, s.kedaHealth}} {
		healthpb.RegisterHealthServer(p.srv, p.h)
		if cfg.Server.GRPCReflection {
			reflection.Register(p.srv)
		}
		p.h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/metrics", sec.ingest(s.receiver))
	apiMux := http.NewServeMux()
	promapi.New(s.engine, s.store, cfg.PromAPIConfig(), promapi.Settings{Now: set.Now}).Register(apiMux)
	mux.Handle("/api/", s.asking(apiMux))
	mux.HandleFunc("GET "+freshnessPath, s.freshnessHandler)
	mux.Handle("/metrics", promhttp.HandlerFor(set.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	s.status = newStatus(s, cfg)
	s.status.Register(mux)
	if set.register != nil {
		set.register(s.otlpSrv, mux)
	}
	// ReadHeaderTimeout, ReadTimeout and MaxHeaderBytes bound what a slow
	// or oversized request holds: its connection and goroutine (an OTLP
	// request takes its in-flight slot once its body is read), for at
	// most a minute. ReadHeaderTimeout also bounds the TLS handshake.
	// Header blocks of 64 KiB are far above real ones.
	s.httpSrv = &http.Server{
		Handler: boundary.http(readOnly(mux)), ReadHeaderTimeout: hsTimeout, ReadTimeout: time.Minute,
		IdleTimeout: httpIdleTimeout, MaxHeaderBytes: 64 << 10, TLSConfig: sec.httpTLS(),
		ErrorLog: log.New(httpErrorLog{s.logger}, "", 0),
	}
	return s, nil
}

// Store returns the server's store (for in-process tools such as demo).
func (s *Server) Store() *store.Store { return s.store }

// Engine returns the server's query engine.
func (s *Server) Engine() *query.Engine { return s.engine }

// Start binds every listener and starts serving. A busy port is reported
// here, before readiness turns on.
func (s *Server) Start() error {
	var err error
	// An unusable --state-dir stops the start before anything listens
	// (statedir.go).
	if s.state.enabled() {
		if err := s.state.prepare(); err != nil {
			return err
		}
	}
	if s.otlpLis, err = net.Listen("tcp", s.cfg.Server.OTLPGRPCAddr); err != nil {
		return fmt.Errorf("listen otlp-grpc-addr %s: %w", s.cfg.Server.OTLPGRPCAddr, err)
	}
	if s.kedaLis, err = net.Listen("tcp", s.cfg.Server.ScalerAddr); err != nil {
		_ = s.otlpLis.Close()
		return fmt.Errorf("listen scaler-addr %s: %w", s.cfg.Server.ScalerAddr, err)
	}
	if s.httpLis, err = net.Listen("tcp", s.cfg.Server.HTTPAddr); err != nil {
		_ = s.otlpLis.Close()
		_ = s.kedaLis.Close()
		return fmt.Errorf("listen http-addr %s: %w", s.cfg.Server.HTTPAddr, err)
	}
	// Each listener admits at most its --*-max-connections (connlimit.go).
	s.otlpLis, s.kedaLis, s.httpLis = s.otlpConns.wrap(s.otlpLis), s.kedaConns.wrap(s.kedaLis), s.httpConns.wrap(s.httpLis)
	// Restore before anything serves or sweeps, so the first KEDA call
	// and the first push see the restored series.
	freshRestore := s.state.enabled() && s.state.restore(s.cfg.Store.Freshness)
	// The store's TTL sweeper runs until Shutdown stops it.
	if err := s.store.Start(context.Background()); err != nil {
		_ = s.otlpLis.Close()
		_ = s.kedaLis.Close()
		_ = s.httpLis.Close()
		return fmt.Errorf("start store: %w", err)
	}
	if freshRestore {
		s.scaler.EndWarmup() // before serving: no call sees a warm-up
	}
	if s.state.enabled() {
		s.state.startLoop() // periodic checkpoints until Shutdown
	}
	s.group = &errgroup.Group{}
	// A shutdown that races the start makes Serve return ErrServerStopped;
	// that is a clean stop, not a failure.
	serve := func(g *grpc.Server, lis net.Listener) func() error {
		return func() error {
			if err := g.Serve(lis); !errors.Is(err, grpc.ErrServerStopped) {
				return err
			}
			return nil
		}
	}
	sctx, stop := context.WithCancel(context.Background())
	s.stopStatus = stop
	s.group.Go(func() error { s.status.Run(sctx); return nil })
	s.group.Go(serve(s.otlpSrv, s.otlpLis))
	s.group.Go(serve(s.kedaSrv, s.kedaLis))
	s.sec.watcher.Start()
	s.group.Go(func() error {
		serveHTTP := s.httpSrv.Serve
		if s.httpSrv.TLSConfig != nil {
			serveHTTP = func(l net.Listener) error { return s.httpSrv.ServeTLS(l, "", "") }
		}
		if err := serveHTTP(s.httpLis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	s.otlpHealth.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.readyMu.Lock()
	s.serving = true
	s.readyMu.Unlock()
	s.applyReady()
	// Warm-up counts from the moment the OTLP listener serves, or with
	// --ready-after-fresh from the first fresh sample (keda-contract.md §8.2).
	s.scaler.Start()
	s.applyReady()
	a := s.Addrs()
	s.logger.Info("Serving", "version", s.set.Version, "otlp_grpc_addr", a.OTLPGRPC, "scaler_addr", a.Scaler, "http_addr", a.HTTP)
	return nil
}

// applyReady publishes readiness once the listeners serve
// (keda-contract.md §8.2): the KEDA listener's health is SERVING only
// after warm-up (GetMetrics and IsActive would answer Unavailable before),
// the OTLP listener's from the start (it must receive to warm up); /readyz
// turns 200 when the listeners serve, or with --ready-after-fresh only
// after warm-up, so an HA replica joins the Service KEDA asks only with
// fresh data. The scaler calls it when warm-up ends.
func (s *Server) applyReady() {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if !s.serving || s.stopping {
		return
	}
	warm := s.scaler.Warm()
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if warm {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.kedaHealth.SetServingStatus("", st)
	s.ready.Store(warm || !s.cfg.Scaler.ReadyAfterFresh)
}

// Addrs returns the bound addresses; valid after Start.
func (s *Server) Addrs() Addrs {
	return Addrs{OTLPGRPC: s.otlpLis.Addr().String(), Scaler: s.kedaLis.Addr().String(), HTTP: s.httpLis.Addr().String()}
}

// Shutdown drains and stops every listener: readiness turns 503, new
// Exports and KEDA calls get Unavailable, open streams end with OK, then
// in-flight calls finish or are cut at ctx's deadline. It is idempotent and
// returns once every serving goroutine has exited.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		s.readyMu.Lock()
		s.stopping = true
		s.ready.Store(false)
		s.readyMu.Unlock()
		s.otlpHealth.Shutdown()
		s.kedaHealth.Shutdown()
		s.receiver.Drain()
		s.scaler.Drain()
		if s.peers != nil {
			s.peers.close()
		}
		var wg sync.WaitGroup
		for _, g := range []*grpc.Server{s.kedaSrv, s.otlpSrv} {
			wg.Go(func() {
				done := make(chan struct{})
				go func() { g.GracefulStop(); close(done) }()
				select {
				case <-done:
				case <-ctx.Done():
					g.Stop()
					<-done
				}
			})
		}
		herr := s.httpSrv.Shutdown(ctx)
		if herr != nil {
			_ = s.httpSrv.Close()
		}
		wg.Wait()
		s.sec.watcher.Stop()
		if s.stopStatus != nil {
			s.stopStatus()
		}
		if s.group != nil {
			err = s.group.Wait()
		}
		if serr := s.store.Shutdown(ctx); err == nil && serr != nil {
			err = fmt.Errorf("stop store: %w", serr)
		}
		if err == nil && herr != nil && !errors.Is(herr, context.DeadlineExceeded) {
			err = herr
		}
		// Every listener has stopped: the last checkpoint holds every
		// acknowledged sample. A server that never started must not
		// replace a good checkpoint with its empty store.
		s.state.stopLoop()
		if s.group != nil && s.state.enabled() {
			switch serr := s.state.save(ctx, true); {
			case serr == nil:
			case ctx.Err() != nil:
				// Out of grace: the last periodic checkpoint stays, at
				// most --checkpoint-interval old.
				s.logger.Warn("Store checkpoint abandoned at the shutdown deadline; the previous one stays", "state_dir", s.cfg.Server.StateDir, "err", serr)
			default:
				s.logger.Error("Store checkpoint not saved at shutdown; the previous one stays", "state_dir", s.cfg.Server.StateDir, "err", serr)
				err = errors.Join(err, serr)
			}
		}
		s.logger.Info("Stopped")
	})
	return err
}

// Run starts the server, serves until ctx ends, then shuts down within
// the configured grace period.
func Run(ctx context.Context, cfg config.Config, set Settings) error {
	s, err := New(cfg, set)
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	s.logger.Info("Shutting down", "grace", cfg.Server.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Server.ShutdownTimeout)
	defer cancel()
	return s.Shutdown(sctx)
}

// newStatus builds the status routes (GET /api/v1/triggers, /status, /)
// over the server's components.
func newStatus(s *Server, cfg config.Config) *status.Handler {
	var flags []status.Flag
	for _, f := range config.Flags(cfg) {
		flags = append(flags, status.Flag{Name: f.Name, Value: f.Value})
	}
	return status.New(status.Sources{
		Scaler: s.scaler, Receiver: s.receiver, Store: s.store, Engine: s.engine,
		Now: s.set.Now, Version: s.set.Version, Flags: flags,
	})
}
