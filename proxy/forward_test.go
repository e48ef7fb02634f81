package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// responseReader reads the responses of pipelined requests in order.
type responseReader struct{ br *bufio.Reader }

func newResponseReader(c net.Conn) *responseReader {
	return &responseReader{br: bufio.NewReaderSize(c, 64<<10)}
}

func (r *responseReader) next() (int, error) {
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, err
}

// echo sends raw (one HTTP/1.1 request) to A's outbound port and decodes
// what B's application received.
func (m *mesh) echoRaw(t *testing.T, raw string) echoed {
	t.Helper()
	out, err := rawExchange(t, m.a.addr("outbound"), []byte(raw), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
	if err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	defer resp.Body.Close()
	var e echoed
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("%d %q: %v", resp.StatusCode, out, err)
	}
	return e
}

// TestForwardingHeadersAndQueryUntouched: X-Forwarded-*, Forwarded and
// the raw query reach the application, through both proxies over mTLS,
// exactly as the client sent them, over HTTP/1.1 and HTTP/2.
func TestForwardingHeadersAndQueryUntouched(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	sent := map[string]string{
		"X-Forwarded-For":   "203.0.113.7, 198.51.100.1",
		"X-Forwarded-Host":  "shop.example.com",
		"X-Forwarded-Proto": "https",
		"Forwarded":         `for=203.0.113.7;proto=https;host="shop.example.com"`,
	}
	const uri = "/echo?filter=a;b&page=2&sig=ab%2Fcd%3D%3D&sp=a+b%20c&z=1&a=2"
	for _, h2 := range []bool{false, true} {
		req, _ := http.NewRequest("GET", m.url(uri), nil)
		for k, v := range sent {
			req.Header.Set(k, v)
		}
		resp, err := m.client(h2).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e echoed
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if e.RequestURI != uri {
			t.Errorf("h2=%v: the app got %q, the client sent %q", h2, e.RequestURI, uri)
		}
		for k, v := range sent {
			if got := strings.Join(e.Header[k], ", "); got != v {
				t.Errorf("h2=%v: %s arrived as %q, sent %q", h2, k, got, v)
			}
		}
	}
	// A header the client declares hop-by-hop is still removed.
	e := m.echoRaw(t, "GET /echo HTTP/1.1\r\nHost: b\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n")
	if _, ok := e.Header["X-Hop"]; ok {
		t.Errorf("a header named in Connection was forwarded: %v", e.Header)
	}
	if got := e.Header.Get("X-Forwarded-For"); got != "192.0.2.1" {
		t.Errorf("X-Forwarded-For = %q", got)
	}
}

// TestAbsoluteFormToEgressProxy: a request for an HTTP forward proxy
// keeps its absolute-form target and its Proxy-Authorization through the
// mesh; CONNECT opens a tunnel to it.
func TestAbsoluteFormToEgressProxy(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	e := m.echoRaw(t, "GET http://egress.example/echo?x=1;y HTTP/1.1\r\nHost: egress.example\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\nConnection: close\r\n\r\n")
	if e.RequestURI != "http://egress.example/echo?x=1;y" {
		t.Errorf("the egress proxy got %q", e.RequestURI)
	}
	if got := e.Header.Get("Proxy-Authorization"); got != "Basic dXNlcjpwYXNz" {
		t.Errorf("Proxy-Authorization arrived as %q", got)
	}

	c, err := net.Dial("tcp", m.a.addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\nProxy-Authorization: Basic eA==\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "connect=api.example:443 auth=Basic eA==\n" {
		t.Fatalf("tunnel greeting %q %v", line, err)
	}
	fmt.Fprint(c, "\x16\x03\x01tunnelled bytes")
	buf := make([]byte, len("\x16\x03\x01tunnelled bytes"))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "\x16\x03\x01tunnelled bytes" {
		t.Fatalf("tunnel echo %q %v", buf, err)
	}
}

// TestHTTP10WithoutHost: an HTTP/1.0 request without Host reaches the app
// with the address the client connected to, not an endpoint's pod IP.
func TestHTTP10WithoutHost(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	e := m.echoRaw(t, "GET /echo HTTP/1.0\r\n\r\n")
	if e.Host != m.target {
		t.Errorf("the app saw Host %q, want the original destination %q", e.Host, m.target)
	}
}

// TestAnyTokenMethodIsHTTP: a method outside the common nine (WebDAV's
// PROPFIND) is proxied as HTTP, with request metrics, not as opaque bytes.
func TestAnyTokenMethodIsHTTP(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	e := m.echoRaw(t, "PROPFIND /echo HTTP/1.1\r\nHost: dav.example\r\nDepth: 1\r\nConnection: close\r\n\r\n")
	if e.Method != "PROPFIND" {
		t.Fatalf("the app got method %q", e.Method)
	}
	for _, p := range []*testProxy{m.a, m.b} {
		if got := metric(t, p.addr("admin"), "request_total", map[string]string{"authority": "dav.example"}); got != 1 {
			t.Errorf("request_total{authority=dav.example} = %v, want 1", got)
		}
	}
}
