// Command proxy-bench measures the proxy against nginx and haproxy, each as
// a client-side + server-side pair in front of one backend: latency under
// a constant request rate (open loop: latency is counted from when each
// request was due, so a stall is not hidden), maximum throughput (closed
// loop), CPU per 1,000 requests and RSS of each proxy process.
//
// HTTP/1.1 (keep-alive GETs) and gRPC unary (emojivoto's FindByShortcode
// over prior-knowledge HTTP/2 into the client side) are measured with the
// same schedule. Every setup is measured once per round, rounds repeat the
// whole list, and the summary is each figure's median over the rounds, so
// a burst of load from others on a shared machine lands in one round of
// every setup rather than in all rounds of one.
//
// Usage: go run ./bench/proxy [-duration 5s] [-rounds 3] [-rates 1000,5000]
//
//	[-protocols http1,grpc] [-baseline path/to/older/proxy-bench]
//
// A baseline is this command built at an older commit (any since run-proxy
// exists), e.g. `git archive cca7f21 | tar -x -C /tmp/base && cd /tmp/base
// && go build -o /tmp/pb-base ./bench/proxy`.
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"meshtls/ca/pki"
	"meshtls/proto/emojivoto"
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
	var o options
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of each measured run")
	flag.IntVar(&o.rounds, "rounds", 3, "how many times to measure every setup, interleaved")
	flag.StringVar(&o.rates, "rates", "1000,5000", "constant request rates to measure")
	flag.IntVar(&o.maxConns, "max-conns", 32, "concurrent requests for the maximum-throughput run")
	flag.StringVar(&o.only, "only", "", "comma-separated subset of setups (direct,plain,mtls,mtls-before,nginx,haproxy)")
	flag.StringVar(&o.protocols, "protocols", "http1,grpc", "protocols to measure (http1,grpc)")
	flag.StringVar(&o.baseline, "baseline", "", "an older build of this command whose run-proxy is measured as \"mtls-before\" in the same run")
	flag.Parse()
	if err := bench(o); err != nil {
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

type options struct {
	duration         time.Duration
	rounds, maxConns int
	rates, only      string
	protocols        string
	baseline         string
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

// emojiServer answers FindByShortcode with a fixed emoji.
type emojiServer struct {
	emojivoto.UnimplementedEmojiServiceServer
}

func (emojiServer) FindByShortcode(_ context.Context, r *emojivoto.FindByShortcodeRequest) (*emojivoto.FindByShortcodeResponse, error) {
	return &emojivoto.FindByShortcodeResponse{Emoji: &emojivoto.Emoji{Unicode: "\U0001F369", Shortcode: r.GetShortcode()}}, nil
}

// runKey is one row of the tables: a setup, a protocol and a load.
type runKey struct {
	proto, setup, load string
}

func bench(o options) error {
	dir, err := os.MkdirTemp("", "proxy-bench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if err := writePKI(dir); err != nil {
		return err
	}
	backend := map[string]string{"http1": freeAddr(), "grpc": freeAddr()}
	bl, err := net.Listen("tcp", backend["http1"])
	if err != nil {
		return err
	}
	body := []byte("ok\n")
	bsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) })}
	go func() { _ = bsrv.Serve(bl) }()
	defer func() { _ = bsrv.Close() }()
	gl, err := net.Listen("tcp", backend["grpc"])
	if err != nil {
		return err
	}
	gsrv := grpc.NewServer()
	emojivoto.RegisterEmojiServiceServer(gsrv, emojiServer{})
	go func() { _ = gsrv.Serve(gl) }()
	defer gsrv.Stop()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	ours := func(bin, name, credDir, to string) (*setup, error) {
		sAddr, cAddr := freeAddr(), freeAddr()
		sargs := []string{"run-proxy", "-role", "server", "-listen", sAddr, "-to", to}
		cargs := []string{"run-proxy", "-role", "client", "-listen", cAddr, "-to", sAddr}
		if credDir != "" {
			sargs = append(sargs, "-dir", credDir)
			cargs = append(cargs, "-dir", credDir)
		}
		return pair(name, cAddr, sAddr, []string{bin}, cargs, []string{bin}, sargs)
	}
	type setupDef struct {
		key string
		mk  func(proto, backend string) (*setup, error)
	}
	defs := []setupDef{
		{"direct", func(_, b string) (*setup, error) {
			return &setup{name: "direct (no proxy)", entry: b, stop: func() {}}, nil
		}},
		{"plain", func(_, b string) (*setup, error) { return ours(self, "meshtls pair, plain text", "", b) }},
		{"mtls", func(_, b string) (*setup, error) { return ours(self, "meshtls pair, mTLS", dir, b) }},
	}
	if o.baseline != "" {
		defs = append(defs, setupDef{"mtls-before", func(_, b string) (*setup, error) {
			return ours(o.baseline, "meshtls pair, mTLS, before", dir, b)
		}})
	}
	defs = append(defs,
		setupDef{"nginx", func(pr, b string) (*setup, error) { return nginxPair(dir, b, pr == "grpc") }},
		setupDef{"haproxy", func(pr, b string) (*setup, error) { return haproxyPair(dir, b, pr == "grpc") }},
	)
	var rates []int
	for _, r := range strings.Split(o.rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil {
			return fmt.Errorf("bad rate %q", r)
		}
		rates = append(rates, n)
	}
	protos := strings.Split(o.protocols, ",")
	for _, pr := range protos {
		if backend[pr] == "" {
			return fmt.Errorf("unknown protocol %q (http1, grpc)", pr)
		}
	}
	fmt.Printf("date: %s\nmachine: %d CPUs (%s), %s, load average at start: %s\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), cpuModel(), runtime.Version(), loadAvg())
	fmt.Printf("each run: %s after a 2s warm-up; %d rounds, interleaved; HTTP/1.1: keep-alive GETs of a 3-byte body on at most 64 connections; gRPC: unary FindByShortcode on %d HTTP/2 connections\n\n", o.duration, o.rounds, grpcConns)
	fmt.Println("| round | protocol | setup | load | achieved rps | p50 ms | p99 ms | p99.9 ms | errors | CPU ms per 1k req (client+server) | RSS MB client / server | load avg |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	all := map[runKey][]result{}
	var order []runKey
	note := func(k runKey, r result) {
		if _, ok := all[k]; !ok {
			order = append(order, k)
		}
		all[k] = append(all[k], r)
	}
	for round := 1; round <= o.rounds; round++ {
		for _, pr := range protos {
			for _, d := range defs {
				if o.only != "" && !slices.Contains(strings.Split(o.only, ","), d.key) {
					continue
				}
				s, err := d.mk(pr, backend[pr])
				if err != nil {
					return fmt.Errorf("%s %s: %w", pr, d.key, err)
				}
				loads := make([]string, 0, len(rates)+1)
				for _, rate := range rates {
					loads = append(loads, fmt.Sprintf("%d/s", rate))
				}
				loads = append(loads, fmt.Sprintf("max (%d concurrent)", o.maxConns))
				for i, load := range loads {
					rate, conns := 0, o.maxConns
					if i < len(rates) {
						rate, conns = rates[i], 0
					}
					r, err := measure(s, pr, rate, conns, o.duration)
					if err != nil {
						s.stop()
						return fmt.Errorf("%s %s: %w", pr, d.key, err)
					}
					k := runKey{pr, s.name, load}
					note(k, r)
					fmt.Printf("| %d | %s | %s | %s | %.0f | %.3f | %.3f | %.3f | %d | %s | %s | %s |\n", round, pr, s.name, load, r.rps, r.p(0.5), r.p(0.99), r.p(0.999), r.errors, r.cpu(), r.rss(), r.load)
				}
				s.stop()
			}
		}
	}
	fmt.Printf("\nload average at end: %s\n\nmedians over %d rounds:\n\n", loadAvg(), o.rounds)
	fmt.Println("| protocol | setup | load | achieved rps | p50 ms | p99 ms | p99.9 ms | errors | CPU ms per 1k req (client+server) | RSS MB client / server |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, k := range order {
		rs := all[k]
		med := func(f func(result) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			slices.Sort(v)
			if len(v)%2 == 1 {
				return v[len(v)/2]
			}
			return (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		var errs int64
		for _, r := range rs {
			errs += r.errors
		}
		cpu, rss := "-", "-"
		if rs[0].proxy {
			cpu = fmt.Sprintf("%.1f", med(func(r result) float64 { return r.cpuMs }))
			rss = fmt.Sprintf("%.1f / %.1f", med(func(r result) float64 { return r.rssC }), med(func(r result) float64 { return r.rssS }))
		}
		fmt.Printf("| %s | %s | %s | %.0f | %.3f | %.3f | %.3f | %d | %s | %s |\n", k.proto, k.setup, k.load,
			med(func(r result) float64 { return r.rps }), med(func(r result) float64 { return r.p(0.5) }),
			med(func(r result) float64 { return r.p(0.99) }), med(func(r result) float64 { return r.p(0.999) }), errs, cpu, rss)
	}
	return nil
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
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

func nginxPair(dir, backend string, grpc bool) (*setup, error) {
	sAddr, cAddr := freeAddr(), freeAddr()
	common := `worker_processes 2;
pid %s;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %s;
  proxy_temp_path %s;
  # nginx ends a connection after 1,000 requests by default (GOAWAY on
  # HTTP/2): gRPC calls in flight then fail with "the connection is
  # draining" under load. The others keep connections open.
  keepalive_requests 1000000;
  upstream up { server %s; keepalive 256; keepalive_requests 1000000; }
  server {
    listen %s %s;
    %s
    location / {
      %s
    }
  }
}
`
	serverTLS := fmt.Sprintf("ssl_certificate %[1]s/server.crt; ssl_certificate_key %[1]s/server.key; ssl_client_certificate %[1]s/ca.pem; ssl_verify_client on; ssl_protocols TLSv1.3;", dir)
	// The client side's upstream TLS: client certificate, the server's
	// name checked against the CA, sessions reused.
	upTLS := func(prefix string) string {
		return fmt.Sprintf("%[3]s_ssl_certificate %[1]s/client.crt; %[3]s_ssl_certificate_key %[1]s/client.key; %[3]s_ssl_trusted_certificate %[1]s/ca.pem; %[3]s_ssl_verify on; %[3]s_ssl_name %[2]s; %[3]s_ssl_server_name on; %[3]s_ssl_session_reuse on; %[3]s_ssl_protocols TLSv1.3;", dir, idServer, prefix)
	}
	sListen, cListen := "ssl", ""
	sLoc := `proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";`
	cLoc := `proxy_pass https://up; proxy_http_version 1.1; proxy_set_header Connection ""; ` + upTLS("proxy")
	if grpc {
		// Prior-knowledge HTTP/2 in, h2 over mTLS between the two, h2c
		// to the backend.
		sListen, cListen = "ssl http2", "http2"
		sLoc = "grpc_pass grpc://up;"
		cLoc = "grpc_pass grpcs://up; " + upTLS("grpc")
	}
	sconf := fmt.Sprintf(common, dir+"/ns.pid", dir, dir, backend, sAddr, sListen, serverTLS, sLoc)
	cconf := fmt.Sprintf(common, dir+"/nc.pid", dir, dir, sAddr, cAddr, cListen, "", cLoc)
	for n, c := range map[string]string{"nginx-server.conf": sconf, "nginx-client.conf": cconf} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o600); err != nil {
			return nil, err
		}
	}
	return pair("nginx pair, mTLS", cAddr, sAddr,
		[]string{"nginx", "-e", "stderr", "-g", "daemon off;", "-c"}, []string{filepath.Join(dir, "nginx-client.conf")},
		[]string{"nginx", "-e", "stderr", "-g", "daemon off;", "-c"}, []string{filepath.Join(dir, "nginx-server.conf")})
}

func haproxyPair(dir, backend string, grpc bool) (*setup, error) {
	sAddr, cAddr := freeAddr(), freeAddr()
	common := "global\n  nbthread 2\n  maxconn 8192\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n"
	cBind, sALPN, cALPN, toBackend := "", "", "", ""
	if grpc {
		// Prior-knowledge HTTP/2 in, h2 (ALPN) over mTLS between the
		// two, h2c to the backend.
		cBind, sALPN, cALPN, toBackend = " proto h2", " alpn h2", " alpn h2", " proto h2"
	}
	sconf := common + fmt.Sprintf("frontend f\n  bind %s ssl crt %s/server.pem ca-file %s/ca.pem verify required%s\n  default_backend b\nbackend b\n  server s %s%s\n", sAddr, dir, dir, sALPN, backend, toBackend)
	cconf := common + fmt.Sprintf("frontend f\n  bind %s%s\n  default_backend b\nbackend b\n  server s %s ssl crt %s/client.pem ca-file %s/ca.pem verify required verifyhost %s sni str(%s)%s\n", cAddr, cBind, sAddr, dir, dir, idServer, idServer, cALPN)
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
	load   string // load average after the run
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

// grpcConns is how many HTTP/2 connections the gRPC client spreads its
// requests over (a gRPC client holds one per backend; a few let the
// peers' worker threads share the load as HTTP/1.1's connections do).
const grpcConns = 4

// newClient returns one request of the protocol against entry, and a
// function that closes the client's connections.
func newClient(proto, entry string) (func() error, func(), error) {
	if proto == "grpc" {
		var ccs []*grpc.ClientConn
		var clients []emojivoto.EmojiServiceClient
		closeAll := func() {
			for _, cc := range ccs {
				_ = cc.Close()
			}
		}
		for range grpcConns {
			// passthrough: one connection per ClientConn, to exactly
			// this address, without a resolver in between.
			cc, err := grpc.NewClient("passthrough:///"+entry, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				closeAll()
				return nil, nil, err
			}
			ccs = append(ccs, cc)
			clients = append(clients, emojivoto.NewEmojiServiceClient(cc))
		}
		var next atomic.Uint64
		req := &emojivoto.FindByShortcodeRequest{Shortcode: ":doughnut:"}
		do := func() error {
			c := clients[next.Add(1)%uint64(len(clients))]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := c.FindByShortcode(ctx, req)
			if err != nil {
				return err
			}
			if resp.GetEmoji().GetShortcode() != req.Shortcode {
				return fmt.Errorf("wrong answer %v", resp)
			}
			return nil
		}
		return do, closeAll, nil
	}
	// At most 64 connections, as a pod's clients would hold: requests
	// beyond them wait in the generator, and that wait counts.
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64, TLSClientConfig: &tls.Config{}}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "http://" + entry + "/"
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
	return do, tr.CloseIdleConnections, nil
}

// measure runs rate requests per second (open loop) or, with rate 0,
// conns closed-loop workers, for d after a warm-up.
func measure(s *setup, proto string, rate, conns int, d time.Duration) (result, error) {
	do, closeClient, err := newClient(proto, s.entry)
	if err != nil {
		return result{}, err
	}
	defer closeClient()
	var firstErr atomic.Value
	run := func(d time.Duration, record bool) result {
		var mu sync.Mutex
		var res result
		var n, errs atomic.Int64
		rec := func(lat time.Duration, err error) {
			if err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
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
	t0 := time.Now()
	r := run(d, true)
	if len(s.pids) == 2 {
		var c1 float64
		for _, p := range s.pids {
			c1 += cpuTime(p)
		}
		reqs := r.rps * time.Since(t0).Seconds()
		r.cpuMs = (c1 - c0) * 10 / reqs * 1000
		r.rssC, r.rssS = rssMB(s.pids[0]), rssMB(s.pids[1])
		r.proxy = true
	}
	r.load = loadAvg()
	if e, ok := firstErr.Load().(string); ok && r.errors > 0 {
		fmt.Fprintf(os.Stderr, "proxy-bench: %s %s: %d errors, first: %s\n", proto, s.name, r.errors, e)
	}
	slices.Sort(r.lat)
	return r, nil
}
