package check

import (
	"context"
	"crypto/x509"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"meshtls/ca/pki"
	"meshtls/contract"
)

func dataPlaneCategory(cfg Config, snap *Lazy[*dataPlane]) Category {
	ns := cfg.ControlNamespace
	restartCA := fmt.Sprintf("kubectl -n %s rollout restart deploy/%s", ns, caDeploymentForMessages)
	caLogs := fmt.Sprintf("kubectl -n %s logs deploy/%s", ns, caDeploymentForMessages)
	// ownerCheck turns one finding of every owner with a Secret into
	// problems; remedy says what to do for that owner.
	ownerCheck := func(ctx context.Context, needRoot bool, summary string, finding func(*ownerState) string, remedy func(*ownerState) string) error {
		dp, err := snap.Get(ctx)
		if err != nil {
			return err
		}
		if needRoot && dp.root == nil {
			return Skip("no usable root to verify against, see linkerd-ca")
		}
		var probs []Problem
		for _, st := range dp.owners {
			if st.secret != "" || st.findings.Parse != "" {
				continue // reported by the presence and parse checks
			}
			if f := finding(st); f != "" {
				probs = append(probs, ownerProblem(st, f, remedy(st)))
			}
		}
		return withNoPodsNote(dp, Problems(probs, summary))
	}
	reissue := func(st *ownerState) string {
		return fmt.Sprintf("delete it so the CA re-issues it: kubectl -n %s delete secret %s", st.owner.Namespace, st.secretName)
	}
	return Category{Name: CategoryTLSDataPlane, Checkers: []Checker{
		{
			Description: "trust bundle exists in every namespace with TLS-enabled pods",
			Hint:        "the CA writes " + contract.BundleConfigMap + " into each namespace with TLS-enabled pods; see why it has not: " + caLogs,
			Retry:       true,
			Run: func(ctx context.Context) error {
				dp, err := snap.Get(ctx)
				if err != nil {
					return err
				}
				var probs []Problem
				for _, b := range dp.bundles {
					if b.problem != "" {
						probs = append(probs, Problem{Kind: "ns", Name: b.namespace, Reason: b.problem, Remedy: "the CA writes it while running: " + caLogs})
					}
				}
				return withNoPodsNote(dp, Problems(probs, "namespaces without a usable trust bundle: %d"))
			},
		},
		{
			Description: "trust bundles hold the current root",
			Hint:        "a stale bundle makes proxies reject every peer issued under the current root",
			Retry:       true,
			Run: func(ctx context.Context) error {
				dp, err := snap.Get(ctx)
				if err != nil {
					return err
				}
				if dp.root == nil {
					return Skip("no usable root to compare with, see linkerd-ca")
				}
				var probs []Problem
				for _, b := range dp.bundles {
					if b.problem != "" || bundleHolds(b, dp) {
						continue
					}
					probs = append(probs, Problem{Kind: "ns", Name: b.namespace,
						Reason: fmt.Sprintf("%s does not hold the current root %q", contract.BundleConfigMap, dp.root.Subject.CommonName),
						Remedy: fmt.Sprintf("%s so it rewrites the bundle, then restart %s so it loads the new bundle", restartCA, ownersIn(dp, b.namespace))})
				}
				return withNoPodsNote(dp, Problems(probs, "namespaces with a stale trust bundle: %d"))
			},
		},
		{
			Description: "trust bundles hold only this control plane's roots",
			Hint:        "a root in a bundle lets whoever holds its key mint any identity that bundle's proxies believe; the root Secret " + ns + "/" + contract.RootSecret + " lists the only roots bundles may hold",
			Run: func(ctx context.Context) error {
				dp, err := snap.Get(ctx)
				if err != nil {
					return err
				}
				if dp.expected == nil {
					return Skip("no usable root to compare with, see linkerd-ca")
				}
				var probs []Problem
				for _, f := range dp.foreign {
					remedy := fmt.Sprintf("the CA rewrites a bundle where it has TLS pods; if it has not, see why: %s (and find who wrote it: kubectl -n %s get configmap %s -o yaml --show-managed-fields)", caLogs, f.namespace, contract.BundleConfigMap)
					if !f.tlsPods {
						remedy = fmt.Sprintf("no TLS pod of this control plane reads it, so nothing trusts it yet; remove it: kubectl -n %s delete configmap %s", f.namespace, contract.BundleConfigMap)
					}
					probs = append(probs, Problem{Kind: "ns", Name: f.namespace,
						Reason: fmt.Sprintf("%s holds root %q (sha256 %s), which this control plane does not trust", contract.BundleConfigMap, f.subject, f.fingerprint),
						Remedy: remedy})
				}
				return Problems(probs, "foreign roots in trust bundles: %d")
			},
		},
		{
			Description: "each TLS-enabled owner has its Secret",
			Hint:        "the CA issues one kubernetes.io/tls Secret per owner; see why it has not: " + caLogs,
			Retry:       true,
			Run: func(ctx context.Context) error {
				dp, err := snap.Get(ctx)
				if err != nil {
					return err
				}
				var probs []Problem
				for _, st := range dp.owners {
					if st.secret != "" {
						probs = append(probs, ownerProblem(st, st.secret, "the CA re-creates it while running: "+caLogs))
					}
				}
				return withNoPodsNote(dp, Problems(probs, "owners without a usable Secret: %d"))
			},
		},
		{
			Description: "workload certificates and keys parse and match",
			Hint:        "a Secret the CA did not write is left alone by it; delete the Secret so the CA re-issues it",
			Run: func(ctx context.Context) error {
				dp, err := snap.Get(ctx)
				if err != nil {
					return err
				}
				var probs []Problem
				for _, st := range dp.owners {
					if st.secret != "" {
						continue
					}
					if f := st.findings.Parse + st.findings.KeyMatch; f != "" {
						probs = append(probs, ownerProblem(st, f, reissue(st)))
					}
				}
				return withNoPodsNote(dp, Problems(probs, "Secrets unreadable or with a key that does not match: %d"))
			},
		},
		{
			Description: "workload certificates chain to the current root",
			Hint:        "certificates from another or an older root are rejected by every peer; the CA re-issues against the root it loaded at start",
			Run: func(ctx context.Context) error {
				return ownerCheck(ctx, true, "certificates not chaining to the current root: %d",
					func(st *ownerState) string { return st.findings.Chain },
					func(st *ownerState) string {
						return fmt.Sprintf("%s to re-issue against the current root (or %s)", restartCA, reissue(st))
					})
			},
		},
		{
			Description: "workload certificates name their identity",
			Hint:        "the DNS SAN must be <owner>.<kind>.<ns>." + contract.IdentityDomainIn(ns, cfg.ClusterDomain) + ", the name peers verify",
			Run: func(ctx context.Context) error {
				return ownerCheck(ctx, false, "certificates not naming their identity: %d",
					func(st *ownerState) string { return st.findings.SAN }, reissue)
			},
		},
		{
			Description: "workload certificates allow server and client auth",
			Hint:        "each proxy is both a TLS server (inbound) and a TLS client (outbound)",
			Run: func(ctx context.Context) error {
				return ownerCheck(ctx, false, "certificates lacking a TLS usage: %d",
					func(st *ownerState) string { return st.findings.EKU }, reissue)
			},
		},
		{
			Description: "workload certificates are within their validity period",
			Hint:        "the CA renews at two thirds of a certificate's life; an expired one means it is not running or refuses the Secret: " + caLogs,
			Run: func(ctx context.Context) error {
				return ownerCheck(ctx, false, "certificates outside their validity period: %d",
					func(st *ownerState) string { return st.findings.Validity }, reissue)
			},
		},
		{
			Description: "workload certificates are not expiring soon",
			Hint:        "the CA should have renewed these by now: " + caLogs,
			Run: func(ctx context.Context) error {
				var fatal bool
				err := ownerCheck(ctx, false, "certificates expiring soon: %d",
					func(st *ownerState) string {
						if st.findings.Expiry != "" && st.findings.ExpiryFatal {
							fatal = true
						}
						return st.findings.Expiry
					}, reissue)
				if err != nil && !fatal {
					return Warn(err)
				}
				return err
			},
		},
		{
			Description: "TLS-enabled pods mount their Secret",
			Hint:        "re-inject the workload: linkerd inject --tls=optional adds the " + contract.IdentityVolume + " volume",
			Run: func(ctx context.Context) error {
				dp, err := snap.Get(ctx)
				if err != nil {
					return err
				}
				var probs []Problem
				for _, st := range dp.owners {
					for _, p := range st.pods {
						if why := mountProblem(p, st.secretName); why != "" {
							remedy := fmt.Sprintf("kubectl -n %s get %s -o yaml | linkerd inject --tls=optional - | kubectl apply -f -", st.owner.Namespace, st.owner.ref())
							if st.owner.Kind == contract.KindPod {
								remedy = "re-create the pod from linkerd inject --tls=optional output"
							}
							probs = append(probs, Problem{Kind: "po", Name: p.Name, Namespace: p.Namespace, Reason: why, Remedy: remedy})
						}
					}
				}
				return withNoPodsNote(dp, Problems(probs, "pods not mounting their Secret: %d"))
			},
		},
		{
			Description: "proxies serve their Secret's certificate",
			Hint:        "a proxy serving another certificate than its Secret's has not loaded the current one; restart it",
			Run: func(ctx context.Context) error {
				dp, err := snap.Get(ctx)
				if err != nil {
					return err
				}
				return servedCheck(ctx, cfg, dp)
			},
		},
	}}
}

func ownerProblem(st *ownerState, reason, remedy string) Problem {
	return Problem{Kind: shortKinds[st.owner.Kind], Name: st.owner.Name, Namespace: st.owner.Namespace, Reason: reason, Remedy: remedy}
}

func withNoPodsNote(dp *dataPlane, err error) error {
	if len(dp.pods) == 0 && err == nil {
		return WithNotes(nil, "no TLS-enabled pods")
	}
	return err
}

// bundleHolds says whether b holds every root the issuer chains to.
func bundleHolds(b bundleState, dp *dataPlane) bool {
	want := dp.anchors
	if len(want) == 0 {
		want = []*x509.Certificate{dp.root}
	}
	return len(pki.Foreign(want, b.certs)) == 0
}

// ownersIn names the owners in ns for a remedy, at most three.
func ownersIn(dp *dataPlane, ns string) string {
	var refs []string
	for _, st := range dp.owners {
		if st.owner.Namespace == ns {
			refs = append(refs, st.owner.ref())
		}
	}
	sort.Strings(refs)
	return joinNames(refs, 3) + " -n " + ns
}

// mountProblem says whether pod mounts secretName into a container.
func mountProblem(pod *corev1.Pod, secretName string) string {
	var vols []string
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secretName {
			vols = append(vols, v.Name)
		}
	}
	if len(vols) == 0 {
		return fmt.Sprintf("no volume of Secret %s", secretName)
	}
	for _, c := range pod.Spec.Containers {
		for _, m := range c.VolumeMounts {
			for _, v := range vols {
				if m.Name == v {
					return ""
				}
			}
		}
	}
	return fmt.Sprintf("volume %s (Secret %s) is not mounted by any container", strings.Join(vols, ","), secretName)
}
