package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"

	"meshtls/tap"
)

// listView is the live list: one row per request, newest at the bottom,
// following new requests until the user moves the selection.
type listView struct {
	width, height int
	// selected is the sequence number of the selected row; following
	// means it tracks the newest matching row.
	selected  uint64
	following bool
	// fromBottom is how many lines above the bottom the selection sits.
	fromBottom int
}

func (l *listView) setSize(w, h int) {
	l.width, l.height = w, max(h, 1)
	l.fromBottom = min(l.fromBottom, l.height-1)
}

// columns are sized to the width: the path takes what the fixed columns
// leave.
type columns struct {
	time, dir, src, dst, method, path, status, latency, tls int
}

func (l *listView) columns() columns {
	c := columns{time: 12, dir: 3, src: 18, dst: 18, method: 6, status: 11, latency: 9, tls: 30}
	if l.width < 120 {
		c.src, c.dst, c.tls = 16, 16, 24
	}
	fixed := c.time + c.dir + c.src + c.dst + c.method + c.status + c.latency + c.tls + 9 + 2
	c.path = max(l.width-fixed, 8)
	return c
}

func cell(s string, w int) string {
	s = ansi.Truncate(s, w, "…")
	if pad := w - ansi.StringWidth(s); pad > 0 {
		s += strings.Repeat(" ", pad)
	}
	return s
}

func (l *listView) header(st styles) string {
	c := l.columns()
	h := "  " + strings.Join([]string{cell("TIME", c.time), cell("DIR", c.dir), cell("SOURCE", c.src), cell("DESTINATION", c.dst),
		cell("METHOD", c.method), cell("PATH", c.path), cell("STATUS", c.status), cell("LATENCY", c.latency), cell("TLS", c.tls)}, " ")
	return st.header.Render(ansi.Truncate(h, l.width, ""))
}

func statusText(e *tap.Event) string {
	if e.Kind == tap.KindRequest {
		return "…"
	}
	s := fmt.Sprint(e.Status)
	switch {
	case e.HasGRPCStatus && e.GRPCStatus != 0:
		s += " " + tap.GRPCStatusName(e.GRPCStatus)
	case e.HasReset:
		s = "reset " + fmt.Sprint(e.ResetCode)
	case e.Error != "":
		s = "error"
	}
	return s
}

func latencyText(e *tap.Event) string {
	if e.Kind == tap.KindRequest {
		return "…"
	}
	return formatDuration(e.Latency)
}

func formatDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
}

// tlsText marks encryption: the lock, or plain text with its reason.
func tlsText(e *tap.Event, g glyphs, st styles) string {
	if e.TLS.Encrypted() {
		return st.lock.Render(g.lock + " mtls")
	}
	return st.plain.Render(g.plain + " " + tap.Escape(e.TLS.Reason()))
}

func (l *listView) row(e *tap.Event, selected bool, g glyphs, st styles) string {
	c := l.columns()
	t := "-"
	if !e.Time.IsZero() {
		t = e.Time.UTC().Format("15:04:05.000")
	}
	status := cell(statusText(e), c.status)
	if e.Kind == tap.KindEnd && !e.Success() {
		status = st.fail.Render(status)
	}
	mark := "  "
	if selected {
		mark = "> "
	}
	line := mark + strings.Join([]string{
		cell(t, c.time), cell(e.Direction.String(), c.dir),
		cell(tap.Escape(e.Src.Name()), c.src), cell(tap.Escape(e.Dst.Name()), c.dst),
		cell(tap.Escape(e.Method), c.method), cell(tap.Escape(e.Path), c.path),
		status, cell(latencyText(e), c.latency), cell(tlsText(e, g, st), c.tls),
	}, " ")
	line = ansi.Truncate(line, l.width, "")
	if selected {
		return st.selected.Render(line)
	}
	return line
}

// visible returns the rows to draw, oldest first, and which is selected.
func (l *listView) visible(s *store, f *tap.Filter) ([]uint64, uint64) {
	var seqs []uint64 // newest first
	sel := l.selected
	if l.following {
		sel = 0
	}
	found := l.following
	idx := -1
	for seq := s.next; seq > s.oldest(); {
		seq--
		if !f.Match(s.get(seq)) {
			continue
		}
		seqs = append(seqs, seq)
		if !found && seq <= sel {
			found, idx = true, len(seqs)-1
		}
		if found && len(seqs) >= max(idx, 0)+l.height {
			break
		}
	}
	if len(seqs) == 0 {
		return nil, 0
	}
	if l.following || idx < 0 {
		l.following = true
		idx = 0
	}
	sel = seqs[idx]
	bottom := max(idx-l.fromBottom, 0)
	top := min(bottom+l.height, len(seqs))
	window := seqs[bottom:top]
	out := make([]uint64, len(window))
	for i, seq := range window {
		out[len(window)-1-i] = seq
	}
	return out, sel
}

// move shifts the selection by n matching rows (negative is older).
func (l *listView) move(s *store, f *tap.Filter, n int) {
	_, sel := l.visible(s, f)
	if s.len() == 0 {
		return
	}
	for n < 0 {
		prev, ok := nextMatch(s, f, sel, -1)
		if !ok {
			break
		}
		sel = prev
		l.following = false
		l.fromBottom = min(l.fromBottom+1, l.height-1)
		n++
	}
	for n > 0 {
		nxt, ok := nextMatch(s, f, sel, 1)
		if !ok {
			l.following, l.fromBottom = true, 0
			break
		}
		sel = nxt
		l.fromBottom = max(l.fromBottom-1, 0)
		n--
	}
	l.selected = sel
}

func nextMatch(s *store, f *tap.Filter, from uint64, dir int) (uint64, bool) {
	seq := from
	for {
		if dir < 0 {
			if seq == 0 || seq <= s.oldest() {
				return 0, false
			}
			seq--
		} else {
			seq++
			if seq >= s.next {
				return 0, false
			}
		}
		if f.Match(s.get(seq)) {
			return seq, true
		}
	}
}

func (l *listView) view(s *store, f *tap.Filter, g glyphs, st styles) string {
	seqs, sel := l.visible(s, f)
	var b strings.Builder
	b.WriteString(l.header(st))
	for _, seq := range seqs {
		b.WriteByte('\n')
		b.WriteString(l.row(s.get(seq), seq == sel, g, st))
	}
	for i := len(seqs); i < l.height; i++ {
		b.WriteByte('\n')
	}
	if len(seqs) == 0 {
		msg := "waiting for requests…"
		if f != nil && s.len() > 0 {
			msg = fmt.Sprintf("no request of the last %d matches the filter", s.len())
		}
		return l.header(st) + "\n  " + st.dim.Render(msg) + strings.Repeat("\n", max(l.height-1, 0))
	}
	return b.String()
}

// selectedEvent is the selected row, if any.
func (l *listView) selectedEvent(s *store, f *tap.Filter) *tap.Event {
	seqs, sel := l.visible(s, f)
	if len(seqs) == 0 {
		return nil
	}
	return s.get(sel)
}
