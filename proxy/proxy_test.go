package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
)

func TestMTLSBetweenProxies(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	for _, h2 := range []bool{false, true} {
		code, body := get(t, m.client(h2), m.url("/hello"))
		want := "proto=HTTP/1.1"
		if h2 {
			want = "proto=HTTP/2.0"
		}
		if code != 200 || !strings.Contains(body, want) || !strings.Contains(body, "host=b.ns.svc.cluster.local:8080") {
			t.Fatalf("h2=%v: got %d %q", h2, code, body)
		}
	}
	// The server side saw A's identity, the client side B's; both TLS.
	in := map[string]string{"direction": "inbound", "tls": "true", "client_id": idA, "no_tls_reason": "", "authority": "b.ns.svc.cluster.local:8080"}
	if got := metric(t, m.b.addr("admin"), "request_total", in); got != 2 {
		t.Errorf("B inbound request_total%v = %v, want 2", in, got)
	}
	out := map[string]string{"direction": "outbound", "tls": "true", "server_id": idB, "dst_deployment": "b", "dst_namespace": "ns", "dst_pod": "b-1"}
	if got := metric(t, m.a.addr("admin"), "response_total", withKV(out, "classification", "success", "status_code", "200")); got != 2 {
		t.Errorf("A outbound response_total = %v, want 2", got)
	}
	if got := metric(t, m.a.addr("admin"), "response_latency_ms", withKV(out, "status_code", "200")); got != 2 {
		t.Errorf("A response_latency_ms count = %v, want 2", got)
	}
	if got := metric(t, m.b.addr("admin"), "tcp_open_total", map[string]string{"direction": "inbound", "peer": "src", "tls": "true", "client_id": idA}); got < 1 {
		t.Errorf("B tcp_open_total tls=true = %v", got)
	}
	if got := metric(t, m.a.addr("admin"), "tcp_write_bytes_total", map[string]string{"direction": "outbound", "peer": "dst", "tls": "true", "server_id": idB}); got < 100 {
		t.Errorf("A tcp_write_bytes_total to dst = %v", got)
	}
}

func withKV(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func TestPlainClientIntoTLSProxy(t *testing.T) {
	m := newMesh(t, meshOpts{idB: idB})
	c := &http.Client{Timeout: 5 * time.Second}
	code, _ := get(t, c, "http://"+m.b.addr("inbound")+"/plain")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	want := map[string]string{"direction": "inbound", "tls": "no_identity", "no_tls_reason": "no_tls_from_remote", "client_id": ""}
	if got := metric(t, m.b.addr("admin"), "request_total", want); got != 1 {
		t.Errorf("request_total%v = %v", want, got)
	}
}

func TestNoIdentityFromDiscovery(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB, advertised: "-"})
	code, _ := get(t, m.client(false), m.url("/x"))
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	if got := metric(t, m.a.addr("admin"), "request_total", map[string]string{"direction": "outbound", "tls": "no_identity", "no_tls_reason": "not_provided_by_service_discovery", "server_id": ""}); got != 1 {
		t.Errorf("A outbound not_provided_by_service_discovery = %v", got)
	}
	if got := metric(t, m.b.addr("admin"), "request_total", map[string]string{"direction": "inbound", "no_tls_reason": "no_tls_from_remote"}); got != 1 {
		t.Errorf("B inbound no_tls_from_remote = %v", got)
	}
}

func TestFailedRequestsClassified(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	code, _ := get(t, m.client(false), m.url("/fail"))
	if code != 503 {
		t.Fatalf("status %d", code)
	}
	if got := metric(t, m.b.addr("admin"), "response_total", map[string]string{"direction": "inbound", "classification": "failure", "status_code": "503"}); got != 1 {
		t.Errorf("failure = %v", got)
	}
}

func TestHTTP1ChunkedTrailersKeepAlive(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	c := m.client(false)
	for i := 0; i < 5; i++ {
		resp, err := c.Post(m.url("/chunked"), "text/plain", io.NopCloser(strings.NewReader(strings.Repeat("x", 1000))))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "chunk0;chunk1;chunk2;" || resp.Trailer.Get("X-Sum") != "1000" {
			t.Fatalf("body %q trailer %v", b, resp.Trailer)
		}
	}
	// Keep-alive end to end: one client connection into A.
	if got := metric(t, m.a.addr("admin"), "tcp_open_total", map[string]string{"direction": "outbound", "peer": "src"}); got != 1 {
		t.Errorf("A accepted %v connections for 5 keep-alive requests", got)
	}
}

func TestUpgrade(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	c, err := net.Dial("tcp", m.a.addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	sent := time.Now()
	fmt.Fprintf(c, "GET /upgrade HTTP/1.1\r\nHost: b.ns:8080\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Each proxy saw the request after it was sent and the 101 before it
	// arrived: its latency can be no longer than this.
	toFirstByte := time.Since(sent)
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	fmt.Fprint(c, "ping-over-upgrade")
	buf := make([]byte, len("ping-over-upgrade"))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping-over-upgrade" {
		t.Fatalf("echo %q %v", buf, err)
	}
	// The session lasts well beyond its 101.
	time.Sleep(toFirstByte + 500*time.Millisecond)
	_ = c.Close()
	for _, p := range []*testProxy{m.a, m.b} {
		eventually(t, 5*time.Second, "the upgraded session recorded", func() bool {
			return metric(t, p.addr("admin"), "response_total", nil) == 1
		})
		if got := metric(t, p.addr("admin"), "response_total", map[string]string{"status_code": "101", "classification": "success"}); got != 1 {
			t.Errorf("response_total{status_code=101,classification=success} = %v, want 1", got)
		}
		if got, most := histogramSum(t, p.addr("admin"), "response_latency_ms", map[string]string{"status_code": "101"}), float64(toFirstByte.Microseconds())/1000; got <= 0 || got > most {
			t.Errorf("101 latency %vms: want the time to the 101 (at most %vms), not the session's length", got, most)
		}
	}
}

// histogramSum is a histogram's _sum over the series whose labels
// include want.
func histogramSum(t testing.TB, admin, name string, want map[string]string) float64 {
	t.Helper()
	_, body := scrape(t, admin)
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"_sum{") {
			continue
		}
		ok := true
		for k, v := range want {
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
			}
		}
		if ok {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			sum += v
		}
	}
	return sum
}

func TestGRPCUnaryAndBidi(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	cc, err := grpc.NewClient("passthrough:///b.ns.svc.cluster.local:8080",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", m.a.addr("outbound"))
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := testpb.NewTestServiceClient(cc)
	var tr metadata.MD
	resp, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hi")}}, grpc.Trailer(&tr))
	if err != nil || string(resp.GetPayload().GetBody()) != "hi" || tr.Get("x-trailer")[0] != "unary" {
		t.Fatalf("unary: %v %v %v", resp, err, tr)
	}
	st, err := cl.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Interleave: each reply must arrive before the next send, which only
	// works if both directions stream through both proxies.
	for i := 0; i < 5; i++ {
		msg := fmt.Sprintf("m%d", i)
		if err := st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(msg)}}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil || string(r.GetPayload().GetBody()) != msg {
			t.Fatalf("recv %d: %v %v", i, r, err)
		}
	}
	_ = st.CloseSend()
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
	if got := st.Trailer().Get("x-trailer"); len(got) != 1 || got[0] != "count=5" {
		t.Fatalf("bidi trailer %v", st.Trailer())
	}
	// An unknown method: gRPC status 12, a failure with 200.
	err = cc.Invoke(ctx, "/grpc.testing.TestService/Nope", &testpb.Empty{}, &testpb.Empty{})
	if err == nil {
		t.Fatal("unknown method succeeded")
	}
	for _, p := range []*testProxy{m.a, m.b} {
		if got := metric(t, p.addr("admin"), "response_total", map[string]string{"grpc_status": "0", "classification": "success", "tls": "true"}); got != 2 {
			t.Errorf("grpc_status=0 successes = %v, want 2", got)
		}
		if got := metric(t, p.addr("admin"), "response_total", map[string]string{"grpc_status": "12", "classification": "failure", "status_code": "200"}); got != 1 {
			t.Errorf("grpc_status=12 failures = %v, want 1", got)
		}
	}
}

func TestOpaqueTCPOverMTLS(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	// A binary echo protocol: detected as opaque from its first byte.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer func() { _ = c.Close() }(); _, _ = io.Copy(c, c) }()
		}
	}()
	m.b.setOrigDst(l.Addr().String())
	c, err := net.Dial("tcp", m.a.addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := "\x00\x01binary protocol payload\xff"
	fmt.Fprint(c, msg)
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q %v", buf, err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "opaque connection counted with tls=true", func() bool {
		return metric(t, m.b.addr("admin"), "tcp_close_total", map[string]string{"direction": "inbound", "peer": "src", "tls": "true", "client_id": idA}) == 1
	})
}

// opaqueServer accepts connections and runs serve on each.
func opaqueServer(t *testing.T, serve func(c *net.TCPConn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				serve(c.(*net.TCPConn))
			}()
		}
	}()
	return l.Addr().String()
}

// TestOpaqueServerClosesFirst: a server that sends its answer and
// half-closes first (whois, a database's idle close) is seen to end by
// the client through both proxies over mTLS; the client can still answer
// on its own half, and the server gets that too.
func TestOpaqueServerClosesFirst(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	got := make(chan string, 1)
	m.b.setOrigDst(opaqueServer(t, func(c *net.TCPConn) {
		_, _ = c.Write([]byte("\x00banner from the server"))
		_ = c.CloseWrite()
		b, _ := io.ReadAll(c)
		got <- string(b)
	}))
	c, err := net.Dial("tcp", m.a.addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// A client-first opaque protocol byte, so detection decides at once.
	fmt.Fprint(c, "\x00hello")
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "\x00banner from the server" {
		t.Fatalf("client read %q, %v (the server's close never arrived)", b, err)
	}
	fmt.Fprint(c, " and goodbye")
	_ = c.(*net.TCPConn).CloseWrite()
	select {
	case s := <-got:
		if s != "\x00hello and goodbye" {
			t.Errorf("server read %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client's half-close never reached the server")
	}
}

// TestOpaqueIdleTimeout: an opaque connection with no bytes either way
// for TCPIdleTimeout is closed on both sides; one that carries bytes in
// one direction only is not.
func TestOpaqueIdleTimeout(t *testing.T) {
	const idle = 1500 * time.Millisecond
	m := newMesh(t, meshOpts{idA: idA, idB: idB, tuneA: func(c *Config) { c.TCPIdleTimeout = idle }})
	serverDone := make(chan error, 2)
	m.b.setOrigDst(opaqueServer(t, func(c *net.TCPConn) {
		buf := make([]byte, 2)
		if _, err := io.ReadFull(c, buf); err != nil {
			serverDone <- err
			return
		}
		if buf[1] == 's' {
			// Stream for three idle periods, never reading.
			for end := time.Now().Add(3 * idle); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				if _, err := c.Write([]byte("s")); err != nil {
					serverDone <- fmt.Errorf("streaming connection cut: %w", err)
					return
				}
			}
			_ = c.CloseWrite()
			serverDone <- nil
			return
		}
		_, err := io.ReadAll(c)
		serverDone <- err
	}))
	dial := func(first string) net.Conn {
		c, err := net.Dial("tcp", m.a.addr("outbound"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprint(c, first)
		return c
	}
	// The first bytes are not text, so detection decides at once.
	waitServer := func() error {
		select {
		case err := <-serverDone:
			return err
		case <-time.After(20 * time.Second):
			return errors.New("the server never finished")
		}
	}
	quiet := dial("\x00q")
	if _, err := io.ReadAll(quiet); err != nil {
		t.Fatalf("idle connection: %v (want it closed by the proxy)", err)
	}
	if err := waitServer(); err != nil {
		t.Errorf("the server side of the idle connection: %v", err)
	}
	stream := dial("\x00s")
	b, err := io.ReadAll(stream)
	if err != nil || len(b) < 10 {
		t.Fatalf("one-way stream: read %d bytes, %v", len(b), err)
	}
	if err := waitServer(); err != nil {
		t.Error(err)
	}
}

// TestWrongServerIdentity: discovery says C, B presents B: the request
// fails with a 502 naming the handshake, and nothing reaches the app.
func TestWrongServerIdentity(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB, advertised: "c.deployment.ns.linkerd-managed.linkerd.svc.cluster.local"})
	resp, err := m.client(false).Get(m.url("/secret"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 502 || !strings.Contains(string(b), "mTLS handshake") || !strings.Contains(string(b), "not sent in plain text") {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	if n := m.app.count("/secret"); n != 0 {
		t.Fatalf("app saw %d requests", n)
	}
	if got := metric(t, m.a.addr("admin"), "proxy_connection_errors_total", map[string]string{"direction": "outbound", "reason": errTLSOutbound}); got < 1 {
		t.Errorf("handshake failures counted = %v", got)
	}
	if got := metric(t, m.a.addr("admin"), "response_total", map[string]string{"classification": "failure", "status_code": "502"}); got != 1 {
		t.Errorf("502 failures counted = %v", got)
	}
}

// TestBadClientCertificates: only certificates from our trust anchors, in
// date, are accepted inbound.
func TestBadClientCertificates(t *testing.T) {
	m := newMesh(t, meshOpts{idB: idB})
	other, otherKey, err := newOtherRoot()
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(idA, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expired, err := getPKI(t).root.Issue(idA, time.Hour, time.Now().Add(-3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][2][]byte{
		"foreign CA":  {foreign.CertPEM, foreign.KeyPEM},
		"expired":     {expired.CertPEM, expired.KeyPEM},
		"self-signed": {other.CertPEM, otherKey},
	}
	good := getPKI(t).issue(t, idA)
	for name, kp := range cases {
		cert, err := tls.X509KeyPair(kp[0], kp[1])
		if err != nil {
			t.Fatal(err)
		}
		cfg := tlsClientConfig(t, good, idB)
		cfg.Certificates = []tls.Certificate{cert}
		c, err := tls.Dial("tcp", m.b.addr("inbound"), cfg)
		if err == nil {
			// TLS 1.3: the server's verdict arrives with the first read.
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: b\r\n\r\n")
			_, err = io.ReadAll(c)
			_ = c.Close()
		}
		if err == nil {
			t.Errorf("%s: client certificate accepted", name)
		}
	}
	// The client reads the server's alert before the server has counted
	// the failure: wait for the count, then check it is not more.
	eventually(t, 5*time.Second, "three inbound handshake errors counted", func() bool {
		return metric(t, m.b.addr("admin"), "proxy_connection_errors_total", map[string]string{"direction": "inbound", "reason": errTLSInbound}) >= 3
	})
	if got := metric(t, m.b.addr("admin"), "proxy_connection_errors_total", map[string]string{"direction": "inbound", "reason": errTLSInbound}); got != 3 {
		t.Errorf("inbound handshake errors = %v, want 3", got)
	}
	if m.app.count("/") != 0 {
		t.Errorf("a rejected client reached the app")
	}
	// The good certificate still works, and B records its identity.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsClientConfig(t, good, idB)}}
	code, _ := get(t, c, "https://"+m.b.addr("inbound")+"/ok")
	if code != 200 {
		t.Fatalf("good client: %d", code)
	}
	if got := metric(t, m.b.addr("admin"), "request_total", map[string]string{"client_id": idA, "tls": "true"}); got != 1 {
		t.Errorf("client_id request_total = %v", got)
	}
}

// TestBadInput: each bad connection is closed or answered and counted, and
// the proxy stays live for everyone else.
func TestBadInput(t *testing.T) {
	m := newMesh(t, meshOpts{idB: idB, tuneB: func(c *Config) { c.DetectTimeout = 300 * time.Millisecond }})
	in := m.b.addr("inbound")
	admin := m.b.addr("admin")
	errs := func(reason string) float64 {
		return metric(t, admin, "proxy_connection_errors_total", map[string]string{"direction": "inbound", "reason": reason})
	}

	// A ClientHello that never finishes: the detect timeout closes it.
	start := time.Now()
	if _, err := rawExchange(t, in, []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00}, 5*time.Second); err != nil {
		t.Fatalf("stalled ClientHello not closed by the proxy: %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("stalled ClientHello closed after %s", time.Since(start))
	}
	// A truncated ClientHello: the peer closes half way.
	c, err := net.Dial("tcp", in)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03})
	_ = c.(*net.TCPConn).CloseWrite()
	_, _ = io.ReadAll(c)
	_ = c.Close()
	eventually(t, 5*time.Second, "two TLS handshake errors", func() bool { return errs(errTLSInbound) == 2 })

	// Half a request line, then silence: a detect timeout.
	if _, err := rawExchange(t, in, []byte("GE"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a detect timeout", func() bool { return errs(errDetect) == 1 })

	// A malformed Host and an oversized header: answered by net/http.
	out, _ := rawExchange(t, in, []byte("GET / HTTP/1.1\r\nHost: bad host/\\\r\n\r\n"), 5*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 400") {
		t.Errorf("malformed Host answered %q", firstLine(out))
	}
	big := "GET / HTTP/1.1\r\nHost: b\r\nX-Big: " + strings.Repeat("a", 2*maxHeaderBytes) + "\r\n\r\n"
	out, _ = rawExchange(t, in, []byte(big), 5*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 431") {
		t.Errorf("oversized header answered %q", firstLine(out))
	}
	eventually(t, 5*time.Second, "two bad HTTP requests counted", func() bool { return errs(errHTTPBad) == 2 })

	// Garbage is opaque: forwarded to the app (which answers 400, being
	// HTTP) and counted as a connection.
	out, _ = rawExchange(t, in, []byte("\x00\x01\x02garbage\r\n\r\n"), 5*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 400 Bad Request\r\n") || strings.Contains(out, "L5d-Proxy-Error") {
		t.Errorf("garbage: want the app's own 400, got %q", out)
	}
	opaque := map[string]string{"direction": "inbound", "peer": "dst"}
	if got := metric(t, admin, "tcp_open_total", opaque); got != 1 {
		t.Errorf("garbage: %v connections to the app, want 1 (forwarded as opaque)", got)
	}

	resp, err := http.Get("http://" + admin + "/live")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/live after bad input: %v %v", resp, err)
	}
	resp.Body.Close()
	code, _ := get(t, &http.Client{Timeout: 5 * time.Second}, "http://"+in+"/still-fine")
	if code != 200 {
		t.Fatalf("good request after bad input: %d", code)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// TestKeepAliveCloseIsSuccess: a client that sends several requests on one
// kept-alive connection and then closes it ends that connection as a
// success. net/http stops its background read after every request with a
// past deadline; that deadline is not the peer's failure.
func TestKeepAliveCloseIsSuccess(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	c := m.client(false)
	for range 5 {
		resp, err := c.Get(m.url("/keepalive"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	c.CloseIdleConnections()
	src := map[string]string{"direction": "outbound", "peer": "src"}
	eventually(t, 5*time.Second, "the client's connection closed and counted", func() bool {
		return metric(t, m.a.addr("admin"), "tcp_close_total", src) == 1
	})
	src["classification"] = "failure"
	if n := metric(t, m.a.addr("admin"), "tcp_close_total", src); n != 0 {
		t.Fatalf("a kept-alive connection closed by its client counted as %v failure(s)", n)
	}
}
