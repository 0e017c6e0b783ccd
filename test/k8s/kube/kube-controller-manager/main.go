// Command kube-controller-manager is Kubernetes' controller manager built from
// the k8s.io/kubernetes module (see ../go.mod) for test/k8s: the same
// app.NewControllerManagerCommand the release binary runs, nothing added.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
