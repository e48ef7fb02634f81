package contract

import "testing"

func TestNames(t *testing.T) {
	if got := SecretName("web", KindDeployment); got != "web-deployment-tls-linkerd-io" {
		t.Errorf("SecretName = %q", got)
	}
	if got := KindLabel(KindStatefulSet); got != "linkerd.io/proxy-statefulset" {
		t.Errorf("KindLabel = %q", got)
	}
	if got := ControllerIdentity("linkerd-controller", "linkerd"); got != "linkerd-controller.deployment.linkerd.linkerd-managed.linkerd.svc.cluster.local" {
		t.Errorf("ControllerIdentity = %q", got)
	}
	if got := TapIdentity("linkerd"); got != "linkerd-tap.deployment.linkerd.linkerd-managed.linkerd.svc.cluster.local" {
		t.Errorf("TapIdentity = %q", got)
	}
}

func TestIdentity(t *testing.T) {
	if got := Identity("web", KindDeployment, "emojivoto", "linkerd"); got != "web.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local" {
		t.Errorf("Identity = %q", got)
	}
}
