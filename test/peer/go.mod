module github.com/keda-otel-scaler/keda-otel-scaler/test/peer

go 1.26.7

require (
	github.com/keda-otel-scaler/keda-otel-scaler/test/bincache v0.0.0
	github.com/kedacore/keda/v2 v2.21.0
	google.golang.org/grpc v1.85.0
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260904194346-d0f1323225a4 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/keda-otel-scaler/keda-otel-scaler/test/bincache => ../bincache
