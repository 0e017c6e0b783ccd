package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// maxAnswer bounds what Fetch reads: MaxLimit triggers of bounded size.
const maxAnswer = 256 << 20

// Fetch asks a running server's GET /api/v1/triggers (server is the HTTP
// listener's base URL) with the given filters; zero values leave them out.
func Fetch(ctx context.Context, client *http.Client, server, namespace, name string, limit int, series bool) (TriggersData, error) {
	q := url.Values{}
	if namespace != "" {
		q.Set("namespace", namespace)
	}
	if name != "" {
		q.Set("name", name)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	q.Set("series", strconv.FormatBool(series))
	u := strings.TrimRight(server, "/") + "/api/v1/triggers?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return TriggersData{}, fmt.Errorf("build request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return TriggersData{}, fmt.Errorf("get %s: %w", u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return TriggersData{}, fmt.Errorf("read %s: %w", u, err)
	}
	var env struct {
		Status    string       `json:"status"`
		ErrorType string       `json:"errorType"`
		Error     string       `json:"error"`
		Data      TriggersData `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return TriggersData{}, fmt.Errorf("%s answered %s, not a triggers response: %.200s", u, resp.Status, raw)
	}
	if env.Status != "success" {
		return TriggersData{}, fmt.Errorf("%s: %s: %s", u, env.ErrorType, env.Error)
	}
	return env.Data, nil
}

// WriteTable prints the triggers as the status page's table, one line
// each, for a terminal.
func WriteTable(w io.Writer, d TriggersData, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "NAMESPACE/NAME\tTYPE\tSTATE\tVALUE\tEVALUATED\tTARGET/ACT\tEVALS/MIN\tSTREAMS\tPUSHES\tLAST PUSH\tSERIES\tQUERY\tLAST ERROR")
	for _, t := range d.Triggers {
		_, text := stateOf(t)
		value, evaluated := "-", "-"
		if t.Last != nil {
			value, evaluated = num(t.Last.Value), ago(now, t.Last.Time)
		}
		target := "-"
		if t.Compiled {
			target = num(t.Target) + "/" + num(t.Activation)
		}
		streams, pushes, lastPush := "-", "-", "-"
		if t.Type == "external-push" {
			streams, pushes = strconv.FormatInt(t.OpenStreams, 10), strconv.FormatUint(t.Pushes, 10)
			if t.LastPush != nil {
				lastPush = ago(now, *t.LastPush)
			}
		}
		series := "-"
		if t.Series != nil && t.Series.Skipped == "" {
			n, atLeast := 0, false
			for _, s := range t.Series.Selectors {
				n, atLeast = n+s.Count, atLeast || s.AtLeast
			}
			series = strconv.Itoa(n)
			if atLeast {
				series = ">=" + series
			}
		}
		q := t.Evaluated
		if q == "" {
			q = t.Query
		}
		lastErr := "-"
		if e := t.LastError; e != nil {
			lastErr = e.Code + " " + ago(now, e.Time) + ": " + e.Message
		}
		_, _ = fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			t.Namespace, t.Name, t.Type, text, value, evaluated, target, num(t.EvaluationsPerMinute),
			streams, pushes, lastPush, series, oneLine(q, 60), oneLine(lastErr, 80))
	}
	if d.Truncated {
		_, _ = fmt.Fprintf(tw, "(%d of %d triggers shown; raise --limit)\n", len(d.Triggers), d.Total)
	}
	return tw.Flush()
}

// oneLine flattens whitespace and clips s to n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
