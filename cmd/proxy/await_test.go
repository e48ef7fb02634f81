package main

import (
	"bytes"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestAwait: the postStart hook returns once the proxy's /ready answers
// 200; it fails, naming the address, when no proxy listens; and it lets
// the application start, saying why, when the proxy listens but stays
// unready (no certificate yet).
func TestAwait(t *testing.T) {
	var ready atomic.Bool
	calls := atomic.Int64{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) >= 3 && ready.Load() {
			_, _ = w.Write([]byte("ready\n"))
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("no usable TLS certificate loaded yet\n"))
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	// The admin address as inject writes it: all interfaces.
	_, port, _ := net.SplitHostPort(l.Addr().String())
	env := func(string) string { return "0.0.0.0:" + port }

	ready.Store(true)
	var stderr bytes.Buffer
	if code := await([]string{"--timeout=30s"}, env, &stderr); code != 0 || calls.Load() < 3 {
		t.Errorf("await on a proxy that becomes ready: exit %d after %d polls: %s", code, calls.Load(), stderr.String())
	}
	ready.Store(false)
	stderr.Reset()
	if code := await([]string{"--timeout=1s"}, env, &stderr); code != 0 || !strings.Contains(stderr.String(), "not ready") || !strings.Contains(stderr.String(), "certificate") {
		t.Errorf("await on a proxy that stays unready: exit %d, %q", code, stderr.String())
	}
	closed := func(string) string {
		c, _ := net.Listen("tcp", "127.0.0.1:0")
		a := c.Addr().String()
		_ = c.Close()
		return a
	}
	stderr.Reset()
	if code := await([]string{"--timeout=1s"}, closed, &stderr); code != 1 || !strings.Contains(stderr.String(), "not listening") {
		t.Errorf("await with no proxy: exit %d, %q", code, stderr.String())
	}
	if code := await([]string{"--timeout=forever"}, env, &stderr); code != 2 {
		t.Errorf("bad flag: exit %d", code)
	}
}
