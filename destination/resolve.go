package destination

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"meshtls/contract"
)

// target is a parsed GetDestination path: either a Service name and port,
// or an IP and port (a ClusterIP or a pod IP; which one is decided at each
// resolution, since a Service may appear with that IP later).
type target struct {
	namespace, service string
	ip                 netip.Addr
	port               uint16
}

func (t target) String() string {
	if t.service != "" {
		return t.service + "." + t.namespace + ":" + strconv.Itoa(int(t.port))
	}
	return netip.AddrPortFrom(t.ip, t.port).String()
}

// defaultPort is assumed when an authority carries none, as HTTP does.
const defaultPort = 80

// parseTarget reads an authority. Names must be a Service in the cluster
// domain ("svc.ns", "svc.ns.svc", "svc.ns.svc.<domain>"); any other name
// is not an error but a destination discovery does not know, which
// notFound reports so the proxy forwards it as it is.
func parseTarget(path, clusterDomain string) (t target, notFound bool, err error) {
	if path == "" {
		return t, false, fmt.Errorf("empty destination path")
	}
	host, portStr, err := net.SplitHostPort(path)
	if err != nil {
		// No port: a bare host (or a bracketless IPv6 address).
		host, portStr = path, strconv.Itoa(defaultPort)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return t, false, fmt.Errorf("invalid port %q in destination %q", portStr, path)
	}
	t.port = uint16(port)
	if ip, err := netip.ParseAddr(host); err == nil {
		t.ip = ip.Unmap()
		return t, false, nil
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	labels := strings.Split(host, ".")
	switch {
	case len(labels) == 2:
	case len(labels) == 3 && labels[2] == "svc":
	case len(labels) > 3 && labels[2] == "svc" && strings.Join(labels[3:], ".") == clusterDomain:
	default:
		return t, true, nil
	}
	if labels[0] == "" || labels[1] == "" {
		return t, false, fmt.Errorf("invalid host %q in destination %q", host, path)
	}
	t.service, t.namespace = labels[0], labels[1]
	return t, false, nil
}

// endpoint is one resolved address with what the proxy needs to reach it.
type endpoint struct {
	addr     netip.AddrPort
	identity string
	labels   map[string]string
	h2       bool
	// pending: the pod's identity is being checked for the first time.
	pending bool
}

func (e endpoint) equal(o endpoint) bool {
	return e.addr == o.addr && e.identity == o.identity && e.h2 == o.h2 && maps.Equal(e.labels, o.labels)
}

// snapshot is what a destination resolves to at one instant.
type snapshot struct {
	// exists is false when there is no such Service or pod.
	exists bool
	// namespace is where the Service or pod found lives ("" when none):
	// the events that may change the answer happen there.
	namespace string
	// setLabels apply to every endpoint (the Service's namespace and name).
	setLabels map[string]string
	endpoints map[netip.AddrPort]endpoint
	// pending says endpoints were left out because their pods' identity
	// checks have not concluded yet (see add).
	pending bool
}

// add lists ep, unless its identity is still being checked: a pod is
// advertised once discovery can say what it serves, never first without
// an identity and then with one.
func (s *snapshot) add(ep endpoint) {
	if ep.pending {
		s.pending = true
		return
	}
	s.endpoints[ep.addr] = ep
}

// store is the read side of the informers' caches, so resolution can be
// tested on plain objects.
type store interface {
	service(namespace, name string) (*corev1.Service, bool)
	servicesByClusterIP(ip netip.Addr) []*corev1.Service
	slices(namespace, service string) []*discoveryv1.EndpointSlice
	pod(namespace, name string) (*corev1.Pod, bool)
	podsByIP(ip netip.Addr) []*corev1.Pod
	podsInNamespace(namespace string) []*corev1.Pod
}

// resolver turns a target into a snapshot from a store.
type resolver struct {
	controlNS string
	// clusterDomain ends every identity ("" is the default).
	clusterDomain string
	store         store
	verify        verifier
}

func (r *resolver) resolve(t target) snapshot {
	if t.service != "" {
		svc, ok := r.store.service(t.namespace, t.service)
		if !ok {
			return snapshot{}
		}
		return r.resolveService(svc, t.port)
	}
	// A ClusterIP first: SO_ORIGINAL_DST gives a Service's address when
	// the application dialled the Service.
	if svcs := r.store.servicesByClusterIP(t.ip); len(svcs) > 0 {
		return r.resolveService(svcs[0], t.port)
	}
	pods := r.store.podsByIP(t.ip)
	if len(pods) != 1 {
		// Several live pods with one IP are host-network pods, or a
		// cache caught mid-change: neither names one workload.
		return snapshot{}
	}
	pod := pods[0]
	snap := snapshot{exists: true, namespace: pod.Namespace, endpoints: map[netip.AddrPort]endpoint{}}
	addr := netip.AddrPortFrom(t.ip, t.port)
	snap.add(r.podEndpoint(addr, pod))
	return snap
}

func (r *resolver) resolveService(svc *corev1.Service, port uint16) snapshot {
	snap := snapshot{
		exists:    true,
		namespace: svc.Namespace,
		setLabels: map[string]string{"namespace": svc.Namespace, "service": svc.Name},
		endpoints: map[netip.AddrPort]endpoint{},
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		// Its endpoints are a DNS name outside the mesh: the proxy
		// forwards as it would to any unknown name.
		return snapshot{}
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == int32(port) {
			sp = &svc.Spec.Ports[i]
			break
		}
	}
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
	portless := headless && len(svc.Spec.Ports) == 0
	if sp == nil && !portless {
		// Nothing listens on a port the Service does not declare.
		return snap
	}

	sawEndpoint := false
	for _, slice := range r.store.slices(svc.Namespace, svc.Name) {
		if slice.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		targetPort, ok := slicePort(slice, sp, port)
		if !ok {
			continue
		}
		for _, ep := range slice.Endpoints {
			sawEndpoint = true
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			// Whoever can write an EndpointSlice writes its targetRef: it
			// names a pod only in the slice's own namespace, and only for
			// an address that is that pod's IP (what the endpoint
			// controller writes), or its labels and identity would be
			// claimed for someone else's address.
			var pod *corev1.Pod
			if ref := ep.TargetRef; ref != nil && ref.Kind == "Pod" && (ref.Namespace == "" || ref.Namespace == slice.Namespace) {
				pod, _ = r.store.pod(slice.Namespace, ref.Name)
			}
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				addr := netip.AddrPortFrom(ip.Unmap(), targetPort)
				p := pod
				if p != nil && !podHasIP(p, addr.Addr()) {
					p = nil
				}
				if p == nil {
					if ps := r.store.podsByIP(addr.Addr()); len(ps) == 1 {
						p = ps[0]
					}
				}
				snap.add(r.podEndpoint(addr, p))
			}
		}
	}
	if sawEndpoint || len(svc.Spec.Selector) == 0 {
		return snap
	}
	// A Service with a selector whose slices list no endpoint at all: the
	// endpoint controller has not caught up, or cannot write the pods'
	// addresses (a cluster whose pod IPs the API server refuses in
	// EndpointSlices). Read the selected pods themselves, as the
	// controller would.
	for _, pod := range r.store.podsInNamespace(svc.Namespace) {
		if !selects(svc.Spec.Selector, pod.Labels) || !podReady(pod) || pod.DeletionTimestamp != nil {
			continue
		}
		ip, err := netip.ParseAddr(pod.Status.PodIP)
		if err != nil {
			continue
		}
		targetPort := port
		if sp != nil {
			var ok bool
			if targetPort, ok = podTargetPort(pod, sp); !ok {
				continue
			}
		}
		addr := netip.AddrPortFrom(ip.Unmap(), targetPort)
		snap.add(r.podEndpoint(addr, pod))
	}
	return snap
}

// slicePort finds the slice's port for the Service port: slices name their
// ports after the Service's, with the number already resolved per pod
// (named target ports included).
func slicePort(slice *discoveryv1.EndpointSlice, sp *corev1.ServicePort, port uint16) (uint16, bool) {
	if sp == nil || len(slice.Ports) == 0 {
		// A headless Service without ports: clients use the port they
		// asked for.
		return port, sp == nil
	}
	for _, p := range slice.Ports {
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if name == sp.Name && p.Port != nil && *p.Port > 0 && *p.Port < 1<<16 {
			return uint16(*p.Port), true
		}
	}
	return 0, false
}

// podTargetPort resolves a Service port's target on one pod.
func podTargetPort(pod *corev1.Pod, sp *corev1.ServicePort) (uint16, bool) {
	tp := sp.TargetPort
	if tp.Type == intstr.Int {
		if tp.IntVal == 0 {
			return uint16(sp.Port), true
		}
		return uint16(tp.IntVal), tp.IntVal > 0 && tp.IntVal < 1<<16
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == tp.StrVal && (cp.Protocol == "" || cp.Protocol == sp.Protocol || sp.Protocol == "") {
				return uint16(cp.ContainerPort), true
			}
		}
	}
	return 0, false
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// podHasIP says whether ip is one of pod's IPs.
func podHasIP(pod *corev1.Pod, ip netip.Addr) bool {
	ips := []string{pod.Status.PodIP}
	for _, p := range pod.Status.PodIPs {
		ips = append(ips, p.IP)
	}
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil && a.Unmap() == ip {
			return true
		}
	}
	return false
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podEndpoint describes addr, served by pod (nil when no pod is known for
// it, as for a selector-less Service pointing outside the cluster).
func (r *resolver) podEndpoint(addr netip.AddrPort, pod *corev1.Pod) endpoint {
	ep := endpoint{addr: addr}
	if pod == nil {
		return ep
	}
	ep.labels = map[string]string{"namespace": pod.Namespace, "pod": pod.Name}
	if kind, name := metricOwner(pod); kind != "" {
		ep.labels[kind] = name
	}
	meshed := pod.Labels[contract.ControlPlaneNSLabel] == r.controlNS
	ep.h2 = meshed
	if !skipsProxy(pod, addr.Port()) {
		ep.identity, ep.pending = r.identity(pod)
	}
	return ep
}

// skipsProxy says whether connections to port bypass the pod's proxy:
// its own tap and admin ports, and the ports named in
// config.linkerd.io/skip-inbound-ports. A peer must reach them as they
// are, in plain text: mesh TLS there would meet a server that does not
// speak it (a meshed Prometheus scraping 4191, say).
func skipsProxy(pod *corev1.Pod, port uint16) bool {
	if port == contract.AdminPort || port == contract.TapPort {
		return true
	}
	for _, f := range strings.Split(pod.Annotations[contract.SkipInboundPortsAnnotation], ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(f), "-")
		a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16); err != nil {
				continue
			}
		}
		if uint64(port) >= a && uint64(port) <= b {
			return true
		}
	}
	return false
}

// identity is the identity pod can serve now, or "". A TLS pod gets one
// once it is Ready (the proxy is ready only with a usable certificate) and
// the verifier has seen it serve that identity (README.md, "Identity and
// readiness"). Until then it is pending: left out of answers, never
// advertised without identity. A pod whose check failed is advertised
// without.
//
// pending is true while the verifier's first check of the pod has not
// concluded: the pod is then not advertised at all yet (snapshot.add).
func (r *resolver) identity(pod *corev1.Pod) (id string, pending bool) {
	if !contract.TLSMode(pod.Annotations[contract.TLSAnnotation]) || pod.Labels[contract.ControlPlaneNSLabel] != r.controlNS {
		return "", false
	}
	if !podReady(pod) {
		// Its proxy has no certificate yet (it is ready only with one),
		// or this cache has not seen it turn Ready: a peer must not be
		// told it has no identity, so it is not advertised at all yet.
		return "", true
	}
	kind, name := identityOwner(pod)
	id = contract.IdentityIn(name, kind, pod.Namespace, r.controlNS, r.clusterDomain)
	if r.verify != nil && !r.verify.serves(pod, id) {
		p, ok := r.verify.(interface {
			pending(*corev1.Pod, string) bool
		})
		return "", ok && p.pending(pod, id)
	}
	return id, false
}

// identityOwner is the owner whose identity the CA issues for pod: the
// linkerd.io/proxy-<kind> label inject writes, else the controller
// reference of a known kind, else the pod itself. It must match the CA's
// rule (ca/owner.go), or proxies would expect a name no certificate has.
func identityOwner(pod *corev1.Pod) (kind, name string) {
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
		for _, known := range contract.Kinds {
			if k == known {
				return k, ref.Name
			}
		}
	}
	return contract.KindPod, pod.Name
}

// metricOwner is the owner named in dst_<kind> labels: the long-lived
// workload, so a Deployment's pods keep one label across rollouts. Without
// RBAC on ReplicaSets, a ReplicaSet's Deployment is recovered from the
// pod-template-hash suffix the Deployment controller gives it.
func metricOwner(pod *corev1.Pod) (kind, name string) {
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
			if hash := pod.Labels["pod-template-hash"]; hash != "" && strings.HasSuffix(ref.Name, "-"+hash) {
				return contract.KindDeployment, strings.TrimSuffix(ref.Name, "-"+hash)
			}
		}
		return k, ref.Name
	}
	return "", ""
}

// livePodIP says whether pod owns its status.podIP: host-network pods
// share the node's, and finished pods have given theirs back.
func livePodIP(pod *corev1.Pod) bool {
	if pod.Spec.HostNetwork || pod.Status.PodIP == "" {
		return false
	}
	return pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}
