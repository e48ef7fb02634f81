// Command etcd is the upstream etcd server at the release the pinned
// k8s.io/kubernetes module was tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
