package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/contract"
)

// RotateOptions drive a root rotation.
type RotateOptions struct {
	ControlNamespace string
	// ClusterDomain ends the identities a new root is constrained to; ""
	// is cluster.local. It must be the CA's --cluster-domain.
	ClusterDomain string
	// NextCertPEM and NextKeyPEM are the next issuer, NextAnchorsPEM its
	// roots when it is an intermediate. Empty: a new root is generated.
	NextCertPEM, NextKeyPEM, NextAnchorsPEM []byte
	// RootLifetime is the lifetime of a generated root.
	RootLifetime time.Duration
	// SaveRootKey, when set, receives the PEM key of a generated root
	// before anything is written; otherwise that key is dropped and only
	// the intermediate issuer under it goes into the cluster.
	SaveRootKey func(keyPEM []byte) error
	// PropagationDelay is waited once the bundles, then the leaves, are
	// all written, for every kubelet to put them in the pods' files. The
	// kubelet takes up to its sync period plus its cache TTL (a minute
	// each by default).
	PropagationDelay time.Duration
	// PollInterval is how often progress is read back; default 500ms.
	PollInterval time.Duration
	// Progress, when set, hears one line per step.
	Progress func(step, message string)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// RotateResult says what a rotation did.
type RotateResult struct {
	OldIssuer, NewIssuer string // fingerprints
	Bundles, Secrets     int
	// LostRoot is set when the root Secret was missing: leaves then moved
	// to the new root before bundles were known to have it.
	LostRoot bool
}

// DefaultPropagationDelay covers a default kubelet's sync period and
// Secret/ConfigMap cache TTL with room to spare.
const DefaultPropagationDelay = 150 * time.Second

// Rotate replaces the root without breaking a handshake, in three steps
// recorded on the root Secret so that a rotation interrupted anywhere
// resumes where it stopped:
//
//  1. add-anchors: the next root joins the bundles beside the current
//     one; leaves stay as they are. Once every bundle holds both, and the
//     kubelets have had PropagationDelay to deliver them, every pod
//     trusts both roots.
//  2. reissue: the next issuer becomes the issuer; the CA re-issues every
//     leaf from it. Old and new leaves verify against every bundle. Once
//     every leaf has moved, and PropagationDelay has passed again, no pod
//     presents an old leaf.
//  3. retire: the old root leaves the bundles.
func Rotate(ctx context.Context, client kubernetes.Interface, o RotateOptions) (*RotateResult, error) {
	if o.ControlNamespace == "" {
		o.ControlNamespace = "linkerd"
	}
	if o.RootLifetime == 0 {
		o.RootLifetime = pki.DefaultRootLifetime
	}
	if o.PollInterval == 0 {
		o.PollInterval = 500 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Progress == nil {
		o.Progress = func(string, string) {}
	}
	if (len(o.NextCertPEM) == 0) != (len(o.NextKeyPEM) == 0) {
		return nil, errors.New("the next root's certificate and key go together: give both or neither")
	}
	r := &rotation{client: client, o: o, ns: o.ControlNamespace, res: &RotateResult{}}
	return r.res, r.run(ctx)
}

type rotation struct {
	client kubernetes.Interface
	o      RotateOptions
	ns     string
	res    *RotateResult
}

func (r *rotation) secrets() interface {
	Get(context.Context, string, metav1.GetOptions) (*corev1.Secret, error)
	Update(context.Context, *corev1.Secret, metav1.UpdateOptions) (*corev1.Secret, error)
	Create(context.Context, *corev1.Secret, metav1.CreateOptions) (*corev1.Secret, error)
} {
	return r.client.CoreV1().Secrets(r.ns)
}

func (r *rotation) run(ctx context.Context) error {
	s, err := r.secrets().Get(ctx, contract.RootSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if s, err = r.replaceLostRoot(ctx); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("read root Secret %s/%s: %w", r.ns, contract.RootSecret, err)
	}
	for {
		phase := s.Annotations[contract.RotationAnnotation]
		cur, err := parseRoot(s, r.ns, r.o.ClusterDomain, r.o.Now())
		if err != nil {
			return fmt.Errorf("root Secret %s/%s is unusable: %w; a rotation needs a working root to overlap with", r.ns, contract.RootSecret, err)
		}
		if r.res.OldIssuer == "" {
			r.res.OldIssuer = pki.Fingerprint(cur.issuer.Cert)
		}
		switch phase {
		case "":
			if r.res.NewIssuer != "" {
				return nil // retired: done
			}
			s, err = r.addAnchors(ctx, s, cur)
		case contract.RotationAddAnchors:
			s, err = r.promote(ctx, s, cur)
		case contract.RotationReissue:
			s, err = r.retire(ctx, s, cur)
		case contract.RotationRetire:
			s, err = r.finish(ctx, s, cur)
		default:
			return fmt.Errorf("root Secret %s/%s has an unknown %s %q", r.ns, contract.RootSecret, contract.RotationAnnotation, phase)
		}
		if err != nil {
			return err
		}
	}
}

// nextIssuer is the issuer the rotation moves to.
func (r *rotation) nextIssuer() (*pki.Root, []byte, error) {
	if len(r.o.NextCertPEM) > 0 {
		next, err := pki.LoadIssuer(r.o.NextCertPEM, r.o.NextKeyPEM, r.o.NextAnchorsPEM, pki.ProbeIdentityIn(r.ns, r.o.ClusterDomain), r.o.Now())
		if err != nil {
			return nil, nil, fmt.Errorf("next root: %w", err)
		}
		return next, r.o.NextKeyPEM, nil
	}
	issuer, keyPEM, rootKeyPEM, err := pki.NewRootAndIssuer(contract.RootCommonNameIn(r.ns, r.o.ClusterDomain), contract.IdentityDomainIn(r.ns, r.o.ClusterDomain), r.o.RootLifetime, pki.ProbeIdentityIn(r.ns, r.o.ClusterDomain), r.o.Now())
	if err != nil {
		return nil, nil, err
	}
	if r.o.SaveRootKey != nil {
		if err := r.o.SaveRootKey(rootKeyPEM); err != nil {
			return nil, nil, fmt.Errorf("keep the new root's key: %w", err)
		}
	}
	return issuer, keyPEM, nil
}

func union(pems ...string) (string, error) {
	var out []*x509.Certificate
	for _, p := range pems {
		if len(bytes.TrimSpace([]byte(p))) == 0 {
			continue
		}
		certs, err := pki.ParseCerts([]byte(p))
		if err != nil {
			return "", err
		}
	next:
		for _, c := range certs {
			for _, have := range out {
				if have.Equal(c) {
					continue next
				}
			}
			out = append(out, c)
		}
	}
	return string(pki.EncodeCerts(out)), nil
}

func (r *rotation) update(ctx context.Context, s *corev1.Secret, step string) (*corev1.Secret, error) {
	out, err := r.secrets().Update(ctx, s, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		return nil, fmt.Errorf("root Secret %s/%s changed while rotating (another rotation?): run the command again to resume", r.ns, contract.RootSecret)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: update root Secret %s/%s: %w", step, r.ns, contract.RootSecret, err)
	}
	return out, nil
}

func (r *rotation) addAnchors(ctx context.Context, s *corev1.Secret, cur *rootState) (*corev1.Secret, error) {
	next, nextKey, err := r.nextIssuer()
	if err != nil {
		return nil, err
	}
	if next.Cert.Equal(cur.issuer.Cert) {
		return nil, errors.New("the next root is the current root")
	}
	bundle, err := union(cur.bundle, string(next.AnchorsPEM))
	if err != nil {
		return nil, err
	}
	s = s.DeepCopy()
	s.Data[contract.RootNextCertKey] = next.CertPEM
	s.Data[contract.RootNextKeyKey] = nextKey
	if next.Intermediate() {
		s.Data[contract.RootNextAnchorsKey] = next.AnchorsPEM
	}
	s.Data[contract.RootBundleKey] = []byte(bundle)
	setAnnotation(s, contract.RotationAnnotation, contract.RotationAddAnchors)
	r.res.NewIssuer = pki.Fingerprint(next.Cert)
	r.o.Progress(contract.RotationAddAnchors, fmt.Sprintf("next root %q added beside the current one; waiting for every trust bundle to hold both", next.Anchors[0].Subject.String()))
	return r.update(ctx, s, contract.RotationAddAnchors)
}

func (r *rotation) promote(ctx context.Context, s *corev1.Secret, cur *rootState) (*corev1.Secret, error) {
	n, err := r.waitBundles(ctx, cur.bundle)
	if err != nil {
		return nil, err
	}
	r.res.Bundles = n
	r.o.Progress(contract.RotationAddAnchors, fmt.Sprintf("%d bundle(s) hold both roots; waiting %s for kubelets to deliver them", n, r.o.PropagationDelay))
	if err := sleep(ctx, r.o.PropagationDelay); err != nil {
		return nil, err
	}
	next, err := pki.LoadIssuer(s.Data[contract.RootNextCertKey], s.Data[contract.RootNextKeyKey], s.Data[contract.RootNextAnchorsKey], pki.ProbeIdentityIn(r.ns, r.o.ClusterDomain), r.o.Now())
	if err != nil {
		return nil, fmt.Errorf("the next root stored in %s/%s: %w", r.ns, contract.RootSecret, err)
	}
	r.res.NewIssuer = pki.Fingerprint(next.Cert)
	s = s.DeepCopy()
	s.Data[corev1.TLSCertKey] = s.Data[contract.RootNextCertKey]
	s.Data[corev1.TLSPrivateKeyKey] = s.Data[contract.RootNextKeyKey]
	if a := s.Data[contract.RootNextAnchorsKey]; len(a) > 0 {
		s.Data[contract.RootAnchorsKey] = a
	} else {
		delete(s.Data, contract.RootAnchorsKey)
	}
	delete(s.Data, contract.RootNextCertKey)
	delete(s.Data, contract.RootNextKeyKey)
	delete(s.Data, contract.RootNextAnchorsKey)
	setAnnotation(s, contract.RotationAnnotation, contract.RotationReissue)
	r.o.Progress(contract.RotationReissue, "the next root now issues; waiting for every workload certificate to be re-issued from it")
	return r.update(ctx, s, contract.RotationReissue)
}

func (r *rotation) retire(ctx context.Context, s *corev1.Secret, cur *rootState) (*corev1.Secret, error) {
	r.res.NewIssuer = pki.Fingerprint(cur.issuer.Cert)
	n, err := r.waitLeaves(ctx, r.res.NewIssuer)
	if err != nil {
		return nil, err
	}
	r.res.Secrets = n
	r.o.Progress(contract.RotationReissue, fmt.Sprintf("%d workload certificate(s) re-issued; waiting %s for kubelets to deliver them", n, r.o.PropagationDelay))
	if err := sleep(ctx, r.o.PropagationDelay); err != nil {
		return nil, err
	}
	s = s.DeepCopy()
	delete(s.Data, contract.RootBundleKey)
	setAnnotation(s, contract.RotationAnnotation, contract.RotationRetire)
	r.o.Progress(contract.RotationRetire, "removing the old root from the trust bundles")
	return r.update(ctx, s, contract.RotationRetire)
}

func (r *rotation) finish(ctx context.Context, s *corev1.Secret, cur *rootState) (*corev1.Secret, error) {
	r.res.NewIssuer = pki.Fingerprint(cur.issuer.Cert)
	n, err := r.waitBundles(ctx, cur.bundle)
	if err != nil {
		return nil, err
	}
	r.res.Bundles = n
	s = s.DeepCopy()
	delete(s.Annotations, contract.RotationAnnotation)
	r.o.Progress(contract.RotationRetire, fmt.Sprintf("%d bundle(s) hold only the new root; rotation complete", n))
	return r.update(ctx, s, "finish")
}

// replaceLostRoot is the disaster path: the root Secret is gone with its
// key. A new root is made whose bundle keeps the roots the control plane
// recorded (ConfigMap linkerd-ca-anchors in its own namespace, never the
// bundles in workload namespaces, which anyone who can create a ConfigMap
// there can write), so existing leaves keep verifying while the CA
// re-issues them; for the moments before each pod's bundle is updated, a
// new leaf may not verify at a peer. The rotation then continues from its
// reissue step.
func (r *rotation) replaceLostRoot(ctx context.Context) (*corev1.Secret, error) {
	rec, err := readAnchorRecord(ctx, r.client, r.ns)
	if err != nil {
		return nil, fmt.Errorf("read the recorded trust anchors: %w", err)
	}
	next, nextKey, err := r.nextIssuer()
	if err != nil {
		return nil, err
	}
	kept := ""
	if rec != nil {
		kept = string(pki.EncodeCerts(rec.certs))
	}
	bundle, err := union(kept, string(next.AnchorsPEM))
	if err != nil {
		return nil, err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: contract.RootSecret, Namespace: r.ns,
			Labels:      map[string]string{contract.ControlPlaneNSLabel: r.ns},
			Annotations: map[string]string{contract.RotationAnnotation: contract.RotationReissue}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: next.CertPEM, corev1.TLSPrivateKeyKey: nextKey, contract.RootBundleKey: []byte(bundle)},
	}
	if next.Intermediate() {
		s.Data[contract.RootAnchorsKey] = next.AnchorsPEM
	}
	r.res.LostRoot = true
	r.res.OldIssuer = "(lost)"
	if rec != nil {
		r.o.Progress(contract.RotationReissue, fmt.Sprintf("root Secret was missing: a new root now issues, and the bundles keep the %d root(s) recorded in %s (%s)", len(rec.certs), rec.source, subjects(rec.certs)))
	} else {
		r.o.Progress(contract.RotationReissue, fmt.Sprintf("root Secret was missing and %s/%s records no root: a new root now issues; leaves from the lost root stop verifying as they are replaced", r.ns, contract.AnchorsConfigMap))
	}
	out, err := r.secrets().Create(ctx, s, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create root Secret %s/%s: %w", r.ns, contract.RootSecret, err)
	}
	return out, nil
}

// tlsPods lists this control plane's TLS pods; their namespaces are
// the only ones whose bundle the CA writes, so the only ones to wait for.
func (r *rotation) tlsPods(ctx context.Context) ([]corev1.Pod, error) {
	pods, err := r.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: labels.Set{contract.ControlPlaneNSLabel: r.ns}.String()})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if wantsTLS(&p, r.ns) {
			out = append(out, p)
		}
	}
	return out, nil
}

// waitBundles waits until the bundle of every namespace with this control
// plane's TLS pods holds exactly want, and returns how many there are.
// Bundles elsewhere are not the CA's to write and are not waited for; one
// that names another control plane is reported, not waited for.
func (r *rotation) waitBundles(ctx context.Context, want string) (int, error) {
	var lagging []string
	reported := map[string]bool{}
	n := 0
	err := r.poll(ctx, func() (bool, error) {
		pods, err := r.tlsPods(ctx)
		if err != nil {
			return false, err
		}
		namespaces := map[string]bool{}
		for _, p := range pods {
			namespaces[p.Namespace] = true
		}
		lagging, n = nil, 0
		for ns := range namespaces {
			cm, err := r.client.CoreV1().ConfigMaps(ns).Get(ctx, contract.BundleConfigMap, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				lagging = append(lagging, ns)
				continue
			case err != nil:
				return false, err
			}
			if other := cm.Labels[contract.BundleLabel]; other != "" && other != r.ns {
				if !reported[ns] {
					reported[ns] = true
					r.o.Progress("conflict", fmt.Sprintf("ConfigMap %s/%s belongs to the control plane in namespace %q: its pods of this control plane keep the bundle of the other; not waiting for it", ns, contract.BundleConfigMap, other))
				}
				continue
			}
			n++
			if cm.Data[contract.BundleKey] != want {
				lagging = append(lagging, ns)
			}
		}
		return len(lagging) == 0, nil
	})
	if err != nil {
		sort.Strings(lagging)
		return 0, fmt.Errorf("waiting for trust bundles (still behind: %v): %w; is the CA running? run the command again to resume", lagging, err)
	}
	return n, nil
}

// waitLeaves waits until every workload Secret whose owner still has TLS
// pods was issued by issuer. A Secret the CA never wrote is someone
// else's: the CA does not overwrite it, so it is reported, not waited for.
// (Whoever applies under the CA's field manager name gets the Secret
// repaired by the CA, which then converges too.)
func (r *rotation) waitLeaves(ctx context.Context, issuer string) (int, error) {
	var lagging []string
	reported := map[string]bool{}
	n := 0
	err := r.poll(ctx, func() (bool, error) {
		pods, err := r.tlsPods(ctx)
		if err != nil {
			return false, err
		}
		owners := map[ownerKey]bool{}
		for i := range pods {
			owners[podOwner(&pods[i])] = true
		}
		secrets, err := r.client.CoreV1().Secrets("").List(ctx, metav1.ListOptions{
			LabelSelector: contract.ControlPlaneNSLabel + "=" + r.ns + "," + contract.OwnerKindLabel,
		})
		if err != nil {
			return false, err
		}
		lagging, n = nil, 0
		for _, s := range secrets.Items {
			k, ok := secretOwner(&s)
			if !ok || !owners[k] {
				continue
			}
			if s.Annotations[contract.IssuerAnnotation] == issuer {
				n++
				continue
			}
			if !managedBy(&s, FieldManager(r.ns)) && !managedBy(&s, legacyFieldManager) {
				if key := s.Namespace + "/" + s.Name; !reported[key] {
					reported[key] = true
					r.o.Progress("conflict", fmt.Sprintf("Secret %s was not written by this control plane's CA, which does not overwrite it: not waiting for it (delete it to have the CA issue one)", key))
				}
				continue
			}
			n++
			lagging = append(lagging, s.Namespace+"/"+s.Name)
		}
		return len(lagging) == 0, nil
	})
	if err != nil {
		sort.Strings(lagging)
		if len(lagging) > 5 {
			lagging = append(lagging[:5], "…")
		}
		return 0, fmt.Errorf("waiting for workload certificates from the new root (still old: %v): %w; is the CA running? run the command again to resume", lagging, err)
	}
	return n, nil
}

func (r *rotation) poll(ctx context.Context, done func() (bool, error)) error {
	t := time.NewTicker(r.o.PollInterval)
	defer t.Stop()
	for {
		ok, err := done()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func setAnnotation(s *corev1.Secret, k, v string) {
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[k] = v
}
