package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"meshtls/proxy/discovery"
)

// silentServer accepts connections and never says a word: a TLS peer
// that never finishes its handshake.
func silentServer(t *testing.T) string {
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
			go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
		}
	}()
	return l.Addr().String()
}

func grpcClient(t *testing.T, outbound string) testpb.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///svc.ns.svc.cluster.local:8080",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", outbound)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

// TestErrorMapping: what the proxy answers when it cannot forward: the
// status says why (502 refused, 504 timed out), l5d-proxy-error carries
// a message, the body names no address or certificate detail, and gRPC
// callers get grpc-status UNAVAILABLE or DEADLINE_EXCEEDED with a
// grpc-message.
func TestErrorMapping(t *testing.T) {
	refused := closedPort(t)
	silent := silentServer(t)
	res := discovery.Static{
		"10.99.0.3:80": {{Addr: netip.MustParseAddrPort(silent), Identity: idB}},
	}
	a := startProxy(t, proxyOpts{identity: idA, resolver: res, tune: func(c *Config) { c.ConnectTimeout = 300 * time.Millisecond }})
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", a.addr("outbound"))
	}
	// No keep-alive: each case's original destination is its connection's.
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	cases := []struct {
		name, dst string
		status    int
		grpc      codes.Code
	}{
		{"refused", refused, http.StatusBadGateway, codes.Unavailable},
		{"handshake timeout", "10.99.0.3:80", http.StatusGatewayTimeout, codes.DeadlineExceeded},
	}
	for _, tc := range cases {
		a.setOrigDst(tc.dst)
		resp, err := c.Get("http://svc.ns:80/x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d (%q)", tc.name, resp.StatusCode, tc.status, body)
		}
		if msg := resp.Header.Get("L5d-Proxy-Error"); msg == "" || msg == "1" {
			t.Errorf("%s: l5d-proxy-error %q carries no message", tc.name, msg)
		}
		for _, leak := range []string{"127.0.0.1", "x509", "tls:", "dial tcp"} {
			if strings.Contains(string(body), leak) || strings.Contains(resp.Header.Get("L5d-Proxy-Error"), leak) {
				t.Errorf("%s: the answer leaks %q: %q", tc.name, leak, body)
			}
		}
		_, err = grpcClient(t, a.addr("outbound")).UnaryCall(context.Background(), &testpb.SimpleRequest{})
		if st := status.Convert(err); st.Code() != tc.grpc || st.Message() == "" {
			t.Errorf("%s: gRPC got %v, want %v with a message", tc.name, err, tc.grpc)
		}
	}
	if got := metric(t, a.addr("admin"), "response_total", map[string]string{"status_code": "504", "classification": "failure"}); got != 1 {
		t.Errorf("504 failures = %v, want 1", got)
	}
	// The gRPC answers are 200s that failed.
	if got := metric(t, a.addr("admin"), "response_total", map[string]string{"status_code": "200", "grpc_status": "14", "classification": "failure"}); got != 1 {
		t.Errorf("grpc UNAVAILABLE failures = %v, want 1", got)
	}
}

// TestInboundErrorLeaksNothing: an inbound caller (anyone) whose request
// the application cannot take learns that, not the pod's addresses.
func TestInboundErrorLeaksNothing(t *testing.T) {
	b := startProxy(t, proxyOpts{identity: idB})
	b.setOrigDst(closedPort(t))
	out, _ := rawExchange(t, b.addr("inbound"), []byte("GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"), 10*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 502") || strings.Contains(out, "127.0.0.1") || strings.Contains(out, "connect:") {
		t.Errorf("inbound failure answered %q", out)
	}
}

// TestClassifyUnavailable: an error that says no endpoint can take the
// request (fail fast, no endpoints) answers 503 / UNAVAILABLE.
func TestClassifyUnavailable(t *testing.T) {
	f := classifyFailure(errNoEndpointsForTest{})
	if f.status != http.StatusServiceUnavailable || f.grpc != grpcUnavailable || f.msg == "" {
		t.Errorf("classifyFailure(unavailable) = %+v", f)
	}
	if f := classifyFailure(errors.Join(errLoopDetected)); f.status != http.StatusLoopDetected {
		t.Errorf("classifyFailure(loop) = %+v", f)
	}
}

type errNoEndpointsForTest struct{}

func (errNoEndpointsForTest) Error() string     { return "no endpoints" }
func (errNoEndpointsForTest) Unavailable() bool { return true }

// brokenGRPCServer answers every gRPC call with headers and one message,
// then drops the connection before the status: an upstream that dies
// mid-stream.
func brokenGRPCServer(t *testing.T) string {
	t.Helper()
	return opaqueServer(t, func(c *net.TCPConn) {
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		_ = fr.WriteSettings()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if h, ok := f.(*http2.HeadersFrame); ok {
				var hb strings.Builder
				enc := hpack.NewEncoder(&hb)
				_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
				_ = enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: []byte(hb.String()), EndHeaders: true})
				// A gRPC message frame: not compressed, 2 bytes.
				_ = fr.WriteData(h.StreamID, false, []byte{0, 0, 0, 0, 2, 0x0a, 0x00})
				time.Sleep(50 * time.Millisecond)
				return // no trailers: the connection just ends
			}
		}
	})
}

// TestGRPCMidStreamFailure: an upstream that dies after the response
// started reaches the gRPC client as UNAVAILABLE in trailers, which it
// may retry, not as a reset it reads as INTERNAL.
func TestGRPCMidStreamFailure(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	m.b.setOrigDst(brokenGRPCServer(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := grpcClient(t, m.a.addr("outbound")).FullDuplexCall(ctx)
	if err == nil {
		_ = st.CloseSend()
		for err == nil {
			_, err = st.Recv()
		}
	}
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("mid-stream failure reached the client as %v, want Unavailable", err)
	}
	if got := metric(t, m.b.addr("admin"), "response_total", map[string]string{"grpc_status": "14", "classification": "failure"}); got != 1 {
		t.Errorf("B counted %v UNAVAILABLE failures, want 1", got)
	}
}

// TestClientCancelIsFailure: a client that gives up before the response
// is not counted as a success.
func TestClientCancelIsFailure(t *testing.T) {
	a := startProxy(t, proxyOpts{})
	a.setOrigDst(silentServer(t)) // loopback: plain text, never answers
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc/x", nil)
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", a.addr("outbound"))
	}
	if _, err := (&http.Client{Transport: &http.Transport{DialContext: dial}}).Do(req); err == nil {
		t.Fatal("the request succeeded")
	}
	eventually(t, 10*time.Second, "the abandoned request recorded", func() bool {
		return metric(t, a.addr("admin"), "response_total", nil) == 1
	})
	if got := metric(t, a.addr("admin"), "response_total", map[string]string{"classification": "failure", "status_code": "499"}); got != 1 {
		t.Errorf("response_total{classification=failure,status_code=499} = %v, want 1", got)
	}
}

// TestResetCountedWithErrno: a peer that resets its connection is a
// failure in tcp_close_total with linkerd2-proxy's errno label, and the
// connection's lifetime is in tcp_connection_duration_ms.
func TestResetCountedWithErrno(t *testing.T) {
	b := startProxy(t, proxyOpts{})
	b.setOrigDst(silentServer(t))
	c, err := net.Dial("tcp", b.addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("\x00opaque bytes"))
	// Let the proxy connect and start copying, then reset.
	eventually(t, 5*time.Second, "the opaque connection forwarded", func() bool {
		return metric(t, b.addr("admin"), "tcp_open_total", map[string]string{"direction": "inbound", "peer": "dst"}) == 1
	})
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.Close()
	src := map[string]string{"direction": "inbound", "peer": "src"}
	eventually(t, 5*time.Second, "the reset connection closed", func() bool {
		return metric(t, b.addr("admin"), "tcp_close_total", src) == 1
	})
	if got := metric(t, b.addr("admin"), "tcp_close_total", withKV(src, "classification", "failure", "errno", "ECONNRESET")); got != 1 {
		t.Errorf("tcp_close_total{classification=failure,errno=ECONNRESET} = %v, want 1", got)
	}
	if got := metric(t, b.addr("admin"), "tcp_connection_duration_ms", withKV(src, "classification", "failure")); got != 1 {
		t.Errorf("tcp_connection_duration_ms count = %v, want 1", got)
	}
}

// TestOutboundPoolsPruned: a connection pool per endpoint is kept while
// used and dropped, its idle connections closed, once unused for the
// retention period.
func TestOutboundPoolsPruned(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	get(t, m.client(false), m.url("/pooled"))
	ot := m.a.outboundRT.(*outboundTransport)
	pools := func() int { ot.mu.RLock(); defer ot.mu.RUnlock(); return len(ot.ts) }
	if pools() != 1 {
		t.Fatalf("%d pools after one request", pools())
	}
	ot.prune(time.Now().Add(m.a.cfg.MetricsRetainIdle / 2))
	if pools() != 1 {
		t.Fatal("a pool used recently was pruned")
	}
	ot.prune(time.Now().Add(m.a.cfg.MetricsRetainIdle + time.Second))
	if pools() != 0 {
		t.Fatalf("%d pools left after the retention period", pools())
	}
	eventually(t, 5*time.Second, "the pooled connection to B closed", func() bool {
		return metric(t, m.a.addr("admin"), "tcp_close_total", map[string]string{"direction": "outbound", "peer": "dst"}) == 1
	})
}
