package bearer

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/encoding/protojson"

	spb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/internal/reload"
)

func TestParseTokens(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       []string
		wantErr    string
	}{
		{"one a line, blank lines ignored, CRLF and spaces trimmed", "a\n\n  b \r\n\t\nc", []string{"a", "b", "c"}, ""},
		{"empty file", "", nil, "no token"},
		{"only blank lines", "\n \n\r\n", nil, "no token"},
		{"inner space", "a b\n", nil, "line 1"},
		{"control byte", "ok\na\x00b\n", nil, "line 2"},
		{"too long", strings.Repeat("x", MaxTokenLength+1), nil, "longer than"},
		{"longest", strings.Repeat("x", MaxTokenLength), []string{strings.Repeat("x", MaxTokenLength)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTokens([]byte(tc.file))
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			var want [][sha256.Size]byte
			for _, w := range tc.want {
				want = append(want, sha256.Sum256([]byte(w)))
			}
			assert.Equal(t, want, got)
		})
	}
}

func TestCheck(t *testing.T) {
	var tk Tokens
	assert.Equal(t, OutcomeInvalid, tk.check("Bearer x"), "no tokens loaded: nothing is accepted")
	d, err := ParseTokens([]byte("secret-1\nsecret-2\n"))
	require.NoError(t, err)
	tk.Set(d)
	for _, tc := range []struct{ authz, want string }{
		{"Bearer secret-1", OutcomeAccepted},
		{"Bearer secret-2", OutcomeAccepted},
		{"bearer secret-2", OutcomeAccepted},
		{"BEARER secret-1", OutcomeAccepted},
		{"Bearer   secret-1", OutcomeAccepted},
		{"", OutcomeMissing},
		{"Bearer", OutcomeMissing},
		{"Bearer ", OutcomeMissing},
		{"Basic c2VjcmV0LTE=", OutcomeMissing},
		{"secret-1", OutcomeMissing},
		{"Bearersecret-1", OutcomeMissing},
		{"Bearer secret-3", OutcomeInvalid},
		{"Bearer secret-1 ", OutcomeInvalid},
		{"Bearer secret", OutcomeInvalid},
		{"Bearer " + strings.Repeat("s", MaxTokenLength+1), OutcomeInvalid},
	} {
		assert.Equal(t, tc.want, tk.check(tc.authz), "%q", tc.authz)
	}
}

func newAuth(t *testing.T, tokens string) (*Auth, *prometheus.Registry) {
	t.Helper()
	return newAuthTB(t, tokens)
}

func benchAuth(tb testing.TB, tokens string) *Auth {
	tb.Helper()
	a, _ := newAuthTB(tb, tokens)
	return a
}

func newAuthTB(t testing.TB, tokens string) (*Auth, *prometheus.Registry) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(f, []byte(tokens), 0o600))
	reg := prometheus.NewRegistry()
	a, err := New(reload.New(0, nil), f, reg)
	require.NoError(t, err)
	return a, reg
}

// panicBody fails the test if the handler reads the body.
type panicBody struct{ t *testing.T }

func (p panicBody) Read([]byte) (int, error) {
	p.t.Error("the body of an unauthenticated request was read")
	return 0, io.EOF
}

func TestHTTP(t *testing.T) {
	a, _ := newAuth(t, "tok\n")
	reached := 0
	h := a.HTTP(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached++ }))
	for _, tc := range []struct {
		name   string
		authz  []string
		ct     string
		status int
	}{
		{"accepted", []string{"Bearer tok"}, "application/x-protobuf", http.StatusOK},
		{"missing", nil, "application/json", http.StatusUnauthorized},
		{"wrong, protobuf answer", []string{"Bearer nope"}, "application/x-protobuf", http.StatusUnauthorized},
		{"two headers", []string{"Bearer tok", "Bearer tok"}, "application/json", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := reached
			req := httptest.NewRequest(http.MethodPost, "/v1/metrics", io.NopCloser(panicBody{t}))
			req.Header.Set("Content-Type", tc.ct)
			for _, v := range tc.authz {
				req.Header.Add("Authorization", v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			assert.Equal(t, tc.status, rec.Code)
			if tc.status == http.StatusOK {
				assert.Equal(t, before+1, reached)
				return
			}
			assert.Equal(t, before, reached, "the receiver is not called")
			assert.Equal(t, "Bearer", rec.Header().Get("WWW-Authenticate"))
			assert.Equal(t, tc.ct, rec.Header().Get("Content-Type"))
			if tc.ct == "application/json" {
				var st spb.Status
				require.NoError(t, protojson.Unmarshal(rec.Body.Bytes(), &st))
				assert.Equal(t, int32(codes.Unauthenticated), st.GetCode())
				assert.Equal(t, refusal, st.GetMessage())
			}
		})
	}
}

func TestTapHandle(t *testing.T) {
	a, reg := newAuth(t, "tok\n")
	h := a.TapHandle("/svc/Export")
	for _, tc := range []struct {
		method string
		md     metadata.MD
		ok     bool
	}{
		{"/svc/Export", metadata.Pairs("authorization", "Bearer tok"), true},
		{"/svc/Export", metadata.MD{}, false},
		{"/svc/Export", metadata.Pairs("authorization", "Bearer no"), false},
		{"/svc/Export", metadata.Pairs("authorization", "Bearer tok", "authorization", "Bearer tok"), false},
		{"/grpc.health.v1.Health/Check", metadata.MD{}, true},
	} {
		_, err := h(context.Background(), &tap.Info{FullMethodName: tc.method, Header: tc.md})
		if tc.ok {
			require.NoError(t, err, "%s %v", tc.method, tc.md)
			continue
		}
		assert.Equal(t, codes.Unauthenticated, status.Code(err))
		assert.Equal(t, refusal, status.Convert(err).Message())
	}
	assert.InDelta(t, 1, testutil.ToFloat64(a.total.WithLabelValues("grpc", OutcomeAccepted)), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(a.total.WithLabelValues("grpc", OutcomeMissing)), 0)
	assert.InDelta(t, 2, testutil.ToFloat64(a.total.WithLabelValues("grpc", OutcomeInvalid)), 0)
	n, err := testutil.GatherAndCount(reg, "keda_otel_scaler_receiver_auth_total")
	require.NoError(t, err)
	assert.Equal(t, 6, n, "every transport and outcome is exported from the start")
}

// FuzzParseTokens: any file either fails or yields tokens each of which
// is accepted as "Bearer <token>", and no other line content is.
func FuzzParseTokens(f *testing.F) {
	f.Add([]byte("a\nb\n"))
	f.Add([]byte("\r\n  x  \r\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseTokens(b)
		if err != nil {
			return
		}
		var tk Tokens
		tk.Set(d)
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			tok := strings.TrimSpace(line)
			if tok == "" {
				continue
			}
			n++
			if got := tk.check("Bearer " + tok); got != OutcomeAccepted {
				t.Fatalf("token %q from the file: %s", tok, got)
			}
		}
		if n != len(d) {
			t.Fatalf("%d tokens in the file, %d parsed", n, len(d))
		}
	})
}

// FuzzCheck: any Authorization value is classified without panicking, and
// only the exact token is accepted.
func FuzzCheck(f *testing.F) {
	f.Add("Bearer tok")
	f.Add("bearer  tok")
	f.Add("Basic x")
	f.Add("")
	var tk Tokens
	d, err := ParseTokens([]byte("tok\n"))
	if err != nil {
		f.Fatal(err)
	}
	tk.Set(d)
	f.Fuzz(func(t *testing.T, authz string) {
		got := tk.check(authz)
		tok, ok := token(authz)
		want := OutcomeMissing
		if ok {
			want = OutcomeInvalid
			if tok == "tok" {
				want = OutcomeAccepted
			}
		}
		if got != want {
			t.Fatalf("%q: %s, want %s", authz, got, want)
		}
		if got == OutcomeAccepted && !strings.EqualFold(authz[:7], "bearer ") {
			t.Fatalf("%q accepted without the bearer scheme", authz)
		}
	})
}

// TestCheckAllocs: the check allocates nothing, accepted or refused (an
// allocation gate: it runs on every authenticated Export).
func TestCheckAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts under -race are not the program's; make gates runs this")
	}
	a := benchAuth(t, tokensFile(4))
	h := a.TapHandle("/m")
	for _, authz := range []string{fmt.Sprintf("Bearer token-%032d", 3), "Bearer wrong", ""} {
		info := &tap.Info{FullMethodName: "/m", Header: metadata.Pairs("authorization", authz)}
		if n := testing.AllocsPerRun(100, func() { _, _ = h(context.Background(), info) }); n != 0 {
			t.Errorf("%q: %v allocations per check", authz, n)
		}
	}
}
