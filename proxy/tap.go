package proxy

import (
	"meshtls/contract"

	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	netpb "meshtls/proto/net"
	tappb "meshtls/proto/tap"
	"meshtls/tap/match"
)

// tapHub fans request events out to the open tap streams. Traffic never
// waits on a stream: each has a bounded queue, and an event that does not
// fit is dropped and counted.
type tapHub struct {
	m      *metrics
	buffer int
	base   uint32
	seq    atomic.Uint64
	n      atomic.Int32 // open streams, read on every request
	mu     sync.RWMutex
	subs   map[*tapSub]struct{}
	// self labels this pod in events: namespace and pod.
	self map[string]string
}

type tapSub struct {
	req     *tappb.ObserveRequest
	ch      chan *tappb.TapEvent
	limiter *rate.Limiter
	dropped atomic.Uint64
	started atomic.Uint32
}

func newTapHub(m *metrics, buffer int, self map[string]string) *tapHub {
	return &tapHub{m: m, buffer: buffer, base: rand.Uint32(), subs: map[*tapSub]struct{}{}, self: self}
}

func (h *tapHub) add(req *tappb.ObserveRequest) *tapSub {
	s := &tapSub{req: req, ch: make(chan *tappb.TapEvent, h.buffer)}
	if req.GetMaxRps() > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(req.GetMaxRps()), max(1, int(req.GetMaxRps())))
	}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	h.n.Add(1)
	h.m.tapSubscribers.Inc()
	return s
}

func (h *tapHub) remove(s *tapSub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
	h.n.Add(-1)
	h.m.tapSubscribers.Dec()
}

// send queues ev for s without ever blocking.
func (h *tapHub) send(s *tapSub, ev *tappb.TapEvent) {
	ev.DroppedBefore = s.dropped.Swap(0)
	select {
	case s.ch <- ev:
	default:
		s.dropped.Add(1 + ev.DroppedBefore)
		h.m.tapDropped.Inc()
	}
}

// tapRequest is one request being reported to the streams it matched.
type tapRequest struct {
	h    *tapHub
	subs []*tapSub
	base *tappb.TapEvent
	id   *tappb.TapEvent_Http_StreamId
}

func tcpAddr(ap netip.AddrPort) *netpb.TcpAddress {
	if !ap.IsValid() {
		return nil
	}
	return &netpb.TcpAddress{Ip: ap.Addr().Unmap().AsSlice(), Port: uint32(ap.Port())}
}

// requestInit starts reporting r to every stream it matches; nil when none.
func (h *tapHub) requestInit(r *http.Request, meta *connMeta, rt route, l labels, start time.Time) *tapRequest {
	if h.n.Load() == 0 {
		return nil
	}
	dir := tappb.TapEvent_INBOUND
	src, dst := meta.src, meta.dst
	// This pod is the destination of inbound requests and the source of
	// outbound ones; discovery labels the outbound destination.
	srcLabels, dstLabels := map[string]string{}, maps.Clone(h.self)
	if meta.direction == outbound {
		dir = tappb.TapEvent_OUTBOUND
		dst = rt.ep.Addr
		srcLabels, dstLabels = dstLabels, maps.Clone(rt.ep.Labels)
		if dstLabels == nil {
			dstLabels = map[string]string{}
		}
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	// Protobuf strings must be UTF-8: a value from the wire that is not
	// would fail the marshalling of the event, and end the stream.
	init := &tappb.TapEvent_Http_RequestInit{Method: labelValue(r.Method), Scheme: scheme, Authority: labelValue(r.Host), Path: strings.ToValidUTF8(r.URL.Path, "\uFFFD")}
	t := &tapRequest{h: h, id: &tappb.TapEvent_Http_StreamId{Base: h.base, Stream: h.seq.Add(1)}}
	init.Id = t.id
	t.base = &tappb.TapEvent{
		Source:          tcpAddr(src),
		SourceMeta:      &tappb.TapEvent_EndpointMeta{Labels: srcLabels},
		Destination:     tcpAddr(dst),
		DestinationMeta: &tappb.TapEvent_EndpointMeta{Labels: dstLabels},
		ProxyDirection:  dir,
		Tls:             &tappb.TapEvent_Tls{Status: l["tls"], NoTlsReason: l["no_tls_reason"], ClientId: l["client_id"], ServerId: l["server_id"]},
	}
	req := match.Request{Src: src, Dst: dst, SrcLabels: srcLabels, DstLabels: dstLabels,
		Method: init.Method, Scheme: init.Scheme, Authority: init.Authority, Path: init.Path}
	h.mu.RLock()
	for s := range h.subs {
		if !match.Eval(s.req.GetMatch(), req) {
			continue
		}
		// Claim one of the stream's limit: a load then an add would let
		// concurrent requests past it.
		lim := s.req.GetLimit()
		if lim > 0 && !claimBelow(&s.started, lim) {
			continue
		}
		if s.limiter != nil && !s.limiter.Allow() {
			if lim > 0 {
				s.started.Add(^uint32(0)) // give the claim back
			}
			s.dropped.Add(1)
			h.m.tapDropped.Inc()
			continue
		}
		if lim == 0 {
			s.started.Add(1)
		}
		t.subs = append(t.subs, s)
	}
	h.mu.RUnlock()
	if len(t.subs) == 0 {
		return nil
	}
	t.emit(&tappb.TapEvent_Http{Event: &tappb.TapEvent_Http_RequestInit_{RequestInit: init}})
	return t
}

// claimBelow adds one to n unless that would pass limit.
func claimBelow(n *atomic.Uint32, limit uint32) bool {
	for {
		v := n.Load()
		if v >= limit {
			return false
		}
		if n.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

func (t *tapRequest) emit(ev *tappb.TapEvent_Http) {
	for _, s := range t.subs {
		e := proto.CloneOf(t.base)
		e.Event = &tappb.TapEvent_Http_{Http: ev}
		t.h.send(s, e)
	}
}

func (t *tapRequest) responseInit(status int, since time.Duration) {
	t.emit(&tappb.TapEvent_Http{Event: &tappb.TapEvent_Http_ResponseInit_{ResponseInit: &tappb.TapEvent_Http_ResponseInit{
		Id: t.id, SinceRequestInit: durationpb.New(since), HttpStatus: uint32(status),
	}}})
}

func (t *tapRequest) responseEnd(status int, grpc string, reset bool, errMsg string, sinceReq, sinceRsp time.Duration, rspBytes, reqBytes int64) {
	end := &tappb.TapEvent_Http_ResponseEnd{
		Id: t.id, SinceRequestInit: durationpb.New(sinceReq), SinceResponseInit: durationpb.New(sinceRsp),
		ResponseBytes: uint64(rspBytes), RequestBytes: uint64(reqBytes), Error: errMsg,
	}
	var code uint32
	if _, err := fmt.Sscan(grpc, &code); grpc != "" && err == nil {
		end.Eos = &tappb.TapEvent_Http_ResponseEnd_GrpcStatus{GrpcStatus: code}
	} else if reset {
		end.Eos = &tappb.TapEvent_Http_ResponseEnd_ResetErrorCode{ResetErrorCode: 2} // INTERNAL_ERROR
	}
	_ = status
	t.emit(&tappb.TapEvent_Http{Event: &tappb.TapEvent_Http_ResponseEnd_{ResponseEnd: end}})
}

// tapServer is the Tap gRPC service.
type tapServer struct {
	tappb.UnimplementedTapServer
	h *tapHub
}

func (s *tapServer) Observe(req *tappb.ObserveRequest, stream grpc.ServerStreamingServer[tappb.TapEvent]) error {
	sub := s.h.add(req)
	defer s.h.remove(sub)
	var ended uint32
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case ev := <-sub.ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
			if ev.GetHttp().GetResponseEnd() != nil {
				ended++
				if lim := req.GetLimit(); lim > 0 && ended >= lim {
					return nil
				}
			}
		}
	}
}

// serveTap serves Tap over mTLS, to the tap API's identity only (not the
// destination service's: a stolen destination key must not read traffic).
func (p *Proxy) serveTap(ctx context.Context, l net.Listener) error {
	want := p.cfg.TapIdentity
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			creds := p.id.current()
			if creds == nil {
				return nil, errors.New("tap: TLS not configured on this proxy")
			}
			if want == "" {
				return nil, errors.New("tap: no tap identity configured (" + contract.EnvControllerNS + " or " + contract.EnvTLSTapID + ")")
			}
			c := creds.serverConfig([]string{"h2"})
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				if got := peerIdentity(cs); got != want {
					return fmt.Errorf("tap: client identity %q is not the tap API's %q", got, want)
				}
				return nil
			}
			return c, nil
		},
	}
	srv := grpc.NewServer(grpc.Creds(grpccreds.NewTLS(cfg)))
	tappb.RegisterTapServer(srv, &tapServer{h: p.tap})
	go func() { <-ctx.Done(); srv.Stop() }()
	err := srv.Serve(l)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}
