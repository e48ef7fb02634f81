package destination

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"meshtls/contract"
	pb "meshtls/proto/destination"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		path     string
		want     string
		unknown  bool
		wantsErr bool
	}{
		{path: "web.emojivoto:80", want: "web.emojivoto:80"},
		{path: "web.emojivoto.svc:8080", want: "web.emojivoto:8080"},
		{path: "web.emojivoto.svc.cluster.local:8080", want: "web.emojivoto:8080"},
		{path: "Web.Emojivoto.svc.cluster.local.:8080", want: "web.emojivoto:8080"},
		{path: "web.emojivoto", want: "web.emojivoto:80"},
		{path: "10.96.0.10:53", want: "10.96.0.10:53"},
		{path: "[fd00::1]:443", want: "[fd00::1]:443"},
		{path: "[::ffff:10.1.2.3]:443", want: "10.1.2.3:443"},
		{path: "web.emojivoto.svc.other.domain:80", unknown: true},
		{path: "example.com.:443", want: "example.com:443"}, // a Service "example" in namespace "com": not found at resolution
		{path: "api.github.com:443", unknown: true},
		{path: "web:80", unknown: true},
		{path: "", wantsErr: true},
		{path: "web.emojivoto:http", wantsErr: true},
		{path: "web.emojivoto:0", wantsErr: true},
		{path: "web.emojivoto:70000", wantsErr: true},
		{path: ".emojivoto:80", wantsErr: true},
	} {
		got, unknown, err := parseTarget(tc.path, "cluster.local")
		if (err != nil) != tc.wantsErr {
			t.Errorf("parseTarget(%q) error = %v, want error %v", tc.path, err, tc.wantsErr)
			continue
		}
		if err != nil {
			continue
		}
		if unknown != tc.unknown {
			t.Errorf("parseTarget(%q) unknown = %v, want %v", tc.path, unknown, tc.unknown)
			continue
		}
		if !unknown && got.String() != tc.want {
			t.Errorf("parseTarget(%q) = %s, want %s", tc.path, got, tc.want)
		}
	}
}

// mapStore is a store over plain objects.
type mapStore struct {
	services []*corev1.Service
	slices   []*discoveryv1.EndpointSlice
	pods     []*corev1.Pod
}

func (m *mapStore) service(ns, name string) (*corev1.Service, bool) {
	for _, s := range m.services {
		if s.Namespace == ns && s.Name == name {
			return s, true
		}
	}
	return nil, false
}

func (m *mapStore) servicesByClusterIP(ip netip.Addr) []*corev1.Service {
	var out []*corev1.Service
	for _, s := range m.services {
		if keys, _ := indexClusterIP(s); contains(keys, ip.String()) {
			out = append(out, s)
		}
	}
	return out
}

func (m *mapStore) slicesFor(ns, svc string) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, s := range m.slices {
		if keys, _ := indexSliceService(s); contains(keys, ns+"/"+svc) {
			out = append(out, s)
		}
	}
	return out
}

func (m *mapStore) pod(ns, name string) (*corev1.Pod, bool) {
	for _, p := range m.pods {
		if p.Namespace == ns && p.Name == name {
			return p, true
		}
	}
	return nil, false
}

func (m *mapStore) podsByIP(ip netip.Addr) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range m.pods {
		if keys, _ := indexPodIP(p); contains(keys, ip.String()) {
			out = append(out, p)
		}
	}
	return out
}

func (m *mapStore) podsInNamespace(ns string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range m.pods {
		if p.Namespace == ns {
			out = append(out, p)
		}
	}
	return out
}

type sliceStore struct{ *mapStore }

func (s sliceStore) slices(ns, svc string) []*discoveryv1.EndpointSlice { return s.slicesFor(ns, svc) }

func contains(keys []string, k string) bool {
	for _, x := range keys {
		if x == k {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

const ctrlNS = "linkerd"

// meshedPod is a pod of Deployment web, injected with TLS by this control
// plane, through its ReplicaSet.
func meshedPod(name, ip string, ready bool) *corev1.Pod {
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "emojivoto",
			Labels: map[string]string{
				"app": "web", "pod-template-hash": "5d7f",
				contract.ControlPlaneNSLabel:                ctrlNS,
				contract.KindLabel(contract.KindDeployment): "web",
			},
			Annotations:     map[string]string{contract.TLSAnnotation: contract.TLSOptional},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-5d7f", Controller: ptr(true)}},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}},
		},
	}
}

func webService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-svc", Namespace: "emojivoto"},
		Spec: corev1.ServiceSpec{
			Selector:   map[string]string{"app": "web"},
			ClusterIP:  "10.96.5.5",
			ClusterIPs: []string{"10.96.5.5"},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
}

func webSlice(eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-svc-abc", Namespace: "emojivoto", Labels: map[string]string{discoveryv1.LabelServiceName: "web-svc"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
		Endpoints:   eps,
	}
}

func podRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Pod", Namespace: "emojivoto", Name: name}
}

func resolvePath(t *testing.T, st store, path string) snapshot {
	t.Helper()
	tg, unknown, err := parseTarget(path, "cluster.local")
	if err != nil || unknown {
		t.Fatalf("parseTarget(%q): unknown=%v err=%v", path, unknown, err)
	}
	return (&resolver{controlNS: ctrlNS, store: st}).resolve(tg)
}

const webIdentity = "web.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local"

func TestResolveServiceFromSlices(t *testing.T) {
	ms := &mapStore{
		services: []*corev1.Service{webService()},
		pods:     []*corev1.Pod{meshedPod("web-1", "10.1.0.1", true), meshedPod("web-2", "10.1.0.2", false)},
		slices: []*discoveryv1.EndpointSlice{webSlice(
			discoveryv1.Endpoint{Addresses: []string{"10.1.0.1"}, TargetRef: podRef("web-1"), Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
			// Ready in the slice but not (yet) in the pod's status: the
			// caches are apart by an event. A TLS pod is left out until
			// its status says Ready: advertised without identity, it
			// would be sent plain text.
			discoveryv1.Endpoint{Addresses: []string{"10.1.0.2"}, TargetRef: podRef("web-2")},
			discoveryv1.Endpoint{Addresses: []string{"10.1.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
		)},
	}
	st := sliceStore{ms}
	for _, path := range []string{"web-svc.emojivoto:80", "web-svc.emojivoto.svc.cluster.local:80", "10.96.5.5:80"} {
		snap := resolvePath(t, st, path)
		if !snap.exists || len(snap.endpoints) != 1 || !snap.pending {
			t.Fatalf("%s: exists=%v endpoints=%v pending=%v, want web-1 only, web-2 pending", path, snap.exists, snap.endpoints, snap.pending)
		}
		ep1 := snap.endpoints[netip.MustParseAddrPort("10.1.0.1:8080")]
		if ep1.identity != webIdentity {
			t.Errorf("%s: ready TLS pod identity = %q, want %q", path, ep1.identity, webIdentity)
		}
		if !ep1.h2 || ep1.labels["deployment"] != "web" || ep1.labels["pod"] != "web-1" || ep1.labels["namespace"] != "emojivoto" {
			t.Errorf("%s: endpoint = %+v", path, ep1)
		}
		if ep2, ok := snap.endpoints[netip.MustParseAddrPort("10.1.0.2:8080")]; ok {
			t.Errorf("%s: not-Ready TLS pod advertised: %+v", path, ep2)
		}
		if snap.setLabels["service"] != "web-svc" || snap.setLabels["namespace"] != "emojivoto" {
			t.Errorf("%s: set labels = %v", path, snap.setLabels)
		}
	}
	// A port the Service does not declare: it exists, nothing listens.
	if snap := resolvePath(t, st, "web-svc.emojivoto:81"); !snap.exists || len(snap.endpoints) != 0 {
		t.Errorf("undeclared port: %+v", snap)
	}
	if snap := resolvePath(t, st, "nope.emojivoto:80"); snap.exists {
		t.Errorf("missing Service exists: %+v", snap)
	}
	if snap := resolvePath(t, st, "10.96.9.9:80"); snap.exists {
		t.Errorf("unknown IP exists: %+v", snap)
	}
}

func TestIdentityRules(t *testing.T) {
	other := meshedPod("web-1", "10.1.0.1", true)
	other.Labels[contract.ControlPlaneNSLabel] = "other-linkerd"
	plain := meshedPod("web-1", "10.1.0.1", true)
	delete(plain.Annotations, contract.TLSAnnotation)
	bare := meshedPod("solo", "10.1.0.1", true)
	delete(bare.Labels, contract.KindLabel(contract.KindDeployment))
	bare.OwnerReferences = nil
	rsOnly := meshedPod("web-1", "10.1.0.1", true)
	delete(rsOnly.Labels, contract.KindLabel(contract.KindDeployment))
	r := &resolver{controlNS: ctrlNS}
	for _, tc := range []struct {
		name      string
		pod       *corev1.Pod
		identity  string
		ownerKind string
		owner     string
	}{
		{"ready TLS pod", meshedPod("web-1", "10.1.0.1", true), webIdentity, "deployment", "web"},
		{"not ready", meshedPod("web-1", "10.1.0.1", false), "", "deployment", "web"},
		{"other control plane", other, "", "deployment", "web"},
		{"no TLS annotation", plain, "", "deployment", "web"},
		{"bare pod", bare, "solo.pod.emojivoto.linkerd-managed.linkerd.svc.cluster.local", "", ""},
		// The CA names a ReplicaSet-owned pod without inject's label by its
		// ReplicaSet; the metric label still names the Deployment.
		{"replicaset owner", rsOnly, "web-5d7f.replicaset.emojivoto.linkerd-managed.linkerd.svc.cluster.local", "deployment", "web"},
	} {
		ep := r.podEndpoint(netip.MustParseAddrPort("10.1.0.1:8080"), tc.pod)
		if ep.identity != tc.identity {
			t.Errorf("%s: identity %q, want %q", tc.name, ep.identity, tc.identity)
		}
		if tc.ownerKind != "" && ep.labels[tc.ownerKind] != tc.owner {
			t.Errorf("%s: labels %v, want %s=%s", tc.name, ep.labels, tc.ownerKind, tc.owner)
		}
	}
}

// The identity destination advertises ends in the cluster domain the
// controller was given, the one inject put in the pod's own identity.
func TestIdentityInClusterDomain(t *testing.T) {
	r := &resolver{controlNS: ctrlNS, clusterDomain: "corp.example"}
	ep := r.podEndpoint(netip.MustParseAddrPort("10.1.0.1:8080"), meshedPod("web-1", "10.1.0.1", true))
	if want := "web.deployment.emojivoto.linkerd-managed.linkerd.svc.corp.example"; ep.identity != want {
		t.Errorf("identity %q, want %q", ep.identity, want)
	}
}

// TestNoIdentityForSkippedPorts: the proxy's admin and tap ports, and
// ports the pod skips inbound, are advertised without identity, so a
// meshed client reaches them in plain text as the port expects, instead
// of a ClientHello the server there cannot answer.
func TestNoIdentityForSkippedPorts(t *testing.T) {
	r := &resolver{controlNS: ctrlNS}
	pod := meshedPod("web-1", "10.1.0.1", true)
	pod.Annotations[contract.SkipInboundPortsAnnotation] = "3306, 9000-9002"
	for port, want := range map[uint16]string{
		8080: webIdentity, contract.AdminPort: "", contract.TapPort: "", 3306: "", 9001: "", 9003: webIdentity,
	} {
		if ep := r.podEndpoint(netip.AddrPortFrom(netip.MustParseAddr("10.1.0.1"), port), pod); ep.identity != want {
			t.Errorf("port %d: identity %q, want %q", port, ep.identity, want)
		}
	}
}

func TestResolveFallsBackToSelectedPods(t *testing.T) {
	notReady := meshedPod("web-3", "10.1.0.3", false)
	other := meshedPod("vote-1", "10.1.0.4", true)
	other.Labels["app"] = "vote"
	finished := meshedPod("web-4", "10.1.0.5", true)
	finished.Status.Phase = corev1.PodSucceeded
	ms := &mapStore{
		services: []*corev1.Service{webService()},
		pods:     []*corev1.Pod{meshedPod("web-1", "10.1.0.1", true), notReady, other},
		// The endpoint controller wrote a slice without endpoints (it could
		// not write loopback pod IPs).
		slices: []*discoveryv1.EndpointSlice{webSlice()},
	}
	snap := resolvePath(t, sliceStore{ms}, "web-svc.emojivoto:80")
	if len(snap.endpoints) != 1 {
		t.Fatalf("endpoints = %v, want web-1 only", snap.endpoints)
	}
	// The named target port "http" resolved on the pod.
	if ep, ok := snap.endpoints[netip.MustParseAddrPort("10.1.0.1:8080")]; !ok || ep.identity != webIdentity {
		t.Errorf("endpoints = %v", snap.endpoints)
	}
	// Pod IP targets: the one live pod with that IP; a TLS pod not Ready
	// yet is pending, not advertised without identity.
	if snap := resolvePath(t, sliceStore{ms}, "10.1.0.3:9000"); !snap.exists || len(snap.endpoints) != 0 || !snap.pending {
		t.Errorf("pod IP target: %+v", snap)
	}
	plainPod := meshedPod("plain-1", "10.1.0.6", false)
	delete(plainPod.Annotations, contract.TLSAnnotation)
	ms.pods = append(ms.pods, plainPod)
	if snap := resolvePath(t, sliceStore{ms}, "10.1.0.6:9000"); len(snap.endpoints) != 1 || snap.endpoints[netip.MustParseAddrPort("10.1.0.6:9000")].identity != "" {
		t.Errorf("pod IP target without TLS, not Ready: %+v", snap)
	}
	ms.pods = append(ms.pods, finished)
	if snap := resolvePath(t, sliceStore{ms}, "10.1.0.5:80"); snap.exists {
		t.Errorf("finished pod's IP resolved: %+v", snap)
	}
}

func TestResolveHeadlessAndSelectorless(t *testing.T) {
	headless := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "emojivoto"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone},
	}
	ext := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "ext", Namespace: "emojivoto"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "db-1", Namespace: "emojivoto", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.7"}}},
	}
	st := sliceStore{&mapStore{services: []*corev1.Service{headless, ext}, slices: []*discoveryv1.EndpointSlice{slice}}}
	snap := resolvePath(t, st, "db.emojivoto:5432")
	ep, ok := snap.endpoints[netip.MustParseAddrPort("192.0.2.7:5432")]
	if !ok || len(snap.endpoints) != 1 || ep.identity != "" || ep.labels != nil {
		t.Errorf("headless portless Service: %+v", snap)
	}
	if snap := resolvePath(t, st, "ext.emojivoto:443"); snap.exists {
		t.Errorf("ExternalName Service resolved: %+v", snap)
	}
}

func ep(addr, identity string) endpoint {
	return endpoint{addr: netip.MustParseAddrPort(addr), identity: identity, labels: map[string]string{"pod": addr}}
}

func snap(exists bool, eps ...endpoint) snapshot {
	s := snapshot{exists: exists, setLabels: map[string]string{"service": "web"}, endpoints: map[netip.AddrPort]endpoint{}}
	for _, e := range eps {
		s.endpoints[e.addr] = e
	}
	return s
}

// describe renders updates as short strings for comparison.
func describe(us []*pb.Update) []string {
	var out []string
	for _, u := range us {
		switch u := u.GetUpdate().(type) {
		case *pb.Update_Add:
			s := "add"
			for _, a := range u.Add.GetAddrs() {
				ip, _ := netip.AddrFromSlice(a.GetAddr().GetIp())
				s += " " + netip.AddrPortFrom(ip, uint16(a.GetAddr().GetPort())).String()
				if id := a.GetTlsIdentity().GetDnsLikeIdentity().GetName(); id != "" {
					s += "(" + id + ")"
				}
			}
			out = append(out, s)
		case *pb.Update_Remove:
			s := "remove"
			for _, a := range u.Remove.GetAddrs() {
				ip, _ := netip.AddrFromSlice(a.GetIp())
				s += " " + netip.AddrPortFrom(ip, uint16(a.GetPort())).String()
			}
			out = append(out, s)
		case *pb.Update_NoEndpoints:
			if u.NoEndpoints.GetExists() {
				out = append(out, "none exists")
			} else {
				out = append(out, "none missing")
			}
		}
	}
	return out
}

func TestDiff(t *testing.T) {
	a, b, c := ep("10.0.0.1:80", ""), ep("10.0.0.2:80", ""), ep("10.0.0.3:80", "")
	bID := ep("10.0.0.2:80", "b.id")
	steps := []struct {
		name string
		next snapshot
		want []string
	}{
		{"first answer, missing", snap(false), []string{"none missing"}},
		{"still missing", snap(false), nil},
		{"created empty", snap(true), []string{"none exists"}},
		{"endpoints arrive", snap(true, a, b), []string{"add 10.0.0.1:80 10.0.0.2:80"}},
		{"identity appears", snap(true, a, bID), []string{"add 10.0.0.2:80(b.id)"}},
		{"rollout", snap(true, bID, c), []string{"add 10.0.0.3:80", "remove 10.0.0.1:80"}},
		{"nothing changed", snap(true, bID, c), nil},
		{"all gone", snap(true), []string{"none exists"}},
		{"deleted", snap(false), []string{"none missing"}},
	}
	var prev *snapshot
	for _, st := range steps {
		got := describe(diff(prev, st.next))
		if len(got) != len(st.want) {
			t.Fatalf("%s: %q, want %q", st.name, got, st.want)
		}
		for i := range got {
			if got[i] != st.want[i] {
				t.Fatalf("%s: %q, want %q", st.name, got, st.want)
			}
		}
		next := st.next
		prev = &next
	}
}

// TestSubIndex: an event reaches only the streams it concerns: a Service's
// streams hear its own object and slices, not its neighbours'; an address
// stream hears objects carrying its IP, and the Service it resolved to; a
// pod's change reaches the Services that select it, before or after a
// relabel, and selector-less ones.
func TestSubIndex(t *testing.T) {
	web := &subscription{namespace: "emojivoto", service: "web-svc"}
	vote := &subscription{namespace: "emojivoto", service: "vote-svc"}
	manual := &subscription{namespace: "emojivoto", service: "manual"}
	podIP := &subscription{ip: netip.MustParseAddr("10.1.0.1")}
	clusterIP := &subscription{ip: netip.MustParseAddr("10.96.5.5")}
	x := newSubIndex()
	for _, s := range []*subscription{web, vote, manual, podIP, clusterIP} {
		x.add(s)
	}
	x.match(clusterIP, "emojivoto", "web-svc")
	services := map[string]*corev1.Service{
		"web-svc":  webService(),
		"vote-svc": {Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "vote"}}},
		"manual":   {},
	}
	svcOf := func(_, name string) (*corev1.Service, bool) { s, ok := services[name]; return s, ok }
	webPod := meshedPod("web-1", "10.1.0.1", true)
	relabelled := meshedPod("web-1", "10.1.0.1", true)
	relabelled.Labels = map[string]string{"app": "other"}
	for _, tc := range []struct {
		name string
		e    event
		want []*subscription
	}{
		{"web's slice", event{namespace: "emojivoto", services: []string{"web-svc"}}, []*subscription{web, clusterIP}},
		{"a Service elsewhere with the same name", event{namespace: "other", services: []string{"web-svc"}}, nil},
		{"an object with the pod's IP", event{namespace: "other", ips: []netip.Addr{netip.MustParseAddr("10.1.0.1")}}, []*subscription{podIP}},
		{"web's pod", event{namespace: "emojivoto", pods: []*corev1.Pod{webPod}, ips: []netip.Addr{netip.MustParseAddr("10.1.0.1")}}, []*subscription{web, clusterIP, manual, podIP}},
		{"web's pod relabelled away", event{namespace: "emojivoto", pods: []*corev1.Pod{relabelled, webPod}}, []*subscription{web, clusterIP, manual}},
		{"another pod", event{namespace: "emojivoto", pods: []*corev1.Pod{relabelled}}, []*subscription{manual}},
	} {
		got := map[*subscription]struct{}{}
		x.collect(tc.e, svcOf, got)
		if len(got) != len(tc.want) {
			t.Errorf("%s: woke %d streams, want %d", tc.name, len(got), len(tc.want))
		}
		for _, s := range tc.want {
			if _, ok := got[s]; !ok {
				t.Errorf("%s: did not wake %+v", tc.name, *s)
			}
		}
	}
	for _, s := range []*subscription{web, vote, manual, podIP, clusterIP} {
		x.remove(s)
	}
	if len(x.all) != 0 || len(x.bySvc) != 0 || len(x.byIP) != 0 {
		t.Errorf("index not empty after every stream ended: %d %v %v", len(x.all), x.bySvc, x.byIP)
	}
}

// checking is a verifier whose checks have not concluded for the pods in
// it, and concluded (failed) for the others.
type checking map[string]bool

func (checking) serves(*corev1.Pod, string) bool { return false }

func (c checking) pending(pod *corev1.Pod, _ string) bool { return c[pod.Name] }

// TestPendingIdentityNotAdvertised: a Ready TLS pod whose identity check
// has not concluded (every pod, just after the destination service
// restarts) is left out of the answer, not advertised without identity
// (its peers would then send it plain text); once the check concluded
// that it does not serve one, it is listed without.
func TestPendingIdentityNotAdvertised(t *testing.T) {
	ms := &mapStore{
		services: []*corev1.Service{webService()},
		pods:     []*corev1.Pod{meshedPod("web-1", "10.1.0.1", true), meshedPod("web-2", "10.1.0.2", true)},
		slices: []*discoveryv1.EndpointSlice{webSlice(
			discoveryv1.Endpoint{Addresses: []string{"10.1.0.1"}, TargetRef: podRef("web-1"), Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
			discoveryv1.Endpoint{Addresses: []string{"10.1.0.2"}, TargetRef: podRef("web-2"), Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
		)},
	}
	r := &resolver{controlNS: ctrlNS, store: sliceStore{ms}, verify: checking{"web-1": true}}
	for _, path := range []string{"web-svc.emojivoto:80", "10.1.0.1:8080"} {
		tg, _, _ := parseTarget(path, "cluster.local")
		snap := r.resolve(tg)
		if !snap.pending {
			t.Errorf("%s: not marked pending", path)
		}
		if ep, ok := snap.endpoints[netip.MustParseAddrPort("10.1.0.1:8080")]; ok {
			t.Errorf("%s: the pod being checked is advertised: %+v", path, ep)
		}
	}
	tg, _, _ := parseTarget("web-svc.emojivoto:80", "cluster.local")
	if ep, ok := r.resolve(tg).endpoints[netip.MustParseAddrPort("10.1.0.2:8080")]; !ok || ep.identity != "" {
		t.Errorf("the pod whose check failed: %+v %v, want listed without identity", ep, ok)
	}
}

// m3: a slice's targetRef used to lend any pod's labels and identity to
// any address, across namespaces. Now it counts only in the slice's
// namespace and for the pod's own IP.
func TestSliceTargetRefCannotLendAnotherPodsIdentity(t *testing.T) {
	victim := meshedPod("web-1", "10.1.0.1", true)
	victim.Namespace = "payments"
	local := meshedPod("web-2", "10.1.0.2", true)
	ms := &mapStore{
		services: []*corev1.Service{webService()},
		pods:     []*corev1.Pod{victim, local},
		slices: []*discoveryv1.EndpointSlice{webSlice(
			// The tenant's own address, pointing at a pod in payments.
			discoveryv1.Endpoint{Addresses: []string{"10.9.9.9"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "payments", Name: "web-1"}},
			// An address that is not the named pod's IP, in the same namespace.
			discoveryv1.Endpoint{Addresses: []string{"10.9.9.8"}, TargetRef: podRef("web-2")},
		)},
	}
	snap := resolvePath(t, sliceStore{ms}, "web-svc.emojivoto:80")
	for _, a := range []string{"10.9.9.9:8080", "10.9.9.8:8080"} {
		ep, ok := snap.endpoints[netip.MustParseAddrPort(a)]
		if !ok {
			t.Fatalf("%s is not advertised: %v", a, snap.endpoints)
		}
		if ep.identity != "" || ep.labels["pod"] != "" || ep.labels["namespace"] != "" {
			t.Errorf("%s borrowed a pod's identity %q and labels %v", a, ep.identity, ep.labels)
		}
	}
}
