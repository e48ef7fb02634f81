package proxy

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

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
//
// Each series counts its holders (open connections, requests in flight):
// sweep drops a series nobody holds that was last released before the
// retention period, as linkerd2-proxy drops series idle for
// metrics_retain_idle. A series used again after that starts from zero,
// which Prometheus's rate() reads as a counter reset.
type family[M prometheus.Collector] struct {
	mk func(prometheus.Labels) M
	mu sync.RWMutex
	m  map[string]*series[M]
}

// series is one label set's metric and its holders.
type series[M any] struct {
	m    M
	refs atomic.Int32
	last atomic.Int64 // unix nanoseconds of the last release
}

// release ends one holder's use. The time is stored first, so a sweep
// that sees no holders also sees when the last one let go.
func (s *series[M]) release() {
	s.last.Store(time.Now().UnixNano())
	s.refs.Add(-1)
}

func newFamily[M prometheus.Collector](mk func(prometheus.Labels) M) *family[M] {
	return &family[M]{mk: mk, m: map[string]*series[M]{}}
}

// hold finds or makes the series of l and counts one more holder, who
// must release it.
func (f *family[M]) hold(l labels) *series[M] {
	l = l.valid()
	k := l.key()
	f.mu.RLock()
	s, ok := f.m[k]
	if ok {
		s.refs.Add(1)
	}
	f.mu.RUnlock()
	if ok {
		return s
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok = f.m[k]; !ok {
		s = &series[M]{m: f.mk(prometheus.Labels(maps.Clone(l)))}
		f.m[k] = s
	}
	s.refs.Add(1)
	return s
}

// use runs fn on the series of l, held only meanwhile.
func (f *family[M]) use(l labels, fn func(M)) {
	s := f.hold(l)
	fn(s.m)
	s.release()
}

// sweep drops the series nobody holds that were last released before
// cutoff, and says how many are left.
func (f *family[M]) sweep(cutoff int64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, s := range f.m {
		if s.refs.Load() <= 0 && s.last.Load() < cutoff {
			delete(f.m, k)
		}
	}
	return len(f.m)
}

func (f *family[M]) Describe(chan<- *prometheus.Desc) {}

func (f *family[M]) Collect(ch chan<- prometheus.Metric) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, s := range f.m {
		s.m.Collect(ch)
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
	tcpDuration    *family[prometheus.Histogram]
	tlsReload      *prometheus.CounterVec
	tlsLastReload  prometheus.Gauge
	errors         *prometheus.CounterVec
	tapDropped     prometheus.Counter
	tapSubscribers prometheus.Gauge

	retainIdle                    time.Duration
	inAuthorities, outAuthorities *authorities
}

func newMetrics(retainIdle time.Duration, maxAuthorities int) *metrics {
	m := &metrics{
		retainIdle:     retainIdle,
		inAuthorities:  &authorities{max: maxAuthorities, last: map[string]int64{}},
		outAuthorities: &authorities{max: maxAuthorities, last: map[string]int64{}},
		reg:            prometheus.NewRegistry(),
		requests:       counterFamily("request_total", "Total count of HTTP requests."),
		responses:      counterFamily("response_total", "Total count of HTTP responses."),
		latency: newFamily(func(l prometheus.Labels) prometheus.Histogram {
			return prometheus.NewHistogram(prometheus.HistogramOpts{Name: "response_latency_ms", Help: "Elapsed times between a request's headers being received and its response's headers being sent, in milliseconds.", Buckets: latencyBuckets, ConstLabels: l})
		}),
		tcpOpen:  counterFamily("tcp_open_total", "Total count of opened connections."),
		tcpClose: counterFamily("tcp_close_total", "Total count of closed connections."),
		tcpOpenConns: newFamily(func(l prometheus.Labels) prometheus.Gauge {
			return prometheus.NewGauge(prometheus.GaugeOpts{Name: "tcp_open_connections", Help: "Number of currently-open connections.", ConstLabels: l})
		}),
		tcpReadBytes:  counterFamily("tcp_read_bytes_total", "Total count of bytes read from peers."),
		tcpWriteBytes: counterFamily("tcp_write_bytes_total", "Total count of bytes written to peers."),
		tcpDuration: newFamily(func(l prometheus.Labels) prometheus.Histogram {
			return prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tcp_connection_duration_ms", Help: "Connection lifetimes, in milliseconds.", Buckets: latencyBuckets, ConstLabels: l})
		}),
		tlsReload:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tls_config_reload_total", Help: "Total number of TLS configuration reloads, by outcome."}, []string{"status"}),
		tlsLastReload:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "tls_config_last_reload_seconds", Help: "Unix time of the last successful TLS configuration reload."}),
		errors:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "proxy_connection_errors_total", Help: "Connections or requests the proxy refused or failed, by direction and cause."}, []string{"direction", "reason"}),
		tapDropped:     prometheus.NewCounter(prometheus.CounterOpts{Name: "tap_events_dropped_total", Help: "Tap events dropped because a tap stream's buffer was full or its rate limit reached."}),
		tapSubscribers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tap_streams", Help: "Open tap streams."}),
	}
	m.reg.MustRegister(m.requests, m.responses, m.latency, m.tcpOpen, m.tcpClose, m.tcpOpenConns, m.tcpReadBytes, m.tcpWriteBytes, m.tcpDuration,
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

// Placeholders for label values taken from the wire. Neither can be a
// real authority or status: '<' is not allowed in a URI's host.
const (
	// invalidLabel replaces a value that is not printable UTF-8 of a
	// bounded length, or a grpc-status that is not a number.
	invalidLabel = "<invalid>"
	// overflowLabel is the one authority shared by all authorities
	// beyond MaxAuthorities in a direction.
	overflowLabel = "<overflow>"
)

// maxLabelLen bounds a label value from the wire: a DNS name (253) and a
// port, with room to spare.
const maxLabelLen = 512

// validLabel reports whether v can be a label value as it is: valid
// UTF-8, bounded, without control characters. client_golang refuses
// invalid UTF-8 at gather time, which would fail the whole scrape.
func validLabel(v string) bool {
	if len(v) > maxLabelLen || !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// labelValue is v, or the placeholder when v cannot be a label value.
func labelValue(v string) string {
	if validLabel(v) {
		return v
	}
	return invalidLabel
}

// grpcStatusLabel is a grpc-status header as a label: a decimal code
// (gRPC's are 0-16; others are kept if numeric and short), "" when
// absent, else the placeholder.
func grpcStatusLabel(v string) string {
	if v == "" {
		return ""
	}
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n > 999 {
		return invalidLabel
	}
	return strconv.FormatUint(n, 10)
}

// valid is l with every value that cannot be a label value replaced:
// values come from the wire (authority, grpc-status) and from discovery.
// It returns l itself when all are valid, as they almost always are.
func (l labels) valid() labels {
	for _, v := range l {
		if !validLabel(v) {
			out := make(labels, len(l))
			for k, v := range l {
				out[k] = labelValue(v)
			}
			return out
		}
	}
	return l
}

// authorities bounds the authority label values of one direction: the
// first MaxAuthorities distinct ones keep their own series, later ones
// share overflowLabel until sweep forgets authorities unused for the
// retention period.
type authorities struct {
	max  int
	mu   sync.Mutex
	last map[string]int64
}

// label is the authority label for a request's Host or :authority.
func (a *authorities) label(host string, now int64) string {
	if !validLabel(host) {
		return invalidLabel
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.last[host]; !ok && len(a.last) >= a.max {
		return overflowLabel
	}
	a.last[host] = now
	return host
}

func (a *authorities) sweep(cutoff int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for h, t := range a.last {
		if t < cutoff {
			delete(a.last, h)
		}
	}
}

// authority is the bounded authority label of a request in direction.
func (m *metrics) authority(direction, host string) string {
	a := m.inAuthorities
	if direction == outbound {
		a = m.outAuthorities
	}
	return a.label(host, time.Now().UnixNano())
}

// sweep drops the series and authorities idle since before now minus the
// retention period. Run calls it periodically; tests call it with a
// clock of their own.
func (m *metrics) sweep(now time.Time) {
	cutoff := now.Add(-m.retainIdle).UnixNano()
	m.inAuthorities.sweep(cutoff)
	m.outAuthorities.sweep(cutoff)
	m.requests.sweep(cutoff)
	m.responses.sweep(cutoff)
	m.latency.sweep(cutoff)
	m.tcpOpen.sweep(cutoff)
	m.tcpClose.sweep(cutoff)
	m.tcpOpenConns.sweep(cutoff)
	m.tcpReadBytes.sweep(cutoff)
	m.tcpWriteBytes.sweep(cutoff)
	m.tcpDuration.sweep(cutoff)
}

// sweepEvery sweeps until ctx ends, often enough that a series outlives
// the retention period by at most a quarter of it.
func (m *metrics) sweepEvery(ctx context.Context) {
	t := time.NewTicker(max(m.retainIdle/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.sweep(now)
		}
	}
}
