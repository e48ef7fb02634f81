package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/rest"

	"meshtls/ca/pki"
	"meshtls/contract"
)

// TapServingLifetime is how long the tap API's serving certificate lives;
// the CA renews it at two thirds of that.
const TapServingLifetime = 365 * 24 * time.Hour

// TapServingCAKey holds, in the tap serving Secret, the CAs the APIService's
// caBundle trusts: the current one, and the previous one while it is valid,
// so pods still serving the old leaf stay reachable until the kubelet
// delivers the new one.
const TapServingCAKey = "ca.crt"

// TapServingHosts are the DNS names the tap API serves under, the fully
// qualified one in the cluster's domain ("" is cluster.local).
func TapServingHosts(controlNamespace, clusterDomain string) []string {
	host := contract.TapComponent + "." + controlNamespace + ".svc"
	return []string{host, contract.TapComponent + "." + contract.ServiceDomain(controlNamespace, clusterDomain)}
}

// runTapServing keeps the tap API's serving certificate and its
// APIService's caBundle in step while this replica leads. The key is made
// here, in the cluster, and written only to the Secret the tap pods mount:
// `linkerd install` prints no key of its own.
func (c *Controller) runTapServing(ctx context.Context) {
	if c.cfg.TapAPIService == "" {
		return
	}
	for {
		next := time.Minute
		if err := c.syncTapServing(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("tap API serving certificate", "err", err.Error())
			next = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

func (c *Controller) syncTapServing(ctx context.Context) error {
	ns := c.cfg.ControlNamespace
	hosts := TapServingHosts(ns, c.cfg.ClusterDomain)
	now := c.cfg.Now()
	secrets := c.client.CoreV1().Secrets(ns)
	cur, err := secrets.Get(ctx, contract.TapServingSecret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur = nil
	case err != nil:
		return fmt.Errorf("get Secret %s/%s: %w", ns, contract.TapServingSecret, err)
	}
	var caBundle []byte
	if cur != nil {
		_, cerr := pki.CheckServing(cur.Data[corev1.TLSCertKey], cur.Data[corev1.TLSPrivateKeyKey], cur.Data[TapServingCAKey], hosts, now)
		if cerr == nil {
			caBundle = cur.Data[TapServingCAKey]
		} else {
			c.log.Info("replacing the tap API's serving certificate", "secret", ns+"/"+contract.TapServingSecret, "reason", cerr.Error())
		}
	}
	if caBundle == nil {
		sv, err := pki.NewServing(hosts, TapServingLifetime, now)
		if err != nil {
			return err
		}
		caBundle = sv.CAPEM
		if cur != nil {
			// The previous CA stays trusted while it is valid: the
			// kubelet takes a while to hand pods the new leaf.
			if old, err := pki.ParseCerts(cur.Data[TapServingCAKey]); err == nil {
				for _, o := range old {
					if now.Before(o.NotAfter) && o.IsCA {
						caBundle = append(caBundle, pki.EncodeCerts([]*x509.Certificate{o})...)
						break
					}
				}
			}
		}
		apply := corev1ac.Secret(contract.TapServingSecret, ns).
			WithType(corev1.SecretTypeTLS).
			WithLabels(map[string]string{contract.ControlPlaneNSLabel: ns, contract.ComponentLabel: "tap"}).
			WithAnnotations(map[string]string{contract.NotAfterAnnotation: sv.NotAfter.UTC().Format(time.RFC3339)}).
			WithData(map[string][]byte{corev1.TLSCertKey: sv.CertPEM, corev1.TLSPrivateKeyKey: sv.KeyPEM, TapServingCAKey: caBundle})
		// Force: an older install wrote this Secret itself; it is the CA's now.
		if _, err := secrets.Apply(ctx, apply, metav1.ApplyOptions{FieldManager: c.fieldManager, Force: true}); err != nil {
			return fmt.Errorf("apply Secret %s/%s: %w", ns, contract.TapServingSecret, err)
		}
		c.log.Info("issued the tap API's serving certificate", "secret", ns+"/"+contract.TapServingSecret,
			"hosts", hosts, "notAfter", sv.NotAfter.UTC().Format(time.RFC3339))
	}
	return c.ensureAPIServiceCABundle(ctx, caBundle)
}

// ensureAPIServiceCABundle sets the tap APIService's caBundle to caBundle.
// apiregistration.k8s.io's typed client lives in kube-aggregator, a module
// the CA does not need for one field: the request is built by hand.
func (c *Controller) ensureAPIServiceCABundle(ctx context.Context, caBundle []byte) error {
	rc := c.client.Discovery().RESTClient()
	if r, ok := rc.(*rest.RESTClient); rc == nil || (ok && r == nil) {
		return errors.New("no REST client to reach the APIService")
	}
	path := "/apis/apiregistration.k8s.io/v1/apiservices/" + c.cfg.TapAPIService
	raw, err := rc.Get().AbsPath(path).DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("get APIService %s: %w", c.cfg.TapAPIService, err)
	}
	var svc struct {
		Spec struct {
			CABundle              []byte `json:"caBundle"`
			InsecureSkipTLSVerify bool   `json:"insecureSkipTLSVerify"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &svc); err != nil {
		return fmt.Errorf("decode APIService %s: %w", c.cfg.TapAPIService, err)
	}
	if bytes.Equal(svc.Spec.CABundle, caBundle) && !svc.Spec.InsecureSkipTLSVerify {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"caBundle": caBundle, "insecureSkipTLSVerify": false}})
	if _, err := rc.Patch(types.MergePatchType).AbsPath(path).Body(patch).DoRaw(ctx); err != nil {
		return fmt.Errorf("set the caBundle of APIService %s: %w", c.cfg.TapAPIService, err)
	}
	c.log.Info("set the tap APIService's caBundle", "apiservice", c.cfg.TapAPIService)
	return nil
}
