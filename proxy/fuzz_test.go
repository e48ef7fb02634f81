package proxy

import (
	"bufio"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// FuzzLabelValues: whatever bytes a peer puts in an authority or a
// grpc-status, the series made from them gathers without error (an
// error would turn every scrape into a 500), the values are bounded, and
// a grpc_status label is a number, empty or the placeholder.
func FuzzLabelValues(f *testing.F) {
	for _, s := range [][2]string{
		{"web.ns.svc.cluster.local:8080", "0"}, {"\xff\xfe:80", "\xff"}, {"", ""}, {"a\x00b", "16"},
		{strings.Repeat("h", 600), "007"}, {"日本.example", "-1"}, {"host\r\nX: y", "99999"}, {"ok", " 1"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, authority, grpcStatus string) {
		m := newMetrics(0, 4)
		a := m.authority(inbound, authority)
		if !utf8.ValidString(a) || len(a) > maxLabelLen {
			t.Fatalf("authority label %q from %q", a, authority)
		}
		if validLabel(authority) && a != authority && a != overflowLabel {
			t.Fatalf("a valid authority %q became %q", authority, a)
		}
		g := grpcStatusLabel(grpcStatus)
		if g != "" && g != invalidLabel {
			if _, err := strconv.ParseUint(g, 10, 16); err != nil {
				t.Fatalf("grpc_status label %q from %q", g, grpcStatus)
			}
		}
		l := labels{"direction": inbound, "authority": a, "grpc_status": g, "raw": authority}
		m.responses.use(l, func(c prometheus.Counter) { c.Inc() })
		m.latency.use(labels{"authority": grpcStatus}, func(h prometheus.Histogram) { h.Observe(1) })
		reg := prometheus.NewRegistry()
		reg.MustRegister(m.responses, m.latency)
		if _, err := reg.Gather(); err != nil {
			t.Fatalf("gather after authority %q, grpc-status %q: %v", authority, grpcStatus, err)
		}
		if v := l.valid(); len(v) != len(l) {
			t.Fatalf("valid() changed the label names: %v", v)
		}
	})
}

// FuzzForwardAsSent: for any request net/http accepts, the request the
// proxy sends on has the same target, byte for byte (origin and absolute
// form), and the client's forwarding headers, unless the client named
// them hop-by-hop.
func FuzzForwardAsSent(f *testing.F) {
	for _, s := range []string{
		"GET /echo?filter=a;b&page=2 HTTP/1.1\r\nHost: b\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
		"GET http://egress.example/x?y HTTP/1.1\r\nHost: egress.example\r\nProxy-Authorization: Basic eA==\r\n\r\n",
		"GET //double/slash?%zz HTTP/1.1\r\nHost: b\r\n\r\n",
		"GET /a%2Fb%20c? HTTP/1.1\r\nHost: b\r\nConnection: X-Forwarded-Host\r\nX-Forwarded-Host: h\r\n\r\n",
		"POST /x HTTP/1.0\r\nForwarded: for=\"[::1]\"\r\nContent-Length: 0\r\n\r\n",
		"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		in, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		out := in.Clone(in.Context())
		out.Header.Del("Forwarded")
		out.Header.Del("X-Forwarded-For")
		out.Header.Del("Proxy-Authorization")
		out.URL.Scheme, out.URL.Host = "http", "10.0.0.1:8080"
		dst := netip.MustParseAddrPort("10.0.0.9:80")
		forwardAsSent(&httputil.ProxyRequest{In: in, Out: out}, dst)
		if in.Method != http.MethodConnect {
			target, _, _ := strings.Cut(in.RequestURI, "?")
			if !strings.HasPrefix(target, "//") && out.URL.RequestURI() != in.RequestURI {
				t.Fatalf("target %q went on as %q", in.RequestURI, out.URL.RequestURI())
			}
		}
		hop := strings.ToLower(strings.Join(in.Header["Connection"], ","))
		for _, h := range []string{"Forwarded", "X-Forwarded-For", "Proxy-Authorization"} {
			named := strings.Contains(hop, strings.ToLower(h))
			if v, ok := in.Header[h]; ok && !named && strings.Join(out.Header[h], "\x00") != strings.Join(v, "\x00") {
				t.Fatalf("%s %q went on as %q", h, v, out.Header[h])
			}
		}
		if out.Host == "" {
			t.Fatalf("no Host for %q", raw)
		}
	})
}
