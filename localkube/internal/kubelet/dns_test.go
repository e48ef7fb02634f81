package kubelet

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestResolvConfIsWrittenAsARuntimeWritesIt(t *testing.T) {
	got := string(resolvConf(dnsConfig{
		servers:  []string{"198.19.20.10"},
		searches: []string{"ns.svc.cluster.local", "svc.cluster.local", "cluster.local"},
		options:  []string{"ndots:5"},
	}))
	want := "search ns.svc.cluster.local svc.cluster.local cluster.local\nnameserver 198.19.20.10\noptions ndots:5\n"
	if got != want {
		t.Errorf("resolv.conf:\n%s\nwant\n%s", got, want)
	}
	if got := string(resolvConf(dnsConfig{servers: []string{"1.2.3.4", "5.6.7.8"}})); got != "nameserver 1.2.3.4\nnameserver 5.6.7.8\n" {
		t.Errorf("resolv.conf without searches or options: %q", got)
	}
}

func TestHostsFileNamesThePodItsFQDNAndAliases(t *testing.T) {
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop"}, Spec: v1.PodSpec{
		Hostname: "web-0", Subdomain: "web",
		HostAliases: []v1.HostAlias{{IP: "198.18.20.1", Hostnames: []string{"node", "node.local"}}},
	}}
	got := string(hostsFile(pod, "198.18.20.7"))
	for _, line := range []string{"127.0.0.1\tlocalhost\n", "198.18.20.7\tweb-0.web.shop.svc.cluster.local\tweb-0\n", "198.18.20.1\tnode\tnode.local\n"} {
		if !strings.Contains(got, line) {
			t.Errorf("hosts file lacks %q:\n%s", line, got)
		}
	}
	long := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("a", 62) + "-bcd"}}
	if host, fqdn := podHostname(long); host != strings.Repeat("a", 62) || fqdn != "" {
		t.Errorf("podHostname of a 66-char name: %q %q, want the first 63 chars without the trailing dash, no FQDN", host, fqdn)
	}
}

// A process started from a pod thread sees the bind-mounted file at the
// target path; the rest of the machine still sees the original.
func TestAPodThreadsProcessesSeeTheBindMountsAndTheHostDoesNot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (mount namespaces); localkube's tests run as root")
	}
	dir := t.TempDir()
	target, source := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "pod-resolv.conf")
	if err := os.WriteFile(target, []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(source, []byte("pod\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	th, err := newPodThread("/proc/self/ns/net", []bindMount{{source: source, target: target}, {source: source, target: filepath.Join(dir, "absent")}})
	if err != nil {
		t.Fatal(err)
	}
	defer th.close()
	for i := 0; i < 2; i++ { // the thread serves every start of the pod
		cmd := exec.Command("cat", target)
		var out strings.Builder
		cmd.Stdout = &out
		if err := th.run(cmd.Start); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		if out.String() != "pod\n" {
			t.Errorf("start %d: the process reads %q at the target, want the pod's file", i, out.String())
		}
	}
	if b, _ := os.ReadFile(target); string(b) != "host\n" {
		t.Errorf("outside the pod the target reads %q, want the original", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "absent")); !os.IsNotExist(err) {
		t.Errorf("a missing target was created: %v", err)
	}
	th.close()
	if err := th.run(func() error { return nil }); err == nil {
		t.Error("a closed pod thread still runs starts")
	}
}

func TestPodDNSFollowsKubeletsPolicies(t *testing.T) {
	k := &Kubelet{cfg: Config{ClusterDNS: []net.IP{net.IPv4(198, 19, 20, 10)}}}
	host := parseResolvConf([]byte("# the node\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch old.example\nsearch corp.example. .\noptions timeout:2 ndots:1\noptions ndots:3\n"))
	if want := (dnsConfig{servers: []string{"10.0.0.2", "10.0.0.3"}, searches: []string{"corp.example"}, options: []string{"timeout:2", "ndots:3"}}); !reflect.DeepEqual(host, want) {
		t.Fatalf("parsed node resolv.conf: %+v, want %+v", host, want)
	}
	pod := func(policy v1.DNSPolicy, hostNet bool, dc *v1.PodDNSConfig) *v1.Pod {
		return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"}, Spec: v1.PodSpec{DNSPolicy: policy, HostNetwork: hostNet, DNSConfig: dc}}
	}
	two := "2"
	cluster := dnsConfig{servers: []string{"198.19.20.10"}, searches: []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"}, options: []string{"ndots:5"}}
	for _, tc := range []struct {
		name string
		pod  *v1.Pod
		want dnsConfig
	}{
		{"ClusterFirst", pod(v1.DNSClusterFirst, false, nil), cluster},
		{"ClusterFirst on the host network is Default", pod(v1.DNSClusterFirst, true, nil), host},
		{"ClusterFirstWithHostNet", pod(v1.DNSClusterFirstWithHostNet, true, nil), cluster},
		{"Default", pod(v1.DNSDefault, false, nil), host},
		{"None", pod(v1.DNSNone, false, &v1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}, Searches: []string{"a.example"},
			Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: &two}, {Name: "edns0"}}}),
			dnsConfig{servers: []string{"1.1.1.1"}, searches: []string{"a.example"}, options: []string{"ndots:2", "edns0"}}},
		{"ClusterFirst with dnsConfig", pod(v1.DNSClusterFirst, false, &v1.PodDNSConfig{Nameservers: []string{"198.19.20.10", "9.9.9.9"},
			Searches: []string{"cluster.local", "b.example"}, Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: &two}}}),
			dnsConfig{servers: []string{"198.19.20.10", "9.9.9.9"}, searches: append(append([]string{}, cluster.searches...), "b.example"), options: []string{"ndots:2"}}},
	} {
		host := parseResolvConf([]byte("nameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch corp.example\noptions timeout:2 ndots:3\n"))
		if got := k.dnsFor(tc.pod, host); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	// Without a cluster DNS, ClusterFirst falls back to Default.
	none := &Kubelet{}
	if got := none.dnsFor(pod(v1.DNSClusterFirst, false, nil), host); !reflect.DeepEqual(got, host) {
		t.Errorf("ClusterFirst without a cluster DNS: %+v, want the node's %+v", got, host)
	}
	// Limits: three nameservers, 32 search domains.
	var many []string
	for i := 0; i < 40; i++ {
		many = append(many, fmt.Sprintf("d%02d.example", i))
	}
	got := k.dnsFor(pod(v1.DNSNone, false, &v1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"}, Searches: many}), dnsConfig{})
	if len(got.servers) != 3 || len(got.searches) != 32 || got.searches[31] != "d31.example" {
		t.Errorf("limits: %d nameservers and %d searches, want 3 and at most 32", len(got.servers), len(got.searches))
	}
}
