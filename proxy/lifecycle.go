package proxy

import (
	"context"
	"net"
	"sync"
)

// connSet tracks every connection the proxy accepted until it closes, so
// shutdown can wait for opaque and upgraded connections too (the HTTP
// server's own Shutdown forgets hijacked ones), then close what is left
// once the grace period ends.
type connSet struct {
	mu sync.Mutex
	m  map[*liveConn]struct{}
	// empty is closed when m becomes empty while someone waits. Not a
	// WaitGroup: a connection accepted while shutdown waits would be an
	// Add racing the Wait.
	empty chan struct{}
}

type liveConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (s *connSet) add(c net.Conn) *liveConn {
	lc := &liveConn{Conn: c, set: s}
	s.mu.Lock()
	if s.m == nil {
		s.m = map[*liveConn]struct{}{}
	}
	s.m[lc] = struct{}{}
	s.mu.Unlock()
	return lc
}

func (c *liveConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		s := c.set
		s.mu.Lock()
		delete(s.m, c)
		if len(s.m) == 0 && s.empty != nil {
			close(s.empty)
			s.empty = nil
		}
		s.mu.Unlock()
	})
	return err
}

// CloseWrite passes a half-close on to the socket.
func (c *liveConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// socketOf is the accepted socket itself, for SO_ORIGINAL_DST.
func socketOf(c net.Conn) net.Conn {
	if lc, ok := c.(*liveConn); ok {
		return lc.Conn
	}
	return c
}

// wait returns true once every tracked connection closed, false if ctx
// ended first.
func (s *connSet) wait(ctx context.Context) bool {
	for {
		s.mu.Lock()
		if len(s.m) == 0 {
			s.mu.Unlock()
			return true
		}
		if s.empty == nil {
			s.empty = make(chan struct{})
		}
		empty := s.empty
		s.mu.Unlock()
		select {
		case <-empty:
		case <-ctx.Done():
			return false
		}
	}
}

// closeAll closes every connection still open, and says how many.
func (s *connSet) closeAll() int {
	s.mu.Lock()
	open := make([]*liveConn, 0, len(s.m))
	for c := range s.m {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
	return len(open)
}
