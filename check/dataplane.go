package check

import (
	"context"
	"crypto/x509"
	"fmt"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/contract"
)

// owner is the workload that owns a pod's identity and Secret.
type owner struct{ Kind, Namespace, Name string }

// shortKinds are kubectl's short names, so a remedy can be pasted.
var shortKinds = map[string]string{
	contract.KindDeployment: "deploy", contract.KindStatefulSet: "sts", contract.KindDaemonSet: "ds",
	contract.KindReplicaSet: "rs", contract.KindReplicationController: "rc", contract.KindPod: "po",
}

func (o owner) ref() string { return shortKinds[o.Kind] + "/" + o.Name }

// ownerOf follows the CA's rule (ca/README.md): the linkerd.io/proxy-<kind>
// label, else the controller reference, else the pod itself.
func ownerOf(pod *corev1.Pod) owner {
	for _, kind := range contract.Kinds {
		if name := pod.Labels[contract.KindLabel(kind)]; name != "" {
			return owner{Kind: kind, Namespace: pod.Namespace, Name: name}
		}
	}
	for _, ref := range pod.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		kind := strings.ToLower(ref.Kind)
		if _, ok := shortKinds[kind]; ok {
			return owner{Kind: kind, Namespace: pod.Namespace, Name: ref.Name}
		}
	}
	return owner{Kind: contract.KindPod, Namespace: pod.Namespace, Name: pod.Name}
}

// ownerState is one owner's Secret, judged.
type ownerState struct {
	owner      owner
	identity   string
	secretName string
	pods       []*corev1.Pod
	// secret is "" when present and of type kubernetes.io/tls, else why not.
	secret   string
	findings leafFindings
}

// bundleState is one namespace's trust bundle.
type bundleState struct {
	namespace string
	problem   string // missing or unreadable
	certs     []*x509.Certificate
}

// foreignAnchor is a certificate in a trust bundle that the root Secret
// does not list: whoever wrote it can mint identities every proxy with
// that bundle believes.
type foreignAnchor struct {
	namespace, subject, fingerprint string
	tlsPods                         bool // the namespace has this control plane's TLS pods
}

// dataPlane is one consistent snapshot of the TLS data plane, loaded with
// a handful of lists and judged in parallel. It is never modified after
// loadDataPlane returns.
type dataPlane struct {
	root    *x509.Certificate // nil when the root is unusable
	owners  []*ownerState
	bundles []bundleState
	pods    []*corev1.Pod
	// anchors is what bundles hold (root.Anchors); expected what they may
	// hold (root.Expected). Both nil without a usable root.
	anchors, expected []*x509.Certificate
	// foreign lists every anchor outside expected, in any bundle labelled
	// for this control plane or in a namespace with its TLS pods.
	foreign []foreignAnchor
}

func loadDataPlane(ctx context.Context, cfg Config, client *Lazy[kubernetes.Interface], root *Lazy[*rootInfo]) (*dataPlane, error) {
	c, err := client.Get(ctx)
	if err != nil {
		return nil, err
	}
	dp := &dataPlane{}
	if r, err := root.Get(ctx); err == nil {
		dp.root, dp.anchors, dp.expected = r.Cert, r.Anchors, r.Expected
	}
	var (
		pods    *corev1.PodList
		secrets *corev1.SecretList
		cms     *corev1.ConfigMapList
		wg      sync.WaitGroup
		errs    [3]error
	)
	// Three lists in parallel instead of a GET per pod.
	wg.Add(3)
	go func() {
		defer wg.Done()
		pods, errs[0] = c.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: contract.ControlPlaneNSLabel + "=" + cfg.ControlNamespace})
	}()
	go func() {
		defer wg.Done()
		secrets, errs[1] = c.CoreV1().Secrets("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS)).String()})
	}()
	go func() {
		defer wg.Done()
		cms, errs[2] = c.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", contract.BundleConfigMap).String()})
	}()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}

	byOwner := map[owner]*ownerState{}
	namespaces := map[string]bool{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !contract.TLSMode(p.Annotations[contract.TLSAnnotation]) || p.DeletionTimestamp != nil ||
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		dp.pods = append(dp.pods, p)
		namespaces[p.Namespace] = true
		o := ownerOf(p)
		st := byOwner[o]
		if st == nil {
			st = &ownerState{owner: o, identity: contract.IdentityIn(o.Name, o.Kind, o.Namespace, cfg.ControlNamespace, cfg.ClusterDomain), secretName: contract.SecretName(o.Name, o.Kind)}
			byOwner[o] = st
			dp.owners = append(dp.owners, st)
		}
		st.pods = append(st.pods, p)
	}
	sort.Slice(dp.owners, func(i, j int) bool {
		a, b := dp.owners[i].owner, dp.owners[j].owner
		return a.Namespace+"/"+a.Kind+"/"+a.Name < b.Namespace+"/"+b.Kind+"/"+b.Name
	})

	tlsSecrets := map[string]*corev1.Secret{}
	for i := range secrets.Items {
		s := &secrets.Items[i]
		tlsSecrets[s.Namespace+"/"+s.Name] = s
	}
	// An owner absent from the list of TLS Secrets has none, or one of
	// another type. Telling which costs one list per namespace concerned,
	// not a GET per owner: a thousand missing Secrets must not mean a
	// thousand requests through the client's rate limiter.
	missingNS := map[string]bool{}
	for _, st := range dp.owners {
		if tlsSecrets[st.owner.Namespace+"/"+st.secretName] == nil {
			missingNS[st.owner.Namespace] = true
		}
	}
	otherTypes := map[string]corev1.SecretType{}
	var otherMu sync.Mutex
	nsList := sortedKeys(missingNS)
	err = parallel(ctx, cfg.Parallelism, len(nsList), func(i int) error {
		list, err := c.CoreV1().Secrets(nsList[i]).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		otherMu.Lock()
		defer otherMu.Unlock()
		for _, s := range list.Items {
			otherTypes[s.Namespace+"/"+s.Name] = s.Type
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	now := cfg.Now()
	th := thresholds{cfg.LeafWarnWithin, cfg.LeafFailWithin}
	err = parallel(ctx, cfg.Parallelism, len(dp.owners), func(i int) error {
		st := dp.owners[i]
		key := st.owner.Namespace + "/" + st.secretName
		s := tlsSecrets[key]
		if s == nil {
			if typ, ok := otherTypes[key]; ok {
				st.secret = fmt.Sprintf("Secret %s has type %s, want %s", st.secretName, typ, corev1.SecretTypeTLS)
			} else {
				st.secret = fmt.Sprintf("Secret %s does not exist", st.secretName)
			}
			return nil
		}
		st.findings = analyzeLeaf(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey], dp.root, st.identity, now, th)
		return nil
	})
	if err != nil {
		return nil, err
	}

	cmByNS := map[string]*corev1.ConfigMap{}
	for i := range cms.Items {
		cmByNS[cms.Items[i].Namespace] = &cms.Items[i]
	}
	for _, ns := range sortedKeys(namespaces) {
		b := bundleState{namespace: ns}
		cm := cmByNS[ns]
		switch {
		case cm == nil:
			b.problem = fmt.Sprintf("ConfigMap %s does not exist", contract.BundleConfigMap)
		case cm.Data[contract.BundleKey] == "":
			b.problem = fmt.Sprintf("ConfigMap %s has no key %s", contract.BundleConfigMap, contract.BundleKey)
		default:
			certs, err := pki.ParseCerts([]byte(cm.Data[contract.BundleKey]))
			if err != nil {
				b.problem = fmt.Sprintf("ConfigMap %s: %s: %v", contract.BundleConfigMap, contract.BundleKey, err)
			}
			b.certs = certs
		}
		dp.bundles = append(dp.bundles, b)
	}
	if dp.expected != nil {
		for i := range cms.Items {
			cm := &cms.Items[i]
			if cm.Labels[contract.BundleLabel] != cfg.ControlNamespace && !namespaces[cm.Namespace] {
				continue // not this control plane's, and no pod of it reads it
			}
			certs, err := pki.ParseCerts([]byte(cm.Data[contract.BundleKey]))
			if err != nil {
				continue // reported by the bundle checks where pods read it
			}
			for _, c := range pki.Foreign(certs, dp.expected) {
				dp.foreign = append(dp.foreign, foreignAnchor{namespace: cm.Namespace, subject: c.Subject.String(),
					fingerprint: pki.Fingerprint(c), tlsPods: namespaces[cm.Namespace]})
			}
		}
		sort.Slice(dp.foreign, func(i, j int) bool {
			return dp.foreign[i].namespace+dp.foreign[i].fingerprint < dp.foreign[j].namespace+dp.foreign[j].fingerprint
		})
	}
	return dp, nil
}

// parallel runs f(0..n-1) on at most limit goroutines and returns the first
// error.
func parallel(ctx context.Context, limit, n int, f func(int) error) error {
	if limit > n {
		limit = n
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	for w := 0; w < limit; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil || ctx.Err() != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
