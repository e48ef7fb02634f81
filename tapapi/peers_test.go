package tapapi

import (
	"context"
	"maps"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"meshtls/contract"
	netpb "meshtls/proto/net"
	tappb "meshtls/proto/tap"
)

func testPod(ns, name, ip string, labels map[string]string, owner *metav1.OwnerReference) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	p.Status.PodIP, p.Status.Phase = ip, corev1.PodRunning
	return p
}

func controllerRef(kind, name string) *metav1.OwnerReference {
	yes := true
	return &metav1.OwnerReference{Kind: kind, Name: name, Controller: &yes}
}

// TestPeersNamePodIPs: the informer's podIP index resolves addresses of
// running pods to their namespace, pod and owner, and leaves alone what
// is not one pod's (host network, finished, unknown, claimed twice).
func TestPeersNamePodIPs(t *testing.T) {
	hostNet := testPod("kube-system", "node-agent", "10.0.0.9", nil, controllerRef("DaemonSet", "agent"))
	hostNet.Spec.HostNetwork = true
	done := testPod("demo", "job-1", "10.0.0.7", nil, controllerRef("Job", "batch"))
	done.Status.Phase = corev1.PodSucceeded
	client := fake.NewClientset(
		// Unmeshed: the owner comes from the ReplicaSet's name.
		testPod("demo", "vote-bot-5d8f-x1", "10.0.0.1", map[string]string{"pod-template-hash": "5d8f", "app": "vote-bot"},
			controllerRef("ReplicaSet", "vote-bot-5d8f")),
		// Meshed: the linkerd.io/proxy-<kind> label wins.
		testPod("demo", "db-0", "10.0.0.2", map[string]string{contract.KindLabel(contract.KindStatefulSet): "db"},
			controllerRef("StatefulSet", "db")),
		// A bare pod: no owner label.
		testPod("demo", "lonely", "10.0.0.3", nil, nil),
		// A bare ReplicaSet's pod whose name has no hash suffix.
		testPod("demo", "rs-pod", "10.0.0.4", map[string]string{"pod-template-hash": "zz"}, controllerRef("ReplicaSet", "plain")),
		hostNet, done,
		testPod("demo", "twin-a", "10.0.0.8", nil, nil),
		testPod("demo", "twin-b", "10.0.0.8", nil, nil),
	)
	peers := NewPeers(client)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := peers.Run(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip   string
		want map[string]string
	}{
		{"10.0.0.1", map[string]string{"namespace": "demo", "pod": "vote-bot-5d8f-x1", "deployment": "vote-bot"}},
		{"10.0.0.2", map[string]string{"namespace": "demo", "pod": "db-0", "statefulset": "db"}},
		{"10.0.0.3", map[string]string{"namespace": "demo", "pod": "lonely"}},
		{"10.0.0.4", map[string]string{"namespace": "demo", "pod": "rs-pod", "replicaset": "plain"}},
		{"10.0.0.9", nil},
		{"10.0.0.7", nil},
		{"10.0.0.8", nil},
		{"10.0.0.99", nil},
	} {
		ev := &tappb.TapEvent{}
		raw := append(enc(t, &tappb.TapEvent{ProxyDirection: tappb.TapEvent_INBOUND, Source: &netpb.TcpAddress{Ip: parseIP(t, tc.ip)}}),
			peers.peerMeta(map[peerKey]peerMemo{}, mustAddr(t, tc.ip), fieldSourceMeta)...)
		if err := proto.Unmarshal(raw, ev); err != nil {
			t.Fatal(err)
		}
		if got := ev.GetSourceMeta().GetLabels(); !maps.Equal(got, tc.want) {
			t.Errorf("%s: labels %v, want %v", tc.ip, got, tc.want)
		}
	}

	// A pod that changes is seen through the informer, not a stale memo.
	memo := map[peerKey]peerMemo{}
	_ = peers.peerMeta(memo, mustAddr(t, "10.0.0.3"), fieldSourceMeta)
	upd := testPod("demo", "lonely", "10.0.0.3", map[string]string{contract.KindLabel(contract.KindDeployment): "adopted"}, nil)
	if _, err := client.CoreV1().Pods("demo").Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev := &tappb.TapEvent{}
		if err := proto.Unmarshal(peers.peerMeta(memo, mustAddr(t, "10.0.0.3"), fieldSourceMeta), ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetSourceMeta().GetLabels()["deployment"] == "adopted" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("updated pod not seen: %v", ev.GetSourceMeta().GetLabels())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFeederMergesPeerLabels: the feeder adds the peer pod's labels to an
// inbound event's source and to an outbound event's destination only when
// the proxy had none, and the proxy's own labels survive the merge.
func TestFeederMergesPeerLabels(t *testing.T) {
	client := fake.NewClientset(
		testPod("demo", "vote-bot-5d8f-x1", "10.0.0.1", map[string]string{"pod-template-hash": "5d8f"}, controllerRef("ReplicaSet", "vote-bot-5d8f")),
		testPod("demo", "emoji-77-a", "10.0.0.2", map[string]string{contract.KindLabel(contract.KindDeployment): "emoji"}, nil),
	)
	peers := NewPeers(client)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := peers.Run(ctx); err != nil {
		t.Fatal(err)
	}
	self := &tappb.TapEvent_EndpointMeta{Labels: map[string]string{"namespace": "demo", "pod": "web-1"}}
	push := func(ev *tappb.TapEvent) *tappb.TapEvent {
		t.Helper()
		m := NewMerger(0, 4)
		f := m.Feeder()
		f.SetSelf(map[string]string{"deployment": "web"})
		f.SetPeers(peers)
		f.Push(enc(t, ev))
		out := &tappb.TapEvent{}
		if err := proto.Unmarshal(<-m.Events(), out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	addr := func(ip string) *netpb.TcpAddress { return &netpb.TcpAddress{Ip: parseIP(t, ip), Port: 8080} }

	in := reqEv(1, 1)
	in.ProxyDirection, in.Source, in.Destination = tappb.TapEvent_INBOUND, addr("10.0.0.1"), addr("10.0.0.5")
	in.SourceMeta, in.DestinationMeta = &tappb.TapEvent_EndpointMeta{}, self
	got := push(in)
	if want := map[string]string{"namespace": "demo", "pod": "vote-bot-5d8f-x1", "deployment": "vote-bot"}; !maps.Equal(got.GetSourceMeta().GetLabels(), want) {
		t.Errorf("inbound source labels %v, want %v", got.GetSourceMeta().GetLabels(), want)
	}
	if want := map[string]string{"namespace": "demo", "pod": "web-1", "deployment": "web"}; !maps.Equal(got.GetDestinationMeta().GetLabels(), want) {
		t.Errorf("inbound destination (the tapped pod) labels %v, want %v", got.GetDestinationMeta().GetLabels(), want)
	}

	// Outbound to a pod discovery did not label: named.
	out := reqEv(1, 2)
	out.ProxyDirection, out.Source, out.Destination = tappb.TapEvent_OUTBOUND, addr("10.0.0.5"), addr("10.0.0.2")
	out.SourceMeta, out.DestinationMeta = self, &tappb.TapEvent_EndpointMeta{}
	if want := map[string]string{"namespace": "demo", "pod": "emoji-77-a", "deployment": "emoji"}; !maps.Equal(push(out).GetDestinationMeta().GetLabels(), want) {
		t.Errorf("outbound unlabelled destination: %v, want %v", push(out).GetDestinationMeta().GetLabels(), want)
	}
	// Outbound where discovery labelled the destination: the proxy's
	// labels are kept as they are.
	disc := map[string]string{"namespace": "demo", "service": "emoji-svc"}
	out.DestinationMeta = &tappb.TapEvent_EndpointMeta{Labels: disc}
	if got := push(out).GetDestinationMeta().GetLabels(); !maps.Equal(got, disc) {
		t.Errorf("labelled destination changed: %v, want %v", got, disc)
	}
	// An address that is no pod's stays an address, unnamed.
	in.Source = addr("192.0.2.1")
	if got := push(in); len(got.GetSourceMeta().GetLabels()) != 0 || string(got.GetSource().GetIp()) != string(parseIP(t, "192.0.2.1")) {
		t.Errorf("unknown source named: %v %v", got.GetSourceMeta().GetLabels(), got.GetSource())
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func parseIP(t *testing.T, s string) []byte { return mustAddr(t, s).AsSlice() }

// BenchmarkPush: one feeder's per-event cost, reading the peers off the
// wire and (inbound) appending the named client's labels.
func BenchmarkPush(b *testing.B) {
	peers := NewPeers(fake.NewClientset(testPod("emojivoto", "vote-bot-1", "10.0.0.1",
		map[string]string{contract.KindLabel(contract.KindDeployment): "vote-bot"}, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := peers.Run(ctx); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		inbound bool
		peers   *Peers
	}{{"outbound-no-peers", false, nil}, {"outbound-labelled", false, peers}, {"inbound-no-peers", true, nil}, {"inbound-named", true, peers}} {
		b.Run(tc.name, func(b *testing.B) {
			evs := replayEvents(100, tc.inbound)
			m := NewMerger(0, 1)
			f := m.Feeder()
			f.SetSelf(map[string]string{"deployment": "web"})
			f.SetPeers(tc.peers)
			b.ReportAllocs()
			for i := range b.N {
				f.Push(append([]byte(nil), evs[i%len(evs)]...))
				select {
				case <-m.Events():
				default:
				}
			}
		})
	}
}

// m12: a user allowed to tap one namespace learns a peer's pod and owner
// only in namespaces they may tap too; elsewhere only the namespace.
func TestPeersOutsideTheUsersNamespacesAreNotNamed(t *testing.T) {
	client := fake.NewClientset(
		testPod("payments", "ledger-0", "10.0.0.1", map[string]string{contract.KindLabel(contract.KindStatefulSet): "ledger"}, controllerRef("StatefulSet", "ledger")),
		testPod("demo", "vote-bot-5d8f-x1", "10.0.0.2", map[string]string{"pod-template-hash": "5d8f"}, controllerRef("ReplicaSet", "vote-bot-5d8f")),
	)
	peers := NewPeers(client)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := peers.Run(ctx); err != nil {
		t.Fatal(err)
	}
	allowed := func(ns string) bool { return ns == "demo" }
	for _, tc := range []struct {
		ip   string
		want map[string]string
	}{
		{"10.0.0.1", map[string]string{"namespace": "payments"}},
		{"10.0.0.2", map[string]string{"namespace": "demo", "pod": "vote-bot-5d8f-x1", "deployment": "vote-bot"}},
	} {
		m := NewMerger(0, 4)
		f := m.Feeder()
		f.SetPeers(peers)
		f.SetPeerFilter(allowed)
		in := reqEv(1, 1)
		in.ProxyDirection, in.Source = tappb.TapEvent_INBOUND, &netpb.TcpAddress{Ip: parseIP(t, tc.ip), Port: 8080}
		f.Push(enc(t, in))
		out := &tappb.TapEvent{}
		if err := proto.Unmarshal(<-m.Events(), out); err != nil {
			t.Fatal(err)
		}
		if got := out.GetSourceMeta().GetLabels(); !maps.Equal(got, tc.want) {
			t.Errorf("%s: labels %v, want %v", tc.ip, got, tc.want)
		}
	}
}
