package proxy

import (
	"testing"
)

func TestDetect(t *testing.T) {
	cases := []struct {
		in   string
		p    Protocol
		more bool
	}{
		{"", Opaque, true},
		{"\x16", Opaque, true},
		{"\x16\x03\x01\x02\x00", TLS, false},
		{"\x16\x01", Opaque, false},
		{"GE", Opaque, true},
		{"GET / HTTP/1.1\r\n", HTTP1, false},
		{"DELETE /x HTTP/1.1\r\n", HTTP1, false},
		{"GETX", Opaque, false},
		{"PRI * HTTP/2.0\r\n", Opaque, true},
		{string(h2Preface), HTTP2, false},
		{"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Opaque, false},
		{"SSH-2.0-OpenSSH\r\n", Opaque, false},
		{"\x00\x00\x00", Opaque, false},
	}
	for _, c := range cases {
		p, more := Detect([]byte(c.in))
		if p != c.p || more != c.more {
			t.Errorf("Detect(%q) = %v, %v; want %v, %v", c.in, p, more, c.p, c.more)
		}
	}
}

// FuzzDetect checks Detect's invariants: a decided answer never changes as
// more bytes arrive, and undecided inputs are short.
func FuzzDetect(f *testing.F) {
	for _, s := range []string{"", "GET / HTTP/1.1\r\n\r\n", string(h2Preface), "\x16\x03\x01\x00\x05hello", "PRI", "garbage\x00\xff", "\x16"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, more := Detect(b)
		if more && len(b) >= maxDetect {
			t.Fatalf("Detect(%q) undecided after %d bytes", b, len(b))
		}
		if !more {
			for i := len(b); i <= len(b)+1; i++ {
				ext := append(append([]byte{}, b...), 'x')
				if p2, more2 := Detect(ext); more2 || p2 != p {
					t.Fatalf("Detect(%q)=%v decided, but Detect(%q)=%v,%v", b, p, ext, p2, more2)
				}
			}
		}
		if p == TLS && (len(b) < 2 || b[0] != 0x16) {
			t.Fatalf("Detect(%q) = TLS", b)
		}
	})
}
