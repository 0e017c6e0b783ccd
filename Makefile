# keda-otel-scaler. Every tool the targets need comes from the Go module
# proxy; nothing else is downloaded.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN      ?= bin/keda-otel-scaler
BENCH    ?= .
COUNT    ?= 6
PKGS     ?= ./...
LINT      = $(GO) tool -modfile=test/lint/go.mod golangci-lint

.PHONY: all build run test test-short bench lint fmt vet tidy clean help helm-lint helm-test e2e e2e-collector

all: build

help: ## List the targets.
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## Build the static binary into bin/.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/keda-otel-scaler

run: ## Run the server on its defaults (OTLP :4317, KEDA :4318, HTTP :8080).
	$(GO) run ./cmd/keda-otel-scaler $(ARGS)

test: ## Vet, then every test with the race detector.
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

test-short: ## Tests with -short (skips the heavy ones).
	$(GO) test -race -short -count=1 -timeout 10m $(PKGS)

bench: ## Every benchmark, -cpu 2, into bench.txt.
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -cpu 2 -count $(COUNT) $(PKGS) | tee bench.txt

lint: ## golangci-lint, pinned in test/lint/go.mod.
	$(LINT) run ./...

fmt: ## Format the code.
	gofmt -s -w $$(git ls-files '*.go')

vet: ## go vet.
	$(GO) vet $(PKGS)

tidy: ## go mod tidy for every module.
	$(GO) mod tidy
	cd test/lint && $(GO) mod tidy
	cd test/helm && $(GO) mod tidy
	cd test/e2e && $(GO) mod tidy
	cd test/e2e/otelcol && $(GO) mod tidy

helm-lint: ## helm lint + helm template of deploy/helm (ci/*-values.yaml) checked by Go tests, examples/ checks, every server flag settable (test/helm).
	cd test/helm && $(GO) vet ./... && $(GO) test -count=1 ./...

helm-test: ## The same checks verbose and with the race detector.
	cd test/helm && $(GO) vet ./... && $(GO) test -race -count=1 -v ./...

e2e-collector: ## Build (or reuse) the e2e OpenTelemetry Collector in test/e2e/.cache.
	cd test/e2e && $(GO) test -count=1 -run TestBuildCollector -v ./...

e2e: ## End to end: real OpenTelemetry Collectors scrape fake vLLM pods and push to the real scaler; KEDA's client asks.
	cd test/e2e && $(GO) vet ./... && $(GO) test -count=1 -v -timeout 45m ./...

clean: ## Remove build outputs.
	rm -rf bin bench.txt
