// Package proxy is the meshtls sidecar: a transparent proxy for a pod's
// inbound (4143) and outbound (4140) traffic that detects HTTP/1.1, HTTP/2
// and gRPC, originates and terminates mutual TLS between meshed pods, and
// exports linkerd2-proxy's metrics (admin, 4191) and a tap stream (4190).
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"meshtls/proxy/discovery"
)

// Config is what the proxy needs; FromEnv reads it from the environment
// inject writes.
type Config struct {
	InboundAddr, OutboundAddr, AdminAddr, TapAddr string

	PodNamespace, PodName, PodIP string
	// Identity is this pod's TLS identity; empty when the pod was injected
	// without TLS.
	Identity           string
	ControllerIdentity string
	// TapIdentity is the only client identity the tap port serves.
	TapIdentity       string
	CertFile, KeyFile string
	TrustAnchorsFile  string

	// Resolver answers where outbound destinations lead and which
	// identity they serve. Nil means nothing is known: all outbound
	// traffic is plain text, not_provided_by_service_discovery.
	Resolver discovery.Resolver

	// DetectTimeout bounds protocol detection and the inbound TLS
	// handshake; ConnectTimeout bounds dialing and outbound handshakes.
	DetectTimeout  time.Duration
	ConnectTimeout time.Duration
	// ResolveTimeout bounds the wait for discovery's first answer.
	ResolveTimeout time.Duration
	// ClusterNetworks are the networks discovery is asked about; traffic
	// to any other address is plain text without asking. Empty means
	// every non-loopback address is asked about (discovery's "not found"
	// is then the cluster's answer).
	ClusterNetworks []netip.Prefix
	// OpaquePorts are original destination ports forwarded as opaque TCP
	// without waiting for protocol detection: their servers speak first.
	OpaquePorts PortSet
	// DrainDelay is how long the listeners keep accepting once Run's
	// context ends (SIGTERM), while peers may still send to this pod;
	// ShutdownGrace then bounds how long in-flight requests and open
	// connections (opaque and upgraded too) may take to finish.
	DrainDelay, ShutdownGrace time.Duration
	// ReadyWait is how long /ready waits for the certificate of a
	// TLS-injected pod before reporting ready in plain text anyway.
	ReadyWait time.Duration
	// ReloadPoll is the backstop period for re-reading the TLS files.
	ReloadPoll time.Duration
	// TapBuffer is the events each tap stream may queue before dropping.
	TapBuffer int

	// MetricsRetainIdle is how long a metric series no connection holds
	// is kept after its last use (linkerd2-proxy's 10 minutes).
	MetricsRetainIdle time.Duration
	// MaxAuthorities bounds the authority label values kept per
	// direction; further authorities share one series.
	MaxAuthorities int
	// TCPIdleTimeout closes an opaque connection that carried no bytes
	// either way for this long.
	TCPIdleTimeout time.Duration

	// RequireTLS refuses inbound application traffic that is not mTLS
	// from a mesh identity (linkerd.io/tls: required), except the
	// kubelet's Probes and TLSExemptPorts (required.go).
	RequireTLS     bool
	Probes         Probes
	TLSExemptPorts PortSet

	// OrigDst finds an accepted connection's original destination; nil
	// means SO_ORIGINAL_DST. Tests without iptables set it.
	OrigDst func(c net.Conn, direction string) (netip.AddrPort, error)

	Log *slog.Logger
}

func (c *Config) defaults() {
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = time.Second
	}
	if c.DetectTimeout == 0 {
		c.DetectTimeout = 10 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.ResolveTimeout == 0 {
		c.ResolveTimeout = 3 * time.Second
	}
	if c.ReadyWait == 0 {
		c.ReadyWait = 30 * time.Second
	}
	if c.ReloadPoll == 0 {
		c.ReloadPoll = 10 * time.Second
	}
	if c.TapBuffer == 0 {
		c.TapBuffer = 1000
	}
	if c.MetricsRetainIdle == 0 {
		c.MetricsRetainIdle = 10 * time.Minute
	}
	if c.MaxAuthorities == 0 {
		c.MaxAuthorities = 1000
	}
	if c.TCPIdleTimeout == 0 {
		c.TCPIdleTimeout = time.Hour
	}
	if c.OrigDst == nil {
		c.OrigDst = func(c net.Conn, _ string) (netip.AddrPort, error) { return OriginalDst(c) }
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// opaqueTLSWait is how long the inbound side of an opaque port waits for a
// peer proxy's ClientHello (sent as soon as it connects) before treating
// the connection as a plain client waiting for the server to speak.
const opaqueTLSWait = time.Second

// Directions, as the metrics' direction label spells them.
const (
	inbound  = "inbound"
	outbound = "outbound"
)

// tlsStatus is a connection's or request's tls label and what goes with it.
type tlsStatus struct {
	status, reason, clientID, serverID string
}

// The tls label's values and no_tls_reason's.
var (
	tlsFromRemote    = tlsStatus{status: "no_identity", reason: "no_tls_from_remote"}
	tlsNoDiscovery   = tlsStatus{status: "no_identity", reason: "not_provided_by_service_discovery"}
	tlsLoopback      = tlsStatus{status: "no_identity", reason: "loopback"}
	tlsNotConfigured = tlsStatus{status: "disabled", reason: "not_configured"}
)

func (t tlsStatus) labels(l labels) labels {
	return l.with("tls", t.status, "no_tls_reason", t.reason, "client_id", t.clientID, "server_id", t.serverID)
}

// connMeta travels with an accepted connection into the HTTP server.
type connMeta struct {
	direction string
	src       netip.AddrPort
	dst       netip.AddrPort // the original destination
	tls       tlsStatus
	// refuse is why a required pod refuses this connection's requests.
	refuse   string
	requests atomic.Int64
	active   atomic.Bool
	// series caches the request metrics of this connection's label sets.
	series  sync.Map
	nSeries atomic.Int32
}

type connMetaKey struct{}

// Proxy is one running sidecar.
type Proxy struct {
	cfg Config
	log *slog.Logger
	m   *metrics
	id  *identityStore
	tap *tapHub

	refusals   *refusals
	inRefusals *inboundRefusals

	inboundHTTP, outboundHTTP *connServer
	inboundRT, outboundRT     http.RoundTripper

	started      time.Time
	ready        atomic.Bool
	draining     atomic.Bool
	live         connSet
	inboundPort  atomic.Uint32
	outboundSelf atomic.Pointer[netip.AddrPort]
	// Addresses actually bound, for tests that listen on port 0.
	addrs   map[string]net.Addr
	addrsMu sync.Mutex
	bound   chan struct{}
}

// New builds a proxy; Run starts it.
func New(cfg Config) *Proxy {
	cfg.defaults()
	p := &Proxy{cfg: cfg, log: cfg.Log, m: newMetrics(cfg.MetricsRetainIdle, cfg.MaxAuthorities), addrs: map[string]net.Addr{}, bound: make(chan struct{})}
	p.id = newIdentityStore(&p.cfg, p.m, p.log)
	p.refusals = newRefusals(p.m.reg)
	p.inRefusals = newInboundRefusals(p.m.reg)
	self := map[string]string{}
	if cfg.PodNamespace != "" {
		self["namespace"] = cfg.PodNamespace
	}
	if cfg.PodName != "" {
		self["pod"] = cfg.PodName
	}
	p.tap = newTapHub(p.m, cfg.TapBuffer, self)
	p.inboundRT = p.newInboundTransport()
	p.outboundRT = &outboundTransport{p: p}
	p.inboundHTTP = p.newConnServer(inbound, p.inboundHandler())
	p.outboundHTTP = p.newConnServer(outbound, p.outboundHandler())
	return p
}

// Addr is the address a listener ("inbound", "outbound", "admin", "tap")
// is bound to, once Run has bound it.
func (p *Proxy) Addr(name string) net.Addr {
	<-p.bound
	p.addrsMu.Lock()
	defer p.addrsMu.Unlock()
	return p.addrs[name]
}

// Run serves until ctx ends. It fails only when a listener cannot bind.
func (p *Proxy) Run(ctx context.Context) error {
	p.started = time.Now()
	p.id.reload()
	if p.id.configured() && p.id.current() == nil {
		p.log.Warn("TLS credentials not available yet: not ready, and no traffic to peers with an identity, until they appear", "identity", p.cfg.Identity)
	}
	if !p.id.configured() {
		p.log.Info("TLS not configured for this pod: plain text only")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Shutdown runs in stages (drain): ctx ends it; serving ends when the
	// listeners stop accepting; life when the admin server and the
	// credential watch stop, last.
	serving, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	life, endLife := context.WithCancel(context.Background())
	defer endLife()
	type ln struct {
		name, addr string
		serve      func(context.Context, net.Listener) error
	}
	lns := []ln{
		{inbound, p.cfg.InboundAddr, p.acceptLoop(p.serveInbound)},
		{outbound, p.cfg.OutboundAddr, p.acceptLoop(p.serveOutbound)},
		{"admin", p.cfg.AdminAddr, func(_ context.Context, l net.Listener) error { return p.serveAdmin(life, l) }},
		{"tap", p.cfg.TapAddr, p.serveTap},
	}
	type bound struct {
		ln
		lis net.Listener
	}
	var listeners []bound
	closeAll := func() {
		for _, o := range listeners {
			_ = o.lis.Close()
		}
	}
	for _, l := range lns {
		if l.addr == "" {
			continue
		}
		lis, err := net.Listen("tcp", l.addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("%s listener on %s: %w", l.name, l.addr, err)
		}
		listeners = append(listeners, bound{l, lis})
		p.addrsMu.Lock()
		p.addrs[l.name] = lis.Addr()
		if l.name == inbound {
			p.inboundPort.Store(uint32(addrPort(lis.Addr()).Port()))
		}
		p.addrsMu.Unlock()
		if l.name != inbound && l.name != outbound {
			continue
		}
		// proxy-init redirects IPv6 too: the same port on the IPv6
		// address it redirects to must answer, or IPv6 would fail.
		six := ipv6Companion(l.addr, lis.Addr())
		if six == "" {
			continue
		}
		lis6, err := net.Listen("tcp6", six)
		switch {
		case err == nil:
			listeners = append(listeners, bound{ln{l.name, six, l.serve}, lis6})
		case errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT):
			p.log.Info("IPv6 is off in this pod: listening on IPv4 only", "listener", l.name, "error", err.Error())
		default:
			closeAll()
			return fmt.Errorf("%s listener on %s (IPv6): %w", l.name, six, err)
		}
	}
	close(p.bound)
	p.ready.Store(true)
	p.log.Info("proxy listening", "inbound", p.cfg.InboundAddr, "outbound", p.cfg.OutboundAddr, "admin", p.cfg.AdminAddr, "tap", p.cfg.TapAddr, "identity", p.cfg.Identity)

	var wg sync.WaitGroup
	errs := make(chan error, len(listeners))
	for _, b := range listeners {
		wg.Go(func() {
			if err := b.serve(serving, b.lis); err != nil && serving.Err() == nil {
				errs <- fmt.Errorf("%s: %w", b.name, err)
				cancel()
			}
		})
	}
	wg.Go(func() { p.id.watch(life, p.cfg.ReloadPoll) })
	wg.Go(func() { p.m.sweepEvery(life) })
	wg.Go(func() { p.inboundHTTP.run(serving) })
	wg.Go(func() { p.outboundHTTP.run(serving) })
	<-ctx.Done()
	p.drain(len(errs) > 0, stopServing)
	closeAll()
	endLife()
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// drain is the proxy's shutdown once Run's context ends (SIGTERM). The
// pod is terminating and its endpoints are being removed, but peers that
// have not heard yet still send to it: for DrainDelay it keeps accepting
// (and /ready says it is draining); then the listeners close, and
// requests, streams and opaque or upgraded connections in flight get up
// to ShutdownGrace to finish before the rest are closed. A listener that
// failed skips the delay.
func (p *Proxy) drain(failed bool, stopServing context.CancelFunc) {
	p.draining.Store(true)
	if !failed && p.cfg.DrainDelay > 0 {
		p.log.Info("shutting down: still serving while peers drop this endpoint", "for", p.cfg.DrainDelay.String())
		time.Sleep(p.cfg.DrainDelay)
	}
	stopServing()
	grace, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownGrace)
	defer cancel()
	if !p.live.wait(grace) {
		n := p.live.closeAll()
		p.log.Warn("shutdown grace period over: closing connections still open", "connections", n, "grace", p.cfg.ShutdownGrace.String())
	}
}

func (p *Proxy) acceptLoop(handle func(context.Context, net.Conn)) func(context.Context, net.Listener) error {
	return func(ctx context.Context, l net.Listener) error {
		go func() { <-ctx.Done(); _ = l.Close() }()
		var delay time.Duration
		for {
			c, err := l.Accept()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				// Out of file descriptors and the like: back off, as
				// net/http does, rather than spin or die.
				var ne net.Error
				if errors.As(err, &ne) {
					delay = min(max(2*delay, 5*time.Millisecond), time.Second)
					time.Sleep(delay)
					continue
				}
				return err
			}
			delay = 0
			go handle(ctx, p.live.add(c))
		}
	}
}

// ipv6Companion is the IPv6 address to listen on beside addr, where
// proxy-init's rules send IPv6 traffic: [::1] beside the outbound side's
// 127.0.0.1, [::] beside 0.0.0.0 when Go did not already bind it
// dual-stack. None for other addresses, nor for port 0 (tests).
func ipv6Companion(addr string, got net.Addr) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 0 {
		return ""
	}
	switch {
	case ap.Addr() == netip.AddrFrom4([4]byte{127, 0, 0, 1}):
		return netip.AddrPortFrom(netip.IPv6Loopback(), ap.Port()).String()
	case ap.Addr() == netip.IPv4Unspecified() && got.(*net.TCPAddr).IP.To4() != nil:
		return netip.AddrPortFrom(netip.IPv6Unspecified(), ap.Port()).String()
	}
	return ""
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// serveInbound handles one connection redirected to the inbound port:
// detect, terminate TLS meant for this pod, then proxy HTTP or bytes to
// the local application on loopback at the original destination's port.
func (p *Proxy) serveInbound(_ context.Context, conn net.Conn) {
	raw := conn
	meta := &connMeta{direction: inbound, src: addrPort(raw.RemoteAddr())}
	dst, err := p.cfg.OrigDst(socketOf(conn), inbound)
	if err != nil {
		p.fail(raw, inbound, errConnect, "no original destination", err)
		return
	}
	meta.dst = dst
	// On an opaque port the client may be waiting for the server to speak
	// first: wait only briefly for a peer proxy's ClientHello, then pass
	// the connection on as it is.
	opaque := p.cfg.OpaquePorts[dst.Port()]
	timeout := p.cfg.DetectTimeout
	if opaque {
		timeout = min(timeout, opaqueTLSWait)
	}
	proto, buf, err := detect(raw, timeout)
	if opaque && proto != TLS {
		proto, err = Opaque, nil
	}
	if err != nil {
		p.failDetect(raw, inbound, err)
		return
	}
	var c net.Conn = &replayConn{Conn: raw, buf: buf}
	meta.tls = tlsFromRemote
	creds := p.id.current()
	if creds == nil {
		meta.tls = tlsNotConfigured
	}
	if proto == TLS && (creds != nil || p.id.configured()) {
		tc, terminated, err := p.acceptTLS(c, creds)
		if err != nil {
			p.fail(raw, inbound, errTLSInbound, "inbound TLS handshake failed", err, "src", meta.src.String())
			return
		}
		c = tc
		if terminated {
			meta.tls = tlsStatus{status: "true", clientID: peerIdentity(tc.(*tls.Conn).ConnectionState())}
			proto, buf, err = Opaque, nil, nil
			if !opaque {
				proto, buf, err = detect(tc, p.cfg.DetectTimeout)
			}
			if err != nil {
				p.failDetect(tc, inbound, err)
				return
			}
			c = &replayConn{Conn: tc, buf: buf}
		}
	}
	if uint32(dst.Port()) == p.inboundPort.Load() {
		// Addressed to the proxy itself (a direct connection to 4143, as
		// `openssl s_client` or `check --tls` make): there is no
		// application behind it, and forwarding would loop.
		p.fail(c, inbound, errLoop, "connection addressed to the inbound port itself", errors.New("no application behind the proxy port"))
		return
	}
	meta.refuse = p.inboundRefusal(meta)
	if meta.refuse != "" && proto != HTTP1 && proto != HTTP2 {
		p.refuseInboundConn(c, meta)
		return
	}
	cc := p.m.track(c, meta.tls.labels(labels{"direction": inbound, "peer": "src"}))
	switch proto {
	case HTTP1, HTTP2:
		p.inboundHTTP.push(&metaConn{Conn: cc, meta: meta})
	default:
		p.forwardInboundTCP(cc, meta)
	}
}

// acceptTLS terminates TLS whose SNI is this pod's identity. Any other
// ClientHello (the application's own TLS) is handed back, replayed, as
// opaque bytes. Without credentials (creds nil) a ClientHello for this
// pod's identity fails: handing a peer proxy's handshake to the
// application would only fail later and less clearly.
func (p *Proxy) acceptTLS(c net.Conn, creds *credentials) (net.Conn, bool, error) {
	rec := &recordingConn{Conn: c, recording: true}
	errNotOurs := errors.New("SNI is not this pod's identity")
	tc := tls.Server(rec, &tls.Config{
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			if hi.ServerName != p.cfg.Identity {
				rec.mute = true
				return nil, errNotOurs
			}
			if creds == nil {
				return nil, errors.New(p.id.unusable())
			}
			return creds.serverConfig([]string{"h2", "http/1.1"}), nil
		},
	})
	_ = c.SetDeadline(time.Now().Add(p.cfg.DetectTimeout))
	err := tc.Handshake()
	_ = c.SetDeadline(time.Time{})
	if errors.Is(err, errNotOurs) {
		return &replayConn{Conn: c, buf: rec.rec}, false, nil
	}
	rec.recording, rec.rec = false, nil
	if err != nil {
		return nil, false, err
	}
	return tc, true, nil
}

func (p *Proxy) failDetect(c net.Conn, direction string, err error) {
	reason := errDetectIO
	if errors.Is(err, errDetectTimeout) {
		reason = errDetect
	}
	p.fail(c, direction, reason, "protocol detection failed", err, "src", c.RemoteAddr().String())
}

// fail closes one connection with a counted, logged error.
func (p *Proxy) fail(c net.Conn, direction, reason, msg string, err error, kv ...any) {
	p.m.errors.WithLabelValues(direction, reason).Inc()
	p.log.Debug(msg, append([]any{"direction", direction, "error", err.Error()}, kv...)...)
	_ = c.Close()
}

func (p *Proxy) dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: p.cfg.ConnectTimeout}
	return d.DialContext(ctx, "tcp", addr.String())
}

// appAddr is where inbound traffic to dst is forwarded: the application
// on the loopback address of dst's family, at dst's port, as
// linkerd2-proxy does. Never the pod IP itself: with proxy-init's
// redirect-non-loopback-local-traffic rule (a pod calling a Service that
// routes back to itself), the proxy's own connection to its pod IP is
// redirected to the inbound port again, and forwarding there would loop.
// An application must therefore listen on 0.0.0.0, :: or loopback, not
// on the pod IP alone (Linkerd has the same constraint).
func appAddr(dst netip.AddrPort) netip.AddrPort {
	if dst.Addr().Unmap().Is4() {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dst.Port())
	}
	return netip.AddrPortFrom(netip.IPv6Loopback(), dst.Port())
}

// inboundDstLabels are the transport labels of the proxy's connections to
// the local application.
func inboundDstLabels() labels {
	return tlsLoopback.labels(labels{"direction": inbound, "peer": "dst"})
}

func (p *Proxy) forwardInboundTCP(src *countedConn, meta *connMeta) {
	defer func() { _ = src.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ConnectTimeout)
	defer cancel()
	d, err := p.dial(ctx, appAddr(meta.dst))
	if err != nil {
		p.m.errors.WithLabelValues(inbound, errConnect).Inc()
		p.log.Debug("inbound connect failed", "dst", appAddr(meta.dst).String(), "error", err.Error())
		return
	}
	splice(src, p.m.track(d, inboundDstLabels()), p.cfg.TCPIdleTimeout)
}

// serveOutbound handles one connection the application made, redirected
// to the outbound port.
func (p *Proxy) serveOutbound(_ context.Context, conn net.Conn) {
	raw := conn
	meta := &connMeta{direction: outbound, src: addrPort(raw.RemoteAddr()), tls: tlsLoopback}
	dst, err := p.cfg.OrigDst(socketOf(conn), outbound)
	if err != nil {
		p.fail(raw, outbound, errConnect, "no original destination", err)
		return
	}
	meta.dst = dst
	// Opaque ports are forwarded at once: their servers speak first, and
	// waiting for the client to would stall every connection for the
	// detection timeout.
	proto, buf := Opaque, []byte(nil)
	if !p.cfg.OpaquePorts[dst.Port()] {
		proto, buf, err = detect(raw, p.cfg.DetectTimeout)
		if err != nil {
			p.failDetect(raw, outbound, err)
			return
		}
	}
	cc := p.m.track(&replayConn{Conn: raw, buf: buf}, meta.tls.labels(labels{"direction": outbound, "peer": "src"}))
	switch proto {
	case HTTP1, HTTP2:
		p.outboundHTTP.push(&metaConn{Conn: cc, meta: meta})
	default:
		p.forwardOutboundTCP(cc, meta)
	}
}

// route is where one outbound request or connection goes.
type route struct {
	ep  discovery.Endpoint
	tls tlsStatus
}

// pick resolves an original destination and chooses an endpoint. Plain
// text is chosen only on a positive answer: the destination is loopback
// or outside the cluster's networks, discovery says it does not exist or
// that the endpoint has no identity, or this pod was injected without TLS.
// Anything else (a discovery error or timeout, a Service with no endpoints
// known yet, an identity-bearing endpoint while this TLS pod has no usable
// certificate) is a *refusal: the caller fails the request visibly.
func (p *Proxy) pick(ctx context.Context, dst netip.AddrPort) (route, error) {
	direct := route{ep: discovery.Endpoint{Addr: dst}, tls: tlsNoDiscovery}
	if dst.Addr().IsLoopback() {
		direct.tls = tlsLoopback
		return direct, nil
	}
	if p.cfg.Resolver == nil || !p.inClusterNetworks(dst.Addr()) {
		return direct, nil
	}
	eps, err := p.resolve(ctx, dst.String())
	switch {
	case errors.Is(err, discovery.ErrNotFound):
		return direct, nil
	case err != nil:
		p.m.errors.WithLabelValues(outbound, errResolve).Inc()
		return route{}, &refusal{reason: refuseDiscoveryUnavailable, dst: dst.String(), err: err}
	case len(eps) == 0:
		return route{}, &refusal{reason: refuseNoEndpoints, dst: dst.String(), err: errors.New("discovery lists no endpoint")}
	}
	ep := eps[rand.IntN(len(eps))]
	r := route{ep: ep, tls: tlsNoDiscovery}
	if ep.Identity != "" {
		switch {
		case p.id.current() != nil:
			r.tls = tlsStatus{status: "true", serverID: ep.Identity}
		case p.id.configured():
			return route{}, &refusal{reason: refuseNoCertificate, dst: dst.String(), err: errors.New(p.id.unusable())}
		default:
			// Injected without TLS: this pod never holds a certificate,
			// and its peers accept plain text from it (tls="disabled").
			r.tls = tlsNotConfigured
		}
	}
	return r, nil
}

// resolve asks discovery, answering from the resolver's cache without a
// deadline's allocation when it has one.
func (p *Proxy) resolve(ctx context.Context, target string) ([]discovery.Endpoint, error) {
	if c, ok := p.cfg.Resolver.(discovery.Cached); ok {
		if eps, err, ok := c.Cached(target); ok {
			return eps, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ResolveTimeout)
	defer cancel()
	return p.cfg.Resolver.Resolve(ctx, target)
}

// inClusterNetworks says whether discovery is asked about addr: with no
// networks configured, every address is.
func (p *Proxy) inClusterNetworks(addr netip.Addr) bool {
	if len(p.cfg.ClusterNetworks) == 0 {
		return true
	}
	for _, n := range p.cfg.ClusterNetworks {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// dstLabels are the outbound dst_* labels of an endpoint.
func (r route) dstLabels(l labels) labels {
	out := l.with()
	for k, v := range r.ep.Labels {
		if v != "" {
			out["dst_"+k] = v
		}
	}
	return out
}

// connect dials an endpoint and, when the route is TLS, completes the mTLS
// handshake and checks the server's identity. A failed handshake is an
// error; it is never retried in plain text.
func (p *Proxy) connect(ctx context.Context, r route, nextProtos []string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	raw, err := p.dial(ctx, r.ep.Addr)
	if err != nil {
		p.m.errors.WithLabelValues(outbound, errConnect).Inc()
		return nil, fmt.Errorf("connect to %s: %w", r.ep.Addr, err)
	}
	c := net.Conn(p.m.track(raw, r.dstLabels(r.tls.labels(labels{"direction": outbound, "peer": "dst"}))))
	if r.tls.status != "true" {
		return c, nil
	}
	creds := p.id.current()
	if creds == nil {
		_ = c.Close()
		return nil, errors.New("TLS credentials became unavailable")
	}
	tc := tls.Client(c, creds.clientConfig(r.ep.Identity, nextProtos))
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		p.m.errors.WithLabelValues(outbound, errTLSOutbound).Inc()
		p.logLimited(slog.LevelWarn, "outbound TLS handshake failed; not retrying in plain text", "dst", r.ep.Addr.String(), "identity", r.ep.Identity, "error", err.Error())
		return nil, &handshakeError{identity: r.ep.Identity, addr: r.ep.Addr, err: err}
	}
	return tc, nil
}

type handshakeError struct {
	identity string
	addr     netip.AddrPort
	err      error
}

func (e *handshakeError) Error() string {
	return fmt.Sprintf("mTLS handshake with %s at %s failed: %v", e.identity, e.addr, e.err)
}

func (e *handshakeError) Unwrap() error { return e.err }

func (p *Proxy) forwardOutboundTCP(src *countedConn, meta *connMeta) {
	defer func() { _ = src.Close() }()
	if p.isOutboundLoop(meta.dst) {
		p.m.errors.WithLabelValues(outbound, errLoop).Inc()
		return
	}
	r, err := p.pick(context.Background(), meta.dst)
	if err != nil {
		// Closed without a byte sent: the application sees a reset
		// connection, never plain text to a peer that may require TLS.
		p.refused(err.(*refusal))
		return
	}
	d, err := p.connect(context.Background(), r, nil)
	if err != nil {
		p.log.Debug("outbound connect failed", "dst", meta.dst.String(), "error", err.Error())
		return
	}
	splice(src, d, p.cfg.TCPIdleTimeout)
}

// metaConn carries its connMeta into the HTTP server's ConnContext.
type metaConn struct {
	net.Conn
	meta *connMeta
}

// CloseWrite passes through to the counted connection.
func (c *metaConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
