package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"time"
)

// Protocol is what the first bytes of a connection say it speaks.
type Protocol int

// The protocols the proxy tells apart. Anything it does not recognise is
// Opaque and forwarded byte for byte.
const (
	Opaque Protocol = iota
	TLS
	HTTP1
	HTTP2
)

func (p Protocol) String() string {
	switch p {
	case TLS:
		return "tls"
	case HTTP1:
		return "http/1"
	case HTTP2:
		return "h2"
	}
	return "opaque"
}

// h2Preface starts every prior-knowledge HTTP/2 connection (RFC 9113 §3.4).
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// methods are the common HTTP/1 request methods, each with the space
// that must follow it: one decides at once. Any other token method
// (WebDAV's PROPFIND, PURGE, a custom one) is HTTP/1 once the whole
// request line's shape is seen: method SP request-target SP "HTTP/1.".
var methods = [][]byte{
	[]byte("GET "), []byte("HEAD "), []byte("POST "), []byte("PUT "), []byte("DELETE "),
	[]byte("OPTIONS "), []byte("PATCH "), []byte("CONNECT "), []byte("TRACE "),
}

// maxDetect is the most bytes detection reads: room for the request line
// of an uncommon method. A longer one is opaque.
const maxDetect = 1024

// maxMethod bounds a method token.
const maxMethod = 32

// Detect classifies the first bytes of a connection. more is true when b is
// still a prefix of something recognisable and more bytes would decide.
// Only the first maxDetect bytes count, so an answer never changes as
// more arrive.
func Detect(b []byte) (p Protocol, more bool) {
	b = b[:min(len(b), maxDetect)]
	if len(b) == 0 {
		return Opaque, true
	}
	// A TLS record: handshake content type (22) and a 3.x legacy version.
	if b[0] == 0x16 {
		if len(b) < 2 {
			return Opaque, true
		}
		if b[1] == 0x03 {
			return TLS, false
		}
		return Opaque, false
	}
	if hasPrefixOrIsPrefix(b, h2Preface) {
		if len(b) >= len(h2Preface) {
			return HTTP2, false
		}
		return Opaque, true
	}
	for _, m := range methods {
		if bytes.HasPrefix(b, m) {
			return HTTP1, false
		}
	}
	yes, undecided := requestLine(b)
	if yes {
		return HTTP1, false
	}
	if undecided && len(b) == maxDetect {
		return Opaque, false
	}
	return Opaque, undecided
}

// requestLine reports whether b starts an HTTP/1 request line (method
// token, SP, request-target, SP, "HTTP/1."), or may once more arrives.
func requestLine(b []byte) (yes, more bool) {
	i := 0
	for i < len(b) && i <= maxMethod && isTokenChar(b[i]) {
		i++
	}
	if i > maxMethod {
		return false, false
	}
	if i == len(b) {
		return false, true
	}
	if i == 0 || b[i] != ' ' {
		return false, false
	}
	i++
	j := i
	for j < len(b) && b[j] > ' ' && b[j] != 0x7f {
		j++
	}
	if j == len(b) {
		return false, true
	}
	if j == i || b[j] != ' ' {
		return false, false
	}
	rest := b[j+1:]
	const version = "HTTP/1."
	if len(rest) >= len(version) {
		return string(rest[:len(version)]) == version, false
	}
	return false, version[:len(rest)] == string(rest)
}

// strictPrefix reports whether b is a prefix of a TLS record, the HTTP/2
// preface or a common method: a peer that sends one and stalls is broken
// (or probing), not speaking another protocol.
func strictPrefix(b []byte) bool {
	if len(b) == 1 && b[0] == 0x16 || len(b) < len(h2Preface) && bytes.HasPrefix(h2Preface, b) {
		return true
	}
	for _, m := range methods {
		if len(b) < len(m) && bytes.HasPrefix(m, b) {
			return true
		}
	}
	return false
}

// isTokenChar is RFC 9110's tchar.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func hasPrefixOrIsPrefix(b, full []byte) bool {
	if len(b) >= len(full) {
		return bytes.HasPrefix(b, full)
	}
	return bytes.HasPrefix(full, b)
}

// errDetectTimeout means the peer sent a prefix of a recognisable protocol
// (a partial ClientHello, half of a common method) and then stalled.
var errDetectTimeout = errors.New("protocol detection timed out on a partial prefix")

// detect reads from c until Detect decides or timeout passes. It returns the
// bytes read, which the caller must replay. A peer that sends nothing at
// all within timeout is treated as opaque (server-speaks-first protocols);
// one that sends an undecided prefix and stalls is an error.
func detect(c net.Conn, timeout time.Duration) (Protocol, []byte, error) {
	buf := make([]byte, 0, maxDetect)
	deadline := time.Now().Add(timeout)
	_ = c.SetReadDeadline(deadline)
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	for {
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		p, more := Detect(buf)
		if len(buf) > 0 && (!more || len(buf) == cap(buf)) {
			return p, buf, nil
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if len(buf) == 0 || !strictPrefix(buf) {
					// Nothing, or words that are not (yet) a request
					// line: as linkerd2-proxy, forward them as opaque.
					return Opaque, buf, nil
				}
				return Opaque, buf, errDetectTimeout
			}
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				return p, buf, nil
			}
			return Opaque, buf, err
		}
	}
}
