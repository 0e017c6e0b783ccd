package main

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/status"
)

// runStatus is the status subcommand: the triggers table of a running
// server's GET /api/v1/triggers, as the status page shows it.
func runStatus(args []string, stdout, stderr io.Writer) int {
	c := newSubcommand("status", "status [flags]", stderr)
	var h httpFlags
	h.register(c.fs)
	namespace := c.fs.String("namespace", "", "only triggers of ScaledObjects in this `namespace`")
	name := c.fs.String("name", "", "only triggers of ScaledObjects with this `name`")
	limit := c.fs.Int("limit", status.DefaultLimit, "most triggers to list (`count`, at most 2000)")
	series := c.fs.Bool("series", true, "count the series each trigger's query selects")
	asJSON := c.fs.Bool("json", false, "print the server's data as JSON")
	if _, code, ok := c.parse(args, 0, ""); !ok {
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
	d, err := status.Fetch(ctx, client, h.server, *namespace, *name, *limit, *series)
	if err != nil {
		c.errorf("%v", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(d); err != nil {
			return 1
		}
		return 0
	}
	if err := status.WriteTable(stdout, d, time.Now()); err != nil {
		c.errorf("%v", err)
		return 1
	}
	return 0
}
