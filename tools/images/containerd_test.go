//go:build integration

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// containerd's default capabilities, all dropped so that a container
// holds only what the test adds, as `capabilities: {drop: [ALL], add:
// [NET_ADMIN]}` would give it.
var defaultCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}

const netnsPrefix = "mtlsimg-"

// cleanStaleNetns deletes the namespaces of killed runs (named after
// their test's pid).
func cleanStaleNetns() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		pid, err := strconv.Atoi(strings.TrimPrefix(name, netnsPrefix))
		if !strings.HasPrefix(name, netnsPrefix) || err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			_ = exec.Command("ip", "netns", "delete", name).Run()
		}
	}
}

// TestContainerdImportsAndRunsTheArchive does what `kind load
// image-archive` does on a kind node (ctr images import --all-platforms
// --digests into containerd's k8s.io namespace), with Debian's containerd
// and runc, then runs the images from containerd's store: the proxy
// prints its version, and proxy-init, holding NET_ADMIN and nothing else
// on a read-only root, writes its nf_tables rules in a network namespace
// from an image that has no iptables, and without NET_ADMIN fails with one
// line saying so.
func TestContainerdImportsAndRunsTheArchive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containerd")
	}
	for _, tool := range []string{"containerd", "ctr", "runc", "ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v (make deps)", tool, err)
		}
	}
	cleanStaleNetns()
	host := hostPlatform()
	out := t.TempDir()
	var cs []component
	for _, n := range []string{"proxy", "proxy-init"} {
		c, _ := componentByName(n)
		cs = append(cs, c)
	}
	var log bytes.Buffer
	res, err := build(context.Background(), buildConfig{
		Root: repoRoot(t), Out: out, Version: testVersion, Registry: "ghcr.io/meshtls",
		Epoch: testEpoch, Platforms: []v1.Platform{host}, Images: cs, Log: &log,
	})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log.String())
	}

	// containerd on its own dirs and socket, the CRI plugin off.
	dir, err := os.MkdirTemp("", "mtlsimg-containerd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	cfg := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var daemonLog bytes.Buffer
	daemon := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	daemon.Stdout, daemon.Stderr = &daemonLog, &daemonLog
	daemon.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = daemon.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = daemon.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = daemon.Process.Kill()
			<-done
		}
		// Snapshots are overlay mounts under root only while a
		// container runs; --rm removed them.
		_ = os.RemoveAll(dir)
	})
	ctr := func(args ...string) (string, error) {
		cmd := exec.Command("ctr", append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := ctr("version"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s:\n%s", sock, daemonLog.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	archive := filepath.Join(out, archiveName(testVersion))
	if o, err := ctr("images", "import", "--all-platforms", "--digests", "--snapshotter=overlayfs", archive); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, o)
	}
	list, err := ctr("images", "ls")
	if err != nil {
		t.Fatalf("ctr images ls: %v\n%s", err, list)
	}
	for _, r := range res {
		ref := "ghcr.io/meshtls/" + r.Component.Name + ":" + testVersion
		found := false
		for _, line := range strings.Split(list, "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == ref {
				found = true
				if f[2] != r.Digest.String() {
					t.Errorf("containerd has %s at %s, built %s", ref, f[2], r.Digest)
				}
			}
		}
		if !found {
			t.Errorf("containerd did not name %s after the import:\n%s", ref, list)
		}
	}

	proxy := "ghcr.io/meshtls/proxy:" + testVersion
	if o, err := ctr("run", "--rm", "--read-only", proxy, fmt.Sprintf("mtlsimg-proxy-%d", os.Getpid()), "/proxy", "--version"); err != nil || strings.TrimSpace(o) != "proxy version "+testVersion {
		t.Errorf("ctr run %s /proxy --version: %v, %q", proxy, err, o)
	}

	ns := fmt.Sprintf("%s%d", netnsPrefix, os.Getpid())
	if o, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, o)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", ns).Run() })
	initImage := "ghcr.io/meshtls/proxy-init:" + testVersion
	runInit := func(name string, caps ...string) (string, error) {
		// A read-only root filesystem too: nft mode writes no file (no
		// xtables lock), so inject may ask for readOnlyRootFilesystem.
		args := []string{"run", "--rm", "--read-only", "--with-ns", "network:/run/netns/" + ns}
		for _, c := range defaultCaps {
			args = append(args, "--cap-drop", c)
		}
		for _, c := range caps {
			args = append(args, "--cap-add", c)
		}
		args = append(args, initImage, fmt.Sprintf("mtlsimg-%s-%d", name, os.Getpid()),
			"/proxy-init", "--proxy-uid", "2102", "--inbound-ports-to-ignore", "4190,4191")
		return ctr(args...)
	}
	o, err := runInit("nocap")
	if err == nil || !strings.Contains(o, "Error: nftables:") || !strings.Contains(o, "needs NET_ADMIN") {
		t.Errorf("proxy-init without NET_ADMIN: %v, %q; want a failure naming NET_ADMIN", err, o)
	}
	if o, err := runInit("netadmin", "CAP_NET_ADMIN"); err != nil || !strings.Contains(o, "nftables table inet proxy_init installed") {
		t.Fatalf("proxy-init with NET_ADMIN only: %v\n%s", err, o)
	}
	rules, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "proxy_init").CombinedOutput()
	if err != nil || !strings.Contains(string(rules), "meta l4proto tcp redirect to :4143") || !strings.Contains(string(rules), "meta skuid 2102 return") {
		t.Errorf("the pod's namespace after proxy-init: %v\n%s", err, rules)
	}
}
