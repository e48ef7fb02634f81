// Package client is the proxy's side of the destination service: a
// discovery.Resolver that keeps one Get stream per destination, caches what
// the stream says, and reconnects with backoff when the stream breaks while
// it keeps answering from what it last knew.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	pb "meshtls/proto/destination"
	"meshtls/proxy/discovery"
)

// Config is how to reach the destination service.
type Config struct {
	// Addr is the service's host:port.
	Addr string
	// TLS, when set, is used to dial (mutual TLS with the proxy's
	// certificate, checking the controller's identity); nil dials plain
	// text.
	TLS *tls.Config
	// ContextToken tells the server who asks ("ns:NS pod:NAME"), for its
	// logs.
	ContextToken string
	// MinBackoff and MaxBackoff bound the wait between attempts to reopen
	// a broken stream (defaults 100ms and 10s).
	MinBackoff, MaxBackoff time.Duration
	// IdleTimeout closes the stream of a destination nobody resolved for
	// this long (default 10m).
	IdleTimeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// ErrNoAnswer means the destination service had not answered for a target
// by the caller's deadline (it is unreachable, or slow).
var ErrNoAnswer = errors.New("no answer from the destination service")

// Client resolves targets through the destination service. It implements
// discovery.Resolver.
type Client struct {
	cfg    Config
	log    *slog.Logger
	conn   *grpc.ClientConn
	api    pb.DestinationClient
	ctx    context.Context
	cancel context.CancelFunc
	done   sync.WaitGroup

	// watches maps a target to its *watch. Resolve reads it on every
	// request without a lock; mu serialises creating and evicting.
	watches sync.Map
	mu      sync.Mutex
}

var (
	_ discovery.Resolver = (*Client)(nil)
	_ discovery.Cached   = (*Client)(nil)
)

// New creates a client. It does not dial yet: the first Resolve does.
func New(cfg Config) (*Client, error) {
	if cfg.Addr == "" {
		return nil, errors.New("destination client: empty address")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(10*time.Second, cfg.MinBackoff)
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	conn, err := grpc.NewClient(cfg.Addr,
		grpc.WithTransportCredentials(creds),
		// A server that vanished without closing its connections (a node
		// lost) is noticed within a minute, not at the kernel's timeout.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// gRPC's default reconnect backoff grows to 2 minutes: a proxy
		// whose certificate arrived late, or whose destination service
		// came back, would stay without discovery that long.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: cfg.MinBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.MaxBackoff},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("destination client for %s: %w", cfg.Addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg: cfg, log: log, conn: conn, api: pb.NewDestinationClient(conn),
		ctx: ctx, cancel: cancel,
	}
	c.done.Add(1)
	go c.evictIdle()
	return c, nil
}

// Close ends every stream and the connection.
func (c *Client) Close() error {
	c.cancel()
	c.done.Wait()
	return c.conn.Close()
}

// Resolve implements discovery.Resolver. It waits for a target's first
// answer until ctx ends, except while the destination service is known to
// be unreachable (this target's stream failed, or the connection is down):
// then it fails at once, so a proxy without discovery does not pause every
// request for its deadline.
func (c *Client) Resolve(ctx context.Context, target string) ([]discovery.Endpoint, error) {
	w := c.watch(target)
	if eps, err, ok := w.answer(target); ok {
		return eps, err
	}
	if err := w.lastErr(); err != nil {
		return nil, fmt.Errorf("resolve %s: %w (%w)", target, ErrNoAnswer, err)
	}
	if w.timedOut.Load() {
		return nil, fmt.Errorf("resolve %s: %w (no answer yet; an earlier request timed out)", target, ErrNoAnswer)
	}
	if st := c.conn.GetState(); st == connectivity.TransientFailure {
		return nil, fmt.Errorf("resolve %s: %w (connection to %s is failing)", target, ErrNoAnswer, c.cfg.Addr)
	}
	select {
	case <-w.first:
	case <-w.failed:
		return nil, fmt.Errorf("resolve %s: %w (%w)", target, ErrNoAnswer, w.lastErr())
	case <-ctx.Done():
		// Until the stream answers, later requests fail at once rather
		// than each wait this long.
		w.timedOut.Store(true)
		return nil, fmt.Errorf("resolve %s: %w (waited %s for the first answer)", target, ErrNoAnswer, "until the deadline")
	case <-c.ctx.Done():
		return nil, fmt.Errorf("resolve %s: client closed", target)
	}
	eps, err, _ := w.answer(target)
	return eps, err
}

// Cached implements discovery.Cached: the answer already known for
// target, without waiting and without allocating.
func (c *Client) Cached(target string) ([]discovery.Endpoint, error, bool) {
	v, ok := c.watches.Load(target)
	if !ok {
		return nil, nil, false
	}
	w := v.(*watch)
	w.touch()
	return w.answer(target)
}

func (c *Client) watch(target string) *watch {
	if v, ok := c.watches.Load(target); ok {
		w := v.(*watch)
		w.touch()
		return w
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.watches.Load(target); ok {
		w := v.(*watch)
		w.touch()
		return w
	}
	ctx, cancel := context.WithCancel(c.ctx)
	w := &watch{target: target, first: make(chan struct{}), failed: make(chan struct{}), cancel: cancel, eps: map[netip.AddrPort]discovery.Endpoint{}}
	w.touch()
	c.watches.Store(target, w)
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		c.run(ctx, w)
	}()
	return w
}

// evictIdle ends the streams of targets nobody asked about lately, so a
// proxy that once talked to many destinations does not keep a stream each
// forever.
func (c *Client) evictIdle() {
	defer c.done.Done()
	t := time.NewTicker(c.cfg.IdleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case now := <-t.C:
			c.mu.Lock()
			c.watches.Range(func(k, v any) bool {
				if w := v.(*watch); now.Sub(w.lastUsed()) > c.cfg.IdleTimeout {
					w.cancel()
					c.watches.Delete(k)
				}
				return true
			})
			c.mu.Unlock()
		}
	}
}

// run keeps one target's stream open until ctx ends.
func (c *Client) run(ctx context.Context, w *watch) {
	backoff := c.cfg.MinBackoff
	for ctx.Err() == nil {
		got, err := c.stream(ctx, w)
		if ctx.Err() != nil {
			return
		}
		if status.Code(err) == codes.InvalidArgument {
			// The server will never resolve this target: say so once,
			// as not found, and stop asking.
			c.log.Warn("destination service refused target", "target", w.target, "err", err)
			w.reset(false)
			return
		}
		w.setErr(err)
		if got {
			backoff = c.cfg.MinBackoff
		}
		// Full jitter, so proxies that lost one server together do not
		// come back to it in step.
		wait := backoff/2 + rand.N(backoff/2+1)
		c.log.Info("destination stream broken, serving cached endpoints", "target", w.target, "err", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

// stream reads one Get stream until it breaks; got says whether it
// delivered anything.
func (c *Client) stream(ctx context.Context, w *watch) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.api.Get(ctx, &pb.GetDestination{Scheme: "k8s", Path: w.target, ContextToken: c.cfg.ContextToken})
	if err != nil {
		return false, err
	}
	for {
		u, err := s.Recv()
		if err != nil {
			return got, err
		}
		// The server's first message on a stream is a whole snapshot, so
		// it replaces what an earlier stream said.
		w.apply(u, !got)
		got = true
	}
}

// watch is what one target's stream has said.
type watch struct {
	target string
	cancel context.CancelFunc
	first  chan struct{} // closed at the first answer
	failed chan struct{} // closed at the first error
	used   atomic.Int64  // unix nanoseconds of the last Resolve
	// timedOut is set when a Resolve gave up waiting for the first
	// answer, and cleared by an answer.
	timedOut atomic.Bool

	// view is the answer Resolve returns, rebuilt on each update so
	// reading it takes no lock and copies nothing.
	view atomic.Pointer[answer]

	mu     sync.Mutex
	known  bool
	exists bool
	eps    map[netip.AddrPort]discovery.Endpoint
	err    error
}

// answer is one immutable state of a watch.
type answer struct {
	eps      []discovery.Endpoint
	notFound bool
}

func (w *watch) touch() { w.used.Store(time.Now().UnixNano()) }

func (w *watch) lastUsed() time.Time { return time.Unix(0, w.used.Load()) }

func (w *watch) setErr(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		err = errors.New("stream ended")
	}
	if w.err == nil && !w.known {
		select {
		case <-w.failed:
		default:
			close(w.failed)
		}
	}
	w.err = err
}

// lastErr is why the stream is down, or nil while it is up or has not
// failed yet.
func (w *watch) lastErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// answer is what Resolve says once the target has been answered.
func (w *watch) answer(target string) ([]discovery.Endpoint, error, bool) {
	a := w.view.Load()
	if a == nil {
		return nil, nil, false
	}
	if a.notFound {
		return nil, fmt.Errorf("resolve %s: %w", target, discovery.ErrNotFound), true
	}
	return a.eps, nil, true
}

// publish rebuilds the view; w.mu is held.
func (w *watch) publish() {
	a := &answer{notFound: !w.exists && len(w.eps) == 0}
	a.eps = make([]discovery.Endpoint, 0, len(w.eps))
	for _, addr := range slices.SortedFunc(maps.Keys(w.eps), netip.AddrPort.Compare) {
		a.eps = append(a.eps, w.eps[addr])
	}
	w.view.Store(a)
	w.timedOut.Store(false)
	if !w.known {
		w.known = true
		close(w.first)
	}
}

func (w *watch) reset(exists bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.eps = map[netip.AddrPort]discovery.Endpoint{}
	w.exists = exists
	w.publish()
}

// apply merges one update. An identity once given for an endpoint is kept
// for as long as that endpoint (the same address of the same pod) stays
// listed, across broken streams and a restarted destination service: an
// answer without it (a destination service that has not re-checked the
// pod yet, or one with stale trust anchors) must not turn an mTLS edge
// into plain text. If the pod really lost its certificate, the handshake
// fails, visibly.
func (w *watch) apply(u *pb.Update, snapshot bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = nil
	prev := w.eps
	if snapshot {
		w.eps = map[netip.AddrPort]discovery.Endpoint{}
	}
	switch u := u.GetUpdate().(type) {
	case *pb.Update_Add:
		w.exists = true
		for _, a := range u.Add.GetAddrs() {
			ep, ok := fromProto(a, u.Add.GetMetricLabels())
			if !ok {
				continue
			}
			if old, ok := prev[ep.Addr]; ok && ep.Identity == "" && old.Identity != "" && old.Labels["pod"] == ep.Labels["pod"] {
				ep.Identity = old.Identity
			}
			w.eps[ep.Addr] = ep
		}
	case *pb.Update_Remove:
		for _, a := range u.Remove.GetAddrs() {
			if addr, ok := addrPort(a.GetIp(), a.GetPort()); ok {
				delete(w.eps, addr)
			}
		}
	case *pb.Update_NoEndpoints:
		w.exists = u.NoEndpoints.GetExists()
		w.eps = map[netip.AddrPort]discovery.Endpoint{}
	}
	w.publish()
}

func fromProto(a *pb.WeightedAddr, setLabels map[string]string) (discovery.Endpoint, bool) {
	addr, ok := addrPort(a.GetAddr().GetIp(), a.GetAddr().GetPort())
	if !ok {
		return discovery.Endpoint{}, false
	}
	labels := make(map[string]string, len(setLabels)+len(a.GetMetricLabels()))
	maps.Copy(labels, setLabels)
	maps.Copy(labels, a.GetMetricLabels())
	return discovery.Endpoint{
		Addr:     addr,
		Identity: a.GetTlsIdentity().GetDnsLikeIdentity().GetName(),
		Labels:   labels,
		H2:       a.GetProtocolHint().GetH2() != nil,
	}, true
}

func addrPort(ip []byte, port uint32) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port == 0 || port > 0xffff {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), true
}
