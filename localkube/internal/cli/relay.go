package cli

import (
	"io"
	"log"
	"net"
	"strconv"
	"sync"
)

// relay listens on ip:port inside the network namespace that enter runs
// in (the node's, where the pods' gateway is) and copies each connection
// to 127.0.0.1:port in localkube's own namespace. A socket stays in the
// namespace it was created in, so only the listen needs the namespace.
// It returns the URL pods use for the API server and a stop function that
// closes the listener and every open connection.
func relay(enter func(func() error) error, ip net.IP, port int, logger *log.Logger) (string, func(), error) {
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
	var ln net.Listener
	if err := enter(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return "", nil, err
	}
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			open[c] = struct{}{}
		} else {
			delete(open, c)
		}
	}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				out, err := net.Dial("tcp", target)
				if err != nil {
					logger.Printf("api relay %s: %v", addr, err)
					_ = in.Close()
					return
				}
				track(in, true)
				track(out, true)
				done := make(chan struct{}, 2)
				pipe := func(dst, src net.Conn) {
					_, _ = io.Copy(dst, src)
					if tc, ok := dst.(*net.TCPConn); ok {
						_ = tc.CloseWrite()
					}
					done <- struct{}{}
				}
				go pipe(out, in)
				go pipe(in, out)
				<-done
				<-done
				_ = in.Close()
				_ = out.Close()
				track(in, false)
				track(out, false)
			}()
		}
	}()
	stop := func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
	}
	return "https://" + addr, stop, nil
}
