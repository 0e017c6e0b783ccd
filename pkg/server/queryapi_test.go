package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/server/servertest"
)

// TestQueryAPIDeadlineDoesNotOutliveItsAnswer: the query API puts a write
// deadline of --query-timeout on each answer (so a slow reader gives its
// slot back); it relies on net/http clearing that deadline once the answer
// is finished, so a keep-alive connection reused after it still gets its
// next answers, the API's and the other handlers', instead of a closed
// connection.
func TestQueryAPIDeadlineDoesNotOutliveItsAnswer(t *testing.T) {
	cfg := servertest.Config()
	cfg.Query.Timeout = 300 * time.Millisecond
	s, err := New(cfg, Settings{})
	require.NoError(t, err)
	servertest.Start(t, s)

	conn, err := net.Dial("tcp", s.Addrs().HTTP)
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	require.NoError(t, conn.SetDeadline(time.Now().Add(30*time.Second)))
	rd := bufio.NewReader(conn)
	for i, path := range []string{"/api/v1/query?query=1", "/api/v1/labels", "/healthz"} {
		if i > 0 {
			// Past the previous answer's write deadline.
			time.Sleep(2 * cfg.Query.Timeout)
		}
		_, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path)
		require.NoError(t, err)
		resp, err := http.ReadResponse(rd, nil)
		require.NoError(t, err, "request %d (%s) on the reused connection", i, path)
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
	}
}
