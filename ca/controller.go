// Package ca is the control plane's certificate authority: it watches this
// mesh's TLS pods and keeps one certificate Secret per workload owner, plus
// a trust bundle in every namespace that has TLS pods. The x509 work lives
// in ca/pki; this package is the Kubernetes side.
package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"meshtls/ca/pki"
	"meshtls/contract"
)

// legacyFieldManager is the field manager of CAs before it was per
// control plane; their objects are still recognised as the CA's own.
const legacyFieldManager = "linkerd-ca"

// FieldManager owns the fields the CA of one control plane applies:
// kubectl and other tools keep theirs, and so does the CA of another
// control plane, so a conflict means the object is not this CA's.
func FieldManager(controlNamespace string) string { return "linkerd-ca/" + controlNamespace }

// MinLeafLifetime is the shortest certificate lifetime the CA accepts.
const MinLeafLifetime = pki.MinLeafLifetime

// Config is everything the CA needs besides a client.
type Config struct {
	// ControlNamespace is the control-plane namespace (DESIGN: -L).
	ControlNamespace string
	// ClusterDomain ends every identity; "" is cluster.local.
	ClusterDomain string
	// LeafLifetime is how long workload certificates live.
	LeafLifetime time.Duration
	// RootLifetime is used only when the CA generates a root.
	RootLifetime time.Duration
	// Workers reconcile owners in parallel.
	Workers int
	// Resync re-examines every TLS pod this often, a safety net behind
	// the timers that schedule renewals.
	Resync time.Duration

	// Identity names this replica in the Lease; LeaseName is the Lease.
	Identity  string
	LeaseName string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election;
	// zero picks client-go's usual 15s/10s/2s.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration

	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests move it.
	Now func() time.Time

	// minLeafLifetime lowers MinLeafLifetime for tests that watch
	// renewals happen within seconds.
	minLeafLifetime time.Duration
}

func (c *Config) setDefaults() error {
	if c.ControlNamespace == "" {
		c.ControlNamespace = "linkerd"
	}
	if c.LeafLifetime == 0 {
		c.LeafLifetime = pki.DefaultLeafLifetime
	}
	floor := MinLeafLifetime
	if c.minLeafLifetime > 0 {
		floor = c.minLeafLifetime
	}
	if c.LeafLifetime < floor {
		return fmt.Errorf("certificate lifetime %s is too short: the kubelet may take minutes to deliver a renewed certificate to pods; use at least %s", c.LeafLifetime, floor)
	}
	if c.RootLifetime == 0 {
		c.RootLifetime = pki.DefaultRootLifetime
	}
	if c.RootLifetime <= c.LeafLifetime {
		return fmt.Errorf("root lifetime %s must exceed the certificate lifetime %s", c.RootLifetime, c.LeafLifetime)
	}
	if c.Workers <= 0 {
		c.Workers = 16
	}
	if c.Resync == 0 {
		c.Resync = 10 * time.Minute
	}
	if c.Identity == "" {
		host, _ := os.Hostname()
		c.Identity = fmt.Sprintf("%s_%d", host, os.Getpid())
	}
	if c.LeaseName == "" {
		c.LeaseName = "linkerd-ca"
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 15 * time.Second
	}
	if c.RenewDeadline == 0 {
		c.RenewDeadline = 10 * time.Second
	}
	if c.RetryPeriod == 0 {
		c.RetryPeriod = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Controller is one CA replica. Every replica loads the root and fills its
// caches, so a standby is ready to take over; only the Lease holder
// reconciles.
type Controller struct {
	cfg    Config
	client kubernetes.Interface
	log    *slog.Logger

	queue        workqueue.TypedRateLimitingInterface[ownerKey]
	metrics      *metrics
	fieldManager string
	events       record.EventRecorder
	broadcaster  record.EventBroadcaster

	podInformer, secretInformer, bundleInformer, rootInformer cache.SharedIndexInformer
	pods                                                      corelisters.PodLister
	secrets                                                   corelisters.SecretLister
	bundles                                                   corelisters.ConfigMapLister
	factories                                                 []informers.SharedInformerFactory

	state  atomic.Pointer[rootState]
	synced atomic.Bool

	// written remembers each Secret this replica just applied, because the
	// informer may not have delivered it yet when the next event for the
	// same owner arrives; without it a burst of pod events would re-issue.
	writtenMu sync.Mutex
	written   map[ownerKey]writtenSecret
}

type writtenSecret struct {
	secret *corev1.Secret
	// prevRV is the resourceVersion the write replaced ("" for a create):
	// seeing it in the informer means the informer is behind.
	prevRV string
	at     time.Time
}

// writtenTTL is how long a just-written Secret beats the informer's copy.
const writtenTTL = 30 * time.Second

const ownerIndex = "owner"

// New builds a controller; it does not touch the API server until Run.
func New(client kubernetes.Interface, cfg Config) (*Controller, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	c := &Controller{
		cfg:          cfg,
		client:       client,
		log:          cfg.Logger,
		written:      map[ownerKey]writtenSecret{},
		fieldManager: FieldManager(cfg.ControlNamespace),
	}
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(failureRateLimiter(),
		workqueue.TypedRateLimitingQueueConfig[ownerKey]{Name: "linkerd-ca"},
	)
	c.metrics = newMetrics(func() float64 { return float64(c.queue.Len()) }, func() float64 {
		if c.usable() != nil {
			return 0
		}
		return 1
	})
	c.broadcaster = record.NewBroadcaster()
	c.events = c.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "linkerd-ca"})

	ns := cfg.ControlNamespace
	// Each informer lists only what the CA needs: this mesh's pods, the
	// CA's own Secrets and the bundles, so memory follows the mesh, not
	// the cluster.
	podFactory := informers.NewSharedInformerFactoryWithOptions(client, cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.Set{contract.ControlPlaneNSLabel: ns}.String()
		}))
	secretFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = contract.ControlPlaneNSLabel + "=" + ns + "," + contract.OwnerKindLabel
		}))
	bundleFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", contract.BundleConfigMap).String()
		}))
	rootFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", contract.RootSecret).String()
		}))
	c.factories = []informers.SharedInformerFactory{podFactory, secretFactory, bundleFactory, rootFactory}

	podInf := podFactory.Core().V1().Pods()
	c.podInformer = podInf.Informer()
	c.pods = podInf.Lister()
	if err := c.podInformer.AddIndexers(cache.Indexers{ownerIndex: func(obj any) ([]string, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok || !wantsTLS(pod, ns) {
			return nil, nil
		}
		return []string{podOwner(pod).String()}, nil
	}}); err != nil {
		return nil, err
	}
	secretInf := secretFactory.Core().V1().Secrets()
	c.secretInformer = secretInf.Informer()
	c.secrets = secretInf.Lister()
	// The cache keeps each workload Secret's certificate but never its
	// private key: whoever dumps the CA's memory gets no workload's key.
	if err := c.secretInformer.SetTransform(stripKey); err != nil {
		return nil, err
	}
	c.rootInformer = rootFactory.Core().V1().Secrets().Informer()
	bundleInf := bundleFactory.Core().V1().ConfigMaps()
	c.bundleInformer = bundleInf.Informer()
	c.bundles = bundleInf.Lister()

	if _, err := c.podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.onPod,
		UpdateFunc: func(_, obj any) { c.onPod(obj) },
	}); err != nil {
		return nil, err
	}
	if _, err := c.secretInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { c.onSecret(obj, false) },
		DeleteFunc: func(obj any) { c.onSecret(obj, true) },
	}); err != nil {
		return nil, err
	}
	if _, err := c.bundleInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) { c.onBundle(obj) },
		DeleteFunc: c.onBundle,
	}); err != nil {
		return nil, err
	}
	if _, err := c.rootInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.onRoot(obj, false) },
		UpdateFunc: func(_, obj any) { c.onRoot(obj, false) },
		DeleteFunc: func(obj any) { c.onRoot(obj, true) },
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// keyMatchesKey replaces tls.key in the cache: whether the key matched
// the certificate, decided once when the Secret arrived.
const keyMatchesKey = "..linkerd-ca-key-matches"

func stripKey(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok || s.Data == nil {
		return obj, nil
	}
	if _, done := s.Data[keyMatchesKey]; done {
		// Informers may hand an object to the transform more than once.
		return obj, nil
	}
	out := *s
	match := "false"
	if pki.KeyMatches(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]) == nil {
		match = "true"
	}
	out.Data = map[string][]byte{corev1.TLSCertKey: s.Data[corev1.TLSCertKey], keyMatchesKey: []byte(match)}
	return &out, nil
}

// failureRateLimiter spaces retries of a failing owner from half a second
// up to five minutes, so a certificate that cannot be issued or does not
// pass its own check costs a few API writes an hour, not a hot loop.
func failureRateLimiter() workqueue.TypedRateLimiter[ownerKey] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[ownerKey](500*time.Millisecond, 5*time.Minute),
		&workqueue.TypedBucketRateLimiter[ownerKey]{Limiter: rate.NewLimiter(rate.Limit(50), 300)},
	)
}

func (c *Controller) onPod(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || !wantsTLS(pod, c.cfg.ControlNamespace) {
		return
	}
	c.queue.Add(podOwner(pod))
	c.queue.Add(ownerKey{Kind: bundleKind, Namespace: pod.Namespace})
}

func (c *Controller) onSecret(obj any, deleted bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	k, ok := secretOwner(s)
	if !ok {
		return
	}
	if deleted {
		c.writtenMu.Lock()
		delete(c.written, k)
		c.writtenMu.Unlock()
	}
	c.queue.Add(k)
}

func (c *Controller) onBundle(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if cm, ok := obj.(*corev1.ConfigMap); ok {
		c.queue.Add(ownerKey{Kind: bundleKind, Namespace: cm.Namespace})
	}
}

// Ready reports whether the caches have synced and the root can issue.
func (c *Controller) Ready() bool { return c.NotReadyReason() == "" }

// NotReadyReason says why the CA is not ready, "" when it is.
func (c *Controller) NotReadyReason() string {
	if c.state.Load() == nil {
		return "root not loaded"
	}
	if !c.synced.Load() {
		return "caches not synced"
	}
	if err := c.usable(); err != nil {
		return err.Error()
	}
	return ""
}

// Root is the loaded issuer, nil before Run has loaded it.
func (c *Controller) Root() *pki.Root {
	if st := c.state.Load(); st != nil {
		return st.issuer
	}
	return nil
}

// Handler serves /ready, /live and /metrics.
func (c *Controller) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if why := c.NotReadyReason(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/live", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "live") })
	mux.Handle("/metrics", promhttp.HandlerFor(c.metrics.registry, promhttp.HandlerOpts{}))
	return mux
}

// Serve runs the admin endpoints on l until ctx ends.
func (c *Controller) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ErrLostLease is returned by Run when another replica took the Lease:
// the process should exit and restart as a standby rather than carry on
// with state that may no longer be true.
var ErrLostLease = errors.New("lost the CA lease")

// Run loads the root, syncs caches, then competes for the Lease and
// reconciles while it holds it. It returns when ctx ends (nil), when the
// root cannot be loaded, or with ErrLostLease.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()

	st, err := c.loadRoot(ctx)
	if err != nil {
		return err
	}
	c.setState(st)
	c.log.Info("root loaded", "secret", c.cfg.ControlNamespace+"/"+contract.RootSecret,
		"subject", st.issuer.Cert.Subject.String(), "issuer", pki.Fingerprint(st.issuer.Cert),
		"intermediate", st.issuer.Intermediate(), "notAfter", st.issuer.NotAfter().UTC().Format(time.RFC3339))
	if err := c.usable(); err != nil {
		c.log.Error("not issuing", "err", err)
		c.events.Event(c.rootRef(), corev1.EventTypeWarning, "RootExpiring", err.Error())
	}
	c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.broadcaster.Shutdown()

	for _, f := range c.factories {
		f.Start(ctx.Done())
	}
	defer func() {
		for _, f := range c.factories {
			f.Shutdown()
		}
	}()
	if !cache.WaitForCacheSync(ctx.Done(), c.podInformer.HasSynced, c.secretInformer.HasSynced, c.bundleInformer.HasSynced, c.rootInformer.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("caches did not sync")
	}
	c.synced.Store(true)
	c.metrics.ready.Set(1)
	c.log.Info("caches synced", "pods", len(c.podInformer.GetStore().ListKeys()), "secrets", len(c.secretInformer.GetStore().ListKeys()))

	var lost atomic.Bool
	lec := leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: c.cfg.LeaseName, Namespace: c.cfg.ControlNamespace},
			Client:     c.client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: c.cfg.Identity},
		},
		LeaseDuration:   c.cfg.LeaseDuration,
		RenewDeadline:   c.cfg.RenewDeadline,
		RetryPeriod:     c.cfg.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            c.cfg.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				c.log.Info("leading: issuing certificates", "identity", c.cfg.Identity)
				c.metrics.leader.Set(1)
				c.runWorkers(lctx)
			},
			OnStoppedLeading: func() {
				c.metrics.leader.Set(0)
				if ctx.Err() == nil {
					lost.Store(true)
					c.log.Error("lost the CA lease", "identity", c.cfg.Identity)
				}
			},
			OnNewLeader: func(id string) {
				if id != c.cfg.Identity {
					c.log.Info("standing by", "leader", id)
				}
			},
		},
	}
	le, err := leaderelection.NewLeaderElector(lec)
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(ctx)
	if lost.Load() {
		return ErrLostLease
	}
	return nil
}

func (c *Controller) runWorkers(ctx context.Context) {
	// Events that arrived while standing by are already queued; a new
	// leader re-examines everything in case the old one died mid-burst.
	c.queue.Add(ownerKey{Kind: anchorsKind})
	for _, obj := range c.podInformer.GetStore().List() {
		c.onPod(obj)
	}
	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Go(func() {
			for c.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
}

// renewSlack wakes a renewal just after its time, so the check at wake-up
// already sees the certificate as due even if clocks round differently.
const renewSlack = 100 * time.Millisecond

// maxRetries bounds the rate-limited retries of one key; a later event
// for the same owner starts again.
const maxRetries = 12

func (c *Controller) processNext(ctx context.Context) bool {
	k, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(k)
	var err error
	switch k.Kind {
	case bundleKind:
		err = c.syncBundle(ctx, k.Namespace)
	case anchorsKind:
		err = c.syncAnchors(ctx)
	default:
		err = c.syncOwner(ctx, k)
	}
	switch {
	case err == nil:
		c.queue.Forget(k)
	case ctx.Err() != nil:
	case c.queue.NumRequeues(k) < maxRetries:
		c.metrics.errors.WithLabelValues(errKind(k)).Inc()
		c.log.Warn("reconcile failed, retrying", "key", k.String(), "err", err, "retries", c.queue.NumRequeues(k))
		c.queue.AddRateLimited(k)
	default:
		c.metrics.errors.WithLabelValues(errKind(k)).Inc()
		c.log.Error("reconcile failed, giving up until the next event", "key", k.String(), "err", err)
		c.queue.Forget(k)
	}
	return true
}

func errKind(k ownerKey) string {
	switch k.Kind {
	case bundleKind, anchorsKind:
		return k.Kind
	}
	return "secret"
}

// currentSecret is the freshest copy of an owner's Secret this replica
// knows: the informer's, unless this replica wrote a newer one moments ago.
func (c *Controller) currentSecret(k ownerKey, name string) *corev1.Secret {
	cached, err := c.secrets.Secrets(k.Namespace).Get(name)
	if err != nil {
		cached = nil
	}
	c.writtenMu.Lock()
	defer c.writtenMu.Unlock()
	w, ok := c.written[k]
	switch {
	case !ok:
		return cached
	case c.cfg.Now().Sub(w.at) > writtenTTL:
		delete(c.written, k)
		return cached
	case cached == nil && w.prevRV == "":
		return w.secret // created moments ago, not delivered yet
	case cached != nil && cached.ResourceVersion == w.prevRV:
		return w.secret // the informer still shows what the write replaced
	default:
		// The informer has caught up, or someone changed the Secret after
		// the write: either way its copy is the truth now.
		delete(c.written, k)
		return cached
	}
}

func (c *Controller) syncOwner(ctx context.Context, k ownerKey) error {
	pods, err := c.podInformer.GetIndexer().ByIndex(ownerIndex, k.String())
	if err != nil {
		return err
	}
	if len(pods) == 0 {
		// No TLS pod needs this owner any more; garbage collection removes
		// the Secret with its owner, so there is nothing to do.
		c.metrics.forgetLeaf(k)
		return nil
	}
	st := c.state.Load()
	root := st.issuer
	name := contract.SecretName(k.Name, k.Kind)
	identity := contract.IdentityIn(k.Name, k.Kind, k.Namespace, c.cfg.ControlNamespace, c.cfg.ClusterDomain)
	now := c.cfg.Now()

	renewal, owned := false, false
	prevRV := ""
	if s := c.currentSecret(k, name); s != nil {
		prevRV = s.ResourceVersion
		owned = c.owns(s)
		leaf, renewAt, err := root.CheckLeaf(s.Data[corev1.TLSCertKey], identity, now)
		if err == nil && string(s.Data[keyMatchesKey]) != "true" {
			err = errors.New("tls.key does not match tls.crt")
		}
		switch {
		case err == nil && st.err == nil:
			c.metrics.leafExpiry.WithLabelValues(k.Namespace, k.Kind, k.Name).Set(float64(leaf.NotAfter.Unix()))
			c.queue.AddAfter(k, renewAt.Sub(now)+renewSlack)
			return nil
		case err == nil:
			// Still valid, but the root it chains to is gone: nothing to
			// do until it comes back.
			return nil
		case errors.Is(err, pki.ErrRenewalDue):
			renewal = true
			c.log.Info("renewing certificate", "secret", k.Namespace+"/"+name)
		default:
			c.log.Info("replacing certificate", "secret", k.Namespace+"/"+name, "reason", err.Error())
		}
	}

	ref, objRef, err := c.ownerRef(ctx, k, pods)
	if err != nil {
		if apierrors.IsNotFound(err) {
			c.log.Info("owner is gone; not issuing", "owner", k.String())
			return nil
		}
		return fmt.Errorf("get owner %s: %w", k, err)
	}
	// A label is a claim anyone who can create a pod can make: the
	// identity goes only to an owner whose own pods ask for it.
	if ok, err := c.claimHeld(ctx, k, objRef.UID, pods); err != nil {
		return fmt.Errorf("verify the controllers of %s's pods: %w", k, err)
	} else if !ok {
		c.metrics.refused.Inc()
		for _, obj := range pods {
			if p, isPod := obj.(*corev1.Pod); isPod {
				c.events.Eventf(p, corev1.EventTypeWarning, "IdentityRefused",
					"not issuing %s for %s: this pod carries the label %s=%s, but its controllers do not lead to %s %s",
					name, identity, contract.KindLabel(k.Kind), k.Name, ownerKinds[k.Kind].kind, k.Name)
			}
		}
		c.log.Warn("identity claimed by label only; not issuing", "owner", k.String(), "pods", len(pods))
		return nil
	}
	if err := c.usable(); err != nil {
		c.metrics.refused.Inc()
		c.events.Event(objRef, corev1.EventTypeWarning, "IssueRefused", "not issuing "+name+": "+err.Error())
		if errors.Is(err, pki.ErrIssuerExpiring) {
			c.events.Event(c.rootRef(), corev1.EventTypeWarning, "RootExpiring", err.Error())
		}
		return err
	}

	start := time.Now()
	leaf, err := root.Issue(identity, c.cfg.LeafLifetime, now)
	if err != nil {
		c.events.Event(objRef, corev1.EventTypeWarning, "IssueFailed", err.Error())
		return err
	}
	// What is written must pass the very check that decides whether to
	// re-issue; if it does not, writing it would only start a loop.
	if _, err := root.Check(leaf.CertPEM, leaf.KeyPEM, identity, now); err != nil {
		err = fmt.Errorf("certificate just issued for %s fails its own check (%w): not writing it; check the root's constraints and lifetime", identity, err)
		c.metrics.refused.Inc()
		c.events.Event(objRef, corev1.EventTypeWarning, "IssueFailed", err.Error())
		return err
	}
	apply := corev1ac.Secret(name, k.Namespace).
		WithType(corev1.SecretTypeTLS).
		WithLabels(map[string]string{contract.ControlPlaneNSLabel: c.cfg.ControlNamespace, contract.OwnerKindLabel: k.Kind}).
		WithAnnotations(map[string]string{
			contract.IdentityAnnotation: identity,
			contract.NotAfterAnnotation: leaf.NotAfter.UTC().Format(time.RFC3339),
			contract.IssuerAnnotation:   pki.Fingerprint(root.Cert),
		}).
		WithOwnerReferences(ref).
		WithData(map[string][]byte{corev1.TLSCertKey: leaf.CertPEM, corev1.TLSPrivateKeyKey: leaf.KeyPEM})
	// A Secret the CA wrote before is repaired even if someone has since
	// written into it (Force). Any other Secret of that name is not the
	// CA's: without Force the conflict refuses it instead of clobbering it.
	written, err := c.client.CoreV1().Secrets(k.Namespace).Apply(ctx, apply, metav1.ApplyOptions{FieldManager: c.fieldManager, Force: owned})
	if err != nil {
		// The apply error quotes field paths, never the data being applied.
		err = fmt.Errorf("apply Secret %s/%s: %w", k.Namespace, name, err)
		c.events.Event(objRef, corev1.EventTypeWarning, "IssueFailed", err.Error())
		return err
	}
	c.metrics.latency.Observe(time.Since(start).Seconds())
	c.metrics.issued.Inc()
	c.metrics.leafExpiry.WithLabelValues(k.Namespace, k.Kind, k.Name).Set(float64(leaf.NotAfter.Unix()))
	reason, verb := "Issued", "issued"
	if renewal {
		c.metrics.renewals.Inc()
		reason, verb = "Renewed", "renewed"
	}
	stripped, _ := stripKey(written)
	c.writtenMu.Lock()
	c.written[k] = writtenSecret{secret: stripped.(*corev1.Secret), prevRV: prevRV, at: now}
	c.writtenMu.Unlock()
	c.log.Info(verb+" certificate", "secret", k.Namespace+"/"+name, "identity", identity,
		"serial", leaf.Serial.Text(16), "notAfter", leaf.NotAfter.UTC().Format(time.RFC3339))
	c.events.Eventf(objRef, corev1.EventTypeNormal, reason, "%s certificate for %s in Secret %s, serial %s, valid until %s",
		verb, identity, name, leaf.Serial.Text(16), leaf.NotAfter.UTC().Format(time.RFC3339))
	c.queue.AddAfter(k, leaf.RenewAt().Sub(now)+renewSlack)
	return nil
}

// owns says whether this control plane's CA wrote s.
func (c *Controller) owns(obj metav1.Object) bool {
	if managedBy(obj, c.fieldManager) {
		return true
	}
	return managedBy(obj, legacyFieldManager) && obj.GetLabels()[contract.ControlPlaneNSLabel] == c.cfg.ControlNamespace
}

func (c *Controller) rootRef() *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Secret", APIVersion: "v1", Namespace: c.cfg.ControlNamespace, Name: contract.RootSecret}
}

func managedBy(obj metav1.Object, manager string) bool {
	for _, mf := range obj.GetManagedFields() {
		if mf.Manager == manager {
			return true
		}
	}
	return false
}

// ownerKinds maps each workload kind a Secret can belong to (a bare pod
// aside) to its API version, Kind and a GET of the object.
var ownerKinds = map[string]struct {
	apiVersion, kind string
	get              func(ctx context.Context, c kubernetes.Interface, ns, name string) (metav1.Object, error)
}{
	contract.KindDeployment: {"apps/v1", "Deployment", func(ctx context.Context, c kubernetes.Interface, ns, name string) (metav1.Object, error) {
		return c.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	}},
	contract.KindStatefulSet: {"apps/v1", "StatefulSet", func(ctx context.Context, c kubernetes.Interface, ns, name string) (metav1.Object, error) {
		return c.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	}},
	contract.KindDaemonSet: {"apps/v1", "DaemonSet", func(ctx context.Context, c kubernetes.Interface, ns, name string) (metav1.Object, error) {
		return c.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
	}},
	contract.KindReplicaSet: {"apps/v1", "ReplicaSet", func(ctx context.Context, c kubernetes.Interface, ns, name string) (metav1.Object, error) {
		return c.AppsV1().ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{})
	}},
	contract.KindReplicationController: {"v1", "ReplicationController", func(ctx context.Context, c kubernetes.Interface, ns, name string) (metav1.Object, error) {
		return c.CoreV1().ReplicationControllers(ns).Get(ctx, name, metav1.GetOptions{})
	}},
	contract.KindJob: {"batch/v1", "Job", func(ctx context.Context, c kubernetes.Interface, ns, name string) (metav1.Object, error) {
		return c.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
	}},
	contract.KindCronJob: {"batch/v1", "CronJob", func(ctx context.Context, c kubernetes.Interface, ns, name string) (metav1.Object, error) {
		return c.BatchV1().CronJobs(ns).Get(ctx, name, metav1.GetOptions{})
	}},
}

// ownerRef points the Secret at its owner so the garbage collector removes
// it with the owner. A bare pod's UID is in the cache; other owners cost
// one GET, paid only when a certificate is actually issued.
func (c *Controller) ownerRef(ctx context.Context, k ownerKey, pods []any) (*metav1ac.OwnerReferenceApplyConfiguration, *corev1.ObjectReference, error) {
	if k.Kind == contract.KindPod {
		for _, obj := range pods {
			if p, ok := obj.(*corev1.Pod); ok && p.Name == k.Name {
				return metav1ac.OwnerReference().WithAPIVersion("v1").WithKind("Pod").WithName(k.Name).WithUID(p.UID),
					&corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: k.Namespace, Name: k.Name, UID: p.UID}, nil
			}
		}
		return nil, nil, apierrors.NewNotFound(corev1.Resource("pods"), k.Name)
	}
	owner, ok := ownerKinds[k.Kind]
	if !ok {
		return nil, nil, apierrors.NewNotFound(corev1.Resource(k.Kind), k.Name)
	}
	o, err := owner.get(ctx, c.client, k.Namespace, k.Name)
	if err != nil {
		return nil, nil, err
	}
	return metav1ac.OwnerReference().WithAPIVersion(owner.apiVersion).WithKind(owner.kind).WithName(k.Name).WithUID(o.GetUID()),
		&corev1.ObjectReference{APIVersion: owner.apiVersion, Kind: owner.kind, Namespace: k.Namespace, Name: k.Name, UID: o.GetUID()}, nil
}

// claimHeld says whether at least one of pods is really controlled by
// owner k (whose UID is uid): its controller chain (pod → ReplicaSet →
// Deployment, pod → Job → CronJob, or the StatefulSet, DaemonSet,
// ReplicationController, ReplicaSet or Job itself) leads to it. A bare
// pod's identity is its own name.
func (c *Controller) claimHeld(ctx context.Context, k ownerKey, uid types.UID, pods []any) (bool, error) {
	for _, obj := range pods {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			continue
		}
		if k.Kind == contract.KindPod {
			if p.Name == k.Name {
				return true, nil
			}
			continue
		}
		want := ownerKinds[k.Kind].kind
		ref := metav1.GetControllerOf(p)
		if ref == nil {
			continue
		}
		if ref.Kind == want && ref.Name == k.Name && ref.UID == uid {
			return true, nil
		}
		var parent metav1.Object
		var err error
		switch {
		case k.Kind == contract.KindDeployment && ref.Kind == "ReplicaSet":
			parent, err = c.client.AppsV1().ReplicaSets(p.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		case k.Kind == contract.KindCronJob && ref.Kind == "Job":
			parent, err = c.client.BatchV1().Jobs(p.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		default:
			continue
		}
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return false, err
		}
		if parent.GetUID() != ref.UID {
			continue
		}
		if gp := metav1.GetControllerOfNoCopy(parent); gp != nil && gp.Kind == want && gp.Name == k.Name && gp.UID == uid {
			return true, nil
		}
	}
	return false, nil
}

// syncBundle keeps the namespace's trust bundle equal to what the root
// Secret says bundles hold. A bundle is the CA's output: in a namespace
// with this control plane's TLS pods it is rewritten whoever wrote it
// last (its field manager proves nothing: anyone can apply under any
// name), unless it names another control plane, which is a conflict to
// report, not to settle by force. Elsewhere the CA leaves it alone and
// never reads it.
func (c *Controller) syncBundle(ctx context.Context, namespace string) error {
	st := c.state.Load()
	if st.err != nil {
		// Keep what bundles hold: it still verifies every existing leaf.
		return nil
	}
	ns := c.cfg.ControlNamespace
	if !c.namespaceHasTLSPods(namespace) {
		return nil
	}
	ref := func(cm *corev1.ConfigMap) *corev1.ObjectReference {
		return &corev1.ObjectReference{Kind: "ConfigMap", APIVersion: "v1", Namespace: namespace, Name: contract.BundleConfigMap, UID: cm.UID}
	}
	cm, err := c.bundles.ConfigMaps(namespace).Get(contract.BundleConfigMap)
	if err == nil {
		if other := cm.Labels[contract.BundleLabel]; other != "" && other != ns {
			err := fmt.Errorf("ConfigMap %s/%s belongs to the control plane in namespace %q: not overwriting it; a namespace can hold TLS pods of one control plane only",
				namespace, contract.BundleConfigMap, other)
			c.events.Event(ref(cm), corev1.EventTypeWarning, "BundleConflict", err.Error())
			return err
		}
		if cm.Data[contract.BundleKey] == st.bundle && cm.Labels[contract.BundleLabel] == ns && cm.Labels[contract.ControlPlaneNSLabel] == ns {
			return nil
		}
		if certs, perr := pki.ParseCerts([]byte(cm.Data[contract.BundleKey])); perr == nil {
			if foreign := pki.Foreign(certs, st.anchors); len(foreign) > 0 {
				msg := fmt.Sprintf("ConfigMap %s/%s held %d root(s) this control plane does not trust (%s): overwriting it with the control plane's anchors",
					namespace, contract.BundleConfigMap, len(foreign), subjects(foreign))
				c.log.Warn("foreign anchors in a trust bundle", "configmap", namespace+"/"+contract.BundleConfigMap, "foreign", subjects(foreign))
				c.events.Event(ref(cm), corev1.EventTypeWarning, "ForeignAnchors", msg)
			}
		}
	}
	apply := corev1ac.ConfigMap(contract.BundleConfigMap, namespace).
		WithLabels(map[string]string{contract.ControlPlaneNSLabel: ns, contract.BundleLabel: ns}).
		WithData(map[string]string{contract.BundleKey: st.bundle})
	if _, err := c.client.CoreV1().ConfigMaps(namespace).Apply(ctx, apply, metav1.ApplyOptions{FieldManager: c.fieldManager, Force: true}); err != nil {
		return fmt.Errorf("apply ConfigMap %s/%s: %w", namespace, contract.BundleConfigMap, err)
	}
	c.log.Info("wrote trust bundle", "configmap", namespace+"/"+contract.BundleConfigMap, "roots", strings.Count(st.bundle, "BEGIN CERTIFICATE"))
	return nil
}

func (c *Controller) namespaceHasTLSPods(namespace string) bool {
	pods, err := c.pods.Pods(namespace).List(labels.Everything())
	if err != nil {
		return false
	}
	for _, p := range pods {
		if wantsTLS(p, c.cfg.ControlNamespace) {
			return true
		}
	}
	return false
}
