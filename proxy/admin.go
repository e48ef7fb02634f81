package proxy

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Ready reports whether /ready would answer 200, and why not.
//
// A TLS-injected pod is ready only while it holds a usable certificate:
// the pod stays out of its Service's endpoints while the CA has not served
// it (or its certificate expired), so peers are never sent to a proxy that
// cannot serve the identity discovery advertises, and the pod never talks
// plain text to peers that have one. For ReadyWait the reason says it is
// waiting; after that it names what is wrong.
func (p *Proxy) Ready() (bool, string) {
	if !p.ready.Load() {
		return false, "listeners not bound"
	}
	if p.draining.Load() {
		return false, "shutting down: draining connections"
	}
	if p.id.configured() && p.id.current() == nil {
		if wait := p.cfg.ReadyWait - time.Since(p.started); wait > 0 {
			return false, fmt.Sprintf("waiting up to %s more for TLS credentials", wait.Round(time.Second))
		}
		return false, p.id.unusable()
	}
	return true, "ready"
}

func (p *Proxy) serveAdmin(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	// Label values are validated where they are made; should one still
	// fail, the scrape serves every other series rather than a 500.
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "live")
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := p.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = fmt.Fprintln(w, why)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(discardWriter{}, "", 0)}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		return err
	}
	return nil
}
