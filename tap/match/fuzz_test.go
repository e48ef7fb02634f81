package match

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	tappb "meshtls/proto/tap"
)

// FuzzEval evaluates any ObserveRequest a proxy could be sent (the wire
// bytes of its match) against a request. Eval answers and agrees with the
// logic of its own combinators: not negates, and all or any of one match
// is that match.
func FuzzEval(f *testing.F) {
	seed := func(m *tappb.ObserveRequest_Match) []byte {
		b, err := proto.Marshal(&tappb.ObserveRequest{Match: m, MaxRps: 100})
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	label := &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_DestinationLabel{DestinationLabel: &tappb.ObserveRequest_Match_Label{Key: "deployment", Value: "web"}}}
	method := &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Http_{Http: &tappb.ObserveRequest_Match_Http{Match: &tappb.ObserveRequest_Match_Http_Method{Method: "GET"}}}}
	ports := &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Source{Source: &tappb.ObserveRequest_Match_Tcp{Match: &tappb.ObserveRequest_Match_Tcp_Ports{Ports: &tappb.ObserveRequest_Match_Tcp_PortRange{Min: 1, Max: 9000}}}}}
	netmask := &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Destination{Destination: &tappb.ObserveRequest_Match_Tcp{Match: &tappb.ObserveRequest_Match_Tcp_Netmask_{Netmask: &tappb.ObserveRequest_Match_Tcp_Netmask{Ip: []byte{10, 0, 0, 0}, Mask: 8}}}}}
	f.Add(seed(nil), "GET", "/api/vote", "10.0.0.7:8080", "10.0.0.9:41000")
	f.Add(seed(&tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_All{All: &tappb.ObserveRequest_Match_Seq{Matches: []*tappb.ObserveRequest_Match{label, method}}}}), "get", "/", "10.0.0.7:8080", "[::1]:1")
	f.Add(seed(&tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Any{Any: &tappb.ObserveRequest_Match_Seq{Matches: []*tappb.ObserveRequest_Match{ports, netmask}}}}), "POST", "/x", "[::ffff:10.1.2.3]:80", "10.0.0.9:41000")
	f.Add(seed(&tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Not{Not: netmask}}), "", "", "", "")
	f.Fuzz(func(t *testing.T, wire []byte, method, path, dst, src string) {
		var req tappb.ObserveRequest
		if err := proto.Unmarshal(wire, &req); err != nil {
			return
		}
		r := Request{
			DstLabels: map[string]string{"deployment": "web", "namespace": "emojivoto"},
			SrcLabels: map[string]string{"deployment": "vote-bot"},
			Method:    method, Scheme: "http", Authority: "web-svc.emojivoto:80", Path: path,
		}
		r.Dst, _ = netip.ParseAddrPort(dst)
		r.Src, _ = netip.ParseAddrPort(src)
		m := req.GetMatch()
		got := Eval(m, r)
		if Eval(m, r) != got {
			t.Fatalf("Eval(%v) is not stable", m)
		}
		if m == nil {
			if !got {
				t.Fatal("a nil match selects nothing")
			}
			return
		}
		not := &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Not{Not: m}}
		seq := &tappb.ObserveRequest_Match_Seq{Matches: []*tappb.ObserveRequest_Match{m}}
		all := &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_All{All: seq}}
		anyOf := &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Any{Any: seq}}
		if Eval(not, r) == got || Eval(all, r) != got || Eval(anyOf, r) != got {
			t.Fatalf("Eval(%v) = %v, but not %v, all of it %v, any of it %v", m, got, Eval(not, r), Eval(all, r), Eval(anyOf, r))
		}
	})
}
