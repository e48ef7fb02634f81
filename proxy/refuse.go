package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons for outbound_tls_refused_total: why the proxy refused to send a
// request or connection rather than send it in plain text. Plain text
// goes out only on a positive answer (DESIGN.md, "Fail open, never
// downgrade"); each of these is the absence of one.
const (
	// refuseDiscoveryUnavailable: the destination service answered with an
	// error, or did not answer in time, for a target it has not answered
	// before.
	refuseDiscoveryUnavailable = "discovery_unavailable"
	// refuseNoEndpoints: discovery knows the Service but lists no endpoint
	// for it yet; dialling its ClusterIP would reach a pod discovery has
	// not described.
	refuseNoEndpoints = "no_endpoints"
	// refuseNoCertificate: the endpoint has an identity and this pod is
	// configured for TLS but holds no usable certificate (missing,
	// expired, broken).
	refuseNoCertificate = "no_certificate"
)

// refusal is an outbound request or connection the proxy did not send.
type refusal struct {
	reason string
	dst    string
	err    error
}

func (r *refusal) Error() string {
	return fmt.Sprintf("%s (%s): %v; not sent in plain text", r.reason, r.dst, r.err)
}

func (r *refusal) Unwrap() error { return r.err }

// message is what the client is told: the cause and what would fix it,
// without the proxy's internal addresses.
func (r *refusal) message() string {
	switch r.reason {
	case refuseDiscoveryUnavailable:
		return "meshtls proxy: service discovery has no answer for " + r.dst + " (the destination service is unreachable or slow); the request was not sent in plain text"
	case refuseNoEndpoints:
		return "meshtls proxy: " + r.dst + " is a Service with no endpoints known to service discovery yet; the request was not sent"
	case refuseNoCertificate:
		return "meshtls proxy: this pod has no usable TLS certificate and " + r.dst + " requires mutual TLS; the request was not sent in plain text"
	}
	return "meshtls proxy: request to " + r.dst + " refused: " + r.reason
}

// refusals counts and logs refusals. The log is rate limited per reason:
// a dead destination service under load must not flood the log.
type refusals struct {
	total *prometheus.CounterVec

	mu     sync.Mutex
	last   map[string]time.Time
	quiet  map[string]int
	period time.Duration
}

func newRefusals(reg prometheus.Registerer) *refusals {
	r := &refusals{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbound_tls_refused_total",
			Help: "Outbound requests and connections refused rather than sent in plain text, by reason.",
		}, []string{"reason"}),
		last:   map[string]time.Time{},
		quiet:  map[string]int{},
		period: 10 * time.Second,
	}
	reg.MustRegister(r.total)
	for _, reason := range []string{refuseDiscoveryUnavailable, refuseNoEndpoints, refuseNoCertificate} {
		r.total.WithLabelValues(reason)
	}
	return r
}

// record counts one refusal and says whether to log it now, and how many
// of its kind were not logged since the last line.
func (r *refusals) record(reason string, now time.Time) (log bool, suppressed int) {
	r.total.WithLabelValues(reason).Inc()
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.last[reason]) < r.period {
		r.quiet[reason]++
		return false, 0
	}
	r.last[reason] = now
	suppressed = r.quiet[reason]
	r.quiet[reason] = 0
	return true, suppressed
}

// refused counts and (rate limited) logs a refusal.
func (p *Proxy) refused(ref *refusal) {
	if ok, suppressed := p.refusals.record(ref.reason, time.Now()); ok {
		p.log.Warn("outbound traffic refused rather than sent in plain text", "reason", ref.reason, "dst", ref.dst, "error", ref.err.Error(), "suppressed_since_last", suppressed)
	}
}

// refuseRequest answers an HTTP request the proxy would not send: 503
// with a body naming the cause, or for gRPC a Trailers-Only UNAVAILABLE,
// so clients retry it as they would any unavailable backend.
func (p *Proxy) refuseRequest(w http.ResponseWriter, r *http.Request, err error) {
	var ref *refusal
	if !errors.As(err, &ref) {
		ref = &refusal{reason: "unknown", dst: r.Host, err: err}
	}
	p.refused(ref)
	msg := ref.message()
	h := w.Header()
	h.Set("l5d-proxy-error", ref.reason)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", "14") // UNAVAILABLE
		h.Set("Grpc-Message", grpcMessage(msg))
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = fmt.Fprintln(w, msg)
}
