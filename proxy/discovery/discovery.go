// Package discovery is the seam between the proxy and service discovery:
// the proxy asks a Resolver where a destination leads and which identity
// each endpoint must present; the destination service's gRPC client
// (meshtls/destination/client) is the Resolver in a cluster, and Static
// serves tests.
package discovery

import (
	"context"
	"errors"
	"net/netip"
)

// Endpoint is one address a destination resolves to.
type Endpoint struct {
	Addr netip.AddrPort
	// Identity is the TLS identity the endpoint's proxy serves (its
	// certificate's DNS SAN). Empty means the endpoint is not TLS-enabled,
	// or cannot serve an identity yet: the proxy then sends plain text,
	// labelled not_provided_by_service_discovery.
	Identity string
	// Labels become the proxy's dst_* metric labels (without the prefix):
	// namespace, pod, service, and the owner as "<kind>" = name.
	Labels map[string]string
	// H2 says the endpoint's proxy accepts HTTP/2 from proxies.
	H2 bool
}

// ErrNotFound means discovery knows the destination does not exist (no
// such Service or pod); the proxy then forwards to the original address
// in plain text, as for any destination outside the mesh. It is the only
// error that allows plain text: any other fails the request.
var ErrNotFound = errors.New("destination not found by service discovery")

// Resolver resolves a target to its endpoints.
type Resolver interface {
	// Resolve returns the current endpoints of target: an authority
	// ("svc.ns:port", "svc.ns.svc.cluster.local:port") or an address
	// ("IP:port", a pod IP or a Service's ClusterIP as SO_ORIGINAL_DST
	// gives it). It waits for the first answer up to ctx's deadline, then
	// answers from a cache kept up to date by a watch. An empty slice with
	// a nil error means the destination exists but has no endpoints now.
	// The returned slice and its endpoints' Labels are shared: callers
	// must not modify them.
	Resolve(ctx context.Context, target string) ([]Endpoint, error)
}

// Static is a fixed Resolver, for tests and for running the proxy without a
// control plane.
type Static map[string][]Endpoint

// Resolve implements Resolver.
func (s Static) Resolve(_ context.Context, target string) ([]Endpoint, error) {
	eps, ok := s[target]
	if !ok {
		return nil, ErrNotFound
	}
	return eps, nil
}

// Cached is a Resolver that can answer from what it already knows without
// waiting: ok is false when it has no answer for target yet. The proxy
// asks it first, so a known destination costs no deadline per request.
type Cached interface {
	Cached(target string) (eps []Endpoint, err error, ok bool)
}
