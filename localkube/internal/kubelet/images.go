package kubelet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// reserved names never map to pods: they are the cluster itself.
var reserved = map[string]bool{"localkube": true, "etcd": true, "kube-apiserver": true, "kube-controller-manager": true}

// ImageName is the last path element of an image reference, without tag
// or digest: ghcr.io/meshtls/proxy:v1 → proxy.
func ImageName(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndexByte(image, '/'); i >= 0 {
		image = image[i+1:]
	}
	if i := strings.IndexByte(image, ':'); i >= 0 {
		image = image[:i]
	}
	return image
}

// imageMapper resolves images to executables in an ordered list of dirs.
type imageMapper struct{ dirs []string }

// resolve returns the executable for image, or an error that says what was
// looked for and where.
func (m imageMapper) resolve(image string) (string, error) {
	name := ImageName(image)
	if name == "" || reserved[name] || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("localkube maps no binary for image %q (the name %q is not allowed)", image, name)
	}
	for _, d := range m.dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("localkube has no binary for image %q: looked for %q in %s; build it there or add a dir with --bin-dir (see localkube/README.md)",
		image, name, strings.Join(m.dirs, ", "))
}
