package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"meshtls/ca/pki"
	"meshtls/proxy/discovery"
)

// Identities of the test workloads.
const (
	idA    = "a.deployment.ns.linkerd-managed.linkerd.svc.cluster.local"
	idB    = "b.deployment.ns.linkerd-managed.linkerd.svc.cluster.local"
	idCtrl = "linkerd-controller.deployment.linkerd.linkerd-managed.linkerd.svc.cluster.local"
	idTap  = "linkerd-tap.deployment.linkerd.linkerd-managed.linkerd.svc.cluster.local"
)

// testPKI is one CA and the workload credentials it issued.
type testPKI struct {
	root *pki.Root
}

var (
	pkiOnce   sync.Once
	sharedPKI *testPKI
)

func getPKI(t testing.TB) *testPKI {
	pkiOnce.Do(func() {
		root, _, err := pki.NewRoot("test root", 24*time.Hour, time.Now())
		if err != nil {
			panic(err)
		}
		sharedPKI = &testPKI{root: root}
	})
	return sharedPKI
}

func (k *testPKI) issue(t testing.TB, id string) *pki.Leaf {
	t.Helper()
	l, err := k.root.Issue(id, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// writeVolume writes files into dir the way the kubelet updates a Secret
// volume: a fresh timestamped directory, then an atomic rename of the
// ..data symlink, with the visible names symlinks through ..data.
func writeVolume(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ts, err := os.MkdirTemp(dir, "..ts_")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(ts, 0o755)
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(ts, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err != nil {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
}

// testProxy is one running proxy and its volume directories.
type testProxy struct {
	*Proxy
	identity    string
	identityDir string
	anchorsDir  string
	// origDst is what SO_ORIGINAL_DST would say (no iptables on loopback).
	origDst atomic.Pointer[netip.AddrPort]
	done    chan struct{}
}

type proxyOpts struct {
	identity string // "" = no TLS
	noFiles  bool   // TLS configured but files not written yet
	resolver discovery.Resolver
	tune     func(*Config)
}

func startProxy(t testing.TB, o proxyOpts) *testProxy {
	t.Helper()
	dir := t.TempDir()
	tp := &testProxy{identity: o.identity, identityDir: filepath.Join(dir, "identity"), anchorsDir: filepath.Join(dir, "anchors"), done: make(chan struct{})}
	cfg := Config{
		InboundAddr: "127.0.0.1:0", OutboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", TapAddr: "127.0.0.1:0",
		Resolver:       o.resolver,
		DetectTimeout:  2 * time.Second,
		ConnectTimeout: 2 * time.Second,
		ReloadPoll:     time.Second,
		OrigDst: func(net.Conn, string) (netip.AddrPort, error) {
			if a := tp.origDst.Load(); a != nil {
				return *a, nil
			}
			return netip.AddrPort{}, fmt.Errorf("test set no original destination")
		},
		Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if o.identity != "" {
		cfg.Identity = o.identity
		cfg.ControllerIdentity = idCtrl
		cfg.TapIdentity = idTap
		cfg.CertFile = filepath.Join(tp.identityDir, "tls.crt")
		cfg.KeyFile = filepath.Join(tp.identityDir, "tls.key")
		cfg.TrustAnchorsFile = filepath.Join(tp.anchorsDir, "trust-anchors.pem")
		if !o.noFiles {
			tp.writeCreds(t, getPKI(t).issue(t, o.identity))
		}
	}
	if o.tune != nil {
		o.tune(&cfg)
	}
	tp.Proxy = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- tp.Run(ctx); close(tp.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-tp.done:
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop within 10s")
		}
		if err := <-errc; err != nil {
			t.Errorf("proxy Run: %v", err)
		}
	})
	tp.Addr("inbound")
	return tp
}

func (tp *testProxy) writeCreds(t testing.TB, leaf *pki.Leaf) {
	writeVolume(t, tp.anchorsDir, map[string][]byte{"trust-anchors.pem": getPKI(t).root.CertPEM})
	writeVolume(t, tp.identityDir, map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM})
}

func (tp *testProxy) setOrigDst(a string) {
	ap := netip.MustParseAddrPort(a)
	tp.origDst.Store(&ap)
}

func (tp *testProxy) addr(name string) string { return tp.Addr(name).String() }

// testWriter sends proxy logs to the test log, after the test only to
// nowhere (a late log line would panic the testing package).
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	defer func() { _ = recover() }()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// app is the workload behind a proxy: HTTP/1.1, h2c and gRPC on one port.
type app struct {
	addr string
	// requests counts requests the app saw, per path.
	mu   sync.Mutex
	seen map[string]int
	// canceled receives the error a streaming gRPC call ended with on
	// the server when its client went away.
	canceled chan error
}

func (a *app) count(path string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[path]
}

func startApp(t testing.TB) *app {
	t.Helper()
	a := &app{seen: map[string]int{}, canceled: make(chan error, 16)}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	testpb.RegisterTestServiceServer(gs, testService{a: a})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen[r.URL.Path]++
		a.mu.Unlock()
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			gs.ServeHTTP(w, r)
			return
		}
		switch r.URL.Path {
		case "/fail":
			http.Error(w, "failing on purpose", http.StatusServiceUnavailable)
		case "/upgrade":
			if r.Header.Get("Upgrade") != "echo" {
				http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
				return
			}
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer func() { _ = c.Close() }()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			_ = brw.Flush()
			_, _ = io.Copy(c, brw)
		case "/echo":
			// What the application received, as it received it.
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(echoed{
				Proto: r.Proto, Method: r.Method, RequestURI: r.RequestURI, Host: r.Host,
				Header: r.Header, Trailer: r.Trailer, BodyLen: len(body), BodySum: sha(body),
			})
		case "/echo-body":
			_ = http.NewResponseController(w).EnableFullDuplex()
			w.Header().Set("Trailer", "X-Request-Trailer")
			_, _ = io.Copy(w, r.Body)
			w.Header().Set("X-Request-Trailer", r.Trailer.Get("X-Request-Trailer"))
		case "/badgrpc":
			// A hostile or broken upstream: bytes no label may hold.
			w.Header().Set("Grpc-Status", "\xff\xfe")
			w.Header().Set("Grpc-Message", "\xff")
			w.WriteHeader(http.StatusOK)
		case "/chunked":
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Trailer", "X-Sum")
			for i := 0; i < 3; i++ {
				fmt.Fprintf(w, "chunk%d;", i)
				_ = http.NewResponseController(w).Flush()
			}
			w.Header().Set("X-Sum", fmt.Sprint(len(body)))
		default:
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "proto=%s host=%s path=%s body=%d", r.Proto, r.Host, r.URL.Path, len(body))
		}
	})
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	// CONNECT is answered as an egress proxy would: 200, then the tunnel
	// echoes, prefixed with what the request carried.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			mux.ServeHTTP(w, r)
			return
		}
		a.mu.Lock()
		a.seen["CONNECT "+r.RequestURI]++
		a.mu.Unlock()
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer func() { _ = c.Close() }()
		fmt.Fprintf(brw, "HTTP/1.1 200 Connection established\r\n\r\nconnect=%s auth=%s\n", r.RequestURI, r.Header.Get("Proxy-Authorization"))
		_ = brw.Flush()
		_, _ = io.Copy(c, brw)
	})
	srv := &http.Server{Handler: h, Protocols: &protos}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close(); gs.Stop() })
	return a
}

// echoed is what /echo saw of a request.
type echoed struct {
	Proto, Method, RequestURI, Host string
	Header, Trailer                 http.Header
	BodyLen                         int
	BodySum                         string
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// testService is gRPC's interop service: unary and bidirectional
// streaming, each ending with a trailer. Unary echoes the payload (or
// ResponseSize bytes), the caller's x-* metadata as headers and trailers,
// the deadline it was given, and answers ResponseStatus when asked.
type testService struct {
	testpb.UnimplementedTestServiceServer
	a *app
}

func (testService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	echo := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, "x-") {
			echo[k] = v
		}
	}
	if d, ok := ctx.Deadline(); ok {
		echo.Set("x-deadline-left-ms", fmt.Sprint(time.Until(d).Milliseconds()))
	}
	_ = grpc.SetHeader(ctx, echo)
	_ = grpc.SetTrailer(ctx, metadata.Join(echo, metadata.Pairs("x-trailer", "unary")))
	if st := req.GetResponseStatus(); st != nil {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	body := req.GetPayload().GetBody()
	if n := req.GetResponseSize(); n > 0 {
		body = bytes.Repeat([]byte{'r'}, int(n))
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: body}}, nil
}

func (s testService) FullDuplexCall(st testpb.TestService_FullDuplexCallServer) error {
	n := 0
	for {
		req, err := st.Recv()
		if err == io.EOF {
			st.SetTrailer(metadata.Pairs("x-trailer", fmt.Sprintf("count=%d", n)))
			return nil
		}
		if err != nil {
			if s.a != nil && st.Context().Err() != nil {
				select {
				case s.a.canceled <- st.Context().Err():
				default:
				}
			}
			return err
		}
		n++
		if err := st.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// mesh is two apps' proxies: a client-side proxy A whose outbound traffic
// goes to server B's inbound, and B in front of app.
type mesh struct {
	a, b *testProxy
	app  *app
	// target is the virtual address A's app connects to (B's "pod IP").
	target string
}

type meshOpts struct {
	idA, idB string // "" = that side without TLS
	// advertised is the identity discovery gives for B ("-" = none).
	advertised string
	tuneA      func(*Config)
	tuneB      func(*Config)
}

func newMesh(t testing.TB, o meshOpts) *mesh {
	t.Helper()
	m := &mesh{app: startApp(t), target: "10.99.0.2:8080"}
	m.b = startProxy(t, proxyOpts{identity: o.idB, tune: func(c *Config) {
		c.PodNamespace, c.PodName = "ns", "b-1"
		if o.tuneB != nil {
			o.tuneB(c)
		}
	}})
	m.b.setOrigDst(m.app.addr)
	adv := o.advertised
	if adv == "" {
		adv = o.idB
	}
	if adv == "-" {
		adv = ""
	}
	res := discovery.Static{m.target: {{
		Addr:     netip.MustParseAddrPort(m.b.addr("inbound")),
		Identity: adv,
		Labels:   map[string]string{"namespace": "ns", "deployment": "b", "pod": "b-1"},
	}}}
	m.a = startProxy(t, proxyOpts{identity: o.idA, resolver: res, tune: o.tuneA})
	m.a.setOrigDst(m.target)
	return m
}

// client is an HTTP client whose every connection goes to A's outbound
// port, as iptables would send it.
func (m *mesh) client(h2 bool) *http.Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", m.a.addr("outbound"))
	}
	var protos http.Protocols
	if h2 {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, Protocols: &protos}}
}

func (m *mesh) url(path string) string { return "http://b.ns.svc.cluster.local:8080" + path }

func get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric sums the series of name whose labels include want; a want value
// of "" requires the label to be absent.
func metric(t testing.TB, admin, name string, want map[string]string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := fams[name]
	if !ok {
		return 0
	}
	var sum float64
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tlsClientConfig is a client certificate from the test CA for id.
func tlsClientConfig(t testing.TB, leaf *pki.Leaf, serverName string) *tls.Config {
	t.Helper()
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(getPKI(t).root.Cert)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: serverName}
}

// rawExchange writes b to addr and returns what comes back until the
// connection closes or within passes.
func rawExchange(t testing.TB, addr string, b []byte, within time.Duration) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(within))
	if len(b) > 0 {
		if _, err := c.Write(b); err != nil {
			return "", err
		}
	}
	out, err := io.ReadAll(bufio.NewReader(c))
	return string(out), err
}

func newOtherRoot() (*pki.Root, []byte, error) {
	return pki.NewRoot("foreign root", time.Hour, time.Now())
}
