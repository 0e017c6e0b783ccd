package server

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawH2 is a minimal HTTP/2 client on one TCP connection, for clients that
// grpc-go would never be: one that stops after the handshake, or one that
// advertises a zero stream window and so never lets the server send a
// byte of a stream's messages. Its reader answers SETTINGS and PING (the
// connection stays healthy for keepalive) and counts the DATA bytes it
// receives; it sends WINDOW_UPDATE only when told to.
type rawH2 struct {
	c    net.Conn
	fr   *http2.Framer
	mu   sync.Mutex // serialises writes
	data atomic.Int64
	done chan struct{}
}

// handshakeH2 writes the client preface with SETTINGS (the initial stream
// window is window) and a PING, and reads until the server's SETTINGS and
// the PING's ack have arrived: the server's transport is then up.
func handshakeH2(c net.Conn, window uint32) (*http2.Framer, error) {
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		return nil, err
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window}); err != nil {
		return nil, err
	}
	if err := fr.WritePing(false, [8]byte{1}); err != nil {
		return nil, err
	}
	for settings, pong := false, false; !settings || !pong; {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				settings = true
				if err := fr.WriteSettingsAck(); err != nil {
					return nil, err
				}
			}
		case *http2.PingFrame:
			pong = pong || f.IsAck()
		}
	}
	return fr, c.SetDeadline(time.Time{})
}

// dialRawH2 connects and handshakes, then keeps reading until Close.
func dialRawH2(t *testing.T, addr string, window uint32) *rawH2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	fr, err := handshakeH2(c, window)
	require.NoError(t, err)
	r := &rawH2{c: c, fr: fr, done: make(chan struct{})}
	go r.read()
	t.Cleanup(r.close)
	return r
}

func (r *rawH2) read() {
	defer close(r.done)
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return
		}
		r.mu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = r.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = r.fr.WritePing(true, f.Data)
			}
		case *http2.DataFrame:
			r.data.Add(int64(len(f.Data())))
		}
		r.mu.Unlock()
	}
}

// call opens stream id as a gRPC call of path with one request message.
func (r *rawH2) call(t *testing.T, id uint32, path string, msg []byte) {
	t.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{
		{":method", "POST"},
		{":scheme", "http"},
		{":path", path},
		{":authority", "127.0.0.1"},
		{"content-type", "application/grpc"},
		{"te", "trailers"},
	} {
		require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	body := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg))) //nolint:gosec // a test message
	copy(body[5:], msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	require.NoError(t, r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}))
	require.NoError(t, r.fr.WriteData(id, true, body))
}

// grant opens stream id's window by n bytes (and the connection's).
func (r *rawH2) grant(t *testing.T, id, n uint32) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.NoError(t, r.fr.WriteWindowUpdate(0, n))
	require.NoError(t, r.fr.WriteWindowUpdate(id, n))
}

func (r *rawH2) close() {
	_ = r.c.Close()
	<-r.done
}

// Environment of the idle-connection subprocess (idleClientMain).
const (
	envIdleAddr  = "KOS_TEST_IDLE_CLIENT_ADDR"
	envIdleKind  = "KOS_TEST_IDLE_CLIENT_KIND" // h2 or http1, each optionally +tls
	envIdleCount = "KOS_TEST_IDLE_CLIENT_CONNS"
)

// idleClientMain runs in a child process of the test binary (TestMain): it
// opens the connections one after another, completes each one's handshake
// (h2: the HTTP/2 preface, SETTINGS and a PING round trip; http1: one
// keep-alive GET /healthz answered), says "opened <n>" with the number the
// server kept (refused ones are closed by the server at once), and holds
// them, idle, until its stdin closes. A separate process keeps the
// client's memory out of the server's measurement.
func idleClientMain() int {
	n, err := strconv.Atoi(os.Getenv(envIdleCount))
	if err != nil {
		return 2
	}
	addr, kind := os.Getenv(envIdleAddr), os.Getenv(envIdleKind)
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return 2
		}
		if err := idleHandshake(c, kind); err != nil {
			_ = c.Close()
			continue
		}
		conns = append(conns, c)
	}
	fmt.Println("opened", len(conns))
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		_ = c.Close()
	}
	return 0
}

func idleHandshake(c net.Conn, kind string) error {
	if k, ok := strings.CutSuffix(kind, "+tls"); ok {
		proto := map[string]string{"h2": "h2", "http1": "http/1.1"}[k]
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{proto}, MinVersion: tls.VersionTLS12}) //nolint:gosec // a test client of a test certificate
		if err := tc.Handshake(); err != nil {
			return err
		}
		c, kind = tc, k
	}
	switch kind {
	case "h2":
		_, err := handshakeH2(c, 65535)
		return err
	case "http1":
		if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			return err
		}
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			return err
		}
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return err
			}
			if line == "ok\n" { // the body: the response is complete
				return c.SetDeadline(time.Time{})
			}
		}
	}
	return errors.New("unknown kind")
}

// openIdle starts a child process that opens n idle connections of kind
// to addr and returns how many the server kept; they close when the test
// ends or when release is called.
func openIdle(t *testing.T, addr, kind string, n int) (kept int, release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envIdleAddr+"="+addr, envIdleKind+"="+kind, envIdleCount+"="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var once sync.Once
	release = func() {
		once.Do(func() {
			_ = stdin.Close()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(release)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "idle client")
	kept, err = strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "opened "))
	require.NoError(t, err, "idle client said %q", line)
	return kept, release
}
