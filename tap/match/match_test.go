package match

import (
	"net/netip"
	"testing"

	tappb "meshtls/proto/tap"
)

func TestEval(t *testing.T) {
	r := Request{
		Src: netip.MustParseAddrPort("198.18.20.5:41000"), Dst: netip.MustParseAddrPort("198.18.20.7:8080"),
		DstLabels: map[string]string{"deployment": "web"},
		Method:    "GET", Scheme: "http", Authority: "web-svc.emojivoto:80", Path: "/api/vote",
	}
	path := func(p string) *tappb.ObserveRequest_Match {
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Http_{Http: &tappb.ObserveRequest_Match_Http{
			Match: &tappb.ObserveRequest_Match_Http_Path{Path: &tappb.ObserveRequest_Match_Http_StringMatch{
				Match: &tappb.ObserveRequest_Match_Http_StringMatch_Prefix{Prefix: p}}}}}}
	}
	net := func(ip string, bits uint32) *tappb.ObserveRequest_Match {
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Destination{Destination: &tappb.ObserveRequest_Match_Tcp{
			Match: &tappb.ObserveRequest_Match_Tcp_Netmask_{Netmask: &tappb.ObserveRequest_Match_Tcp_Netmask{Ip: netip.MustParseAddr(ip).AsSlice(), Mask: bits}}}}}
	}
	label := &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_DestinationLabel{DestinationLabel: &tappb.ObserveRequest_Match_Label{Key: "deployment", Value: "web"}}}
	all := func(ms ...*tappb.ObserveRequest_Match) *tappb.ObserveRequest_Match {
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_All{All: &tappb.ObserveRequest_Match_Seq{Matches: ms}}}
	}
	not := func(m *tappb.ObserveRequest_Match) *tappb.ObserveRequest_Match {
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Not{Not: m}}
	}
	for _, c := range []struct {
		name string
		m    *tappb.ObserveRequest_Match
		want bool
	}{
		{"nil selects all", nil, true},
		{"path prefix", path("/api"), true},
		{"other path", path("/x"), false},
		{"netmask", net("198.18.20.0", 24), true},
		{"other netmask", net("198.18.21.0", 24), false},
		{"label and path", all(label, path("/api/vote")), true},
		{"not", not(label), false},
		{"empty match selects nothing", &tappb.ObserveRequest_Match{}, false},
	} {
		if got := Eval(c.m, r); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
