package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
)

// replayConn gives back the bytes detection consumed before reading on.
type replayConn struct {
	net.Conn
	buf []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// recordingConn keeps what a TLS server reads of a ClientHello, so a
// ClientHello that is not for us can be replayed to the application, and
// mutes the alert crypto/tls would send when we decline it.
type recordingConn struct {
	net.Conn
	rec       []byte
	recording bool
	mute      bool
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.recording {
		c.rec = append(c.rec, p[:n]...)
	}
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error) {
	if c.mute {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// countedConn is one side of a proxied connection in the tcp_* metrics.
type countedConn struct {
	net.Conn
	read, written prometheus.Counter
	closeOnce     sync.Once
	onClose       func(failed bool)
	failed        atomic.Bool
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Add(float64(n))
	}
	if err != nil && !isClosing(err) {
		c.failed.Store(true)
	}
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.written.Add(float64(n))
	}
	if err != nil && !isClosing(err) {
		c.failed.Store(true)
	}
	return n, err
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.onClose(c.failed.Load()) })
	return err
}

// CloseWrite half-closes when the underlying connection can, so opaque
// forwarding passes a peer's EOF on.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// isClosing tells an ordinary end of a connection from a failure. A
// deadline is the reader's own choice, not the peer's failure: net/http
// sets one in the past after every request to stop its background read,
// and counting that made every kept-alive connection a failure (and
// formatted an error string per request).
func isClosing(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || err.Error() == "EOF"
}

// track counts c as one connection with the transport labels l (direction,
// peer, tls and its reason or peer identity, dst_* outbound).
func (m *metrics) track(c net.Conn, l labels) *countedConn {
	m.tcpOpen.get(l).Inc()
	g := m.tcpOpenConns.get(l)
	g.Inc()
	return &countedConn{
		Conn:    c,
		read:    m.tcpReadBytes.get(l),
		written: m.tcpWriteBytes.get(l),
		onClose: func(failed bool) {
			g.Dec()
			class := "success"
			if failed {
				class = "failure"
			}
			m.tcpClose.get(l.with("classification", class)).Inc()
		},
	}
}

// soOriginalDst is netfilter's getsockopt for the address a REDIRECTed
// connection was sent to (linux/netfilter_ipv4.h).
const soOriginalDst = 80

// OriginalDst returns the destination a connection had before iptables
// redirected it to the proxy. A connection that was not redirected
// reports its own local address.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %T is not a TCP connection", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var sa syscall.RawSockaddrInet4
	var serr error
	err = rc.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(sa))
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.SOL_IP, soOriginalDst, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			serr = errno
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", serr)
	}
	port := uint16(sa.Port>>8 | sa.Port<<8) // network byte order
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}
