package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// tunnel forwards an HTTP/1 CONNECT to an egress proxy as the client sent
// it (Proxy-Authorization included), and on a 2xx answer relays the
// tunnel's bytes both ways, as linkerd2-proxy treats a 2xx to CONNECT as
// an upgrade. net/http gives a CONNECT request no body, so ReverseProxy
// cannot carry the tunnel.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, direction string, dial func(context.Context) (net.Conn, error)) {
	rw, _ := w.(*respWriter)
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.ConnectTimeout)
	up, err := dial(ctx)
	cancel()
	if err != nil {
		p.errorHandler(direction)(w, r, err)
		return
	}
	defer func() { _ = up.Close() }()
	var head strings.Builder
	fmt.Fprintf(&head, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", r.RequestURI, r.Host)
	h := r.Header.Clone()
	for _, k := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		h.Del(k)
	}
	_ = h.Write(&head)
	head.WriteString("\r\n")
	_ = up.SetDeadline(time.Now().Add(p.cfg.ConnectTimeout))
	if _, err := io.WriteString(up, head.String()); err != nil {
		p.errorHandler(direction)(w, r, err)
		return
	}
	ubr := bufio.NewReader(up)
	resp, err := http.ReadResponse(ubr, r)
	_ = up.SetDeadline(time.Time{})
	if err != nil {
		p.errorHandler(direction)(w, r, err)
		return
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Refused (407, 403...): an ordinary response, relayed.
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return
	}
	if rw != nil {
		rw.record(resp.StatusCode)
	}
	c, cbr, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer func() { _ = c.Close() }()
	// The answer as the egress proxy gave it, then whatever either side
	// sent early and is already buffered.
	// The response head only: what follows is the tunnel, not a body.
	fmt.Fprintf(cbr, "HTTP/1.1 %s\r\n", resp.Status)
	_ = resp.Header.Write(cbr)
	_, _ = cbr.WriteString("\r\n")
	if cbr.Flush() != nil {
		return
	}
	if n := cbr.Reader.Buffered(); n > 0 {
		b, _ := cbr.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	if n := ubr.Buffered(); n > 0 {
		b, _ := ubr.Peek(n)
		if _, err := c.Write(b); err != nil {
			return
		}
	}
	splice(c, up, p.cfg.TCPIdleTimeout)
}

// logLimits keeps one limiter per proxy and message, so a failure that
// repeats under load (a misconfigured peer, a flood of bad requests)
// logs its first few occurrences and then one line per 10 s.
var logLimits sync.Map // logKey → *rate.Sometimes

type logKey struct {
	p   *Proxy
	msg string
}

// logLimited logs msg at level, rate-limited per message.
func (p *Proxy) logLimited(level slog.Level, msg string, kv ...any) {
	if !p.log.Enabled(context.Background(), level) {
		return
	}
	v, _ := logLimits.LoadOrStore(logKey{p, msg}, &rate.Sometimes{First: 5, Interval: 10 * time.Second})
	v.(*rate.Sometimes).Do(func() { p.log.Log(context.Background(), level, msg, kv...) })
}
