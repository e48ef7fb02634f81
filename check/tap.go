package check

import (
	"context"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"meshtls/contract"
)

// CategoryTap checks the tap API that linkerd tap reaches through the
// API server.
const CategoryTap = "linkerd-tap-api"

// apiService is the part of an APIService the check reads; its Go type
// lives in kube-aggregator, which this module does not need otherwise.
type apiService struct {
	Spec struct {
		Service *struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		} `json:"service"`
	} `json:"spec"`
	Status struct {
		Conditions []struct {
			Type    string `json:"type"`
			Status  string `json:"status"`
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"conditions"`
	} `json:"status"`
}

func tapCategory(cfg Config, client *Lazy[kubernetes.Interface]) Category {
	ns := cfg.ControlNamespace
	return Category{Name: CategoryTap, Checkers: []Checker{{
		Description: "tap API is available",
		Hint: fmt.Sprintf("see why: kubectl get apiservice %s -o yaml; kubectl -n %s logs deploy/%s",
			contract.TapAPIService, ns, contract.TapComponent),
		Retry: true,
		Run: func(ctx context.Context) error {
			c, err := client.Get(ctx)
			if err != nil {
				return err
			}
			rc := c.Discovery().RESTClient()
			if r, ok := rc.(*rest.RESTClient); rc == nil || (ok && r == nil) {
				return Skip("this client cannot read APIServices")
			}
			raw, err := rc.Get().AbsPath("/apis/apiregistration.k8s.io/v1/apiservices/" + contract.TapAPIService).DoRaw(ctx)
			if apierrors.IsNotFound(err) {
				if _, derr := c.AppsV1().Deployments(ns).Get(ctx, contract.TapComponent, metav1.GetOptions{}); apierrors.IsNotFound(derr) {
					return Skip("the tap API is not installed: linkerd install --tls=optional adds it")
				}
				return fmt.Errorf("APIService %s does not exist, so linkerd tap cannot reach the tap API: re-apply linkerd install --tls=optional", contract.TapAPIService)
			}
			if err != nil {
				return fmt.Errorf("reading APIService %s: %w", contract.TapAPIService, err)
			}
			var a apiService
			if err := json.Unmarshal(raw, &a); err != nil {
				return fmt.Errorf("APIService %s: %w", contract.TapAPIService, err)
			}
			if s := a.Spec.Service; s == nil || s.Namespace != ns || s.Name != contract.TapComponent {
				where := "the API server itself"
				if s != nil {
					where = s.Namespace + "/" + s.Name
				}
				return fmt.Errorf("APIService %s is served by %s, not by this control plane's %s/%s", contract.TapAPIService, where, ns, contract.TapComponent)
			}
			for _, cond := range a.Status.Conditions {
				if cond.Type != "Available" {
					continue
				}
				if cond.Status == "True" {
					return nil
				}
				return fmt.Errorf("APIService %s is not Available (%s): %s", contract.TapAPIService, cond.Reason, cond.Message)
			}
			return fmt.Errorf("APIService %s has no Available condition yet", contract.TapAPIService)
		},
	}}}
}
