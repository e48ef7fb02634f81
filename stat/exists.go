package stat

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NotFoundError says that a resource or namespace a query names does not
// exist, so an empty answer is a typo rather than a quiet workload.
type NotFoundError struct {
	Resource Resource
	// Where is the capture that was searched; empty for the cluster.
	Where string
	// Namespaces, when the namespace was missing from a capture, lists
	// the ones it holds.
	Namespaces []string
}

func (e *NotFoundError) Error() string {
	r := e.Resource
	var what string
	switch {
	case r.Kind == KindNamespace:
		what = fmt.Sprintf("namespace %q", r.Name)
	case r.Name == "":
		what = fmt.Sprintf("namespace %q", r.Namespace)
	case r.Namespace == "":
		what = fmt.Sprintf("%s %q in any namespace", r.Kind, r.Name)
	default:
		what = fmt.Sprintf("%s %q in namespace %q", r.Kind, r.Name, r.Namespace)
	}
	if e.Where == "" {
		return what + " not found"
	}
	msg := fmt.Sprintf("%s not found in capture %s", what, e.Where)
	if len(e.Namespaces) > 0 {
		msg += " (it holds namespaces " + strings.Join(e.Namespaces, ", ") + ")"
	}
	return msg
}

// existenceChecker is a PodSource that can also say whether a resource
// exists.
type existenceChecker interface {
	exists(ctx context.Context, r Resource) error
}

// CheckExists verifies every resource the queries name against pods (a
// capture or the cluster), as ComputeAll does first; callers use it to
// fail fast before opening a metrics source.
func CheckExists(ctx context.Context, qs []Query, pods PodSource) error {
	for _, q := range qs {
		if err := checkExists(ctx, q, pods); err != nil {
			return err
		}
	}
	return nil
}

// checkExists verifies every resource a query names, so that a typo gives
// an error and not "No traffic found.". Authorities are not objects and
// are never checked.
func checkExists(ctx context.Context, q Query, pods PodSource) error {
	if o, isOpt := pods.(OptionalPods); isOpt {
		// The cluster is optional here: only a definite "not found"
		// stops the query; an unreachable cluster does not.
		err := checkExists(ctx, q, o.Source)
		var nf *NotFoundError
		if errors.As(err, &nf) {
			return err
		}
		return nil
	}
	c, ok := pods.(existenceChecker)
	if !ok {
		return nil
	}
	for _, r := range []*Resource{&q.Resource, q.From, q.To} {
		if r == nil || r.Kind == KindAuthority {
			continue
		}
		if r.Kind == KindNamespace && r.Name == "" {
			continue
		}
		if r.Kind != KindNamespace && r.Namespace != "" {
			if err := c.exists(ctx, Resource{Kind: KindNamespace, Name: r.Namespace}); err != nil {
				var nf *NotFoundError
				if errors.As(err, &nf) {
					nf.Resource = Resource{Kind: KindNamespace, Name: r.Namespace}
				}
				return err
			}
		}
		if r.Name != "" {
			if err := c.exists(ctx, *r); err != nil {
				return err
			}
		}
	}
	return nil
}

// exists looks a resource up in the capture: namespaces and pods by name,
// workloads by the owners its pods name.
func (c *Capture) exists(_ context.Context, r Resource) error {
	namespaces := map[string]bool{}
	for _, p := range c.manifest.Pods {
		namespaces[p.Namespace] = true
		switch {
		case r.Kind == KindNamespace && p.Namespace == r.Name:
			return nil
		case r.Kind == KindNamespace || r.Namespace != "" && p.Namespace != r.Namespace:
		case r.Kind == KindPod && p.Name == r.Name:
			return nil
		case r.Kind == KindService:
			return nil // a capture records pods, not Services
		case p.Owners[string(r.Kind)] == r.Name:
			return nil
		}
	}
	nf := &NotFoundError{Resource: r, Where: c.name}
	if r.Kind == KindNamespace {
		nf.Namespaces = sortedKeys(namespaces)
		sort.Strings(nf.Namespaces)
	}
	return nf
}

// exists asks the API server for the object.
func (k KubePods) exists(ctx context.Context, r Resource) error {
	var err error
	get := metav1.GetOptions{}
	if r.Kind != KindNamespace && r.Namespace == "" {
		return nil // a name across all namespaces: nothing to get
	}
	switch r.Kind {
	case KindNamespace:
		_, err = k.Client.CoreV1().Namespaces().Get(ctx, r.Name, get)
	case KindPod:
		_, err = k.Client.CoreV1().Pods(r.Namespace).Get(ctx, r.Name, get)
	case KindService:
		_, err = k.Client.CoreV1().Services(r.Namespace).Get(ctx, r.Name, get)
	case KindDeployment:
		_, err = k.Client.AppsV1().Deployments(r.Namespace).Get(ctx, r.Name, get)
	case KindStatefulSet:
		_, err = k.Client.AppsV1().StatefulSets(r.Namespace).Get(ctx, r.Name, get)
	case KindDaemonSet:
		_, err = k.Client.AppsV1().DaemonSets(r.Namespace).Get(ctx, r.Name, get)
	case KindReplicaSet:
		_, err = k.Client.AppsV1().ReplicaSets(r.Namespace).Get(ctx, r.Name, get)
	case KindReplicationController:
		_, err = k.Client.CoreV1().ReplicationControllers(r.Namespace).Get(ctx, r.Name, get)
	case KindJob:
		_, err = k.Client.BatchV1().Jobs(r.Namespace).Get(ctx, r.Name, get)
	case KindCronJob:
		_, err = k.Client.BatchV1().CronJobs(r.Namespace).Get(ctx, r.Name, get)
	default:
		return nil
	}
	if apierrors.IsNotFound(err) {
		return &NotFoundError{Resource: r}
	}
	if err != nil {
		return fmt.Errorf("cannot look up %s: %v", r, err)
	}
	return nil
}
