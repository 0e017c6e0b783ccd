package integration

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestKEDALegacyAliasPush: a trigger written against kedify/otel-add-on's
// name for an OTLP counter (app_frontend_requests for
// app.frontend.requests, stored as app_frontend_requests_total) reads the
// stored series and is woken by StreamIsActive pushes (otlp-contract.md
// §5, legacy alias).
func TestKEDALegacyAliasPush(t *testing.T) {
	e := startKEDA(t, false, nil)
	ctx := e.ctx(t)
	m := md("sum(app_frontend_requests)", "activationThreshold", "5")
	s, err := e.client.StreamIsActive(ctx, soRef(m))
	require.NoError(t, err)
	r := startRecv(s)
	e.waitStreams(t, 1)

	evals := e.selfMetric(t, "keda_otel_scaler_scaler_evaluation_seconds_count")
	e.export(t, point{name: "app.frontend.requests", v: 3, counter: true})
	e.evaluatedAfter(t, evals) // the alias's ID woke the stream: inactive
	_, ok := r.next(quiet)
	assert.False(t, ok, "3 is not above the activation threshold")

	e.export(t, point{name: "app.frontend.requests", v: 9, counter: true})
	v, ok := r.next(10 * time.Second)
	require.True(t, ok, "the Export of the stored name pushes to the alias's stream")
	assert.True(t, v)

	got, _, err := e.value(t, m)
	require.NoError(t, err)
	assert.InDelta(t, 9, got, 0)
}
