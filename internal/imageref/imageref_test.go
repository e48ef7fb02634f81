package imageref

import (
	"strings"
	"testing"
)

func TestRef(t *testing.T) {
	i := Images{Registry: "localhost:5000/m", Version: "v1"}
	if got := i.Ref("proxy"); got != "localhost:5000/m/proxy:v1" {
		t.Errorf("Ref = %q", got)
	}
	d := "sha256:" + strings.Repeat("a", 64)
	i.Digests = map[string]string{"proxy": d}
	if got := i.Ref("proxy"); got != "localhost:5000/m/proxy:v1@"+d {
		t.Errorf("Ref with digest = %q", got)
	}
	if got := i.Ref("proxy-init"); got != "localhost:5000/m/proxy-init:v1" {
		t.Errorf("Ref without its digest = %q", got)
	}
}

func TestChecks(t *testing.T) {
	for r, ok := range map[string]bool{
		"ghcr.io/meshtls": true, "localhost:5000": true, "127.0.0.1:5000/a/b": true, "registry.example:5000/mesh-tls": true,
		"": false, "https://ghcr.io": false, "ghcr.io/": false, "ghcr.io/Mesh": false, "ghcr.io/m:v1": false, "ghcr.io/m@sha256:1": false, "a b": false,
	} {
		if err := CheckRegistry("--registry", r); (err == nil) != ok {
			t.Errorf("registry %q: err %v, want ok=%v", r, err, ok)
		}
	}
	for v, ok := range map[string]bool{"v0.1.0": true, "dev": true, "dev-v0.2.0-3-g1a2b3c4-dirty": true, "": false, "-x": false, ".x": false, "a/b": false, strings.Repeat("a", 129): false} {
		if err := CheckVersion("--version", v); (err == nil) != ok {
			t.Errorf("version %q: err %v, want ok=%v", v, err, ok)
		}
	}
	for v, want := range map[string]bool{"dev": true, "dev-abc": true, "v1.0.0": false, "devel": false} {
		if Unpublished(v) != want {
			t.Errorf("Unpublished(%q) != %v", v, want)
		}
	}
	if p, err := PullPolicy(""); err != nil || p != "IfNotPresent" {
		t.Errorf("default pull policy %q, %v", p, err)
	}
	if s, err := PullSecrets([]string{"a", "b", "a"}); err != nil || len(s) != 2 {
		t.Errorf("pull secrets %v, %v: want a and b once", s, err)
	}
}
