package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const cfg = `global:
  scrape_interval: 10s
scrape_configs:
- job_name: a
  kubernetes_sd_configs:
  - role: pod
  - role: pod
    api_server: https://example:6443
- job_name: b
  static_configs:
  - targets: ['localhost:9090']
- job_name: c
  kubernetes_sd_configs:
  - role: pod
    kubeconfig_file: /other
  relabel_configs:
  - action: labelmap
    regex: __meta_kubernetes_pod_label_linkerd_io_proxy_(.+)
    replacement: $1
`

func TestAddKubeconfigOnlyWhereInClusterWouldBeUsed(t *testing.T) {
	out, n, err := addKubeconfig([]byte(cfg), "/pods/p/kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("changed %d entries, want 1:\n%s", n, out)
	}
	var got struct {
		ScrapeConfigs []struct {
			JobName string              `yaml:"job_name"`
			SD      []map[string]string `yaml:"kubernetes_sd_configs"`
			Relabel []map[string]string `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if k := got.ScrapeConfigs[0].SD[0]["kubeconfig_file"]; k != "/pods/p/kubeconfig" {
		t.Errorf("in-cluster entry: kubeconfig_file %q", k)
	}
	if _, ok := got.ScrapeConfigs[0].SD[1]["kubeconfig_file"]; ok {
		t.Error("an entry with api_server got a kubeconfig_file (Prometheus rejects both)")
	}
	if k := got.ScrapeConfigs[2].SD[0]["kubeconfig_file"]; k != "/other" {
		t.Errorf("an explicit kubeconfig_file was replaced: %q", k)
	}
	if r := got.ScrapeConfigs[2].Relabel[0]["replacement"]; r != "$1" {
		t.Errorf("relabelling changed: %q", r)
	}
}

func TestWithKubeconfigRewritesTheConfigFlag(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(in, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	for _, args := range [][]string{
		{"server", "--config.file=" + in, "--storage.tsdb.path=" + data},
		{"server", "--config.file", in, "--storage.tsdb.path", data},
	} {
		out, err := withKubeconfig(args, "/kc")
		if err != nil {
			t.Fatal(err)
		}
		p, _ := flagValue(out, configFlag, "")
		if p != filepath.Join(data, generatedName) {
			t.Fatalf("args %q: config %q", out, p)
		}
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), "kubeconfig_file: /kc") {
			t.Fatalf("generated config: %v\n%s", err, b)
		}
	}
	if _, err := withKubeconfig([]string{"server", "--config.file=" + filepath.Join(dir, "missing.yml")}, "/kc"); err == nil {
		t.Error("a missing config file is not an error")
	}
}
