package browser

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// chromiumFlags are what Chromium needs on a machine with no display and
// no network beyond loopback: without the background-networking flags it
// keeps trying to reach Google's hosts.
var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
	"--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
}

// chromiumPath finds Debian's chromium (or CHROMIUM).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium at /usr/bin/chromium: run `make browser-test`, which installs Debian's chromium package, or set CHROMIUM")
	return ""
}

// browser is a running headless Chromium and a DevTools connection to it.
type browser struct {
	cmd  *exec.Cmd
	conn *websocket.Conn
	done chan struct{} // closed when the reader has returned

	mu      sync.Mutex
	nextID  int
	pending map[int]chan message
	events  []message
}

type message struct {
	ID        int             `json:"id,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// startBrowser starts Chromium with a fresh profile and connects to its
// DevTools endpoint, which Chromium writes to DevToolsActivePort.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	// A fresh profile, removed once every Chromium process has exited
	// (its helpers keep writing to it for a moment after the browser).
	profile, err := os.MkdirTemp("", "kos-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; ; i++ {
			err := os.RemoveAll(profile)
			if err == nil || i == 50 {
				if err != nil {
					t.Errorf("remove the Chromium profile: %v", err)
				}
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	args := append(append([]string{}, chromiumFlags...), "--user-data-dir="+profile, "about:blank")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, chromiumPath(t), args...)
	cmd.Stdout, cmd.Stderr = nil, nil
	// Chromium and its helpers in their own process group, which the
	// cleanup ends as a whole: only the processes this test started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start chromium: %v", err)
	}
	pgid := cmd.Process.Pid
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		cancel()
		<-waited
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
				return
			}
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	})
	var wsURL string
	deadline := time.Now().Add(30 * time.Second)
	for wsURL == "" {
		if time.Now().After(deadline) {
			t.Fatal("chromium wrote no DevToolsActivePort within 30s")
		}
		select {
		case <-waited:
			t.Fatal("chromium exited before it served DevTools")
		case <-time.After(50 * time.Millisecond):
		}
		f, err := os.Open(filepath.Join(profile, "DevToolsActivePort"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		var lines []string
		for sc.Scan() {
			lines = append(lines, strings.TrimSpace(sc.Text()))
		}
		_ = f.Close()
		if len(lines) >= 2 && lines[0] != "" {
			wsURL = "ws://127.0.0.1:" + lines[0] + lines[1]
		}
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	conn, _, err := websocket.Dial(dctx, wsURL, nil)
	if err != nil {
		t.Fatalf("connect to %s: %v", wsURL, err)
	}
	conn.SetReadLimit(64 << 20) // screenshots arrive as one message
	b := &browser{cmd: cmd, conn: conn, done: make(chan struct{}), pending: map[int]chan message{}}
	go b.read()
	t.Cleanup(func() {
		_ = conn.Close(websocket.StatusNormalClosure, "")
		<-b.done
	})
	return b
}

// read dispatches answers to their callers and keeps events, until the
// connection closes.
func (b *browser) read() {
	defer close(b.done)
	for {
		_, data, err := b.conn.Read(context.Background())
		if err != nil {
			b.mu.Lock()
			for id, ch := range b.pending {
				close(ch)
				delete(b.pending, id)
			}
			b.mu.Unlock()
			return
		}
		var m message
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		b.mu.Lock()
		if m.ID != 0 {
			if ch, ok := b.pending[m.ID]; ok {
				ch <- m
				delete(b.pending, m.ID)
			}
		} else if len(b.events) < 10_000 {
			b.events = append(b.events, m)
		}
		b.mu.Unlock()
	}
}

// call sends one DevTools command (to the page session when session is
// set) and returns its result.
func (b *browser) call(ctx context.Context, session, method string, params any) (json.RawMessage, error) {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan message, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	raw, err := json.Marshal(params)
	if err != nil {
		return nil, err
	}
	if params == nil {
		raw = []byte("{}")
	}
	data, err := json.Marshal(message{ID: id, SessionID: session, Method: method, Params: raw})
	if err != nil {
		return nil, err
	}
	if err := b.conn.Write(ctx, websocket.MessageText, data); err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%s: connection closed", method)
		}
		if m.Error != nil {
			return nil, fmt.Errorf("%s: %s (%d)", method, m.Error.Message, m.Error.Code)
		}
		return m.Result, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// page is one tab attached in flat mode.
type page struct {
	b       *browser
	session string
}

func (b *browser) newPage(ctx context.Context) (*page, error) {
	res, err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"})
	if err != nil {
		return nil, err
	}
	var tgt struct {
		TargetID string `json:"targetId"`
	}
	if err := json.Unmarshal(res, &tgt); err != nil {
		return nil, err
	}
	res, err = b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": tgt.TargetID, "flatten": true})
	if err != nil {
		return nil, err
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(res, &att); err != nil {
		return nil, err
	}
	p := &page{b: b, session: att.SessionID}
	for _, m := range []string{"Page.enable", "Runtime.enable", "Log.enable", "Network.enable"} {
		if _, err := p.call(ctx, m, nil); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *page) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	return p.b.call(ctx, p.session, method, params)
}

// events returns the page's events with one of the methods, from index
// from on, and the index to continue from.
func (p *page) eventsSince(from int, methods ...string) ([]message, int) {
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	var out []message
	for _, m := range p.b.events[min(from, len(p.b.events)):] {
		if m.SessionID == p.session && (len(methods) == 0 || contains(methods, m.Method)) {
			out = append(out, m)
		}
	}
	return out, len(p.b.events)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// setViewport sets the window's CSS size.
func (p *page) setViewport(ctx context.Context, width, height int) error {
	_, err := p.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
	})
	return err
}

// navigate loads url and waits for its load event.
func (p *page) navigate(ctx context.Context, url string) error {
	_, from := p.eventsSince(1 << 30)
	res, err := p.call(ctx, "Page.navigate", map[string]any{"url": url})
	if err != nil {
		return err
	}
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := json.Unmarshal(res, &nav); err == nil && nav.ErrorText != "" {
		return fmt.Errorf("navigate %s: %s", url, nav.ErrorText)
	}
	for {
		if ev, _ := p.eventsSince(from, "Page.loadEventFired"); len(ev) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("navigate %s: no load event: %w", url, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// eval evaluates a JavaScript expression in the page and decodes its
// value into out.
func (p *page) eval(ctx context.Context, expr string, out any) error {
	res, err := p.call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	if err != nil {
		return err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		return errors.New("evaluate: " + r.ExceptionDetails.Text)
	}
	return json.Unmarshal(r.Result.Value, out)
}

// screenshot captures the whole page as PNG at the current width.
func (p *page) screenshot(ctx context.Context) ([]byte, error) {
	res, err := p.call(ctx, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true, "fromSurface": true})
	if err != nil {
		return nil, err
	}
	var shot struct {
		Data []byte `json:"data"` // base64 in JSON, decoded by encoding/json
	}
	if err := json.Unmarshal(res, &shot); err != nil {
		return nil, err
	}
	return shot.Data, nil
}

// problems are the console errors and warnings, uncaught exceptions,
// log entries of level error and failed loads reported since from.
func (p *page) problems(from int) []string {
	evs, _ := p.eventsSince(from, "Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded", "Network.loadingFailed", "Network.responseReceived")
	var out []string
	for _, ev := range evs {
		switch ev.Method {
		case "Runtime.consoleAPICalled":
			var c struct {
				Type string            `json:"type"`
				Args []json.RawMessage `json:"args"`
			}
			_ = json.Unmarshal(ev.Params, &c)
			if c.Type == "error" || c.Type == "warning" || c.Type == "assert" {
				out = append(out, "console."+c.Type+": "+string(ev.Params))
			}
		case "Runtime.exceptionThrown":
			out = append(out, "exception: "+string(ev.Params))
		case "Log.entryAdded":
			var l struct {
				Entry struct {
					Level string `json:"level"`
					Text  string `json:"text"`
					URL   string `json:"url"`
				} `json:"entry"`
			}
			_ = json.Unmarshal(ev.Params, &l)
			if l.Entry.Level == "error" || l.Entry.Level == "warning" {
				out = append(out, "log."+l.Entry.Level+": "+l.Entry.Text+" "+l.Entry.URL)
			}
		case "Network.loadingFailed":
			out = append(out, "load failed: "+string(ev.Params))
		case "Network.responseReceived":
			var r struct {
				Response struct {
					URL    string `json:"url"`
					Status int    `json:"status"`
				} `json:"response"`
			}
			_ = json.Unmarshal(ev.Params, &r)
			if r.Response.Status >= 400 {
				out = append(out, fmt.Sprintf("HTTP %d: %s", r.Response.Status, r.Response.URL))
			}
		}
	}
	return out
}
