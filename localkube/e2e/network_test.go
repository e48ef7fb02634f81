package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"meshtls/localkube/internal/podnet"
)

// readyPods waits for n Ready pods labelled app=name and returns them.
func readyPods(t *testing.T, ns, name string, n int) []v1.Pod {
	t.Helper()
	var pods []v1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, nil
		}
		pods = list.Items
		ready := 0
		for i := range pods {
			if isReady(&pods[i]) {
				ready++
			}
		}
		return ready == n && len(pods) == n, nil
	})
	if err != nil {
		for i := range pods {
			t.Log(describe(&pods[i]))
		}
		t.Fatalf("%s: %d Ready pods not reached: %v", name, n, err)
	}
	return pods
}

// netnsOf names the pod's network namespace, from its IP.
func netnsOf(t *testing.T, podIP string) string {
	t.Helper()
	i, ok := podnet.ForBlock(podBlock).PodIndex(net.ParseIP(podIP))
	if !ok {
		t.Fatalf("pod IP %s is not in the cluster's pod CIDR %s", podIP, podnet.ForBlock(podBlock).CIDR)
	}
	return podnet.ForBlock(podBlock).NetnsName(i)
}

func TestTwoReplicasBindTheSamePortAndReachEachOtherByIP(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	// testapp binds 0.0.0.0:8080: two replicas only both start if each
	// pod has a network namespace of its own.
	if _, err := client.AppsV1().Deployments(ns).Create(context.Background(), deployment("pair", 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := readyPods(t, ns, "pair", 2)
	a, b := pods[0].Status.PodIP, pods[1].Status.PodIP
	if a == b {
		t.Fatalf("both replicas have IP %s", a)
	}
	for _, p := range pods {
		if !strings.Contains(get(t, p.Status.PodIP, "/env?name=LOCALKUBE_POD_IP"), p.Status.PodIP) {
			t.Errorf("pod %s does not answer as itself on %s", p.Name, p.Status.PodIP)
		}
		// Every container's process is in the pod's namespace.
		pid := pidOf(t, p.Status.PodIP)
		if got, want := nsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid)), nsInode(t, "/run/netns/"+netnsOf(t, p.Status.PodIP)); got != want {
			t.Errorf("pod %s: process %d is in netns %d, want the pod's %d", p.Name, pid, got, want)
		}
	}
	// Pod to pod over the bridge: b sees a's own address as the peer.
	who := get(t, a, "/get?url="+"http://"+net.JoinHostPort(b, "8080")+"/whoami")
	if !strings.HasPrefix(who, "remote="+a+":") || !strings.Contains(who, "local="+b+":8080") {
		t.Errorf("a (%s) fetching b's /whoami: %q, want remote=%s local=%s:8080", a, who, a, b)
	}
	// localhost is the pod's own: 127.0.0.1:8080 in a is a's app.
	if pid := get(t, a, "/get?url=http://127.0.0.1:8080/pid"); pid != fmt.Sprint(pidOf(t, a)) {
		t.Errorf("127.0.0.1:8080 inside pod %s is pid %s, want its own app %d", a, pid, pidOf(t, a))
	}
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

func TestAPodCannotReachAnAddressOutsideOurCIDRs(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), appPod("jail"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, ns, "jail", 30*time.Second, "Ready", isReady)
	// The pod's routes are its /24 and, through the node, the service
	// CIDR and the host link: no default route at all.
	own := podnet.ForBlock(podBlock)
	allowed := []string{own.CIDR.String() + " dev eth0", own.NodeRoutes().String() + " via " + own.NodeIP.String() + " dev eth0"}
	out, err := exec.Command("ip", "-n", netnsOf(t, p.Status.PodIP), "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route in the pod: %v\n%s", err, out)
	}
	checkRoutes(t, "pod", string(out), allowed)
	// The node namespace, which forwards, has only the pods' /24 and the
	// service CIDR (rejected unless kube-proxy DNATs it) on the bridge, and
	// the host link.
	out, err = exec.Command("ip", "-n", own.NodeNetns, "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route in the node namespace: %v\n%s", err, out)
	}
	checkRoutes(t, "node namespace", string(out), []string{own.CIDR.String() + " dev " + own.Bridge, own.ServiceCIDR.String() + " dev " + own.Bridge, own.LinkCIDR.String() + " dev " + own.NodeLink})
	// A dial to the documentation address 203.0.113.1 fails in the pod
	// before any packet is sent: there is no route.
	if got := get(t, p.Status.PodIP, "/dial?addr=203.0.113.1:80"); !strings.Contains(got, "network is unreachable") {
		t.Errorf("pod dialing 203.0.113.1:80: %q, want network is unreachable", got)
	}
}

// checkRoutes fails for each route of an `ip route show table all`
// listing that starts with none of allowed (the kernel's local and
// broadcast routes aside).
func checkRoutes(t *testing.T, where, listing string, allowed []string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		if strings.HasPrefix(line, "local ") || strings.HasPrefix(line, "broadcast ") {
			continue // the kernel's own local table
		}
		ok := false
		for _, a := range allowed {
			ok = ok || strings.HasPrefix(line, a)
		}
		if !ok {
			t.Errorf("%s has a route beyond %v: %q", where, allowed, line)
		}
	}
}

func TestAnUnassignedPodAddressGetsNoPacketOut(t *testing.T) {
	t.Parallel()
	// Within the range but outside every cluster's pod CIDR (198.19/16 is
	// never a pod CIDR), the host's route is the blackhole: the kernel
	// refuses to send, so nothing leaves towards the default route.
	unassigned := net.ParseIP("198.19.0.77")
	routes, err := netlink.RouteGet(unassigned)
	if err == nil {
		for _, r := range routes {
			if r.Type != syscall.RTN_BLACKHOLE {
				t.Errorf("host route to %s: %+v, want the blackhole", unassigned, r)
			}
		}
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(unassigned.String(), "80"), 2*time.Second)
	if err == nil {
		_ = c.Close()
		t.Fatalf("the host connected to unassigned %s", unassigned)
	}
	if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENETUNREACH) && !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("host dialing unassigned %s: %v, want the blackhole's immediate refusal", unassigned, err)
	}
	// Inside our own /24, a free address goes through the host link to
	// the node namespace, where it is on the bridge, which has no way out
	// but our veths.
	own := podnet.ForBlock(podBlock)
	free := net.IPv4(198, 18, byte(podBlock), 254)
	routes, err = netlink.RouteGet(free)
	if err != nil || len(routes) == 0 {
		t.Fatalf("host route to %s: %v", free, err)
	}
	hl, err := netlink.LinkByName(own.HostLink)
	if err != nil {
		t.Fatal(err)
	}
	if routes[0].LinkIndex != hl.Attrs().Index || !routes[0].Gw.Equal(own.NodeLinkIP) {
		t.Errorf("host route to %s: %+v, want via %s on %s", free, routes[0], own.NodeLinkIP, own.HostLink)
	}
	out, err := exec.Command("ip", "-n", own.NodeNetns, "-4", "route", "get", free.String()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dev "+own.Bridge) {
		t.Errorf("node namespace's route to %s: %v %s, want on %s", free, err, out, own.Bridge)
	}
	if !podnet.HasBlackhole() {
		t.Errorf("no blackhole route for %s while a cluster runs", podnet.Range)
	}
}

// TestOnlyTheNodeNamespaceForwardsAndOnlyOurRange: localkube turns
// forwarding on in the node namespace only, never on the host, and both
// places drop forwarded traffic with an address outside our range.
func TestOnlyTheNodeNamespaceForwardsAndOnlyOurRange(t *testing.T) {
	t.Parallel()
	own := podnet.ForBlock(podBlock)
	host, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(host)) != "0" {
		t.Errorf("host ip_forward is %s: localkube must never turn it on (was it on before the tests?)", host)
	}
	node, err := exec.Command("ip", "netns", "exec", own.NodeNetns, "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/bridge/bridge-nf-call-iptables").CombinedOutput()
	if err != nil || strings.Fields(string(node))[0] != "1" || strings.Fields(string(node))[1] != "1" {
		t.Errorf("node namespace ip_forward and bridge-nf-call-iptables: %v %q, want 1 and 1", err, node)
	}
	if !podnet.HaveIPTables() {
		t.Fatal("no iptables command: the FORWARD rules cannot be checked (make deps installs it)")
	}
	rules, err := own.NodeForwardRules()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"! -s " + podnet.Range, "! -d " + podnet.Range}
	for _, w := range want {
		found := false
		for _, r := range rules {
			found = found || (strings.Contains(r, w) && strings.HasSuffix(r, "-j DROP"))
		}
		if !found {
			t.Errorf("node namespace mangle FORWARD has no %q drop: %v", w, rules)
		}
	}
	// The host's rules on the link are what podnet.Leftovers reports as
	// "iptables ...": both directions.
	n := 0
	for _, l := range podnet.Leftovers(podBlock) {
		if strings.HasPrefix(l, "iptables ") && strings.Contains(l, own.HostLink) && strings.HasSuffix(l, "-j DROP") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("host FORWARD has %d drop rules on %s, want 2: %v", n, own.HostLink, podnet.Leftovers(podBlock))
	}
}

func TestDownAfterAKilledLocalkubeLeavesNoNetworkBehind(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	t.Cleanup(func() { _, _ = lk("down", "--dir", dir) })
	if out, err := lk("up", "--dir", dir, "--bin-dir", appBinDir); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	st := readStateFile(t, dir)
	cfg, err := clientcmd.BuildConfigFromFlags("", dir+"/kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Pods("default").Create(context.Background(), appPod("victim"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		return hasPodNetns(st.Block), nil
	})
	if err != nil {
		t.Fatalf("pod network of block %d never complete: %v", st.Block, podnet.Leftovers(st.Block))
	}
	proxy := st.Pids["kube-proxy"]
	if proxy == 0 || !alive(proxy) {
		t.Fatalf("kube-proxy (pid %d) does not run", proxy)
	}
	if got, want := nsInode(t, fmt.Sprintf("/proc/%d/ns/net", proxy)), nsInode(t, podnet.ForBlock(st.Block).NodeNetnsPath()); got != want {
		t.Errorf("kube-proxy runs in netns %d, want the node's %d", got, want)
	}
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); (alive(st.Pid) || alive(proxy)) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(proxy) {
		t.Errorf("kube-proxy %d outlived its killed localkube", proxy)
	}
	left := podnet.Leftovers(st.Block)
	if len(left) == 0 {
		t.Fatal("a kill -9 left nothing to clean: the test proves nothing")
	}
	t.Logf("left by kill -9: %v", left)
	// up on the stale dir cleans its own block's leftovers, then down
	// cleans what the recovered cluster made.
	if out, err := lk("up", "--dir", dir, "--bin-dir", appBinDir); err != nil {
		t.Fatalf("up after kill -9: %v\n%s", err, out)
	}
	st2 := readStateFile(t, dir)
	if err := syscall.Kill(st2.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); alive(st2.Pid) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	downOut, err := lk("down", "--dir", dir)
	if err != nil {
		t.Fatalf("down: %v\n%s", err, downOut)
	}
	if p := st2.Pids["kube-proxy"]; p == 0 || alive(p) {
		t.Errorf("kube-proxy of the recovered cluster (pid %d) not started or still runs after down", p)
	}
	if left := podnet.Leftovers(st2.Block); len(left) > 0 {
		t.Errorf("down after kill -9 left %v; down said:\n%s", left, downOut)
	}
	// The shared cluster of this package still runs and keeps its network.
	if left := podnet.Leftovers(podBlock); len(left) == 0 {
		t.Errorf("cleaning block %d touched the package cluster's block %d", st2.Block, podBlock)
	}
	if !podnet.HasBlackhole() {
		t.Error("down of one cluster removed the blackhole route while another cluster runs")
	}
}

// hasPodNetns tells whether block b has a pod's namespace (not just the
// node's), so that a kill leaves a pod's network behind to clean up.
func hasPodNetns(b int) bool {
	for _, l := range podnet.Leftovers(b) {
		if strings.HasPrefix(l, "netns ") && l != "netns "+podnet.ForBlock(b).NodeNetns {
			return true
		}
	}
	return false
}

type stateFile struct {
	Pid   int            `json:"pid"`
	Block int            `json:"podAddressBlock"`
	Pids  map[string]int `json:"pids"`
}

func readStateFile(t *testing.T, dir string) stateFile {
	t.Helper()
	var st stateFile
	b, err := os.ReadFile(dir + "/state.json")
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil || st.Pid == 0 || st.Block == 0 {
		t.Fatalf("state.json of %s: %v %s", dir, err, b)
	}
	return st
}

// TestProxyInitRedirectsThePodsTraffic runs the mesh's real proxy-init
// (built from the main module) as an init container and checks its rules
// in the pod: inbound TCP lands on 4143, the app's outbound TCP on 4140,
// while the ignored port, loopback and the proxy's uid pass untouched.
// Two testapps play the proxy's listeners, as uid 2102 (runAsUser).
func TestProxyInitRedirectsThePodsTraffic(t *testing.T) {
	t.Parallel()
	if proxyInitErr != nil {
		t.Fatalf("build proxy-init from the main module: %v", proxyInitErr)
	}
	ns := namespace(t)
	ctx := context.Background()
	if _, err := client.CoreV1().Pods(ns).Create(ctx, appPod("target"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	proxyUID := int64(2102)
	listener := func(name, listen string, probePort int32) v1.Container {
		c := appContainer("--listen=" + listen)
		c.Name = name
		c.SecurityContext = &v1.SecurityContext{RunAsUser: &proxyUID}
		c.ReadinessProbe = nil
		if probePort != 0 {
			c.ReadinessProbe = &v1.Probe{ProbeHandler: v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/ready", Port: intOrStr(probePort)}}, PeriodSeconds: 1}
		}
		return c
	}
	app := appContainer("--listen=:4190") // an ignored inbound port: reachable from outside as itself
	app.ReadinessProbe.HTTPGet.Port = intOrStr(4190)
	meshed := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "meshed"},
		Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: ptr(int64(2)),
			InitContainers: []v1.Container{{
				Name: "linkerd-init", Image: "example.test/meshtls/proxy-init:v1",
				Args: []string{"--incoming-proxy-port", "4143", "--outgoing-proxy-port", "4140",
					"--proxy-uid", "2102", "--inbound-ports-to-ignore", "4190,4191"},
				SecurityContext: &v1.SecurityContext{Capabilities: &v1.Capabilities{Add: []v1.Capability{"NET_ADMIN"}}},
			}},
			Containers: []v1.Container{app, listener("inbound", ":4143", 4143), listener("outbound", "127.0.0.1:4140", 0)},
		},
	}
	if _, err := client.CoreV1().Pods(ns).Create(ctx, meshed, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	target := waitPod(t, ns, "target", 60*time.Second, "Ready", isReady).Status.PodIP
	p := waitPod(t, ns, "meshed", 60*time.Second, "Ready", isReady)
	if term := p.Status.InitContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 0 {
		t.Fatalf("proxy-init did not complete: %s", describe(p))
	}
	ip := p.Status.PodIP

	// Inbound: a connection to the app's port 8080 reaches the inbound
	// listener on 4143, which runs as the proxy's uid.
	if got := get(t, ip, "/whoami"); !strings.Contains(got, "local="+ip+":4143") || !strings.HasSuffix(got, "uid=2102") {
		t.Errorf("inbound to %s:8080 answered %q, want the 4143 listener as uid 2102", ip, got)
	}
	// An ignored inbound port is not redirected.
	whoApp := getPort(t, ip, 4190, "/whoami")
	if !strings.Contains(whoApp, "local="+ip+":4190") || !strings.HasSuffix(whoApp, "uid=0") {
		t.Errorf("inbound to ignored port 4190 answered %q, want the app itself", whoApp)
	}
	// Outbound: the app's connection to another pod lands on 4140.
	url := "http://" + net.JoinHostPort(target, "8080") + "/whoami"
	if got := getPort(t, ip, 4190, "/get?url="+url); !strings.Contains(got, "local=127.0.0.1:4140") || !strings.HasSuffix(got, "uid=2102") {
		t.Errorf("app fetching %s got %q, want the 4140 listener (uid 2102)", url, got)
	}
	// The proxy's own outbound connection goes straight to the target.
	if got := get(t, ip, "/get?url="+url); !strings.Contains(got, "local="+target+":8080") {
		t.Errorf("uid 2102 fetching %s got %q, want the target itself", url, got)
	}
	// Loopback is not redirected: the app reaches itself on 127.0.0.1.
	if got := getPort(t, ip, 4190, "/get?url=http://127.0.0.1:4190/whoami"); !strings.Contains(got, "local=127.0.0.1:4190") {
		t.Errorf("app fetching itself on loopback got %q", got)
	}
	// The rules live in the pod's namespace only.
	out, err := exec.Command("iptables", "-t", "nat", "-S").CombinedOutput()
	if err == nil && strings.Contains(string(out), "PROXY_INIT") {
		t.Errorf("proxy-init's rules leaked into the host's nat table:\n%s", out)
	}
}

// getPort is get on another port.
func getPort(t *testing.T, ip string, port int, path string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(ip, fmt.Sprint(port)) + path)
	if err != nil {
		t.Fatalf("GET %s:%d%s: %v", ip, port, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s:%d%s: %s: %s", ip, port, path, resp.Status, b)
	}
	return string(b)
}

func TestEndpointSlicesListThePodIPs(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deployment("backend", 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "backend"},
		Spec: v1.ServiceSpec{Selector: map[string]string{"app": "backend"},
			Ports: []v1.ServicePort{{Name: "http", Port: 80, TargetPort: intOrStr(8080)}}},
	}
	if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, p := range readyPods(t, ns, "backend", 2) {
		want[p.Status.PodIP] = true
	}
	var got map[string]bool
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=backend"})
		if err != nil {
			return false, nil
		}
		got = map[string]bool{}
		for _, s := range list.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					for _, a := range e.Addresses {
						got[a] = true
					}
				}
			}
		}
		return fmt.Sprint(got) == fmt.Sprint(want), nil
	})
	if err != nil {
		t.Fatalf("EndpointSlices of backend list ready %v, want the pod IPs %v", got, want)
	}
}

// TestAKilledOwnerLeavesNoNetworkBehind is a killed `go test`: the cluster
// of an --owner-pid that dies stops itself and removes its network.
func TestAKilledOwnerLeavesNoNetworkBehind(t *testing.T) {
	t.Parallel()
	owner := exec.Command("sleep", "600")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Process.Kill(); _ = owner.Wait() })
	dir := t.TempDir()
	t.Cleanup(func() { _, _ = lk("down", "--dir", dir) })
	if out, err := lk("up", "--dir", dir, "--bin-dir", appBinDir, "--owner-pid", fmt.Sprint(owner.Process.Pid)); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	st := readStateFile(t, dir)
	cfg, err := clientcmd.BuildConfigFromFlags("", dir+"/kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Pods("default").Create(context.Background(), appPod("orphan"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		return hasPodNetns(st.Block), nil
	})
	if err != nil {
		t.Fatalf("pod network of block %d never complete: %v", st.Block, podnet.Leftovers(st.Block))
	}
	_ = owner.Process.Kill()
	_ = owner.Wait()
	// The owner watch polls every second; shutdown waits for the pod.
	for deadline := time.Now().Add(60 * time.Second); alive(st.Pid) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	if alive(st.Pid) {
		t.Fatalf("localkube %d still runs a minute after its owner died", st.Pid)
	}
	if left := podnet.Leftovers(st.Block); len(left) > 0 {
		t.Errorf("the cluster of a killed owner left %v", left)
	}
	if p := st.Pids["kube-proxy"]; p == 0 || alive(p) {
		t.Errorf("kube-proxy of the owned cluster (pid %d) not started or still runs", p)
	}
}
