//go:build tools

// Package keda pins KEDA's operator and metrics adapter for test/k8s, which
// builds them with `go build github.com/kedacore/keda/v2/cmd/operator` (and
// cmd/adapter) in this directory. These imports are never compiled; they
// keep both commands' dependencies in go.sum through `go mod tidy`. The
// module's directory also provides KEDA's CRDs (config/crd/bases).
package keda

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
