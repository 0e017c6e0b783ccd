// Package helm checks the Helm chart in deploy/helm and the manifests in
// examples/. It is a nested module so Helm's dependency graph never reaches
// the scaler's go.mod.
package helm
