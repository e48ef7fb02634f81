package proxy

import (
	"bytes"
	"net"
	"slices"
	"testing"
	"time"
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
		{"GETX", Opaque, true},
		{"PROPFIND /dav/x HTTP/1.1\r\n", HTTP1, false},
		{"PURGE /cache HTTP/1.0\r\n", HTTP1, false},
		{"M-SEARCH * HTTP/1.1\r\n", HTTP1, false},
		{"PURGE /cache HTTP/1", Opaque, true},
		{"SET key value\r\n", Opaque, false},
		{"PING\r\n", Opaque, false},
		{"FOO /x HTTP/2.0\r\n", Opaque, false},
		{"get key\r\n", Opaque, false},
		{"FOO  /x HTTP/1.1", Opaque, false},
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

// FuzzDetect checks Detect's invariants for any input b and any bytes more
// that arrive after it: a decided answer never changes as more bytes
// arrive, undecided inputs are short, and each protocol is only claimed
// for its own first bytes. detect, reading b and more off a connection in
// whatever pieces the pipe delivers, returns a prefix of what was sent (the
// bytes the proxy replays) and the answer Detect gives for that prefix.
func FuzzDetect(f *testing.F) {
	for _, s := range [][2]string{
		{"", ""}, {"GET / HTTP/1.1\r\n\r\n", ""}, {string(h2Preface), "\x00\x00"}, {"\x16\x03\x01\x00\x05hello", ""},
		{"PRI", " * HTTP/2.0\r\n"}, {"garbage\x00\xff", "x"}, {"\x16", "\x03"}, {"DELE", "TE /x"}, {"PRI * HTTP/2.0\r\n\r\nS", "X"},
		{"PROPFIND /a", " HTTP/1.1\r\n"}, {"PURGE / HTT", "P/1.0"}, {"SET k", " v\r\n"}, {"X / HTTP/1", ".1"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, b, more []byte) {
		p, undecided := Detect(b)
		if undecided && len(b) >= maxDetect {
			t.Fatalf("Detect(%q) undecided after %d bytes", b, len(b))
		}
		if undecided && p != Opaque {
			t.Fatalf("Detect(%q) = %v but undecided", b, p)
		}
		all := append(append([]byte{}, b...), more...)
		p2, undecided2 := Detect(all)
		if !undecided && (undecided2 || p2 != p) {
			t.Fatalf("Detect(%q) = %v decided, but Detect(%q) = %v, undecided %v", b, p, all, p2, undecided2)
		}
		switch p2 {
		case TLS:
			if len(all) < 2 || all[0] != 0x16 || all[1] != 0x03 {
				t.Fatalf("Detect(%q) = TLS", all)
			}
		case HTTP2:
			if !bytes.HasPrefix(all, h2Preface) {
				t.Fatalf("Detect(%q) = h2 without the preface", all)
			}
		case HTTP1:
			// A common method and its space, or a whole request line's
			// shape within the bytes detection reads.
			i := bytes.IndexByte(all, ' ')
			common := i >= 0 && slices.ContainsFunc(methods, func(m []byte) bool { return bytes.Equal(m, all[:i+1]) })
			if !common {
				head := all[:min(len(all), maxDetect)]
				parts := bytes.SplitN(head, []byte(" "), 3)
				if len(parts) < 3 || len(parts[0]) == 0 || len(parts[1]) == 0 || !bytes.HasPrefix(parts[2], []byte("HTTP/1.")) {
					t.Fatalf("Detect(%q) = http/1 without a request line", all)
				}
				for _, c := range parts[0] {
					if !isTokenChar(c) {
						t.Fatalf("Detect(%q) = http/1 with method %q", all, parts[0])
					}
				}
			}
		}

		client, server := net.Pipe()
		go func() {
			defer client.Close()
			// Two writes: the reader sees the bytes in pieces.
			if _, err := client.Write(b); err == nil {
				_, _ = client.Write(more)
			}
		}()
		got, replay, err := detect(server, time.Minute)
		server.Close()
		if len(all) == 0 {
			return
		}
		if err != nil {
			t.Fatalf("detect(%q): %v", all, err)
		}
		if !bytes.HasPrefix(all, replay) || len(replay) == 0 {
			t.Fatalf("detect(%q) replays %q, not a prefix of what was sent", all, replay)
		}
		if want, _ := Detect(replay); got != want {
			t.Fatalf("detect(%q) = %v, but Detect(%q) = %v", all, got, replay, want)
		}
		// Whether it decided early or met the end of the stream, the
		// answer is the whole stream's.
		if got != p2 {
			t.Fatalf("detect(%q) = %v, Detect = %v", all, got, p2)
		}
	})
}

// TestDetectStall: a peer that stalls on half of a common method is an
// error (closed, counted); one that stalls on words that might yet be an
// uncommon method's request line is forwarded as opaque, as
// linkerd2-proxy does after its detection timeout.
func TestDetectStall(t *testing.T) {
	for in, wantErr := range map[string]bool{"GE": true, "\x16": true, "PRI * HT": true, "SET k": false, "q": false, "PROPFIND /x HT": false} {
		client, server := net.Pipe()
		go func() { _, _ = client.Write([]byte(in)) }()
		p, buf, err := detect(server, 200*time.Millisecond)
		_ = client.Close()
		_ = server.Close()
		if (err != nil) != wantErr || p != Opaque || string(buf) != in {
			t.Errorf("detect(%q then nothing) = %v, %q, %v; want opaque, an error %v", in, p, buf, err, wantErr)
		}
	}
}
