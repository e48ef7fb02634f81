package cli

import (
	"math"
	"strings"
	"testing"
	"time"

	"meshtls/check"
	"meshtls/stat"
)

// hostile is what a pod serving its own /metrics, or a tenant writing a
// Secret, can put in a label value or a certificate: an OSC that retitles
// the terminal, a screen clear, a bidi override.
const hostile = "evil\x1b]0;pwned\x07\x1b[2J\u202e"

func assertNoRawControls(t *testing.T, what, out string) {
	t.Helper()
	for _, bad := range []string{"\x1b", "\x07", "\u202e"} {
		if strings.Contains(out, bad) {
			t.Errorf("%s prints a raw %q:\n%q", what, bad, out)
		}
	}
	if !strings.Contains(out, `evil\x1b]0;pwned\x07`) {
		t.Errorf("%s does not show the hostile text escaped:\n%q", what, out)
	}
}

// m5: stat's table escapes names and label values from scraped metrics.
func TestStatTableEscapesScrapedStrings(t *testing.T) {
	ios, out, _ := TestStreams(false)
	res := &stat.Result{Window: time.Minute, Rows: []stat.Row{{
		Namespace: "ns" + hostile, Kind: stat.KindAuthority, Name: "web" + hostile,
		Requests: 60, Success: 1, RPS: 1, TLS: 0, P50: math.NaN(), P95: math.NaN(), P99: math.NaN(),
		NoTLS:        map[string]float64{"reason" + hostile: 60},
		TopPlaintext: []stat.PlaintextEdge{{Source: "src" + hostile, Destination: "dst" + hostile, Requests: 60}},
	}}}
	opts := &StatOptions{Output: "wide", AllNamespaces: true, Resource: stat.Resource{Kind: stat.KindAuthority}}
	opts.Resources = []stat.Resource{opts.Resource}
	if err := printStatTable(ios, opts, res); err != nil {
		t.Fatal(err)
	}
	assertNoRawControls(t, "stat -o wide", out.String())
}

// m5: check's text output escapes what it quotes from the cluster (a SAN,
// a subject, an object's name).
func TestCheckOutputEscapesClusterStrings(t *testing.T) {
	ios, out, _ := TestStreams(false)
	p := newCheckTextPrinter(ios)
	p.Observe(check.Result{Category: "linkerd-tls-data-plane", Description: "workload certificates name their identity", Status: check.StatusError,
		Error: "certificates not naming their identity: 1 " + hostile,
		Problems: []check.Problem{{Kind: "deploy", Namespace: "app", Name: "web" + hostile,
			Reason: "DNS SAN is [" + hostile + "], want web", Remedy: "delete it " + hostile}},
		Notes: []string{"note " + hostile}})
	assertNoRawControls(t, "check", out.String())
}
