package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// pushed is one tag written to a registry.
type pushed struct {
	Ref    string
	Digest string
}

// push copies every image of the layout under out/oci to registry, under
// the same repository names and tags, whatever registry the layout was
// built for. Credentials come from the Docker config (docker login,
// $DOCKER_CONFIG), as for crane and ko.
func push(ctx context.Context, out, registry string, insecure bool, log io.Writer) ([]pushed, error) {
	registry = strings.TrimSuffix(registry, "/")
	if registry == "" {
		return nil, fmt.Errorf("REGISTRY is empty: make images-push REGISTRY=host[:port]/path")
	}
	ociDir := filepath.Join(out, "oci")
	lp, err := layout.FromPath(ociDir)
	if err != nil {
		return nil, fmt.Errorf("%s is not an OCI layout (%v): run make images first", ociDir, err)
	}
	root, err := lp.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := root.IndexManifest()
	if err != nil {
		return nil, err
	}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	var done []pushed
	for _, desc := range im.Manifests {
		built := desc.Annotations["io.containerd.image.name"]
		ref, err := name.ParseReference(built)
		if err != nil {
			return nil, fmt.Errorf("%s: entry %s has no usable image name %q: rebuild with make images", ociDir, desc.Digest, built)
		}
		repo := ref.Context().RepositoryStr()
		// Keep the last path element (controller, proxy, …): the
		// registry replaces whatever prefix the build used.
		repo = repo[strings.LastIndex(repo, "/")+1:]
		dst, err := name.ParseReference(registry+"/"+repo+":"+ref.Identifier(), opts...)
		if err != nil {
			return nil, fmt.Errorf("REGISTRY %q: %v", registry, err)
		}
		idx, err := root.ImageIndex(desc.Digest)
		if err != nil {
			return nil, err
		}
		if err := remote.WriteIndex(dst, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return nil, fmt.Errorf("pushing %s: %w", dst, err)
		}
		fmt.Fprintf(log, "images: pushed %s@%s\n", dst, desc.Digest)
		done = append(done, pushed{Ref: dst.String(), Digest: desc.Digest.String()})
	}
	if len(done) == 0 {
		return nil, fmt.Errorf("%s holds no image: run make images first", ociDir)
	}
	return done, nil
}
