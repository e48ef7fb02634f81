package stat

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

// Pod is what stat needs to know about a pod.
type Pod struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	IP        string            `json:"ip,omitempty"`
	Meshed    bool              `json:"meshed"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Owners maps a workload kind label (deployment, replicaset, …) to the
	// name of the pod's owner of that kind.
	Owners map[string]string `json:"owners,omitempty"`
}

// TargetLabels are the labels Prometheus attaches to this pod's proxy
// metrics: namespace, pod, and one label per owner kind.
func (p Pod) TargetLabels() map[string]string {
	t := map[string]string{"namespace": p.Namespace, "pod": p.Name}
	for k, v := range p.Owners {
		t[kindLabel(Kind(k))] = v
	}
	return t
}

// PodSource lists pods. namespace "" means all namespaces.
type PodSource interface {
	Pods(ctx context.Context, namespace string, selector labels.Selector) ([]Pod, error)
}

// MetricSource prepares the metrics for one window over the given pods.
// Sources that hold their own pod list (captures) ignore pods. Sources that
// compute client-side reduce each pod's series to the sums of queries as
// soon as it is parsed, so memory grows with groups, not with series.
type MetricSource interface {
	collect(ctx context.Context, window time.Duration, pods []Pod, queries []vectorQuery) (evaluator, error)
}

// Quantiles stat reports.
var reportedQuantiles = []float64{0.5, 0.95, 0.99}

// maxEdges is how many plain-text pairs each row keeps.
const maxEdges = 5

// ErrPodsUnavailable is returned by a PodSource that may fail without
// failing the query: figures are still computed, with MESHED unknown.
var ErrPodsUnavailable = errors.New("pod list unavailable")

// OptionalPods lists pods when it can and otherwise warns and lets the
// query go on without them (Prometheus with an unreachable cluster).
type OptionalPods struct {
	Source PodSource
	Warn   func(string)
}

// Pods implements PodSource.
func (o OptionalPods) Pods(ctx context.Context, namespace string, sel labels.Selector) ([]Pod, error) {
	pods, err := o.Source.Pods(ctx, namespace, sel)
	if err != nil {
		if o.Warn != nil {
			o.Warn(fmt.Sprintf("MESHED is unknown: %v", err))
		}
		return nil, fmt.Errorf("%w: %v", ErrPodsUnavailable, err)
	}
	return pods, nil
}

// ErrNoPodSource is returned when a label selector is given but nothing can
// list pods to apply it to.
var ErrNoPodSource = errors.New("a label selector needs the pod list: give a capture or a reachable cluster")

// Compute runs one stat query. pods may be nil when no pod list is
// available (Prometheus without a cluster); MESHED then shows "-".
func Compute(ctx context.Context, q Query, src MetricSource, pods PodSource) (*Result, error) {
	return ComputeAll(ctx, []Query{q}, src, pods)
}

// ComputeAll runs several queries (one per resource of a call such as
// `stat deploy/web po/x`) over one collection of metrics: live proxies are
// scraped once for all of them. Rows come in the order of the queries.
func ComputeAll(ctx context.Context, qs []Query, src MetricSource, pods PodSource) (*Result, error) {
	if len(qs) == 0 {
		return &Result{}, nil
	}
	selector := labels.Everything()
	sel := qs[0].PodSelector
	if sel != "" {
		s, err := labels.Parse(sel)
		if err != nil {
			return nil, fmt.Errorf("invalid label selector %q: %v", sel, err)
		}
		selector = s
		if pods == nil {
			return nil, ErrNoPodSource
		}
	}
	if pods != nil {
		for _, q := range qs {
			if err := checkExists(ctx, q, pods); err != nil {
				return nil, err
			}
		}
	}
	var podList []Pod
	if pods != nil {
		seen := map[string]bool{}
		for _, q := range qs {
			ps, err := listScope(ctx, q, pods, selector)
			if errors.Is(err, ErrPodsUnavailable) && sel == "" {
				pods, podList = nil, nil
				break
			} else if err != nil {
				return nil, err
			}
			for _, p := range ps {
				if k := p.Namespace + "/" + p.Name; !seen[k] {
					seen[k] = true
					podList = append(podList, p)
				}
			}
		}
	}
	var podFilter []string
	if pods != nil && sel != "" {
		podFilter = []string{}
		for _, p := range podList {
			podFilter = append(podFilter, p.Name)
		}
		if len(podFilter) == 0 {
			return &Result{Window: qs[0].Window}, nil
		}
	}
	plans := make([]plan, len(qs))
	var queries []vectorQuery
	haveQuery := map[string]bool{}
	needSenders := false
	for i, q := range qs {
		p, err := buildPlan(q, podFilter)
		if err != nil {
			return nil, err
		}
		plans[i] = p
		for _, vq := range p.queries() {
			if !haveQuery[vq.id()] {
				haveQuery[vq.id()] = true
				queries = append(queries, vq)
			}
		}
		if p.inbound && q.Resource.Namespace != "" {
			needSenders = true
		}
	}
	var meshed []Pod
	for _, pod := range podList {
		if pod.Meshed {
			meshed = append(meshed, pod)
		}
	}
	if sc, ok := src.(*Scraper); ok && needSenders && pods != nil {
		// Only the senders' outbound metrics name who sent plain text, and
		// senders may live in any namespace: scrape every meshed pod, as
		// Prometheus does, so -n blames the same clients -A does.
		var err error
		if meshed, err = sc.withSenders(ctx, pods, meshed); err != nil {
			return nil, err
		}
	}
	ev, err := src.collect(ctx, qs[0].Window, meshed, queries)
	if err != nil {
		return nil, err
	}
	res := &Result{Window: ev.window()}
	for i, q := range qs {
		rows, err := evaluate(ctx, q, plans[i], ev, podList, pods != nil)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			if !q.Unmeshed && r.Meshed != nil && r.Meshed.Meshed == 0 && r.Requests == 0 {
				continue // Linkerd hides workloads outside the mesh unless asked
			}
			res.Rows = append(res.Rows, r)
		}
	}
	if w, ok := ev.(interface{ warnings() []string }); ok {
		res.Warnings = w.warnings()
	}
	return res, nil
}

// listScope lists the pods in every namespace the query touches.
func listScope(ctx context.Context, q Query, src PodSource, sel labels.Selector) ([]Pod, error) {
	namespaces := map[string]bool{q.Resource.Namespace: true}
	if q.Resource.Kind == KindNamespace && q.Resource.Name != "" {
		namespaces = map[string]bool{q.Resource.Name: true}
	}
	for _, r := range []*Resource{q.From, q.To} {
		if r != nil {
			namespaces[r.Namespace] = true
		}
	}
	if namespaces[""] {
		namespaces = map[string]bool{"": true}
	}
	var out []Pod
	for _, ns := range sortedKeys(namespaces) {
		ps, err := src.Pods(ctx, ns, sel)
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	return out, nil
}

type rowAcc struct {
	row              Row
	success, failure float64
	tlsTrue          float64
	seen             bool // some request series matched
	tcp              [3]float64
	tcpSeen          [3]bool
	quantiles        []float64
	edged            float64 // plain-text requests named by outbound edges
}

func evaluate(ctx context.Context, q Query, p plan, ev evaluator, pods []Pod, havePods bool) ([]Row, error) {
	accs := map[rowKey]*rowAcc{}
	get := func(k rowKey) *rowAcc {
		a, ok := accs[k]
		if !ok {
			a = &rowAcc{row: Row{Namespace: k.Namespace, Kind: p.rowKind, Name: k.Name, NoTLS: map[string]float64{}}}
			accs[k] = a
		}
		return a
	}

	reqs, err := ev.sum(ctx, p.requests)
	if err != nil {
		return nil, err
	}
	for _, s := range reqs {
		a := get(p.keyOf(s.Labels))
		a.seen = true
		switch s.Labels["classification"] {
		case "success":
			a.success += s.Value
		case "failure":
			a.failure += s.Value
		default:
			continue // not a response we can classify; Linkerd skips these too
		}
		if s.Labels["tls"] == "true" {
			a.tlsTrue += s.Value
			continue
		}
		reason := s.Labels["no_tls_reason"]
		if reason == "" {
			reason = s.Labels["tls"]
		}
		if reason == "" {
			reason = "unknown"
		}
		a.row.NoTLS[reason] += s.Value
	}

	lat, err := ev.quantiles(ctx, p.latency, reportedQuantiles)
	if err != nil {
		return nil, err
	}
	for _, s := range lat {
		get(p.keyOf(s.Labels)).quantiles = s.Values
	}

	if err := attachEdges(ctx, q, p, ev, accs); err != nil {
		return nil, err
	}

	if p.tcp {
		for i, tq := range []vectorQuery{p.tcpOpen, p.tcpRead, p.tcpWrite} {
			sums, err := ev.sum(ctx, tq)
			if err != nil {
				return nil, err
			}
			for _, s := range sums {
				a := get(p.keyOf(s.Labels))
				a.tcp[i] += s.Value
				a.tcpSeen[i] = true
			}
		}
	}

	if p.wantRefused {
		sums, err := ev.sum(ctx, p.refused)
		if err != nil {
			return nil, err
		}
		for _, s := range sums {
			if s.Value <= 0 {
				continue
			}
			a := get(p.keyOf(s.Labels))
			reason := s.Labels["reason"]
			if reason == "" {
				reason = "unknown"
			}
			if a.row.RefusedReasons == nil {
				a.row.RefusedReasons = map[string]float64{}
			}
			a.row.Refused += s.Value
			a.row.RefusedReasons[reason] += s.Value
		}
	}

	if havePods && q.Resource.Kind != KindAuthority && q.Resource.Kind != KindService {
		addPodRows(q, p, pods, accs, get)
	}

	window := ev.window().Seconds()
	rows := make([]Row, 0, len(accs))
	for _, a := range accs {
		r := a.row
		total := a.success + a.failure
		r.Requests = total
		r.Success, r.TLS, r.RPS = math.NaN(), math.NaN(), math.NaN()
		r.P50, r.P95, r.P99 = math.NaN(), math.NaN(), math.NaN()
		if window > 0 && a.seen {
			r.RPS = total / window
		}
		if total > 0 {
			r.Success = a.success / total
			r.TLS = a.tlsTrue / total
		}
		r.TCPConn, r.ReadBytes, r.WriteBytes = math.NaN(), math.NaN(), math.NaN()
		for i, v := range []*float64{&r.TCPConn, &r.ReadBytes, &r.WriteBytes} {
			if a.tcpSeen[i] {
				*v = a.tcp[i]
			}
		}
		if len(a.quantiles) == 3 {
			r.P50, r.P95, r.P99 = a.quantiles[0], a.quantiles[1], a.quantiles[2]
		}
		if p.inbound {
			addUnmeshedRemainder(&r, a.edged)
		}
		sortEdges(r.TopPlaintext)
		if len(r.TopPlaintext) > maxEdges {
			r.TopPlaintext = r.TopPlaintext[:maxEdges]
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Namespace != rows[j].Namespace {
			return rows[i].Namespace < rows[j].Namespace
		}
		return rows[i].Name < rows[j].Name
	})
	return rows, nil
}

// attachEdges names who sent plain text to (or, with --to, received it
// from) each row, from the outbound metrics of meshed clients.
func attachEdges(ctx context.Context, q Query, p plan, ev evaluator, accs map[rowKey]*rowAcc) error {
	edges, err := ev.sum(ctx, p.plaintext)
	if err != nil {
		return err
	}
	received := func(map[string]string) bool { return true }
	if p.inbound {
		if received, err = receivedBy(ctx, p, ev); err != nil {
			return err
		}
	}
	dstLabels := groupLabels(q.Resource.Kind, "dst_")
	dstKind := q.Resource.Kind
	if q.To != nil {
		dstLabels = groupLabels(q.To.Kind, "dst_")
		dstKind = q.To.Kind
	}
	for _, s := range edges {
		if s.Value <= 0 || !received(s.Labels) {
			continue
		}
		srcNS := s.Labels["namespace"]
		src := ownerName(s.Labels)
		dstNS, dstName := groupValues(dstLabels, s.Labels)
		edge := PlaintextEdge{
			Source:      qualify(src, srcNS, dstNS),
			Destination: qualify(shortRef(dstKind, dstName), dstNS, srcNS),
			Reason:      s.Labels["no_tls_reason"],
			Requests:    s.Value,
		}
		if edge.Reason == "" {
			edge.Reason = s.Labels["tls"]
		}
		var k rowKey
		if p.edgeRowIsSource {
			k = p.keyOf(s.Labels)
		} else {
			k = rowKey{Namespace: dstNS, Name: dstName}
			if len(p.rowLabels) == 1 {
				k = rowKey{Name: dstNS}
			}
		}
		a, ok := accs[k]
		if !ok {
			continue // traffic the row figures do not cover (e.g. outside -l)
		}
		a.row.TopPlaintext = mergeEdge(a.row.TopPlaintext, edge)
		a.edged += s.Value
	}
	return nil
}

// receivedBy returns whether an outbound plain-text series went to a pod
// whose inbound metrics the rows count: by its dst_pod when the client's
// proxy knew it, else by the narrowest destination owner it names.
func receivedBy(ctx context.Context, p plan, ev evaluator) (func(map[string]string) bool, error) {
	recv, err := ev.sum(ctx, p.receivers)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, s := range recv {
		ns := s.Labels["namespace"]
		for _, o := range ownerLabels {
			if v := s.Labels[o.label]; v != "" {
				seen[ns+"\xff"+o.label+"\xff"+v] = true
			}
		}
	}
	return func(l map[string]string) bool {
		ns := l["dst_namespace"]
		// ownerLabels run from the widest owner to the pod; the narrowest
		// one the client knows decides.
		for i := len(ownerLabels) - 1; i >= 0; i-- {
			o := ownerLabels[i]
			if v := l["dst_"+o.label]; v != "" {
				return seen[ns+"\xff"+o.label+"\xff"+v]
			}
		}
		return true // the client knew nothing of its destination
	}, nil
}

func groupValues(group []string, l map[string]string) (ns, name string) {
	if len(group) == 1 {
		return l[group[0]], l[group[0]]
	}
	return l[group[0]], l[group[1]]
}

func mergeEdge(edges []PlaintextEdge, e PlaintextEdge) []PlaintextEdge {
	for i := range edges {
		if edges[i].Source == e.Source && edges[i].Destination == e.Destination && edges[i].Reason == e.Reason {
			edges[i].Requests += e.Requests
			return edges
		}
	}
	return append(edges, e)
}

// addUnmeshedRemainder attributes inbound plain text that no meshed
// client's outbound metrics account for to clients outside the mesh.
func addUnmeshedRemainder(r *Row, edged float64) {
	var plain float64
	top, topCount := "", -1.0
	for _, reason := range sortedKeys(r.NoTLS) {
		plain += r.NoTLS[reason]
		if r.NoTLS[reason] > topCount {
			top, topCount = reason, r.NoTLS[reason]
		}
	}
	if rest := plain - edged; rest >= 0.5 {
		r.TopPlaintext = append(r.TopPlaintext, PlaintextEdge{
			Source: UnmeshedSource, Destination: shortRef(r.Kind, r.Name), Reason: top, Requests: rest,
		})
	}
}

// UnmeshedSource names the senders of plain text that no proxy's outbound
// metrics account for: clients without a proxy, or outside the capture.
const UnmeshedSource = "(unmeshed)"

func sortEdges(es []PlaintextEdge) {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Requests != es[j].Requests {
			return es[i].Requests > es[j].Requests
		}
		if es[i].Source != es[j].Source {
			return es[i].Source < es[j].Source
		}
		return es[i].Reason < es[j].Reason
	})
}

// ownerName is "deploy/web" for the most specific owner a series names.
func ownerName(l map[string]string) string {
	for _, o := range ownerLabels {
		if v := l[o.label]; v != "" {
			return o.short + "/" + v
		}
	}
	return "-"
}

func shortRef(k Kind, name string) string {
	if k == KindAuthority {
		return name
	}
	return k.Short() + "/" + name
}

// qualify adds the namespace when it differs from the other end's, so
// cross-namespace pairs stay unambiguous and same-namespace ones short.
func qualify(ref, ns, otherNS string) string {
	if ns == "" || ns == otherNS {
		return ref
	}
	return ns + "/" + ref
}

// addPodRows lists workloads that have pods but no traffic, and fills the
// MESHED column from the pod list.
func addPodRows(q Query, p plan, pods []Pod, accs map[rowKey]*rowAcc, get func(rowKey) *rowAcc) {
	counts := map[rowKey]*MeshedCount{}
	for _, pod := range pods {
		var k rowKey
		switch p.rowKind {
		case KindNamespace:
			k = rowKey{Name: pod.Namespace}
		case KindPod:
			k = rowKey{Namespace: pod.Namespace, Name: pod.Name}
		default:
			name := pod.Owners[string(p.rowKind)]
			if name == "" {
				continue
			}
			k = rowKey{Namespace: pod.Namespace, Name: name}
		}
		c := counts[k]
		if c == nil {
			c = &MeshedCount{}
			counts[k] = c
		}
		c.Total++
		if pod.Meshed {
			c.Meshed++
		}
	}
	rowRes := q.Resource
	for k, c := range counts {
		if rowRes.Name != "" && k.Name != rowRes.Name {
			continue
		}
		if rowRes.Namespace != "" && p.rowKind != KindNamespace && k.Namespace != rowRes.Namespace {
			continue
		}
		get(k).row.Meshed = c
	}
	for _, a := range accs {
		if a.row.Meshed == nil {
			a.row.Meshed = &MeshedCount{}
		}
	}
}
