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

// The kinds TestEval leaves out: each against a request it selects and
// one it does not, so a kind that always answered one way would fail.
func TestEvalEveryKind(t *testing.T) {
	r := Request{
		Src: netip.MustParseAddrPort("198.18.20.5:41000"), Dst: netip.MustParseAddrPort("[::ffff:198.18.20.7]:8080"),
		SrcLabels: map[string]string{"deployment": "vote-bot", "namespace": "emojivoto"},
		DstLabels: map[string]string{"deployment": "web", "namespace": "emojivoto"},
		Method:    "POST", Scheme: "https", Authority: "web-svc.emojivoto:80", Path: "/api/vote",
	}
	http := func(h *tappb.ObserveRequest_Match_Http) *tappb.ObserveRequest_Match {
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Http_{Http: h}}
	}
	method := func(m string) *tappb.ObserveRequest_Match {
		return http(&tappb.ObserveRequest_Match_Http{Match: &tappb.ObserveRequest_Match_Http_Method{Method: m}})
	}
	scheme := func(s string) *tappb.ObserveRequest_Match {
		return http(&tappb.ObserveRequest_Match_Http{Match: &tappb.ObserveRequest_Match_Http_Scheme{Scheme: s}})
	}
	exact := func(s string) *tappb.ObserveRequest_Match_Http_StringMatch {
		return &tappb.ObserveRequest_Match_Http_StringMatch{Match: &tappb.ObserveRequest_Match_Http_StringMatch_Exact{Exact: s}}
	}
	prefix := func(s string) *tappb.ObserveRequest_Match_Http_StringMatch {
		return &tappb.ObserveRequest_Match_Http_StringMatch{Match: &tappb.ObserveRequest_Match_Http_StringMatch_Prefix{Prefix: s}}
	}
	authority := func(m *tappb.ObserveRequest_Match_Http_StringMatch) *tappb.ObserveRequest_Match {
		return http(&tappb.ObserveRequest_Match_Http{Match: &tappb.ObserveRequest_Match_Http_Authority{Authority: m}})
	}
	path := func(m *tappb.ObserveRequest_Match_Http_StringMatch) *tappb.ObserveRequest_Match {
		return http(&tappb.ObserveRequest_Match_Http{Match: &tappb.ObserveRequest_Match_Http_Path{Path: m}})
	}
	ports := func(src bool, lo, hi uint32) *tappb.ObserveRequest_Match {
		tcp := &tappb.ObserveRequest_Match_Tcp{Match: &tappb.ObserveRequest_Match_Tcp_Ports{Ports: &tappb.ObserveRequest_Match_Tcp_PortRange{Min: lo, Max: hi}}}
		if src {
			return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Source{Source: tcp}}
		}
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Destination{Destination: tcp}}
	}
	netmask := func(src bool, ip string, bits uint32) *tappb.ObserveRequest_Match {
		tcp := &tappb.ObserveRequest_Match_Tcp{Match: &tappb.ObserveRequest_Match_Tcp_Netmask_{Netmask: &tappb.ObserveRequest_Match_Tcp_Netmask{Ip: netip.MustParseAddr(ip).AsSlice(), Mask: bits}}}
		if src {
			return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Source{Source: tcp}}
		}
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Destination{Destination: tcp}}
	}
	srcLabel := func(k, v string) *tappb.ObserveRequest_Match {
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_SourceLabel{SourceLabel: &tappb.ObserveRequest_Match_Label{Key: k, Value: v}}}
	}
	dstLabel := func(k, v string) *tappb.ObserveRequest_Match {
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_DestinationLabel{DestinationLabel: &tappb.ObserveRequest_Match_Label{Key: k, Value: v}}}
	}
	anyOf := func(ms ...*tappb.ObserveRequest_Match) *tappb.ObserveRequest_Match {
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Any{Any: &tappb.ObserveRequest_Match_Seq{Matches: ms}}}
	}
	allOf := func(ms ...*tappb.ObserveRequest_Match) *tappb.ObserveRequest_Match {
		return &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_All{All: &tappb.ObserveRequest_Match_Seq{Matches: ms}}}
	}
	for _, c := range []struct {
		name string
		m    *tappb.ObserveRequest_Match
		want bool
	}{
		{"method", method("POST"), true},
		{"method ignores case", method("post"), true},
		{"other method", method("GET"), false},
		{"scheme", scheme("HTTPS"), true},
		{"other scheme", scheme("http"), false},
		{"authority exact", authority(exact("web-svc.emojivoto:80")), true},
		{"authority exact is not a prefix", authority(exact("web-svc.emojivoto")), false},
		{"authority prefix", authority(prefix("web-svc.")), true},
		{"authority other prefix", authority(prefix("voting")), false},
		{"path exact", path(exact("/api/vote")), true},
		{"path exact is case-sensitive", path(exact("/API/vote")), false},
		{"string match of no kind", authority(&tappb.ObserveRequest_Match_Http_StringMatch{}), false},
		{"http match of no kind", http(&tappb.ObserveRequest_Match_Http{}), false},
		{"destination port", ports(false, 8080, 8080), true},
		{"destination port range", ports(false, 8000, 8999), true},
		{"destination port below range", ports(false, 8081, 9000), false},
		{"destination port above range", ports(false, 1, 8079), false},
		{"destination ports with no maximum", ports(false, 8080, 0), true},
		{"source port", ports(true, 41000, 41000), true},
		{"source port is not the destination's", ports(true, 8080, 8080), false},
		{"source netmask", netmask(true, "198.18.20.0", 24), true},
		{"source netmask elsewhere", netmask(true, "198.18.21.0", 24), false},
		{"destination netmask on a v4-mapped address", netmask(false, "198.18.0.0", 16), true},
		{"netmask longer than the address", netmask(true, "198.18.20.5", 33), false},
		{"netmask with no address", &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Source{Source: &tappb.ObserveRequest_Match_Tcp{
			Match: &tappb.ObserveRequest_Match_Tcp_Netmask_{Netmask: &tappb.ObserveRequest_Match_Tcp_Netmask{Mask: 8}}}}}, false},
		{"tcp match of no kind", &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Source{Source: &tappb.ObserveRequest_Match_Tcp{}}}, false},
		{"source label", srcLabel("deployment", "vote-bot"), true},
		{"source label of the destination", srcLabel("deployment", "web"), false},
		{"source label absent", srcLabel("pod", ""), false},
		{"destination label", dstLabel("deployment", "web"), true},
		{"destination label absent", dstLabel("app", ""), false},
		{"any: one of", anyOf(method("GET"), scheme("https")), true},
		{"any: none of", anyOf(method("GET"), scheme("http")), false},
		{"any of nothing", anyOf(), false},
		{"all of nothing", allOf(), true},
		{"all: one fails", allOf(method("POST"), scheme("http")), false},
	} {
		if got := Eval(c.m, r); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
