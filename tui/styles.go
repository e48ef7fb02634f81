package tui

import (
	"charm.land/lipgloss/v2"
)

// styles are empty when colour is off (not a terminal, or NO_COLOR), so
// the same rendering code prints plain text.
type styles struct {
	header, status, selected, lock, plain, fail, ok, dim, errText, title lipgloss.Style
}

func newStyles(color bool) styles {
	if !color {
		return styles{}
	}
	return styles{
		header:   lipgloss.NewStyle().Bold(true),
		status:   lipgloss.NewStyle().Reverse(true),
		selected: lipgloss.NewStyle().Reverse(true),
		lock:     lipgloss.NewStyle().Foreground(lipgloss.Color("2")),
		plain:    lipgloss.NewStyle().Foreground(lipgloss.Color("3")),
		fail:     lipgloss.NewStyle().Foreground(lipgloss.Color("1")),
		ok:       lipgloss.NewStyle().Foreground(lipgloss.Color("2")),
		dim:      lipgloss.NewStyle().Faint(true),
		errText:  lipgloss.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
		title:    lipgloss.NewStyle().Bold(true),
	}
}

// glyphs are the marks rows use; ascii is for terminals that cannot draw
// the lock.
type glyphs struct {
	lock, plain, live, paused, ended, arrow string
}

func newGlyphs(ascii bool) glyphs {
	if ascii {
		return glyphs{lock: "[TLS]", plain: "[PLAIN]", live: "LIVE", paused: "PAUSED", ended: "ENDED", arrow: "->"}
	}
	return glyphs{lock: "🔒", plain: "⚠ plain", live: "● live", paused: "⏸ PAUSED", ended: "■ ended", arrow: "→"}
}
