package ca

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are per controller, on a registry of its own, so two CAs in one
// test process (the leader-election test) never share counters.
type metrics struct {
	registry *prometheus.Registry

	issued   prometheus.Counter
	renewals prometheus.Counter
	errors   *prometheus.CounterVec
	latency  prometheus.Histogram
	leader   prometheus.Gauge
	ready    prometheus.Gauge
	refused  prometheus.Counter
	// rootExpiry and leafExpiry are expiry instants, cert-manager's
	// certmanager_certificate_expiration_timestamp_seconds model: an
	// alert is `gauge - time() < 7*86400`, with no rate to compute.
	rootExpiry prometheus.Gauge
	leafExpiry *prometheus.GaugeVec
}

func (m *metrics) forgetLeaf(k ownerKey) {
	m.leafExpiry.DeleteLabelValues(k.Namespace, k.Kind, k.Name)
}

func newMetrics(queueLen, canIssue func() float64) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "linkerd_ca_certificates_issued_total",
			Help: "Workload certificates issued, including renewals.",
		}),
		renewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "linkerd_ca_certificate_renewals_total",
			Help: "Certificates re-issued because two thirds of their lifetime had passed.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkerd_ca_errors_total",
			Help: "Failed reconciliations, by what was being reconciled.",
		}, []string{"kind"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "linkerd_ca_issuance_duration_seconds",
			Help:    "Time to issue one certificate and write its Secret.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "linkerd_ca_leader",
			Help: "1 while this replica holds the CA lease and issues certificates.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "linkerd_ca_ready",
			Help: "1 once the root is loaded and the caches have synced.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "linkerd_ca_issuance_refused_total",
			Help: "Certificates not issued because the root could not issue (lost, unusable, or within one certificate lifetime of expiry) or because the issued certificate failed its own check.",
		}),
		rootExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "linkerd_ca_root_expiration_timestamp_seconds",
			Help: "When the issuer's chain expires, as a Unix timestamp.",
		}),
		leafExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "linkerd_ca_certificate_expiration_timestamp_seconds",
			Help: "When each workload certificate expires, as a Unix timestamp, by namespace and owner.",
		}, []string{"namespace", "kind", "owner"}),
	}
	// Both series exist from the start, so a dashboard shows 0, not "no data".
	m.errors.WithLabelValues("secret")
	m.errors.WithLabelValues("bundle")
	m.registry.MustRegister(m.issued, m.renewals, m.errors, m.latency, m.leader, m.ready, m.refused, m.rootExpiry, m.leafExpiry,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "linkerd_ca_root_can_issue",
			Help: "1 while the root can issue full-lifetime certificates; 0 when it is lost, unusable or within one certificate lifetime of expiry.",
		}, canIssue),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "linkerd_ca_queue_depth",
			Help: "Owners and bundles waiting to be reconciled.",
		}, queueLen),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}
