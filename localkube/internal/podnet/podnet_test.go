package podnet

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

func TestBlockNamesAndAddressesStayInsideTheBlock(t *testing.T) {
	_, all, _ := net.ParseCIDR(Range)
	for _, b := range []int{BlockMin, 42, BlockMax - 1} {
		n := ForBlock(b)
		if !all.Contains(n.NodeIP) || !n.CIDR.Contains(n.NodeIP) {
			t.Errorf("block %d: node %s outside %s or %s", b, n.NodeIP, Range, n.CIDR)
		}
		seen := map[string]bool{n.NodeIP.String(): true}
		for i := 0; i < MaxPods; i++ {
			ip := n.PodIP(i)
			if !n.CIDR.Contains(ip) || seen[ip.String()] || ip[3] == 255 {
				t.Fatalf("block %d: pod %d gets %s (in use, broadcast or outside %s)", b, i, ip, n.CIDR)
			}
			seen[ip.String()] = true
			if j, ok := n.PodIndex(ip); !ok || j != i {
				t.Fatalf("block %d: PodIndex(%s) = %d, %v; want %d", b, ip, j, ok, i)
			}
		}
		broadcast := net.IPv4(198, 18, byte(b), 255).String()
		for _, other := range []string{n.NodeIP.String(), broadcast, "10.0.0.2", "198.19.42.7", "198.18.15.7"} {
			if _, ok := n.PodIndex(net.ParseIP(other)); ok {
				t.Errorf("block %d: %s counted as a pod address", b, other)
			}
		}
		// Names fit Linux's 15-character interface names, and one block's
		// prefix never matches another's (clean-up relies on it).
		if len(n.Bridge) > 15 || len(n.vethName(MaxPods-1)) > 15 {
			t.Errorf("block %d: names %q, %q too long for an interface", b, n.Bridge, n.vethName(MaxPods-1))
		}
	}
	// Clean-up of block 16 deletes names starting "lk16-" and "lk16v".
	for _, name := range []string{ForBlock(163).NetnsName(3), ForBlock(163).vethName(3), ForBlock(163).Bridge} {
		if strings.HasPrefix(name, "lk16-") || strings.HasPrefix(name, "lk16v") || name == ForBlock(16).Bridge {
			t.Errorf("block 163's %q would be cleaned up with block 16", name)
		}
	}
}

func TestServiceAndLinkAddressesArePerBlockAndApart(t *testing.T) {
	_, all, _ := net.ParseCIDR(Range)
	for _, b := range []int{BlockMin, 42, BlockMax - 1} {
		n := ForBlock(b)
		for _, ip := range []net.IP{APIServiceIP(b), DNSServiceIP(b), n.DNSServiceIP()} {
			if !n.ServiceCIDR.Contains(ip) {
				t.Errorf("block %d: service IP %s outside %s", b, ip, n.ServiceCIDR)
			}
		}
		if got := DNSServiceIP(b).String(); got != net.IPv4(198, 19, byte(b), 10).String() {
			t.Errorf("block %d: DNS service IP %s, want the service CIDR's .10", b, got)
		}
		for _, ip := range []net.IP{n.HostLinkIP, n.NodeLinkIP} {
			if !n.LinkCIDR.Contains(ip) || n.ServiceCIDR.Contains(ip) || n.CIDR.Contains(ip) || !all.Contains(ip) {
				t.Errorf("block %d: link address %s overlaps the pod or service CIDR or leaves %s", b, ip, Range)
			}
			if !n.NodeRoutes().Contains(ip) {
				t.Errorf("block %d: pods do not route %s (the host talks from it)", b, ip)
			}
		}
		if !all.Contains(n.ServiceCIDR.IP) || !n.NodeRoutes().Contains(n.ServiceCIDR.IP) {
			t.Errorf("block %d: service CIDR %s outside %s or the pods' node routes", b, n.ServiceCIDR, Range)
		}
		other := ForBlock(b%200 + 17)
		if other.ServiceCIDR.Contains(n.ServiceCIDR.IP) || other.LinkCIDR.Contains(n.HostLinkIP) {
			t.Errorf("blocks %d and %d share service or link addresses", b, other.Block)
		}
		for _, name := range []string{n.HostLink, n.NodeLink, n.NodeNetns} {
			if len(name) > 15 || !strings.HasPrefix(name, fmt.Sprintf("lk%d", b)) {
				t.Errorf("block %d: name %q too long or without the block's prefix", b, name)
			}
		}
	}
}
