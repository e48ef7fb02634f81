// Package preview answers the question asked before TLS is required on a
// workload or namespace: which clients would be refused? A client is
// refused when it reaches the target's proxies without mutual TLS. Two
// kinds of evidence name them: the proxies' metrics over a window (stat's
// plain-text edges, which name meshed clients by workload and count the
// rest as unmeshed) and a live tap, which names every client it sees,
// unmeshed ones included, by workload or address.
package preview

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"meshtls/stat"
	"meshtls/tap"
)

// Evidence kinds a client was seen by.
const (
	SeenWindow = "metrics" // the proxies' metrics over the window
	SeenTap    = "tap"     // the live tap
)

// Client is one source that sent plain text to the target and would be
// refused once TLS is required there.
type Client struct {
	// Source is the client's workload (deploy/legacy-bot, with its
	// namespace when it differs from the target's), its pod, its address,
	// or stat.UnmeshedSource for plain text the metrics cannot attribute.
	Source string `json:"source"`
	// Reason is the no_tls_reason the target's proxies recorded.
	Reason string `json:"reason"`
	// Requests is the count of plain-text requests: over the window for
	// metrics, during the watch for tap (the larger when both saw it).
	Requests float64 `json:"requests"`
	// RPS is Requests over the time that saw them.
	RPS float64 `json:"rps"`
	// Seen lists the evidence that named the client (metrics, tap).
	Seen []string `json:"seen"`
}

// Report is the preview of requiring TLS on one target.
type Report struct {
	Target    string `json:"target"`
	Namespace string `json:"namespace,omitempty"`
	// Window is the span the metrics covered; zero when none were read.
	Window time.Duration `json:"-"`
	// Watch is how long tap watched; zero when it did not.
	Watch time.Duration `json:"-"`
	// Requests and MTLS count the target's inbound requests in the window
	// and those over mutual TLS (NaN-free: zero without traffic).
	Requests float64 `json:"requests"`
	MTLS     float64 `json:"mtls_requests"`
	// Tapped counts the inbound requests tap saw; TappedMTLS those over
	// mutual TLS; Exempt the kubelet's probes tap saw, which required
	// mode lets through.
	Tapped     int `json:"tapped_requests"`
	TappedMTLS int `json:"tapped_mtls_requests"`
	Exempt     int `json:"exempt_probe_requests"`
	// Clients would be refused, most requests first.
	Clients []Client `json:"clients"`
}

// Refused reports whether any client would be refused.
func (r *Report) Refused() bool { return len(r.Clients) > 0 }

// Traffic reports whether any evidence saw a request to the target at all:
// without any, "nobody would be refused" is only "nobody was seen".
func (r *Report) Traffic() bool { return r.Requests > 0 || r.Tapped > 0 }

// AddRows adds the evidence of a stat result for the target: each row's
// plain-text edges become clients. rows are the target's own rows (one for
// a workload, one for a namespace).
func (r *Report) AddRows(rows []stat.Row, window time.Duration) {
	r.Window = window
	secs := window.Seconds()
	for _, row := range rows {
		if math.IsNaN(row.Requests) || row.Requests <= 0 {
			continue
		}
		r.Requests += row.Requests
		if !math.IsNaN(row.TLS) {
			r.MTLS += row.TLS * row.Requests
		}
		for _, e := range row.TopPlaintext {
			c := Client{Source: e.Source, Reason: e.Reason, Requests: e.Requests, Seen: []string{SeenWindow}}
			if secs > 0 {
				c.RPS = e.Requests / secs
			}
			r.add(c)
		}
	}
	r.sort()
}

// Probe is an HTTP probe of one of the target's pods (the kubelet's
// liveness, readiness or startup probe), which required mode exempts.
type Probe struct {
	Port int
	Path string
}

// Tally collects a live tap's inbound requests to the target.
type Tally struct {
	// Probes are the target pods' HTTP probes; a plain-text request from
	// outside any pod to one of them is exempt, not refused.
	Probes []Probe
	// TargetNamespace qualifies clients from other namespaces.
	TargetNamespace string

	clients map[string]*Client
	tapped  int
	mtls    int
	exempt  int
}

// Observe counts one tap event. Only request events of the target's
// inbound side count: each request once, as its proxy received it.
func (t *Tally) Observe(e *tap.Event) {
	if e.Kind != tap.KindRequest || e.Direction != tap.DirInbound {
		return
	}
	t.tapped++
	if e.TLS.Encrypted() {
		t.mtls++
		return
	}
	src := e.Src
	if src.Resource() == "" && t.isProbe(e) {
		t.exempt++
		return
	}
	name := src.Name()
	if ns := src.Namespace(); ns != "" && t.TargetNamespace != "" && ns != t.TargetNamespace && src.Resource() != "" {
		name = ns + "/" + name
	}
	reason := e.TLS.Reason()
	key := name + "\xff" + reason
	if t.clients == nil {
		t.clients = map[string]*Client{}
	}
	c, ok := t.clients[key]
	if !ok {
		c = &Client{Source: name, Reason: reason, Seen: []string{SeenTap}}
		t.clients[key] = c
	}
	c.Requests++
}

func (t *Tally) isProbe(e *tap.Event) bool {
	port := int(e.Dst.Addr.Port())
	path, _, _ := strings.Cut(e.Path, "?")
	for _, p := range t.Probes {
		if p.Port == port && p.Path == path {
			return true
		}
	}
	return false
}

// AddTally adds what a tap of length watch saw. A client the metrics
// counted only as unmeshed and tap names keeps both rows: the metrics' row
// says how much, tap's who.
func (r *Report) AddTally(t *Tally, watch time.Duration) {
	r.Watch = watch
	r.Tapped += t.tapped
	r.TappedMTLS += t.mtls
	r.Exempt += t.exempt
	for _, c := range t.clients {
		c := *c
		if s := watch.Seconds(); s > 0 {
			c.RPS = c.Requests / s
		}
		r.add(c)
	}
	r.sort()
}

// add merges c into the client with the same source and reason.
func (r *Report) add(c Client) {
	for i := range r.Clients {
		have := &r.Clients[i]
		if have.Source != c.Source || have.Reason != c.Reason {
			continue
		}
		for _, s := range c.Seen {
			if !slices.Contains(have.Seen, s) {
				have.Seen = append(have.Seen, s)
			}
		}
		if c.Requests > have.Requests {
			have.Requests, have.RPS = c.Requests, c.RPS
		}
		return
	}
	r.Clients = append(r.Clients, c)
}

func (r *Report) sort() {
	sort.SliceStable(r.Clients, func(i, j int) bool {
		a, b := r.Clients[i], r.Clients[j]
		// Named clients before the unattributed remainder.
		if (a.Source == stat.UnmeshedSource) != (b.Source == stat.UnmeshedSource) {
			return b.Source == stat.UnmeshedSource
		}
		if a.RPS != b.RPS {
			return a.RPS > b.RPS
		}
		if a.Source != b.Source {
			return a.Source < b.Source
		}
		return a.Reason < b.Reason
	})
}

// Summary is the report's one-line verdict.
func (r *Report) Summary() string {
	what := r.Target
	if r.Namespace != "" && !strings.HasPrefix(r.Target, "ns/") {
		what += " in " + r.Namespace
	}
	var seen []string
	if r.Window > 0 {
		seen = append(seen, fmt.Sprintf("%s of metrics", fmtDur(r.Window)))
	}
	if r.Watch > 0 {
		seen = append(seen, fmt.Sprintf("%s of live tap", fmtDur(r.Watch)))
	}
	over := strings.Join(seen, " and ")
	switch {
	case r.Refused():
		n := len(r.Clients)
		s := "s"
		if n == 1 {
			s = ""
		}
		return fmt.Sprintf("Requiring TLS on %s would refuse %d client%s (plain text seen in %s):", what, n, s, over)
	case !r.Traffic():
		return fmt.Sprintf("No request reached %s in %s: nothing shows who would be refused (widen -t or add --watch).", what, over)
	default:
		return fmt.Sprintf("Requiring TLS on %s would refuse no client: every request seen in %s was mutual TLS.", what, over)
	}
}

// fmtDur prints 1h, 5m or 1m30s: the units a user types for -t.
func fmtDur(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d > 0 && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d > 0 && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}
