package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/contract"
)

// rootState is what every replica derives from the root Secret. All of
// it comes from the API, so replicas that have seen the same
// resourceVersion agree on it.
type rootState struct {
	issuer *pki.Root
	// bundle is exactly what every trust bundle must hold: the issuer's
	// anchors, or during a rotation the old and the new roots.
	bundle string
	// anchors is bundle parsed: the roots the mesh trusts now.
	anchors []*x509.Certificate
	rv      string
	// err, when set, stops issuing: the root Secret was deleted or became
	// unusable while the CA ran. issuer is then the last good one, kept
	// only so /ready and the logs can say what was lost.
	err error
}

// RotateCommand is what the CA tells people to run instead of deleting
// the root.
const RotateCommand = "linkerd ca rotate"

// errRootMissing is the refusal to generate a root while the control
// plane's record says bundles still trust another one: that new root would
// break every leaf at once.
func errRootMissing(ns string, rec *anchorRecord) error {
	return fmt.Errorf("root Secret %s/%s is missing, but %s records %d root(s) the trust bundles still hold (%s): "+
		"a new root would break every workload certificate at once; refusing to generate one. "+
		"Restore the Secret from a backup, or run `%s`, which makes a new root that the bundles trust beside the recorded ones before moving leaves to it",
		ns, contract.RootSecret, rec.source, len(rec.certs), subjects(rec.certs), RotateCommand)
}

func subjects(certs []*x509.Certificate) string {
	var out []string
	for _, c := range certs {
		out = append(out, fmt.Sprintf("%q sha256:%s", c.Subject.String(), pki.Fingerprint(c)[:16]))
	}
	return strings.Join(out, ", ")
}

// parseRoot turns a root Secret into a rootState, refusing anything the
// CA could not issue correctly from.
func parseRoot(s *corev1.Secret, controlNS, clusterDomain string, now time.Time) (*rootState, error) {
	issuer, err := pki.LoadIssuer(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey], s.Data[contract.RootAnchorsKey], pki.ProbeIdentityIn(controlNS, clusterDomain), now)
	if err != nil {
		return nil, err
	}
	st := &rootState{issuer: issuer, bundle: string(issuer.AnchorsPEM), anchors: issuer.Anchors, rv: s.ResourceVersion}
	if b := s.Data[contract.RootBundleKey]; len(bytes.TrimSpace(b)) > 0 {
		certs, err := pki.ParseCerts(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", contract.RootBundleKey, err)
		}
		for _, a := range issuer.Anchors {
			found := false
			for _, c := range certs {
				found = found || c.Equal(a)
			}
			if !found {
				// Bundles without the issuer's root would reject every
				// leaf it signs.
				return nil, fmt.Errorf("%s does not hold the issuer's root %q", contract.RootBundleKey, a.Subject.String())
			}
		}
		st.bundle = string(pki.EncodeCerts(certs))
		st.anchors = certs
	}
	return st, nil
}

// loadRoot reads the root Secret and creates it only when absent and no
// bundle still trusts an earlier root. A Secret that exists but does not
// parse stops the CA: overwriting it would silently invalidate every
// certificate issued from it.
func (c *Controller) loadRoot(ctx context.Context) (*rootState, error) {
	ns, name := c.cfg.ControlNamespace, contract.RootSecret
	var st *rootState
	var fatal error
	backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 1 << 30, Cap: 10 * time.Second}
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		s, err := c.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			st, fatal = parseRoot(s, ns, c.cfg.ClusterDomain, c.cfg.Now())
			if fatal != nil {
				fatal = fmt.Errorf("root Secret %s/%s is unusable: %w; refusing to start and leaving it untouched (repair it, or replace it with `%s`)", ns, name, fatal, RotateCommand)
			}
			return true, nil
		case apierrors.IsNotFound(err):
			// Only the control-plane namespace speaks for the mesh's
			// trust: bundles elsewhere are the CA's outputs, and anyone
			// who can create a ConfigMap can write one.
			rec, err := readAnchorRecord(ctx, c.client, ns)
			if err != nil {
				c.log.Warn("cannot read the anchor record, retrying", "err", err)
				return false, nil
			}
			if rec != nil {
				fatal = errRootMissing(ns, rec)
				return true, nil
			}
			// A root constrained to the mesh's identities, and an issuer
			// under it: only the issuer's key is kept. The root's key is
			// dropped here, so no Secret, backup or stolen token holds the
			// key every bundle trusts; replacing the issuer is a rotation
			// to a new root (`linkerd ca rotate`).
			r, keyPEM, _, gerr := pki.NewRootAndIssuer(contract.RootCommonNameIn(ns, c.cfg.ClusterDomain), contract.IdentityDomainIn(ns, c.cfg.ClusterDomain), c.cfg.RootLifetime, pki.ProbeIdentityIn(ns, c.cfg.ClusterDomain), c.cfg.Now())
			if gerr != nil {
				fatal = gerr
				return true, nil
			}
			created, err := c.client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{contract.ControlPlaneNSLabel: ns}},
				Type:       corev1.SecretTypeTLS,
				Data:       map[string][]byte{corev1.TLSCertKey: r.CertPEM, corev1.TLSPrivateKeyKey: keyPEM, contract.RootAnchorsKey: r.AnchorsPEM},
			}, metav1.CreateOptions{FieldManager: c.fieldManager})
			if apierrors.IsAlreadyExists(err) {
				// Another replica won the race; load what it wrote.
				return false, nil
			}
			if err != nil {
				c.log.Warn("cannot create root Secret, retrying", "secret", ns+"/"+name, "err", err)
				return false, nil
			}
			c.log.Info("generated a new root and issuer; the root's key was not kept", "secret", ns+"/"+name, "root", pki.Fingerprint(r.Anchors[0]))
			if err := writeAnchorRecord(ctx, c.client, ns, c.fieldManager, string(r.AnchorsPEM)); err != nil {
				// The leader writes it again once it runs.
				c.log.Warn("cannot record the new root's anchors yet", "err", err)
			}
			st = &rootState{issuer: r, bundle: string(r.AnchorsPEM), anchors: r.Anchors, rv: created.ResourceVersion}
			return true, nil
		case apierrors.IsForbidden(err):
			fatal = fmt.Errorf("cannot read root Secret %s/%s: %w (check the CA's RBAC)", ns, name, err)
			return true, nil
		default:
			c.log.Warn("cannot read root Secret, retrying", "secret", ns+"/"+name, "err", err)
			return false, nil
		}
	})
	if fatal != nil {
		return nil, fatal
	}
	if err != nil {
		return nil, fmt.Errorf("loading root Secret %s/%s: %w", ns, name, err)
	}
	return st, nil
}

// anchorRecord is what the control-plane namespace says the trust bundles
// hold.
type anchorRecord struct {
	certs  []*x509.Certificate
	source string // the object it was read from, for messages
}

// readAnchorRecord reads the roots the mesh's bundles hold from the
// control-plane namespace alone: the anchor record the CA keeps there or,
// on a control plane older than the record, its own namespace's bundle.
// nil means neither holds a certificate: no workload can trust a root yet.
func readAnchorRecord(ctx context.Context, client kubernetes.Interface, ns string) (*anchorRecord, error) {
	for _, name := range []string{contract.AnchorsConfigMap, contract.BundleConfigMap} {
		cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read ConfigMap %s/%s: %w", ns, name, err)
		}
		pem := cm.Data[contract.BundleKey]
		if len(bytes.TrimSpace([]byte(pem))) == 0 {
			continue
		}
		certs, err := pki.ParseCerts([]byte(pem))
		if err != nil {
			return nil, fmt.Errorf("ConfigMap %s/%s: %s: %w", ns, name, contract.BundleKey, err)
		}
		return &anchorRecord{certs: certs, source: "ConfigMap " + ns + "/" + name}, nil
	}
	return nil, nil
}

// writeAnchorRecord records bundle as the roots the trust bundles hold.
// The record lives in the control-plane namespace, where it is the CA's by
// where it is, not by who last applied to it.
func writeAnchorRecord(ctx context.Context, client kubernetes.Interface, ns, fieldManager, bundle string) error {
	apply := corev1ac.ConfigMap(contract.AnchorsConfigMap, ns).
		WithLabels(map[string]string{contract.ControlPlaneNSLabel: ns}).
		WithData(map[string]string{contract.BundleKey: bundle})
	_, err := client.CoreV1().ConfigMaps(ns).Apply(ctx, apply, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	if err != nil {
		return fmt.Errorf("apply ConfigMap %s/%s: %w", ns, contract.AnchorsConfigMap, err)
	}
	return nil
}

// syncAnchors keeps the anchor record equal to what the bundles hold now.
func (c *Controller) syncAnchors(ctx context.Context) error {
	st := c.state.Load()
	if st.err != nil {
		// The root is gone or broken: the record is what recovery needs.
		return nil
	}
	ns := c.cfg.ControlNamespace
	cm, err := c.client.CoreV1().ConfigMaps(ns).Get(ctx, contract.AnchorsConfigMap, metav1.GetOptions{})
	if err == nil && cm.Data[contract.BundleKey] == st.bundle {
		return nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err := writeAnchorRecord(ctx, c.client, ns, c.fieldManager, st.bundle); err != nil {
		return err
	}
	c.log.Info("recorded the trust anchors", "configmap", ns+"/"+contract.AnchorsConfigMap, "roots", strings.Count(st.bundle, "BEGIN CERTIFICATE"))
	return nil
}

// onRoot follows the root Secret at runtime, on every replica.
func (c *Controller) onRoot(obj any, deleted bool) {
	cur := c.state.Load()
	if deleted {
		err := fmt.Errorf("root Secret %s/%s was deleted: not issuing, and not generating a new root that would break every workload certificate; restore it, or run `%s`",
			c.cfg.ControlNamespace, contract.RootSecret, RotateCommand)
		c.log.Error("root lost", "err", err)
		c.setState(&rootState{issuer: cur.issuer, bundle: cur.bundle, anchors: cur.anchors, err: err})
		return
	}
	s, ok := obj.(*corev1.Secret)
	if !ok || s.Name != contract.RootSecret || s.ResourceVersion == cur.rv {
		return
	}
	next, err := parseRoot(s, c.cfg.ControlNamespace, c.cfg.ClusterDomain, c.cfg.Now())
	if err != nil {
		err = fmt.Errorf("root Secret %s/%s changed and is unusable: %w; not issuing until it is repaired", c.cfg.ControlNamespace, contract.RootSecret, err)
		c.log.Error("root unusable", "err", err)
		c.setState(&rootState{issuer: cur.issuer, bundle: cur.bundle, anchors: cur.anchors, rv: s.ResourceVersion, err: err})
		return
	}
	changed := cur.err != nil || !next.issuer.Cert.Equal(cur.issuer.Cert) || next.bundle != cur.bundle
	c.setState(next)
	c.queue.Add(ownerKey{Kind: anchorsKind})
	if !changed {
		return
	}
	c.log.Info("root changed", "subject", next.issuer.Cert.Subject.String(), "issuer", pki.Fingerprint(next.issuer.Cert),
		"notAfter", next.issuer.NotAfter().UTC().Format(time.RFC3339), "rotation", s.Annotations[contract.RotationAnnotation])
	c.enqueueAll()
}

func (c *Controller) setState(st *rootState) {
	c.state.Store(st)
	if st.issuer != nil {
		c.metrics.rootExpiry.Set(float64(st.issuer.NotAfter().Unix()))
	}
}

// enqueueAll re-examines every owner and bundle, after the root changed.
func (c *Controller) enqueueAll() {
	for _, obj := range c.podInformer.GetStore().List() {
		c.onPod(obj)
	}
	cms, _ := c.bundles.List(labels.Everything())
	for _, cm := range cms {
		c.queue.Add(ownerKey{Kind: bundleKind, Namespace: cm.Namespace})
	}
}

// usable says why the CA cannot issue now, or nil.
func (c *Controller) usable() error {
	st := c.state.Load()
	if st == nil {
		return errors.New("root not loaded")
	}
	if st.err != nil {
		return st.err
	}
	return st.issuer.CanIssue(c.cfg.LeafLifetime, c.cfg.Now())
}
