module github.com/keda-otel-scaler/keda-otel-scaler/test/peer

go 1.26.7

require (
	github.com/keda-otel-scaler/keda-otel-scaler/test/bincache v0.0.0
	github.com/kedacore/keda/v2 v2.21.0
	google.golang.org/grpc v1.85.0
)

require (
	github.com/keda-otel-scaler/keda-otel-scaler v0.0.0
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261012220534-4341edf3f941 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/keda-otel-scaler/keda-otel-scaler/test/bincache => ../bincache

replace github.com/keda-otel-scaler/keda-otel-scaler => ../..
