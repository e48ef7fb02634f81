package kubelet

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestResolvConfIsWrittenAsARuntimeWritesIt(t *testing.T) {
	got := string(resolvConf(&runtimeapi.DNSConfig{
		Servers:  []string{"198.19.20.10"},
		Searches: []string{"ns.svc.cluster.local", "svc.cluster.local", "cluster.local"},
		Options:  []string{"ndots:5"},
	}))
	want := "search ns.svc.cluster.local svc.cluster.local cluster.local\nnameserver 198.19.20.10\noptions ndots:5\n"
	if got != want {
		t.Errorf("resolv.conf:\n%s\nwant\n%s", got, want)
	}
	if got := string(resolvConf(&runtimeapi.DNSConfig{Servers: []string{"1.2.3.4", "5.6.7.8"}})); got != "nameserver 1.2.3.4\nnameserver 5.6.7.8\n" {
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
