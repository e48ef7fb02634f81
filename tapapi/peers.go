package tapapi

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"meshtls/contract"
)

// podIPIndex indexes the pod cache by status.podIP.
const podIPIndex = "podIP"

// Peers names the pods behind the peer addresses of tap events, which
// proxies do not know (an inbound request's client is only an address to
// its server's proxy). It answers from a pod informer's cache, never from
// an API call per event.
type Peers struct {
	informer cache.SharedIndexInformer
}

// NewPeers watches every pod of the cluster through client. Run starts it.
func NewPeers(client kubernetes.Interface) *Peers {
	f := informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute,
		informers.WithTransform(slimPod))
	inf := f.Core().V1().Pods().Informer()
	_ = inf.AddIndexers(cache.Indexers{podIPIndex: func(obj any) ([]string, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok || !ownsIP(p) {
			return nil, nil
		}
		return []string{p.Status.PodIP}, nil
	}})
	return &Peers{informer: inf}
}

// Run fills the cache and keeps it current until ctx ends; it returns
// once the first list is in, or with an error if ctx ends first.
func (p *Peers) Run(ctx context.Context) error {
	go p.informer.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), p.informer.HasSynced) {
		return fmt.Errorf("pod cache for naming tap peers did not sync: %w", ctx.Err())
	}
	return nil
}

// slimPod keeps what naming a peer needs: the cache holds every pod of
// the cluster.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	s := &corev1.Pod{}
	s.Name, s.Namespace, s.UID, s.ResourceVersion = p.Name, p.Namespace, p.UID, p.ResourceVersion
	s.OwnerReferences = p.OwnerReferences
	for k, v := range p.Labels {
		if strings.HasPrefix(k, contract.ProxyKindLabelPrefix) || k == "pod-template-hash" {
			if s.Labels == nil {
				s.Labels = map[string]string{}
			}
			s.Labels[k] = v
		}
	}
	s.Spec.HostNetwork = p.Spec.HostNetwork
	s.Status.Phase, s.Status.PodIP = p.Status.Phase, p.Status.PodIP
	return s, nil
}

// ownsIP says whether the pod holds its status.podIP alone: a
// host-network pod shares the node's, and a finished pod has given its
// address back (another pod may hold it now).
func ownsIP(p *corev1.Pod) bool {
	return p.Status.PodIP != "" && !p.Spec.HostNetwork &&
		p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

// lookup returns the one pod holding ip, or nil: an address no pod holds,
// or more than one claims (a stale cache during a handover), stays an
// address rather than get a name that may be wrong.
func (p *Peers) lookup(ip netip.Addr) *corev1.Pod {
	objs, err := p.informer.GetIndexer().ByIndex(podIPIndex, ip.String())
	if err != nil || len(objs) != 1 {
		return nil
	}
	pod, _ := objs[0].(*corev1.Pod)
	return pod
}

// PeerLabels are the tap labels naming pod: namespace, pod and its owner
// (deployment: web), the names the tap printers read.
func PeerLabels(pod *corev1.Pod) map[string]string {
	l := map[string]string{"namespace": pod.Namespace, "pod": pod.Name}
	if kind, name := peerOwner(pod); kind != "" && kind != contract.KindPod {
		l[kind] = name
	}
	return l
}

// peerOwner is the workload a peer pod belongs to: the
// linkerd.io/proxy-<kind> label of a meshed pod, else its controller
// reference, a Deployment's ReplicaSet named after the Deployment by the
// pod-template-hash suffix the Deployment controller gives it (the tap
// API has no RBAC on ReplicaSets, as the destination controller has not).
func peerOwner(pod *corev1.Pod) (kind, name string) {
	for _, k := range contract.Kinds {
		if n := pod.Labels[contract.KindLabel(k)]; n != "" {
			return k, n
		}
	}
	for _, ref := range pod.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		k := strings.ToLower(ref.Kind)
		if k == contract.KindReplicaSet {
			if hash := pod.Labels["pod-template-hash"]; hash != "" {
				if dep, ok := strings.CutSuffix(ref.Name, "-"+hash); ok {
					return contract.KindDeployment, dep
				}
			}
		}
		return k, ref.Name
	}
	return "", ""
}

// encodeMeta is labels as a TapEvent field (source_meta or
// destination_meta) holding an EndpointMeta.
func encodeMeta(field protowire.Number, labels map[string]string) []byte {
	var meta []byte
	for k, v := range labels {
		var entry []byte
		entry = protowire.AppendTag(entry, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, k)
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendString(entry, v)
		meta = protowire.AppendTag(meta, 1, protowire.BytesType)
		meta = protowire.AppendBytes(meta, entry)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), meta)
}

// peerMemo remembers one address's encoded metadata for the pod object
// it was built from; the informer replaces the object when the pod
// changes, so the pointer says whether it is still current.
type peerMemo struct {
	pod *corev1.Pod
	enc []byte
}

type peerKey struct {
	ip    netip.Addr
	field protowire.Number
}

// maxPeerMemo bounds a feeder's memo: past it, it starts over.
const maxPeerMemo = 4096

// peerMeta returns ip's pod metadata encoded as field, or nil when no
// pod holds ip. memo is the caller's (one feeder's, so no lock).
func (p *Peers) peerMeta(memo map[peerKey]peerMemo, ip netip.Addr, field protowire.Number) []byte {
	return p.peerMetaIn(memo, ip, field, nil)
}

// peerMetaIn is peerMeta for a user who may see pods only in the
// namespaces allowed says yes to (nil: all): a peer elsewhere is only
// said to be in its namespace, without its pod or owner.
func (p *Peers) peerMetaIn(memo map[peerKey]peerMemo, ip netip.Addr, field protowire.Number, allowed func(ns string) bool) []byte {
	pod := p.lookup(ip)
	if pod == nil {
		return nil
	}
	key := peerKey{ip, field}
	if m, ok := memo[key]; ok && m.pod == pod {
		return m.enc
	}
	if len(memo) >= maxPeerMemo {
		clear(memo)
	}
	labels := PeerLabels(pod)
	if allowed != nil && !allowed(pod.Namespace) {
		labels = map[string]string{"namespace": pod.Namespace}
	}
	enc := encodeMeta(field, labels)
	memo[key] = peerMemo{pod: pod, enc: enc}
	return enc
}
