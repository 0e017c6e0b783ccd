package config

import (
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/promapi"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/query"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/receiver"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/scaler"
	"github.com/keda-otel-scaler/keda-otel-scaler/pkg/store"
)

// The configuration of each component, from the operator's settings.
// These are the only place where a Config field is copied into a
// component's: pkg/server passes their results as they are, and
// TestComponentConfigsCarryEveryField fails when a field of the
// Receiver, Store, Scaler or Query sections reaches none of them.
// Component fields that no flag sets stay zero and take the component's
// default.

// StoreConfig is the store's configuration: the Store section, and the
// label limits of the Receiver section, which the store enforces for
// every writer (the receiver checks them per point first).
func (c Config) StoreConfig() store.Config {
	return store.Config{
		Retention:          c.Store.Retention,
		Freshness:          c.Store.Freshness,
		SeriesTTL:          c.Store.SeriesTTL,
		MaxSeries:          c.Store.MaxSeries,
		MaxSeriesPerMetric: c.Store.MaxSeriesPerMetric,
		// Sample memory bounds (issue #12 class 9; README "Resource bounds").
		MaxSamplesPerSeries: c.Store.MaxSamplesPerSeries,
		MaxSampleMemory:     c.Store.MaxSampleMemory,
		MaxLabelsPerSeries:  c.Receiver.MaxLabelsPerSeries,
		MaxLabelNameLength:  c.Receiver.MaxLabelNameLength,
		MaxLabelValueLength: c.Receiver.MaxLabelValueLength,
	}
}

// ReceiverConfig is the OTLP receiver's configuration. BearerTokenFile is
// not part of it: pkg/server wraps both transports with the token check;
// nor is Filter, which pkg/server builds from --metric-allow-list and
// --lazy-ingest.
func (c Config) ReceiverConfig() receiver.Config {
	return receiver.Config{
		MaxRecvSize:               c.Receiver.MaxRecvSize,
		MaxInFlightBytes:          c.Receiver.MaxInFlightBytes,
		IngestDelta:               c.Receiver.Delta == "ingest",
		PromoteResourceAttributes: c.Receiver.PromoteResourceAttributes,
		MaxLabelsPerSeries:        c.Receiver.MaxLabelsPerSeries,
		MaxLabelNameLength:        c.Receiver.MaxLabelNameLength,
		MaxLabelValueLength:       c.Receiver.MaxLabelValueLength,
		MaxMetricNameLength:       c.Receiver.MaxMetricNameLength,
	}
}

// ScalerConfig is the KEDA scaler's configuration: the Scaler section,
// the Query section's label budget for trigger evaluations, and
// --freshness, which decides what counts as a fresh sample for
// --ready-after-fresh.
func (c Config) ScalerConfig() scaler.Config {
	return scaler.Config{
		DefaultWindow:     c.Scaler.DefaultWindow,
		Warmup:            c.Scaler.Warmup,
		PushHoldoff:       c.Scaler.PushHoldoff,
		ReadyAfterFresh:   c.Scaler.ReadyAfterFresh,
		FreshWindow:       c.Store.Freshness,
		MaxStreams:        c.Scaler.MaxStreams,
		MaxEvaluations:    c.Scaler.MaxEvaluations,
		MaxLabelBytes:     c.Query.MaxLabelBytes,
		TriggerTTL:        c.Scaler.TriggerTTL,
		MaxTriggers:       c.Scaler.MaxTriggers,
		MaxTriggerBytes:   c.Scaler.MaxTriggerBytes,
		TriggerCacheBytes: c.Scaler.TriggerCacheBytes,
	}
}

// QueryOptions are the engine's defaults (query.Engine.SetDefaults), so
// every plan, the HTTP API's included, gets the label budget.
func (c Config) QueryOptions() query.Options {
	return query.Options{MaxLabelBytes: c.Query.MaxLabelBytes}
}

// PromAPIConfig is the Prometheus HTTP API's configuration.
func (c Config) PromAPIConfig() promapi.Config {
	return promapi.Config{
		MaxConcurrency: c.Query.MaxConcurrency,
		MaxSamples:     c.Query.MaxSamples,
		Timeout:        c.Query.Timeout,
	}
}
