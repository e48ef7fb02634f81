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
	wg sync.WaitGroup
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
	s.wg.Add(1)
	s.mu.Unlock()
	return lc
}

func (c *liveConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.set.mu.Lock()
		delete(c.set.m, c)
		c.set.mu.Unlock()
		c.set.wg.Done()
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
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
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
