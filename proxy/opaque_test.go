package proxy

import (
	"bufio"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// greeter is a server-speaks-first service (as SMTP, MySQL, Redis'
// replies): it greets on connect, then echoes lines.
func greeter(t *testing.T) (string, uint16) {
	t.Helper()
	addr := opaqueServer(t, func(c *net.TCPConn) {
		_, _ = c.Write([]byte("220 greeter ready\r\n"))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("echo " + line))
		}
	})
	return addr, netip.MustParseAddrPort(addr).Port()
}

// TestServerSpeaksFirstOnOpaquePorts: on an opaque port the server's
// greeting reaches the client through a proxy pair over mTLS, and straight
// into the server's proxy from an unmeshed client, well before the
// detection timeout (it used to wait the whole timeout, 10s by default,
// for the client to speak first).
func TestServerSpeaksFirstOnOpaquePorts(t *testing.T) {
	addr, port := greeter(t)
	const detect = 30 * time.Second // a stall would wait this long
	m := newMesh(t, meshOpts{idA: idA, idB: idB,
		tuneA: func(c *Config) { c.DetectTimeout, c.OpaquePorts = detect, PortSet{8080: true} },
		tuneB: func(c *Config) { c.DetectTimeout, c.OpaquePorts = detect, PortSet{port: true} },
	})
	m.b.setOrigDst(addr)
	talk := func(via string) {
		t.Helper()
		c, err := net.Dial("tcp", via)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(detect / 3))
		r := bufio.NewReader(c)
		greeting, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(greeting, "220 ") {
			t.Fatalf("via %s: greeting %q, %v", via, greeting, err)
		}
		_, _ = c.Write([]byte("hello\r\n"))
		if echo, err := r.ReadString('\n'); err != nil || echo != "echo hello\r\n" {
			t.Fatalf("via %s: echo %q, %v", via, echo, err)
		}
	}
	talk(m.a.addr("outbound"))
	if got := metric(t, m.b.addr("admin"), "tcp_open_total", map[string]string{"direction": "inbound", "peer": "src", "tls": "true"}); got != 1 {
		t.Errorf("mTLS connections into B = %v, want 1", got)
	}
	talk(m.b.addr("inbound"))
	if got := metric(t, m.b.addr("admin"), "tcp_open_total", map[string]string{"direction": "inbound", "peer": "src", "tls": "no_identity"}); got != 1 {
		t.Errorf("plain connections into B = %v, want 1", got)
	}
}
