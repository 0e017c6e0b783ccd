# keda-otel-scaler. Every tool the targets need comes from the Go module
# proxy; nothing else is downloaded. `make help` lists the targets.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN       ?= bin/keda-otel-scaler
BENCH     ?= .
COUNT     ?= 6
FUZZ_TIME ?= 30s
# Each minimisation of a new fuzz input runs the target at most this many
# times (go test -fuzzminimizetime, which also takes a duration). Go's
# default, 60 s, lets its minimiser (quadratic in the input's length) hold a
# worker for a minute on one long input while the run reports 0 execs/s; a
# duration ends by the coordinator killing and restarting the worker, a
# count ends cleanly (FuzzWalk: 42k execs in 30 s with 5s, 1.1M with 2000x).
# The fuzzing packages' TestMain sets the same default for a plain go test
# -fuzz (pkg/internal/fuzzflags).
FUZZ_MINIMIZE ?= 1000x
PKGS      ?= ./...
LINT       = $(GO) tool -modfile=test/lint/go.mod golangci-lint
TOOLS_DIR ?= $(CURDIR)/.cache/tools
PROMTOOL  ?= $(TOOLS_DIR)/promtool
DEMO_ARGS ?=
LOAD_ARGS ?=
CAPACITY_ARGS ?=
CHROMIUM  ?= /usr/bin/chromium

# Every fuzz target of the main module, as "package:Target".
FUZZ_TARGETS = ./pkg/query:FuzzCompile ./pkg/query:FuzzLabelGrowth ./pkg/promapi:FuzzAPIQuery ./pkg/promapi:FuzzAppendString ./pkg/scaler:FuzzLower ./pkg/scaler:FuzzParseSpec \
	./pkg/scaler:FuzzShowMetadata ./pkg/receiver:FuzzWalkVsPdata ./pkg/receiver:FuzzHTTP ./pkg/receiver:FuzzScanJSON ./pkg/internal/otlpwire:FuzzWalk ./pkg/internal/otlpwire:FuzzKeyValueFastPath \
	./pkg/internal/bearer:FuzzParseTokens ./pkg/internal/bearer:FuzzCheck ./pkg/store:FuzzReadSnapshot

.PHONY: all help build run demo test check-files check-tidy gates chaos test-short test-memory checkpoint-figures conformance compat fuzz bench bench-baseline load capacity peer status-screenshot \
	helm-lint helm-test e2e browser-test e2e-collector e2e-k8s promtool promtool-test keda-client-test lint fmt vet tidy clean

all: build

help: ## List the targets.
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## Build the static binary into bin/.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/keda-otel-scaler

run: ## Run the server on its defaults (OTLP :4317, KEDA :4318, HTTP :8080). ARGS="--log-level debug" etc.
	$(GO) run ./cmd/keda-otel-scaler $(ARGS)

demo: ## The end-to-end demo (~1 min): simulated vLLM pods, OTLP push, KEDA/HPA loop; pictures in demo-out/. DEMO_ARGS="--profile ramp" etc.
	$(GO) run ./cmd/keda-otel-scaler demo $(DEMO_ARGS)

test: ## What CI runs: vet, lint and every test with -race in the main module, the chaos suite's short run (test/chaos, ~1 min, without -race), test/compat (vs Prometheus's engine), test/helm (chart + examples), test/bincache, test/browser (headless Chromium on the status page), test/e2e (real collectors) and test/k8s (real Kubernetes and KEDA). Their binaries are cached per user in ~/.cache/keda-otel-scaler (or $KOS_TEST_CACHE); the first build on a machine compiles the collector (~8 min on 2 cores) and Kubernetes and KEDA (~45 CPU-minutes, ~25 min on 2 idle cores, more under load).
	$(MAKE) check-files check-tidy
	$(GO) vet $(PKGS)
	$(MAKE) lint
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	$(GO) test -count=1 -timeout 10m -run '^TestChaos$$' -v ./test/chaos
	cd test/compat && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 15m ./...
	cd test/helm && $(GO) vet ./... && $(GO) test -count=1 -timeout 15m ./...
	cd test/bincache && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 5m ./...
	$(MAKE) gates
	$(MAKE) browser-test
	$(MAKE) e2e
	$(MAKE) e2e-k8s

gates: ## Performance gates without -race (which distorts timing and allocation counts): exact allocs, same-run ratios, heap bytes.
	$(GO) test -count=1 -run '^(TestIngestGates|TestHotPathsDoNotAllocate|TestHistogramHotPathsDoNotAllocate|TestExpHistogramIngestDoesNotAllocate|TestHistogramMemoryPerSample|TestMemory|TestMemoryBurst|TestSampleMemoryBudget|TestBurstCPU|TestJSONDeepNesting|TestEvalSteadyStateAllocs|TestGetMetricSpecCachedDoesNoWork|TestStalledStreamsDoNotLoseEdges|TestStalledStreamsMemoryBounded|TestIdleConnectionsBoundedPerListener|TestStalledStreamBacklogBounded|TestMetricNamesFreedWithTheirSeries|TestMetricNameChurnReturnsToBaseline|TestTriggerCostBoundsHeap|TestUnusedMetadataIsNotKept|TestTriggerCacheBytesBound|TestTriggerOnlyMetricNamesFreed|TestTriggerCacheInsertConstantWork|TestCheckAllocs|TestAPIQueryMemoryBounded|TestTriggerStatsHotPathAllocs|TestRetainedBytesBoundsHeap|TestRetainedBytesDoesNotAllocate|TestTriggerWorkingSetsBoundedByCacheBytes|TestTriggerOverMaxTriggerBytesIsTrimmed)$$' \
		./pkg/receiver ./pkg/store ./pkg/query ./pkg/scaler ./pkg/server ./pkg/internal/bearer ./pkg/promapi
	cd test/compat && $(GO) test -count=1 -timeout 10m -run '^(TestSpeedRatio|TestWarmEvalAllocs)$$' .

chaos: ## The fault-injection suite (test/chaos) against the real binary, long run (~6 min; make test runs a ~1 min one): faults one at a time and all at once during full-speed ingestion, SIGKILL, restart, every acknowledged sample checked.
	$(GO) test -count=1 -timeout 30m -run '^TestChaos$$' -v ./test/chaos -args -chaos.long

test-short: ## The main module's tests with -short (skips the heavy ones).
	$(GO) test -race -short -count=1 -timeout 10m $(PKGS)

test-memory: ## Store heap gates without -race: 100k and 1M series (performance.md T3-T5), bursts and the sample-memory budget.
	$(GO) test -count=1 -timeout 20m -run '^(TestMemory.*|TestHistogramMemoryPerSample|TestSampleMemoryBudget|TestBurstCPU)$$' -v ./pkg/store

checkpoint-figures: ## Checkpoint write/restore time, CPU and size at 100k and 1M series (the README's figures; minutes, ~2 GB of RAM).
	$(GO) test -count=1 -timeout 30m -run '^TestCheckpointFigures$$' -v ./pkg/store -checkpoint-figures

conformance: ## Upstream promqltest corpus runner: per-file summary, failures, floor check.
	@$(GO) test -count=1 -run '^TestUpstreamConformance$$' -v ./pkg/query > conformance.txt; rc=$$?; \
	grep -A60 'upstream conformance' conformance.txt; grep -e '--- FAIL' -e 'floor' conformance.txt; exit $$rc

compat: ## Differential test and fuzz seeds against Prometheus's engine (test/compat, -race), then the speed-ratio and zero-alloc gates (no -race).
	cd test/compat && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 20m ./...
	cd test/compat && $(GO) test -count=1 -timeout 10m -run '^(TestSpeedRatio|TestWarmEvalAllocs)$$' -v .

fuzz: ## Each fuzz target for FUZZ_TIME (default 30s; each minimisation at most FUZZ_MINIMIZE runs, 1000x), then test/compat's differential fuzzers.
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t"; $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZ_TIME) -fuzzminimizetime $(FUZZ_MINIMIZE) "$${t%%:*}"; \
	done
	cd test/compat && $(GO) test -run '^$$' -fuzz '^FuzzDifferential$$' -fuzztime $(FUZZ_TIME) -fuzzminimizetime $(FUZZ_MINIMIZE) .
	cd test/compat && $(GO) test -run '^$$' -fuzz '^FuzzDifferentialQuery$$' -fuzztime $(FUZZ_TIME) -fuzzminimizetime $(FUZZ_MINIMIZE) .

bench: ## Every benchmark of the main module, -cpu 2, into bench.txt.
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -cpu 2 -count $(COUNT) $(PKGS) | tee bench.txt

bench-baseline: ## Ours vs Prometheus's engine on the T6 queries, same data, same run, into bench-baseline.txt.
	cd test/compat && $(GO) test -run '^$$' -bench '^BenchmarkInstant$$' -benchmem -cpu 2 -benchtime 300ms -count $(COUNT) . | tee ../../bench-baseline.txt
	cd test/compat && $(GO) tool benchstat -col /engine ../../bench-baseline.txt

capacity: build ## Capacity sweep of one replica (README "Scaling out"): the real binary at 10k-1M series pushed every 5 s, a separate generator process; CPU per point, RSS, latency under load (about 10 min; not in make test). CAPACITY_ARGS="-steps 10000,100000" etc.
	$(GO) run ./test/load/capacity -bin $(BIN) $(CAPACITY_ARGS)

peer: build ## Same load, same run: keda-otel-scaler vs kedify/otel-add-on (CPU per point, RSS, GetMetrics latency; ~8 min; not in make test). otel-add-on is not on the Go module proxy: KOS_PEER_SRC=<checkout of github.com/kedify/otel-add-on>; root (a private network namespace). PEER_ARGS="-series 100000" etc.
	$(GO) build -o bin/capacity ./test/load/capacity
	cd test/peer && $(GO) vet ./... && $(GO) run . -bin ../../$(BIN) -gen ../../bin/capacity $(PEER_ARGS)

load: ## Loopback OTLP load test: points per server CPU-second, ours vs a pdata-codec baseline server, interleaved rounds (bounded).
	$(GO) build -o bin/load-baseline ./test/load/baselineserver
	$(GO) run ./test/load -baseline bin/load-baseline $(LOAD_ARGS)

helm-lint: ## helm lint + helm template of deploy/helm (ci/*-values.yaml) checked by Go tests, examples/ checks, every server flag settable (test/helm).
	cd test/helm && $(GO) vet ./... && $(GO) test -count=1 ./...

helm-test: ## The same checks verbose and with the race detector.
	cd test/helm && $(GO) vet ./... && $(GO) test -race -count=1 -v ./...

e2e-collector: ## Build (or reuse) the e2e OpenTelemetry Collector in the per-user binary cache (~/.cache/keda-otel-scaler, or $KOS_TEST_CACHE; test/bincache).
	cd test/e2e && $(GO) test -count=1 -run TestBuildCollector -v ./...

e2e: ## End to end: real OpenTelemetry Collectors scrape fake vLLM pods and push to the real scaler; KEDA's client asks.
	cd test/e2e && $(GO) vet ./... && $(GO) test -count=1 -v -timeout 45m ./...

e2e-k8s: ## Real Kubernetes (test/k8s): etcd, kube-apiserver, kube-controller-manager, KEDA's operator and adapter scale Deployments from the scaler's answers; the chart passes server-side dry-run. Part of make test; needs root or unprivileged user namespaces. Cached: ~2 min; the first build on a machine compiles Kubernetes and KEDA (~45 CPU-minutes).
	@echo "e2e-k8s: Kubernetes, KEDA and the collector come from the per-user binary cache ($${KOS_TEST_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/keda-otel-scaler}); when they are cached this takes about 2 minutes. Their first build on a machine takes about 45 CPU-minutes from an empty Go build cache (~25 min on 2 idle cores, up to an hour under load), a relink of a few minutes from a warm one."
	cd test/k8s && $(GO) vet ./... && $(GO) test -count=1 -v -timeout 90m ./...

$(PROMTOOL): test/promtool/go.mod test/promtool/go.sum
	cd test/promtool && $(GO) build -o $(PROMTOOL) github.com/prometheus/prometheus/cmd/promtool

promtool: $(PROMTOOL) ## Build promtool (version pinned in test/promtool/go.mod) into .cache/tools.

promtool-test: $(PROMTOOL) ## Drive the HTTP query API with promtool (the first build of promtool takes minutes).
	cd test/promtool && PROMTOOL=$(PROMTOOL) $(GO) test -race -count=1 ./...

browser-test: ## Headless Chromium loads the status page of a server with live triggers (test/browser, ~10 s); installs Debian's chromium first when $(CHROMIUM) is missing. Screenshots: test/browser/out/_artifacts/.
	@test -x $(CHROMIUM) || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)
	mkdir -p test/browser/out
	cd test/browser && $(GO) vet ./... && CHROMIUM=$(CHROMIUM) $(GO) test -count=1 -timeout 5m -artifacts -outputdir $(CURDIR)/test/browser/out ./...

status-screenshot: browser-test ## Refresh docs/img/status-page.png from the browser test's wide screenshot.
	cd test/browser && STATUS_SCREENSHOT=$(CURDIR)/docs/img/status-page.png CHROMIUM=$(CHROMIUM) $(GO) test -count=1 -run 'TestStatusPageInChromium/wide' ./...

keda-client-test: ## KEDA's own external/external-push scalers (pkg/scalers v2.21) against our server (test/kedaclient; not in make test: its first build compiles every cloud SDK KEDA links, >10 min on 2 cores).
	cd test/kedaclient && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 30m ./...

# Test modules linted with the main module's rules (test/kedaclient and
# test/promtool are left out: type-checking them loads every cloud SDK KEDA
# links and Prometheus's whole tree, minutes of CPU for a few test files).
LINT_MODULES = test/bincache test/browser test/compat test/e2e test/helm test/k8s test/peer

lint: ## golangci-lint, pinned in test/lint/go.mod: the main module and the test modules in LINT_MODULES.
	$(LINT) run ./...
	for m in $(LINT_MODULES); do (cd $$m && $(GO) tool -modfile=$(CURDIR)/test/lint/go.mod golangci-lint run --config $(CURDIR)/.golangci.yml ./...) || exit 1; done

fmt: ## Format the code.
	gofmt -s -w $$(git ls-files '*.go')

vet: ## go vet.
	$(GO) vet $(PKGS)

# Every Go module of the repository (the main one and those under test/).
MODULES = $(sort $(dir $(shell git ls-files '*go.mod' 2>/dev/null)))

tidy: ## go mod tidy for every module.
	@for m in $(MODULES); do echo "tidy $$m"; (cd $$m && $(GO) mod tidy) || exit 1; done

check-files: ## Fail when a tracked file is over 1 MiB (a build output committed by mistake: go build's default ./keda-otel-scaler once was).
	@big=$$(git ls-files -z | xargs -0 stat -c '%s %n' 2>/dev/null | awk '$$1 > 1048576 {print $$2}'); \
	if [ -n "$$big" ]; then echo "tracked files over 1 MiB: $$big"; exit 1; fi

check-tidy: ## Fail when any module's go.mod/go.sum is not tidy (a new dependency of the main module reaches every test module through its replace).
	@for m in $(MODULES); do (cd $$m && $(GO) mod tidy -diff >/dev/null) || { echo "module $$m is not tidy: run make tidy"; exit 1; }; done

clean: ## Remove build outputs.
	rm -rf bin bench.txt bench-baseline.txt conformance.txt demo-out
