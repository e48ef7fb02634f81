package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshtls/proxy/discovery"
)

// maxIdlePerHost keeps as many HTTP/1 connections to an endpoint as a
// burst needed: with fewer, a burst's extra connections are closed after
// one request and re-dialed (a new mTLS handshake each) by the next, which
// under load is a handshake storm.
const maxIdlePerHost = 1024

// maxHeaderBytes bounds a request's header block; larger ones get 431.
// It is net/http's default, so what works calling an application
// directly works through the mesh.
const maxHeaderBytes = http.DefaultMaxHeaderBytes

// expectContinueTimeout is how long a request with Expect: 100-continue
// waits for the upstream's 100 before its body is sent anyway. Waiting
// lets the upstream's own 100 (or refusal) reach the client; without it
// the server side would answer 100 itself as soon as the body is read,
// and the client would get two.
const expectContinueTimeout = time.Second

// inboundIdleTimeout is how long a connection to the local application
// may idle in the pool: shorter than common servers' keep-alive (Node 5 s,
// gunicorn 2 s is the one shorter), so the proxy rarely reuses a
// connection the application is closing (linkerd2-proxy's 3 s).
const inboundIdleTimeout = 3 * time.Second

// connServer is an http.Server fed with connections already detected as
// HTTP, unencrypted to it (TLS, if any, was terminated before), serving
// HTTP/1.1 and prior-knowledge HTTP/2 on the same connections.
type connServer struct {
	srv *http.Server
	ch  chan net.Conn
	// done closes when the server stops, so push never blocks forever.
	done chan struct{}
}

func (p *Proxy) newConnServer(direction string, h http.Handler) *connServer {
	cs := &connServer{ch: make(chan net.Conn), done: make(chan struct{})}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	cs.srv = &http.Server{
		Handler:        h,
		Protocols:      &protos,
		MaxHeaderBytes: maxHeaderBytes,
		// The frame size we accept is the peer's scratch buffer for each
		// request body it sends us: net/http's HTTP/2 client sizes it
		// min(our advertised maximum, 512 KiB) when the length is unknown,
		// as for every gRPC request. Our client-side proxy is that peer:
		// with the 1 MiB default each in-flight gRPC request held 512 KiB
		// (hundreds of MB under a burst) and cleared it when the pool was
		// empty. 16 KiB is HTTP/2's default and what gRPC servers use.
		HTTP2:             &http.HTTP2Config{MaxReadFrameSize: 16 << 10},
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          log.New(discardWriter{}, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if mc, ok := c.(*metaConn); ok {
				return context.WithValue(ctx, connMetaKey{}, mc.meta)
			}
			return ctx
		},
		ConnState: func(c net.Conn, s http.ConnState) {
			mc, ok := c.(*metaConn)
			if !ok {
				return
			}
			switch s {
			case http.StateActive:
				mc.meta.active.Store(true)
			case http.StateClosed:
				// net/http answered (400, 431) without reaching the
				// handler: a malformed request, counted here.
				if mc.meta.active.Load() && mc.meta.requests.Load() == 0 {
					p.m.errors.WithLabelValues(direction, errHTTPBad).Inc()
				}
				mc.meta.releaseSeries()
			case http.StateHijacked:
				mc.meta.releaseSeries()
			}
		},
	}
	return cs
}

type discardWriter struct{}

func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }

func (cs *connServer) run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		close(cs.done)
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = cs.srv.Shutdown(sctx)
	}()
	_ = cs.srv.Serve(cs)
}

func (cs *connServer) push(c net.Conn) {
	select {
	case cs.ch <- c:
	case <-cs.done:
		_ = c.Close()
	}
}

// Accept, Close and Addr make connServer the server's net.Listener.
func (cs *connServer) Accept() (net.Conn, error) {
	select {
	case c := <-cs.ch:
		return c, nil
	case <-cs.done:
		return nil, net.ErrClosed
	}
}

func (cs *connServer) Close() error   { return nil }
func (cs *connServer) Addr() net.Addr { return &net.TCPAddr{} }

func metaFrom(ctx context.Context) *connMeta {
	m, _ := ctx.Value(connMetaKey{}).(*connMeta)
	if m == nil {
		m = &connMeta{}
	}
	return m
}

type routeKey struct{}

// FlushInterval stays 0: ReverseProxy already flushes every write of a
// response without Content-Length (gRPC, streams, chunked), and a sized
// response is better sent in one write.

// bufPool reuses ReverseProxy's copy buffers, which otherwise are most of
// what a request allocates.
var bufPool = &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }

// forwardAsSent undoes what ReverseProxy's Rewrite mode changes that a
// transparent proxy must not: it removes the client's Forwarded and
// X-Forwarded-* headers and Proxy-Authorization (an egress proxy behind
// us needs it), and re-encodes the query. The request target goes on
// byte for byte, in absolute form when the client used it. Headers the
// client named in Connection stay removed, as hop-by-hop.
func forwardAsSent(pr *httputil.ProxyRequest, dst netip.AddrPort) {
	in, out := pr.In, pr.Out
	var hop map[string]bool
	for _, v := range in.Header["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				if hop == nil {
					hop = map[string]bool{}
				}
				hop[http.CanonicalHeaderKey(f)] = true
			}
		}
	}
	for _, h := range [...]string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Proxy-Authorization"} {
		if v, ok := in.Header[h]; ok && !hop[h] {
			out.Header[h] = v
		}
	}
	if target := in.RequestURI; target != "" && in.Method != http.MethodConnect {
		path, query, hasQuery := strings.Cut(target, "?")
		// A path starting "//" would read as an authority in Opaque;
		// the parsed path (re-escaped only where it must be) serves it.
		if strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "//") || strings.Contains(path, "://") {
			out.URL.Opaque = path
		}
		out.URL.RawQuery = query
		out.URL.ForceQuery = hasQuery && query == ""
	}
	// Request trailers arrive after the body, in In's map: Out's is a
	// copy taken before, which the transport would send empty.
	if in.Trailer != nil {
		out.Trailer = in.Trailer
	}
	out.Host = in.Host
	if out.Host == "" {
		// HTTP/1.0 without Host: the address the client connected to.
		out.Host = dst.String()
	}
}

// inboundHandler proxies requests to the local application on loopback at
// the port of the connection's original destination (appAddr).
func (p *Proxy) inboundHandler() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			dst := metaFrom(pr.In.Context()).dst
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = appAddr(dst).String()
			forwardAsSent(pr, dst)
		},
		Transport:    p.inboundRT,
		BufferPool:   bufPool,
		ErrorHandler: p.errorHandler(inbound),
		ErrorLog:     log.New(discardWriter{}, "", 0),
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect && r.ProtoMajor == 1 {
			p.tunnel(w, r, inbound, func(ctx context.Context) (net.Conn, error) {
				return p.newInboundTransportDial(ctx, appAddr(metaFrom(ctx).dst))
			})
			return
		}
		fullDuplex(w, r)
		rp.ServeHTTP(w, r)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		meta := metaFrom(r.Context())
		if meta.refuse != "" && !p.isProbe(r, meta) {
			p.refuseInbound(w, r, meta)
			return
		}
		meta.requests.Add(1)
		rs := p.series(meta, r.Host, func() labels {
			return meta.tls.labels(labels{"direction": inbound, "authority": p.m.authority(inbound, r.Host)})
		})
		p.observe(w, r, rs, meta, route{}, next)
	})
}

// fullDuplex lets an HTTP/1 response stream back while the request body
// is still arriving, as HTTP/2 always does: net/http's HTTP/1 server
// otherwise stops reading the body once the response starts, which cuts
// an echoing or streaming upstream short.
func fullDuplex(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.Body != nil && r.Body != http.NoBody {
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
}

// errLoopDetected answers a request addressed to the outbound listener
// itself: dialling it would connect the proxy to itself, again and again.
var errLoopDetected = errors.New("loop detected")

// outboundAddr is the outbound listener's address, once bound.
func (p *Proxy) outboundAddr() netip.AddrPort {
	if a := p.outboundSelf.Load(); a != nil {
		return *a
	}
	l := p.Addr(outbound)
	if l == nil {
		return netip.AddrPort{} // no outbound listener: nothing loops to it
	}
	a := addrPort(l)
	p.outboundSelf.Store(&a)
	return a
}

// isOutboundLoop reports whether dst is this proxy's own outbound
// listener: an application calling 127.0.0.1:4140 (an SSRF, a mistaken
// HTTP_PROXY) reaches it unredirected, and its original destination is
// the listener itself.
func (p *Proxy) isOutboundLoop(dst netip.AddrPort) bool {
	self := p.outboundAddr()
	if !self.IsValid() || dst.Port() != self.Port() {
		return false
	}
	a := dst.Addr().Unmap()
	return a == self.Addr() || a.IsLoopback() || a.IsUnspecified() || (p.cfg.PodIP != "" && a.String() == p.cfg.PodIP)
}

// outboundHandler resolves each request's destination and proxies it to
// the chosen endpoint, over mTLS when the endpoint has an identity.
func (p *Proxy) outboundHandler() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			r, _ := pr.In.Context().Value(routeKey{}).(route)
			pr.Out.URL.Scheme = "http"
			if r.tls.status == "true" {
				// Makes http.Transport use DialTLSContext, our mTLS.
				pr.Out.URL.Scheme = "https"
			}
			pr.Out.URL.Host = r.ep.Addr.String()
			forwardAsSent(pr, metaFrom(pr.In.Context()).dst)
		},
		Transport:    p.outboundRT,
		BufferPool:   bufPool,
		ErrorHandler: p.errorHandler(outbound),
		ErrorLog:     log.New(discardWriter{}, "", 0),
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, _ := r.Context().Value(routeKey{}).(route)
		if p.isOutboundLoop(metaFrom(r.Context()).dst) {
			p.m.errors.WithLabelValues(outbound, errLoop).Inc()
			p.errorHandler(outbound)(w, r, errLoopDetected)
			return
		}
		if r.Method == http.MethodConnect && r.ProtoMajor == 1 {
			p.tunnel(w, r, outbound, func(ctx context.Context) (net.Conn, error) {
				return p.connect(ctx, rt, []string{"http/1.1"})
			})
			return
		}
		fullDuplex(w, r)
		rp.ServeHTTP(w, r)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		meta := metaFrom(r.Context())
		meta.requests.Add(1)
		var rt route
		if p.isOutboundLoop(meta.dst) {
			// Answered 508 by the handler above: no discovery for it.
			rt = route{ep: discovery.Endpoint{Addr: meta.dst}, tls: tlsLoopback}
		} else {
			var err error
			if rt, err = p.pick(r.Context(), meta.dst); err != nil {
				p.refuseRequest(w, r, err)
				return
			}
		}
		rs := p.series(meta, r.Host+"\x00"+rt.ep.Addr.String()+"\x00"+rt.tls.status+"\x00"+rt.ep.Identity, func() labels {
			return rt.dstLabels(rt.tls.labels(labels{"direction": outbound, "authority": p.m.authority(outbound, r.Host)}))
		})
		r = r.WithContext(context.WithValue(r.Context(), routeKey{}, rt))
		p.observe(w, r, rs, meta, rt, next)
	})
}

// unavailable is implemented by errors that mean no endpoint can take
// the request now (fail fast, no endpoints): they answer 503.
type unavailable interface{ Unavailable() bool }

// proxyFailure is what a caller is told about a request the proxy could
// not forward: an HTTP status, the gRPC code for gRPC callers, and a
// message that names the cause without internals (no addresses, no
// certificate detail: an inbound caller may be anyone).
type proxyFailure struct {
	status int
	grpc   int // gRPC status code
	msg    string
}

// gRPC status codes the proxy answers with.
const (
	grpcDeadlineExceeded = 4
	grpcUnavailable      = 14
)

func classifyFailure(err error) proxyFailure {
	var he *handshakeError
	var u unavailable
	var ne net.Error
	switch {
	case errors.Is(err, errLoopDetected):
		return proxyFailure{http.StatusLoopDetected, grpcUnavailable, "loop detected: the request was addressed to the proxy's own outbound port"}
	case errors.As(err, &u) && u.Unavailable():
		return proxyFailure{http.StatusServiceUnavailable, grpcUnavailable, "no endpoint is available for the destination"}
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		if errors.As(err, &he) {
			return proxyFailure{http.StatusGatewayTimeout, grpcDeadlineExceeded, "the mTLS handshake with " + labelValue(he.identity) + " timed out (the request was not sent in plain text)"}
		}
		return proxyFailure{http.StatusGatewayTimeout, grpcDeadlineExceeded, "the destination did not answer in time"}
	case errors.As(err, &he):
		return proxyFailure{http.StatusBadGateway, grpcUnavailable, "the mTLS handshake with " + labelValue(he.identity) + " failed (the request was not sent in plain text)"}
	case errors.Is(err, syscall.ECONNREFUSED):
		return proxyFailure{http.StatusBadGateway, grpcUnavailable, "the destination refused the connection"}
	}
	return proxyFailure{http.StatusBadGateway, grpcUnavailable, "the connection to the destination failed"}
}

// isGRPC reports whether r is a gRPC call, which is answered in gRPC's
// terms: HTTP 200 with grpc-status.
func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

func (p *Proxy) errorHandler(direction string) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
			// The client went away; nobody is left to answer. observe
			// counts it as a failure, not a success.
			w.WriteHeader(statusClientClosed)
			return
		}
		f := classifyFailure(err)
		p.logLimited(slog.LevelDebug, "request failed", "direction", direction, "authority", labelValue(r.Host), "status", f.status, "error", err.Error())
		h := w.Header()
		h.Set("L5d-Proxy-Error", f.msg)
		if isGRPC(r) {
			h.Set("Content-Type", "application/grpc")
			h.Set("Grpc-Status", strconv.Itoa(f.grpc))
			h.Set("Grpc-Message", grpcMessage(f.msg))
			w.WriteHeader(http.StatusOK)
			return
		}
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(f.status)
		_, _ = fmt.Fprintf(w, "meshtls proxy: %s request failed: %s\n", direction, f.msg)
	}
}

// statusClientClosed records a request its client abandoned (nginx's 499).
const statusClientClosed = 499

// grpcMessage percent-encodes msg as grpc-message wants.
func grpcMessage(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// newInboundTransport forwards to the local application over the
// protocol the client spoke: HTTP/1.1, or prior-knowledge HTTP/2 (gRPC).
func (p *Proxy) newInboundTransport() http.RoundTripper {
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		return p.newInboundTransportDial(ctx, ap)
	}
	var h1, h2 http.Protocols
	h1.SetHTTP1(true)
	h2.SetUnencryptedHTTP2(true)
	return byProto{
		h1: &http.Transport{DialContext: dial, Protocols: &h1, MaxIdleConnsPerHost: maxIdlePerHost, IdleConnTimeout: inboundIdleTimeout, DisableCompression: true, MaxResponseHeaderBytes: maxHeaderBytes, ExpectContinueTimeout: expectContinueTimeout},
		// One connection for a burst of requests (see
		// outboundTransport.newTransport).
		h2: &http.Transport{DialContext: dial, Protocols: &h2, MaxConnsPerHost: 1, IdleConnTimeout: inboundIdleTimeout, DisableCompression: true, MaxResponseHeaderBytes: maxHeaderBytes, ExpectContinueTimeout: expectContinueTimeout},
	}
}

// newInboundTransportDial connects to the local application.
func (p *Proxy) newInboundTransportDial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: p.cfg.ConnectTimeout}
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		p.m.errors.WithLabelValues(inbound, errConnect).Inc()
		return nil, err
	}
	return p.m.track(c, inboundDstLabels()), nil
}

type byProto struct{ h1, h2 http.RoundTripper }

func (b byProto) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.ProtoMajor == 2 {
		return b.h2.RoundTrip(r)
	}
	return b.h1.RoundTrip(r)
}

// outboundTransport keeps one connection pool per endpoint, identity and
// protocol, so pooled connections never cross identities. Pools unused
// for the metrics retention period are dropped when a new one is made,
// so endpoints that came and went (a rollout's pods) do not pile up.
type outboundTransport struct {
	p  *Proxy
	mu sync.RWMutex
	ts map[poolKey]*pool
}

type pool struct {
	tr   *http.Transport
	last atomic.Int64 // unix nanoseconds of the last request
}

// poolKey is a comparable struct, not a formatted string: it is looked up
// on every request.
type poolKey struct {
	addr             netip.AddrPort
	status, identity string
	h2               bool
}

func (t *outboundTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rt, _ := r.Context().Value(routeKey{}).(route)
	key := poolKey{rt.ep.Addr, rt.tls.status, rt.ep.Identity, r.ProtoMajor == 2}
	t.mu.RLock()
	pl, ok := t.ts[key]
	t.mu.RUnlock()
	now := time.Now()
	if !ok {
		t.mu.Lock()
		if t.ts == nil {
			t.ts = map[poolKey]*pool{}
		}
		if pl, ok = t.ts[key]; !ok {
			t.pruneLocked(now)
			pl = &pool{tr: t.newTransport(rt, key.h2)}
			t.ts[key] = pl
		}
		t.mu.Unlock()
	}
	pl.last.Store(now.UnixNano())
	return pl.tr.RoundTrip(r)
}

// prune drops the pools unused for the retention period as of now; a
// request still running on one finishes on its connection.
func (t *outboundTransport) prune(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(now)
}

func (t *outboundTransport) pruneLocked(now time.Time) {
	cutoff := now.Add(-t.p.cfg.MetricsRetainIdle).UnixNano()
	for k, pl := range t.ts {
		if pl.last.Load() < cutoff {
			pl.tr.CloseIdleConnections()
			delete(t.ts, k)
		}
	}
}

func (t *outboundTransport) newTransport(rt route, h2 bool) *http.Transport {
	var protos http.Protocols
	alpn := []string{"http/1.1"}
	switch {
	case h2 && rt.tls.status == "true":
		protos.SetHTTP2(true)
		alpn = []string{"h2"}
	case h2:
		protos.SetUnencryptedHTTP2(true)
	default:
		protos.SetHTTP1(true)
	}
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return t.p.connect(ctx, rt, alpn)
	}
	tr := &http.Transport{
		DialContext:         dial,
		Protocols:           &protos,
		MaxIdleConnsPerHost: maxIdlePerHost,
		IdleConnTimeout:     90 * time.Second,
		// A proxy passes Accept-Encoding as the client sent it: left on,
		// the transport would ask for gzip itself and unpack the answer,
		// changing the response the client gets and costing CPU.
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxHeaderBytes,
		ExpectContinueTimeout:  expectContinueTimeout,
	}
	if rt.tls.status == "true" {
		tr.DialTLSContext = dial
	}
	if h2 {
		// One connection, dialled once: without the limit, a burst of
		// requests to a new peer dials one connection per request (the
		// transport cannot know before the handshake that it will be
		// HTTP/2 and shared) and closes all but one of them, an mTLS
		// handshake each on both proxies. The requests of the burst wait
		// for the first dial and share its connection.
		tr.MaxConnsPerHost = 1
	}
	return tr
}

// respWriter records what observe needs: the status, the time of the
// first byte and the body size.
type respWriter struct {
	http.ResponseWriter
	status  int
	first   time.Time
	bytes   int64
	onFirst func(status int)
}

// record notes the response's status once, at its first byte.
func (w *respWriter) record(code int) {
	if w.status != 0 {
		return
	}
	w.status = code
	w.first = time.Now()
	if w.onFirst != nil {
		w.onFirst(code)
	}
}

func (w *respWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.record(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.record(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack is how ReverseProxy relays a 101 Switching Protocols: it takes
// the connection and writes the response itself, never calling
// WriteHeader. It hijacks for nothing else, so the response is a 101 and
// this is its first byte.
func (w *respWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.record(http.StatusSwitchingProtocols)
	}
	return c, brw, err
}

func (w *respWriter) Flush() {
	if w.status == 0 {
		w.record(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		// ReverseProxy flushes every write of a gRPC response: the
		// direct assertion spares a ResponseController each time.
		f.Flush()
		return
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// observe runs one request through next and records it: request_total at
// once, response_total and response_latency_ms (time to first byte) when
// it ends, and tap events for any stream that matches.
func (p *Proxy) observe(w http.ResponseWriter, r *http.Request, rs *reqSeries, meta *connMeta, rt route, next http.Handler) {
	start := time.Now()
	defer rs.release()
	rs.req.m.Inc()
	tr := p.tap.requestInit(r, meta, rt, rs.l, start)
	rw := &respWriter{ResponseWriter: w}
	if tr != nil {
		rw.onFirst = func(code int) { tr.responseInit(code, time.Since(start)) }
	}
	var reqBytes countingBody
	if r.Body != nil && r.Body != http.NoBody {
		reqBytes.ReadCloser = r.Body
		r.Body = &reqBytes
	}
	defer func() {
		rec := recover()
		status := rw.status
		if status == 0 {
			status = http.StatusBadGateway
		}
		first := rw.first
		if first.IsZero() {
			first = time.Now()
		}
		if rec == http.ErrAbortHandler && rw.status != 0 && isGRPC(r) && r.Context().Err() == nil && grpcStatus(rw.Header()) == "" {
			// The upstream failed mid-stream. A gRPC client is told so
			// in gRPC's terms, as trailers it can act on (UNAVAILABLE
			// is retryable), rather than a reset it reads as INTERNAL.
			rw.Header().Set(http.TrailerPrefix+"Grpc-Status", strconv.Itoa(grpcUnavailable))
			rw.Header().Set(http.TrailerPrefix+"Grpc-Message", grpcMessage("the upstream stream ended before its status"))
			rec = nil
		}
		grpc := grpcStatusLabel(grpcStatus(rw.Header()))
		class := "success"
		if status >= 500 || status == statusClientClosed || (grpc != "" && grpc != "0") || rec != nil {
			class = "failure"
		}
		rs.record(p.m, status, class, grpc, float64(first.Sub(start).Microseconds())/1000)
		if tr != nil {
			tr.responseEnd(status, grpc, rec != nil, labelValue(rw.Header().Get("L5d-Proxy-Error")), time.Since(start), time.Since(first), rw.bytes, reqBytes.n.Load())
		}
		if rec != nil {
			panic(rec)
		}
	}()
	next.ServeHTTP(rw, r)
}

// reqSeries are the metrics of one label set of requests, cached on the
// connection: requests on a kept-alive connection mostly share them, and
// building and sorting labels was the proxy's own largest per-request cost.
// Its holders are the connection's cache and the requests in flight; the
// last to release it releases the series underneath, so they can be
// swept once idle.
type reqSeries struct {
	l    labels
	req  *series[prometheus.Counter]
	refs atomic.Int32
	mu   sync.Mutex
	rsp  map[rspKey]rspSeries
}

type rspKey struct {
	status      int
	class, grpc string
}

type rspSeries struct {
	latency *series[prometheus.Histogram]
	count   *series[prometheus.Counter]
}

func (s rspSeries) release() {
	s.latency.release()
	s.count.release()
}

func (rs *reqSeries) release() {
	if rs.refs.Add(-1) != 0 {
		return
	}
	rs.req.release()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, s := range rs.rsp {
		s.release()
	}
	rs.rsp = nil
}

// record counts one response. A request holds rs meanwhile.
func (rs *reqSeries) record(m *metrics, status int, class, grpc string, latencyMs float64) {
	k := rspKey{status, class, grpc}
	rs.mu.Lock()
	s, ok := rs.rsp[k]
	if !ok {
		rl := rs.l.with("status_code", strconv.Itoa(status))
		s = rspSeries{latency: m.latency.hold(rl), count: m.responses.hold(rl.with("classification", class, "grpc_status", grpc))}
		if len(rs.rsp) < 64 {
			rs.rsp[k] = s
			ok = true
		}
	}
	rs.mu.Unlock()
	s.latency.m.Observe(latencyMs)
	s.count.m.Inc()
	if !ok {
		s.release()
	}
}

// connClosed marks a connection's series cache closed (no more entries
// are added) and releases what it holds.
const connClosed = 1 << 30

func (meta *connMeta) releaseSeries() {
	meta.nSeries.Store(connClosed)
	meta.series.Range(func(k, v any) bool {
		if _, ok := meta.series.LoadAndDelete(k); ok {
			v.(*reqSeries).release()
		}
		return true
	})
}

// series finds the request series for key on this connection, building
// its labels only on a miss, held for the caller's request. A connection
// holds at most 64 label sets.
func (p *Proxy) series(meta *connMeta, key string, mk func() labels) *reqSeries {
	if v, ok := meta.series.Load(key); ok {
		rs := v.(*reqSeries)
		rs.refs.Add(1)
		return rs
	}
	l := mk()
	rs := &reqSeries{l: l, req: p.m.requests.hold(l), rsp: map[rspKey]rspSeries{}}
	rs.refs.Store(1)
	if meta.nSeries.Add(1) <= 64 {
		rs.refs.Add(1)
		if _, loaded := meta.series.LoadOrStore(key, rs); loaded {
			rs.refs.Add(-1)
		} else if meta.nSeries.Load() >= connClosed {
			// The connection closed meanwhile: take it back.
			if _, ok := meta.series.LoadAndDelete(key); ok {
				rs.release()
			}
		}
	}
	return rs
}

type countingBody struct {
	io.ReadCloser
	n atomic.Int64 // the transport may still read while observe finishes
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func grpcStatus(h http.Header) string {
	if v := h.Get("Grpc-Status"); v != "" {
		return v
	}
	return h.Get(http.TrailerPrefix + "Grpc-Status")
}
