package tui

import (
	"fmt"
	"sort"
	"strings"

	"github.com/charmbracelet/x/ansi"

	"meshtls/tap"
)

// aggregateView is the per-edge (or per-path) table: Linkerd's `top` with
// an encryption column.
type aggregateView struct {
	width, height int
	sort          tap.SortKey
	offset        int
}

func (a *aggregateView) setSize(w, h int) { a.width, a.height = w, max(h, 1) }

func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

func topReason(r *tap.AggRow) string {
	reasons := r.NoTLSReasons()
	if len(reasons) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if reasons[keys[i]] != reasons[keys[j]] {
			return reasons[keys[i]] > reasons[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", tap.Escape(k), reasons[k])
	}
	return strings.Join(parts, ",")
}

func (a *aggregateView) view(agg *tap.Aggregator, g glyphs, st styles) string {
	rows := agg.Rows(a.sort)
	byPath := agg.By() == tap.ByPath
	nameW := 44
	if byPath {
		nameW = max(a.width-70, 30)
	}
	head := fmt.Sprintf("  %-*s %7s %8s %8s %9s %9s %7s  %s", nameW, "SOURCE "+g.arrow+" DESTINATION", "COUNT", "RPS", "SUCCESS", "P50", "P99", "TLS", "PLAIN (no_tls_reason)")
	if byPath {
		head = fmt.Sprintf("  %-*s %7s %8s %8s %9s %9s %7s  %s", nameW, "METHOD PATH", "COUNT", "RPS", "SUCCESS", "P50", "P99", "TLS", "PLAIN (no_tls_reason)")
	}
	title := fmt.Sprintf("Aggregate by %s, sorted by %s (%d rows)", map[bool]string{false: "edge", true: "path"}[byPath], a.sort, len(rows))
	lines := []string{st.title.Render(title), st.header.Render(ansi.Truncate(head, a.width, ""))}
	a.offset = min(a.offset, max(len(rows)-1, 0))
	span := agg.Span()
	for i := a.offset; i < len(rows) && len(lines) < a.height; i++ {
		r := rows[i]
		name := tap.Escape(r.Key.Src) + " " + g.arrow + " " + tap.Escape(r.Key.Dst)
		if byPath {
			name = tap.Escape(r.Key.Method) + " " + tap.Escape(r.Key.Path) + "  (" + name + ")"
		}
		tls := pct(r.TLSRate())
		if r.TLS == r.Count {
			tls = st.lock.Render(fmt.Sprintf("%7s", tls))
		} else {
			tls = st.plain.Render(fmt.Sprintf("%7s", tls))
		}
		succ := fmt.Sprintf("%8s", pct(r.SuccessRate()))
		if r.Successes < r.Count {
			succ = st.fail.Render(succ)
		}
		line := fmt.Sprintf("  %s %7d %8s %s %9s %9s %s  %s", cell(name, nameW), r.Count, fmt.Sprintf("%.1f", r.RPS(span)), succ,
			formatDuration(r.Quantile(0.5)), formatDuration(r.Quantile(0.99)), tls, topReason(r))
		lines = append(lines, ansi.Truncate(line, a.width, "…"))
	}
	if len(rows) == 0 {
		lines = append(lines, "  "+st.dim.Render("no finished request yet"))
	}
	for len(lines) < a.height {
		lines = append(lines, "")
	}
	return strings.Join(lines[:a.height], "\n")
}
