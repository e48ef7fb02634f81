// Command coredns is the cluster DNS of localkube: upstream CoreDNS, built
// from the pinned github.com/coredns/coredns module with only the plugins a
// cluster's DNS needs. This is CoreDNS's documented custom build (a main
// that imports coremain and the chosen plugins and sets the directive
// order) instead of its core/plugin package, which links every plugin and
// the cloud SDKs (route53, azure, clouddns) that we must never call.
//
// There is deliberately no forward (nor grpc, etcd, route53…) plugin:
// nothing a pod asks may leave the machine. Names outside the cluster get
// NXDOMAIN from the template plugin, which runs where forward would.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

// directives is upstream's order (core/dnsserver/zdirectives.go) restricted
// to the plugins above, except template: upstream runs it before
// kubernetes, we run it last, in forward's place, so that it only answers
// what the cluster zones did not.
var directives = []string{
	"reload",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"kubernetes",
	"template",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
