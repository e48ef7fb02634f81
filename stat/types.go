// Package stat computes Conduit v0.5 style traffic statistics (success
// rate, request rate, latency quantiles and the share of TLS traffic) from
// proxy metrics. The figures are the same whichever Source supplies the
// metrics: a Prometheus server, live proxies scraped twice, or a capture.
package stat

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Kind is a resource type stat can group traffic by.
type Kind string

// The resource kinds stat understands.
const (
	KindAuthority  Kind = "authority"
	KindDeployment Kind = "deployment"
	KindPod        Kind = "pod"
	KindNamespace  Kind = "namespace"
)

// kindAliases maps every accepted spelling (kubectl's short names and
// plurals included) to its Kind.
var kindAliases = map[string]Kind{
	"authority": KindAuthority, "authorities": KindAuthority, "au": KindAuthority,
	"deployment": KindDeployment, "deployments": KindDeployment, "deploy": KindDeployment,
	"pod": KindPod, "pods": KindPod, "po": KindPod,
	"namespace": KindNamespace, "namespaces": KindNamespace, "ns": KindNamespace,
}

// ValidKinds lists the kinds with their short names, for help and errors.
const ValidKinds = "authority (au), deployment (deploy), pod (po), namespace (ns)"

// ParseKind resolves a user-typed resource type.
func ParseKind(s string) (Kind, error) {
	if k, ok := kindAliases[strings.ToLower(s)]; ok {
		return k, nil
	}
	return "", fmt.Errorf("unknown resource type %q: valid types are %s", s, ValidKinds)
}

// KindNames returns every accepted spelling, for shell completion.
func KindNames() []string {
	names := make([]string, 0, len(kindAliases))
	for n := range kindAliases {
		names = append(names, n)
	}
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
	typ, name := args[0], ""
	if i := strings.IndexByte(typ, '/'); i >= 0 {
		if len(args) == 2 {
			return Resource{}, fmt.Errorf("give the name either as %q or as a second argument, not both", typ)
		}
		typ, name = typ[:i], typ[i+1:]
		if name == "" {
			return Resource{}, fmt.Errorf("resource %q has an empty name", args[0])
		}
	} else if len(args) == 2 {
		name = args[1]
	}
	kind, err := ParseKind(typ)
	if err != nil {
		return Resource{}, err
	}
	r := Resource{Kind: kind, Namespace: namespace, Name: name}
	if kind == KindNamespace {
		// A namespace is not inside one; -n does not narrow it.
		r.Namespace = ""
	}
	return r, nil
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

	// NoTLS counts requests that were not encrypted, by no_tls_reason.
	NoTLS map[string]float64
	// TopPlaintext names the source→destination pairs carrying the most
	// plain-text requests, largest first.
	TopPlaintext []PlaintextEdge
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
