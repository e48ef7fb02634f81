package inject

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// TestInitRedirectsLocalTraffic: proxy-init is told to send the proxy's
// own connections to its pod IP to the inbound port (Linkerd's
// redirect-non-loopback-local-traffic), so a pod calling a Service that
// routes back to itself is served over mTLS. Said explicitly, so an older
// proxy-init image whose default is off still writes the rule.
func TestInitRedirectsLocalTraffic(t *testing.T) {
	res, err := Inject([]byte(deployment("")), "db.yml", testOptions)
	if err != nil {
		t.Fatal(err)
	}
	var dep appsv1.Deployment
	if err := yaml.Unmarshal(res.YAML, &dep); err != nil {
		t.Fatal(err)
	}
	if ic := dep.Spec.Template.Spec.InitContainers; len(ic) != 1 || !slices.Contains(ic[0].Args, "--redirect-local-traffic") {
		t.Errorf("proxy-init %+v, want --redirect-local-traffic among its args", ic)
	}
}
