package proxy

import (
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// latencyBuckets are linkerd2-proxy's response_latency_ms bounds.
var latencyBuckets = []float64{1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000}

// labels is one series' label set. linkerd2-proxy omits labels that do
// not apply (no no_tls_reason on TLS traffic, dst_* only outbound, the
// owner label named after its kind), so series of one metric carry
// different label names; a Vec cannot, so family keeps one client_golang
// metric per label set.
type labels map[string]string

func (l labels) with(kv ...string) labels {
	out := make(labels, len(l)+len(kv)/2)
	maps.Copy(out, l)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

func (l labels) key() string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(l)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(l[k])
		b.WriteByte(0)
	}
	return b.String()
}

// family is one metric name with a metric per label set. It is an
// unchecked collector: it describes nothing, so the registry accepts the
// varying label names.
type family[M prometheus.Collector] struct {
	mk func(prometheus.Labels) M
	mu sync.RWMutex
	m  map[string]M
}

func newFamily[M prometheus.Collector](mk func(prometheus.Labels) M) *family[M] {
	return &family[M]{mk: mk, m: map[string]M{}}
}

func (f *family[M]) get(l labels) M {
	k := l.key()
	f.mu.RLock()
	m, ok := f.m[k]
	f.mu.RUnlock()
	if ok {
		return m
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if m, ok = f.m[k]; !ok {
		m = f.mk(prometheus.Labels(maps.Clone(l)))
		f.m[k] = m
	}
	return m
}

func (f *family[M]) Describe(chan<- *prometheus.Desc) {}

func (f *family[M]) Collect(ch chan<- prometheus.Metric) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, m := range f.m {
		m.Collect(ch)
	}
}

func counterFamily(name, help string) *family[prometheus.Counter] {
	return newFamily(func(l prometheus.Labels) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: l})
	})
}

// metrics are the proxy's Prometheus series, named as linkerd2-proxy's.
type metrics struct {
	reg *prometheus.Registry

	requests  *family[prometheus.Counter]
	responses *family[prometheus.Counter]
	latency   *family[prometheus.Histogram]

	tcpOpen        *family[prometheus.Counter]
	tcpClose       *family[prometheus.Counter]
	tcpOpenConns   *family[prometheus.Gauge]
	tcpReadBytes   *family[prometheus.Counter]
	tcpWriteBytes  *family[prometheus.Counter]
	tlsReload      *prometheus.CounterVec
	tlsLastReload  prometheus.Gauge
	errors         *prometheus.CounterVec
	tapDropped     prometheus.Counter
	tapSubscribers prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg:       prometheus.NewRegistry(),
		requests:  counterFamily("request_total", "Total count of HTTP requests."),
		responses: counterFamily("response_total", "Total count of HTTP responses."),
		latency: newFamily(func(l prometheus.Labels) prometheus.Histogram {
			return prometheus.NewHistogram(prometheus.HistogramOpts{Name: "response_latency_ms", Help: "Elapsed times between a request's headers being received and its response's headers being sent, in milliseconds.", Buckets: latencyBuckets, ConstLabels: l})
		}),
		tcpOpen:  counterFamily("tcp_open_total", "Total count of opened connections."),
		tcpClose: counterFamily("tcp_close_total", "Total count of closed connections."),
		tcpOpenConns: newFamily(func(l prometheus.Labels) prometheus.Gauge {
			return prometheus.NewGauge(prometheus.GaugeOpts{Name: "tcp_open_connections", Help: "Number of currently-open connections.", ConstLabels: l})
		}),
		tcpReadBytes:   counterFamily("tcp_read_bytes_total", "Total count of bytes read from peers."),
		tcpWriteBytes:  counterFamily("tcp_write_bytes_total", "Total count of bytes written to peers."),
		tlsReload:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tls_config_reload_total", Help: "Total number of TLS configuration reloads, by outcome."}, []string{"status"}),
		tlsLastReload:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "tls_config_last_reload_seconds", Help: "Unix time of the last successful TLS configuration reload."}),
		errors:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "proxy_connection_errors_total", Help: "Connections or requests the proxy refused or failed, by direction and cause."}, []string{"direction", "reason"}),
		tapDropped:     prometheus.NewCounter(prometheus.CounterOpts{Name: "tap_events_dropped_total", Help: "Tap events dropped because a tap stream's buffer was full or its rate limit reached."}),
		tapSubscribers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tap_streams", Help: "Open tap streams."}),
	}
	m.reg.MustRegister(m.requests, m.responses, m.latency, m.tcpOpen, m.tcpClose, m.tcpOpenConns, m.tcpReadBytes, m.tcpWriteBytes,
		m.tlsReload, m.tlsLastReload, m.errors, m.tapDropped, m.tapSubscribers,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Make both statuses visible from the start, so a rate() has a base.
	m.tlsReload.WithLabelValues("success")
	m.tlsReload.WithLabelValues("failure")
	return m
}

// Reasons for proxy_connection_errors_total.
const (
	errDetect      = "detect_timeout"
	errDetectIO    = "detect_io"
	errTLSInbound  = "tls_handshake_inbound"
	errTLSOutbound = "tls_handshake_outbound"
	errHTTPBad     = "http_bad_request"
	errConnect     = "connect"
	errResolve     = "resolve"
	errLoop        = "loop"
)
