package destination

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// subIndex finds the streams an event concerns without walking all of
// them: Service streams by namespace and Service name, address streams by
// IP and by the Service their address resolved to. Guarded by Server.mu.
type subIndex struct {
	all   map[*subscription]struct{}
	bySvc map[string]map[string]map[*subscription]struct{} // namespace → Service → streams
	byIP  map[netip.Addr]map[*subscription]struct{}
}

func newSubIndex() *subIndex {
	return &subIndex{
		all:   map[*subscription]struct{}{},
		bySvc: map[string]map[string]map[*subscription]struct{}{},
		byIP:  map[netip.Addr]map[*subscription]struct{}{},
	}
}

func (x *subIndex) addSvc(ns, name string, sub *subscription) {
	names := x.bySvc[ns]
	if names == nil {
		names = map[string]map[*subscription]struct{}{}
		x.bySvc[ns] = names
	}
	set := names[name]
	if set == nil {
		set = map[*subscription]struct{}{}
		names[name] = set
	}
	set[sub] = struct{}{}
}

func (x *subIndex) removeSvc(ns, name string, sub *subscription) {
	names := x.bySvc[ns]
	delete(names[name], sub)
	if len(names[name]) == 0 {
		delete(names, name)
	}
	if len(names) == 0 {
		delete(x.bySvc, ns)
	}
}

func (x *subIndex) add(sub *subscription) {
	x.all[sub] = struct{}{}
	if sub.service != "" {
		x.addSvc(sub.namespace, sub.service, sub)
		return
	}
	set := x.byIP[sub.ip]
	if set == nil {
		set = map[*subscription]struct{}{}
		x.byIP[sub.ip] = set
	}
	set[sub] = struct{}{}
}

func (x *subIndex) remove(sub *subscription) {
	delete(x.all, sub)
	if sub.service != "" {
		x.removeSvc(sub.namespace, sub.service, sub)
		return
	}
	if sub.matchSvc != "" {
		x.removeSvc(sub.matchNS, sub.matchSvc, sub)
	}
	delete(x.byIP[sub.ip], sub)
	if len(x.byIP[sub.ip]) == 0 {
		delete(x.byIP, sub.ip)
	}
}

// match records the Service an address stream resolved to (none: ""), so
// the stream hears that Service's slices and pods.
func (x *subIndex) match(sub *subscription, ns, svc string) (moved bool) {
	if sub.matchNS == ns && sub.matchSvc == svc {
		return false
	}
	if sub.matchSvc != "" {
		x.removeSvc(sub.matchNS, sub.matchSvc, sub)
	}
	sub.matchNS, sub.matchSvc = ns, svc
	if svc != "" {
		x.addSvc(ns, svc, sub)
	}
	return true
}

// services lists the Service names in ns that streams listen on.
func (x *subIndex) services(ns string) []string {
	out := make([]string, 0, len(x.bySvc[ns]))
	for name := range x.bySvc[ns] {
		out = append(out, name)
	}
	return out
}

// event is what changed: the Services it belongs to and the addresses it
// carries.
type event struct {
	namespace string
	services  []string
	ips       []netip.Addr
	pods      []*corev1.Pod // for selector matching: the object, and its previous state
}

func (x *subIndex) collect(e event, svcOf func(ns, name string) (*corev1.Service, bool), into map[*subscription]struct{}) {
	for _, name := range e.services {
		for sub := range x.bySvc[e.namespace][name] {
			into[sub] = struct{}{}
		}
	}
	for _, ip := range e.ips {
		for sub := range x.byIP[ip] {
			into[sub] = struct{}{}
		}
	}
	if len(e.pods) == 0 {
		return
	}
	// A pod concerns the Services that select it, before or after the
	// change, and Services without a selector (their slices may name it).
	for name, set := range x.bySvc[e.namespace] {
		svc, ok := svcOf(e.namespace, name)
		hit := !ok || len(svc.Spec.Selector) == 0
		for _, pod := range e.pods {
			hit = hit || pod != nil && selects(svc.Spec.Selector, pod.Labels)
		}
		if hit {
			for sub := range set {
				into[sub] = struct{}{}
			}
		}
	}
}
