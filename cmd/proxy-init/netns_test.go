//go:build integration

package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The netns test runs this test binary as proxy-init itself (helperEnv
// "main") and as a client of a given uid (helperEnv "dial").
const helperEnv = "PROXY_INIT_TEST_AS"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "main":
		main()
		os.Exit(0)
	case "dial":
		line, err := dialAndRead(os.Getenv("ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Print(line)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const nsPrefix = "mtlspinit-"

// cleanStaleNamespaces deletes the namespaces of runs that were killed:
// their names end in the creating test's pid.
func cleanStaleNamespaces() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.HasPrefix(name, nsPrefix) {
			continue
		}
		parts := strings.Split(name, "-")
		pid, err := strconv.Atoi(parts[len(parts)-1])
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			_ = exec.Command("ip", "netns", "delete", name).Run()
		}
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNetns runs fn on a thread that has entered the namespace; the thread
// is never unlocked, so it dies with fn's goroutine rather than going back
// to the pool inside the namespace. Sockets fn makes stay in it.
func inNetns(t *testing.T, name string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// origDst is the connection's destination before any nat rule rewrote it
// (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST), as the proxy reads it.
func origDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	remote := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	var out netip.AddrPort
	var gerr error
	err = raw.Control(func(fd uintptr) {
		const soOriginalDst = 80 // SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST
		var buf [28]byte         // sockaddr_in6, the larger
		size := uint32(len(buf))
		level := unix.SOL_IP
		if remote.Is6() {
			level = unix.SOL_IPV6
		}
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst, uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			gerr = errno
			return
		}
		port := binary.BigEndian.Uint16(buf[2:4])
		if remote.Is6() {
			out = netip.AddrPortFrom(netip.AddrFrom16([16]byte(buf[8:24])), port)
		} else {
			out = netip.AddrPortFrom(netip.AddrFrom4([4]byte(buf[4:8])), port)
		}
	})
	if err != nil {
		return out, err
	}
	return out, gerr
}

// serve answers each connection with one line: which listener took it and
// the destination the client dialled.
func serve(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			dst, err := origDst(c.(*net.TCPConn))
			if errors.Is(err, unix.ENOENT) {
				// No nat in this namespace: the destination is where
				// the connection landed.
				dst, err = c.LocalAddr().(*net.TCPAddr).AddrPort(), nil
				dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
			}
			if err != nil {
				fmt.Fprintf(c, "%s error %v\n", name, err)
				return
			}
			fmt.Fprintf(c, "%s %s\n", name, dst)
		}()
	}
}

func dialAndRead(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return bufio.NewReader(c).ReadString('\n')
}

// TestRedirectsInANetworkNamespace runs proxy-init (twice, as a restarted
// init container would) in a pod-like network namespace joined to a peer
// namespace by a veth pair, with each backend, then checks its rules with
// nft or iptables-save and with real connections: which listener answers
// and what SO_ORIGINAL_DST it reads, over IPv4 and IPv6.
func TestRedirectsInANetworkNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and nat rules")
	}
	for _, tool := range []string{"ip", "nft", "setpriv", "iptables-save", "ip6tables-save", "iptables-restore", "ip6tables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v (make deps)", tool, err)
		}
	}
	cleanStaleNamespaces()
	// The uid 2102 client must be able to run this binary.
	dir, err := os.MkdirTemp("", "mtlspinit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o755)
	self, _ := os.Executable()
	bin := filepath.Join(dir, "proxy-init.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, firewall := range []string{"nft", "iptables"} {
		t.Run(firewall, func(t *testing.T) { testRedirects(t, bin, firewall) })
	}
}

func testRedirects(t *testing.T, bin, firewall string) {
	pid := os.Getpid()
	pod, peer := fmt.Sprintf("%s%s-pod-%d", nsPrefix, firewall, pid), fmt.Sprintf("%s%s-peer-%d", nsPrefix, firewall, pid)
	vethPod, vethPeer := fmt.Sprintf("mpi%c%da", firewall[0], pid%100000), fmt.Sprintf("mpi%c%db", firewall[0], pid%100000)
	t.Cleanup(func() {
		// Deleting a namespace takes its veth end, its rules and its
		// sockets with it.
		_ = exec.Command("ip", "netns", "delete", pod).Run()
		_ = exec.Command("ip", "netns", "delete", peer).Run()
	})
	run(t, "ip", "netns", "add", pod)
	run(t, "ip", "netns", "add", peer)
	run(t, "ip", "link", "add", vethPod, "netns", pod, "type", "veth", "peer", "name", vethPeer, "netns", peer)
	const podIP, peerIP, podIP6, peerIP6 = "10.252.0.2", "10.252.0.1", "fd52::2", "fd52::1"
	for _, x := range []struct{ ns, dev, ip, ip6 string }{{pod, vethPod, podIP, podIP6}, {peer, vethPeer, peerIP, peerIP6}} {
		run(t, "ip", "-n", x.ns, "addr", "add", x.ip+"/24", "dev", x.dev)
		run(t, "ip", "-n", x.ns, "addr", "add", x.ip6+"/64", "dev", x.dev, "nodad")
		run(t, "ip", "-n", x.ns, "link", "set", x.dev, "up")
		run(t, "ip", "-n", x.ns, "link", "set", "lo", "up")
	}

	args := []string{"--firewall", firewall, "--incoming-proxy-port", "4143", "--outgoing-proxy-port", "4140", "--proxy-uid", "2102",
		"--inbound-ports-to-ignore", "4190,4191", "--outbound-ports-to-ignore", "9999", "--redirect-local-traffic"}
	proxyInit := func() string {
		cmd := exec.Command("ip", append([]string{"netns", "exec", pod, bin}, args...)...)
		cmd.Env = append(os.Environ(), helperEnv+"=main")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("proxy-init %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	first, second := proxyInit(), proxyInit()
	t.Logf("proxy-init:\n%s", first)

	// The rules, as the backend's own tools list them, once only after
	// the second run.
	switch firewall {
	case "nft":
		if !strings.Contains(second, "replaced") {
			t.Errorf("the second run did not say it replaced the table:\n%s", second)
		}
		var sim strings.Builder
		cmd := newRootCmd(&sim)
		cmd.SetArgs(append(append([]string{}, args...), "--simulate"))
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		want := strings.SplitN(sim.String(), "\n", 3)[2]
		listed := run(t, "ip", "netns", "exec", pod, "nft", "list", "ruleset")
		if listed != want {
			t.Errorf("nft list ruleset after two runs:\n%s\nwant exactly what --simulate printed:\n%s", listed, want)
		}
	case "iptables":
		if !strings.Contains(second, "already in place") {
			t.Errorf("the second run did not find its rules:\n%s", second)
		}
		for _, save := range []string{"iptables-save", "ip6tables-save"} {
			out := run(t, "ip", "netns", "exec", pod, save, "-t", "nat")
			for _, comment := range []string{"install-proxy-init-prerouting", "install-proxy-init-output", "redirect-non-loopback-local-traffic", "redirect-all-outgoing-to-proxy-port"} {
				if n := strings.Count(out, "proxy-init/"+comment); n != 1 {
					t.Errorf("%s shows %s %d times, want once:\n%s", save, comment, n, out)
				}
			}
		}
	}

	// Listeners: the proxy's ports and an ignored port in the pod; the
	// peer pod's service (80) and its ignored port (9999).
	var listeners []net.Listener
	t.Cleanup(func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	})
	listen := func(ns, addr, name string) {
		inNetns(t, ns, func() error {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen %s in %s: %w", addr, ns, err)
			}
			listeners = append(listeners, l)
			go serve(l, name)
			return nil
		})
	}
	listen(pod, ":4143", "inbound")
	listen(pod, "127.0.0.1:4140", "outbound")
	listen(pod, "[::1]:4140", "outbound")
	listen(pod, ":4191", "pod-app")
	listen(pod, ":5000", "pod-app")
	listen(peer, ":80", "peer")
	listen(peer, ":9999", "peer")

	dialFrom := func(ns, addr string) string {
		var line string
		inNetns(t, ns, func() error {
			var err error
			line, err = dialAndRead(addr)
			if err != nil {
				line = "error " + err.Error()
			}
			return nil
		})
		return strings.TrimSpace(line)
	}
	// dialAsProxy dials from the pod as the proxy's uid.
	dialAsProxy := func(addr string) string {
		cmd := exec.Command("ip", "netns", "exec", pod, "setpriv", "--reuid=2102", "--regid=2102", "--clear-groups", bin)
		cmd.Env = append(os.Environ(), helperEnv+"=dial", "ADDR="+addr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "error " + strings.TrimSpace(string(out))
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		what, got, want string
	}{
		{"inbound to the app's port", dialFrom(peer, podIP+":8080"), "inbound " + podIP + ":8080"},
		{"inbound over IPv6", dialFrom(peer, "["+podIP6+"]:8080"), "inbound [" + podIP6 + "]:8080"},
		{"inbound to an ignored port", dialFrom(peer, podIP+":4191"), "pod-app " + podIP + ":4191"},
		{"the app's outbound", dialFrom(pod, peerIP+":80"), "outbound " + peerIP + ":80"},
		{"the app's outbound over IPv6", dialFrom(pod, "["+peerIP6+"]:80"), "outbound [" + peerIP6 + "]:80"},
		{"the app's outbound to an ignored port", dialFrom(pod, peerIP+":9999"), "peer " + peerIP + ":9999"},
		{"the app on loopback", dialFrom(pod, "127.0.0.1:5000"), "pod-app 127.0.0.1:5000"},
		{"the app to its own pod IP", dialFrom(pod, podIP+":5000"), "pod-app " + podIP + ":5000"},
		{"the proxy's own outbound", dialAsProxy(peerIP + ":80"), "peer " + peerIP + ":80"},
		{"the proxy's own outbound over IPv6", dialAsProxy("[" + peerIP6 + "]:80"), "peer [" + peerIP6 + "]:80"},
		{"the proxy to its own pod IP (a Service routing back to this pod)", dialAsProxy(podIP + ":8080"), "inbound " + podIP + ":8080"},
		{"the proxy to its own pod IP over IPv6", dialAsProxy("[" + podIP6 + "]:8080"), "inbound [" + podIP6 + "]:8080"},
		{"the proxy on loopback", dialAsProxy("127.0.0.1:5000"), "pod-app 127.0.0.1:5000"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: answered %q, want %q", tc.what, tc.got, tc.want)
		}
	}

	// Nothing reached the host's namespace.
	if out, err := exec.Command("nft", "list", "table", "inet", nftTable).CombinedOutput(); err == nil {
		t.Errorf("proxy-init's table leaked into the host's namespace:\n%s", out)
	}
}
