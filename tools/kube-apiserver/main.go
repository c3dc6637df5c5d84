// Command kube-apiserver is the unmodified upstream Kubernetes API server,
// built from the module proxy so that tests run against the real thing offline.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
