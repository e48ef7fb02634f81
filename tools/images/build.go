package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// component is one image: a command of the meshtls module, its uid, and
// any extra tag it is published under.
type component struct {
	Name string
	// Pkg is the main package, relative to the meshtls module root.
	Pkg string
	// User is the image's USER: the uid the manifests that use it run it
	// as, so runAsNonRoot holds even where a manifest sets no uid.
	User string
	// Tags are extra tags besides the version (the demo's manifests name
	// emojivoto:v11).
	Tags []string
}

// components are every image `linkerd install`, `linkerd inject` and the
// demo reference that this repository builds. Prometheus is upstream's
// image (install --prometheus-image).
var components = []component{
	// install runs ca, destination and tap as uid 2103 (install.CAUser).
	{Name: "controller", Pkg: "./cmd/controller", User: "2103"},
	// inject runs the proxy as contract.ProxyUID; proxy-init exempts it.
	{Name: "proxy", Pkg: "./cmd/proxy", User: "2102"},
	// inject runs proxy-init as root with NET_ADMIN added: it writes the
	// pod's nat rules and exits.
	{Name: "proxy-init", Pkg: "./cmd/proxy-init", User: "0"},
	// The demo app: no securityContext in demo/emojivoto.yml, so the
	// image's nonroot user is what it runs as.
	{Name: "emojivoto", Pkg: "./cmd/emojivoto", User: "65532", Tags: []string{"v11"}},
}

func componentByName(name string) (component, bool) {
	for _, c := range components {
		if c.Name == name {
			return c, true
		}
	}
	return component{}, false
}

// buildConfig is what `images build` was asked for.
type buildConfig struct {
	// Root is the meshtls module's root (the checkout).
	Root string
	// Out receives oci/ (an OCI image layout) and the archive.
	Out string
	// Version tags every image and is stamped into every binary.
	Version string
	// Registry prefixes the names recorded in the layout
	// (io.containerd.image.name): what install and inject reference.
	Registry string
	// Epoch (SOURCE_DATE_EPOCH, the commit's time) dates every file,
	// config and history entry, so a commit always gives the same digests.
	Epoch     time.Time
	Platforms []v1.Platform
	Images    []component
	// Log receives one line per step.
	Log io.Writer
}

// result is one built image index.
type result struct {
	Component component
	Index     v1.ImageIndex
	Digest    v1.Hash
	// Images are the per-platform images, in Platforms' order.
	Images []v1.Image
}

// archiveName is the OCI archive's file name under Out.
func archiveName(version string) string { return "meshtls-" + version + ".oci.tar" }

// build builds every image for every platform, writes them to a fresh
// OCI layout under Out/oci and packs that into one archive.
func build(ctx context.Context, cfg buildConfig) ([]result, error) {
	if cfg.Version == "" {
		return nil, fmt.Errorf("--version is empty: pass the Makefile's VERSION (scripts/version.sh)")
	}
	work, err := os.MkdirTemp("", "meshtls-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	var results []result
	for _, c := range cfg.Images {
		r := result{Component: c}
		var adds []mutate.IndexAddendum
		for _, p := range cfg.Platforms {
			bin := filepath.Join(work, p.Architecture, c.Name)
			fmt.Fprintf(cfg.Log, "images: go build %s for %s/%s\n", c.Pkg, p.OS, p.Architecture)
			if err := goBuild(ctx, cfg, c, p, bin); err != nil {
				return nil, err
			}
			img, err := imageFor(cfg, c, p, bin)
			if err != nil {
				return nil, fmt.Errorf("%s %s/%s: %w", c.Name, p.OS, p.Architecture, err)
			}
			pl := p
			adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &pl}})
			r.Images = append(r.Images, img)
		}
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		idx = mutate.AppendManifests(idx, adds...)
		if r.Digest, err = idx.Digest(); err != nil {
			return nil, err
		}
		r.Index = idx
		results = append(results, r)
	}

	ociDir := filepath.Join(cfg.Out, "oci")
	if err := os.RemoveAll(ociDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	lp, err := layout.Write(ociDir, empty.Index)
	if err != nil {
		return nil, err
	}
	for _, r := range results {
		for _, tag := range append([]string{cfg.Version}, r.Component.Tags...) {
			ref := cfg.Registry + "/" + r.Component.Name + ":" + tag
			// containerd (ctr images import, so kind and k3s) names the
			// image from io.containerd.image.name; ref.name is the tag, as
			// the image-spec says.
			err := lp.AppendIndex(r.Index, layout.WithAnnotations(map[string]string{
				"io.containerd.image.name":          ref,
				"org.opencontainers.image.ref.name": tag,
			}))
			if err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(cfg.Log, "images: %s/%s:%s %s\n", cfg.Registry, r.Component.Name, cfg.Version, r.Digest)
	}
	// An archive of another version is stale: one archive, the one
	// oci/ holds, so `kind load image-archive bin/images/*.oci.tar` loads
	// what was just built.
	old, _ := filepath.Glob(filepath.Join(cfg.Out, archiveName("*")))
	for _, f := range old {
		_ = os.Remove(f)
	}
	archive := filepath.Join(cfg.Out, archiveName(cfg.Version))
	if err := tarDir(ociDir, archive, cfg.Epoch); err != nil {
		return nil, err
	}
	if err := writeDigests(filepath.Join(cfg.Out, digestsName), cfg.Version, results); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Log, "images: wrote %s, %s and %s\n", ociDir, archive, digestsName)
	return results, nil
}

// digestsName is the digest file under Out: what `linkerd install
// --image-digests` and `linkerd inject --image-digests` read to pin each
// image by its index digest.
const digestsName = "digests.json"

// digestFile is the digest file's shape (meshtls/internal/imageref
// reads it).
type digestFile struct {
	Version string            `json:"version"`
	Images  map[string]string `json:"images"`
}

func writeDigests(path, version string, results []result) error {
	f := digestFile{Version: version, Images: map[string]string{}}
	for _, r := range results {
		f.Images[r.Component.Name] = r.Digest.String()
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// goBuild builds a static binary: no cgo (a scratch image has no libc),
// paths trimmed and no VCS stamp (the build does not depend on where the
// checkout is), the version stamped as make stamps it.
func goBuild(ctx context.Context, cfg buildConfig, c component, p v1.Platform, out string) error {
	ldflags := "-s -w -X meshtls/cli.Version=" + cfg.Version + " -X meshtls/internal/version.Version=" + cfg.Version
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, c.Pkg)
	cmd.Dir = cfg.Root
	env := []string{"CGO_ENABLED=0", "GOOS=" + p.OS, "GOARCH=" + p.Architecture, "GOFLAGS=-buildvcs=false"}
	if p.Variant != "" && p.Architecture == "arm" {
		env = append(env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s/%s: %v\n%s", c.Pkg, p.OS, p.Architecture, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// File paths inside every image.
func entrypoint(c component) string { return "/" + c.Name }
func sbomPath(c component) string {
	return "/usr/share/sbom/" + c.Name + ".spdx.json"
}

// imageFor puts the binary and its SBOM on an empty base.
func imageFor(cfg buildConfig, c component, p v1.Platform, bin string) (v1.Image, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	info, err := buildinfo.Read(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("reading the build info of %s: %w", bin, err)
	}
	sbom, err := spdxFor(c, cfg.Version, cfg.Epoch, p, info)
	if err != nil {
		return nil, err
	}
	layerTar, err := layerTar(cfg.Epoch, []file{
		{Path: entrypoint(c), Mode: 0o755, Data: data},
		{Path: sbomPath(c), Mode: 0o644, Data: sbom},
	})
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: cfg.Epoch}, CreatedBy: "meshtls tools/images: " + c.Pkg, Comment: "static binary and its SPDX SBOM"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: cfg.Epoch}
	cf.Author = "meshtls"
	cf.Config = v1.Config{
		Entrypoint: []string{entrypoint(c)},
		User:       c.User,
		Env:        []string{"PATH=/"},
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":   c.Name,
			"org.opencontainers.image.version": cfg.Version,
			"org.opencontainers.image.created": cfg.Epoch.UTC().Format(time.RFC3339),
			"dev.meshtls.sbom":                 sbomPath(c),
		},
	}
	return mutate.ConfigFile(img, cf)
}

type file struct {
	Path string
	Mode int64
	Data []byte
}

// layerTar is a tar of files and their parent directories with fixed
// metadata: owner 0:0, no user or group names, every time the epoch, in
// path order. Only the bytes and the modes vary, so the digest does too
// only when they do.
func layerTar(epoch time.Time, files []file) ([]byte, error) {
	dirs := map[string]bool{}
	for _, f := range files {
		for d := filepath.Dir(strings.TrimPrefix(f.Path, "/")); d != "." && d != "/"; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	type entry struct {
		name string
		f    *file
	}
	var entries []entry
	for d := range dirs {
		entries = append(entries, entry{name: d + "/"})
	}
	for i := range files {
		entries = append(entries, entry{name: strings.TrimPrefix(files[i].Path, "/"), f: &files[i]})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, ModTime: epoch, Uid: 0, Gid: 0, Format: tar.FormatPAX}
		if e.f == nil {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		} else {
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, e.f.Mode, int64(len(e.f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if e.f != nil {
			if _, err := tw.Write(e.f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarDir packs an OCI layout into one archive (what `kind load
// image-archive`, `ctr images import` and `podman load` take) with the same
// fixed metadata as the layers, so the archive is reproducible too.
func tarDir(dir, out string, epoch time.Time) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, p := range paths {
		rel, _ := filepath.Rel(dir, p)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Format: tar.FormatPAX}
		if st.IsDir() {
			h.Name += "/"
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, st.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// parsePlatforms reads "linux/amd64,linux/arm64".
func parsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := v1.ParsePlatform(f)
		if err != nil || p.OS != "linux" || p.Architecture == "" {
			return nil, fmt.Errorf("--platforms: %q is not linux/ARCH (e.g. linux/amd64,linux/arm64)", f)
		}
		out = append(out, *p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--platforms is empty: e.g. linux/amd64,linux/arm64")
	}
	return out, nil
}

// hostPlatform is the platform of this machine, for tests that run a
// binary natively.
func hostPlatform() v1.Platform { return v1.Platform{OS: "linux", Architecture: runtime.GOARCH} }
