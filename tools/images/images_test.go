package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// The tests build proxy-init, the smallest image, for both platforms: the
// same code path as every image, at a fraction of the CPU.
const testVersion = "v0.0.0-test"

var (
	testEpoch     = time.Unix(1796680916, 0).UTC()
	testPlatforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "proxy-init")); err != nil {
		t.Fatalf("tools/images's tests build from the checkout two levels up: %v", err)
	}
	return root
}

func testBuild(t *testing.T, out string, images ...string) []result {
	t.Helper()
	var cs []component
	for _, n := range images {
		c, ok := componentByName(n)
		if !ok {
			t.Fatalf("no component %s", n)
		}
		cs = append(cs, c)
	}
	var log bytes.Buffer
	res, err := build(context.Background(), buildConfig{
		Root: repoRoot(t), Out: out, Version: testVersion, Registry: "ghcr.io/meshtls",
		Epoch: testEpoch, Platforms: testPlatforms, Images: cs, Log: &log,
	})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log.String())
	}
	return res
}

var (
	sharedOnce sync.Once
	sharedOut  string
	sharedRes  []result
	sharedErr  error
)

// shared is one build of proxy-init that the read-only tests share.
func shared(t *testing.T) (string, []result) {
	t.Helper()
	sharedOnce.Do(func() {
		sharedOut, sharedErr = os.MkdirTemp("", "images-test-")
		if sharedErr != nil {
			return
		}
		sharedRes = testBuild(t, sharedOut, "proxy-init")
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return sharedOut, sharedRes
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedOut != "" {
		_ = os.RemoveAll(sharedOut)
	}
	os.Exit(code)
}

// Two builds of the same tree, into different directories, give the
// same index digest and byte-identical archives.
func TestBuildIsReproducible(t *testing.T) {
	outA, resA := shared(t)
	outB := t.TempDir()
	resB := testBuild(t, outB, "proxy-init")
	if resA[0].Digest != resB[0].Digest {
		t.Errorf("index digests differ: %s and %s", resA[0].Digest, resB[0].Digest)
	}
	for i := range resA[0].Images {
		da, _ := resA[0].Images[i].Digest()
		db, _ := resB[0].Images[i].Digest()
		if da != db {
			t.Errorf("%s image digests differ: %s and %s", testPlatforms[i].Architecture, da, db)
		}
	}
	// The digest file names what was built, for install and inject.
	var df digestFile
	if data, err := os.ReadFile(filepath.Join(outA, digestsName)); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(data, &df); err != nil {
		t.Fatal(err)
	}
	if df.Version != testVersion || len(df.Images) != 1 || df.Images["proxy-init"] != resA[0].Digest.String() {
		t.Errorf("%s holds %+v, want version %s and proxy-init at %s", digestsName, df, testVersion, resA[0].Digest)
	}
	a, err := os.ReadFile(filepath.Join(outA, archiveName(testVersion)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(outB, archiveName(testVersion)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("the two archives differ (%d and %d bytes)", len(a), len(b))
	}
}

// layerFiles reads an image's single layer.
func layerFiles(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	files, _ := layerFilesData(t, img)
	return files
}

func layerFilesData(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want exactly one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	hdrs, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name], data[h.Name] = h, b
	}
	return hdrs, data
}

// Each platform's image is valid, runs its static binary of the right
// architecture as the right user, with fixed file metadata and an SBOM.
func TestImagesAreStaticPerPlatformWithSBOM(t *testing.T) {
	out, res := shared(t)
	r := res[0]
	// What a user gets is the layout on disk: validate that, every blob's
	// digest and size included.
	onDisk, err := layout.ImageIndexFromPath(filepath.Join(out, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(onDisk); err != nil {
		t.Fatalf("validate.Index of the layout: %v", err)
	}
	im, err := r.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(testPlatforms) {
		t.Fatalf("index has %d manifests, want %d", len(im.Manifests), len(testPlatforms))
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for i, p := range testPlatforms {
		if got := im.Manifests[i].Platform; got == nil || got.Architecture != p.Architecture || got.OS != "linux" {
			t.Errorf("index entry %d: platform %v, want %s", i, got, p)
		}
		img := r.Images[i]
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != p.Architecture || cf.OS != "linux" {
			t.Errorf("%s config says %s/%s", p.Architecture, cf.OS, cf.Architecture)
		}
		if strings.Join(cf.Config.Entrypoint, " ") != "/proxy-init" || cf.Config.User != "0" {
			t.Errorf("%s config: entrypoint %q user %q; want /proxy-init as 0 (inject runs it as root with NET_ADMIN)", p.Architecture, cf.Config.Entrypoint, cf.Config.User)
		}
		if !cf.Created.Time.Equal(testEpoch) {
			t.Errorf("%s created %s, want the epoch %s", p.Architecture, cf.Created.Time, testEpoch)
		}
		hdrs, data := layerFilesData(t, img)
		for name, h := range hdrs {
			if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(testEpoch) {
				t.Errorf("%s %s: owner %d:%d (%q:%q), mtime %s; want 0:0, no names, the epoch", p.Architecture, name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
			}
		}
		bin, ok := hdrs["proxy-init"]
		if !ok || bin.Mode != 0o755 {
			t.Fatalf("%s: the layer has no /proxy-init of mode 0755: %v", p.Architecture, hdrs)
		}
		f, err := elf.NewFile(bytes.NewReader(data["proxy-init"]))
		if err != nil {
			t.Fatalf("%s /proxy-init is not ELF: %v", p.Architecture, err)
		}
		if f.Machine != machines[p.Architecture] {
			t.Errorf("%s /proxy-init is built for %s", p.Architecture, f.Machine)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s /proxy-init is dynamically linked (PT_INTERP): it cannot run on an empty base", p.Architecture)
			}
		}
		var doc struct {
			SPDXVersion string `json:"spdxVersion"`
			Packages    []struct {
				Name        string `json:"name"`
				VersionInfo string `json:"versionInfo"`
			} `json:"packages"`
		}
		sbom := data["usr/share/sbom/proxy-init.spdx.json"]
		if err := json.Unmarshal(sbom, &doc); err != nil {
			t.Fatalf("%s SBOM: %v", p.Architecture, err)
		}
		have := map[string]string{}
		for _, pkg := range doc.Packages {
			have[pkg.Name] = pkg.VersionInfo
		}
		if doc.SPDXVersion != "SPDX-2.3" || have["meshtls/cmd/proxy-init"] != testVersion || !strings.HasPrefix(have["stdlib"], "go1.") || have["github.com/spf13/cobra"] == "" {
			t.Errorf("%s SBOM lacks the main package at %s, stdlib or cobra: %v", p.Architecture, testVersion, have)
		}
	}
	// The layout on disk names the image as install references it.
	lp, err := layout.FromPath(filepath.Join(out, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	rim, _ := root.IndexManifest()
	if len(rim.Manifests) != 1 || rim.Manifests[0].Annotations["io.containerd.image.name"] != "ghcr.io/meshtls/proxy-init:"+testVersion || rim.Manifests[0].Digest != r.Digest {
		t.Errorf("layout index: %+v; want one entry ghcr.io/meshtls/proxy-init:%s at %s", rim.Manifests, testVersion, r.Digest)
	}
}

// The host's image runs and prints the version it was built with.
func TestHostBinaryPrintsTheImageVersion(t *testing.T) {
	_, res := shared(t)
	for i, p := range testPlatforms {
		if p.Architecture != hostPlatform().Architecture {
			continue
		}
		_, data := layerFilesData(t, res[0].Images[i])
		bin := filepath.Join(t.TempDir(), "proxy-init")
		if err := os.WriteFile(bin, data["proxy-init"], 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), testVersion) {
			t.Fatalf("proxy-init --version: %v, %q; want %s", err, out, testVersion)
		}
		return
	}
	t.Skipf("no %s platform among %v", hostPlatform().Architecture, testPlatforms)
}

// make images-push: every tag reaches a registry on loopback with the
// digests that were built, and each platform's image can be pulled.
func TestPushToARegistry(t *testing.T) {
	out, res := shared(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	srv.Listener.Close()
	srv.Listener = l
	srv.Config.ErrorLog = nil
	srv.Start()
	t.Cleanup(srv.Close)
	host := l.Addr().String()

	var log bytes.Buffer
	done, err := push(context.Background(), out, host+"/mirror/meshtls", false, &log)
	if err != nil {
		t.Fatalf("push: %v\n%s", err, log.String())
	}
	if len(done) != 1 {
		t.Fatalf("pushed %v, want one tag", done)
	}
	ref, err := name.ParseReference(host + "/mirror/meshtls/proxy-init:" + testVersion)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	if d, _ := idx.Digest(); d != res[0].Digest {
		t.Errorf("registry has %s at %s, built %s", ref, d, res[0].Digest)
	}
	arm, err := remote.Image(ref, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"}))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := res[0].Images[1].Digest()
	if got, _ := arm.Digest(); got != want {
		t.Errorf("linux/arm64 from the registry is %s, built %s", got, want)
	}
	if _, ok := layerFiles(t, arm)["proxy-init"]; !ok {
		t.Error("the pulled arm64 image has no /proxy-init")
	}

	// A registry that is not there: one error naming it, nothing half done.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	if _, err := push(context.Background(), out, deadAddr+"/meshtls", false, io.Discard); err == nil || !strings.Contains(err.Error(), deadAddr) {
		t.Errorf("push to a closed port: %v; want an error naming %s", err, deadAddr)
	}
}

// A push before any build says what to run.
func TestPushWithoutABuildSaysSo(t *testing.T) {
	_, err := push(context.Background(), t.TempDir(), "127.0.0.1:1/meshtls", false, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "make images") {
		t.Fatalf("push of nothing: %v; want an error saying to run make images", err)
	}
}

// Bad flags give one line naming the flag.
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"build", "--version", "v1", "--source-date-epoch", "yesterday"}, "SOURCE_DATE_EPOCH"},
		{[]string{"build", "--version", "v1", "--source-date-epoch", "1", "--platforms", "windows/amd64"}, "--platforms"},
		{[]string{"build", "--version", "v1", "--source-date-epoch", "1", "--images", "nginx"}, `"nginx"`},
		{[]string{"build", "--source-date-epoch", "1"}, "--version"},
		{[]string{"push"}, "REGISTRY"},
		{[]string{"frobnicate"}, "frobnicate"},
	} {
		t.Setenv("SOURCE_DATE_EPOCH", "")
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want an error naming %s", tc.args, err, tc.want)
		}
	}
}

// Every image's arm64 entrypoint runs, under qemu-user-static, far enough
// to print the version it was built with: static, arm64, and the
// right binary behind each name.
func TestArm64EntrypointsPrintTheirVersionUnderQemu(t *testing.T) {
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Skipf("needs qemu-aarch64-static (Debian qemu-user-static, make deps): %v", err)
	}
	var names []string
	for _, c := range components {
		names = append(names, c.Name)
	}
	var cs []component
	for _, n := range names {
		c, _ := componentByName(n)
		cs = append(cs, c)
	}
	var log bytes.Buffer
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64"}
	res, err := build(context.Background(), buildConfig{
		Root: repoRoot(t), Out: t.TempDir(), Version: testVersion, Registry: "ghcr.io/meshtls",
		Epoch: testEpoch, Platforms: []v1.Platform{arm64}, Images: cs, Log: &log,
	})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log.String())
	}
	dir := t.TempDir()
	for _, r := range res {
		img := r.Images[0]
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != "arm64" || len(cf.Config.Entrypoint) != 1 {
			t.Fatalf("%s: %s image, entrypoint %q", r.Component.Name, cf.Architecture, cf.Config.Entrypoint)
		}
		_, data := layerFilesData(t, img)
		entry := strings.TrimPrefix(cf.Config.Entrypoint[0], "/")
		bin := filepath.Join(dir, entry)
		if err := os.WriteFile(bin, data[entry], 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(qemu, bin, "--version").CombinedOutput()
		want := r.Component.Name + " version " + testVersion
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("qemu-aarch64-static %s --version: %v, %q; want %q", cf.Config.Entrypoint[0], err, out, want)
		}
	}
}
