package proxy

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tappb "meshtls/proto/tap"
)

// TestTapLimitUnderConcurrency: a stream with limit N taps exactly N of
// many concurrent requests, never more.
func TestTapLimitUnderConcurrency(t *testing.T) {
	const limit, requests = 5, 200
	h := newTapHub(newMetrics(time.Minute, 10), requests*3, nil)
	h.add(&tappb.ObserveRequest{Limit: limit})
	var tapped atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range requests {
		wg.Go(func() {
			<-start
			r := httptest.NewRequest("GET", "http://b/x", nil)
			if h.requestInit(r, &connMeta{direction: inbound}, route{}, labels{}, time.Now()) != nil {
				tapped.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := tapped.Load(); got != limit {
		t.Errorf("%d requests tapped by a stream with limit %d", got, limit)
	}
}

// TestLogLimited: a failure repeated under load logs its first few
// occurrences, not one line each.
func TestLogLimited(t *testing.T) {
	var b strings.Builder
	var mu sync.Mutex
	p := &Proxy{log: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return b.Write(p)
	}), nil))}
	for range 1000 {
		p.logLimited(slog.LevelWarn, "handshake failed", "peer", "x")
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(b.String(), "handshake failed"); n < 1 || n > 10 {
		t.Errorf("1000 failures logged %d lines", n)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
