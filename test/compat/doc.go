// Package compat checks the scaler's PromQL evaluator (pkg/query over
// pkg/store) against Prometheus's own promql.Engine on identical data: a
// differential test over random series and generated queries, a native
// fuzz target, and same-run speed benchmarks.
//
// It is a separate Go module so that the Prometheus engine and the query
// generator never enter the main module's dependency graph.
package compat
