package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestShutdownDrainsInFlight: after SIGTERM (Run's context ending) the
// proxy keeps accepting for DrainDelay while /ready says it is draining,
// then lets an in-flight request and an open opaque connection finish
// well past the old 1s cut, and returns once they have.
func TestShutdownDrainsInFlight(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan struct{}, 1)
	slow := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "finished "+r.URL.Path)
	})}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = slow.Serve(sl) }()
	t.Cleanup(func() { _ = slow.Close() })
	echoAddr, echoPort := greeter(t)

	const grace = time.Minute
	b := startProxy(t, proxyOpts{tune: func(c *Config) {
		c.DrainDelay, c.ShutdownGrace = 3*time.Second, grace
		c.OpaquePorts = PortSet{echoPort: true}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Run it under our own context: startProxy's stops at cleanup.
	p := New(b.cfg)
	p.cfg.OrigDst = b.cfg.OrigDst
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(ctx) }()
	in := p.Addr("inbound").String()
	b.setOrigDst(sl.Addr().String())

	inflight := make(chan string, 1)
	go func() {
		resp, err := (&http.Client{Timeout: grace}).Get("http://" + in + "/inflight")
		if err != nil {
			inflight <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		inflight <- string(body)
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatalf("the request never reached the app: %s", <-inflight)
	}
	// An opaque connection to the greeter, open across the shutdown.
	b.setOrigDst(echoAddr)
	opaque, err := net.Dial("tcp", in)
	if err != nil {
		t.Fatal(err)
	}
	defer opaque.Close()
	r := bufio.NewReader(opaque)
	if greeting, err := r.ReadString('\n'); err != nil {
		t.Fatalf("greeting: %q %v", greeting, err)
	}

	cancel() // SIGTERM
	admin := p.Addr("admin").String()
	eventually(t, 10*time.Second, "/ready says draining", func() bool {
		resp, err := http.Get("http://" + admin + "/ready")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == 503 && strings.Contains(string(body), "draining")
	})
	// Still accepting while peers drop the endpoint.
	b.setOrigDst(echoAddr)
	late, err := net.DialTimeout("tcp", in, 2*time.Second)
	if err != nil {
		t.Fatalf("a connection during the drain delay was refused: %v", err)
	}
	_ = late.Close()

	time.Sleep(2 * time.Second) // past the old 1s cut and the drain delay
	select {
	case err := <-runDone:
		t.Fatalf("Run returned with work in flight: %v", err)
	default:
	}
	_, _ = opaque.Write([]byte("still there\r\n"))
	_ = opaque.SetReadDeadline(time.Now().Add(10 * time.Second))
	if echo, err := r.ReadString('\n'); err != nil || echo != "echo still there\r\n" {
		t.Fatalf("opaque connection during shutdown: %q %v", echo, err)
	}
	close(release)
	if got := <-inflight; got != "finished /inflight" {
		t.Fatalf("in-flight request: %q", got)
	}
	_ = opaque.Close()
	select {
	case err := <-runDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(grace / 2):
		t.Fatal("Run did not return once the work in flight finished")
	}
}
