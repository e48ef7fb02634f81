package tap

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	cases := []struct{ in, term, field string }{
		{"/api/list", "/api/list", "/api/list"},
		{"/a b", "/a b", `/a\x20b`},
		{"/x tls=true", "/x tls=true", `/x\x20tls=true`},
		{"\x1b]0;pwned\x07\x1b[2J", `\x1b]0;pwned\x07\x1b[2J`, `\x1b]0;pwned\x07\x1b[2J`},
		{"a\r\nb", `a\x0d\x0ab`, `a\x0d\x0ab`},
		{"del\x7f", `del\x7f`, `del\x7f`},
		{"c1\u009b31m", `c1\u009b31m`, `c1\u009b31m`},
		{"bidi\u202eevil", `bidi\u202eevil`, `bidi\u202eevil`},
		{"zw\u200bj", `zw\u200bj`, `zw\u200bj`},
		{"bad\xff\xfe", `bad\xff\xfe`, `bad\xff\xfe`},
		{`back\slash`, `back\\slash`, `back\\slash`},
		{"émoji 🔒", "émoji 🔒", `émoji\x20🔒`},
	}
	for _, tc := range cases {
		if got := Escape(tc.in); got != tc.term {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.term)
		}
		if got := EscapeField(tc.in); got != tc.field {
			t.Errorf("EscapeField(%q) = %q, want %q", tc.in, got, tc.field)
		}
	}
}

// safe is what may reach a terminal: valid UTF-8 with no control or
// format characters.
func safe(s string, field bool) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || unicode.Is(unicode.Cf, r) || (field && r == ' ') {
			return false
		}
	}
	return true
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"/api", "\x1b[2J", "\u202e", "\xff", "a b\\c", "\u009b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		term, field := Escape(s), EscapeField(s)
		if !safe(term, false) {
			t.Fatalf("Escape(%q) = %q still has control characters", s, term)
		}
		if !safe(field, true) {
			t.Fatalf("EscapeField(%q) = %q still has control characters or spaces", s, field)
		}
		if isPlain(s, false) && term != s {
			t.Fatalf("plain %q changed to %q", s, term)
		}
		// A line with an escaped value has exactly the fields it was given.
		line := "k=" + field + " tls=true"
		if n := len(strings.Fields(line)); n != 2 {
			t.Fatalf("value %q split a line into %d fields", s, n)
		}
	})
}
