package tapapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"meshtls/contract"
	tappb "meshtls/proto/tap"
)

// Endpoint is one proxy to tap.
type Endpoint struct {
	// Pod is "namespace/name", for errors.
	Pod string
	// Addr is the proxy's tap address (pod IP and tap port).
	Addr string
	// Identity is the TLS identity the proxy must present.
	Identity string
	// Labels name the pod's owner ("deployment": "web"), which its proxy
	// does not know; they are added to its events' metadata of this pod.
	Labels map[string]string
}

// Target is what a request taps: a namespace (Resource "namespaces"), or
// one workload or pod, or (Name empty) every workload of a kind in the
// namespace.
type Target struct {
	Namespace string
	// Resource is the plural API resource: namespaces, pods, deployments,
	// statefulsets or daemonsets.
	Resource string
	Name     string
}

// resourceKinds maps the API's resources to the owner kinds of the
// linkerd.io/proxy-<kind> label.
var resourceKinds = map[string]string{
	"namespaces":   "",
	"pods":         contract.KindPod,
	"deployments":  contract.KindDeployment,
	"statefulsets": contract.KindStatefulSet,
	"daemonsets":   contract.KindDaemonSet,
}

// Resources lists what can be tapped, for discovery.
func Resources() []string {
	out := make([]string, 0, len(resourceKinds))
	for r := range resourceKinds {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// errNotFound is a target that does not exist: a 404 to the client.
type errNotFound struct{ msg string }

func (e errNotFound) Error() string { return e.msg }

// Resolve finds the proxies of the target's running, meshed pods. Pods
// whose proxy cannot be tapped (no TLS identity, no proxy) are named in
// skipped.
func (s *Server) Resolve(ctx context.Context, t Target) (eps []Endpoint, skipped []string, err error) {
	kind, ok := resourceKinds[t.Resource]
	if !ok {
		return nil, nil, fmt.Errorf("cannot tap resource %q: valid resources are %v", t.Resource, Resources())
	}
	c := s.cfg.Client
	sel := labels.Set{contract.ControlPlaneNSLabel: s.cfg.ControlNamespace}
	var pods []corev1.Pod
	switch {
	case t.Resource == "namespaces":
		if _, err := c.CoreV1().Namespaces().Get(ctx, t.Namespace, metav1.GetOptions{}); err != nil {
			return nil, nil, notFound(err, "namespace %q not found", t.Namespace)
		}
	case kind == contract.KindPod && t.Name != "":
		p, err := c.CoreV1().Pods(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
		if err != nil {
			return nil, nil, notFound(err, "pod %q not found in namespace %q", t.Name, t.Namespace)
		}
		pods = []corev1.Pod{*p}
	case t.Name != "":
		var err error
		switch kind {
		case contract.KindDeployment:
			_, err = c.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
		case contract.KindStatefulSet:
			_, err = c.AppsV1().StatefulSets(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
		case contract.KindDaemonSet:
			_, err = c.AppsV1().DaemonSets(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
		}
		if err != nil {
			return nil, nil, notFound(err, "%s %q not found in namespace %q", kind, t.Name, t.Namespace)
		}
		sel[contract.KindLabel(kind)] = t.Name
	}
	if pods == nil {
		list, err := c.CoreV1().Pods(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			return nil, nil, fmt.Errorf("listing pods in %s: %w", t.Namespace, err)
		}
		pods = list.Items
	}
	for i := range pods {
		p := &pods[i]
		if kind != "" && kind != contract.KindPod && t.Name == "" && p.Labels[contract.KindLabel(kind)] == "" {
			continue
		}
		if p.Labels[contract.ControlPlaneNSLabel] != s.cfg.ControlNamespace || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			continue
		}
		if !hasProxy(p) {
			continue
		}
		name := p.Namespace + "/" + p.Name
		if !contract.TLSMode(p.Annotations[contract.TLSAnnotation]) {
			skipped = append(skipped, fmt.Sprintf("pod %s: its proxy has no TLS identity (inject it with --tls=optional), so it cannot be tapped", name))
			continue
		}
		okind, owner := podOwner(p)
		var lbls map[string]string
		if okind != contract.KindPod {
			lbls = map[string]string{okind: owner}
		}
		eps = append(eps, Endpoint{
			Labels:   lbls,
			Pod:      name,
			Addr:     net.JoinHostPort(p.Status.PodIP, strconv.Itoa(contract.TapPort)),
			Identity: contract.IdentityIn(owner, okind, p.Namespace, s.cfg.ControlNamespace, s.cfg.ClusterDomain),
		})
	}
	return eps, skipped, nil
}

func notFound(err error, format string, args ...any) error {
	if apierrors.IsNotFound(err) {
		return errNotFound{fmt.Sprintf(format, args...)}
	}
	return err
}

func hasProxy(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == contract.ProxyContainerName {
			return true
		}
	}
	return false
}

// podOwner names the workload whose identity the pod's proxy holds, as
// the CA decides it: the linkerd.io/proxy-<kind> label, else the pod.
func podOwner(p *corev1.Pod) (kind, name string) {
	for _, k := range contract.Kinds {
		if n := p.Labels[contract.KindLabel(k)]; n != "" {
			return k, n
		}
	}
	return contract.KindPod, p.Name
}

// IdentityFiles are the controller's mesh identity (its Secret's tls.crt
// and tls.key) and the trust anchors proxies chain to. They are read at
// each connection to a proxy, so a renewed certificate is used at once.
type IdentityFiles struct {
	Cert, Key, TrustAnchors string
}

// Credentials returns mTLS credentials that present the controller's
// identity and accept only a proxy presenting identity.
func (f IdentityFiles) Credentials(identity string) (credentials.TransportCredentials, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("controller identity not available (%s): %w", f.Cert, err)
	}
	pem, err := os.ReadFile(f.TrustAnchors)
	if err != nil {
		return nil, fmt.Errorf("trust anchors not available: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in trust anchors %s", f.TrustAnchors)
	}
	return credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   identity,
	}), nil
}

// session is one client's tap: its proxies' states, for Status frames.
type session struct {
	mu        sync.Mutex
	connected map[string]bool
	errs      map[string]string
	changed   bool
}

func (s *session) set(pod string, up bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.connected[pod] != up {
		s.connected[pod] = up
		s.changed = true
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if s.errs[pod] != msg {
		s.errs[pod] = msg
		s.changed = true
	}
}

// snapshot returns the state when it changed since the last call.
func (s *session) snapshot(force bool) (proxies int, errs []string, changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.changed && !force {
		return 0, nil, false
	}
	s.changed = false
	for _, up := range s.connected {
		if up {
			proxies++
		}
	}
	for pod, e := range s.errs {
		if e != "" {
			errs = append(errs, "pod "+pod+": "+e)
		}
	}
	sort.Strings(errs)
	return proxies, errs, true
}

// tapProxy streams one proxy's events into f until ctx ends, reconnecting
// after failures.
func (s *Server) tapProxy(ctx context.Context, ep Endpoint, req *tappb.ObserveRequest, f *Feeder, sess *session) {
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		err := s.observe(ctx, ep, req, f, sess)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			// The proxy ended the stream (its limit was reached).
			sess.set(ep.Pod, false, nil)
			return
		}
		sess.set(ep.Pod, false, err)
		s.log().Debug("tap stream failed", "pod", ep.Pod, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Server) observe(ctx context.Context, ep Endpoint, req *tappb.ObserveRequest, f *Feeder, sess *session) error {
	creds, err := s.cfg.Credentials(ep.Identity)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(ep.Addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	// Events are received still encoded (rawCodec): the merger reads the
	// few fields it needs and the client gets the proxy's bytes.
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, tappb.Tap_Observe_FullMethodName, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	if err := stream.SendMsg(req); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	sess.set(ep.Pod, true, nil)
	for {
		var ev rawEvent
		err := stream.RecvMsg(&ev)
		if err != nil {
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return nil
			}
			if isEOF(err) {
				return nil
			}
			return err
		}
		f.Push(ev)
	}
}

// rawEvent is a TapEvent as the proxy encoded it.
type rawEvent []byte

// rawCodec sends requests as protobuf and receives events undecoded.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case rawEvent:
		return m, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("tap: cannot encode %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *rawEvent:
		// gRPC reuses data after this returns.
		*m = append([]byte(nil), data...)
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("tap: cannot decode into %T", v)
}
