package inject

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"meshtls/contract"
)

// TestClusterNetworks: LINKERD2_PROXY_DESTINATION_GET_NETWORKS is written
// only when networks are configured, by --cluster-networks or a pod's
// config.linkerd.io/cluster-networks (which wins); unset, the proxy asks
// discovery about every address, which never sends plain text to a
// meshed peer a list left out. Bad values name the flag or annotation.
func TestClusterNetworks(t *testing.T) {
	networksOf := func(annotations string, o Options) (string, bool) {
		t.Helper()
		res, err := Inject([]byte(deployment(annotations)), "db.yml", o)
		if err != nil {
			t.Fatal(err)
		}
		var dep appsv1.Deployment
		if err := yaml.Unmarshal(res.YAML, &dep); err != nil {
			t.Fatal(err)
		}
		for _, c := range dep.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if e.Name == contract.EnvClusterNetworks {
					return e.Value, true
				}
			}
		}
		return "", false
	}
	if v, ok := networksOf("", testOptions); ok {
		t.Errorf("unconfigured: %s=%q written, want it absent", contract.EnvClusterNetworks, v)
	}
	flagged := testOptions
	flagged.ClusterNetworks = " 10.0.0.0/8, fd00::/8 "
	if v, _ := networksOf("", flagged); v != "10.0.0.0/8,fd00::/8" {
		t.Errorf("--cluster-networks: %q", v)
	}
	if v, _ := networksOf(`config.linkerd.io/cluster-networks: "10.42.0.1/16,10.43.0.0/16"`, flagged); v != "10.42.0.0/16,10.43.0.0/16" {
		t.Errorf("annotation over the flag: %q", v)
	}

	res, err := Inject([]byte(deployment(`config.linkerd.io/cluster-networks: "10.0.0.0/8,pods"`)), "db.yml", testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reports) != 1 || res.Reports[0].Outcome != Skipped || !strings.Contains(res.Reports[0].Reason, contract.ClusterNetworksAnnotation) || !strings.Contains(res.Reports[0].Reason, `"pods"`) {
		t.Errorf("bad annotation: reports %+v, want the workload refused naming the annotation and the value", res.Reports)
	}
	bad := testOptions
	bad.ClusterNetworks = "10.0.0.0"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "--cluster-networks") {
		t.Errorf("--cluster-networks=10.0.0.0: %v, want an error naming the flag", err)
	}
}
