package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
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

// CloseWrite passes a half-close on to the connection underneath.
func (c *replayConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes c, or says it cannot: splice then closes the
// connection instead, so the peer still sees the end.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}

var errNoHalfClose = errors.New("connection cannot half-close")

// countedConn is one side of a proxied connection in the tcp_* metrics.
type countedConn struct {
	net.Conn
	read, written *series[prometheus.Counter]
	closeOnce     sync.Once
	onClose       func(failure error)
	// failure is the first error that was the peer's or the network's
	// fault (a reset, a broken pipe, a timeout of our own), nil while the
	// connection ended as it should.
	failure atomic.Pointer[error]
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.m.Add(float64(n))
	}
	if err != nil && !isClosing(err) {
		c.failure.CompareAndSwap(nil, &err)
	}
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.written.m.Add(float64(n))
	}
	if err != nil && !isClosing(err) {
		c.failure.CompareAndSwap(nil, &err)
	}
	return n, err
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		var failure error
		if f := c.failure.Load(); f != nil {
			failure = *f
		}
		c.onClose(failure)
	})
	return err
}

// CloseWrite half-closes when the underlying connection can, so opaque
// forwarding passes a peer's EOF on; otherwise it says it cannot.
func (c *countedConn) CloseWrite() error { return closeWrite(c.Conn) }

// isClosing tells an ordinary end of a connection from a failure. A
// deadline is the reader's own choice, not the peer's failure: net/http
// sets one in the past after every request to stop its background read,
// and counting that made every kept-alive connection a failure (and
// formatted an error string per request). A reset or a broken pipe is a
// failure, as linkerd2-proxy counts it.
func isClosing(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) ||
		err.Error() == "EOF"
}

// errnoLabel is the errno of a failed connection as linkerd2-proxy labels
// it (ECONNRESET), or "" when the failure has none.
func errnoLabel(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
		return strconv.Itoa(int(errno))
	}
	return ""
}

// track counts c as one connection with the transport labels l (direction,
// peer, tls and its reason or peer identity, dst_* outbound). The
// connection holds its series until it closes.
func (m *metrics) track(c net.Conn, l labels) *countedConn {
	m.tcpOpen.use(l, func(c prometheus.Counter) { c.Inc() })
	g := m.tcpOpenConns.hold(l)
	g.m.Inc()
	read, written := m.tcpReadBytes.hold(l), m.tcpWriteBytes.hold(l)
	opened := time.Now()
	return &countedConn{
		Conn:    c,
		read:    read,
		written: written,
		onClose: func(failure error) {
			g.m.Dec()
			g.release()
			read.release()
			written.release()
			cl := l.with("classification", "success")
			if failure != nil {
				cl = l.with("classification", "failure", "errno", errnoLabel(failure))
			}
			m.tcpClose.use(cl, func(c prometheus.Counter) { c.Inc() })
			m.tcpDuration.use(cl, func(h prometheus.Histogram) {
				h.Observe(float64(time.Since(opened).Microseconds()) / 1000)
			})
		},
	}
}

// soOriginalDst is netfilter's getsockopt for the address a REDIRECTed
// connection was sent to: SO_ORIGINAL_DST at SOL_IP
// (linux/netfilter_ipv4.h) and IP6T_SO_ORIGINAL_DST at SOL_IPV6
// (linux/netfilter_ipv6/ip6_tables.h), the same number.
const soOriginalDst = 80

// OriginalDst returns the destination a connection had before iptables
// redirected it to the proxy, IPv4 or IPv6 as the connection is (an IPv4
// connection on a dual-stack socket is asked at SOL_IP). A connection
// that was not redirected reports its own local address.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %T is not a TCP connection", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	v6 := !addrPort(tc.LocalAddr()).Addr().Is4()
	var sa4 syscall.RawSockaddrInet4
	var sa6 syscall.RawSockaddrInet6
	level, ptr, size := syscall.SOL_IP, unsafe.Pointer(&sa4), uint32(unsafe.Sizeof(sa4))
	if v6 {
		level, ptr, size = syscall.SOL_IPV6, unsafe.Pointer(&sa6), uint32(unsafe.Sizeof(sa6))
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst, uintptr(ptr), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			serr = errno
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if serr != nil {
		family := "IPv4"
		if v6 {
			family = "IPv6"
		}
		return netip.AddrPort{}, fmt.Errorf("original destination (%s): %w", family, serr)
	}
	// The port is in network byte order whatever the host's.
	if v6 {
		pb := (*[2]byte)(unsafe.Pointer(&sa6.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa6.Addr).Unmap(), binary.BigEndian.Uint16(pb[:])), nil
	}
	pb := (*[2]byte)(unsafe.Pointer(&sa4.Port))
	return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), binary.BigEndian.Uint16(pb[:])), nil
}

// splice copies both ways until both sides are done. Each side's EOF is
// passed on as a half-close, so either peer may finish first and the
// other still reads to the end. A connection with no bytes either way
// for idle is closed on both sides; a read error other than EOF closes
// both at once.
func splice(a, b net.Conn, idle time.Duration) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = a.Close()
			_ = b.Close()
		})
	}
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		bp := spliceBufs.Get().(*[]byte)
		defer spliceBufs.Put(bp)
		buf := *bp
		for {
			if idle > 0 {
				_ = src.SetReadDeadline(time.Now().Add(idle))
			}
			n, err := src.Read(buf)
			if n > 0 {
				last.Store(time.Now().UnixNano())
				if _, werr := dst.Write(buf[:n]); werr != nil {
					closeBoth()
					return
				}
			}
			if err == nil {
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && idle > 0 {
				if time.Since(time.Unix(0, last.Load())) < idle {
					// The other direction is busy: still alive.
					continue
				}
				closeBoth()
				return
			}
			if errors.Is(err, io.EOF) {
				if closeWrite(dst) != nil {
					closeBoth()
				}
				return
			}
			closeBoth()
			return
		}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
	closeBoth()
}

var spliceBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
