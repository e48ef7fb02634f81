package podnet

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/coreos/go-iptables/iptables"
)

// LockDir holds the machine-wide locks: one file per block, held (flock)
// by the cluster that owns it for its whole life, and route.lock, held
// while the shared blackhole route is added or removed. It is under /run,
// not $TMPDIR, so that clusters started with different TMPDIRs still see
// each other.
var LockDir = "/run/localkube/blocks"

func blockLockPath(b int) string { return filepath.Join(LockDir, fmt.Sprintf("%d.lock", b)) }

// tryLock takes path's exclusive lock without blocking.
func tryLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// LockBlock picks and locks a block for the cluster in dir: the previous
// one if free, else one derived from dir, else the next free one. The
// returned file holds the lock until closed or until the process ends.
func LockBlock(dir string, previous int) (int, *os.File, error) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return 0, nil, err
	}
	h := fnv.New32a()
	h.Write([]byte(dir))
	start := BlockMin + int(h.Sum32()%(BlockMax-BlockMin))
	candidates := []int{}
	if previous >= BlockMin && previous < BlockMax {
		candidates = append(candidates, previous)
	}
	for i := 0; i < BlockMax-BlockMin; i++ {
		candidates = append(candidates, BlockMin+(start-BlockMin+i)%(BlockMax-BlockMin))
	}
	for _, b := range candidates {
		if f, err := tryLock(blockLockPath(b)); err == nil {
			return b, f, nil
		}
	}
	return 0, nil, fmt.Errorf("no free pod network block in 198.18.%d-%d.0/24: too many local clusters", BlockMin, BlockMax-1)
}

// TryLockBlock locks block b if no cluster holds it (for `down` after a
// crash: the block may already belong to a newer cluster).
func TryLockBlock(b int) (*os.File, error) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, err
	}
	return tryLock(blockLockPath(b))
}

func withRouteLock(fn func() error) error {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(LockDir, "route.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	return fn()
}

// otherBlocksInUse reports whether a cluster other than block self holds
// its block's lock.
func otherBlocksInUse(self int) bool {
	for b := BlockMin; b < BlockMax; b++ {
		if b == self {
			continue
		}
		f, err := os.Open(blockLockPath(b))
		if err != nil {
			continue // never used
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return true
		}
	}
	return false
}

// Forwarding rules. The node namespace forwards between the pods and the
// host, and only there: its FORWARD chain drops anything with an address
// outside Range (it has no route elsewhere either; the rules hold if one
// appears). The host does not forward for us (localkube never turns its
// ip_forward on), but if something else does, nothing with an address
// outside Range crosses the host link. The node's rules die with its
// namespace; the host's are removed by Cleanup.
func forwardRules(iface string) [][]string {
	comment := []string{"-m", "comment", "--comment", "localkube " + iface}
	return [][]string{
		append([]string{"-i", iface, "!", "-d", Range}, append(comment, "-j", "DROP")...),
		append([]string{"-o", iface, "!", "-s", Range}, append(comment, "-j", "DROP")...),
	}
}

// nodeForwardTable holds the node namespace's drops: mangle's FORWARD runs
// before filter's, where kube-proxy puts its chains first (they ACCEPT
// established and masqueraded traffic), so ours always decide first.
const nodeForwardTable = "mangle"

// nodeForwardRules are the node namespace's: whatever the interface.
func nodeForwardRules() [][]string {
	comment := []string{"-m", "comment", "--comment", "localkube node"}
	return [][]string{
		append([]string{"!", "-d", Range}, append(comment, "-j", "DROP")...),
		append([]string{"!", "-s", Range}, append(comment, "-j", "DROP")...),
	}
}

func ipt() *iptables.IPTables {
	t, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil // no iptables binary: see HaveIPTables
	}
	return t
}

// HaveIPTables reports whether the iptables command is installed.
func HaveIPTables() bool { return ipt() != nil }

func (n *Network) addForwardRules() error {
	t := ipt()
	if t == nil {
		return nil
	}
	for _, r := range forwardRules(n.HostLink) {
		if err := t.InsertUnique("filter", "FORWARD", 1, r...); err != nil {
			return fmt.Errorf("iptables FORWARD rule for %s: %w", n.HostLink, err)
		}
	}
	// The iptables command inherits the namespace of the thread that
	// starts it.
	return Enter(n.NodeNetnsPath(), func() error {
		for _, r := range nodeForwardRules() {
			if err := t.InsertUnique(nodeForwardTable, "FORWARD", 1, r...); err != nil {
				return fmt.Errorf("iptables %s FORWARD rule in %s: %w", nodeForwardTable, n.NodeNetns, err)
			}
		}
		// Added before kube-proxy starts, which puts its chains first: what
		// reaches these is a ClusterIP no Service has. A TCP reset, not
		// ICMP: a connect gets "refused" at once, while an ICMP error that
		// arrives during the connect call only counts after a retransmit.
		comment := []string{"-m", "comment", "--comment", "localkube free ClusterIP"}
		for _, r := range [][]string{
			append(append([]string{"-d", n.ServiceCIDR.String(), "-p", "tcp"}, comment...), "-j", "REJECT", "--reject-with", "tcp-reset"),
			append(append([]string{"-d", n.ServiceCIDR.String()}, comment...), "-j", "REJECT", "--reject-with", "icmp-net-unreachable"),
		} {
			if err := t.AppendUnique("filter", "FORWARD", r...); err != nil {
				return fmt.Errorf("iptables FORWARD rule in %s: %w", n.NodeNetns, err)
			}
		}
		return nil
	})
}

// NodeForwardRules lists the node namespace's mangle FORWARD rules (tests
// check that the drops are there).
func (n *Network) NodeForwardRules() ([]string, error) {
	t := ipt()
	if t == nil {
		return nil, errors.New("no iptables command")
	}
	var rules []string
	err := Enter(n.NodeNetnsPath(), func() error {
		var err error
		rules, err = t.List(nodeForwardTable, "FORWARD")
		return err
	})
	return rules, err
}

func (n *Network) delForwardRules() error {
	t := ipt()
	if t == nil {
		return nil
	}
	// The bridge's rules are those of a localkube before the node namespace.
	for _, iface := range []string{n.HostLink, n.Bridge} {
		for _, r := range forwardRules(iface) {
			if err := t.DeleteIfExists("filter", "FORWARD", r...); err != nil {
				return fmt.Errorf("delete iptables FORWARD rule for %s: %w", iface, err)
			}
		}
	}
	return nil
}

func (n *Network) forwardRulesLeft() []string {
	t := ipt()
	if t == nil {
		return nil
	}
	rules, _ := t.List("filter", "FORWARD")
	var out []string
	for _, r := range rules {
		for _, iface := range []string{n.HostLink, n.Bridge} {
			if strings.Contains(r, "localkube "+iface+"\"") || strings.Contains(r, "localkube "+iface+" ") {
				out = append(out, "iptables "+r)
			}
		}
	}
	return out
}
