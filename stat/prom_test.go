package stat

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// A Prometheus that accepts connections but never answers: the query
// gives up after its timeout and says which Prometheus it waited for.
func TestPrometheusQueryTimeoutNamesTheURL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Held open, never answered, until the test ends.
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	url := "http://" + ln.Addr().String()
	p, err := NewPrometheus(url)
	if err != nil {
		t.Fatal(err)
	}
	p.Timeout = 300 * time.Millisecond
	start := time.Now()
	_, err = Compute(context.Background(), Query{Resource: Resource{Kind: KindAuthority}, Window: time.Minute}, p, nil)
	if err == nil || !strings.Contains(err.Error(), "Prometheus at "+url+" did not answer within 300ms") {
		t.Fatalf("err %v, want a timeout naming %s", err, url)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("took %s", time.Since(start))
	}
}

// Only a kubelet without the port-forward endpoint counts as unsupported;
// other failures (RBAC, a missing pod, a silent Prometheus) do not.
func TestPortForwardUnsupported(t *testing.T) {
	cases := map[string]bool{
		"error upgrading connection: unable to upgrade connection: 404 page not found":     true,
		"error upgrading connection: unable to upgrade connection: 501 Not Implemented":    true,
		`error upgrading connection: pods "prometheus-x" is forbidden: User cannot create`: false,
		`pods "prometheus-x" not found`:                  false,
		"Prometheus does not answer: connection refused": false,
	}
	for msg, want := range cases {
		e := &PortForwardError{Pod: "linkerd/prometheus-x", Err: errors.New(msg)}
		if got := e.Unsupported(); got != want {
			t.Errorf("%q: Unsupported() = %v, want %v", msg, got, want)
		}
	}
}
