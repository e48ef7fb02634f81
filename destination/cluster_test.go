//go:build integration

package destination

// Integration tests on a real local Kubernetes (testutil/localcluster):
// real informers against a real API server, a real gRPC server on
// loopback. They hold in both pod-networking worlds: Services whose
// EndpointSlices the test writes itself use addresses outside loopback and
// name their pods by targetRef, and Services with selectors are checked
// against whatever addresses the pods' status reports.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/contract"
	pb "meshtls/proto/destination"
	"meshtls/testutil/localcluster"
)

// TestMain: the pods run certready, mapped from .../certready:TAG.
func TestMain(m *testing.M) {
	os.Exit(localcluster.RunWith(m, localcluster.Options{Commands: []string{"meshtls/destination/internal/certready"}}))
}

const certreadyImage = "example.com/meshtls/certready:test"

// startServer runs the destination service on the local cluster and
// returns a Destination client connected to it over loopback.
func startServer(t *testing.T, client kubernetes.Interface) pb.DestinationClient {
	t.Helper()
	srv, err := New(client, Config{ControlNamespace: ctrlNS, TrustAnchors: testRoot(t).Pool(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(ServerOptions()...)
	srv.Register(g)
	go func() { _ = g.Serve(l) }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		g.Stop()
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return pb.NewDestinationClient(conn)
}

// view is a client's picture of one destination, built from the stream
// as a proxy would build it.
type view struct {
	exists bool
	eps    map[netip.AddrPort]*pb.WeightedAddr
}

// watcher reads one Get stream in the background.
type watcher struct {
	t       *testing.T
	updates chan *pb.Update
	view    view
}

func watch(t *testing.T, api pb.DestinationClient, path string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := api.Get(ctx, &pb.GetDestination{Scheme: "k8s", Path: path, ContextToken: "test"})
	if err != nil {
		cancel()
		t.Fatalf("Get %s: %v", path, err)
	}
	w := &watcher{t: t, updates: make(chan *pb.Update, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(w.updates)
		for {
			u, err := s.Recv()
			if err != nil {
				return
			}
			w.updates <- u
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// next returns the next update, failing after a deadline.
func (w *watcher) next(timeout time.Duration) *pb.Update {
	w.t.Helper()
	select {
	case u, ok := <-w.updates:
		if !ok {
			w.t.Fatal("stream ended")
		}
		w.apply(u)
		return u
	case <-time.After(timeout):
		w.t.Fatalf("no update within %s", timeout)
		return nil
	}
}

func (w *watcher) apply(u *pb.Update) {
	if w.view.eps == nil {
		w.view.eps = map[netip.AddrPort]*pb.WeightedAddr{}
	}
	switch u := u.GetUpdate().(type) {
	case *pb.Update_Add:
		w.view.exists = true
		for _, a := range u.Add.GetAddrs() {
			w.view.eps[addrOf(a.GetAddr().GetIp(), a.GetAddr().GetPort())] = a
		}
	case *pb.Update_Remove:
		for _, a := range u.Remove.GetAddrs() {
			delete(w.view.eps, addrOf(a.GetIp(), a.GetPort()))
		}
	case *pb.Update_NoEndpoints:
		w.view.exists = u.NoEndpoints.GetExists()
		w.view.eps = map[netip.AddrPort]*pb.WeightedAddr{}
	}
}

// until applies updates until cond holds of the view, failing after a
// deadline with what the view was.
func (w *watcher) until(what string, timeout time.Duration, cond func(view) bool) {
	w.t.Helper()
	deadline := time.After(timeout)
	for !cond(w.view) {
		select {
		case u, ok := <-w.updates:
			if !ok {
				w.t.Fatalf("%s: stream ended", what)
			}
			w.apply(u)
		case <-deadline:
			w.t.Fatalf("%s: not within %s; view: exists=%v endpoints=%v", what, timeout, w.view.exists, w.view.eps)
		}
	}
}

func addrOf(ip []byte, port uint32) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}

func identityOf(a *pb.WeightedAddr) string { return a.GetTlsIdentity().GetDnsLikeIdentity().GetName() }

const wait = 60 * time.Second

func TestSelectorlessServiceStreamsSlices(t *testing.T) {
	ctx := context.Background()
	client := localcluster.Client(t)
	ns := localcluster.Namespace(t)
	api := startServer(t, client)

	svc, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "pg", Port: 5432, TargetPort: intstr.FromInt32(15432)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byName := watch(t, api, "db."+ns+".svc.cluster.local:5432")
	byClusterIP := watch(t, api, net.JoinHostPort(svc.Spec.ClusterIP, "5432"))
	missing := watch(t, api, "nope."+ns+":80")

	// The first answer is the snapshot: the Service exists, no endpoints.
	for _, w := range []*watcher{byName, byClusterIP} {
		if u := w.next(wait); u.GetNoEndpoints() == nil || !u.GetNoEndpoints().GetExists() {
			t.Fatalf("first update = %v, want NoEndpoints{exists: true}", u)
		}
	}
	if u := missing.next(wait); u.GetNoEndpoints() == nil || u.GetNoEndpoints().GetExists() {
		t.Fatalf("missing Service: first update = %v, want NoEndpoints{exists: false}", u)
	}

	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "db-manual", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("pg"), Port: ptr(int32(15432))}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"192.0.2.10"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
			{Addresses: []string{"192.0.2.11"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
			{Addresses: []string{"192.0.2.12"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
		},
	}
	slice, err = client.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a10, a11 := netip.MustParseAddrPort("192.0.2.10:15432"), netip.MustParseAddrPort("192.0.2.11:15432")
	for _, w := range []*watcher{byName, byClusterIP} {
		u := w.next(wait)
		add := u.GetAdd()
		if add == nil || len(add.GetAddrs()) != 2 || add.GetMetricLabels()["service"] != "db" || add.GetMetricLabels()["namespace"] != ns {
			t.Fatalf("after the slice: %v, want one Add of the two ready endpoints", u)
		}
		if _, ok := w.view.eps[a10]; !ok {
			t.Fatalf("view %v lacks %s", w.view.eps, a10)
		}
	}

	// One endpoint goes: a Remove of it alone.
	slice.Endpoints = slice.Endpoints[:1]
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []*watcher{byName, byClusterIP} {
		u := w.next(wait)
		rm := u.GetRemove()
		if rm == nil || len(rm.GetAddrs()) != 1 || addrOf(rm.GetAddrs()[0].GetIp(), rm.GetAddrs()[0].GetPort()) != a11 {
			t.Fatalf("after removing %s: %v", a11, u)
		}
	}

	// The Service goes: the destination no longer exists.
	if err := client.CoreV1().Services(ns).Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	byName.until("Service deleted", wait, func(v view) bool { return !v.exists && len(v.eps) == 0 })
}

// certreadyPod is a meshed, TLS-enabled pod of Deployment owner whose
// readiness waits for its workload Secret, as the proxy's does.
func certreadyPod(name, owner string, labels map[string]string) *corev1.Pod {
	l := map[string]string{
		contract.ControlPlaneNSLabel:                ctrlNS,
		contract.KindLabel(contract.KindDeployment): owner,
	}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Labels: l,
			Annotations: map[string]string{contract.TLSAnnotation: contract.TLSOptional},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "app",
				Image: certreadyImage,
				Args:  []string{"--cert=" + contract.IdentityDir + "/tls.crt", "--key=" + contract.IdentityDir + "/tls.key"},
				Env: []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"},
				}}},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}},
					PeriodSeconds: 1,
				},
				VolumeMounts: []corev1.VolumeMount{{Name: contract.IdentityVolume, MountPath: contract.IdentityDir, ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: contract.IdentityVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: contract.SecretName(owner, contract.KindDeployment),
				Optional:   ptr(true),
			}}}},
		},
	}
}

func waitPodIP(t *testing.T, client kubernetes.Interface, ns, name string) string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		p, err := client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && p.Status.PodIP != "" {
			return p.Status.PodIP
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("pod %s/%s got no IP within %s", ns, name, wait)
	return ""
}

// A TLS pod whose certificate has not arrived is never advertised with an
// identity it cannot serve, nor without the identity it will serve: with a
// proxy whose readiness waits for the certificate (as the proxy's does) it
// is not listed until it is Ready and serves it; with one that turned Ready
// without it, the check concludes it serves none and it is listed without.
// Once the Secret is written and the pod serves it, the endpoint is
// advertised with it. Readiness alone never earns an identity.
func TestIdentityAppearsWhenCertificateArrives(t *testing.T) {
	t.Run("readiness waits for the certificate", func(t *testing.T) { testIdentityAppears(t, false) })
	t.Run("ready without a certificate", func(t *testing.T) { testIdentityAppears(t, true) })
}

func testIdentityAppears(t *testing.T, alwaysReady bool) {
	ctx := context.Background()
	client := localcluster.Client(t)
	ns := localcluster.Namespace(t)
	api := startServer(t, client)

	pod := certreadyPod("web-0", "web", nil)
	if alwaysReady {
		pod.Spec.Containers[0].Args = append(pod.Spec.Containers[0].Args, "--always-ready")
	}
	if _, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	podIP := waitPodIP(t, client, ns, "web-0")
	if _, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The slice names the pod by reference, at the pod's own IP: a
	// targetRef counts only for an address that is its pod's
	// (TestSliceTargetRefCannotLendAnotherPodsIdentity).
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-manual", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{podIP},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web-0"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	podAddr := netip.AddrPortFrom(netip.MustParseAddr(podIP).Unmap(), 8080)
	svcAddr := podAddr
	bySvc := watch(t, api, "web."+ns+":80")
	byPod := watch(t, api, podAddr.String())
	for _, c := range []struct {
		w    *watcher
		addr netip.AddrPort
	}{{bySvc, svcAddr}, {byPod, podAddr}} {
		if !alwaysReady {
			break
		}
		c.w.until("endpoint listed", wait, func(v view) bool { return v.eps[c.addr] != nil })
		ep := c.w.view.eps[c.addr]
		if id := identityOf(ep); id != "" {
			t.Fatalf("%s advertised with identity %q before its certificate arrived", c.addr, id)
		}
		if l := ep.GetMetricLabels(); l["pod"] != "web-0" || l["deployment"] != "web" || l["namespace"] != ns {
			t.Errorf("%s labels = %v", c.addr, l)
		}
		if ep.GetProtocolHint().GetH2() == nil {
			t.Errorf("%s: meshed pod without the h2 hint", c.addr)
		}
	}
	if alwaysReady {
		localcluster.Eventually(t, wait, func() error {
			p, err := client.CoreV1().Pods(ns).Get(ctx, "web-0", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !podReady(p) {
				return fmt.Errorf("web-0 not Ready yet")
			}
			return nil
		})
	}
	// Hold a moment: without the Secret the pod must stay without
	// identity, whatever else its status does meanwhile (several
	// handshake retries fit in it).
	time.Sleep(3 * time.Second)
	for _, w := range []*watcher{bySvc, byPod} {
		for len(w.updates) > 0 {
			w.next(time.Second)
		}
		for addr, ep := range w.view.eps {
			if identityOf(ep) != "" {
				t.Fatalf("%s got identity %q with no certificate", addr, identityOf(ep))
			}
			if !alwaysReady {
				t.Fatalf("%s listed before its proxy was Ready (it would be sent plain text)", addr)
			}
		}
	}

	// The certificate arrives, as the CA writes it.
	want := contract.Identity("web", contract.KindDeployment, ns, ctrlNS)
	start := time.Now()
	createWorkloadSecret(t, client, ns, "web", want)
	for _, c := range []struct {
		w    *watcher
		addr netip.AddrPort
	}{{bySvc, svcAddr}, {byPod, podAddr}} {
		c.w.until("identity advertised", wait, func(v view) bool { return v.eps[c.addr] != nil && identityOf(v.eps[c.addr]) == want })
	}
	t.Logf("Secret written to identity advertised on both streams: %s", time.Since(start).Round(time.Millisecond))
}

var (
	rootOnce sync.Once
	root     *pki.Root
	rootErr  error
)

// testRoot is one CA root for the package's tests.
func testRoot(t *testing.T) *pki.Root {
	t.Helper()
	rootOnce.Do(func() {
		root, _, rootErr = pki.NewRoot(contract.RootCommonName(ctrlNS), time.Hour, time.Now())
	})
	if rootErr != nil {
		t.Fatal(rootErr)
	}
	return root
}

// createWorkloadSecret writes owner's Secret with a real certificate for
// identity, as the CA does.
func createWorkloadSecret(t *testing.T, client kubernetes.Interface, ns, owner, identity string) {
	t.Helper()
	leaf, err := testRoot(t).Issue(identity, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: contract.SecretName(owner, contract.KindDeployment)},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: leaf.CertPEM, corev1.TLSPrivateKeyKey: leaf.KeyPEM},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A Service with a selector over real pods: endpoints appear as the pods
// turn Ready and go when a pod is deleted, at the pods' own addresses
// (from real EndpointSlices, or the pods themselves where the cluster
// cannot write slices for its pod IPs).
func TestSelectorServiceFollowsPods(t *testing.T) {
	ctx := context.Background()
	client := localcluster.Client(t)
	ns := localcluster.Namespace(t)
	api := startServer(t, client)

	if _, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "vote"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "vote"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := watch(t, api, "vote."+ns+".svc.cluster.local:80")
	if u := w.next(wait); u.GetNoEndpoints() == nil || !u.GetNoEndpoints().GetExists() {
		t.Fatalf("first update = %v, want NoEndpoints{exists: true}", u)
	}
	want := contract.Identity("vote", contract.KindDeployment, ns, ctrlNS)
	createWorkloadSecret(t, client, ns, "vote", want)
	for _, name := range []string{"vote-0", "vote-1"} {
		p := certreadyPod(name, "vote", map[string]string{"app": "vote"})
		if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ip0 := netip.AddrPortFrom(netip.MustParseAddr(waitPodIP(t, client, ns, "vote-0")).Unmap(), 8080)
	ip1 := netip.AddrPortFrom(netip.MustParseAddr(waitPodIP(t, client, ns, "vote-1")).Unmap(), 8080)
	w.until("both pods Ready", wait, func(v view) bool {
		return len(v.eps) == 2 && v.eps[ip0] != nil && v.eps[ip1] != nil &&
			identityOf(v.eps[ip0]) == want && identityOf(v.eps[ip1]) == want
	})
	if l := w.view.eps[ip1].GetMetricLabels(); l["pod"] != "vote-1" || l["deployment"] != "vote" {
		t.Errorf("labels = %v", l)
	}

	if err := client.CoreV1().Pods(ns).Delete(ctx, "vote-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w.until("vote-1 removed", wait, func(v view) bool { return len(v.eps) == 1 && v.eps[ip0] != nil })
}

// Many proxies watch one Service: one EndpointSlice change reaches every
// stream. The figure (time until the last stream has the change) is
// logged; the bound only catches a server that serialises streams badly.
func TestOneChangeReachesManyStreams(t *testing.T) {
	const streams = 500
	ctx := context.Background()
	client := localcluster.Client(t)
	ns := localcluster.Namespace(t)
	api := startServer(t, client)
	if _, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "fan"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ws := make([]*watcher, streams)
	for i := range ws {
		ws[i] = watch(t, api, "fan."+ns+":80")
	}
	for _, w := range ws {
		w.until("snapshot", wait, func(v view) bool { return v.exists })
	}
	start := time.Now()
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "fan-manual", Labels: map[string]string{discoveryv1.LabelServiceName: "fan"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(80))}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.50"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort("192.0.2.50:80")
	for _, w := range ws {
		w.until("endpoint added", wait, func(v view) bool { return v.eps[addr] != nil })
	}
	took := time.Since(start)
	t.Logf("one EndpointSlice create reached %d streams in %s", streams, took.Round(time.Millisecond))
	if took > 20*time.Second {
		t.Errorf("fan-out to %d streams took %s", streams, took)
	}
}
