package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"time"

	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/status"
)

// runStatus is the status subcommand: the triggers table of a running
// server's GET /api/v1/triggers, as the status page shows it.
func runStatus(args []string, stdout, stderr io.Writer) int {
	errOut := &printer{w: stderr}
	fs := flag.NewFlagSet("keda-otel-scaler status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	serverURL := fs.String("server", "http://127.0.0.1:8080", "base URL of the scaler's HTTP listener (`url`)")
	namespace := fs.String("namespace", "", "only triggers of ScaledObjects in this `namespace`")
	name := fs.String("name", "", "only triggers of ScaledObjects with this `name`")
	limit := fs.Int("limit", status.DefaultLimit, "most triggers to list (`count`, at most 2000)")
	series := fs.Bool("series", true, "count the series each trigger's query selects")
	asJSON := fs.Bool("json", false, "print the server's data as JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout (`duration`)")
	fs.Usage = func() {
		errOut.printf("Usage: keda-otel-scaler status [flags]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		errOut.printf("keda-otel-scaler status: unexpected arguments %q\n", fs.Args())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	d, err := status.Fetch(ctx, http.DefaultClient, *serverURL, *namespace, *name, *limit, *series)
	if err != nil {
		errOut.printf("keda-otel-scaler status: %v\n", err)
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
		errOut.printf("keda-otel-scaler status: %v\n", err)
		return 1
	}
	return 0
}
