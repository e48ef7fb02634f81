package kubelet

import (
	"fmt"
	"net"
	"sync"
)

// ipam hands out pod addresses inside one cluster's block 127.B.0.0/16.
// A pod's IP is 127.B.x.y with x < 128; its private localhost is the twin
// address 127.B.(x+128).y, so the pair is derived from one index and both
// are released together.
type ipam struct {
	block byte
	mu    sync.Mutex
	used  map[int]bool
	next  int
}

// maxPods is how many (x, y) pairs fit: x in [0,128), y in [1,255).
const maxPods = 128 * 254

func newIPAM(block byte) *ipam { return &ipam{block: block, used: map[int]bool{}} }

func (a *ipam) addrs(i int) (podIP, localhost net.IP) {
	x, y := byte(i/254), byte(i%254+1)
	return net.IPv4(127, a.block, x, y).To4(), net.IPv4(127, a.block, x+128, y).To4()
}

// allocate returns a free pair, trying the previous pod IP first so a pod
// keeps its address across a localkube restart.
func (a *ipam) allocate(previous string) (int, net.IP, net.IP, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip := net.ParseIP(previous).To4(); ip != nil && ip[0] == 127 && ip[1] == a.block && ip[2] < 128 && ip[3] >= 1 && ip[3] <= 254 {
		i := int(ip[2])*254 + int(ip[3]) - 1
		if !a.used[i] {
			a.used[i] = true
			p, l := a.addrs(i)
			return i, p, l, nil
		}
	}
	for n := 0; n < maxPods; n++ {
		i := (a.next + n) % maxPods
		if !a.used[i] {
			a.used[i] = true
			a.next = i + 1
			p, l := a.addrs(i)
			return i, p, l, nil
		}
	}
	return 0, nil, nil, fmt.Errorf("no free pod address in 127.%d.0.0/16", a.block)
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
