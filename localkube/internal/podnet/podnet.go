// Package podnet gives each pod of a local cluster a network namespace of
// its own, wired to a bridge in the cluster's node namespace.
//
// Address plan (all of it inside 198.18.0.0/15, the RFC 2544 benchmarking
// range, which no real network routes), for cluster block B (16..249,
// locked machine-wide by the caller):
//
//	198.18.B.0/24    pod CIDR: bridge lk<B>br in the node namespace holds
//	                 198.18.B.1 (the pods' gateway and API server relay),
//	                 pods get 198.18.B.2..254
//	198.19.B.0/25    service CIDR (ClusterIPs): 198.19.B.1 is the
//	                 "kubernetes" Service, 198.19.B.10 cluster DNS
//	198.19.B.252/30  the host <-> node link: 198.19.B.253 on lk<B>h in the
//	                 host, 198.19.B.254 on lk<B>n in the node namespace
//
// The node namespace lk<B>-node is the cluster's node: it holds the bridge,
// forwards (ip_forward=1 there only; the host's stays as it is) and runs
// kube-proxy, whose iptables rules are per namespace, so parallel clusters
// never share or fight over them. The host routes the pod and service
// CIDRs through the link.
//
// Every name this package creates starts with "lk<B>" so that clean-up of
// one cluster never touches another's.
//
// Safety: a pod's routes are its /24 and 198.19.B.0/24 via the node (no
// default route); the node namespace has no default route either; the
// host gets a blackhole route for the whole 198.18.0.0/15 while any
// cluster runs (so an address of no running cluster is dropped, never sent
// towards the host's default route); and FORWARD rules, in the node
// namespace and on the host's link, drop anything with an address outside
// that range.
package podnet

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Range is every address localkube's pod networks use.
const Range = "198.18.0.0/15"

// Blocks a cluster may own: B in [BlockMin, BlockMax).
const (
	BlockMin = 16
	BlockMax = 250
)

// MaxPods is how many pod addresses a cluster has (198.18.B.2..254).
const MaxPods = 253

// netnsDir is where named namespaces live, as for `ip netns`.
const netnsDir = "/run/netns"

// Network is one cluster's pod network.
type Network struct {
	Block  int
	Bridge string     // in the node namespace
	NodeIP net.IP     // the bridge's address: the pods' gateway and the API server relay
	CIDR   *net.IPNet // the pod CIDR
	// ServiceCIDR is the cluster's ClusterIP range (kube-apiserver's
	// --service-cluster-ip-range); kube-proxy's rules in the node
	// namespace make it route.
	ServiceCIDR *net.IPNet
	// NodeNetns is the node namespace (under /run/netns).
	NodeNetns string
	// HostLink is the host end of the host <-> node veth pair, NodeLink
	// its end in the node namespace; HostLinkIP and NodeLinkIP their
	// addresses in LinkCIDR.
	HostLink, NodeLink     string
	HostLinkIP, NodeLinkIP net.IP
	LinkCIDR               *net.IPNet
}

// ForBlock returns the names and addresses of block b, without touching
// the system.
func ForBlock(b int) *Network {
	return &Network{
		Block:       b,
		Bridge:      fmt.Sprintf("lk%dbr", b),
		NodeIP:      net.IPv4(198, 18, byte(b), 1).To4(),
		CIDR:        &net.IPNet{IP: net.IPv4(198, 18, byte(b), 0).To4(), Mask: net.CIDRMask(24, 32)},
		ServiceCIDR: ServiceCIDR(b),
		NodeNetns:   fmt.Sprintf("lk%d-node", b),
		HostLink:    fmt.Sprintf("lk%dh", b),
		NodeLink:    fmt.Sprintf("lk%dn", b),
		HostLinkIP:  net.IPv4(198, 19, byte(b), 253).To4(),
		NodeLinkIP:  net.IPv4(198, 19, byte(b), 254).To4(),
		LinkCIDR:    &net.IPNet{IP: net.IPv4(198, 19, byte(b), 252).To4(), Mask: net.CIDRMask(30, 32)},
	}
}

// ServiceCIDR is block b's ClusterIP range, 198.19.B.0/25.
func ServiceCIDR(b int) *net.IPNet {
	return &net.IPNet{IP: net.IPv4(198, 19, byte(b), 0).To4(), Mask: net.CIDRMask(25, 32)}
}

// APIServiceIP is block b's "kubernetes" Service ClusterIP, the first
// address of its service CIDR (kube-apiserver takes it).
func APIServiceIP(b int) net.IP { return net.IPv4(198, 19, byte(b), 1).To4() }

// DNSServiceIP is block b's cluster DNS ClusterIP (the kube-dns Service),
// by convention the service CIDR's .10. Pods' resolv.conf names it.
func DNSServiceIP(b int) net.IP { return net.IPv4(198, 19, byte(b), 10).To4() }

// DNSServiceIP is the cluster DNS ClusterIP of this network's block.
func (n *Network) DNSServiceIP() net.IP { return DNSServiceIP(n.Block) }

// NodeRoutes is what pods route through the node (198.18.B.1): the
// service CIDR and the host link, so that ClusterIPs work and replies to
// the host (which talks from HostLinkIP) go back.
func (n *Network) NodeRoutes() *net.IPNet {
	return &net.IPNet{IP: net.IPv4(198, 19, byte(n.Block), 0).To4(), Mask: net.CIDRMask(24, 32)}
}

// NodeNetnsPath is the file that pins the node namespace.
func (n *Network) NodeNetnsPath() string { return filepath.Join(netnsDir, n.NodeNetns) }

// PodIP is the address of pod index i (0 <= i < MaxPods).
func (n *Network) PodIP(i int) net.IP { return net.IPv4(198, 18, byte(n.Block), byte(i+2)).To4() }

// PodIndex is the inverse of PodIP; ok is false for an address not ours.
func (n *Network) PodIndex(ip net.IP) (int, bool) {
	ip = ip.To4()
	if ip == nil || !n.CIDR.Contains(ip) || ip[3] < 2 || ip[3] == 255 {
		return 0, false
	}
	return int(ip[3]) - 2, true
}

// NetnsName names pod index i's namespace (under /run/netns, so that
// `ip netns exec` works on it).
func (n *Network) NetnsName(i int) string { return fmt.Sprintf("lk%d-%d", n.Block, i) }

// NetnsPath is the file that pins the namespace.
func (n *Network) NetnsPath(i int) string { return filepath.Join(netnsDir, n.NetnsName(i)) }

func (n *Network) vethName(i int) string { return fmt.Sprintf("lk%dv%d", n.Block, i) }

// Check reports, in one line, why this machine cannot run pod networks:
// they need root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and network namespaces.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("pod networking needs root (network namespaces, a bridge and veth pairs); run localkube up as root")
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("pod networking needs network namespaces, which this kernel lacks: %v", err)
	}
	if _, err := linkList(); err != nil {
		return fmt.Errorf("pod networking needs netlink: %v", err)
	}
	return nil
}

// Setup removes what an earlier run of this block left behind, then creates
// the node namespace with the bridge, the host <-> node link and routes,
// the blackhole route and the forwarding rules. The caller must hold block
// n.Block's machine-wide lock.
func (n *Network) Setup() error {
	if err := n.Cleanup(); err != nil {
		return err
	}
	h, err := newNamedNetns(n.NodeNetns)
	if err != nil {
		return fmt.Errorf("create node netns %s: %w", n.NodeNetns, err)
	}
	defer func() { _ = h.Close() }()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", n.NodeNetns, err)
	}
	defer nh.Close()
	// Sysctls under /proc/sys/net are those of the writer's namespace: the
	// node forwards between the pods and the host; the host's own
	// ip_forward is left as it is. bridge-nf-call-iptables makes bridged
	// pod-to-pod frames pass conntrack, so a reply from a Service's pod to
	// a pod on the same bridge gets its ClusterIP back (un-DNAT).
	if err := Enter(n.NodeNetnsPath(), func() error {
		for _, s := range []struct{ path, value string }{
			{"/proc/sys/net/ipv4/ip_forward", "1"},
			{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "1"},
			{"/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"},
			{"/proc/sys/net/bridge/bridge-nf-call-iptables", "1"},
			// A ClusterIP without endpoints (kube-proxy's REJECT) or a free
			// one (no route) answers with ICMP, which the kernel rate-limits
			// per peer, and the host is one peer for all its tests: without
			// the limit a refusal is always immediate, never a timeout.
			{"/proc/sys/net/ipv4/icmp_ratelimit", "0"},
		} {
			if err := os.WriteFile(s.path, []byte(s.value), 0o644); err != nil {
				if strings.Contains(s.path, "ipv6") && errors.Is(err, os.ErrNotExist) {
					continue // no IPv6 at all: nothing to disable
				}
				return fmt.Errorf("sysctl %s in %s: %w (the bridge one needs the br_netfilter module)", s.path, n.NodeNetns, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	lo, err := nh.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up lo in %s: %w", n.NodeNetns, err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.Bridge}}
	if err := nh.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s in %s: %w", n.Bridge, n.NodeNetns, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: n.NodeIP, Mask: n.CIDR.Mask}}
	if err := nh.AddrAdd(br, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr, n.Bridge, err)
	}
	if err := nh.LinkSetUp(br); err != nil {
		return fmt.Errorf("bring up %s: %w", n.Bridge, err)
	}
	// The service CIDR gets a route in the node so that a ClusterIP
	// kube-proxy did not DNAT reaches the FORWARD chain (without a route
	// it would fail before any rule): kube-proxy rejects a Service without
	// endpoints there, and our last rules reject a free ClusterIP, so
	// neither is sent on the bridge.
	if err := nh.RouteReplace(&netlink.Route{LinkIndex: br.Attrs().Index, Dst: n.ServiceCIDR, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("route %s in %s: %w", n.ServiceCIDR, n.NodeNetns, err)
	}
	if err := n.setupLink(h, nh); err != nil {
		return err
	}
	if err := withRouteLock(addBlackhole); err != nil {
		return err
	}
	return n.addForwardRules()
}

// setupLink creates the host <-> node veth pair, its addresses, and the
// host's routes of the pod and service CIDRs through it.
func (n *Network) setupLink(node netns.NsHandle, nh *netlink.Handle) error {
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: n.HostLink},
		PeerName:  n.NodeLink, PeerNamespace: netlink.NsFd(int(node)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", n.HostLink, err)
	}
	hl, err := netlink.LinkByName(n.HostLink)
	if err != nil {
		return err
	}
	// IPv6 would give the link link-local chatter we have no use for.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+n.HostLink+"/disable_ipv6", []byte("1"), 0o644)
	if err := netlink.AddrAdd(hl, &netlink.Addr{IPNet: &net.IPNet{IP: n.HostLinkIP, Mask: n.LinkCIDR.Mask}}); err != nil {
		return fmt.Errorf("address %s on %s: %w", n.HostLinkIP, n.HostLink, err)
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return fmt.Errorf("bring up %s: %w", n.HostLink, err)
	}
	nl, err := nh.LinkByName(n.NodeLink)
	if err != nil {
		return err
	}
	if err := nh.AddrAdd(nl, &netlink.Addr{IPNet: &net.IPNet{IP: n.NodeLinkIP, Mask: n.LinkCIDR.Mask}}); err != nil {
		return fmt.Errorf("address %s on %s in %s: %w", n.NodeLinkIP, n.NodeLink, n.NodeNetns, err)
	}
	if err := nh.LinkSetUp(nl); err != nil {
		return fmt.Errorf("bring up %s in %s: %w", n.NodeLink, n.NodeNetns, err)
	}
	for _, dst := range []*net.IPNet{n.CIDR, n.ServiceCIDR} {
		r := &netlink.Route{LinkIndex: hl.Attrs().Index, Dst: dst, Gw: n.NodeLinkIP}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s via %s: %w", dst, n.NodeLinkIP, err)
		}
	}
	return nil
}

// Teardown removes everything Setup and AddPod created. The blackhole
// route goes with the last cluster.
func (n *Network) Teardown() error {
	err := n.Cleanup()
	if rerr := withRouteLock(func() error {
		if otherBlocksInUse(n.Block) {
			return nil
		}
		return delBlackhole()
	}); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// Cleanup deletes this block's namespaces (the node's with its bridge,
// veths and kube-proxy's rules), its host link (and so its routes) and
// host rules, whoever created them (a crashed run included), and what an
// earlier localkube that kept the bridge in the host left. It never
// touches other blocks' objects.
func (n *Network) Cleanup() error {
	var errs []error
	prefix := fmt.Sprintf("lk%d-", n.Block)
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			if err := deleteNetns(e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	links, err := linkList()
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if n.ownsHostLink(name) {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
				errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
			}
		}
	}
	if err := n.delForwardRules(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ownsHostLink tells whether a host interface name is this block's: the
// link, or the bridge and pod veths of a localkube before the node
// namespace (which kept them in the host).
func (n *Network) ownsHostLink(name string) bool {
	return name == n.HostLink || name == n.Bridge || strings.HasPrefix(name, fmt.Sprintf("lk%dv", n.Block))
}

func deleteNetns(name string) error {
	err := netns.DeleteNamed(name)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// A file left by a create that failed before its bind mount.
	if rerr := os.Remove(filepath.Join(netnsDir, name)); rerr == nil || errors.Is(rerr, os.ErrNotExist) {
		return nil
	}
	return fmt.Errorf("delete netns %s: %w", name, err)
}

// Leftovers lists what exists of block b in the host: namespaces, links,
// routes, rules (the node namespace's own rules go with it). Tests use it
// to prove clean-up.
func Leftovers(b int) []string {
	n := ForBlock(b)
	var out []string
	prefix := fmt.Sprintf("lk%d-", b)
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, "netns "+e.Name())
		}
	}
	links, _ := linkList()
	for _, l := range links {
		if name := l.Attrs().Name; n.ownsHostLink(name) {
			out = append(out, "link "+name)
		}
	}
	routes, _ := routeList(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	for _, r := range routes {
		if r.Dst != nil && (n.CIDR.Contains(r.Dst.IP) || n.NodeRoutes().Contains(r.Dst.IP)) {
			out = append(out, "route "+r.Dst.String())
		}
	}
	out = append(out, n.forwardRulesLeft()...)
	return out
}

// AddPod creates pod index i's namespace with loopback up and eth0 holding
// its address, the other end of its veth on the bridge in the node
// namespace. It returns the namespace's path.
func (n *Network) AddPod(i int) (string, error) {
	name := n.NetnsName(i)
	_ = deleteNetns(name) // a leftover of an earlier pod with this index
	node, err := netns.GetFromPath(n.NodeNetnsPath())
	if err != nil {
		return "", fmt.Errorf("node netns %s: %w", n.NodeNetns, err)
	}
	defer func() { _ = node.Close() }()
	noh, err := netlink.NewHandleAt(node)
	if err != nil {
		return "", fmt.Errorf("netlink in %s: %w", n.NodeNetns, err)
	}
	defer noh.Close()
	if l, err := noh.LinkByName(n.vethName(i)); err == nil {
		_ = noh.LinkDel(l)
	}
	h, err := newNamedNetns(name)
	if err != nil {
		return "", fmt.Errorf("create netns %s: %w", name, err)
	}
	defer func() { _ = h.Close() }()
	fail := func(err error) (string, error) {
		n.RemovePod(i)
		return "", err
	}
	br, err := noh.LinkByName(n.Bridge)
	if err != nil {
		return fail(fmt.Errorf("bridge %s: %w", n.Bridge, err))
	}
	host := n.vethName(i)
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: host, MasterIndex: br.Attrs().Index},
		PeerName:  "eth0", PeerNamespace: netlink.NsFd(int(h)),
	}
	if err := noh.LinkAdd(veth); err != nil {
		return fail(fmt.Errorf("create veth %s: %w", host, err))
	}
	hl, err := noh.LinkByName(host)
	if err != nil {
		return fail(err)
	}
	// Hairpin: a pod reaching its own Service is DNATed back to itself,
	// and with bridge-nf-call-iptables the bridge must send the frame out
	// of the port it came in by.
	if err := noh.LinkSetHairpin(hl, true); err != nil {
		return fail(fmt.Errorf("hairpin on %s: %w", host, err))
	}
	if err := noh.LinkSetUp(hl); err != nil {
		return fail(fmt.Errorf("bring up %s: %w", host, err))
	}
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return fail(fmt.Errorf("netlink in %s: %w", name, err))
	}
	defer nh.Close()
	lo, err := nh.LinkByName("lo")
	if err != nil {
		return fail(err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return fail(fmt.Errorf("bring up lo in %s: %w", name, err))
	}
	eth, err := nh.LinkByName("eth0")
	if err != nil {
		return fail(err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: n.PodIP(i), Mask: n.CIDR.Mask}}
	if err := nh.AddrAdd(eth, addr); err != nil {
		return fail(fmt.Errorf("address %s in %s: %w", addr, name, err))
	}
	if err := nh.LinkSetUp(eth); err != nil {
		return fail(fmt.Errorf("bring up eth0 in %s: %w", name, err))
	}
	// The pod's routes: its /24 (connected) and, through the node, the
	// service CIDR and the host link. No default route, so any other
	// destination is unreachable.
	if err := nh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: n.NodeRoutes(), Gw: n.NodeIP}); err != nil {
		return fail(fmt.Errorf("route %s via %s in %s: %w", n.NodeRoutes(), n.NodeIP, name, err))
	}
	return n.NetnsPath(i), nil
}

// RemovePod deletes pod index i's namespace; the kernel deletes its veth
// pair with it, and we make sure of the node's end.
func (n *Network) RemovePod(i int) {
	_ = deleteNetns(n.NetnsName(i))
	node, err := netns.GetFromPath(n.NodeNetnsPath())
	if err != nil {
		return
	}
	defer func() { _ = node.Close() }()
	if noh, err := netlink.NewHandleAt(node); err == nil {
		if l, err := noh.LinkByName(n.vethName(i)); err == nil {
			_ = noh.LinkDel(l)
		}
		noh.Close()
	}
}

// newNamedNetns creates a pinned namespace without ever leaving a Go
// thread in it: the work happens on a locked thread that is put back in
// the host namespace, or, if that fails, is left locked so that the
// runtime ends it with its goroutine.
func newNamedNetns(name string) (netns.NsHandle, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- result{err: err}
			return // the thread is still in the host namespace, but be safe: it dies locked
		}
		defer func() { _ = orig.Close() }()
		h, err := netns.NewNamed(name)
		if serr := netns.Set(orig); serr != nil {
			if err == nil {
				_ = h.Close()
			}
			ch <- result{err: fmt.Errorf("return to host netns: %w", serr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{h: h, err: err}
	}()
	r := <-ch
	return r.h, r.err
}

// Enter runs fn on a thread inside the namespace at path (for example to
// start a process there, which inherits the thread's namespace). The
// thread goes back to the host namespace afterwards, or dies.
func Enter(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer func() { _ = target.Close() }()
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- err
			return
		}
		defer func() { _ = orig.Close() }()
		if err := netns.Set(target); err != nil {
			ch <- fmt.Errorf("enter netns %s: %w", path, err)
			runtime.UnlockOSThread()
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			ch <- errors.Join(ferr, fmt.Errorf("return to host netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		ch <- ferr
	}()
	return <-ch
}

func blackhole() *netlink.Route {
	_, dst, _ := net.ParseCIDR(Range)
	return &netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE}
}

func addBlackhole() error {
	if err := netlink.RouteReplace(blackhole()); err != nil {
		return fmt.Errorf("blackhole route %s: %w", Range, err)
	}
	return nil
}

func delBlackhole() error {
	if err := netlink.RouteDel(blackhole()); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("delete blackhole route %s: %w", Range, err)
	}
	return nil
}

// HasBlackhole reports whether the host's blackhole route for Range exists.
func HasBlackhole() bool {
	routes, _ := routeList(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, blackhole(), netlink.RT_FILTER_DST|netlink.RT_FILTER_TYPE)
	})
	return len(routes) > 0
}

// A netlink dump is interrupted when links or routes change meanwhile,
// which other clusters on the machine do all the time: dump again.
const dumpRetries = 20

func linkList() ([]netlink.Link, error) {
	for i := 0; ; i++ {
		links, err := netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == dumpRetries {
			return links, err
		}
	}
}

func routeList(list func() ([]netlink.Route, error)) ([]netlink.Route, error) {
	for i := 0; ; i++ {
		routes, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == dumpRetries {
			return routes, err
		}
	}
}
