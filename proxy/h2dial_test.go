package proxy

import (
	"io"
	"net/http"
	"sync"
	"testing"
)

// TestConcurrentH2RequestsShareOneConnection: a burst of concurrent gRPC
// or h2 requests to a fresh peer opens one proxy-to-proxy HTTP/2
// connection, not one mTLS handshake per request of which all but one
// are closed again as soon as they are made; the same for the inbound
// side's connection to the application. Once that connection is lost,
// the next requests dial again rather than wait on it.
func TestConcurrentH2RequestsShareOneConnection(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	c := m.client(true)
	do := func(path string) error {
		resp, err := c.Get(m.url(path))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return &statusError{resp.Status}
		}
		return nil
	}
	const n = 8
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			if err := do("/burst"); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	counts := func(p *testProxy, direction string) (float64, float64) {
		l := map[string]string{"direction": direction, "peer": "dst"}
		return metric(t, p.addr("admin"), "tcp_open_total", l), metric(t, p.addr("admin"), "tcp_close_total", l)
	}
	if opened, closed := counts(m.a, outbound); opened != 1 || closed != 0 {
		t.Errorf("%d concurrent h2 requests opened %v proxy-to-proxy connections and closed %v, want 1 and 0", n, opened, closed)
	}
	if opened, closed := counts(m.b, inbound); opened != 1 || closed != 0 {
		t.Errorf("%d concurrent h2 requests opened %v connections to the app and closed %v, want 1 and 0", n, opened, closed)
	}

	// The peer closes every connection (a restart): the next requests
	// get a new one, not a wait on the limit of one. The first may race
	// the close and fail (a request written to a connection the peer is
	// closing gets 502, with or without the limit); the rest must not.
	m.b.live.closeAll()
	_ = do("/after-loss")
	for i := range 3 {
		if err := do("/after-loss"); err != nil {
			t.Fatalf("request %d after the connection was lost: %v", i+2, err)
		}
	}
	if opened, _ := counts(m.a, outbound); opened != 2 {
		t.Errorf("proxy-to-proxy connections opened: %v, want 2 (one before the loss, one after)", opened)
	}
}

type statusError struct{ status string }

func (e *statusError) Error() string { return "status " + e.status }
