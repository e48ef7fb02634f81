// Package stat computes Conduit v0.5 style traffic statistics (success
// rate, request rate, latency quantiles and the share of TLS traffic) from
// proxy metrics. The figures are the same whichever Source supplies the
// metrics: a Prometheus server, live proxies scraped twice, or a capture.
package stat

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Kind is a resource type stat can group traffic by.
type Kind string

// The resource kinds stat understands.
const (
	KindAuthority             Kind = "authority"
	KindDeployment            Kind = "deployment"
	KindStatefulSet           Kind = "statefulset"
	KindDaemonSet             Kind = "daemonset"
	KindReplicaSet            Kind = "replicaset"
	KindReplicationController Kind = "replicationcontroller"
	KindJob                   Kind = "job"
	KindCronJob               Kind = "cronjob"
	KindPod                   Kind = "pod"
	KindService               Kind = "service"
	KindNamespace             Kind = "namespace"
)

// kindInfo is every kind's spellings; the first is its short name.
var kindInfo = []struct {
	kind  Kind
	names []string
}{
	{KindAuthority, []string{"au", "authority", "authorities"}},
	{KindDeployment, []string{"deploy", "deployment", "deployments"}},
	{KindStatefulSet, []string{"sts", "statefulset", "statefulsets"}},
	{KindDaemonSet, []string{"ds", "daemonset", "daemonsets"}},
	{KindReplicaSet, []string{"rs", "replicaset", "replicasets"}},
	{KindReplicationController, []string{"rc", "replicationcontroller", "replicationcontrollers"}},
	{KindJob, []string{"job", "jobs"}},
	{KindCronJob, []string{"cronjob", "cronjobs", "cj"}},
	{KindPod, []string{"po", "pod", "pods"}},
	{KindService, []string{"svc", "service", "services"}},
	{KindNamespace, []string{"ns", "namespace", "namespaces"}},
}

// AllKinds are the kinds "all" expands to, as Linkerd's stat all does.
var AllKinds = []Kind{KindDeployment, KindStatefulSet, KindDaemonSet, KindReplicaSet, KindReplicationController,
	KindJob, KindCronJob, KindPod, KindService, KindAuthority}

// kindAliases maps every accepted spelling (kubectl's short names and
// plurals included) to its Kind.
var kindAliases = func() map[string]Kind {
	m := map[string]Kind{}
	for _, k := range kindInfo {
		for _, n := range k.names {
			m[n] = k.kind
		}
	}
	return m
}()

// Short is the kind's kubectl short name ("deploy").
func (k Kind) Short() string {
	for _, ki := range kindInfo {
		if ki.kind == k {
			return ki.names[0]
		}
	}
	return string(k)
}

// ValidKinds lists the kinds with their short names, for help and errors.
var ValidKinds = func() string {
	var parts []string
	for _, k := range kindInfo {
		if k.names[0] == string(k.kind) {
			parts = append(parts, string(k.kind))
		} else {
			parts = append(parts, fmt.Sprintf("%s (%s)", k.kind, k.names[0]))
		}
	}
	return strings.Join(parts, ", ") + ", all"
}()

// ParseKind resolves a user-typed resource type.
func ParseKind(s string) (Kind, error) {
	if k, ok := kindAliases[strings.ToLower(s)]; ok {
		return k, nil
	}
	return "", fmt.Errorf("unknown resource type %q: valid types are %s", s, ValidKinds)
}

// KindNames returns every accepted spelling, for shell completion.
func KindNames() []string {
	names := make([]string, 0, len(kindAliases)+1)
	for n := range kindAliases {
		names = append(names, n)
	}
	names = append(names, "all")
	sort.Strings(names)
	return names
}

// Resource names one object (Name set) or all objects of a kind (Name
// empty). An empty Namespace means every namespace.
type Resource struct {
	Kind      Kind
	Namespace string
	Name      string
}

// ParseResource reads "TYPE", "TYPE NAME" (as two args) or "TYPE/NAME".
func ParseResource(args []string, namespace string) (Resource, error) {
	if len(args) == 0 || len(args) > 2 {
		return Resource{}, fmt.Errorf("expected RESOURCE [NAME] or RESOURCE/NAME, got %d arguments", len(args))
	}
	rs, err := ParseResources(args, namespace)
	if err != nil {
		return Resource{}, err
	}
	if len(rs) != 1 {
		return Resource{}, fmt.Errorf("expected one resource, got %d", len(rs))
	}
	return rs[0], nil
}

// ParseResources reads kubectl's forms: "TYPE [NAME...]" or "TYPE/NAME..."
// (which may mix types). "all" stands for every kind in AllKinds.
func ParseResources(args []string, namespace string) ([]Resource, error) {
	if len(args) == 0 {
		return nil, errors.New("expected a resource: TYPE [NAME...] or TYPE/NAME")
	}
	mk := func(typ, name string) ([]Resource, error) {
		var kinds []Kind
		if strings.EqualFold(typ, "all") {
			kinds = AllKinds
		} else {
			k, err := ParseKind(typ)
			if err != nil {
				return nil, err
			}
			kinds = []Kind{k}
		}
		var out []Resource
		for _, k := range kinds {
			r := Resource{Kind: k, Namespace: namespace, Name: name}
			if k == KindNamespace {
				// A namespace is not inside one; -n does not narrow it.
				r.Namespace = ""
			}
			out = append(out, r)
		}
		return out, nil
	}
	var out []Resource
	add := func(rs []Resource) {
		for _, r := range rs {
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	if strings.Contains(args[0], "/") {
		for _, a := range args {
			typ, name, ok := strings.Cut(a, "/")
			if !ok {
				return nil, fmt.Errorf("give the name either as %q or as a second argument, not both", args[0])
			}
			if name == "" {
				return nil, fmt.Errorf("resource %q has an empty name", a)
			}
			if strings.Contains(name, "/") {
				return nil, fmt.Errorf("resource %q has more than one slash: give TYPE/NAME", a)
			}
			if strings.EqualFold(typ, "all") {
				return nil, fmt.Errorf("%q: \"all\" takes no name", a)
			}
			rs, err := mk(typ, name)
			if err != nil {
				return nil, err
			}
			add(rs)
		}
		return out, nil
	}
	if len(args) == 1 {
		return mk(args[0], "")
	}
	for _, name := range args[1:] {
		if strings.Contains(name, "/") {
			return nil, fmt.Errorf("give the name either as %q or as a second argument, not both", name)
		}
		if strings.EqualFold(args[0], "all") {
			return nil, fmt.Errorf(`"all" takes no name`)
		}
		rs, err := mk(args[0], name)
		if err != nil {
			return nil, err
		}
		if name == "" {
			// An empty argument would otherwise widen the query to
			// every resource of the type.
			return nil, fmt.Errorf("empty %s name", rs[0].Kind)
		}
		add(rs)
	}
	return out, nil
}

// String prints the resource as kubectl would ("deploy/web").
func (r Resource) String() string {
	if r.Name == "" {
		return string(r.Kind)
	}
	return string(r.Kind) + "/" + r.Name
}

// Query is one stat request.
type Query struct {
	Resource Resource
	// From and To restrict traffic to that coming from / going to a resource.
	// At most one is set.
	From, To *Resource
	// Window is the time window; a capture may substitute its own interval.
	Window time.Duration
	// PodSelector, when set, keeps only traffic of pods whose labels match
	// (a Kubernetes label selector, applied through the PodSource).
	PodSelector string
	// Unmeshed keeps rows of workloads with no meshed pod and no traffic,
	// which are hidden otherwise (Linkerd's --unmeshed).
	Unmeshed bool
}

// MeshedCount is the MESHED column of a workload: pods with a proxy out of all.
type MeshedCount struct {
	Meshed, Total int
}

// Row is one line of stat output. Figures are NaN when there was no
// traffic to compute them from.
type Row struct {
	Namespace string
	Kind      Kind
	Name      string
	// Meshed is nil for authorities, which have no pods of their own.
	Meshed *MeshedCount

	Requests float64 // requests in the window (success+failure)
	Success  float64 // fraction 0..1
	RPS      float64
	P50, P95 float64 // milliseconds
	P99      float64
	TLS      float64 // fraction of requests with tls="true"

	// TCPConn is the open TCP connections at the window's end; ReadBytes
	// and WriteBytes the bytes the proxy read and wrote on them in the
	// window. NaN when the proxies reported none (and for authorities).
	TCPConn, ReadBytes, WriteBytes float64

	// NoTLS counts requests that were not encrypted, by no_tls_reason.
	NoTLS map[string]float64
	// TopPlaintext names the source→destination pairs carrying the most
	// plain-text requests, largest first.
	TopPlaintext []PlaintextEdge

	// Refused counts the requests and connections a pod with
	// linkerd.io/tls: required refused in the window, for arriving
	// without mTLS; RefusedReasons splits it by reason. They are not in
	// Requests: the TLS column is the share of served requests.
	Refused        float64
	RefusedReasons map[string]float64
}

// PlaintextEdge is plain-text traffic between two workloads.
type PlaintextEdge struct {
	Source      string  `json:"source"`
	Destination string  `json:"destination"`
	Reason      string  `json:"reason"`
	Requests    float64 `json:"requests"`
}

// Result is the outcome of a stat query.
type Result struct {
	Rows []Row
	// Window is the window the figures really cover.
	Window time.Duration
	// Warnings say what the figures leave out (pods scraped too rarely).
	Warnings []string
}
