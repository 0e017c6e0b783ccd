module github.com/keda-otel-scaler/keda-otel-scaler/test/bincache

go 1.26.7

require github.com/stretchr/testify v1.12.1

require go.yaml.in/yaml/v3 v3.0.5 // indirect
