package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"meshtls/destination/client"
	pb "meshtls/proto/destination"
	netpb "meshtls/proto/net"
	"meshtls/proxy/discovery"
)

// outboundClient sends every connection to p's outbound port, as iptables
// would.
func outboundClient(p *testProxy, timeout time.Duration) *http.Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", p.addr("outbound"))
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

func refusedTotal(t testing.TB, p *testProxy, reason string) float64 {
	return metric(t, p.addr("admin"), "outbound_tls_refused_total", map[string]string{"reason": reason})
}

// expectRefused sends one request and checks it was answered by the
// proxy with a 503 naming the cause, and never reached anything.
func expectRefused(t *testing.T, c *http.Client, url, reason, inBody string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("l5d-proxy-error") != reason || !strings.Contains(string(body), inBody) {
		t.Fatalf("GET %s: %d l5d-proxy-error=%q %q; want 503 %s naming %q", url, resp.StatusCode, resp.Header.Get("l5d-proxy-error"), body, reason, inBody)
	}
}

// witness listens on one of this host's own non-loopback addresses (so
// connections to it stay on the machine, yet are not loopback to the
// proxy) and counts the connections it gets: the place a downgraded
// request would have gone.
func witness(t *testing.T) (string, func() int64) {
	t.Helper()
	var ip net.IP
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			ip = n.IP
			break
		}
	}
	if ip == nil {
		t.Skip("this host has no non-loopback IPv4 address to stand for a pod IP")
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				n.Add(1)
			}
		},
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String(), n.Load
}

// silentListener accepts connections and never says a byte: a destination
// service behind a blackhole, or hung.
func silentListener(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// TestDiscoveryUnreachable: with the shipped resolver (the destination
// service's gRPC client) and no destination service behind it (a closed
// port, or one that accepts and never answers), a TLS pod's request is
// refused with 503 naming discovery, counted, and never sent anywhere in
// plain text; while the stream stays down, later requests fail at once
// instead of each waiting for the resolve deadline.
func TestDiscoveryUnreachable(t *testing.T) {
	for name, addr := range map[string]func(*testing.T) string{"closed": closedPort, "blackholed": silentListener} {
		t.Run(name, func(t *testing.T) {
			orig, reached := witness(t)
			var a *testProxy
			res, err := client.New(client.Config{Addr: addr(t), MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = res.Close() })
			// A deadline far above the per-request timeout below: a
			// request that waits for it fails the test.
			const resolveTimeout = 20 * time.Second
			a = startProxy(t, proxyOpts{identity: idA, resolver: res, tune: func(c *Config) {
				c.ResolveTimeout = resolveTimeout
				c.ControllerIdentity = idCtrl
			}})
			// The original destination is a live server: had the proxy
			// fallen back to it, it would count the connection.
			a.setOrigDst(orig)
			first := outboundClient(a, 2*resolveTimeout)
			expectRefused(t, first, "http://svc.ns:80/first", refuseDiscoveryUnavailable, "service discovery has no answer")
			fast := outboundClient(a, resolveTimeout/4)
			for i := range 5 {
				expectRefused(t, fast, fmt.Sprintf("http://svc.ns:80/again-%d", i), refuseDiscoveryUnavailable, "not sent in plain text")
			}
			if n := reached(); n != 0 {
				t.Errorf("the original destination got %d connections", n)
			}
			if got := refusedTotal(t, a, refuseDiscoveryUnavailable); got != 6 {
				t.Errorf("outbound_tls_refused_total{reason=discovery_unavailable} = %v, want 6", got)
			}
			if got := metric(t, a.addr("admin"), "request_total", map[string]string{"direction": "outbound"}); got != 0 {
				t.Errorf("outbound requests sent = %v, want 0", got)
			}
			// Opaque TCP is closed without a byte sent.
			c, err := net.Dial("tcp", a.addr("outbound"))
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(resolveTimeout / 2))
			_, _ = c.Write([]byte("\x00\x01 not a protocol the proxy detects\r\n"))
			if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 {
				t.Errorf("opaque connection without discovery: read %d, %v; want it closed", n, err)
			}
			_ = c.Close()
			if n := reached(); n != 0 {
				t.Errorf("the original destination got %d connections", n)
			}
		})
	}
}

// TestServiceWithoutEndpointsRefused: a Service discovery knows with no
// endpoint yet is not dialled by its ClusterIP in plain text.
func TestServiceWithoutEndpointsRefused(t *testing.T) {
	clusterIP, reached := witness(t)
	res := discovery.Static{clusterIP: {}}
	a := startProxy(t, proxyOpts{identity: idA, resolver: res})
	a.setOrigDst(clusterIP)
	expectRefused(t, outboundClient(a, 10*time.Second), "http://svc.ns/x", refuseNoEndpoints, "no endpoints")
	if n := reached(); n != 0 {
		t.Errorf("the ClusterIP got %d connections", n)
	}
	if got := refusedTotal(t, a, refuseNoEndpoints); got != 1 {
		t.Errorf("refused no_endpoints = %v", got)
	}
}

// TestNoCertificateNeverPlainToIdentity: a TLS pod without a usable
// certificate (not yet written, or expired) refuses to reach a peer that
// has an identity, over HTTP, gRPC and opaque TCP, and is not ready; the
// peer's app sees nothing. Before, this was plain text labelled
// tls="disabled".
func TestNoCertificateNeverPlainToIdentity(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB, tuneA: func(c *Config) { c.ReadyWait = time.Millisecond }})
	c := m.client(false)
	if code, _ := get(t, c, m.url("/with-cert")); code != 200 {
		t.Fatalf("mTLS with a certificate: %d", code)
	}
	// A certificate that expires in a few seconds replaces the good one.
	short, err := getPKI(t).root.Issue(idA, 3*time.Second, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m.a.writeCreds(t, short)
	eventually(t, 20*time.Second, "the short certificate loaded, then expired", func() bool {
		return time.Now().After(short.NotAfter) && m.a.id.current() == nil && m.a.id.cur.Load() != nil &&
			m.a.id.cur.Load().leaf.SerialNumber.Cmp(short.Serial) == 0
	})
	expectRefused(t, c, m.url("/expired"), refuseNoCertificate, "no usable TLS certificate")
	if n := m.app.count("/expired"); n != 0 {
		t.Errorf("app got %d requests from a pod without a certificate", n)
	}
	ready, err := http.Get("http://" + m.a.addr("admin") + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	why, _ := io.ReadAll(ready.Body)
	_ = ready.Body.Close()
	if ready.StatusCode != 503 || !strings.Contains(string(why), "expired") {
		t.Errorf("/ready with an expired certificate: %d %q", ready.StatusCode, why)
	}

	// gRPC gets UNAVAILABLE, which clients retry.
	cc, err := grpc.NewClient("passthrough:///"+m.a.addr("outbound"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = testpb.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "certificate") {
		t.Errorf("gRPC without a certificate: %v, want UNAVAILABLE naming the certificate", err)
	}
	if got := metric(t, m.a.addr("admin"), "request_total", map[string]string{"direction": "outbound", "tls": "disabled"}); got != 0 {
		t.Errorf("requests sent with tls=disabled: %v", got)
	}
	if got := refusedTotal(t, m.a, refuseNoCertificate); got != 2 {
		t.Errorf("refused no_certificate = %v, want 2", got)
	}
}

// countingResolver counts the questions it is asked.
type countingResolver struct {
	discovery.Resolver
	n atomic.Int64
}

func (c *countingResolver) Resolve(ctx context.Context, target string) ([]discovery.Endpoint, error) {
	c.n.Add(1)
	return c.Resolver.Resolve(ctx, target)
}

// TestPlainOnlyOnPositiveAnswer: plain text still goes where discovery
// says so (not found, an endpoint without identity), to loopback, and to
// addresses outside the configured cluster networks, which discovery is
// not even asked about.
func TestPlainOnlyOnPositiveAnswer(t *testing.T) {
	app := startApp(t)
	appAddr := netip.MustParseAddrPort(app.addr)
	res := &countingResolver{Resolver: discovery.Static{
		"10.1.0.7:80": {{Addr: appAddr}},
	}}
	a := startProxy(t, proxyOpts{identity: idA, resolver: res, tune: func(c *Config) {
		c.ClusterNetworks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	}})
	c := outboundClient(a, 10*time.Second)
	cases := []struct{ dst, path, reason string }{
		{"10.1.0.7:80", "/no-identity", "not_provided_by_service_discovery"},
		{app.addr, "/loopback", "loopback"},
	}
	for _, tc := range cases {
		a.setOrigDst(tc.dst)
		if code, _ := get(t, c, "http://x"+tc.path); code != 200 {
			t.Errorf("%s: %d", tc.path, code)
		}
		if got := metric(t, a.addr("admin"), "request_total", map[string]string{"direction": "outbound", "no_tls_reason": tc.reason}); got < 1 {
			t.Errorf("%s: no request with no_tls_reason=%s", tc.path, tc.reason)
		}
	}
	// Outside 10.0.0.0/8, and not found by discovery: plain text to the
	// original destination. Discovery is not asked about the first.
	outside, reached := witness(t)
	asked := res.n.Load()
	a.setOrigDst(outside)
	if _, err := outboundClient(a, 10*time.Second).Get("http://outside/"); err != nil {
		t.Fatal(err)
	}
	if res.n.Load() != asked {
		t.Errorf("discovery asked about an address outside the cluster networks")
	}
	all := startProxy(t, proxyOpts{identity: idA, resolver: res})
	all.setOrigDst(outside)
	if _, err := outboundClient(all, 10*time.Second).Get("http://notfound/"); err != nil {
		t.Fatal(err)
	}
	if res.n.Load() == asked {
		t.Errorf("discovery not asked about an address inside the cluster networks")
	}
	if n := reached(); n != 2 {
		t.Errorf("the original destination got %d connections, want 2 (outside the networks, not found)", n)
	}
	if got := refusedTotal(t, a, refuseDiscoveryUnavailable) + refusedTotal(t, all, refuseDiscoveryUnavailable); got != 0 {
		t.Errorf("refusals on positive answers: %v", got)
	}
}

// fakeDestination is a Destination gRPC server whose answers the test
// sets; it can be stopped and started again on the same port, as a
// destination service is restarted or scaled to 0.
type fakeDestination struct {
	pb.UnimplementedDestinationServer
	addr string
	mu   sync.Mutex
	eps  func() *pb.Update
	srv  *grpc.Server
}

func (f *fakeDestination) Get(_ *pb.GetDestination, s grpc.ServerStreamingServer[pb.Update]) error {
	f.mu.Lock()
	u := f.eps()
	f.mu.Unlock()
	if err := s.Send(u); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

func (f *fakeDestination) start(t *testing.T) {
	addr := f.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	var err error
	for range 50 { // the port of a stopped server may linger briefly
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	f.addr = l.Addr().String()
	f.srv = grpc.NewServer()
	pb.RegisterDestinationServer(f.srv, f)
	go func() { _ = f.srv.Serve(l) }()
}

func (f *fakeDestination) stop() { f.srv.Stop() }

func addUpdate(ep netip.AddrPort, identity, pod string) *pb.Update {
	w := &pb.WeightedAddr{Addr: &netpb.TcpAddress{Ip: ep.Addr().AsSlice(), Port: uint32(ep.Port())}, Weight: 1, MetricLabels: map[string]string{"pod": pod}}
	if identity != "" {
		w.TlsIdentity = &pb.TlsIdentity{Strategy: &pb.TlsIdentity_DnsLikeIdentity_{DnsLikeIdentity: &pb.TlsIdentity_DnsLikeIdentity{Name: identity}}}
	}
	return &pb.Update{Update: &pb.Update_Add{Add: &pb.WeightedAddrSet{Addrs: []*pb.WeightedAddr{w}}}}
}

// TestIdentityOutlivesDiscoveryOutage: once discovery named B's identity,
// A keeps sending mTLS to B while the destination service is down, and
// after it comes back answering B without identity (as a restarted
// destination service does before it has re-checked the pod): the same
// endpoint of the same pod keeps its identity. A new pod at the same
// address is a new endpoint.
func TestIdentityOutlivesDiscoveryOutage(t *testing.T) {
	app := startApp(t)
	b := startProxy(t, proxyOpts{identity: idB})
	b.setOrigDst(app.addr)
	bAddr := netip.MustParseAddrPort(b.addr("inbound"))
	dst := &fakeDestination{eps: func() *pb.Update { return addUpdate(bAddr, idB, "b-1") }}
	dst.start(t)
	t.Cleanup(dst.stop)
	res, err := client.New(client.Config{Addr: dst.addr, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = res.Close() })
	a := startProxy(t, proxyOpts{identity: idA, resolver: res})
	a.setOrigDst("10.99.0.2:8080")
	c := outboundClient(a, 10*time.Second)
	tlsTrue := map[string]string{"direction": "outbound", "tls": "true", "server_id": idB}
	send := func(path string) {
		t.Helper()
		if code, body := get(t, c, "http://b.ns:8080"+path); code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
	}
	send("/before")
	if got := metric(t, a.addr("admin"), "request_total", tlsTrue); got != 1 {
		t.Fatalf("mTLS requests before the outage = %v", got)
	}

	dst.stop()
	for i := range 3 {
		send(fmt.Sprintf("/during-%d", i))
	}
	// Back, but not vouching for B's identity yet.
	before, _, _ := res.Cached("10.99.0.2:8080")
	dst.mu.Lock()
	dst.eps = func() *pb.Update { return addUpdate(bAddr, "", "b-1") }
	dst.mu.Unlock()
	dst.start(t)
	// Each answer the client applies is a new slice.
	eventually(t, 20*time.Second, "the client reconnected and applied the new answer", func() bool {
		eps, err, ok := res.Cached("10.99.0.2:8080")
		return ok && err == nil && len(eps) == 1 && len(before) == 1 && &eps[0] != &before[0]
	})
	send("/after")
	if got := metric(t, a.addr("admin"), "request_total", tlsTrue); got != 5 {
		t.Errorf("mTLS requests across the outage = %v, want 5", got)
	}
	if got := metric(t, a.addr("admin"), "request_total", map[string]string{"direction": "outbound", "tls": "no_identity"}); got != 0 {
		t.Errorf("plain-text requests to B = %v, want 0", got)
	}
}

// TestControllerTLS: the proxy's TLS to the destination service presents
// its certificate and accepts only the controller's identity under the
// current trust anchors, over a real gRPC handshake: the right controller
// answers; a server with another identity, and any server while the pod
// has no anchors, is refused (at once, not after the resolve deadline).
func TestControllerTLS(t *testing.T) {
	serve := func(id string) string {
		leaf := getPKI(t).issue(t, id)
		cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		sawClient := make(chan string, 16)
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: getPKI(t).root.Pool(), NextProtos: []string{"h2"},
			VerifyConnection: func(cs tls.ConnectionState) error {
				select {
				case sawClient <- peerIdentity(cs):
				default:
				}
				return nil
			}}
		f := &fakeDestination{eps: func() *pb.Update { return addUpdate(netip.MustParseAddrPort("10.1.2.3:80"), idB, "b-1") }}
		l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
		if err != nil {
			t.Fatal(err)
		}
		f.srv = grpc.NewServer()
		pb.RegisterDestinationServer(f.srv, f)
		go func() { _ = f.srv.Serve(l) }()
		t.Cleanup(f.stop)
		return l.Addr().String()
	}
	resolve := func(p *testProxy, addr string) ([]discovery.Endpoint, error) {
		res, err := client.New(client.Config{Addr: addr, TLS: p.ControllerTLS(idCtrl), MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer res.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return res.Resolve(ctx, "10.1.2.3:80")
	}
	withCert := startProxy(t, proxyOpts{identity: idA})
	good := serve(idCtrl)
	eps, err := resolve(withCert, good)
	if err != nil || len(eps) != 1 || eps[0].Identity != idB {
		t.Fatalf("resolve from the controller: %v %v", eps, err)
	}
	impostor := serve(idB)
	if _, err := resolve(withCert, impostor); !errors.Is(err, client.ErrNoAnswer) {
		t.Errorf("resolve from a server with another identity: %v, want refused", err)
	}
	noCert := startProxy(t, proxyOpts{identity: idA, noFiles: true})
	if _, err := resolve(noCert, good); !errors.Is(err, client.ErrNoAnswer) || !strings.Contains(err.Error(), "trust anchors") {
		t.Errorf("resolve without trust anchors: %v, want refused naming the anchors", err)
	}
}

// TestCachedAnswerAllocatesNothing: once a target is answered, the
// per-request lookup takes no lock shared with other targets and
// allocates nothing, whatever the number of endpoints (it used to sort
// and copy every endpoint's labels on every request).
func TestCachedAnswerAllocatesNothing(t *testing.T) {
	u := addUpdate(netip.MustParseAddrPort("10.1.0.1:80"), idB, "b-1")
	for i := 2; i <= 50; i++ {
		u.GetAdd().Addrs = append(u.GetAdd().Addrs, addUpdate(netip.MustParseAddrPort(fmt.Sprintf("10.1.0.%d:80", i)), idB, fmt.Sprintf("b-%d", i)).GetAdd().Addrs...)
	}
	dst := &fakeDestination{eps: func() *pb.Update { return u }}
	dst.start(t)
	t.Cleanup(dst.stop)
	res, err := client.New(client.Config{Addr: dst.addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = res.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if eps, err := res.Resolve(ctx, "svc.ns:80"); err != nil || len(eps) != 50 {
		t.Fatalf("resolve: %d endpoints, %v", len(eps), err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if eps, err, ok := res.Cached("svc.ns:80"); !ok || err != nil || len(eps) != 50 {
			t.Fatalf("cached: %d %v %v", len(eps), err, ok)
		}
	})
	if allocs != 0 {
		t.Errorf("a cached answer costs %v allocations", allocs)
	}
}
