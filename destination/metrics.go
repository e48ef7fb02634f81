package destination

import (
	"net/http"
	"net/netip"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	streams  prometheus.Gauge
	requests *prometheus.CounterVec
	updates  *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, s *Server) *metrics {
	m := &metrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "destination_get_streams",
			Help: "Get streams open now.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "destination_get_requests_total",
			Help: "Get requests by the kind of destination asked: service, ip, unknown_name (not a Service name) or invalid.",
		}, []string{"kind"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "destination_updates_total",
			Help: "Updates sent on Get streams, by type: add, remove, no_endpoints.",
		}, []string{"type"}),
	}
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "destination_caches_synced",
		Help: "1 once the Service, EndpointSlice and Pod caches are filled.",
	}, func() float64 {
		if s.Ready() {
			return 1
		}
		return 0
	})
	reg.MustRegister(m.streams, m.requests, m.updates, ready,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, k := range []string{"service", "ip", "unknown_name", "invalid"} {
		m.requests.WithLabelValues(k)
	}
	for _, t := range []string{"add", "remove", "no_endpoints"} {
		m.updates.WithLabelValues(t)
	}
	return m
}

// AdminHandler serves /ready (200 once the caches are filled), /live and
// /metrics.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "caches not filled yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/live", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	return mux
}

func slicesSort(a []netip.AddrPort) { slices.SortFunc(a, netip.AddrPort.Compare) }
