package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"meshtls/localkube/internal/clusterdns"
	"meshtls/localkube/internal/podnet"
)

// resolve looks name up from inside the pod with its own resolver (the
// pod's /etc/resolv.conf) until the answer is want, and returns the last
// answer. CoreDNS learns of a new Service through its watch, so the first
// lookups may come before it has.
func resolve(t *testing.T, podIP, name, want string) string {
	t.Helper()
	var got string
	_ = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
		got = get(t, podIP, "/resolve?name="+url.QueryEscape(name))
		return got == want, nil
	})
	return got
}

// waitEndpoint waits until the Service's EndpointSlices list ip as ready.
func waitEndpoint(t *testing.T, ns, svc, ip string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		slices, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
		if err != nil {
			return false, nil
		}
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if len(e.Addresses) > 0 && e.Addresses[0] == ip && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("Service %s/%s: EndpointSlices never listed %s: %v", ns, svc, ip, err)
	}
}

// getAny is get that returns an error's text instead of failing.
func getAny(podIP, path string) string {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + podIP + ":8080" + path)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func createService(t *testing.T, ns string, svc *v1.Service) *v1.Service {
	t.Helper()
	s, err := client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func appService(name, selector, clusterIP string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.ServiceSpec{
			Selector:  map[string]string{"app": selector},
			ClusterIP: clusterIP,
			Ports:     []v1.ServicePort{{Name: "http", Port: 8080}},
		},
	}
}

func TestPodsResolveServicesThroughClusterDNS(t *testing.T) {
	t.Parallel()
	ns, other := namespace(t), namespace(t)
	ctx := context.Background()
	for _, name := range []string{"web", "client"} {
		if _, err := client.CoreV1().Pods(ns).Create(ctx, appPod(name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	web := createService(t, ns, appService("web-svc", "web", ""))
	createService(t, ns, appService("web-headless", "web", v1.ClusterIPNone))
	far := createService(t, other, appService("far", "nothing", ""))
	webPod := waitPod(t, ns, "web", 30*time.Second, "Ready", isReady)
	c := waitPod(t, ns, "client", 30*time.Second, "Ready", isReady).Status.PodIP
	// A headless name lists the pods of its EndpointSlices.
	waitEndpoint(t, ns, "web-headless", webPod.Status.PodIP)

	cases := []struct{ name, want string }{
		{"web-svc", web.Spec.ClusterIP}, // the pod's own namespace, through the search list
		{"web-svc." + ns, web.Spec.ClusterIP},
		{"web-svc." + ns + ".svc", web.Spec.ClusterIP},
		{"web-svc." + ns + ".svc.cluster.local", web.Spec.ClusterIP},
		{"web-svc." + ns + ".svc.cluster.local.", web.Spec.ClusterIP}, // absolute
		{"web-headless." + ns, webPod.Status.PodIP},                   // headless: the pods' IPs
		{"far." + other, far.Spec.ClusterIP},                          // another namespace, by NAME.NS
		{"kube-dns.kube-system", podnet.DNSServiceIP(podBlock).String()},
		{"kubernetes.default", podnet.APIServiceIP(podBlock).String()},
	}
	for _, tc := range cases {
		if got := resolve(t, c, tc.name, tc.want); got != tc.want {
			t.Errorf("in pod %s/client, %s resolves to %q, want %q", ns, tc.name, got, tc.want)
		}
	}
	// A short name is the pod's own namespace only.
	if got := get(t, c, "/resolve?name=far"); !strings.Contains(got, "no such host") {
		t.Errorf("in namespace %s, the short name far (a Service of %s) resolves to %q, want no such host", ns, other, got)
	}
	// The Service answers at the name, end to end through its ClusterIP
	// (once kube-proxy has synced it, which may come after CoreDNS knows it).
	var got string
	_ = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
		got = getAny(c, "/get?url="+url.QueryEscape("http://web-svc:8080/env?name=POD_NAME"))
		return got == "web", nil
	})
	if got != "web" {
		t.Errorf("GET http://web-svc:8080 from the client pod: %q, want the web pod's name", got)
	}
}

// TestANameOutsideTheClusterDoesNotResolveAndSendsNothingOut: CoreDNS has
// no forward plugin, so a name outside cluster.local gets NXDOMAIN and
// neither the pod nor CoreDNS sends a packet beyond our CIDRs.
func TestANameOutsideTheClusterDoesNotResolveAndSendsNothingOut(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(filepath.Join(filepath.Dir(localkube), "coredns"), "-plugins").CombinedOutput()
	if err != nil {
		t.Fatalf("coredns -plugins: %v\n%s", err, out)
	}
	if !hasLine(out, "kubernetes") {
		t.Fatalf("coredns -plugins does not list kubernetes; cannot tell what it has:\n%s", out)
	}
	for _, p := range []string{"forward", "grpc", "etcd", "route53", "azure", "clouddns", "secondary"} {
		if hasLine(out, p) {
			t.Errorf("bin/coredns has the %s plugin, which sends queries off the machine:\n%s", p, out)
		}
	}

	ns := namespace(t)
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), appPod("asker"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	asker := waitPod(t, ns, "asker", 30*time.Second, "Ready", isReady).Status.PodIP
	dns := corednsPod(t)
	// Count, in both pods' namespaces, every packet to an address outside
	// localkube's range (pods and ClusterIPs are all in it).
	comment := "localkube-e2e-" + ns
	for _, netns := range []string{netnsOf(t, asker), netnsOf(t, dns.Status.PodIP)} {
		rule := []string{"OUTPUT", "!", "-o", "lo", "!", "-d", podnet.Range, "-m", "comment", "--comment", comment}
		if out, err := exec.Command("ip", append([]string{"netns", "exec", netns, "iptables", "-w", "-I"}, rule...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables in %s: %v\n%s", netns, err, out)
		}
		t.Cleanup(func() {
			_ = exec.Command("ip", append([]string{"netns", "exec", netns, "iptables", "-w", "-D"}, rule...)...).Run()
		})
	}
	for _, name := range []string{"example.com", "example.com.", "www.example.org", "localhost.localdomain.invalid", "cluster.local.example.com"} {
		if got := get(t, asker, "/resolve?name="+url.QueryEscape(name)); !strings.Contains(got, "no such host") {
			t.Errorf("in a pod, %s resolves to %q, want no such host (NXDOMAIN from CoreDNS)", name, got)
		}
	}
	for _, netns := range []string{netnsOf(t, asker), netnsOf(t, dns.Status.PodIP)} {
		if n := countedPackets(t, netns, comment); n != 0 {
			t.Errorf("%d packets left netns %s for an address outside %s", n, netns, podnet.Range)
		}
	}
}

// hasLine reports whether out has a line that is name, spaces aside.
func hasLine(out []byte, name string) bool {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == name {
			return true
		}
	}
	return false
}

func countedPackets(t *testing.T, netns, comment string) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-L", "OUTPUT", "-v", "-x", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -L in %s: %v\n%s", netns, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, comment) {
			n, err := strconv.Atoi(strings.Fields(line)[0])
			if err != nil {
				t.Fatalf("iptables counter in %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no rule %s in netns %s:\n%s", comment, netns, out)
	return 0
}

func corednsPod(t *testing.T) *v1.Pod {
	t.Helper()
	list, err := client.CoreV1().Pods(clusterdns.Namespace).List(context.Background(), metav1.ListOptions{LabelSelector: "k8s-app=" + clusterdns.AppLabel})
	if err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		if isReady(&list.Items[i]) {
			return &list.Items[i]
		}
	}
	t.Fatalf("no Ready CoreDNS pod in %s (%d pods)", clusterdns.Namespace, len(list.Items))
	return nil
}

func TestCoreDNSRunsReadyInKubeSystem(t *testing.T) {
	t.Parallel()
	kubectl := filepath.Join(filepath.Dir(localkube), "kubectl")
	cmd := exec.Command(kubectl, "get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "--no-headers")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(clusterDir, "kubeconfig"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get pods -n kube-system: %v\n%s", err, out)
	}
	// NAME READY STATUS RESTARTS AGE
	f := strings.Fields(string(out))
	if len(f) < 3 || !strings.HasPrefix(f[0], "coredns-") || f[1] != "1/1" || f[2] != "Running" {
		t.Errorf("kubectl get pods -n kube-system: %q, want coredns-… 1/1 Running", out)
	}
	svc, err := client.CoreV1().Services(clusterdns.Namespace).Get(context.Background(), clusterdns.Service, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := podnet.DNSServiceIP(podBlock).String(); svc.Spec.ClusterIP != want {
		t.Errorf("Service kube-system/kube-dns has ClusterIP %s, want the service CIDR's .10, %s", svc.Spec.ClusterIP, want)
	}
	// The pod runs the pinned CoreDNS build: bin/coredns, of the version
	// its image names.
	pod := corednsPod(t)
	pid := pidOfContainer(t, pod, "coredns")
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if want := filepath.Join(filepath.Dir(localkube), "coredns"); err != nil || exe != want {
		t.Errorf("the CoreDNS pod's process %d runs %q (%v), want %s", pid, exe, err, want)
	}
	out, err = exec.Command(filepath.Join(filepath.Dir(localkube), "coredns"), "-version").CombinedOutput()
	if want := "CoreDNS-" + strings.TrimPrefix(clusterdns.Version, "v"); err != nil || !strings.HasPrefix(string(out), want) {
		t.Errorf("coredns -version: %q (%v), want %s", out, err, want)
	}
}

// pidOfContainer reads the container's pid file in the pod's dir.
func pidOfContainer(t *testing.T, pod *v1.Pod, container string) int {
	t.Helper()
	dir := filepath.Join(clusterDir, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID), "containers", container+".pid")
	b, err := os.ReadFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// hostResolver is what the node's /etc/resolv.conf says.
func hostResolver(t *testing.T) (nameservers, searches []string) {
	t.Helper()
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			nameservers = append(nameservers, f[1])
		case "search", "domain":
			searches = f[1:]
		}
	}
	return nameservers, searches
}

func TestEachPodSeesTheResolvConfOfItsDNSPolicy(t *testing.T) {
	t.Parallel()
	hostResolv, hostHosts := fileSum(t, "/etc/resolv.conf"), fileSum(t, "/etc/hosts")
	ns := namespace(t)
	ctx := context.Background()
	nodeIP := podnet.ForBlock(podBlock).NodeIP.String()

	first := appPod("first") // dnsPolicy ClusterFirst, the default
	first.Spec.Hostname, first.Spec.Subdomain = "db-0", "db"
	first.Spec.HostAliases = []v1.HostAlias{{IP: nodeIP, Hostnames: []string{"node.local", "node"}}}
	host := appPod("host")
	host.Spec.DNSPolicy = v1.DNSDefault
	none := appPod("none")
	none.Spec.DNSPolicy = v1.DNSNone
	none.Spec.DNSConfig = &v1.PodDNSConfig{
		Nameservers: []string{nodeIP},
		Searches:    []string{"corp.example"},
		Options:     []v1.PodDNSConfigOption{{Name: "ndots", Value: ptr("2")}, {Name: "edns0"}},
	}
	for _, p := range []*v1.Pod{first, host, none} {
		if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ips := map[string]string{}
	for _, name := range []string{"first", "host", "none"} {
		ips[name] = waitPod(t, ns, name, 30*time.Second, "Ready", isReady).Status.PodIP
	}
	hostServers, hostSearch := hostResolver(t)
	want := map[string]string{
		"first": "search " + strings.Join(append([]string{ns + ".svc.cluster.local", "svc.cluster.local", "cluster.local"}, hostSearch...), " ") + "\n" +
			"nameserver " + podnet.DNSServiceIP(podBlock).String() + "\n" +
			"options ndots:5\n",
		"none": "search corp.example\nnameserver " + nodeIP + "\noptions ndots:2 edns0\n",
	}
	for name, w := range want {
		if got := get(t, ips[name], "/file?path=/etc/resolv.conf"); got != w {
			t.Errorf("pod %s: /etc/resolv.conf is\n%s\nwant\n%s", name, got, w)
		}
	}
	// Default: the node's resolver, as kubelet's --resolv-conf gives it.
	got := get(t, ips["host"], "/file?path=/etc/resolv.conf")
	for _, s := range hostServers {
		if !strings.Contains(got, "nameserver "+s+"\n") {
			t.Errorf("pod host (dnsPolicy Default): /etc/resolv.conf\n%s\nlacks the node's nameserver %s", got, s)
		}
	}
	// /etc/hosts names the pod (with its FQDN under a subdomain) and its aliases.
	hosts := get(t, ips["first"], "/file?path=/etc/hosts")
	for _, line := range []string{
		"127.0.0.1\tlocalhost\n",
		ips["first"] + "\tdb-0.db." + ns + ".svc.cluster.local\tdb-0\n",
		nodeIP + "\tnode.local\tnode\n",
	} {
		if !strings.Contains(hosts, line) {
			t.Errorf("pod first: /etc/hosts lacks %q:\n%s", line, hosts)
		}
	}
	if got := get(t, ips["host"], "/resolve?name=host"); got != ips["host"] {
		t.Errorf("pod host resolves its own name to %q, want its IP %s (from /etc/hosts)", got, ips["host"])
	}
	// kubectl exec runs in the pod's view too.
	kubectl := filepath.Join(filepath.Dir(localkube), "kubectl")
	cmd := exec.Command(kubectl, "exec", "-n", ns, "none", "--", "cat", "/etc/resolv.conf")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(clusterDir, "kubeconfig"))
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != want["none"] {
		t.Errorf("kubectl exec none -- cat /etc/resolv.conf: %q (%v), want %q", out, err, want["none"])
	}
	// The node's own files are never touched.
	if fileSum(t, "/etc/resolv.conf") != hostResolv || fileSum(t, "/etc/hosts") != hostHosts {
		t.Errorf("the node's /etc/resolv.conf or /etc/hosts changed while pods ran")
	}
}
