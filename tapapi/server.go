package tapapi

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"meshtls/contract"
	tappb "meshtls/proto/tap"
)

// Config is what the tap API needs.
type Config struct {
	Client           kubernetes.Interface
	ControlNamespace string
	// ClusterDomain ends the identities proxies must present; "" is
	// cluster.local.
	ClusterDomain string
	// Credentials returns the transport credentials for a proxy that must
	// present identity: IdentityFiles.Credentials in a cluster.
	Credentials func(identity string) (credentials.TransportCredentials, error)
	// Auth authenticates the API server's front proxy; nil trusts every
	// caller (only for tests and benchmarks of the fan-out).
	Auth *RequestHeaderAuth
	// Authorize runs the SubjectAccessReview; false skips it (tests).
	Authorize bool
	// Buffer is how many merged events wait for a slow client.
	Buffer int
	// Peers, when set, names the pods behind events' peer addresses.
	Peers  *Peers
	Logger *slog.Logger
	// MaxRPS is the server's ceiling on one session's requests per
	// second: a request asking for more, or for no limit (0), gets this
	// (DefaultMaxRPS when zero).
	MaxRPS float64
	// MaxSessionsPerUser caps one user's open sessions, each of which
	// dials every pod of its target (DefaultMaxSessionsPerUser when zero).
	MaxSessionsPerUser int
}

// The server's limits, whatever a caller asks for.
const (
	DefaultMaxRPS             = 100
	DefaultMaxSessionsPerUser = 8
)

// Server serves tap.linkerd.io/v1alpha1.
type Server struct {
	cfg      Config
	auth     atomic.Pointer[RequestHeaderAuth]
	perUser  sync.Mutex
	open     map[string]int // open sessions by user
	registry *prometheus.Registry
	dropped  prometheus.Counter
	sessions prometheus.Gauge
	events   prometheus.Counter
}

// SourceHeader marks every response of the tap API, so the CLI can tell
// its answers from the API server's.
const SourceHeader = "Linkerd-Tap-Api"

// New checks cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Credentials == nil {
		return nil, errors.New("tapapi: no proxy credentials")
	}
	if cfg.Client == nil {
		return nil, errors.New("tapapi: no Kubernetes client")
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 4096
	}
	if cfg.ControlNamespace == "" {
		cfg.ControlNamespace = "linkerd"
	}
	if cfg.MaxRPS <= 0 {
		cfg.MaxRPS = DefaultMaxRPS
	}
	if cfg.MaxSessionsPerUser <= 0 {
		cfg.MaxSessionsPerUser = DefaultMaxSessionsPerUser
	}
	s := &Server{cfg: cfg, registry: prometheus.NewRegistry(), open: map[string]int{}}
	s.auth.Store(cfg.Auth)
	s.dropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "tap_events_dropped_total",
		Help: "Tap events dropped for clients: over max-rps, behind a slow client, or dropped by a proxy."})
	s.events = prometheus.NewCounter(prometheus.CounterOpts{Name: "tap_events_sent_total", Help: "Tap events sent to clients."})
	s.sessions = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tap_sessions", Help: "Open tap sessions."})
	s.registry.MustRegister(s.dropped, s.events, s.sessions)
	return s, nil
}

// AdminHandler serves /ready, /live and /metrics.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }
	mux.HandleFunc("/ready", ok)
	mux.HandleFunc("/live", ok)
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	return mux
}

func (s *Server) log() *slog.Logger {
	if s.cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.cfg.Logger
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// RequestHeaderAuth is the API server's front proxy as the
// extension-apiserver-authentication ConfigMap describes it.
type RequestHeaderAuth struct {
	ClientCAs     *x509.CertPool
	AllowedNames  []string
	UserHeaders   []string
	GroupHeaders  []string
	ExtraPrefixes []string
}

// The ConfigMap the API server publishes for aggregated API servers.
const (
	AuthConfigMapNamespace = "kube-system"
	AuthConfigMap          = "extension-apiserver-authentication"
)

// SetAuth replaces the front-proxy settings, for a rotation of the API
// server's requestheader client CA (ReloadAuth); nil is refused.
func (s *Server) SetAuth(a *RequestHeaderAuth) {
	if a != nil {
		s.auth.Store(a)
	}
}

// ClientCAs is the current front-proxy CA pool, for the TLS handshake
// (tls.Config.GetConfigForClient), so a reload takes effect there too.
func (s *Server) ClientCAs() *x509.CertPool {
	if a := s.auth.Load(); a != nil {
		return a.ClientCAs
	}
	return nil
}

// ReloadAuth re-reads the front-proxy settings every interval until ctx
// ends, so a rotated requestheader client CA is honoured without a
// restart. A read that fails keeps the last good settings.
func (s *Server) ReloadAuth(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a, err := LoadRequestHeaderAuth(ctx, s.cfg.Client)
		if err != nil {
			if s.cfg.Logger != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("keeping the last front-proxy settings", "err", err)
			}
			continue
		}
		s.SetAuth(a)
	}
}

// LoadRequestHeaderAuth reads the front proxy's client CA and headers.
func LoadRequestHeaderAuth(ctx context.Context, c kubernetes.Interface) (*RequestHeaderAuth, error) {
	cm, err := c.CoreV1().ConfigMaps(AuthConfigMapNamespace).Get(ctx, AuthConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading %s/%s (the API server's front-proxy settings): %w", AuthConfigMapNamespace, AuthConfigMap, err)
	}
	ca := cm.Data["requestheader-client-ca-file"]
	if ca == "" {
		return nil, fmt.Errorf("%s/%s has no requestheader-client-ca-file: the API server is not configured for API aggregation", AuthConfigMapNamespace, AuthConfigMap)
	}
	a := &RequestHeaderAuth{ClientCAs: x509.NewCertPool()}
	if !a.ClientCAs.AppendCertsFromPEM([]byte(ca)) {
		return nil, fmt.Errorf("%s/%s: no certificate in requestheader-client-ca-file", AuthConfigMapNamespace, AuthConfigMap)
	}
	for key, dst := range map[string]*[]string{
		"requestheader-allowed-names":        &a.AllowedNames,
		"requestheader-username-headers":     &a.UserHeaders,
		"requestheader-group-headers":        &a.GroupHeaders,
		"requestheader-extra-headers-prefix": &a.ExtraPrefixes,
	} {
		if v := cm.Data[key]; v != "" {
			if err := json.Unmarshal([]byte(v), dst); err != nil {
				return nil, fmt.Errorf("%s/%s: %s: %w", AuthConfigMapNamespace, AuthConfigMap, key, err)
			}
		}
	}
	if len(a.UserHeaders) == 0 {
		a.UserHeaders = []string{"X-Remote-User"}
	}
	if len(a.GroupHeaders) == 0 {
		a.GroupHeaders = []string{"X-Remote-Group"}
	}
	return a, nil
}

// user is who the API server says is asking.
type user struct {
	name   string
	groups []string
	extra  map[string]authzv1.ExtraValue
}

// authenticate trusts the headers only from a client certificate the
// front proxy's CA signed, with an allowed name when the API server
// lists any.
func (a *RequestHeaderAuth) authenticate(r *http.Request) (user, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return user{}, errors.New("no client certificate: only the Kubernetes API server's front proxy may call the tap API")
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.ClientCAs, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return user{}, fmt.Errorf("client certificate not signed by the front-proxy CA: %v", err)
	}
	if len(a.AllowedNames) > 0 && !slices.Contains(a.AllowedNames, leaf.Subject.CommonName) {
		return user{}, fmt.Errorf("client certificate %q is not an allowed front-proxy name", leaf.Subject.CommonName)
	}
	var u user
	for _, h := range a.UserHeaders {
		if v := r.Header.Get(h); v != "" {
			u.name = v
			break
		}
	}
	if u.name == "" {
		return user{}, errors.New("no user in the front proxy's headers")
	}
	for _, h := range a.GroupHeaders {
		u.groups = append(u.groups, r.Header.Values(h)...)
	}
	for _, p := range a.ExtraPrefixes {
		for k, vs := range r.Header {
			if len(k) > len(p) && strings.EqualFold(k[:len(p)], p) {
				if u.extra == nil {
					u.extra = map[string]authzv1.ExtraValue{}
				}
				// The API server percent-encodes extra keys in header names.
				key := strings.ToLower(k[len(p):])
				if dec, err := url.PathUnescape(key); err == nil {
					key = dec
				}
				u.extra[key] = append(u.extra[key], vs...)
			}
		}
	}
	return u, nil
}

// Denied is the 403 message, in Linkerd's wording, with the RBAC that
// would allow it.
func Denied(userName string, t Target, controlNS string) string {
	res := t.Resource + "/tap"
	return fmt.Sprintf("user %q cannot watch %s in namespace %q: bind the ClusterRole %s to it in that namespace, e.g. kubectl create rolebinding tap-view -n %s --clusterrole=%s --user=%s (--serviceaccount=NS:NAME for a ServiceAccount)",
		userName, res, t.Namespace, contract.TapViewClusterRole(controlNS), t.Namespace, contract.TapViewClusterRole(controlNS), userName)
}

func (s *Server) authorize(ctx context.Context, u user, t Target) (bool, error) {
	name := t.Name
	resource := t.Resource
	if resource == "namespaces" {
		name = t.Namespace
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.name, Groups: u.groups, Extra: u.extra,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace: t.Namespace, Verb: "watch", Group: Group, Version: Version,
			Resource: resource, Subresource: Subresource, Name: name,
		},
	}}
	res, err := s.cfg.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("SubjectAccessReview: %w", err)
	}
	return res.Status.Allowed, nil
}

const apisPrefix = "/apis/" + Group + "/" + Version

// Handler serves discovery and the tap endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/apis", s.discoveryGroups)
	mux.HandleFunc("/apis/"+Group, s.discoveryGroup)
	mux.HandleFunc(apisPrefix, s.discoveryResources)
	mux.HandleFunc(apisPrefix+"/watch/", s.serveTap)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(SourceHeader, "controller")
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func groupInfo() metav1.APIGroup {
	gv := metav1.GroupVersionForDiscovery{GroupVersion: Group + "/" + Version, Version: Version}
	return metav1.APIGroup{TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}, Name: Group,
		Versions: []metav1.GroupVersionForDiscovery{gv}, PreferredVersion: gv}
}

// Discovery is no secret: the API server's availability check reads it
// with no user, as it does every APIService's.
func (s *Server) discoveryGroups(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{groupInfo()}})
}

func (s *Server) discoveryGroup(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, groupInfo())
}

func (s *Server) discoveryResources(w http.ResponseWriter, _ *http.Request) {
	l := metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: Group + "/" + Version}
	for _, r := range Resources() {
		l.APIResources = append(l.APIResources,
			metav1.APIResource{Name: r, Namespaced: r != "namespaces", Kind: r, Verbs: metav1.Verbs{"watch"}},
			metav1.APIResource{Name: r + "/" + Subresource, Namespaced: r != "namespaces", Kind: "Tap", Verbs: metav1.Verbs{"watch"}})
	}
	writeJSON(w, http.StatusOK, l)
}

// status writes a Kubernetes Status, which client-go and kubectl show.
func status(w http.ResponseWriter, code int, reason metav1.StatusReason, t Target, msg string) {
	writeJSON(w, code, metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg,
		Details: &metav1.StatusDetails{Group: Group, Kind: t.Resource, Name: t.Name},
	})
}

// ParsePath reads a tap path: …/watch/namespaces/NS/tap (the namespace;
// ?resource=deployments narrows it to every pod of that kind) or
// …/watch/namespaces/NS/RESOURCE/NAME/tap.
func ParsePath(path, query string) (Target, error) {
	rest, ok := strings.CutPrefix(path, apisPrefix+"/watch/")
	if !ok {
		return Target{}, errors.New("not a tap path")
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	switch {
	case len(parts) == 3 && parts[0] == "namespaces" && parts[2] == Subresource && parts[1] != "":
		t := Target{Namespace: parts[1], Resource: "namespaces"}
		if err := t.Validate(); err != nil {
			return Target{}, err
		}
		if r := queryValue(query, "resource"); r != "" {
			if _, ok := resourceKinds[r]; !ok || r == "namespaces" {
				return Target{}, fmt.Errorf("cannot tap every %q: valid resources are %v", r, Resources())
			}
			t.Resource = r
		}
		return t, nil
	case len(parts) == 5 && parts[0] == "namespaces" && parts[4] == Subresource && parts[1] != "" && parts[3] != "":
		if _, ok := resourceKinds[parts[2]]; !ok || parts[2] == "namespaces" {
			return Target{}, fmt.Errorf("cannot tap resource %q: valid resources are %v", parts[2], Resources())
		}
		t := Target{Namespace: parts[1], Resource: parts[2], Name: parts[3]}
		return t, t.Validate()
	}
	return Target{}, fmt.Errorf("unknown tap path %q: want %s/watch/namespaces/NS/tap or %s/watch/namespaces/NS/RESOURCE/NAME/tap", path, apisPrefix, apisPrefix)
}

type peerFilterKey struct{}

// peerFilter says, for one session of u, in which namespaces peer pods may
// be named: the tapped namespace, and any other where a SubjectAccessReview
// says u may tap the whole namespace. Each namespace is asked once per
// session; an error counts as no.
func (s *Server) peerFilter(ctx context.Context, u user, home string) func(string) bool {
	var mu sync.Mutex
	seen := map[string]bool{home: true}
	return func(ns string) bool {
		mu.Lock()
		defer mu.Unlock()
		if ok, done := seen[ns]; done {
			return ok
		}
		ok, err := s.authorize(ctx, u, Target{Namespace: ns, Resource: "namespaces"})
		seen[ns] = ok && err == nil
		return seen[ns]
	}
}

// clampRPS is the rate a session gets: what it asked for, up to the
// server's ceiling. 0 means "no limit" to a proxy; the server never
// passes that on.
func clampRPS(asked, ceiling float64) float64 {
	if asked == 0 || asked > ceiling {
		return ceiling
	}
	return asked
}

// acquire counts a session of user, or refuses one over the cap. Without
// front-proxy authentication (tests) there is no user to count.
func (s *Server) acquire(user string) bool {
	if user == "" {
		return true
	}
	s.perUser.Lock()
	defer s.perUser.Unlock()
	if s.open[user] >= s.cfg.MaxSessionsPerUser {
		return false
	}
	s.open[user]++
	return true
}

func (s *Server) release(user string) {
	if user == "" {
		return
	}
	s.perUser.Lock()
	defer s.perUser.Unlock()
	if s.open[user]--; s.open[user] <= 0 {
		delete(s.open, user)
	}
}

// Validate says whether t names a namespace and an object as Kubernetes
// spells them, so no name can change the path or query it is put in.
func (t Target) Validate() error {
	if errs := validation.IsDNS1123Label(t.Namespace); len(errs) > 0 {
		return fmt.Errorf("invalid namespace %q: %s", t.Namespace, strings.Join(errs, "; "))
	}
	if t.Name != "" {
		if errs := validation.IsDNS1123Subdomain(t.Name); len(errs) > 0 {
			return fmt.Errorf("invalid %s name %q: %s", t.Resource, t.Name, strings.Join(errs, "; "))
		}
	}
	return nil
}

func queryValue(q, key string) string {
	for _, kv := range strings.Split(q, "&") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// Path is the tap path for t, the inverse of ParsePath.
func (t Target) Path() string {
	if t.Name == "" {
		p := apisPrefix + "/watch/namespaces/" + url.PathEscape(t.Namespace) + "/" + Subresource
		if t.Resource != "namespaces" && t.Resource != "" {
			p += "?resource=" + url.QueryEscape(t.Resource)
		}
		return p
	}
	return apisPrefix + "/watch/namespaces/" + url.PathEscape(t.Namespace) + "/" + url.PathEscape(t.Resource) + "/" + url.PathEscape(t.Name) + "/" + Subresource
}

func (s *Server) serveTap(w http.ResponseWriter, r *http.Request) {
	t, err := ParsePath(r.URL.Path, r.URL.RawQuery)
	if err != nil {
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, t, err.Error())
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		status(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, t, "tap takes a POST with an ObserveRequest body")
		return
	}
	ctx := r.Context()
	who := ""
	if auth := s.auth.Load(); auth != nil {
		u, err := auth.authenticate(r)
		if err != nil {
			status(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, t, err.Error())
			return
		}
		if s.cfg.Authorize {
			ok, err := s.authorize(ctx, u, t)
			if err != nil {
				status(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, t, err.Error())
				return
			}
			if !ok {
				status(w, http.StatusForbidden, metav1.StatusReasonForbidden, t, Denied(u.name, t, s.cfg.ControlNamespace))
				return
			}
		}
		who = u.name
		if s.cfg.Authorize {
			ctx = context.WithValue(ctx, peerFilterKey{}, s.peerFilter(ctx, u, t.Namespace))
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, t, "reading the request: "+err.Error())
		return
	}
	req := &tappb.ObserveRequest{}
	if err := proto.Unmarshal(body, req); err != nil {
		status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, t, "the body is not an ObserveRequest: "+err.Error())
		return
	}
	if req.GetMaxRps() < 0 {
		status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, t, "max_rps must not be negative")
		return
	}
	req.MaxRps = clampRPS(req.MaxRps, s.cfg.MaxRPS)
	if !s.acquire(who) {
		status(w, http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, t,
			fmt.Sprintf("user %q already has %d tap sessions open, the most one user may: end one first", who, s.cfg.MaxSessionsPerUser))
		return
	}
	defer s.release(who)
	eps, skipped, err := s.Resolve(ctx, t)
	var nf errNotFound
	switch {
	case errors.As(err, &nf):
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, t, nf.msg)
		return
	case err != nil:
		status(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, t, err.Error())
		return
	}
	if len(eps) == 0 {
		msg := fmt.Sprintf("no running meshed pods to tap for %s", describe(t))
		if len(skipped) > 0 {
			msg += ": " + strings.Join(skipped, "; ")
		}
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, t, msg)
		return
	}
	s.Stream(ctx, w, eps, skipped, req)
}

func describe(t Target) string {
	if t.Resource == "namespaces" {
		return "namespace " + t.Namespace
	}
	if t.Name == "" {
		return t.Resource + " in namespace " + t.Namespace
	}
	return t.Resource + "/" + t.Name + " in namespace " + t.Namespace
}

// statusEvery is how often a changed proxy state or pending drops are
// reported when no event carries them.
const statusEvery = 500 * time.Millisecond

// Stream taps eps and writes the merged frames to w until the client
// goes away or every proxy ended its stream.
func (s *Server) Stream(ctx context.Context, w http.ResponseWriter, eps []Endpoint, skipped []string, req *tappb.ObserveRequest) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m := NewMerger(req.GetMaxRps(), s.cfg.Buffer)
	m.OnDrop = func(n uint64) { s.dropped.Add(float64(n)) }
	s.sessions.Inc()
	defer s.sessions.Dec()
	sess := &session{connected: map[string]bool{}, errs: map[string]string{}, changed: true}
	var wg sync.WaitGroup
	for _, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := m.Feeder()
			f.SetSelf(ep.Labels)
			f.SetPeers(s.cfg.Peers)
			if allowed, ok := ctx.Value(peerFilterKey{}).(func(string) bool); ok {
				f.SetPeerFilter(allowed)
			}
			s.tapProxy(ctx, ep, req, f, sess)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	defer func() { cancel(); <-done }()

	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	fw := newFrameWriter(w)
	flush := func() error {
		if err := fw.w.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	writeStatus := func(force, end bool) error {
		proxies, errs, changed := sess.snapshot(force || end)
		d := m.Dropped()
		if !changed && d == 0 {
			return nil
		}
		if !changed {
			proxies, errs, _ = sess.snapshot(true)
		}
		return fw.status(Status{Pods: len(eps), Proxies: proxies, Dropped: m.TakeDropped(), Errors: append(errs, skipped...), End: end})
	}
	if err := writeStatus(true, false); err != nil || flush() != nil {
		return
	}
	tick := time.NewTicker(statusEvery)
	defer tick.Stop()
	events := m.Events()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			if err := fw.event(ev, m.TakeDropped()); err != nil {
				return
			}
			s.events.Inc()
			// Batch what is already queued into one write.
			if len(events) == 0 {
				if err := flush(); err != nil {
					return
				}
			}
		case <-tick.C:
			if err := writeStatus(false, false); err != nil || flush() != nil {
				return
			}
		case <-done:
			for len(events) > 0 {
				if err := fw.event(<-events, m.TakeDropped()); err != nil {
					return
				}
			}
			_ = writeStatus(true, true)
			_ = flush()
			return
		}
	}
}
