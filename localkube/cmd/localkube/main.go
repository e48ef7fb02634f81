// Command localkube runs a local Kubernetes cluster: etcd, kube-apiserver,
// kube-controller-manager and a kubelet that runs pods as processes.
package main

import (
	"os"

	"meshtls/localkube/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
