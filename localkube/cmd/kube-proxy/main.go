// Command kube-proxy is the upstream kube-proxy, built from the pinned
// k8s.io/kubernetes module. localkube runs it in each cluster's node
// network namespace, where its rules make ClusterIPs route.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}
