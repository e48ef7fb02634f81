package preview

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"meshtls/stat"
	"meshtls/tap"
)

func TestReportFromRows(t *testing.T) {
	var r Report
	r.Target, r.Namespace = "deploy/web", "emojivoto"
	r.AddRows([]stat.Row{{
		Name: "web", Requests: 100, TLS: 0.7,
		TopPlaintext: []stat.PlaintextEdge{
			{Source: stat.UnmeshedSource, Destination: "deploy/web", Reason: "no_tls_from_remote", Requests: 20},
			{Source: "deploy/vote-bot", Destination: "deploy/web", Reason: "not_provided_by_service_discovery", Requests: 10},
		},
	}, {Name: "idle", Requests: math.NaN(), TLS: math.NaN()}}, 10*time.Second)
	if !r.Refused() || r.Requests != 100 || math.Abs(r.MTLS-70) > 1e-9 {
		t.Fatalf("report: %+v", r)
	}
	// Named clients first, then the unattributed remainder.
	if r.Clients[0].Source != "deploy/vote-bot" || r.Clients[1].Source != stat.UnmeshedSource {
		t.Errorf("order: %+v", r.Clients)
	}
	if r.Clients[1].RPS != 2 {
		t.Errorf("rps of 20 requests in 10s: %v", r.Clients[1].RPS)
	}
	if got := r.Summary(); !strings.Contains(got, "would refuse 2 clients (plain text seen in 10s of metrics)") {
		t.Errorf("summary: %q", got)
	}
}

func event(kind tap.Kind, dir tap.Direction, tls tap.TLS, src tap.Peer, dstPort uint16, path string) *tap.Event {
	return &tap.Event{Kind: kind, Direction: dir, TLS: tls, Src: src,
		Dst: tap.Peer{Addr: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.9"), dstPort)}, Path: path}
}

func TestTallyCountsEachInboundRequestOnce(t *testing.T) {
	plain := tap.TLS{Status: "no_identity", NoTLSReason: "no_tls_from_remote"}
	mtls := tap.TLS{Status: "true", ClientID: "vote-bot"}
	bot := tap.Peer{Addr: netip.MustParseAddrPort("10.0.0.5:4000"), Labels: map[string]string{"namespace": "emojivoto", "deployment": "legacy-bot"}}
	other := tap.Peer{Addr: netip.MustParseAddrPort("10.0.1.5:4000"), Labels: map[string]string{"namespace": "tools", "deployment": "curl"}}
	node := tap.Peer{Addr: netip.MustParseAddrPort("10.0.0.1:5000")}
	tally := &Tally{TargetNamespace: "emojivoto", Probes: []Probe{{Port: 8080, Path: "/ready"}}}
	for _, e := range []*tap.Event{
		event(tap.KindRequest, tap.DirInbound, plain, bot, 8080, "/api/list"),
		event(tap.KindResponse, tap.DirInbound, plain, bot, 8080, "/api/list"), // same request
		event(tap.KindEnd, tap.DirInbound, plain, bot, 8080, "/api/list"),      // same request
		event(tap.KindRequest, tap.DirInbound, plain, bot, 8080, "/api/vote"),
		event(tap.KindRequest, tap.DirOutbound, plain, bot, 8080, "/x"), // web's own call out
		event(tap.KindRequest, tap.DirInbound, mtls, bot, 8080, "/api/list"),
		event(tap.KindRequest, tap.DirInbound, plain, node, 8080, "/ready?x=1"), // the kubelet's probe
		event(tap.KindRequest, tap.DirInbound, plain, node, 8080, "/admin"),     // not a probe: refused
		event(tap.KindRequest, tap.DirInbound, plain, other, 8080, "/ready"),    // a pod, even on a probe path
	} {
		tally.Observe(e)
	}
	var r Report
	r.AddTally(tally, 2*time.Second)
	if r.Tapped != 6 || r.TappedMTLS != 1 || r.Exempt != 1 {
		t.Errorf("tapped %d, mtls %d, exempt %d; want 6, 1, 1", r.Tapped, r.TappedMTLS, r.Exempt)
	}
	got := map[string]float64{}
	for _, c := range r.Clients {
		got[c.Source] = c.Requests
	}
	want := map[string]float64{"deploy/legacy-bot": 2, "10.0.0.1": 1, "tools/deploy/curl": 1}
	if len(got) != len(want) {
		t.Fatalf("clients %+v, want %v", r.Clients, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("client %s: %v requests, want %v (all: %+v)", k, got[k], v, r.Clients)
		}
	}
}

func TestMergeKeepsBothEvidence(t *testing.T) {
	var r Report
	r.AddRows([]stat.Row{{Name: "web", Requests: 10, TLS: 0.5, TopPlaintext: []stat.PlaintextEdge{
		{Source: "deploy/vote-bot", Reason: "not_provided_by_service_discovery", Requests: 5}}}}, time.Minute)
	tally := &Tally{}
	tally.Observe(event(tap.KindRequest, tap.DirInbound, tap.TLS{Status: "no_identity", NoTLSReason: "not_provided_by_service_discovery"},
		tap.Peer{Labels: map[string]string{"deployment": "vote-bot"}}, 80, "/"))
	r.AddTally(tally, time.Second)
	if len(r.Clients) != 1 || len(r.Clients[0].Seen) != 2 || r.Clients[0].Requests != 5 {
		t.Errorf("merged: %+v; want one client seen by metrics and tap with the larger count", r.Clients)
	}
}

func TestNoTrafficIsNotAllClear(t *testing.T) {
	r := Report{Target: "deploy/web", Namespace: "ns", Window: time.Hour}
	if r.Refused() || r.Traffic() {
		t.Fatal("empty report")
	}
	if s := r.Summary(); !strings.Contains(s, "No request reached deploy/web in ns in 1h") {
		t.Errorf("summary: %q", s)
	}
	if got := fmtDur(90 * time.Second); got != "1m30s" {
		t.Errorf("fmtDur(90s) = %q", got)
	}
}
