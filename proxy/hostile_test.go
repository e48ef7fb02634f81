package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	tappb "meshtls/proto/tap"
)

// h2cRequest sends one prior-knowledge HTTP/2 request with the given
// pseudo-header and header fields, written as raw frames so that values
// no well-behaved client would send (bytes 0x80-0xFF) reach the proxy,
// and returns the response's :status ("" when the stream was reset).
func h2cRequest(t *testing.T, addr string, fields [][2]string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range fields {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return ""
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			hf, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range hf {
				if h.Name == ":status" {
					return h.Value
				}
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			return ""
		}
	}
}

// scrape returns /metrics' status and body.
func scrape(t testing.TB, admin string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHostileAuthorityKeepsMetricsAndTap: one unauthenticated h2c request
// with a non-UTF-8 :authority, and an HTTP/1 path that decodes to invalid
// UTF-8, leave /metrics answering 200 (the value becomes a placeholder)
// and the open tap stream alive for the requests that follow.
func TestHostileAuthorityKeepsMetricsAndTap(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := tapClient(t, m.b.addr("tap"), idTap).Observe(ctx, &tappb.ObserveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the tap stream to open", func() bool {
		return metric(t, m.b.addr("admin"), "tap_streams", nil) == 1
	})

	h2cRequest(t, m.b.addr("inbound"), [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "\xff\xfe:80"}, {":path", "/bad-authority"}})
	if out, _ := rawExchange(t, m.b.addr("inbound"), []byte("GET /%ff%fe HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"), 5*time.Second); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("GET /%%ff: %q", firstLine(out))
	}
	code, body := scrape(t, m.b.addr("admin"))
	if code != 200 {
		t.Fatalf("/metrics after a hostile authority: %d %s", code, firstLine(body))
	}
	if got := metric(t, m.b.addr("admin"), "request_total", map[string]string{"direction": "inbound", "authority": invalidLabel}); got != 1 {
		t.Errorf("request_total{authority=%q} = %v, want 1", invalidLabel, got)
	}
	// The tap stream still delivers the next good request.
	get(t, m.client(false), m.url("/after-hostile"))
	for {
		ev, err := st.Recv()
		if err != nil {
			t.Fatalf("tap stream ended after hostile input: %v", err)
		}
		if ri := ev.GetHttp().GetRequestInit(); ri != nil {
			t.Logf("tap: %s %s", ri.GetAuthority(), ri.GetPath())
			if ri.GetPath() == "/after-hostile" {
				break
			}
		}
	}
}

// TestHostileGRPCStatus: an upstream answering grpc-status "\xff\xfe"
// is counted as a failure with a placeholder grpc_status, and both
// proxies' /metrics keep answering.
func TestHostileGRPCStatus(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	if code, _ := get(t, m.client(false), m.url("/badgrpc")); code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, p := range []*testProxy{m.a, m.b} {
		if code, body := scrape(t, p.addr("admin")); code != 200 {
			t.Fatalf("/metrics after grpc-status \\xff: %d %s", code, firstLine(body))
		}
		if got := metric(t, p.addr("admin"), "response_total", map[string]string{"grpc_status": invalidLabel, "classification": "failure"}); got != 1 {
			t.Errorf("response_total{grpc_status=%q,classification=failure} = %v, want 1", invalidLabel, got)
		}
	}
}

// seriesCount is how many series of name /metrics holds.
func seriesCount(t testing.TB, admin, name string) int {
	t.Helper()
	_, body := scrape(t, admin)
	n := 0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			n++
		}
	}
	return n
}

// TestAuthorityCardinalityBounded: 100,000 distinct Host values leave the
// number of series bounded by the authority limit; the rest share one
// overflow series, and every request is still counted.
func TestAuthorityCardinalityBounded(t *testing.T) {
	const limit, n = 20, 100_000
	p := startProxy(t, proxyOpts{tune: func(c *Config) { c.MaxAuthorities = limit }})
	// The loop guard answers requests addressed to the outbound port
	// itself without an upstream: each request costs the proxy only its
	// own work, which keeps 100,000 of them quick.
	p.setOrigDst(p.addr("outbound"))
	c, err := net.Dial("tcp", p.addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	// Pipelined HTTP/1.1: a writer and a reader on one connection.
	werr := make(chan error, 1)
	go func() {
		bw := bytesWriter{c: c}
		for i := range n {
			fmt.Fprintf(&bw.buf, "GET / HTTP/1.1\r\nHost: host-%d.example:80\r\n\r\n", i)
			if bw.buf.Len() > 64<<10 {
				if err := bw.flush(); err != nil {
					werr <- err
					return
				}
			}
		}
		werr <- bw.flush()
	}()
	br := newResponseReader(c)
	for i := range n {
		code, err := br.next()
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		if code != http.StatusLoopDetected {
			t.Fatalf("response %d: status %d, want 508", i, code)
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	admin := p.addr("admin")
	if got := metric(t, admin, "request_total", map[string]string{"direction": "outbound"}); got != n {
		t.Errorf("request_total = %v, want %d", got, n)
	}
	if got := metric(t, admin, "request_total", map[string]string{"direction": "outbound", "authority": overflowLabel}); got != n-limit {
		t.Errorf("request_total{authority=%q} = %v, want %d", overflowLabel, got, n-limit)
	}
	for name, perAuthority := range map[string]int{"request_total": 1, "response_total": 1, "response_latency_ms_count": 1} {
		if got, most := seriesCount(t, admin, name), (limit+1)*perAuthority; got > most {
			t.Errorf("%d series of %s for %d authorities, want at most %d", got, name, n, most)
		}
	}
}

type bytesWriter struct {
	c   net.Conn
	buf bytes.Buffer
}

func (b *bytesWriter) flush() error {
	_, err := b.c.Write(b.buf.Bytes())
	b.buf.Reset()
	return err
}

// TestIdleSeriesEvicted: series no connection holds and nothing used for
// MetricsRetainIdle are dropped by the sweep; a connection still open
// keeps its own. The sweep is given its clock, so no test waits.
func TestIdleSeriesEvicted(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	c := m.client(false)
	get(t, c, m.url("/idle"))
	c.CloseIdleConnections()
	admin := m.a.addr("admin")
	eventually(t, 5*time.Second, "the client connection closed", func() bool {
		return metric(t, admin, "tcp_close_total", map[string]string{"direction": "outbound", "peer": "src"}) == 1
	})
	// A second client keeps a connection open across the sweep.
	held, err := net.Dial("tcp", m.a.addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Close() }()
	fmt.Fprintf(held, "GET /held HTTP/1.1\r\nHost: held.example\r\n\r\n")
	if code, err := newResponseReader(held).next(); err != nil || code != 200 {
		t.Fatalf("held request: %d %v", code, err)
	}

	m.a.m.sweep(time.Now().Add(m.a.cfg.MetricsRetainIdle / 2))
	if got := metric(t, admin, "request_total", map[string]string{"authority": "b.ns.svc.cluster.local:8080"}); got != 1 {
		t.Fatalf("a series was dropped before it was idle for MetricsRetainIdle: %v", got)
	}
	m.a.m.sweep(time.Now().Add(m.a.cfg.MetricsRetainIdle + time.Second))
	if got := seriesCount(t, admin, "request_total"); got != 1 {
		t.Errorf("%d request_total series after the sweep, want 1 (the held connection's)", got)
	}
	if got := metric(t, admin, "request_total", map[string]string{"authority": "held.example"}); got != 1 {
		t.Errorf("the open connection's series was dropped: %v", got)
	}
	if got := metric(t, admin, "tcp_open_connections", map[string]string{"direction": "outbound", "peer": "src"}); got != 1 {
		t.Errorf("tcp_open_connections{peer=src} = %v, want 1 (the held connection)", got)
	}
	// A dropped series comes back from zero when used again.
	get(t, m.client(false), m.url("/idle"))
	if got := metric(t, admin, "request_total", map[string]string{"authority": "b.ns.svc.cluster.local:8080"}); got != 1 {
		t.Errorf("request_total after the series came back = %v, want 1", got)
	}
}

// TestOutboundLoopRefused: a connection whose original destination is
// the outbound listener itself (an app calling 127.0.0.1:4140) is not
// dialled again: HTTP gets 508 Loop Detected, anything else is closed,
// and both are counted.
func TestOutboundLoopRefused(t *testing.T) {
	p := startProxy(t, proxyOpts{identity: idA})
	p.setOrigDst(p.addr("outbound"))
	out, _ := rawExchange(t, p.addr("outbound"), []byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 10*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 508") || !strings.Contains(out, "L5d-Proxy-Error: ") {
		t.Errorf("HTTP to the outbound port itself: %q", out)
	}
	start := time.Now()
	if _, err := rawExchange(t, p.addr("outbound"), []byte("\x00opaque"), 10*time.Second); err != nil {
		t.Errorf("opaque loop not closed: %v", err)
	}
	t.Logf("opaque loop closed after %s", time.Since(start))
	if got := metric(t, p.addr("admin"), "proxy_connection_errors_total", map[string]string{"direction": "outbound", "reason": errLoop}); got != 2 {
		t.Errorf("loops counted = %v, want 2", got)
	}
	// Exactly the two client connections: the proxy never dialled itself.
	if got := metric(t, p.addr("admin"), "tcp_open_total", map[string]string{"direction": "outbound"}); got != 2 {
		t.Errorf("tcp_open_total{outbound} = %v, want 2", got)
	}
}
