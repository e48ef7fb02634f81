package tap

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Paths, authorities and headers come off the wire from anyone who can send
// a request. Before they reach a terminal, an escape sequence in them could
// move the cursor, rewrite earlier lines or change the window title; before
// they reach a line of text, a space could forge a field (`/x tls=true`).

// Escape makes s safe to print on a terminal: C0 and C1 control
// characters, DEL, invalid UTF-8, and Unicode format characters (bidi
// overrides, zero-width characters) become visible Go-style escapes, and a
// backslash becomes `\\` so an escape cannot be forged.
func Escape(s string) string { return escape(s, false) }

// EscapeField is Escape for the value of a key=value field in a text line:
// it also escapes spaces, so a value cannot split into extra fields.
func EscapeField(s string) string { return escape(s, true) }

func escape(s string, field bool) string {
	if isPlain(s, field) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == ' ' && field:
			b.WriteString(`\x20`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0, unicode.Is(unicode.Cf, r), r == '\u2028', r == '\u2029':
			fmt.Fprintf(&b, `\u%04x`, r)
		case !unicode.IsPrint(r) && r != ' ':
			if r > 0xffff {
				fmt.Fprintf(&b, `\U%08x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// isPlain is the fast path: printable ASCII needs no work, which is almost
// every path and authority.
func isPlain(s string, field bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '\\' || (field && c == ' ') {
			return false
		}
	}
	return true
}
