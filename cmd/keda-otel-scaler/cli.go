package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

// subcommand is the flag handling the subcommands share: a FlagSet that
// reports to stderr, flags before or after positional arguments, the exit
// codes (0 after -h, 2 for a usage error) and errors prefixed with the
// command's name.
type subcommand struct {
	name string // "keda-otel-scaler query"
	fs   *flag.FlagSet
	err  *printer
}

// newSubcommand returns the subcommand's FlagSet wiring. usage, when set,
// is the synopsis printed before the flags ("query '<expr>' [flags]").
func newSubcommand(name, usage string, stderr io.Writer) *subcommand {
	c := &subcommand{name: "keda-otel-scaler " + name, fs: flag.NewFlagSet("keda-otel-scaler "+name, flag.ContinueOnError), err: &printer{w: stderr}}
	c.fs.SetOutput(stderr)
	if usage != "" {
		c.fs.Usage = func() {
			c.err.printf("Usage: keda-otel-scaler %s\n", usage)
			c.fs.PrintDefaults()
		}
	}
	return c
}

// errorf prints "keda-otel-scaler <name>: <message>" on stderr.
func (c *subcommand) errorf(format string, args ...any) {
	c.err.printf(c.name+": "+format+"\n", args...)
}

// parse parses args and checks that there are want positional arguments
// (what says how many of what, "one query expression", in the error; with
// want 0 it is a hint). ok false means the command ends with code.
func (c *subcommand) parse(args []string, want int, what string) (pos []string, code int, ok bool) {
	pos, err := parseInterspersed(c.fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, 0, false
	}
	if err != nil {
		return nil, 2, false // the flag package printed it
	}
	if len(pos) != want {
		if want == 0 {
			c.errorf("unexpected arguments %q%s", pos, what)
		} else {
			c.errorf("want exactly %s, got %d", what, len(pos))
			c.fs.Usage()
		}
		return nil, 2, false
	}
	return pos, 0, true
}

// parseInterspersed parses flags that may come before or after positional
// arguments ("query 'up' --server …" as well as "query --server … 'up'").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// httpFlags are the flags of the subcommands that call the server's HTTP
// listener, which may serve TLS (--http-tls-cert-file) and require client
// certificates (--http-tls-client-ca-file).
type httpFlags struct {
	server             string
	caFile             string
	certFile, keyFile  string
	insecureSkipVerify bool
	timeout            time.Duration
}

func (h *httpFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.server, "server", "http://127.0.0.1:8080", "base URL of the scaler's HTTP listener, http:// or https:// (`url`)")
	fs.StringVar(&h.caFile, "ca-file", "", "PEM CA certificates that sign an https:// server's certificate; default the system's (`path`)")
	fs.StringVar(&h.certFile, "cert-file", "", "PEM client certificate, for a server with --http-tls-client-ca-file; needs --key-file (`path`)")
	fs.StringVar(&h.keyFile, "key-file", "", "PEM private key of --cert-file (`path`)")
	fs.BoolVar(&h.insecureSkipVerify, "insecure-skip-verify", false, "do not verify an https:// server's certificate and name (testing only)")
	fs.DurationVar(&h.timeout, "timeout", 10*time.Second, "request timeout (`duration`)")
}

// client checks the flags together and returns the HTTP client they
// describe. The caller closes its idle connections when done.
func (h *httpFlags) client() (*http.Client, error) {
	u, err := url.Parse(h.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want http://host:port or https://host:port", h.server)
	}
	if (h.certFile == "") != (h.keyFile == "") {
		return nil, errors.New("--cert-file and --key-file go together")
	}
	tlsFlags := h.caFile != "" || h.certFile != "" || h.insecureSkipVerify
	if u.Scheme == "http" {
		if tlsFlags {
			return nil, fmt.Errorf("--ca-file, --cert-file, --key-file and --insecure-skip-verify need an https:// --server, got %q", h.server)
		}
		return &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: h.insecureSkipVerify} //nolint:gosec // only when asked for, for testing
	if h.caFile != "" {
		b, err := os.ReadFile(h.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", h.caFile)
		}
	}
	if h.certFile != "" {
		kp, err := tls.LoadX509KeyPair(h.certFile, h.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert-file/--key-file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	// HTTP/1.1 only: under TLS 1.3 the server checks the client's
	// certificate after the client's handshake is done, and HTTP/2 reports
	// its refusal as "client conn could not be established"; HTTP/1.1
	// reads the server's alert ("tls: certificate required").
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP1(true)
	return &http.Client{Transport: t}, nil
}
