package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maxIdlePerHost keeps as many HTTP/1 connections to an endpoint as a
// burst needed: with fewer, a burst's extra connections are closed after
// one request and re-dialed (a new mTLS handshake each) by the next, which
// under load is a handshake storm.
const maxIdlePerHost = 1024

// maxHeaderBytes bounds a request's header block; larger ones get 431.
const maxHeaderBytes = 64 << 10

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

// inboundHandler proxies requests to the local application at the
// connection's original destination.
func (p *Proxy) inboundHandler() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = metaFrom(pr.In.Context()).dst.String()
			pr.Out.Host = pr.In.Host
		},
		Transport:    p.inboundRT,
		BufferPool:   bufPool,
		ErrorHandler: p.errorHandler(inbound),
		ErrorLog:     log.New(discardWriter{}, "", 0),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		meta := metaFrom(r.Context())
		meta.requests.Add(1)
		rs := p.series(meta, r.Host, func() labels {
			return meta.tls.labels(labels{"direction": inbound, "authority": r.Host})
		})
		p.observe(w, r, rs, meta, route{}, rp)
	})
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
			pr.Out.Host = pr.In.Host
		},
		Transport:    p.outboundRT,
		BufferPool:   bufPool,
		ErrorHandler: p.errorHandler(outbound),
		ErrorLog:     log.New(discardWriter{}, "", 0),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		meta := metaFrom(r.Context())
		meta.requests.Add(1)
		rt, err := p.pick(r.Context(), meta.dst)
		if err != nil {
			p.refuseRequest(w, r, err)
			return
		}
		rs := p.series(meta, r.Host+"\x00"+rt.ep.Addr.String()+"\x00"+rt.tls.status+"\x00"+rt.ep.Identity, func() labels {
			return rt.dstLabels(rt.tls.labels(labels{"direction": outbound, "authority": r.Host}))
		})
		r = r.WithContext(context.WithValue(r.Context(), routeKey{}, rt))
		p.observe(w, r, rs, meta, rt, rp)
	})
}

func (p *Proxy) errorHandler(direction string) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		if errors.Is(err, context.Canceled) {
			// The client went away; nobody is left to answer.
			w.WriteHeader(499)
			return
		}
		var he *handshakeError
		msg := "meshtls proxy: " + direction + " request to " + r.Host + " failed: " + err.Error()
		if errors.As(err, &he) {
			msg = "meshtls proxy: " + he.Error() + " (the request was not sent in plain text)"
		}
		p.log.Debug("request failed", "direction", direction, "authority", r.Host, "error", err.Error())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("l5d-proxy-error", "1")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = fmt.Fprintln(w, msg)
	}
}

// newInboundTransport forwards to the local application over the
// protocol the client spoke: HTTP/1.1, or prior-knowledge HTTP/2 (gRPC).
func (p *Proxy) newInboundTransport() http.RoundTripper {
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: p.cfg.ConnectTimeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			p.m.errors.WithLabelValues(inbound, errConnect).Inc()
			return nil, err
		}
		return p.m.track(c, inboundDstLabels()), nil
	}
	var h1, h2 http.Protocols
	h1.SetHTTP1(true)
	h2.SetUnencryptedHTTP2(true)
	return byProto{
		h1: &http.Transport{DialContext: dial, Protocols: &h1, MaxIdleConnsPerHost: maxIdlePerHost, IdleConnTimeout: 90 * time.Second, DisableCompression: true},
		h2: &http.Transport{DialContext: dial, Protocols: &h2, IdleConnTimeout: 90 * time.Second, DisableCompression: true},
	}
}

type byProto struct{ h1, h2 http.RoundTripper }

func (b byProto) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.ProtoMajor == 2 {
		return b.h2.RoundTrip(r)
	}
	return b.h1.RoundTrip(r)
}

// outboundTransport keeps one connection pool per endpoint, identity and
// protocol, so pooled connections never cross identities.
type outboundTransport struct {
	p  *Proxy
	mu sync.RWMutex
	ts map[poolKey]*http.Transport
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
	tr, ok := t.ts[key]
	t.mu.RUnlock()
	if !ok {
		t.mu.Lock()
		if t.ts == nil {
			t.ts = map[poolKey]*http.Transport{}
		}
		if tr, ok = t.ts[key]; !ok {
			tr = t.newTransport(rt, key.h2)
			t.ts[key] = tr
		}
		t.mu.Unlock()
	}
	return tr.RoundTrip(r)
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
		DisableCompression: true,
	}
	if rt.tls.status == "true" {
		tr.DialTLSContext = dial
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

func (w *respWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		w.status = code
		w.first = time.Now()
		if w.onFirst != nil {
			w.onFirst(code)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *respWriter) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
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
	rs.req.Inc()
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
		grpc := grpcStatus(rw.Header())
		class := "success"
		if status >= 500 || (grpc != "" && grpc != "0") || rec != nil {
			class = "failure"
		}
		out := rs.response(p.m, status, class, grpc)
		out.latency.Observe(float64(first.Sub(start).Microseconds()) / 1000)
		out.count.Inc()
		if tr != nil {
			errMsg := ""
			if rw.Header().Get("l5d-proxy-error") != "" {
				errMsg = "proxy error"
			}
			tr.responseEnd(status, grpc, rec != nil, errMsg, time.Since(start), time.Since(first), rw.bytes, reqBytes.n.Load())
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
type reqSeries struct {
	l   labels
	req prometheus.Counter
	mu  sync.Mutex
	rsp map[rspKey]rspSeries
}

type rspKey struct {
	status      int
	class, grpc string
}

type rspSeries struct {
	latency prometheus.Observer
	count   prometheus.Counter
}

func (rs *reqSeries) response(m *metrics, status int, class, grpc string) rspSeries {
	k := rspKey{status, class, grpc}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if s, ok := rs.rsp[k]; ok {
		return s
	}
	rl := rs.l.with("status_code", strconv.Itoa(status))
	s := rspSeries{latency: m.latency.get(rl), count: m.responses.get(rl.with("classification", class, "grpc_status", grpc))}
	if len(rs.rsp) < 64 {
		rs.rsp[k] = s
	}
	return s
}

// series finds the request series for key on this connection, building
// its labels only on a miss. A connection holds at most 64 label sets.
func (p *Proxy) series(meta *connMeta, key string, mk func() labels) *reqSeries {
	if v, ok := meta.series.Load(key); ok {
		return v.(*reqSeries)
	}
	l := mk()
	rs := &reqSeries{l: l, req: p.m.requests.get(l), rsp: map[rspKey]rspSeries{}}
	if meta.nSeries.Add(1) <= 64 {
		meta.series.Store(key, rs)
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
