//go:build integration

package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"meshtls/contract"
	"meshtls/proxy/discovery"
)

// The netns test re-runs this test binary as its pods' processes: the
// proxy (with a static resolver), the app and a client.
const helperEnv = "MESHTLS_PROXY_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(m.Run())
}

// watchParent exits a helper when the test that started it is gone, even
// killed with SIGKILL.
func watchParent() {
	parent, _ := strconv.Atoi(os.Getenv("MESHTLS_TEST_PARENT"))
	go func() {
		for {
			if os.Getppid() != parent {
				os.Exit(3)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
}

func runHelper(mode string) int {
	watchParent()
	switch mode {
	case "proxy":
		cfg, err := FromEnv(os.Getenv)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		var eps map[string][]struct {
			Addr, Identity string
			Labels         map[string]string
		}
		if err := json.Unmarshal([]byte(os.Getenv("MESHTLS_TEST_ENDPOINTS")), &eps); err != nil {
			fmt.Fprintln(os.Stderr, "endpoints:", err)
			return 2
		}
		res := discovery.Static{}
		for k, list := range eps {
			for _, e := range list {
				res[k] = append(res[k], discovery.Endpoint{Addr: netip.MustParseAddrPort(e.Addr), Identity: e.Identity, Labels: e.Labels})
			}
		}
		cfg.Resolver = res
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if err := New(cfg).Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case "app":
		l, err := net.Listen("tcp", os.Getenv("ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		_ = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "app saw %s %s from %s", r.Host, r.URL.Path, r.RemoteAddr)
		}))
		return 0
	case "get":
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(os.Getenv("URL"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d\n%s", resp.StatusCode, b)
		return 0
	}
	return 2
}

const nsPrefix = "mtlsproxy-"

// cleanStaleNamespaces deletes namespaces left by runs that were killed:
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

// proxyInitRules are the nat rules cmd/proxy-init installs (inbound to
// 4143 except 4190 and 4191, outbound to 4140 except the proxy's uid and
// loopback), written here because the proxy's tests must not depend on
// proxy-init.
func proxyInitRules() string {
	return fmt.Sprintf(`*nat
:PROXY_INIT_REDIRECT - [0:0]
:PROXY_INIT_OUTPUT - [0:0]
-A PROXY_INIT_REDIRECT -p tcp -m multiport --dports %d,%d -j RETURN
-A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-ports %d
-A PREROUTING -j PROXY_INIT_REDIRECT
-A PROXY_INIT_OUTPUT -m owner --uid-owner %d -j RETURN
-A PROXY_INIT_OUTPUT -o lo -j RETURN
-A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-ports %d
-A OUTPUT -j PROXY_INIT_OUTPUT
COMMIT
`, contract.TapPort, contract.AdminPort, contract.InboundPort, contract.ProxyUID, contract.OutboundPort)
}

// TestTransparentInNetworkNamespaces runs two pods as real network
// namespaces joined by a veth pair, each with proxy-init's iptables rules
// and a proxy running as uid 2102: the client app's plain request to the
// server's pod IP is redirected to its proxy, which finds the original
// destination with SO_ORIGINAL_DST and sends it over mTLS to the server's
// pod IP, where iptables redirects it to the server's proxy. The same
// over IPv6 (ip6tables rules, IP6T_SO_ORIGINAL_DST, the proxies' IPv6
// listeners).
func TestTransparentInNetworkNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and iptables")
	}
	for _, tool := range []string{"ip", "iptables-restore", "ip6tables-restore", "setpriv", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	cleanStaleNamespaces()
	pid := os.Getpid()
	nsA, nsB := fmt.Sprintf("%sa-%d", nsPrefix, pid), fmt.Sprintf("%sb-%d", nsPrefix, pid)
	vethA, vethB := fmt.Sprintf("mtpa%d", pid%100000), fmt.Sprintf("mtpb%d", pid%100000)
	subnet := fmt.Sprintf("10.254.%d", pid%250)
	ipA, ipB := subnet+".1", subnet+".2"
	subnet6 := fmt.Sprintf("fd00:254:%x::", pid%250)
	ip6A, ip6B := subnet6+"1", subnet6+"2"
	t.Cleanup(func() {
		// Deleting a namespace takes its veth end and its rules with it.
		_ = exec.Command("ip", "netns", "delete", nsA).Run()
		_ = exec.Command("ip", "netns", "delete", nsB).Run()
		_ = exec.Command("ip", "link", "delete", vethA).Run()
	})
	run(t, "ip", "netns", "add", nsA)
	run(t, "ip", "netns", "add", nsB)
	run(t, "ip", "link", "add", vethA, "type", "veth", "peer", "name", vethB)
	run(t, "ip", "link", "set", vethA, "netns", nsA)
	run(t, "ip", "link", "set", vethB, "netns", nsB)
	for _, x := range []struct{ ns, dev, ip, ip6 string }{{nsA, vethA, ipA, ip6A}, {nsB, vethB, ipB, ip6B}} {
		run(t, "ip", "-n", x.ns, "addr", "add", x.ip+"/24", "dev", x.dev)
		run(t, "ip", "-n", x.ns, "addr", "add", x.ip6+"/64", "dev", x.dev, "nodad")
		run(t, "ip", "-n", x.ns, "link", "set", x.dev, "up")
		run(t, "ip", "-n", x.ns, "link", "set", "lo", "up")
		// proxy-init writes the same rules for IPv6 (nft's inet table,
		// or ip6tables-restore).
		for _, restore := range []string{"iptables-restore", "ip6tables-restore"} {
			cmd := exec.Command("ip", "netns", "exec", x.ns, restore, "--noflush")
			cmd.Stdin = strings.NewReader(proxyInitRules())
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s in %s: %v\n%s", restore, x.ns, err, out)
			}
		}
	}

	// Files the proxies (uid 2102) can read: the test binary and the
	// credentials, in a directory open to them.
	dir, err := os.MkdirTemp("", "mtlsproxy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o755)
	self, _ := os.Executable()
	bin := filepath.Join(dir, "helper")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	creds := func(id string) []string {
		d := filepath.Join(dir, strings.Split(id, ".")[0])
		leaf := getPKI(t).issue(t, id)
		writeVolume(t, filepath.Join(d, "identity"), map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM})
		writeVolume(t, filepath.Join(d, "anchors"), map[string][]byte{"trust-anchors.pem": getPKI(t).root.CertPEM})
		_ = filepath.Walk(dir, func(p string, info os.FileInfo, _ error) error {
			if info != nil && info.IsDir() {
				_ = os.Chmod(p, 0o755)
			}
			return nil
		})
		return []string{
			contract.EnvTLSPodIdentity + "=" + id,
			contract.EnvTLSCert + "=" + filepath.Join(d, "identity", "tls.crt"),
			contract.EnvTLSPrivateKey + "=" + filepath.Join(d, "identity", "tls.key"),
			contract.EnvTLSTrustAnchors + "=" + filepath.Join(d, "anchors", "trust-anchors.pem"),
			contract.EnvTLSControllerID + "=" + idCtrl,
		}
	}
	start := func(ns string, asProxy bool, env ...string) {
		args := []string{"netns", "exec", ns}
		if asProxy {
			args = append(args, "setpriv", fmt.Sprintf("--reuid=%d", contract.ProxyUID), fmt.Sprintf("--regid=%d", contract.ProxyUID), "--clear-groups")
		}
		cmd := exec.Command("ip", append(args, bin)...)
		cmd.Env = append(os.Environ(), append(env, "MESHTLS_TEST_PARENT="+strconv.Itoa(pid))...)
		cmd.Stdout = testWriter{t}
		cmd.Stderr = testWriter{t}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
	}
	proxyEnv := func(ip string) []string {
		return []string{helperEnv + "=proxy",
			contract.EnvInboundListenAddr + "=0.0.0.0:4143", contract.EnvOutboundListenAddr + "=127.0.0.1:4140",
			contract.EnvAdminListenAddr + "=0.0.0.0:4191", contract.EnvTapListenAddr + "=0.0.0.0:4190",
			contract.EnvPodIP + "=" + ip}
	}
	target := ipB + ":8080"
	target6 := "[" + ip6B + "]:8080"
	ep := func(addr string) []map[string]any {
		return []map[string]any{{"Addr": addr, "Identity": idB, "Labels": map[string]string{"namespace": "ns", "deployment": "b"}}}
	}
	eps, _ := json.Marshal(map[string]any{target: ep(target), target6: ep(target6)})
	start(nsB, false, helperEnv+"=app", "ADDR=0.0.0.0:8080")
	start(nsB, true, append(append(proxyEnv(ipB), creds(idB)...), "MESHTLS_TEST_ENDPOINTS={}")...)
	start(nsA, true, append(append(proxyEnv(ipA), creds(idA)...), "MESHTLS_TEST_ENDPOINTS="+string(eps))...)

	// get runs the client helper in ns as root, so its traffic is
	// redirected like an application's.
	get := func(ns, url string) (int, string) {
		cmd := exec.Command("ip", "netns", "exec", ns, bin)
		cmd.Env = append(os.Environ(), helperEnv+"=get", "URL="+url, "MESHTLS_TEST_PARENT="+strconv.Itoa(pid))
		out, err := cmd.Output()
		if err != nil {
			return 0, err.Error()
		}
		code, body, _ := strings.Cut(string(out), "\n")
		n, _ := strconv.Atoi(code)
		return n, body
	}
	eventually(t, 20*time.Second, "both proxies ready", func() bool {
		a, _ := get(nsA, "http://127.0.0.1:4191/ready")
		b, _ := get(nsB, "http://127.0.0.1:4191/ready")
		return a == 200 && b == 200
	})
	code, body := get(nsA, "http://"+target+"/through-iptables")
	if code != 200 || !strings.Contains(body, "app saw "+target+" /through-iptables") {
		t.Fatalf("through both proxies: %d %q", code, body)
	}
	scrape := func(ns string) map[string]float64 {
		_, body := get(ns, "http://127.0.0.1:4191/metrics")
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for name, f := range fams {
			for _, m := range f.GetMetric() {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, l.GetName()+"="+l.GetValue())
				}
				out[name+"{"+strings.Join(ls, ",")+"}"] += m.GetCounter().GetValue()
			}
		}
		return out
	}
	find := func(series map[string]float64, name string, parts ...string) float64 {
		var sum float64
	next:
		for k, v := range series {
			if !strings.HasPrefix(k, name+"{") {
				continue
			}
			for _, p := range parts {
				if !strings.Contains(k, p) {
					continue next
				}
			}
			sum += v
		}
		return sum
	}
	// IPv6 the same way: proxy-init redirects it to [::1]:4140 and to
	// the inbound port, and the proxies read IP6T_SO_ORIGINAL_DST.
	code, body = get(nsA, "http://"+target6+"/through-ip6tables")
	if code != 200 || !strings.Contains(body, "app saw "+target6+" /through-ip6tables") {
		t.Errorf("IPv6 through both proxies: %d %q", code, body)
	}
	mb := scrape(nsB)
	for _, dst := range []string{target, target6} {
		if got := find(mb, "request_total", "direction=inbound", "tls=true", "client_id="+idA, "authority="+dst); got != 1 {
			t.Errorf("server proxy: inbound mTLS requests from %s to %s = %v\n%v", idA, dst, got, mb)
		}
	}
	ma := scrape(nsA)
	if got := find(ma, "request_total", "direction=outbound", "tls=true", "server_id="+idB, "dst_deployment=b"); got != 2 {
		t.Errorf("client proxy: outbound mTLS requests to %s = %v, want 2 (IPv4 and IPv6)", idB, got)
	}
	if got := find(ma, "request_total", "tls=no_identity"); got != 0 {
		t.Errorf("client proxy: %v requests in plain text", got)
	}

	// openssl from the client pod straight at the server's pod IP and
	// inbound port: its TLS passes the client proxy as opaque bytes and
	// the server proxy serves its chain, verified against the bundle.
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, getPKI(t).root.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", nsA, "openssl", "s_client", "-connect", ipB+":4143", "-servername", idB,
		"-CAfile", ca, "-verify_hostname", idB, "-verify_return_error",
		"-cert", filepath.Join(dir, "a", "identity", "tls.crt"), "-key", filepath.Join(dir, "a", "identity", "tls.key"))
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verify return code: 0 (ok)") || !strings.Contains(string(out), "Verified peername: "+idB) {
		t.Fatalf("openssl s_client -connect %s:4143 -servername %s: %v\n%s", ipB, idB, err, out)
	}

	// An application calling the proxy's own outbound port (an SSRF, a
	// mistaken HTTP_PROXY): loopback is not redirected, so the real
	// SO_ORIGINAL_DST is the listener itself. It is refused with 508, not
	// dialled again and again until file descriptors run out.
	if code, body := get(nsA, "http://127.0.0.1:4140/loop"); code != http.StatusLoopDetected {
		t.Errorf("GET http://127.0.0.1:4140/ in the client pod: %d %q, want 508", code, body)
	}
	if got := find(scrape(nsA), "proxy_connection_errors_total", "direction=outbound", "reason=loop"); got != 1 {
		t.Errorf("client proxy: loops counted %v, want 1", got)
	}
}
