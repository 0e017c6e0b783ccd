// Package bearer authenticates OTLP ingest with bearer tokens
// (docs/otlp-contract.md §2): the `authorization` metadata of an OTLP/gRPC
// Export and the `Authorization: Bearer …` header of an OTLP/HTTP POST,
// which is what the OpenTelemetry Collector's bearertokenauth extension
// sends on its otlp and otlphttp exporters.
//
// Tokens come from a file, one a line (blank lines are ignored), reloaded
// through pkg/internal/reload when it changes. Only their SHA-256 digests
// are kept. A presented token is hashed and compared with every digest
// with crypto/subtle, without stopping at a match, so the time taken
// depends neither on which token matched nor on how much of a wrong token
// was right, nor on the presented token's length beyond the hash.
//
// The check runs before the request body is read: on gRPC as the server's
// InTapHandle, which refuses the stream when its headers arrive, before any
// message is received or decoded; on HTTP as a handler in front of the
// receiver. A refused request gets Unauthenticated / 401 with the same
// message whether the token was missing or wrong, and nothing of it is
// stored.
package bearer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/code"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/reload"
)

// MaxTokenLength is the longest token accepted, in the file and in a
// request; a longer credential is refused before it is hashed, so the
// check's cost is bounded whatever a client sends.
const MaxTokenLength = 4096

// Outcomes of one check, the outcome label of
// keda_otel_scaler_receiver_auth_total.
const (
	OutcomeAccepted = "accepted"
	OutcomeMissing  = "missing" // no credential, or not a bearer credential
	OutcomeInvalid  = "invalid" // a bearer token that matches none
)

// refusal is the message of every refused request: it does not say
// whether the token was missing or wrong.
const refusal = "missing or invalid bearer token"

// Tokens is the current set of accepted tokens.
type Tokens struct {
	// digests is replaced as a whole by parse (the watcher's goroutine)
	// and read by every check; a stored slice is never modified.
	digests atomic.Pointer[[][sha256.Size]byte]
}

// ParseTokens reads a token file: one token a line, surrounding
// whitespace trimmed, blank lines ignored. A file without a token is an
// error (an empty file is what a truncating writer leaves mid-write), as
// is a token with inner whitespace or control bytes or longer than
// MaxTokenLength. It returns the tokens' digests.
func ParseTokens(b []byte) ([][sha256.Size]byte, error) {
	var out [][sha256.Size]byte
	for i, line := range bytes.Split(b, []byte("\n")) {
		tok := bytes.TrimSpace(line)
		if len(tok) == 0 {
			continue
		}
		if len(tok) > MaxTokenLength {
			return nil, fmt.Errorf("line %d: token longer than %d bytes", i+1, MaxTokenLength)
		}
		for _, c := range tok {
			if c <= ' ' || c == 0x7f {
				return nil, fmt.Errorf("line %d: token contains whitespace or a control byte", i+1)
			}
		}
		out = append(out, sha256.Sum256(tok))
	}
	if len(out) == 0 {
		return nil, errors.New("no token in file")
	}
	return out, nil
}

// Set replaces the accepted tokens.
func (t *Tokens) Set(digests [][sha256.Size]byte) { t.digests.Store(&digests) }

// check classifies one Authorization value ("" when absent).
func (t *Tokens) check(authz string) string {
	tok, ok := token(authz)
	if !ok {
		return OutcomeMissing
	}
	if len(tok) > MaxTokenLength {
		return OutcomeInvalid
	}
	var buf [MaxTokenLength]byte // a []byte(tok) conversion would allocate
	d := sha256.Sum256(buf[:copy(buf[:], tok)])
	match := 0
	if p := t.digests.Load(); p != nil {
		for i := range *p {
			match |= subtle.ConstantTimeCompare(d[:], (*p)[i][:])
		}
	}
	if match == 1 {
		return OutcomeAccepted
	}
	return OutcomeInvalid
}

// token extracts the token of a "Bearer <token>" credential; the scheme is
// case-insensitive (RFC 7235 §2.1).
func token(authz string) (string, bool) {
	const scheme = "bearer "
	if len(authz) <= len(scheme) || !strings.EqualFold(authz[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimLeft(authz[len(scheme):], " ")
	return tok, tok != ""
}

// Auth checks requests against Tokens and counts the outcomes.
type Auth struct {
	tokens Tokens
	total  *prometheus.CounterVec
	// counts holds total's children, resolved once: [transport][outcome].
	counts map[string]map[string]prometheus.Counter
	// reload counters for the token file
	reloads, reloadErrors prometheus.Counter
}

// New reads the token file now (an error fails the start), registers it
// with w for reloads and registers the counters with reg (nil: none).
func New(w *reload.Watcher, file string, reg prometheus.Registerer) (*Auth, error) {
	a := &Auth{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_auth_total",
			Help: "OTLP requests checked for a bearer token, by transport (grpc, http) and outcome (accepted, missing, invalid).",
		}, []string{"transport", "outcome"}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_auth_token_reloads_total",
			Help: "Bearer-token file changes applied without a restart.",
		}),
		reloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keda_otel_scaler_receiver_auth_token_reload_errors_total",
			Help: "Changed bearer-token files that could not be used (the previous tokens stay in force).",
		}),
	}
	a.counts = map[string]map[string]prometheus.Counter{}
	for _, tr := range []string{"grpc", "http"} {
		a.counts[tr] = map[string]prometheus.Counter{}
		for _, o := range []string{OutcomeAccepted, OutcomeMissing, OutcomeInvalid} {
			a.counts[tr][o] = a.total.WithLabelValues(tr, o)
		}
	}
	if reg != nil {
		reg.MustRegister(a.total, a.reloads, a.reloadErrors)
	}
	parse := func(contents [][]byte) error {
		d, err := ParseTokens(contents[0])
		if err != nil {
			return err
		}
		a.tokens.Set(d)
		return nil
	}
	result := func(err error) {
		if err != nil {
			a.reloadErrors.Inc()
			return
		}
		a.reloads.Inc()
	}
	if err := w.Add("OTLP bearer tokens", []string{file}, parse, result); err != nil {
		return nil, fmt.Errorf("bearer token file: %w", err)
	}
	return a, nil
}

// TapHandle refuses streams of method (the OTLP Export method) that carry
// no accepted token, before their message is read. Other methods (health,
// reflection) pass. grpc-go runs it on the connection's reader goroutine,
// so it does no I/O and its cost is bounded by MaxTokenLength.
func (a *Auth) TapHandle(method string) tap.ServerInHandle {
	refused := status.Error(codes.Unauthenticated, refusal)
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if info.FullMethodName != method {
			return ctx, nil
		}
		var authz string
		if v := info.Header.Get("authorization"); len(v) == 1 {
			authz = v[0]
		} else if len(v) > 1 {
			a.counts["grpc"][OutcomeInvalid].Inc()
			return ctx, refused
		}
		o := a.tokens.check(authz)
		a.counts["grpc"][o].Inc()
		if o != OutcomeAccepted {
			return ctx, refused
		}
		return ctx, nil
	}
}

// HTTP wraps next (the OTLP/HTTP receiver): a request without an accepted
// token gets 401 with `WWW-Authenticate: Bearer` and its body is never
// read.
func (a *Auth) HTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var authz string
		if v := r.Header.Values("Authorization"); len(v) == 1 {
			authz = v[0]
		} else if len(v) > 1 {
			a.refuseHTTP(w, r, OutcomeInvalid)
			return
		}
		o := a.tokens.check(authz)
		if o != OutcomeAccepted {
			a.refuseHTTP(w, r, o)
			return
		}
		a.counts["http"][o].Inc()
		next.ServeHTTP(w, r)
	})
}

// refuseHTTP answers 401 with the google.rpc.Status body OTLP/HTTP
// prescribes for errors, in the request's encoding (protobuf or JSON).
func (a *Auth) refuseHTTP(w http.ResponseWriter, r *http.Request, outcome string) {
	a.counts["http"][outcome].Inc()
	st := &spb.Status{Code: int32(code.Code_UNAUTHENTICATED), Message: refusal}
	ct := "application/json"
	var body []byte
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-protobuf" {
		ct = mt
		body, _ = proto.Marshal(st)
	} else {
		body, _ = protojson.Marshal(st)
	}
	h := w.Header()
	h.Set("WWW-Authenticate", "Bearer")
	h.Set("Content-Type", ct)
	// The body is not read: closing the connection afterwards keeps an
	// unauthenticated client from streaming it in anyway.
	h.Set("Connection", "close")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(body)
}
