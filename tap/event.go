package tap

import (
	"net/netip"
	"strings"
	"time"

	"meshtls/contract"
	tappb "meshtls/proto/tap"
)

// Kind is the stage of a request an event reports.
type Kind uint8

// The three stages Linkerd's tap reports, in order.
const (
	KindRequest Kind = iota + 1
	KindResponse
	KindEnd
)

// String is the stage as Linkerd's text lines start: req, rsp, end.
func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "req"
	case KindResponse:
		return "rsp"
	case KindEnd:
		return "end"
	}
	return "unknown"
}

// Direction says which side of the tapped proxy the request was on.
type Direction uint8

// Directions, as the proto's ProxyDirection.
const (
	DirUnknown Direction = iota
	DirInbound
	DirOutbound
)

// String is the proxy= value of text lines.
func (d Direction) String() string {
	switch d {
	case DirInbound:
		return "in"
	case DirOutbound:
		return "out"
	}
	return "???"
}

// StreamID numbers a request within one proxy process.
type StreamID struct {
	Base   uint32
	Stream uint64
}

// Peer is one end of a request: its address and what is known of its pod.
type Peer struct {
	Addr   netip.AddrPort
	Labels map[string]string
}

// Namespace is the peer's namespace label, empty when unknown.
func (p Peer) Namespace() string { return p.Labels["namespace"] }

// Pod is the peer's pod label, empty when unknown.
func (p Peer) Pod() string { return p.Labels["pod"] }

// Owner returns the peer's owning workload kind and name, as far as its
// labels say. The kinds are tried in contract.Kinds order, so a pod of a
// Deployment is named after the Deployment, not its ReplicaSet.
func (p Peer) Owner() (kind, name string) {
	for _, k := range contract.Kinds {
		if n := p.Labels[k]; n != "" {
			return k, n
		}
	}
	return "", ""
}

var kindShort = map[string]string{
	contract.KindDeployment:            "deploy",
	contract.KindStatefulSet:           "sts",
	contract.KindDaemonSet:             "ds",
	contract.KindReplicaSet:            "rs",
	contract.KindReplicationController: "rc",
	contract.KindPod:                   "po",
}

// Resource names the peer as Linkerd's wide output does (deploy/web), or
// the pod (po/web-1), or "" when nothing is known.
func (p Peer) Resource() string {
	if k, n := p.Owner(); n != "" {
		return kindShort[k] + "/" + n
	}
	if pod := p.Pod(); pod != "" {
		return "po/" + pod
	}
	return ""
}

// Name is the shortest useful label for a peer: its resource, or its
// address when its pod is unknown.
func (p Peer) Name() string {
	if r := p.Resource(); r != "" {
		return r
	}
	if p.Addr.IsValid() {
		return p.Addr.Addr().String()
	}
	return "-"
}

// TLS is the connection's encryption and, when it is mutual TLS, the
// verified peer identities.
type TLS struct {
	// Status is the metrics' tls label: true, no_identity or disabled.
	Status      string
	NoTLSReason string
	ClientID    string
	ServerID    string
}

// Encrypted is true only for mutually authenticated TLS.
func (t TLS) Encrypted() bool { return t.Status == "true" }

// Reason says why a request was not encrypted, or "" when it was.
func (t TLS) Reason() string {
	if t.Encrypted() {
		return ""
	}
	if t.NoTLSReason != "" {
		return t.NoTLSReason
	}
	if t.Status != "" {
		return t.Status
	}
	return "unknown"
}

// Event is one tap event with what is known of its request so far: a
// response or end event carries its request's method, authority and path,
// and an end event its response's status, so filters and printers see the
// whole request at every stage.
type Event struct {
	Kind      Kind
	Time      time.Time
	ID        StreamID
	Direction Direction
	Src, Dst  Peer
	TLS       TLS

	Method, Scheme, Authority, Path string
	// HasRequest is false for a response whose request the stream did not
	// show (the tap started in the middle of it).
	HasRequest bool

	// Status is the HTTP status, 0 until the response starts.
	Status uint32
	// Latency is the time from the request to the response headers.
	Latency time.Duration
	// Duration is the time from the response headers to its end.
	Duration time.Duration

	// GRPCStatus is the grpc-status trailer; HasGRPCStatus says whether
	// there was one.
	GRPCStatus    uint32
	HasGRPCStatus bool
	// ResetCode is the HTTP/2 error code of a reset stream; HasReset says
	// whether the stream was reset.
	ResetCode     uint32
	HasReset      bool
	Error         string
	RequestBytes  uint64
	ResponseBytes uint64
	DroppedBefore uint64

	key RequestKey
}

// Key identifies e's request: the same for its req, rsp and end.
func (e *Event) Key() RequestKey { return e.key }

// Proxy is the tapped proxy's own end: the destination of an inbound
// request, the source of an outbound one.
func (e *Event) Proxy() Peer {
	if e.Direction == DirOutbound {
		return e.Src
	}
	return e.Dst
}

// Remote is the other end from the tapped proxy.
func (e *Event) Remote() Peer {
	if e.Direction == DirOutbound {
		return e.Dst
	}
	return e.Src
}

// Refused is why a proxy in required mode refused the request (its
// end's error is contract.TapRefusedPrefix + reason), or "".
func (e *Event) Refused() string {
	if r, ok := strings.CutPrefix(e.Error, contract.TapRefusedPrefix); ok {
		return r
	}
	return ""
}

// Success classifies a finished request as Linkerd's metrics do: a gRPC
// status decides when there is one, otherwise an HTTP status below 500; a
// reset stream or a proxy error is a failure.
func (e *Event) Success() bool {
	if e.HasReset || e.Error != "" {
		return false
	}
	if e.HasGRPCStatus {
		return e.GRPCStatus == 0
	}
	return e.Status != 0 && e.Status < 500
}

// Record is one TapEvent as it arrived, with its arrival time.
type Record struct {
	Time  time.Time
	Event *tappb.TapEvent
}

func peerFrom(addr interface {
	GetIp() []byte
	GetPort() uint32
}, meta *tappb.TapEvent_EndpointMeta) Peer {
	var p Peer
	if ip, ok := netip.AddrFromSlice(addr.GetIp()); ok {
		p.Addr = netip.AddrPortFrom(ip.Unmap(), uint16(addr.GetPort()))
	}
	p.Labels = meta.GetLabels()
	return p
}

// FromProto converts one TapEvent without correlating it with its request:
// a response or end carries only what its own message says.
func FromProto(rec Record) Event {
	pe := rec.Event
	e := Event{
		Time:          rec.Time,
		Src:           peerFrom(pe.GetSource(), pe.GetSourceMeta()),
		Dst:           peerFrom(pe.GetDestination(), pe.GetDestinationMeta()),
		DroppedBefore: pe.GetDroppedBefore(),
	}
	switch pe.GetProxyDirection() {
	case tappb.TapEvent_INBOUND:
		e.Direction = DirInbound
	case tappb.TapEvent_OUTBOUND:
		e.Direction = DirOutbound
	}
	t := pe.GetTls()
	e.TLS = TLS{Status: t.GetStatus(), NoTLSReason: t.GetNoTlsReason(), ClientID: t.GetClientId(), ServerID: t.GetServerId()}
	h := pe.GetHttp()
	switch {
	case h.GetRequestInit() != nil:
		r := h.GetRequestInit()
		e.Kind = KindRequest
		e.ID = StreamID{r.GetId().GetBase(), r.GetId().GetStream()}
		e.Method, e.Scheme, e.Authority, e.Path = r.GetMethod(), r.GetScheme(), r.GetAuthority(), r.GetPath()
		e.HasRequest = true
	case h.GetResponseInit() != nil:
		r := h.GetResponseInit()
		e.Kind = KindResponse
		e.ID = StreamID{r.GetId().GetBase(), r.GetId().GetStream()}
		e.Status = r.GetHttpStatus()
		e.Latency = r.GetSinceRequestInit().AsDuration()
	case h.GetResponseEnd() != nil:
		r := h.GetResponseEnd()
		e.Kind = KindEnd
		e.ID = StreamID{r.GetId().GetBase(), r.GetId().GetStream()}
		// Latency means time to the response headers at every stage, so
		// an end event's latency is its total less the body's time.
		e.Duration = r.GetSinceResponseInit().AsDuration()
		e.Latency = max(r.GetSinceRequestInit().AsDuration()-e.Duration, 0)
		e.ResponseBytes, e.RequestBytes = r.GetResponseBytes(), r.GetRequestBytes()
		e.Error = r.GetError()
		switch eos := r.GetEos().(type) {
		case *tappb.TapEvent_Http_ResponseEnd_GrpcStatus:
			e.GRPCStatus, e.HasGRPCStatus = eos.GrpcStatus, true
		case *tappb.TapEvent_Http_ResponseEnd_ResetErrorCode:
			e.ResetCode, e.HasReset = eos.ResetErrorCode, true
		}
	}
	e.key = newRequestKey(&e)
	return e
}

// RequestKey identifies a request within everything a stream can carry:
// stream ids are only unique within one proxy process.
type RequestKey struct {
	proxy netip.Addr
	dir   Direction
	id    StreamID
}

func newRequestKey(e *Event) RequestKey {
	return RequestKey{proxy: e.Proxy().Addr.Addr(), dir: e.Direction, id: e.ID}
}
