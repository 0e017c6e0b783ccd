// Command otelcol-e2e is a minimal OpenTelemetry Collector distribution for
// the end-to-end test: the prometheus and otlp receivers, the transform,
// filter, batch and memory_limiter processors, the otlp and otlphttp
// exporters and the bearertokenauth extension (docs/otlp-contract.md §2:
// authenticated ingest; the otlp receiver, batch and memory_limiter are what
// the chart's HA fan-out and shard router layers use), all from one
// collector release
// (contrib v0.161.0, core v0.161.0 / v1.67.0). It lives in its own module so
// the collector's large dependency graph never touches the scaler's go.mod or
// the e2e test module.
//
// The resourcedetection processor does not build at this release here, so
// configs emulate its env detector with a transform statement that merges
// OTEL_RESOURCE_ATTRIBUTES (see test/e2e/collector.go).
package main

import (
	"fmt"
	"os"

	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/bearertokenauthextension"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/filterprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/transformprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/otlpexporter"
	"go.opentelemetry.io/collector/exporter/otlphttpexporter"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/batchprocessor"
	"go.opentelemetry.io/collector/processor/memorylimiterprocessor"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func components() (otelcol.Factories, error) {
	var err error
	f := otelcol.Factories{Telemetry: otelconftelemetry.NewFactory()}
	f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](prometheusreceiver.NewFactory(), otlpreceiver.NewFactory())
	if err != nil {
		return f, fmt.Errorf("receivers: %w", err)
	}
	f.Processors, err = otelcol.MakeFactoryMap[processor.Factory](
		transformprocessor.NewFactory(), filterprocessor.NewFactory(),
		batchprocessor.NewFactory(), memorylimiterprocessor.NewFactory())
	if err != nil {
		return f, fmt.Errorf("processors: %w", err)
	}
	f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](otlpexporter.NewFactory(), otlphttpexporter.NewFactory())
	if err != nil {
		return f, fmt.Errorf("exporters: %w", err)
	}
	f.Extensions, err = otelcol.MakeFactoryMap[extension.Factory](bearertokenauthextension.NewFactory())
	if err != nil {
		return f, fmt.Errorf("extensions: %w", err)
	}
	return f, nil
}

func main() {
	info := component.BuildInfo{
		Command:     "otelcol-e2e",
		Description: "OpenTelemetry Collector for the keda-otel-scaler e2e test",
		Version:     "0.161.0",
	}
	set := otelcol.CollectorSettings{
		BuildInfo: info,
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					fileprovider.NewFactory(),
					envprovider.NewFactory(),
					yamlprovider.NewFactory(),
				},
			},
		},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
