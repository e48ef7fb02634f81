// Package destination is the control plane's service discovery: the
// Destination gRPC service proxies ask where an authority or an original
// destination address leads, and which TLS identity each endpoint serves.
// It watches Services, EndpointSlices and Pods with client-go informers and
// streams a snapshot, then changes, to each Get. See README.md.
package destination

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"meshtls/contract"
	pb "meshtls/proto/destination"
	netpb "meshtls/proto/net"
)

// Config is what the server needs besides a Kubernetes client.
type Config struct {
	// ControlNamespace is this control plane's namespace: only pods meshed
	// by it (label linkerd.io/control-plane-ns) get identities.
	ControlNamespace string
	// ClusterDomain ends fully qualified Service names; default
	// contract.DefaultClusterDomain.
	ClusterDomain string
	// Resync re-delivers every object this often (0: never).
	Resync time.Duration
	// TrustReadiness advertises a TLS pod's identity as soon as the pod is
	// Ready. By default the server also checks, with a TLS handshake to
	// the pod's inbound port, that the pod really serves it (README.md,
	// "Identity and readiness"); set this where the controller cannot
	// reach pods.
	TrustReadiness bool
	// TrustAnchors, when set, must sign the certificates pods serve;
	// without them the check reads the identity and dates only.
	TrustAnchors *x509.CertPool
	// Anchors, when set, is read at each check instead of TrustAnchors:
	// the bundle of the moment (AnchorsFile.Pool).
	Anchors func() *x509.CertPool
	// Logger; nil discards.
	Logger *slog.Logger
}

// Server is the Destination service.
type Server struct {
	pb.UnimplementedDestinationServer

	cfg      Config
	log      *slog.Logger
	factory  informers.SharedInformerFactory
	pods     cache.SharedIndexInformer
	services cache.SharedIndexInformer
	slices   cache.SharedIndexInformer
	res      *resolver

	verify     verifier
	handshakes *handshakeVerifier // nil with TrustReadiness
	life       context.Context    // ends when Run returns
	endLife    context.CancelFunc

	synced chan struct{} // closed once the caches are filled
	ready  atomic.Bool

	mu   sync.Mutex
	subs *subIndex

	registry *prometheus.Registry
	metrics  *metrics
}

// subscription is one Get stream waiting for changes.
type subscription struct {
	// namespace and service name a Service target.
	namespace, service string
	// ip is an address target's IP; matchNS and matchSvc name the Service
	// it last resolved to, if any (guarded by Server.mu). Such a stream
	// hears that Service's events, and any object that carries its IP.
	ip                netip.Addr
	matchNS, matchSvc string
	notify            chan struct{}
}

const (
	podIPIndex     = "podIP"
	clusterIPIndex = "clusterIP"
	serviceIndex   = "service"
)

// New builds a server; Run starts its informers.
func New(client kubernetes.Interface, cfg Config) (*Server, error) {
	if cfg.ControlNamespace == "" {
		return nil, errors.New("destination: empty control-plane namespace")
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = contract.DefaultClusterDomain
	}
	if err := contract.CheckClusterDomain(cfg.ClusterDomain); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, cfg.Resync,
		informers.WithTransform(stripManagedFields))
	s := &Server{
		cfg:      cfg,
		log:      log,
		factory:  factory,
		pods:     factory.Core().V1().Pods().Informer(),
		services: factory.Core().V1().Services().Informer(),
		slices:   factory.Discovery().V1().EndpointSlices().Informer(),
		synced:   make(chan struct{}),
		subs:     newSubIndex(),
		registry: prometheus.NewRegistry(),
	}
	s.metrics = newMetrics(s.registry, s)
	if err := s.pods.AddIndexers(cache.Indexers{podIPIndex: indexPodIP}); err != nil {
		return nil, err
	}
	if err := s.services.AddIndexers(cache.Indexers{clusterIPIndex: indexClusterIP}); err != nil {
		return nil, err
	}
	if err := s.slices.AddIndexers(cache.Indexers{serviceIndex: indexSliceService}); err != nil {
		return nil, err
	}
	for _, inf := range []cache.SharedIndexInformer{s.pods, s.services, s.slices} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { s.changed(obj, nil) },
			UpdateFunc: func(old, obj any) { s.changed(obj, old) },
			DeleteFunc: func(obj any) {
				if _, ok := obj.(cache.DeletedFinalStateUnknown); !ok {
					obj = cache.DeletedFinalStateUnknown{Obj: obj}
				}
				s.changed(obj, nil)
			},
		}); err != nil {
			return nil, err
		}
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	s.verify = readyVerifier{}
	if !cfg.TrustReadiness {
		roots := cfg.Anchors
		if roots == nil {
			roots = func() *x509.CertPool { return cfg.TrustAnchors }
		}
		s.handshakes = newHandshakeVerifier(s.life, roots, log, s.podVerdict)
		s.verify = s.handshakes
	}
	s.res = &resolver{controlNS: cfg.ControlNamespace, clusterDomain: cfg.ClusterDomain, store: &informerStore{s}, verify: s.verify}
	return s, nil
}

// Run starts the informers, waits for their caches, then serves until ctx
// ends. Get streams opened before the caches are filled wait for them, so
// no proxy is ever told that a destination does not exist because the
// server had not read it yet.
func (s *Server) Run(ctx context.Context) error {
	defer s.endLife()
	s.factory.Start(ctx.Done())
	defer s.factory.Shutdown()
	start := time.Now()
	if !cache.WaitForCacheSync(ctx.Done(), s.pods.HasSynced, s.services.HasSynced, s.slices.HasSynced) {
		return fmt.Errorf("destination: caches not filled: %w", context.Cause(ctx))
	}
	s.log.Info("caches filled", "took", time.Since(start).Round(time.Millisecond).String())
	s.ready.Store(true)
	close(s.synced)
	<-ctx.Done()
	s.ready.Store(false)
	return nil
}

// AnchorsChanged makes every pod's identity be checked again against the
// new trust anchors, and wakes every stream to pick up the verdicts.
func (s *Server) AnchorsChanged() {
	if s.handshakes == nil {
		return
	}
	s.handshakes.forgetAll()
	s.mu.Lock()
	subs := make([]*subscription, 0, len(s.subs.all))
	for sub := range s.subs.all {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	for _, sub := range subs {
		select {
		case sub.notify <- struct{}{}:
		default:
		}
	}
}

// Ready says whether the caches are filled.
func (s *Server) Ready() bool { return s.ready.Load() }

// ServerOptions are the gRPC server options the service expects: its
// clients (destination/client) ping every 30 s to notice a lost server,
// which gRPC's default enforcement (one ping per 5 min) would answer by
// closing the connection.
//
// Each connection may hold at most MaxStreamsPerConnection Get streams: a
// proxy opens one per destination it talks to, and a client that opens
// tens of thousands would slow every recomputation for everyone.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(MaxStreamsPerConnection),
	}
}

// firstAnswerHold bounds how long a stream's first answer waits for the
// identity checks of its endpoints (each bounded by a 5s handshake).
const firstAnswerHold = 6 * time.Second

// MaxStreamsPerConnection caps the Get streams of one client connection.
// Streams beyond it wait for one to end (HTTP/2 flow control), so a
// well-behaved proxy only slows down past it.
const MaxStreamsPerConnection = 2048

// Register adds the service to a gRPC server.
func (s *Server) Register(g grpc.ServiceRegistrar) { pb.RegisterDestinationServer(g, s) }

// changed wakes the streams an object's change may concern: a Service's
// and its slices' streams, the streams of the addresses an object carries,
// and for a pod the streams of the Services that select it (before or
// after the change). Each stream recomputes its destination from the
// caches and sends the difference, so a burst of events costs one
// recomputation per stream, and an event costs nothing to the streams it
// does not concern.
func (s *Server) changed(obj, old any) {
	deleted := false
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted = d.Obj, true
	}
	if pod, ok := obj.(*corev1.Pod); ok && s.handshakes != nil && (deleted || pod.DeletionTimestamp != nil || !podReady(pod)) {
		s.handshakes.forget(pod.UID)
	}
	var e event
	addIPs := func(ips []string) {
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip); err == nil {
				e.ips = append(e.ips, a)
			}
		}
	}
	for _, o := range []any{obj, old} {
		switch o := o.(type) {
		case *corev1.Pod:
			e.namespace = o.Namespace
			ips, _ := indexPodIP(o)
			addIPs(ips)
			e.pods = append(e.pods, o)
		case *corev1.Service:
			e.namespace = o.Namespace
			ips, _ := indexClusterIP(o)
			addIPs(ips)
			e.services = append(e.services, o.Name)
		case *discoveryv1.EndpointSlice:
			e.namespace = o.Namespace
			if name := o.Labels[discoveryv1.LabelServiceName]; name != "" {
				e.services = append(e.services, name)
			}
		}
	}
	s.wake(e)
}

// podVerdict wakes the streams of a pod whose identity check concluded.
func (s *Server) podVerdict(namespace, name string) {
	if pod, ok := (&informerStore{s}).pod(namespace, name); ok {
		s.changed(pod, nil)
	}
}

// wake tells the streams e concerns to recompute.
func (s *Server) wake(e event) {
	due := map[*subscription]struct{}{}
	svcOf := (&informerStore{s}).service
	s.mu.Lock()
	s.subs.collect(e, svcOf, due)
	s.mu.Unlock()
	for sub := range due {
		select {
		case sub.notify <- struct{}{}:
		default: // already due for a recomputation
		}
	}
}

// Get streams the endpoints of one destination.
func (s *Server) Get(req *pb.GetDestination, stream grpc.ServerStreamingServer[pb.Update]) error {
	ctx := stream.Context()
	if req.GetScheme() != "" && req.GetScheme() != "k8s" {
		s.metrics.requests.WithLabelValues("invalid").Inc()
		return status.Errorf(codes.InvalidArgument, "unsupported scheme %q: want k8s", req.GetScheme())
	}
	t, unknown, err := parseTarget(req.GetPath(), s.cfg.ClusterDomain)
	if err != nil {
		s.metrics.requests.WithLabelValues("invalid").Inc()
		return status.Error(codes.InvalidArgument, err.Error())
	}
	select {
	case <-s.synced:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()
	log := s.log.With("path", req.GetPath(), "client", req.GetContextToken(), "client_id", callerIdentity(ctx))
	if unknown {
		// A name outside the cluster's Services never changes answer;
		// the stream stays open so the client does not ask again.
		s.metrics.requests.WithLabelValues("unknown_name").Inc()
		log.Debug("not a Service name")
		if err := s.send(stream, &pb.Update{Update: &pb.Update_NoEndpoints{NoEndpoints: &pb.NoEndpoints{Exists: false}}}); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}
	if t.service != "" {
		s.metrics.requests.WithLabelValues("service").Inc()
	} else {
		s.metrics.requests.WithLabelValues("ip").Inc()
	}

	sub := &subscription{namespace: t.namespace, service: t.service, ip: t.ip, notify: make(chan struct{}, 1)}
	s.mu.Lock()
	s.subs.add(sub)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.subs.remove(sub)
		s.mu.Unlock()
	}()

	var last *snapshot
	// The first answer waits, briefly, for identity checks under way
	// (after a restart every pod is checked afresh), so a client is not
	// first told a Service has fewer endpoints than it has.
	holdFirst := time.Now().Add(firstAnswerHold)
	for {
		next := s.res.resolve(t)
		if t.service == "" {
			s.mu.Lock()
			moved := s.subs.match(sub, next.namespace, next.setLabels["service"])
			s.mu.Unlock()
			if moved {
				// An event in the new namespace may have come between
				// the resolution and this line: look once more.
				select {
				case sub.notify <- struct{}{}:
				default:
				}
			}
		}
		if last == nil && next.pending {
			if wait := time.Until(holdFirst); wait > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-sub.notify:
				case <-time.After(wait):
				}
				continue
			}
		}
		for _, u := range diff(last, next) {
			if err := s.send(stream, u); err != nil {
				log.Debug("stream ended", "err", err)
				return err
			}
		}
		last = &next
		select {
		case <-ctx.Done():
			return nil
		case <-sub.notify:
		}
	}
}

func (s *Server) send(stream grpc.ServerStreamingServer[pb.Update], u *pb.Update) error {
	kind := "add"
	switch u.GetUpdate().(type) {
	case *pb.Update_Remove:
		kind = "remove"
	case *pb.Update_NoEndpoints:
		kind = "no_endpoints"
	}
	s.metrics.updates.WithLabelValues(kind).Inc()
	return stream.Send(u)
}

// diff is what a client that last saw prev must be told to know next.
// The first answer is a snapshot (Add, or NoEndpoints); after that,
// changed and new endpoints come as an Add before removed ones as a
// Remove, so a client never sees an empty set in a rollout. An emptied
// set is a NoEndpoints, which also tells whether the destination still
// exists.
func diff(prev *snapshot, next snapshot) []*pb.Update {
	if len(next.endpoints) == 0 {
		if prev == nil || len(prev.endpoints) > 0 || prev.exists != next.exists {
			return []*pb.Update{{Update: &pb.Update_NoEndpoints{NoEndpoints: &pb.NoEndpoints{Exists: next.exists}}}}
		}
		return nil
	}
	var prevEps map[netip.AddrPort]endpoint
	relabel := true
	if prev != nil {
		prevEps = prev.endpoints
		relabel = !equalLabels(prev.setLabels, next.setLabels)
	}
	add := &pb.WeightedAddrSet{MetricLabels: next.setLabels}
	for _, addr := range sortedAddrs(next.endpoints) {
		ep := next.endpoints[addr]
		if old, ok := prevEps[addr]; ok && !relabel && old.equal(ep) {
			continue
		}
		add.Addrs = append(add.Addrs, toProto(ep))
	}
	var remove []*netpb.TcpAddress
	for _, addr := range sortedAddrs(prevEps) {
		if _, ok := next.endpoints[addr]; !ok {
			remove = append(remove, tcpAddr(addr))
		}
	}
	var out []*pb.Update
	if len(add.Addrs) > 0 {
		out = append(out, &pb.Update{Update: &pb.Update_Add{Add: add}})
	}
	if len(remove) > 0 {
		out = append(out, &pb.Update{Update: &pb.Update_Remove{Remove: &pb.AddrSet{Addrs: remove}}})
	}
	return out
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func toProto(ep endpoint) *pb.WeightedAddr {
	w := &pb.WeightedAddr{Addr: tcpAddr(ep.addr), Weight: 1, MetricLabels: ep.labels}
	if ep.identity != "" {
		w.TlsIdentity = &pb.TlsIdentity{Strategy: &pb.TlsIdentity_DnsLikeIdentity_{
			DnsLikeIdentity: &pb.TlsIdentity_DnsLikeIdentity{Name: ep.identity},
		}}
	}
	if ep.h2 {
		w.ProtocolHint = &pb.ProtocolHint{Protocol: &pb.ProtocolHint_H2_{H2: &pb.ProtocolHint_H2{}}}
	}
	return w
}

func tcpAddr(a netip.AddrPort) *netpb.TcpAddress {
	return &netpb.TcpAddress{Ip: a.Addr().AsSlice(), Port: uint32(a.Port())}
}

func sortedAddrs(m map[netip.AddrPort]endpoint) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slicesSort(out)
	return out
}

// stripManagedFields drops what resolution never reads, to keep the
// caches of a large cluster small.
func stripManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}

// The indexes the resolver looks objects up by.

func indexPodIP(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || !livePodIP(pod) {
		return nil, nil
	}
	var out []string
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a.Unmap().String())
		}
	}
	if len(out) == 0 {
		if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			out = append(out, a.Unmap().String())
		}
	}
	return out, nil
}

func indexClusterIP(obj any) ([]string, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil, nil
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, a.Unmap().String())
		}
	}
	return out, nil
}

func indexSliceService(obj any) ([]string, error) {
	slice, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := slice.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{slice.Namespace + "/" + name}, nil
}

// informerStore reads the informers' caches.
type informerStore struct{ s *Server }

func (st *informerStore) service(namespace, name string) (*corev1.Service, bool) {
	obj, ok, err := st.s.services.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	svc, ok := obj.(*corev1.Service)
	return svc, ok
}

func (st *informerStore) servicesByClusterIP(ip netip.Addr) []*corev1.Service {
	return byIndex[*corev1.Service](st.s.services, clusterIPIndex, ip.String())
}

func (st *informerStore) slices(namespace, service string) []*discoveryv1.EndpointSlice {
	return byIndex[*discoveryv1.EndpointSlice](st.s.slices, serviceIndex, namespace+"/"+service)
}

func (st *informerStore) pod(namespace, name string) (*corev1.Pod, bool) {
	obj, ok, err := st.s.pods.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	pod, ok := obj.(*corev1.Pod)
	return pod, ok
}

func (st *informerStore) podsByIP(ip netip.Addr) []*corev1.Pod {
	return byIndex[*corev1.Pod](st.s.pods, podIPIndex, ip.String())
}

func (st *informerStore) podsInNamespace(namespace string) []*corev1.Pod {
	return byIndex[*corev1.Pod](st.s.pods, cache.NamespaceIndex, namespace)
}

func byIndex[T any](inf cache.SharedIndexInformer, index, value string) []T {
	objs, err := inf.GetIndexer().ByIndex(index, value)
	if err != nil {
		return nil
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// callerIdentity is the verified mesh identity of a client that presented
// a certificate (the TLS listener verifies it against the anchors), or
// "-" for a plain-text client: what the context token claims is only a
// claim, the certificate is proof.
func callerIdentity(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "-"
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return "-"
	}
	if names := ti.State.VerifiedChains[0][0].DNSNames; len(names) > 0 {
		return names[0]
	}
	return "-"
}
