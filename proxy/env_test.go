package proxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"meshtls/contract"
)

// The tap port's one identity is the tap API's, derived from the control
// plane's namespace, never the destination service's.
func TestFromEnvTapIdentity(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := FromEnv(env(map[string]string{contract.EnvControllerNS: "mesh",
		contract.EnvTLSControllerID: contract.ControllerIdentity(contract.ControllerComponent, "mesh")}))
	if err != nil {
		t.Fatal(err)
	}
	if want := "linkerd-tap.deployment.mesh.linkerd-managed.mesh.svc.cluster.local"; c.TapIdentity != want || c.TapIdentity == c.ControllerIdentity {
		t.Errorf("tap identity %q, want %q (controller %q)", c.TapIdentity, want, c.ControllerIdentity)
	}
	c, err = FromEnv(env(map[string]string{contract.EnvControllerNS: "mesh", contract.EnvTLSTapID: "x.deployment.mesh.linkerd-managed.mesh.svc.cluster.local"}))
	if err != nil || c.TapIdentity != "x.deployment.mesh.linkerd-managed.mesh.svc.cluster.local" {
		t.Errorf("override: %q %v", c.TapIdentity, err)
	}
	if c, _ := FromEnv(env(nil)); c.TapIdentity != "" {
		t.Errorf("tap identity %q with no control plane named", c.TapIdentity)
	}
}

func TestFromEnvDiscoveryAndLifecycle(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := FromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []uint16{25, 587, 3306, 4444, 5432, 6379, 9300, 11211} {
		if !c.OpaquePorts[p] {
			t.Errorf("default opaque ports miss %d", p)
		}
	}
	if c.OpaquePorts[80] || len(c.ClusterNetworks) != 0 || c.ShutdownGrace != 2*time.Minute || c.DrainDelay != 5*time.Second {
		t.Errorf("defaults: opaque %v networks %v grace %s drain %s", c.OpaquePorts, c.ClusterNetworks, c.ShutdownGrace, c.DrainDelay)
	}
	c, err = FromEnv(env(map[string]string{
		contract.EnvOpaquePorts:     "5000-5002, 7000",
		contract.EnvClusterNetworks: "10.0.0.0/8, fd00::/8",
		contract.EnvShutdownGrace:   "30s",
		contract.EnvDrainDelay:      "0s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.OpaquePorts[5001] || !c.OpaquePorts[7000] || c.OpaquePorts[3306] || len(c.OpaquePorts) != 4 {
		t.Errorf("opaque ports %v", c.OpaquePorts)
	}
	if len(c.ClusterNetworks) != 2 || c.ClusterNetworks[0] != netip.MustParsePrefix("10.0.0.0/8") || c.ShutdownGrace != 30*time.Second || c.DrainDelay != 0 {
		t.Errorf("networks %v grace %s drain %s", c.ClusterNetworks, c.ShutdownGrace, c.DrainDelay)
	}
	for name, v := range map[string]string{
		contract.EnvOpaquePorts:     "70000",
		contract.EnvClusterNetworks: "10.0.0.0",
		contract.EnvShutdownGrace:   "forever",
	} {
		if _, err := FromEnv(env(map[string]string{name: v})); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: %v, want an error naming the variable", name, v, err)
		}
	}
}

// TestFromEnvTuning: the metrics retention, the authority bound and the
// opaque idle timeout have variables (Linkerd's names where it has one);
// unset they keep the defaults, and a bad value is an error naming the
// variable and what it wants.
func TestFromEnvTuning(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := FromEnv(env(map[string]string{
		contract.EnvMetricsRetainIdle: "90s",
		contract.EnvMaxAuthorities:    "50",
		contract.EnvTCPIdleTimeout:    "15m",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsRetainIdle != 90*time.Second || c.MaxAuthorities != 50 || c.TCPIdleTimeout != 15*time.Minute {
		t.Errorf("retain %s authorities %d idle %s, want 90s 50 15m", c.MetricsRetainIdle, c.MaxAuthorities, c.TCPIdleTimeout)
	}
	c, err = FromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	c.defaults()
	if c.MetricsRetainIdle != 10*time.Minute || c.MaxAuthorities != 1000 || c.TCPIdleTimeout != time.Hour {
		t.Errorf("defaults: retain %s authorities %d idle %s", c.MetricsRetainIdle, c.MaxAuthorities, c.TCPIdleTimeout)
	}
	for _, bad := range []struct{ name, v, want string }{
		{contract.EnvMetricsRetainIdle, "ten minutes", "duration"},
		{contract.EnvMetricsRetainIdle, "0s", "positive"},
		{contract.EnvMetricsRetainIdle, "-1m", "positive"},
		{contract.EnvMaxAuthorities, "lots", "whole number"},
		{contract.EnvMaxAuthorities, "0", "whole number"},
		{contract.EnvMaxAuthorities, "-5", "whole number"},
		{contract.EnvTCPIdleTimeout, "1 hour", "duration"},
		{contract.EnvTCPIdleTimeout, "0", "positive"},
	} {
		_, err := FromEnv(env(map[string]string{bad.name: bad.v}))
		if err == nil || !strings.Contains(err.Error(), bad.name) || !strings.Contains(err.Error(), bad.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s=%q: %v, want one line naming the variable and %q", bad.name, bad.v, err, bad.want)
		}
	}
}
