package stat

import (
	"fmt"
	"sort"
	"strings"
)

// Metric names, as linkerd2-proxy exports them.
const (
	metricResponses = "response_total"
	// metricRefused counts what a required pod's proxy refused for
	// arriving without mTLS (never in response_total).
	metricRefused    = "inbound_tls_refused_total"
	metricLatency    = "response_latency_ms_bucket"
	metricTCPOpen    = "tcp_open_connections" // a gauge
	metricTCPRead    = "tcp_read_bytes_total"
	metricTCPWritten = "tcp_write_bytes_total"
)

// matchOp is a PromQL label match operator.
type matchOp string

const (
	opEq  matchOp = "="
	opNeq matchOp = "!="
	opRe  matchOp = "=~" // value is a "|" list of literal alternatives
)

// matcher is one label matcher. It is evaluated locally exactly as
// Prometheus evaluates it remotely, so both paths select the same series.
type matcher struct {
	Name  string
	Op    matchOp
	Value string
}

func (m matcher) matches(v string) bool {
	switch m.Op {
	case opEq:
		return v == m.Value
	case opNeq:
		return v != m.Value
	default:
		for _, alt := range strings.Split(m.Value, "|") {
			if v == alt {
				return true
			}
		}
		return false
	}
}

// vectorQuery describes sum(increase(metric{matchers}[window])) by (by...).
// It is rendered to PromQL for Prometheus and evaluated in memory for
// scrapes and captures.
type vectorQuery struct {
	Metric   string
	Matchers []matcher
	By       []string
	// Gauge sums the latest values instead of increases.
	Gauge bool
}

func (q vectorQuery) selector() string {
	parts := make([]string, len(q.Matchers))
	for i, m := range q.Matchers {
		v := m.Value
		if m.Op == opRe {
			alts := strings.Split(v, "|")
			for j, a := range alts {
				alts[j] = regexpQuote(a)
			}
			v = strings.Join(alts, "|")
		}
		parts[i] = fmt.Sprintf("%s%s%q", m.Name, m.Op, v)
	}
	return q.Metric + "{" + strings.Join(parts, ", ") + "}"
}

// PromQL renders the sum of increases over window.
func (q vectorQuery) PromQL(window string) string {
	if q.Gauge {
		return fmt.Sprintf("sum(%s) by (%s)", q.selector(), strings.Join(q.By, ", "))
	}
	return fmt.Sprintf("sum(increase(%s[%s])) by (%s)", q.selector(), window, strings.Join(q.By, ", "))
}

// QuantilePromQL renders histogram_quantile over the bucket rates.
func (q vectorQuery) QuantilePromQL(quantile float64, window string) string {
	by := append([]string{"le"}, q.By...)
	return fmt.Sprintf("histogram_quantile(%g, sum(rate(%s[%s])) by (%s))", quantile, q.selector(), window, strings.Join(by, ", "))
}

func regexpQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// kindLabel is the Prometheus label that names a workload of this kind.
// Prometheus copies linkerd.io/proxy-<kind> pod labels to <kind>, as
// Linkerd's install config did.
func kindLabel(k Kind) string {
	switch k {
	case KindAuthority:
		return "authority"
	case KindJob:
		// Prometheus's own job label would clash; Linkerd's config and
		// ours rename a Job owner to k8s_job.
		return jobLabel
	}
	return string(k)
}

const jobLabel = "k8s_job"

// ownerLabels are the target labels that name a pod's workload, most
// specific owner first; a pod with none of them is its own owner.
var ownerLabels = []struct {
	label, short string
}{
	{"deployment", "deploy"},
	{"cronjob", "cronjob"},
	{"statefulset", "sts"},
	{"daemonset", "ds"},
	{jobLabel, "job"},
	{"replicationcontroller", "rc"},
	{"replicaset", "rs"},
	{"pod", "po"},
}

// plan is the set of queries one stat request needs, and how their groups
// map back to rows.
type plan struct {
	requests  vectorQuery // by row labels + classification, tls, no_tls_reason
	latency   vectorQuery // by row labels (le is added when evaluated)
	plaintext vectorQuery // outbound plain text, by source owner + destination + reason
	// receivers are the pods whose inbound metrics saw plain text (rows
	// from inbound metrics only): an outbound edge names a row's sender
	// only when its destination pod is one of them, so traffic to an
	// unmeshed pod of the same namespace or workload is not blamed on it.
	receivers vectorQuery
	// tcpOpen, tcpRead and tcpWrite are the TCP figures, from the same
	// side as the request figures; tcp is false for authorities, whose
	// connections the proxy does not label.
	tcpOpen, tcpRead, tcpWrite vectorQuery
	tcp                        bool
	// refused is what required pods refused, by row labels and reason;
	// read only for rows from inbound metrics without --from/--to.
	refused     vectorQuery
	wantRefused bool
	rowKind     Kind
	// rowLabels are the group-by labels naming a row: namespace label first,
	// then the name label (only the namespace for namespace rows).
	rowLabels []string
	// edgeRowSide says which end of a plain-text edge is the row: the
	// destination (default and --from) or the source (--to).
	edgeRowIsSource bool
	// inbound is true when row figures come from inbound metrics, so
	// plain text not seen on any client's outbound side came from outside
	// the mesh.
	inbound bool
}

func resourceMatchers(r Resource, prefix string) []matcher {
	var ms []matcher
	nsLabel := prefix + "namespace"
	if r.Kind == KindNamespace {
		if r.Name != "" {
			ms = append(ms, matcher{nsLabel, opEq, r.Name})
		}
		return ms
	}
	if r.Namespace != "" {
		ms = append(ms, matcher{nsLabel, opEq, r.Namespace})
	}
	if r.Name != "" {
		label := prefix + kindLabel(r.Kind)
		if r.Kind == KindAuthority {
			label = "authority"
		}
		ms = append(ms, matcher{label, opEq, r.Name})
	}
	return ms
}

func groupLabels(k Kind, prefix string) []string {
	if k == KindNamespace {
		return []string{prefix + "namespace"}
	}
	if k == KindAuthority {
		return []string{prefix + "namespace", "authority"}
	}
	return []string{prefix + "namespace", prefix + kindLabel(k)}
}

// buildPlan follows Linkerd's public API: without --from/--to a resource's
// figures are its inbound traffic; --to reads the resource's outbound
// traffic towards the target; --from reads the source's outbound traffic
// towards the resource. pods, when non-nil, limits the scraped side to
// those pods (the label selector).
func buildPlan(q Query, pods []string) (plan, error) {
	r := q.Resource
	var p plan
	p.rowKind = r.Kind
	var ms []matcher
	switch {
	case q.From != nil && q.To != nil:
		return p, fmt.Errorf("--from and --to cannot be used together")
	case q.To != nil:
		if r.Kind == KindAuthority || r.Kind == KindService {
			return p, fmt.Errorf("--to cannot be used with %ss: a %s has no outbound traffic of its own", r.Kind, r.Kind)
		}
		ms = append(ms, matcher{"direction", opEq, "outbound"})
		ms = append(ms, resourceMatchers(r, "")...)
		ms = append(ms, resourceMatchers(*q.To, "dst_")...)
		p.rowLabels = groupLabels(r.Kind, "")
		p.edgeRowIsSource = true
	case q.From != nil:
		if q.From.Kind == KindAuthority || q.From.Kind == KindService {
			return p, fmt.Errorf("--from cannot be a %s: a %s sends no traffic", q.From.Kind, q.From.Kind)
		}
		ms = append(ms, matcher{"direction", opEq, "outbound"})
		ms = append(ms, resourceMatchers(*q.From, "")...)
		ms = append(ms, resourceMatchers(r, "dst_")...)
		p.rowLabels = groupLabels(r.Kind, "dst_")
	case r.Kind == KindService:
		// A Service has no proxy of its own: its traffic is what meshed
		// clients sent to it, as Linkerd reports it.
		ms = append(ms, matcher{"direction", opEq, "outbound"})
		ms = append(ms, resourceMatchers(r, "dst_")...)
		p.rowLabels = groupLabels(r.Kind, "dst_")
	default:
		ms = append(ms, matcher{"direction", opEq, "inbound"})
		ms = append(ms, resourceMatchers(r, "")...)
		p.rowLabels = groupLabels(r.Kind, "")
		p.inbound = true
	}
	named := false
	for _, m := range ms {
		named = named || len(p.rowLabels) == 2 && m.Name == p.rowLabels[1] && m.Op == opEq
	}
	if len(p.rowLabels) == 2 && !named {
		// Traffic of pods without an owner of the row's kind belongs to
		// no row; Prometheus would otherwise group it under an empty name.
		ms = append(ms, matcher{p.rowLabels[1], opNeq, ""})
	}
	if pods != nil {
		ms = append(ms, matcher{"pod", opRe, strings.Join(pods, "|")})
	}
	p.requests = vectorQuery{Metric: metricResponses, Matchers: ms, By: append(append([]string{}, p.rowLabels...), "classification", "tls", "no_tls_reason")}
	if r.Kind != KindAuthority && (q.To == nil || q.To.Kind != KindAuthority) && (q.From == nil || q.From.Kind != KindAuthority) {
		// As Linkerd: the server side's connections from its peers
		// (peer="src"), or the client side's to them (peer="dst").
		peer := "dst"
		if p.inbound {
			peer = "src"
		}
		tm := append(append([]matcher{}, ms...), matcher{"peer", opEq, peer})
		p.tcp = true
		p.tcpOpen = vectorQuery{Metric: metricTCPOpen, Matchers: tm, By: p.rowLabels, Gauge: true}
		p.tcpRead = vectorQuery{Metric: metricTCPRead, Matchers: tm, By: p.rowLabels}
		p.tcpWrite = vectorQuery{Metric: metricTCPWritten, Matchers: tm, By: p.rowLabels}
	}
	p.latency = vectorQuery{Metric: metricLatency, Matchers: ms, By: p.rowLabels}

	// Plain-text edges always come from outbound metrics, the only side that
	// knows both ends. Keep the request's own restrictions on that side.
	var pm []matcher
	pm = append(pm, matcher{"direction", opEq, "outbound"}, matcher{"tls", opNeq, "true"})
	dstGroup := groupLabels(r.Kind, "dst_")
	switch {
	case q.To != nil:
		pm = append(pm, resourceMatchers(r, "")...)
		pm = append(pm, resourceMatchers(*q.To, "dst_")...)
		dstGroup = groupLabels(q.To.Kind, "dst_")
	case q.From != nil:
		pm = append(pm, resourceMatchers(*q.From, "")...)
		pm = append(pm, resourceMatchers(r, "dst_")...)
	default:
		pm = append(pm, resourceMatchers(r, "dst_")...)
	}
	by := []string{"namespace"}
	for _, o := range ownerLabels {
		by = append(by, o.label)
	}
	by = append(by, dstGroup...)
	if p.inbound {
		by = append(by, "dst_pod")
	}
	by = append(by, "no_tls_reason")
	p.plaintext = vectorQuery{Metric: metricResponses, Matchers: pm, By: dedupe(by)}
	if p.inbound {
		rm := append(append([]matcher{}, ms...), matcher{"tls", opNeq, "true"})
		rby := []string{"namespace"}
		for _, o := range ownerLabels {
			rby = append(rby, o.label)
		}
		p.receivers = vectorQuery{Metric: metricResponses, Matchers: rm, By: rby}
	}
	if p.inbound && q.From == nil && q.To == nil {
		p.wantRefused = true
		p.refused = vectorQuery{Metric: metricRefused, Matchers: ms, By: append(append([]string{}, p.rowLabels...), "reason")}
	}
	return p, nil
}

// queries are the sums a client-side source must prepare: the request
// counts, the latency buckets (by le) and the plain-text edges.
func (p plan) queries() []vectorQuery {
	qs := []vectorQuery{p.requests, p.latency.withLE(), p.plaintext}
	if p.inbound {
		qs = append(qs, p.receivers)
	}
	if p.tcp {
		qs = append(qs, p.tcpOpen, p.tcpRead, p.tcpWrite)
	}
	if p.wantRefused {
		qs = append(qs, p.refused)
	}
	return qs
}

func (q vectorQuery) withLE() vectorQuery {
	q.By = append(append([]string{}, q.By...), "le")
	return q
}

// id identifies a query among those prepared.
func (q vectorQuery) id() string { return q.PromQL("") }

func dedupe(s []string) []string {
	seen := map[string]bool{}
	out := s[:0:0]
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// rowKey is how rows are identified: namespace and name.
type rowKey struct{ Namespace, Name string }

func (p plan) keyOf(labels map[string]string) rowKey {
	if len(p.rowLabels) == 1 {
		return rowKey{Name: labels[p.rowLabels[0]]}
	}
	return rowKey{Namespace: labels[p.rowLabels[0]], Name: labels[p.rowLabels[1]]}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
