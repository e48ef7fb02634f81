package check

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/kubernetes"

	"meshtls/contract"
)

var errNoClientConfigured = errors.New("no Kubernetes client configured")

func kubernetesAPI(client *Lazy[kubernetes.Interface]) Category {
	return Category{Name: CategoryKubernetesAPI, Checkers: []Checker{
		{
			Description: "can initialize the client",
			Hint:        "check --kubeconfig, KUBECONFIG and --context",
			Fatal:       true,
			Run: func(ctx context.Context) error {
				_, err := client.Get(ctx)
				return err
			},
		},
		{
			Description: "can query the Kubernetes API",
			Hint:        "is the API server up and reachable from here? try: kubectl get --raw /readyz",
			Fatal:       true,
			Retry:       true,
			Run: func(ctx context.Context) error {
				c, err := client.Get(ctx)
				if err != nil {
					return err
				}
				_, err = c.CoreV1().Namespaces().List(ctx, metav1.ListOptions{Limit: 1})
				return err
			},
		},
		{
			Description: "is running the minimum Kubernetes API version",
			Hint:        "upgrade the cluster to Kubernetes " + MinKubernetesVersion + " or later",
			Run: func(ctx context.Context) error {
				c, err := client.Get(ctx)
				if err != nil {
					return err
				}
				info, err := c.Discovery().ServerVersion()
				if err != nil {
					return err
				}
				return versionSupported(info.GitVersion)
			},
		},
	}}
}

// versionSupported accepts a server's gitVersion at or above the minimum;
// providers add suffixes (v1.30.2-eks-1234, v1.29.0+k3s1), which the
// semantic parse tolerates.
func versionSupported(gitVersion string) error {
	v, err := version.ParseGeneric(gitVersion)
	if err != nil {
		return fmt.Errorf("cannot parse server version %q: %w", gitVersion, err)
	}
	if v.LessThan(version.MustParseGeneric(MinKubernetesVersion)) {
		return fmt.Errorf("server is %s, need %s or later", gitVersion, MinKubernetesVersion)
	}
	return nil
}

func linkerdExistence(cfg Config, client *Lazy[kubernetes.Interface]) Category {
	ns := cfg.ControlNamespace
	deployments := func(ctx context.Context) ([]appsv1.Deployment, error) {
		c, err := client.Get(ctx)
		if err != nil {
			return nil, err
		}
		list, err := c.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: contract.ComponentLabel})
		if err != nil {
			return nil, err
		}
		return list.Items, nil
	}
	return Category{Name: CategoryLinkerdExists, Checkers: []Checker{
		{
			Description: "control plane namespace exists",
			Hint:        fmt.Sprintf("install the control plane: linkerd install%s | kubectl apply -f - (or pass -L if it lives elsewhere)", tlsFlag(cfg)),
			Fatal:       true,
			Retry:       true,
			Run: func(ctx context.Context) error {
				c, err := client.Get(ctx)
				if err != nil {
					return err
				}
				_, err = c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("namespace %q does not exist", ns)
				}
				return err
			},
		},
		{
			Description: "control plane Deployments exist",
			Hint:        fmt.Sprintf("re-apply the control plane: linkerd install%s | kubectl apply -f -", tlsFlag(cfg)),
			Fatal:       true,
			Retry:       true,
			Run: func(ctx context.Context) error {
				deps, err := deployments(ctx)
				if err != nil {
					return err
				}
				if len(deps) == 0 {
					return fmt.Errorf("no Deployment in %s is labelled %s", ns, contract.ComponentLabel)
				}
				if cfg.TLS && !hasComponent(deps, caComponent) {
					return fmt.Errorf("no certificate authority: no Deployment in %s has %s=%s", ns, contract.ComponentLabel, caComponent)
				}
				return nil
			},
		},
		{
			// Components are discovered rather than listed, so controllers
			// added to install later (destination, tap) are checked too.
			Description: "control plane Deployments are ready",
			Hint:        fmt.Sprintf("see why: kubectl -n %s describe deploy; kubectl -n %s get events", ns, ns),
			Retry:       true,
			Run: func(ctx context.Context) error {
				deps, err := deployments(ctx)
				if err != nil {
					return err
				}
				var probs []Problem
				for _, d := range deps {
					if reason := deploymentNotReady(&d); reason != "" {
						probs = append(probs, Problem{Kind: "deploy", Name: d.Name, Namespace: d.Namespace, Reason: reason,
							Remedy: fmt.Sprintf("kubectl -n %s describe deploy/%s", d.Namespace, d.Name)})
					}
				}
				sortProblems(probs)
				return Problems(probs, "control plane Deployments not ready: %d")
			},
		},
	}}
}

func tlsFlag(cfg Config) string {
	if cfg.TLS {
		return " --tls=optional"
	}
	return ""
}

func hasComponent(deps []appsv1.Deployment, component string) bool {
	for _, d := range deps {
		if d.Labels[contract.ComponentLabel] == component {
			return true
		}
	}
	return false
}

// deploymentNotReady says why d is not serving, or "" when it is. A
// Deployment scaled to zero is not ready: a control plane with no replicas
// serves nothing.
func deploymentNotReady(d *appsv1.Deployment) string {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	if want == 0 {
		return "scaled to 0 replicas"
	}
	if d.Status.ObservedGeneration < d.Generation {
		return "rollout not yet observed by the controller"
	}
	if d.Status.ReadyReplicas < want {
		return fmt.Sprintf("%d/%d replicas ready", d.Status.ReadyReplicas, want)
	}
	if d.Status.UpdatedReplicas < want {
		return fmt.Sprintf("rollout in progress: %d/%d replicas updated", d.Status.UpdatedReplicas, want)
	}
	return ""
}

func sortProblems(probs []Problem) {
	sort.Slice(probs, func(i, j int) bool {
		if probs[i].Kind != probs[j].Kind {
			return probs[i].Kind < probs[j].Kind
		}
		return probs[i].Name < probs[j].Name
	})
}

func joinNames(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s, +%d more", strings.Join(names[:max], ", "), len(names)-max)
}
