package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"meshtls/localkube/internal/podnet"
)

// service creates a ClusterIP Service on port 80 for the pods labelled
// app=name (testapp's 8080) and returns its ClusterIP.
func service(t *testing.T, ns, name string) string {
	t.Helper()
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []v1.ServicePort{{Name: "http", Port: 80, TargetPort: intOrStr(8080)}}},
	}
	got, err := client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := got.Spec.ClusterIP
	if !podnet.ForBlock(podBlock).ServiceCIDR.Contains(net.ParseIP(ip)) {
		t.Fatalf("Service %s got ClusterIP %s, outside the cluster's service CIDR %s", name, ip, podnet.ForBlock(podBlock).ServiceCIDR)
	}
	return ip
}

// whoamiVia asks the pod at podIP to fetch http://CLUSTERIP/whoami (a new
// connection each time) and returns the local address the answering
// endpoint saw, or "" and the error text.
func whoamiVia(podIP, clusterIP string) (remote, local, failure string) {
	c := http.Client{Timeout: 6 * time.Second}
	resp, err := c.Get("http://" + podIP + ":8080/get?url=http://" + clusterIP + "/whoami")
	if err != nil {
		return "", "", err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", "", resp.Status + ": " + string(body)
	}
	for _, f := range strings.Fields(string(body)) {
		if v, ok := strings.CutPrefix(f, "remote="); ok {
			remote, _, _ = net.SplitHostPort(v)
		}
		if v, ok := strings.CutPrefix(f, "local="); ok {
			local, _, _ = net.SplitHostPort(v)
		}
	}
	return remote, local, ""
}

// TestAPodReachesAServiceByClusterIPAndBothReplicasAnswer: kube-proxy's
// rules in the node namespace balance a ClusterIP over the Service's two
// pods, for a client pod (which the endpoints see by its own pod IP) and
// for the host.
func TestAPodReachesAServiceByClusterIPAndBothReplicasAnswer(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deployment("backend", 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods(ns).Create(ctx, appPod("client"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clusterIP := service(t, ns, "backend")
	backends := map[string]bool{}
	for _, p := range readyPods(t, ns, "backend", 2) {
		backends[p.Status.PodIP] = true
	}
	clientIP := waitPod(t, ns, "client", 60*time.Second, "Ready", isReady).Status.PodIP

	// Until kube-proxy has the endpoints, the ClusterIP rejects: wait for
	// the first answer, then count who answers.
	seen := map[string]int{}
	var lastFailure string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		remote, local, failure := whoamiVia(clientIP, clusterIP)
		if failure != "" {
			lastFailure = failure
			return false, nil
		}
		if !backends[local] {
			t.Fatalf("ClusterIP %s answered from %s, not one of the Service's pods %v", clusterIP, local, backends)
		}
		// Pod to pod through the ClusterIP is not masqueraded: the
		// endpoint sees the client pod itself.
		if remote != clientIP {
			t.Errorf("endpoint %s saw the client as %s, want its pod IP %s", local, remote, clientIP)
		}
		seen[local]++
		return len(seen) == len(backends), nil
	})
	if err != nil {
		t.Fatalf("pod %s to ClusterIP %s: endpoints that answered %v of %v (last failure: %s)", clientIP, clusterIP, seen, backends, lastFailure)
	}
	// The host (tests, the CLI) reaches the ClusterIP too, through the
	// host link to the node namespace.
	host := map[string]bool{}
	fresh := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 40 && len(host) < 2; i++ {
		resp, err := fresh.Get("http://" + clusterIP + "/whoami")
		if err != nil {
			t.Fatalf("host to ClusterIP %s: %v", clusterIP, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, f := range strings.Fields(string(b)) {
			if v, ok := strings.CutPrefix(f, "local="); ok {
				ip, _, _ := net.SplitHostPort(v)
				host[ip] = true
			}
		}
	}
	if len(host) != 2 {
		t.Errorf("host to ClusterIP %s over 40 connections reached %v, want both of %v", clusterIP, host, backends)
	}
}

// TestAPodReachesItsOwnService is the hairpin case: the ClusterIP sends a
// pod's connection back to the pod itself (masqueraded to the node's
// address, as kube-proxy does, and out of the bridge port it came in by).
func TestAPodReachesItsOwnService(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	if _, err := client.CoreV1().Pods(ns).Create(ctx, appPod("loner"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clusterIP := service(t, ns, "loner")
	ip := waitPod(t, ns, "loner", 60*time.Second, "Ready", isReady).Status.PodIP
	var remote, local, failure string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		remote, local, failure = whoamiVia(ip, clusterIP)
		return failure == "", nil
	})
	if err != nil {
		t.Fatalf("pod %s to its own Service %s: %s", ip, clusterIP, failure)
	}
	if local != ip {
		t.Errorf("its own Service answered from %s, want the pod %s", local, ip)
	}
	if node := podnet.ForBlock(podBlock).NodeIP.String(); remote != node {
		t.Errorf("hairpin connection seen from %s, want the node address %s (masqueraded)", remote, node)
	}
}

// TestAServiceWithoutEndpointsAndAFreeClusterIPAreRefused: kube-proxy
// rejects a Service with no ready pod, and the node rejects an address of
// the service CIDR that no Service has; both at once, neither a timeout.
func TestAServiceWithoutEndpointsAndAFreeClusterIPAreRefused(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	empty := service(t, ns, "nobody")
	taken := map[string]bool{}
	list, err := client.CoreV1().Services("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		taken[s.Spec.ClusterIP] = true
	}
	// The API server picks ClusterIPs at random: take one no Service has
	// and keep a Service from taking it meanwhile by checking again after.
	var free string
	for i := 126; i > 1 && free == ""; i-- {
		if ip := net.IPv4(198, 19, byte(podBlock), byte(i)).String(); !taken[ip] {
			free = ip
		}
	}
	for _, ip := range []string{empty, free} {
		start := time.Now()
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, "80"), 5*time.Second)
		if err == nil {
			_ = c.Close()
			t.Errorf("connected to %s, which has no endpoint", ip)
			continue
		}
		// The kernel's answer tells a REJECT from a silent drop: a drop
		// ends in the dial's timeout, a REJECT (perhaps of a retransmitted
		// SYN, once kube-proxy has synced) in refused or unreachable.
		if !strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("dial of %s: %v after %s, want refused or unreachable", ip, err, time.Since(start).Round(time.Millisecond))
		}
	}
	if s, err := client.CoreV1().Services("").List(context.Background(), metav1.ListOptions{}); err == nil {
		for _, x := range s.Items {
			if x.Spec.ClusterIP == free {
				t.Logf("a Service took %s during the test; its answer above was the Service's", free)
			}
		}
	}
}
