package clusterdns

import (
	"net"
	"os"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
)

// The image tag tells which CoreDNS runs; it must be the pinned module.
func TestTheImageNamesThePinnedCoreDNS(t *testing.T) {
	b, err := os.ReadFile("../../cmd/coredns/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?github\.com/coredns/coredns (v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("cmd/coredns/go.mod does not require github.com/coredns/coredns:\n%s", b)
	}
	if string(m[1]) != Version {
		t.Errorf("cmd/coredns pins CoreDNS %s, the image says %s", m[1], Version)
	}
}

func TestTheCorefileNeverForwards(t *testing.T) {
	for _, p := range []string{"forward", "grpc", "etcd", "route53"} {
		if regexp.MustCompile(`(?m)^\s*` + p + `\b`).MatchString(Corefile) {
			t.Errorf("the Corefile uses %s, which sends queries off the machine", p)
		}
	}
	if !strings.Contains(Corefile, "rcode NXDOMAIN") {
		t.Error("the Corefile does not answer other names with NXDOMAIN")
	}
}

func TestObjectsPutKubeDNSAtTheGivenIP(t *testing.T) {
	ip := net.IPv4(198, 19, 20, 10)
	var svc *v1.Service
	var dep *appsv1.Deployment
	for _, o := range Objects(ip) {
		switch o := o.(type) {
		case *v1.Service:
			svc = o
		case *appsv1.Deployment:
			dep = o
		}
	}
	if svc == nil || svc.Name != "kube-dns" || svc.Namespace != "kube-system" || svc.Spec.ClusterIP != "198.19.20.10" {
		t.Fatalf("kube-dns Service: %+v", svc)
	}
	if dep == nil || dep.Spec.Template.Spec.DNSPolicy != v1.DNSDefault || dep.Spec.Template.Spec.Containers[0].Image != Image {
		t.Fatalf("coredns Deployment: %+v", dep)
	}
}
