// Package demo shows keda-otel-scaler autoscaling end to end on one machine,
// without a cluster. It is a product feature, the binary's `demo`
// subcommand (cmd/keda-otel-scaler/demo.go, `make demo`), not test
// scaffolding: Run with Options is its entry point, the simulator's parts
// (Fleet, Engine, Controller, Stabilizer) are the types Run drives, and
// the HPA's replica formula (DesiredReplicas) also serves `explain`.
//
// Run starts the real server in process on loopback ports, then drives three
// actors from one goroutine:
//
//   - a fleet of simulated vLLM pods (fleet.go, pod.go) whose engine follows
//     vLLM's V1 scheduler in outline: a FCFS waiting queue, a running batch
//     bounded by max_num_seqs and by KV-cache blocks, chunked prefill within a
//     per-step token budget, preemption by recomputation when the cache is
//     full, and vLLM's metric families with vLLM's names, labels and bucket
//     bounds, pushed over real OTLP/gRPC with per-pod resource attributes;
//   - a gateway in front of the fleet that holds requests while no pod is
//     ready and exports its pending count, the signal that exists without
//     pods and so can activate a deployment scaled to zero;
//   - a control loop (control.go) that plays KEDA and the HPA, talking to the
//     server only through KEDA's externalscaler gRPC API: StreamIsActive for
//     the external-push trigger, GetMetricSpec, GetMetrics and IsActive for
//     the polling loop and the HPA, KEDA's activation and cooldown, and the
//     HPA's replica formula, tolerance, stabilisation windows and min/max.
//
// # Time
//
// The server evaluates at wall-clock time, so every sample carries the wall
// clock. The simulation runs on a clock that advances Speed times faster
// than the wall clock (default 10: one wall minute shows ten simulated
// minutes). Every duration of the story is stated in simulated seconds and
// divided by Speed on the wall clock: export every 5 s, KEDA polling every
// 15 s, HPA sync every 15 s, pod start-up 20 s. cooldownPeriod and the HPA
// scale-down stabilisation window are shortened from their 300 s defaults to
// 60 s so that a ten-minute story shows both; both are options. On a busy
// machine the simulated clock advances at most one export interval per
// loop iteration, so the run stretches in wall time rather than skipping
// decisions. Range windows in a --query ([1m]) are wall-clock windows and
// so span Speed times more simulated time.
//
// The scaling trigger defaults to DefaultQuery, requests in the system
// (running plus waiting) per replica. A queue-only trigger such as
// sum(vllm:num_requests_waiting) shows a classic pitfall: once the pods keep
// up, the queue reads 0, the trigger is inactive, and with
// minReplicaCount 0 KEDA's cooldown scales a busy fleet to zero.
package demo
