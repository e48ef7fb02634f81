package kubelet

import (
	"fmt"
	"net"
	"sync"

	"meshtls/localkube/internal/podnet"
)

// ipam hands out the pod addresses of one cluster's pod network. An index
// names both the address and the pod's namespace and veth.
type ipam struct {
	net  *podnet.Network
	mu   sync.Mutex
	used map[int]bool
	next int
}

func newIPAM(n *podnet.Network) *ipam { return &ipam{net: n, used: map[int]bool{}} }

// allocate returns a free index and its address, trying the previous pod
// IP first so a pod keeps its address across a localkube restart. Fresh
// indexes go round-robin, so a just-released address is reused last.
func (a *ipam) allocate(previous string) (int, net.IP, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i, ok := a.net.PodIndex(net.ParseIP(previous)); ok && !a.used[i] {
		a.used[i] = true
		return i, a.net.PodIP(i), nil
	}
	for n := 0; n < podnet.MaxPods; n++ {
		i := (a.next + n) % podnet.MaxPods
		if !a.used[i] {
			a.used[i] = true
			a.next = i + 1
			return i, a.net.PodIP(i), nil
		}
	}
	return 0, nil, fmt.Errorf("no free pod address in %s", a.net.CIDR)
}

func (a *ipam) release(i int) {
	a.mu.Lock()
	delete(a.used, i)
	a.mu.Unlock()
}

func (a *ipam) inUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.used)
}
