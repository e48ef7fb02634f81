// Package imageref builds the image references install and inject print:
// <registry>/<name>:<version>, optionally pinned by digest, with the
// values every cluster asks for (registry, pull policy) validated once.
package imageref

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// DefaultRegistry holds the published images.
const DefaultRegistry = "ghcr.io/meshtls"

// RegistryEnv, when set, replaces DefaultRegistry as the default of
// --registry (the flag still wins), as Linkerd's CLI does.
const RegistryEnv = "LINKERD_DOCKER_REGISTRY"

// DefaultRegistryFromEnv is the default of --registry.
func DefaultRegistryFromEnv() string {
	if r := strings.TrimSpace(os.Getenv(RegistryEnv)); r != "" {
		return r
	}
	return DefaultRegistry
}

// Images names our images: Registry/Name:Version, and @Digests[Name]
// when a digest is known.
type Images struct {
	Registry string
	Version  string
	// Digests maps an image name (controller, proxy, …) to its index
	// digest; nil prints tags only.
	Digests map[string]string
}

// Ref is the reference of image name.
func (i Images) Ref(name string) string {
	ref := i.Registry + "/" + name + ":" + i.Version
	if d, ok := i.Digests[name]; ok {
		ref += "@" + d
	}
	return ref
}

var (
	// A registry host (with an optional port) and path, lower case, as
	// the distribution reference grammar allows.
	registryRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$`)
	tagRE      = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	digestRE   = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// CheckRegistry rejects what no image reference can start with.
func CheckRegistry(flag, r string) error {
	if !registryRE.MatchString(r) {
		return fmt.Errorf("invalid %s %q: want host[:port][/path] in lower case, without scheme, tag or trailing slash (e.g. ghcr.io/you/meshtls or localhost:5000)", flag, r)
	}
	return nil
}

// CheckVersion rejects what is not an image tag.
func CheckVersion(flag, v string) error {
	if v == "" {
		return fmt.Errorf("empty %s: set it to the images' tag", flag)
	}
	if !tagRE.MatchString(v) {
		return fmt.Errorf("invalid %s %q: an image tag is up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'", flag, v)
	}
	return nil
}

// PullPolicy parses --image-pull-policy; empty means IfNotPresent.
func PullPolicy(s string) (corev1.PullPolicy, error) {
	switch p := corev1.PullPolicy(s); p {
	case "":
		return corev1.PullIfNotPresent, nil
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		return p, nil
	}
	return "", fmt.Errorf("invalid --image-pull-policy %q: want Always, IfNotPresent or Never", s)
}

// PullSecrets checks --image-pull-secret names (Secret names are DNS
// subdomains) and returns them without duplicates, in the given order.
func PullSecrets(names []string) ([]corev1.LocalObjectReference, error) {
	var refs []corev1.LocalObjectReference
	seen := map[string]bool{}
	for _, n := range names {
		if !secretNameRE.MatchString(n) || len(n) > 253 {
			return nil, fmt.Errorf("invalid --image-pull-secret %q: a Secret name is lower-case letters, digits, '-' and '.'", n)
		}
		if !seen[n] {
			seen[n] = true
			refs = append(refs, corev1.LocalObjectReference{Name: n})
		}
	}
	return refs, nil
}

var secretNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// DigestFile is what `make images` writes to bin/images/digests.json: the
// version it built and each image's index digest.
type DigestFile struct {
	Version string            `json:"version"`
	Images  map[string]string `json:"images"`
}

// ReadDigests reads a digest file for images of version and checks it
// names every image in need.
func ReadDigests(path, version string, need ...string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read --image-digests: %w", err)
	}
	var f DigestFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("--image-digests %s is not a digest file (%v): use the bin/images/digests.json make images writes", path, err)
	}
	if f.Version != version {
		return nil, fmt.Errorf("--image-digests %s holds version %q, not %q: pass --version %s, or rebuild with make images", path, f.Version, version, f.Version)
	}
	for _, n := range need {
		d, ok := f.Images[n]
		if !ok {
			return nil, fmt.Errorf("--image-digests %s has no digest for image %q: rebuild with make images", path, n)
		}
		if !digestRE.MatchString(d) {
			return nil, fmt.Errorf("--image-digests %s: image %q has digest %q, want sha256:<64 hex digits>", path, n, d)
		}
	}
	return f.Images, nil
}

// Unpublished says whether a version was never published: make stamps
// "dev-…" on anything but a clean tagged commit, and a plain go build
// leaves "dev".
func Unpublished(version string) bool {
	return version == "dev" || strings.HasPrefix(version, "dev-")
}
