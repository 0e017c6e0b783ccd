package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// runQuery is the query subcommand: one instant query against a running
// server's Prometheus-compatible /api/v1/query, printed readably.
func runQuery(args []string, stdout, stderr io.Writer) int {
	c := newSubcommand("query", "query '<expr>' [flags]", stderr)
	var h httpFlags
	h.register(c.fs)
	at := c.fs.String("time", "", "evaluation time: RFC 3339 or unix seconds; default now (`time`)")
	lookback := c.fs.String("lookback-delta", "", "lookback for instant selectors; default the server's 5m (`duration`)")
	asJSON := c.fs.Bool("json", false, "print the server's JSON response as is")
	pos, code, ok := c.parse(args, 1, "one query expression")
	if !ok {
		return code
	}
	client, err := h.client()
	if err != nil {
		c.errorf("%v", err)
		return 2
	}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
	defer cancel()
	res, raw, err := instantQuery(ctx, client, h.server, pos[0], *at, *lookback)
	if err != nil {
		c.errorf("%v", err)
		return 1
	}
	if *asJSON {
		_, _ = stdout.Write(raw)
		return 0
	}
	out := &printer{w: stdout}
	printResult(out, res)
	if out.err != nil {
		return 1
	}
	return 0
}

// printer writes command output and keeps the first write error, so that
// a long report is not a wall of ignored returns.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func (p *printer) println(args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintln(p.w, args...)
	}
}

// apiResult is the Prometheus HTTP API's query response.
type apiResult struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Warnings  []string
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

type vectorSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// matrixSeries is one series of a matrix answer (a range selector such as
// x[1m] at the top of the query).
type matrixSeries struct {
	Metric map[string]string `json:"metric"`
	Values [][2]any          `json:"values"`
}

func instantQuery(ctx context.Context, client *http.Client, server, expr, at, lookback string) (*apiResult, []byte, error) {
	form := url.Values{"query": {expr}}
	if at != "" {
		form.Set("time", at)
	}
	if lookback != "" {
		form.Set("lookback_delta", lookback)
	}
	u := strings.TrimRight(server, "/") + "/api/v1/query"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("query %s: %w", u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("read response: %w", err)
	}
	var res apiResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, raw, fmt.Errorf("%s answered %s, not a Prometheus API response: %.200s", u, resp.Status, raw)
	}
	if res.Status != "success" {
		return nil, raw, fmt.Errorf("%s: %s", res.ErrorType, res.Error)
	}
	return &res, raw, nil
}

// printResult prints a vector as "series => value @ time", one per line
// sorted by series, a scalar as "scalar => value @ time", and a matrix as
// "series =>" followed by one "  value @ time" line per sample.
func printResult(w *printer, res *apiResult) {
	for _, warn := range res.Warnings {
		w.printf("warning: %s\n", warn)
	}
	switch res.Data.ResultType {
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(res.Data.Result, &v); err == nil {
			w.printf("scalar => %v @ %s\n", v[1], formatTS(v[0]))
		}
	case "vector":
		var vec []vectorSample
		if err := json.Unmarshal(res.Data.Result, &vec); err != nil {
			w.printf("%s\n", res.Data.Result)
			return
		}
		if len(vec) == 0 {
			w.println("(empty vector: no series matched)")
			return
		}
		lines := make([]string, 0, len(vec))
		for _, s := range vec {
			lines = append(lines, fmt.Sprintf("%s => %v @ %s", seriesString(s.Metric), s.Value[1], formatTS(s.Value[0])))
		}
		sort.Strings(lines)
		for _, l := range lines {
			w.println(l)
		}
	case "matrix":
		var mat []matrixSeries
		if err := json.Unmarshal(res.Data.Result, &mat); err != nil {
			w.printf("%s\n", res.Data.Result)
			return
		}
		if len(mat) == 0 {
			w.println("(empty matrix: no series has samples in the range)")
			return
		}
		// The server sends series sorted by labels.
		for _, s := range mat {
			w.printf("%s =>\n", seriesString(s.Metric))
			for _, v := range s.Values {
				w.printf("  %v @ %s\n", v[1], formatTS(v[0]))
			}
		}
	default:
		w.printf("%s: %s\n", res.Data.ResultType, res.Data.Result)
	}
}

// seriesString prints a label set the way Prometheus does: name{a="b"}.
func seriesString(m map[string]string) string {
	name := m["__name__"]
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "__name__" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+strconv.Quote(m[k]))
	}
	return name + "{" + strings.Join(parts, ", ") + "}"
}

func formatTS(v any) string {
	f, ok := v.(float64)
	if !ok {
		return fmt.Sprint(v)
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC().Format("2006-01-02T15:04:05.000Z")
}
