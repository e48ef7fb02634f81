package tui

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"

	"meshtls/contract"
	"meshtls/tap"
)

// detailView shows every field of one request, both peer identities and,
// when the source knows them, their certificates.
type detailView struct {
	width, height int
	event         tap.Event
	certs         tap.CertLookup
	controlNS     string
	now           func() time.Time
}

func (d *detailView) setSize(w, h int) { d.width, d.height = w, h }

func (d *detailView) identityLine(label, id string, verified bool, p tap.Peer, st styles) []string {
	note := "verified peer"
	if id == "" || !verified {
		// The proxy reports the verified identity of its peer; its own
		// identity follows from its workload, as the CA names it.
		if kind, name := p.Owner(); name != "" && p.Namespace() != "" && id == "" {
			id = contract.Identity(name, kind, p.Namespace(), d.controlNS)
			note = "tapped proxy, from its workload"
		}
	}
	if id == "" {
		return []string{fmt.Sprintf("  %-16s -", label)}
	}
	lines := []string{fmt.Sprintf("  %-16s %s (%s)", label, tap.Escape(id), note)}
	if d.certs != nil {
		if c, ok := d.certs.Certificate(id); ok {
			exp := c.NotAfter.UTC().Format(time.RFC3339)
			if d.now != nil && d.now().After(c.NotAfter) {
				exp = st.errText.Render(exp + " EXPIRED")
			}
			lines = append(lines, fmt.Sprintf("  %-16s serial %s, expires %s", "", tap.Escape(c.Serial), exp))
		} else {
			lines = append(lines, fmt.Sprintf("  %-16s certificate not known to this source", ""))
		}
	}
	return lines
}

func labelsText(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = tap.Escape(k) + "=" + tap.Escape(m[k])
	}
	return strings.Join(parts, " ")
}

func (d *detailView) view(g glyphs, st styles) string {
	e := &d.event
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	lines = append(lines, st.title.Render("Request detail"))
	add("  %-16s %d:%d", "id", e.ID.Base, e.ID.Stream)
	add("  %-16s %s", "time", e.Time.UTC().Format("2006-01-02 15:04:05.000000Z07:00"))
	add("  %-16s %s (%s)", "proxy", e.Direction, map[tap.Direction]string{tap.DirInbound: "inbound", tap.DirOutbound: "outbound"}[e.Direction])
	add("  %-16s %s %s %s", "request", tap.Escape(e.Method), tap.Escape(e.Scheme), tap.Escape(e.Authority))
	add("  %-16s %s", "path", tap.Escape(e.Path))
	lines = append(lines, "")
	for _, side := range []struct {
		name string
		p    tap.Peer
	}{{"source", e.Src}, {"destination", e.Dst}} {
		addr := "-"
		if side.p.Addr.IsValid() {
			addr = side.p.Addr.String()
		}
		add("  %-16s %s  %s", side.name, addr, tap.Escape(side.p.Resource()))
		add("  %-16s %s", "", labelsText(side.p.Labels))
	}
	lines = append(lines, "")
	if e.TLS.Encrypted() {
		add("  %-16s %s", "tls", st.lock.Render(g.lock+" mutual TLS (tls=true)"))
	} else {
		add("  %-16s %s", "tls", st.plain.Render(fmt.Sprintf("%s: tls=%s, no_tls_reason=%s", g.plain, tap.Escape(e.TLS.Status), tap.Escape(e.TLS.Reason()))))
	}
	client, server := e.Src, e.Dst
	inbound := e.Direction == tap.DirInbound
	if e.TLS.Encrypted() {
		lines = append(lines, d.identityLine("client identity", e.TLS.ClientID, inbound || e.TLS.ClientID != "", client, st)...)
		lines = append(lines, d.identityLine("server identity", e.TLS.ServerID, !inbound || e.TLS.ServerID != "", server, st)...)
	}
	lines = append(lines, "")
	if e.Kind >= tap.KindResponse {
		add("  %-16s %d", "status", e.Status)
		add("  %-16s %s", "latency", formatDuration(e.Latency))
	} else {
		add("  %-16s waiting for the response", "status")
	}
	if e.Kind == tap.KindEnd {
		switch {
		case e.HasGRPCStatus:
			add("  %-16s %s (%d)", "grpc-status", tap.GRPCStatusName(e.GRPCStatus), e.GRPCStatus)
		case e.HasReset:
			add("  %-16s %d", "reset-error", e.ResetCode)
		}
		if e.Error != "" {
			add("  %-16s %s", "error", tap.Escape(e.Error))
		}
		add("  %-16s %s", "duration", formatDuration(e.Duration))
		add("  %-16s %dB request, %dB response", "bytes", e.RequestBytes, e.ResponseBytes)
		ok := st.ok.Render("yes")
		if !e.Success() {
			ok = st.fail.Render("no")
		}
		add("  %-16s %s", "success", ok)
	}
	if e.DroppedBefore > 0 {
		add("  %-16s %d events before this one", "dropped", e.DroppedBefore)
	}
	for i, l := range lines {
		lines[i] = ansi.Truncate(l, d.width, "…")
	}
	if len(lines) > d.height {
		lines = lines[:d.height]
	}
	for len(lines) < d.height {
		lines = append(lines, "")
	}
	return strings.Join(lines, "\n")
}
