package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"meshtls/contract"
	tappb "meshtls/proto/tap"
)

func requiredMesh(t *testing.T, tune func(*Config)) *mesh {
	return newMesh(t, meshOpts{idA: idA, idB: idB, tuneB: func(c *Config) {
		c.RequireTLS = true
		if tune != nil {
			tune(c)
		}
	}})
}

// TestRequiredRefusesPlainHTTP: a required pod answers plain-text HTTP
// with 403 naming the reason, even when the request carries identity
// headers, counts it with bounded labels, never reaches the application,
// and still serves a meshed client over mTLS.
func TestRequiredRefusesPlainHTTP(t *testing.T) {
	m := requiredMesh(t, nil)
	admin := m.b.addr("admin")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := tapClient(t, m.b.addr("tap"), idTap).Observe(ctx, &tappb.ObserveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the tap stream to open", func() bool {
		return metric(t, admin, "tap_streams", nil) == 1
	})

	// Plain text straight to B's inbound port, as an unmeshed client's
	// connection redirected by iptables arrives.
	for _, hdr := range []string{"", "l5d-client-id: " + idA + "\r\nl5d-server-id: " + idB + "\r\n"} {
		out, err := rawExchange(t, m.b.addr("inbound"), []byte("GET /secret HTTP/1.1\r\nHost: b.ns:8080\r\n"+hdr+"Connection: close\r\n\r\n"), 5*time.Second)
		if err != nil && out == "" {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out, "HTTP/1.1 403") || !strings.Contains(out, "no_tls_from_remote") || !strings.Contains(out, "requires mutual TLS") {
			t.Errorf("plain GET with headers %q: %q, want 403 naming no_tls_from_remote", hdr, out)
		}
	}
	if n := m.app.count("/secret"); n != 0 {
		t.Errorf("the application saw %d refused requests", n)
	}
	if got := metric(t, admin, "inbound_tls_refused_total", map[string]string{"reason": "no_tls_from_remote", "protocol": "http", "direction": "inbound"}); got != 2 {
		t.Errorf("inbound_tls_refused_total = %v, want 2", got)
	}
	if got := metric(t, admin, "request_total", map[string]string{"direction": "inbound"}); got != 0 {
		t.Errorf("refused requests counted as served: request_total = %v", got)
	}
	_, body := scrape(t, admin)
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "inbound_tls_refused_total{") && strings.Contains(l, "127.0.0.1") {
			t.Errorf("a client address is a label: %s", l)
		}
	}

	// The refusal is tapped, marked refused, with the client's address.
	for {
		ev, err := st.Recv()
		if err != nil {
			t.Fatalf("tap: %v", err)
		}
		if end := ev.GetHttp().GetResponseEnd(); end != nil {
			if end.GetError() != contract.TapRefusedPrefix+contract.RefusedNoTLS {
				t.Errorf("tap end error = %q", end.GetError())
			}
			if ev.GetSource().GetPort() == 0 || ev.GetTls().GetNoTlsReason() != "no_tls_from_remote" {
				t.Errorf("tap event source %v tls %v", ev.GetSource(), ev.GetTls())
			}
			break
		}
	}

	// A meshed client goes through, over mTLS.
	if code, body := get(t, m.client(false), m.url("/ok")); code != 200 {
		t.Fatalf("meshed GET: %d %s", code, body)
	}
	if got := metric(t, admin, "request_total", map[string]string{"direction": "inbound", "tls": "true"}); got != 1 {
		t.Errorf("meshed request_total{tls=true} = %v, want 1", got)
	}
}

// TestRequiredRefusesPlainGRPC: plain-text gRPC gets PERMISSION_DENIED.
func TestRequiredRefusesPlainGRPC(t *testing.T) {
	m := requiredMesh(t, nil)
	cc, err := grpc.NewClient("passthrough:///"+m.b.addr("inbound"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = testpb.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{})
	if s := status.Convert(err); s.Code() != codes.PermissionDenied || !strings.Contains(s.Message(), "no_tls_from_remote") {
		t.Fatalf("plain gRPC: %v, want PermissionDenied naming no_tls_from_remote", err)
	}
	if got := metric(t, m.b.addr("admin"), "inbound_tls_refused_total", map[string]string{"protocol": "grpc"}); got != 1 {
		t.Errorf("inbound_tls_refused_total{protocol=grpc} = %v", got)
	}
	// Through the mesh, the same call works.
	mc, err := grpc.NewClient("passthrough:///"+m.a.addr("outbound"), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("b.ns.svc.cluster.local:8080"))
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	if _, err := testpb.NewTestServiceClient(mc).UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("meshed gRPC: %v", err)
	}
}

// TestRequiredClosesOpaqueAndForeignTLS: a connection that is neither HTTP
// nor this pod's mTLS is closed without reaching the application: plain
// bytes on an opaque port, and TLS for another server name (the
// application's own TLS, which optional mode passes through).
func TestRequiredClosesOpaqueAndForeignTLS(t *testing.T) {
	m := requiredMesh(t, nil)
	admin := m.b.addr("admin")
	c, err := net.DialTimeout("tcp", m.b.addr("inbound"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write([]byte("\x00\x01binary protocol\r\n\r\n"))
	if n, err := c.Read(make([]byte, 64)); err != io.EOF && !isReset(err) {
		t.Errorf("opaque plain text: read %d bytes, %v; want the connection closed", n, err)
	}
	c.Close()

	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", m.b.addr("inbound"), &tls.Config{ServerName: "app.example", InsecureSkipVerify: true})
	if err == nil {
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = tc.Read(make([]byte, 1))
		tc.Close()
	}
	if err == nil {
		t.Error("foreign TLS was answered")
	}
	eventually(t, 5*time.Second, "both refusals counted", func() bool {
		return metric(t, admin, "inbound_tls_refused_total", map[string]string{"protocol": "tcp", "reason": "no_tls_from_remote"}) == 2
	})
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "closed"))
}

// TestRequiredExemptions: the kubelet's probes (GET of a listed port and
// path only) and a listed port pass in plain text; everything else on
// the probe's port is refused.
func TestRequiredExemptions(t *testing.T) {
	a := startApp(t)
	port := netip.MustParseAddrPort(a.addr).Port()
	start := func(exempt PortSet) func(string) string {
		b := startProxy(t, proxyOpts{identity: idB, tune: func(c *Config) {
			c.RequireTLS, c.Probes, c.TLSExemptPorts = true, Probes{port: {"/healthz": true}}, exempt
		}})
		b.setOrigDst(a.addr)
		return func(req string) string {
			out, _ := rawExchange(t, b.addr("inbound"), []byte(req), 5*time.Second)
			return out
		}
	}
	raw := start(nil)
	if out := raw("GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("probe: %q", firstLine(out))
	}
	if out := raw("GET /healthz?x=1 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("probe with a query: %q", firstLine(out))
	}
	for _, req := range []string{
		"POST /healthz HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		"GET /healthz/../secret HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
		"GET /other HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
	} {
		if out := raw(req); !strings.HasPrefix(out, "HTTP/1.1 403") {
			t.Errorf("%q: %q, want 403", strings.SplitN(req, "\r\n", 2)[0], firstLine(out))
		}
	}
	// A keep-alive connection opened by a probe does not carry other
	// requests past the check.
	out := raw("GET /healthz HTTP/1.1\r\nHost: b\r\n\r\nGET /secret HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
	if !strings.Contains(out, "HTTP/1.1 403") || a.count("/secret") != 0 {
		t.Errorf("second request on a probe's connection: %q", out)
	}
	raw = start(PortSet{port: true})
	if out := raw("GET /other HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("exempt port: %q", firstLine(out))
	}
}

// TestRequiredOptionalUnchanged: optional pods still take plain text.
func TestRequiredOptionalUnchanged(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	out, _ := rawExchange(t, m.b.addr("inbound"), []byte("GET /plain HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"), 5*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("optional pod, plain GET: %q", firstLine(out))
	}
	if got := metric(t, m.b.addr("admin"), "inbound_tls_refused_total", nil); got != 0 {
		t.Errorf("optional pod refused %v", got)
	}
}

func TestParseProbes(t *testing.T) {
	p, err := ParseProbes(" 8080:/live  9090:/ready 8080:/started ")
	if err != nil || !p[8080]["/live"] || !p[8080]["/started"] || !p[9090]["/ready"] || len(p) != 2 {
		t.Fatalf("%v %v", p, err)
	}
	for _, bad := range []string{"8080", "x:/a", "0:/a", "8080:live", "70000:/a"} {
		if _, err := ParseProbes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	env := map[string]string{contract.EnvInboundTLS: "required"}
	if _, err := FromEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("required without TLS: %v", err)
	}
	env[contract.EnvInboundTLS] = "strict"
	if _, err := FromEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), "strict") {
		t.Errorf("bad mode: %v", err)
	}
}

var _ = http.StatusOK

// TestRequiredMTLSStreamUnaffected: a long-lived mTLS gRPC stream through
// a required pod carries messages before, while and after plain-text
// clients are refused next to it.
func TestRequiredMTLSStreamUnaffected(t *testing.T) {
	m := requiredMesh(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := grpcClient(t, m.a.addr("outbound")).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	echo := func(msg string) {
		t.Helper()
		if err := st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(msg)}}); err != nil {
			t.Fatalf("send %q: %v", msg, err)
		}
		r, err := st.Recv()
		if err != nil || string(r.GetPayload().GetBody()) != msg {
			t.Fatalf("echo of %q: %v %v", msg, r, err)
		}
	}
	echo("before")
	for i := range 5 {
		out, _ := rawExchange(t, m.b.addr("inbound"), []byte("GET /x HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"), 5*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 403") {
			t.Fatalf("plain request %d: %q", i, firstLine(out))
		}
		echo(fmt.Sprintf("during-%d", i))
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v, want a clean EOF", err)
	}
	if got := metric(t, m.b.addr("admin"), "inbound_tls_refused_total", nil); got != 5 {
		t.Errorf("refused %v, want 5", got)
	}
}
