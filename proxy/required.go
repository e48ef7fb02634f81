package proxy

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshtls/contract"
)

// Required mode (linkerd.io/tls: required): inbound application traffic
// is accepted only over mTLS from a mesh identity. Plain text, and TLS
// not addressed to this pod's identity (which the proxy would otherwise
// pass through to the application), is refused: HTTP with 403, gRPC with
// PERMISSION_DENIED, anything else by closing the connection. Headers
// never stand in for TLS: the decision is taken on the connection, before
// any request on it is read.
//
// Exempt: the kubelet's HTTP probes (GET or HEAD of a listed port and
// path), ports the user lists (config.linkerd.io/tls-exempt-ports), and
// the proxy's own admin and tap ports, which proxy-init never redirects.
// An mTLS connection is never refused, so a pod that moves between
// optional and required never drops one; the mode is read once at start,
// and a switch is a rollout: old pods drain their connections as on any
// shutdown.

// Probes are the kubelet's HTTP probes a required proxy lets through:
// port to paths.
type Probes map[uint16]map[string]bool

// ParseProbes reads contract.EnvInboundProbes: PORT:PATH, space-separated.
func ParseProbes(s string) (Probes, error) {
	out := Probes{}
	for _, f := range strings.Fields(s) {
		port, path, ok := strings.Cut(f, ":")
		n, err := strconv.ParseUint(port, 10, 16)
		if !ok || err != nil || n == 0 || !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("%q is not PORT:PATH such as 8080:/healthz", f)
		}
		if out[uint16(n)] == nil {
			out[uint16(n)] = map[string]bool{}
		}
		out[uint16(n)][path] = true
	}
	return out, nil
}

// inboundRefusal is why a connection must be refused, or "".
func (p *Proxy) inboundRefusal(meta *connMeta) string {
	if !p.cfg.RequireTLS || meta.tls.status == "true" || p.cfg.TLSExemptPorts[meta.dst.Port()] {
		return ""
	}
	return contract.RefusedNoTLS
}

// isProbe says whether r is one of the kubelet's probes of this pod.
func (p *Proxy) isProbe(r *http.Request, meta *connMeta) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	return p.cfg.Probes[meta.dst.Port()][r.URL.Path]
}

// inboundRefusals counts inbound_tls_refused_total and rate-limits the
// log line that names the client: the address is in the log and in tap,
// never a label.
type inboundRefusals struct {
	total  *prometheus.CounterVec
	mu     sync.Mutex
	last   time.Time
	quiet  int
	period time.Duration
}

func newInboundRefusals(reg prometheus.Registerer) *inboundRefusals {
	r := &inboundRefusals{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inbound_tls_refused_total",
			Help: "Inbound requests and connections a pod with linkerd.io/tls: required refused for arriving without mTLS from a mesh identity, by reason, protocol (http, grpc, tcp) and authority.",
		}, []string{"direction", "reason", "protocol", "authority"}),
		period: 10 * time.Second,
	}
	reg.MustRegister(r.total)
	return r
}

func (r *inboundRefusals) record(reason, protocol, authority string, now time.Time) (log bool, suppressed int) {
	r.total.WithLabelValues(inbound, reason, protocol, authority).Inc()
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.last) < r.period {
		r.quiet++
		return false, 0
	}
	r.last, suppressed, r.quiet = now, r.quiet, 0
	return true, suppressed
}

func (p *Proxy) countInboundRefusal(meta *connMeta, protocol, authority string) {
	if ok, suppressed := p.inRefusals.record(meta.refuse, protocol, authority, time.Now()); ok {
		p.log.Warn("inbound traffic refused: this pod requires mutual TLS", "reason", meta.refuse, "protocol", protocol, "src", meta.src.String(), "dst", meta.dst.String(), "suppressed_since_last", suppressed)
	}
}

// refuseInboundConn closes a refused connection that is not HTTP.
func (p *Proxy) refuseInboundConn(c net.Conn, meta *connMeta) {
	p.countInboundRefusal(meta, "tcp", "")
	_ = c.Close()
}

// refusedMessage is what a refused client is told.
func refusedMessage(reason string) string {
	return "meshtls proxy: this pod requires mutual TLS (linkerd.io/tls: required) and the request arrived without it (" + reason + "); send it from a meshed pod"
}

// refuseInbound answers a refused HTTP request: 403, or for gRPC a
// Trailers-Only PERMISSION_DENIED, both naming the reason; counted and
// tapped, but not in the served requests' metrics.
func (p *Proxy) refuseInbound(w http.ResponseWriter, r *http.Request, meta *connMeta) {
	start := time.Now()
	grpc := isGRPC(r)
	protocol := "http"
	if grpc {
		protocol = "grpc"
	}
	p.countInboundRefusal(meta, protocol, p.m.authority(inbound, r.Host))
	status := http.StatusForbidden
	grpcCode := ""
	h := w.Header()
	h.Set("l5d-proxy-error", meta.refuse)
	msg := refusedMessage(meta.refuse)
	if grpc {
		status, grpcCode = http.StatusOK, strconv.Itoa(grpcPermissionDenied)
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", grpcCode)
		h.Set("Grpc-Message", grpcMessage(msg))
		w.WriteHeader(status)
	} else {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = fmt.Fprintln(w, msg)
	}
	if tr := p.tap.requestInit(r, meta, route{}, meta.tls.labels(labels{"direction": inbound}), start); tr != nil {
		tr.responseInit(status, time.Since(start))
		tr.responseEnd(status, grpcCode, false, contract.TapRefusedPrefix+meta.refuse, time.Since(start), 0, 0, 0)
	}
}

// grpcPermissionDenied is gRPC's PERMISSION_DENIED.
const grpcPermissionDenied = 7
