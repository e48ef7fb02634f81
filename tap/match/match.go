// Package match evaluates the tap API's request matches. The proxy applies
// them to the requests it serves and `linkerd tap --replay` to recorded
// ones, so both answer alike. It imports only the generated API.
package match

import (
	"net/netip"
	"strings"

	tappb "meshtls/proto/tap"
)

// Request is what a match looks at.
type Request struct {
	Src, Dst                        netip.AddrPort
	SrcLabels, DstLabels            map[string]string
	Method, Scheme, Authority, Path string
}

// Eval reports whether r satisfies m. A nil match selects everything; a
// match of a kind this build does not know selects nothing, so a newer
// client's filter never widens what a proxy reports.
func Eval(m *tappb.ObserveRequest_Match, r Request) bool {
	if m == nil {
		return true
	}
	switch v := m.GetMatch().(type) {
	case *tappb.ObserveRequest_Match_All:
		for _, sub := range v.All.GetMatches() {
			if !Eval(sub, r) {
				return false
			}
		}
		return true
	case *tappb.ObserveRequest_Match_Any:
		for _, sub := range v.Any.GetMatches() {
			if Eval(sub, r) {
				return true
			}
		}
		return false
	case *tappb.ObserveRequest_Match_Not:
		return !Eval(v.Not, r)
	case *tappb.ObserveRequest_Match_Source:
		return tcp(v.Source, r.Src)
	case *tappb.ObserveRequest_Match_Destination:
		return tcp(v.Destination, r.Dst)
	case *tappb.ObserveRequest_Match_SourceLabel:
		val, ok := r.SrcLabels[v.SourceLabel.GetKey()]
		return ok && val == v.SourceLabel.GetValue()
	case *tappb.ObserveRequest_Match_DestinationLabel:
		val, ok := r.DstLabels[v.DestinationLabel.GetKey()]
		return ok && val == v.DestinationLabel.GetValue()
	case *tappb.ObserveRequest_Match_Http_:
		switch h := v.Http.GetMatch().(type) {
		case *tappb.ObserveRequest_Match_Http_Method:
			return strings.EqualFold(r.Method, h.Method)
		case *tappb.ObserveRequest_Match_Http_Scheme:
			return strings.EqualFold(r.Scheme, h.Scheme)
		case *tappb.ObserveRequest_Match_Http_Authority:
			return str(h.Authority, r.Authority)
		case *tappb.ObserveRequest_Match_Http_Path:
			return str(h.Path, r.Path)
		}
	}
	return false
}

func str(m *tappb.ObserveRequest_Match_Http_StringMatch, s string) bool {
	switch v := m.GetMatch().(type) {
	case *tappb.ObserveRequest_Match_Http_StringMatch_Exact:
		return s == v.Exact
	case *tappb.ObserveRequest_Match_Http_StringMatch_Prefix:
		return strings.HasPrefix(s, v.Prefix)
	}
	return false
}

func tcp(m *tappb.ObserveRequest_Match_Tcp, a netip.AddrPort) bool {
	switch v := m.GetMatch().(type) {
	case *tappb.ObserveRequest_Match_Tcp_Ports:
		p := uint32(a.Port())
		return p >= v.Ports.GetMin() && (v.Ports.GetMax() == 0 || p <= v.Ports.GetMax())
	case *tappb.ObserveRequest_Match_Tcp_Netmask_:
		ip, ok := netip.AddrFromSlice(v.Netmask.GetIp())
		if !ok {
			return false
		}
		pfx, err := ip.Unmap().Prefix(int(v.Netmask.GetMask()))
		return err == nil && pfx.Contains(a.Addr().Unmap())
	}
	return false
}
