package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestInboundForwardsToLoopback: the inbound side reaches the application
// on 127.0.0.1 at the original destination's port, never at the pod IP
// itself. With proxy-init's redirect-non-loopback-local-traffic rule a
// connection from the proxy to its own pod IP comes back to the inbound
// port, so forwarding to the pod IP would loop. A witness on this host's
// address stands for the pod IP and must see nothing; the app listens on
// 127.0.0.1 at the same port. HTTP over mTLS from a peer proxy and opaque
// TCP are both checked.
func TestInboundForwardsToLoopback(t *testing.T) {
	podIP, witnessed := witness(t)
	port := netip.MustParseAddrPort(podIP).Port()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Skipf("127.0.0.1:%d is taken on this host, so the app cannot stand at the witness's port: %v", port, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app on loopback saw %s", r.Host)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	m.b.setOrigDst(podIP)
	resp, err := m.client(false).Get("http://" + m.target + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "app on loopback saw "+m.target {
		t.Errorf("HTTP through the pair: %d %q, want the loopback app's answer", resp.StatusCode, body)
	}
	if _, metrics := scrape(t, m.b.addr("admin")); !strings.Contains(metrics, `request_total{authority="`+m.target+`",client_id="`+idA+`",direction="inbound",tls="true"} 1`) {
		t.Errorf("server proxy did not count the request as inbound mTLS:\n%s", metrics)
	}

	// Opaque TCP, through a proxy configured so from its start: the port
	// skips detection, and the bytes (an HTTP request, so the app's
	// answer says who got them) go to loopback.
	mo := newMesh(t, meshOpts{idA: idA, idB: idB, tuneB: func(c *Config) { c.OpaquePorts = PortSet{port: true} }})
	mo.b.setOrigDst(podIP)
	c, err := net.Dial("tcp", mo.b.addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /opaque HTTP/1.1\r\nHost: opaque.test\r\nConnection: close\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(r.Body)
	if r.StatusCode != 200 || string(body) != "app on loopback saw opaque.test" {
		t.Errorf("opaque TCP: %d %q, want the loopback app's answer", r.StatusCode, body)
	}
	if n := witnessed(); n != 0 {
		t.Errorf("the pod IP itself got %d connections: inbound traffic went to the original destination, which loops under redirect-non-loopback-local-traffic", n)
	}
}
