// Command proxy-bench measures the proxy against nginx and haproxy, each as
// a client-side + server-side pair in front of one backend: latency under
// a constant request rate (open loop: latency is counted from when each
// request was due, so a stall is not hidden), maximum throughput (closed
// loop), CPU per 1,000 requests and RSS of each proxy process.
//
// Usage: go run ./bench/proxy [-duration 10s] [-rates 1000,5000]
package main

import (
	"context"
	"crypto/tls"
	"flag"
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
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"meshtls/ca/pki"
	"meshtls/proxy"
	"meshtls/proxy/discovery"
)

const (
	idClient = "client.deployment.bench.linkerd-managed.linkerd.svc.cluster.local"
	idServer = "server.deployment.bench.linkerd-managed.linkerd.svc.cluster.local"
	virtual  = "10.255.0.1:80" // the "pod IP" the client app addresses
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "run-proxy" {
		os.Exit(runProxy(os.Args[2:]))
	}
	duration := flag.Duration("duration", 10*time.Second, "length of each measured run")
	rates := flag.String("rates", "1000,5000", "constant request rates to measure")
	conns := flag.Int("max-conns", 32, "concurrent connections for the maximum-throughput run")
	only := flag.String("only", "", "comma-separated subset of setups (direct,plain,mtls,nginx,haproxy)")
	flag.Parse()
	if err := bench(*duration, *rates, *conns, *only); err != nil {
		fmt.Fprintln(os.Stderr, "proxy-bench:", err)
		os.Exit(1)
	}
}

// runProxy is one of our proxies as its own process, so its CPU and RSS
// are its own. Without iptables, the original destination is given.
func runProxy(args []string) int {
	fs := flag.NewFlagSet("run-proxy", flag.ExitOnError)
	role := fs.String("role", "", "client or server")
	listen := fs.String("listen", "", "listen address")
	to := fs.String("to", "", "server: backend address; client: server proxy address")
	dir := fs.String("dir", "", "credentials directory (empty: plain text)")
	_ = fs.Parse(args)
	cfg := proxy.Config{AdminAddr: "127.0.0.1:0", Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	target := netip.MustParseAddrPort(*to)
	fixed := netip.MustParseAddrPort(virtual)
	if *role == "server" {
		cfg.InboundAddr = *listen
		fixed = target
	} else {
		cfg.OutboundAddr = *listen
	}
	cfg.OrigDst = func(net.Conn, string) (netip.AddrPort, error) { return fixed, nil }
	identity := ""
	if *dir != "" {
		identity = idServer
		if *role == "client" {
			identity = idClient
		}
		cfg.Identity = identity
		cfg.CertFile = filepath.Join(*dir, strings.Split(identity, ".")[0]+".crt")
		cfg.KeyFile = filepath.Join(*dir, strings.Split(identity, ".")[0]+".key")
		cfg.TrustAnchorsFile = filepath.Join(*dir, "ca.pem")
	}
	if *role == "client" {
		serverID := ""
		if *dir != "" {
			serverID = idServer
		}
		cfg.Resolver = discovery.Static{virtual: {{Addr: target, Identity: serverID}}}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if prof := os.Getenv("PROXY_BENCH_CPUPROFILE"); prof != "" {
		f, err := os.Create(prof + "." + *role)
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := proxy.New(cfg).Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type setup struct {
	name  string
	entry string // where the load generator sends requests
	pids  []int  // client-side then server-side process
	stop  func() // stops the pair
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

func start(name string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, cmd.Start()
}

func waitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listening on %s after 10s", addr)
}

func bench(duration time.Duration, rateList string, maxConns int, only string) error {
	dir, err := os.MkdirTemp("", "proxy-bench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if err := writePKI(dir); err != nil {
		return err
	}
	backend := freeAddr()
	bl, err := net.Listen("tcp", backend)
	if err != nil {
		return err
	}
	body := []byte("ok\n")
	bsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) })}
	go func() { _ = bsrv.Serve(bl) }()
	defer func() { _ = bsrv.Close() }()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	ours := func(name, credDir string) (*setup, error) {
		sAddr, cAddr := freeAddr(), freeAddr()
		sargs := []string{"run-proxy", "-role", "server", "-listen", sAddr, "-to", backend}
		cargs := []string{"run-proxy", "-role", "client", "-listen", cAddr, "-to", sAddr}
		if credDir != "" {
			sargs = append(sargs, "-dir", credDir)
			cargs = append(cargs, "-dir", credDir)
		}
		return pair(name, cAddr, sAddr, []string{self}, cargs, []string{self}, sargs)
	}
	setups := []func() (*setup, error){
		func() (*setup, error) { return &setup{name: "direct (no proxy)", entry: backend, stop: func() {}}, nil },
		func() (*setup, error) { return ours("meshtls pair, plain text", "") },
		func() (*setup, error) { return ours("meshtls pair, mTLS", dir) },
		func() (*setup, error) { return nginxPair(dir, backend) },
		func() (*setup, error) { return haproxyPair(dir, backend) },
	}
	keys := []string{"direct", "plain", "mtls", "nginx", "haproxy"}
	var rates []int
	for _, r := range strings.Split(rateList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil {
			return fmt.Errorf("bad rate %q", r)
		}
		rates = append(rates, n)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("date: %s\nmachine: %d CPUs (%s), %s, load average at start: %s\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), cpuModel(), runtime.Version(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Printf("each run: %s after a 2s warm-up; HTTP/1.1 keep-alive GETs of a 3-byte body\n\n", duration)
	fmt.Println("| setup | rate | achieved rps | p50 ms | p99 ms | p99.9 ms | errors | CPU ms per 1k req (client+server) | RSS MB client / server |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for i, mk := range setups {
		if only != "" && !slices.Contains(strings.Split(only, ","), keys[i]) {
			continue
		}
		s, err := mk()
		if err != nil {
			return fmt.Errorf("%s: %w", keys[i], err)
		}
		for _, rate := range rates {
			r := measure(s, rate, 0, duration)
			fmt.Printf("| %s | %d/s | %.0f | %.3f | %.3f | %.3f | %d | %s | %s |\n", s.name, rate, r.rps, r.p(0.5), r.p(0.99), r.p(0.999), r.errors, r.cpu(), r.rss())
		}
		r := measure(s, 0, maxConns, duration)
		fmt.Printf("| %s | max (%d conns) | **%.0f** | %.3f | %.3f | %.3f | %d | %s | %s |\n", s.name, maxConns, r.rps, r.p(0.5), r.p(0.99), r.p(0.999), r.errors, r.cpu(), r.rss())
		s.stop()
	}
	return nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			_, v, _ := strings.Cut(line, ":")
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func pair(name, entry, serverAddr string, cbin, cargs, sbin, sargs []string) (*setup, error) {
	srv, err := start(sbin[0], append(sbin[1:], sargs...)...)
	if err != nil {
		return nil, err
	}
	if err := waitListening(serverAddr); err != nil {
		_ = srv.Process.Kill()
		return nil, err
	}
	cl, err := start(cbin[0], append(cbin[1:], cargs...)...)
	if err != nil {
		_ = srv.Process.Kill()
		return nil, err
	}
	if err := waitListening(entry); err != nil {
		_ = srv.Process.Kill()
		_ = cl.Process.Kill()
		return nil, err
	}
	return &setup{name: name, entry: entry, pids: []int{cl.Process.Pid, srv.Process.Pid}, stop: func() {
		for _, c := range []*exec.Cmd{cl, srv} {
			_ = c.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = c.Process.Kill()
				<-done
			}
		}
	}}, nil
}

func writePKI(dir string) error {
	root, _, err := pki.NewRoot("bench root", 24*time.Hour, time.Now())
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.pem": root.CertPEM}
	for _, id := range []string{idClient, idServer} {
		leaf, err := root.Issue(id, 24*time.Hour, time.Now())
		if err != nil {
			return err
		}
		short := strings.Split(id, ".")[0]
		files[short+".crt"] = leaf.CertPEM
		files[short+".key"] = leaf.KeyPEM
		files[short+".pem"] = append(append([]byte{}, leaf.CertPEM...), leaf.KeyPEM...) // haproxy's crt
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func nginxPair(dir, backend string) (*setup, error) {
	sAddr, cAddr := freeAddr(), freeAddr()
	common := `worker_processes 2;
pid %s;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %s;
  proxy_temp_path %s;
  upstream up { server %s; keepalive 256; }
  server {
    listen %s %s;
    %s
    location / {
      proxy_pass %s://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      %s
    }
  }
}
`
	serverTLS := fmt.Sprintf("ssl_certificate %[1]s/server.crt; ssl_certificate_key %[1]s/server.key; ssl_client_certificate %[1]s/ca.pem; ssl_verify_client on; ssl_protocols TLSv1.3;", dir)
	clientTLS := fmt.Sprintf("proxy_ssl_certificate %[1]s/client.crt; proxy_ssl_certificate_key %[1]s/client.key; proxy_ssl_trusted_certificate %[1]s/ca.pem; proxy_ssl_verify on; proxy_ssl_name %[2]s; proxy_ssl_server_name on; proxy_ssl_session_reuse on; proxy_ssl_protocols TLSv1.3;", dir, idServer)
	sconf := fmt.Sprintf(common, dir+"/ns.pid", dir, dir, backend, sAddr, "ssl", serverTLS, "http", "")
	cconf := fmt.Sprintf(common, dir+"/nc.pid", dir, dir, sAddr, cAddr, "", "", "https", clientTLS)
	for n, c := range map[string]string{"nginx-server.conf": sconf, "nginx-client.conf": cconf} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o600); err != nil {
			return nil, err
		}
	}
	return pair("nginx pair, mTLS", cAddr, sAddr,
		[]string{"nginx", "-e", "stderr", "-g", "daemon off;", "-c"}, []string{filepath.Join(dir, "nginx-client.conf")},
		[]string{"nginx", "-e", "stderr", "-g", "daemon off;", "-c"}, []string{filepath.Join(dir, "nginx-server.conf")})
}

func haproxyPair(dir, backend string) (*setup, error) {
	sAddr, cAddr := freeAddr(), freeAddr()
	common := "global\n  nbthread 2\n  maxconn 8192\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n"
	sconf := common + fmt.Sprintf("frontend f\n  bind %s ssl crt %s/server.pem ca-file %s/ca.pem verify required\n  default_backend b\nbackend b\n  server s %s\n", sAddr, dir, dir, backend)
	cconf := common + fmt.Sprintf("frontend f\n  bind %s\n  default_backend b\nbackend b\n  server s %s ssl crt %s/client.pem ca-file %s/ca.pem verify required verifyhost %s sni str(%s)\n", cAddr, sAddr, dir, dir, idServer, idServer)
	for n, c := range map[string]string{"haproxy-server.cfg": sconf, "haproxy-client.cfg": cconf} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o600); err != nil {
			return nil, err
		}
	}
	return pair("haproxy pair, mTLS", cAddr, sAddr,
		[]string{"haproxy", "-db", "-f"}, []string{filepath.Join(dir, "haproxy-client.cfg")},
		[]string{"haproxy", "-db", "-f"}, []string{filepath.Join(dir, "haproxy-server.cfg")})
}

// procTree is pid and its descendants (nginx's workers).
func procTree(pid int) []int {
	out := []int{pid}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err == nil {
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, procTree(c)...)
			}
		}
	}
	return out
}

// cpuTime is the user+system CPU of pid's tree, in clock ticks (1/100 s).
func cpuTime(pid int) float64 {
	var sum float64
	for _, p := range procTree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		u, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		sum += u + st
	}
	return sum
}

// rssMB is the resident memory of pid's tree.
func rssMB(pid int) float64 {
	var kb float64
	for _, p := range procTree(pid) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				v, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
				kb += v
			}
		}
	}
	return kb / 1024
}

type result struct {
	lat    []time.Duration
	rps    float64
	errors int64
	cpuMs  float64 // CPU ms of both processes per 1,000 requests
	rssC   float64
	rssS   float64
	proxy  bool
}

func (r result) p(q float64) float64 {
	if len(r.lat) == 0 {
		return 0
	}
	i := min(int(q*float64(len(r.lat))), len(r.lat)-1)
	return float64(r.lat[i].Microseconds()) / 1000
}

func (r result) cpu() string {
	if !r.proxy {
		return "-"
	}
	return fmt.Sprintf("%.1f", r.cpuMs)
}

func (r result) rss() string {
	if !r.proxy {
		return "-"
	}
	return fmt.Sprintf("%.1f / %.1f", r.rssC, r.rssS)
}

// measure runs rate requests per second (open loop) or, with rate 0,
// conns closed-loop workers, for d after a warm-up.
func measure(s *setup, rate, conns int, d time.Duration) result {
	// At most 64 connections, as a pod's clients would hold: requests
	// beyond them wait in the generator, and that wait counts.
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64, TLSClientConfig: &tls.Config{}}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	url := "http://" + s.entry + "/"
	do := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	run := func(d time.Duration, record bool) result {
		var mu sync.Mutex
		var res result
		var n, errs atomic.Int64
		rec := func(lat time.Duration, err error) {
			if err != nil {
				errs.Add(1)
				return
			}
			n.Add(1)
			if record {
				mu.Lock()
				res.lat = append(res.lat, lat)
				mu.Unlock()
			}
		}
		startAt := time.Now()
		end := startAt.Add(d)
		var wg sync.WaitGroup
		if rate > 0 {
			// Open loop: request i is due at start + i/rate whatever
			// happened to the ones before; latency counts from then.
			interval := time.Second / time.Duration(rate)
			sem := make(chan struct{}, 2048)
			for i := 0; ; i++ {
				due := startAt.Add(time.Duration(i) * interval)
				if due.After(end) {
					break
				}
				if w := time.Until(due); w > 0 {
					time.Sleep(w)
				}
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					err := do()
					rec(time.Since(due), err)
				})
			}
		} else {
			for w := 0; w < conns; w++ {
				wg.Go(func() {
					for time.Now().Before(end) {
						t0 := time.Now()
						err := do()
						rec(time.Since(t0), err)
					}
				})
			}
		}
		wg.Wait()
		res.rps = float64(n.Load()) / time.Since(startAt).Seconds()
		res.errors = errs.Load()
		return res
	}
	run(2*time.Second, false)
	var c0 float64
	for _, p := range s.pids {
		c0 += cpuTime(p)
	}
	r := run(d, true)
	if len(s.pids) == 2 {
		var c1 float64
		for _, p := range s.pids {
			c1 += cpuTime(p)
		}
		reqs := r.rps * d.Seconds()
		r.cpuMs = (c1 - c0) * 10 / reqs * 1000
		r.rssC, r.rssS = rssMB(s.pids[0]), rssMB(s.pids[1])
		r.proxy = true
	}
	slices.Sort(r.lat)
	return r
}
