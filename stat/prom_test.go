package stat

import (
	"context"
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
