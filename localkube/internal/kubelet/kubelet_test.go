package kubelet

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"meshtls/localkube/internal/podnet"
)

func TestImageNameIsTheLastPathElementWithoutTagOrDigest(t *testing.T) {
	for image, want := range map[string]string{
		"ghcr.io/meshtls/proxy:v1":                 "proxy",
		"ghcr.io/meshtls/controller:git-abc":       "controller",
		"localhost:5000/emojivoto":                 "emojivoto",
		"proxy-init":                               "proxy-init",
		"ghcr.io/meshtls/proxy-init@sha256:0a1b2c": "proxy-init",
		"ghcr.io/x/web:v2@sha256:0a1b2c":           "web",
	} {
		if got := ImageName(image); got != want {
			t.Errorf("ImageName(%q) = %q, want %q", image, got, want)
		}
	}
}

func TestResolveFindsTheFirstDirWithTheBinaryAndRefusesClusterBinaries(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, p := range []string{filepath.Join(b, "proxy"), filepath.Join(a, "etcd"), filepath.Join(b, "controller")} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(a, "controller"), []byte("not executable"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := imageMapper{dirs: []string{a, b}}
	if got, err := m.resolve("ghcr.io/meshtls/proxy:v1"); err != nil || got != filepath.Join(b, "proxy") {
		t.Errorf("proxy → %q, %v", got, err)
	}
	if got, err := m.resolve("ghcr.io/meshtls/controller:v1"); err != nil || got != filepath.Join(b, "controller") {
		t.Errorf("controller → %q, %v; a non-executable file must not win", got, err)
	}
	if _, err := m.resolve("quay.io/coreos/etcd:v3"); err == nil {
		t.Error("etcd image mapped to the cluster's own etcd")
	}
	_, err := m.resolve("nginx:1.27")
	if err == nil || !strings.Contains(err.Error(), `"nginx"`) || !strings.Contains(err.Error(), a) {
		t.Errorf("unmapped image error %v should name the binary and the dirs", err)
	}
}

func TestIPAMGivesUniqueAddressesAndReusesReleasedOnes(t *testing.T) {
	a := newIPAM(podnet.ForBlock(42))
	seen := map[string]bool{}
	var first int
	for i := 0; i < podnet.MaxPods; i++ {
		idx, ip, err := a.allocate("")
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = idx
		}
		if ip[0] != 198 || ip[1] != 18 || ip[2] != 42 || ip[3] < 2 || ip[3] == 255 {
			t.Fatalf("pod IP %s outside 198.18.42.2-254", ip)
		}
		if seen[ip.String()] {
			t.Fatalf("address handed out twice: %s", ip)
		}
		seen[ip.String()] = true
	}
	if _, _, err := a.allocate(""); err == nil {
		t.Fatal("a full /24 still handed out an address")
	}
	a.release(first)
	if a.inUse() != podnet.MaxPods-1 {
		t.Fatalf("in use %d after one release, want %d", a.inUse(), podnet.MaxPods-1)
	}
	// The previous IP of a pod is honoured when free.
	_, ip, _ := a.allocate("198.18.42.2")
	if ip.String() != "198.18.42.2" {
		t.Errorf("previous IP not reused: got %s", ip)
	}
	a.release(5)
	_, ip, _ = a.allocate("198.18.42.2")
	if ip.String() == "198.18.42.2" {
		t.Error("an IP in use was handed out again")
	}
	if _, ok := podnet.ForBlock(42).PodIndex(net.ParseIP("198.18.43.7")); ok {
		t.Error("an address of another block counted as ours")
	}
}

func readVolume(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

func TestWriteAtomicSwapsDataAndDropsRemovedKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	changed, err := writeAtomic(dir, map[string]volumeFile{"tls.crt": {data: []byte("c1"), mode: 0o644}, "tls.key": {data: []byte("k1"), mode: 0o600}})
	if err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	first, _ := os.Readlink(filepath.Join(dir, "..data"))
	if got := readVolume(t, dir); got["tls.crt"] != "c1" || got["tls.key"] != "k1" {
		t.Fatalf("after first write: %v", got)
	}
	if st, _ := os.Stat(filepath.Join(dir, "tls.key")); st.Mode().Perm() != 0o600 {
		t.Errorf("tls.key mode %v, want 0600", st.Mode().Perm())
	}
	changed, err = writeAtomic(dir, map[string]volumeFile{"tls.crt": {data: []byte("c1"), mode: 0o644}, "tls.key": {data: []byte("k1"), mode: 0o600}})
	if err != nil || changed {
		t.Fatalf("same payload: changed=%v err=%v, want no change", changed, err)
	}
	changed, err = writeAtomic(dir, map[string]volumeFile{"tls.crt": {data: []byte("c2"), mode: 0o644}})
	if err != nil || !changed {
		t.Fatalf("update: changed=%v err=%v", changed, err)
	}
	second, _ := os.Readlink(filepath.Join(dir, "..data"))
	if second == first {
		t.Error("..data still points at the old payload")
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("old payload dir %s left behind", first)
	}
	if got := readVolume(t, dir); len(got) != 1 || got["tls.crt"] != "c2" {
		t.Errorf("after update: %v, want only tls.crt=c2", got)
	}
}

func TestWriteAtomicReadersNeverSeeAMixedPayload(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	payload := func(v string) map[string]volumeFile {
		return map[string]volumeFile{"a": {data: []byte(v), mode: 0o644}, "b": {data: []byte(v), mode: 0o644}}
	}
	if _, err := writeAtomic(dir, payload("0")); err != nil {
		t.Fatal(err)
	}
	// The writer waits for a successful read before each write, so reads
	// and writes interleave however the two goroutines are scheduled, and
	// a reader that never succeeds fails the test instead of passing it.
	const writes = 200
	var reads atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(stop)
		for i := 1; i < writes; i++ {
			for deadline := time.Now().Add(30 * time.Second); reads.Load() < int64(i); {
				if time.Now().After(deadline) {
					t.Errorf("no successful read for 30 s after write %d (%d reads in all)", i-1, reads.Load())
					return
				}
				runtime.Gosched()
			}
			if _, err := writeAtomic(dir, payload(strings.Repeat("x", i))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	mixed := 0
	for done := false; !done; {
		select {
		case <-stop:
			done = true
		default:
		}
		// Read both files through one resolution of ..data, as a reader
		// holding the directory would. A read may fail when a write
		// removes the payload it resolved; only whole reads count.
		target, err := os.Readlink(filepath.Join(dir, "..data"))
		if err != nil {
			continue
		}
		a, errA := os.ReadFile(filepath.Join(dir, target, "a"))
		b, errB := os.ReadFile(filepath.Join(dir, target, "b"))
		if errA != nil || errB != nil {
			continue
		}
		reads.Add(1)
		if string(a) != string(b) {
			mixed++
		}
	}
	wg.Wait()
	if mixed > 0 {
		t.Errorf("%d of %d reads saw files from different payloads", mixed, reads.Load())
	}
	if reads.Load() < writes-1 {
		t.Errorf("%d successful reads across %d writes", reads.Load(), writes)
	}
}

func TestMountRewriterRewritesPathsUnderMounts(t *testing.T) {
	c := &v1.Container{VolumeMounts: []v1.VolumeMount{
		{Name: "tls", MountPath: "/var/run/linkerd/tls"},
		{Name: "outer", MountPath: "/var/run/linkerd"},
		{Name: "sub", MountPath: "/etc/conf", SubPath: "nested"},
	}}
	rw := newMountRewriter(c, map[string]string{"tls": "/pods/p/volumes/tls", "outer": "/pods/p/volumes/outer", "sub": "/pods/p/volumes/sub"})
	for in, want := range map[string]string{
		"/var/run/linkerd/tls/tls.crt": "/pods/p/volumes/tls/tls.crt",
		"/var/run/linkerd/other":       "/pods/p/volumes/outer/other",
		"/var/run/linkerd":             "/pods/p/volumes/outer",
		"/var/run/linkerdx":            "/var/run/linkerdx",
		"/etc/conf/app.yaml":           "/pods/p/volumes/sub/nested/app.yaml",
		"relative/var/run/linkerd":     "relative/var/run/linkerd",
	} {
		if got := rw.rewrite(in); got != want {
			t.Errorf("rewrite(%q) = %q, want %q", in, got, want)
		}
	}
	if got := rw.rewriteArg("--identity=/var/run/linkerd/tls/tls.crt"); got != "--identity=/pods/p/volumes/tls/tls.crt" {
		t.Errorf("rewriteArg flag form: %q", got)
	}
	env := map[string]string{"DIR": "/var/run/linkerd/tls"}
	args := argv(&v1.Container{Command: []string{"/proxy", "run"}, Args: []string{"$(DIR)/tls.key", "$(UNSET)"}, VolumeMounts: c.VolumeMounts}, env, rw)
	if strings.Join(args, " ") != "run /pods/p/volumes/tls/tls.key $(UNSET)" {
		t.Errorf("argv = %q", args)
	}
}
