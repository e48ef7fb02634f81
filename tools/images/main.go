// Command images builds meshtls's OCI images without Docker: each command
// the manifests reference (controller, proxy, proxy-init, emojivoto) as a
// static binary on an empty base, for every platform in one index, with
// its SPDX SBOM, into an OCI layout and an archive; and pushes them to any
// registry. `make images` and `make images-push` run it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usage = `Usage:
  images build [flags]   build the images into --out (oci/ and meshtls-VERSION.oci.tar)
  images push [flags]    push what build wrote to --registry

Examples:
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) images build --root . --out bin/images \
    --version $(scripts/version.sh)
  images build --platforms linux/amd64 --images proxy,proxy-init ...
  images push --out bin/images --registry 127.0.0.1:5000/meshtls

Run "images build -h" or "images push -h" for their flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "images: "+strings.Join(strings.Fields(err.Error()), " "))
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		_, _ = io.WriteString(stdout, usage)
		if len(args) == 0 {
			return errors.New("no command: build or push")
		}
		return nil
	}
	switch args[0] {
	case "build":
		return runBuild(ctx, args[1:], stdout, stderr)
	case "push":
		return runPush(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown command %q: build or push (images --help)", args[0])
}

func runBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("images build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg       = buildConfig{Log: stdout}
		epoch     = fs.String("source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "seconds since 1970 dating every file and config: the commit's time (git log -1 --format=%ct); default $SOURCE_DATE_EPOCH")
		platforms = fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated platforms, one index holds them all")
		images    = fs.String("images", "", "comma-separated images to build (default all: "+componentNames()+")")
	)
	fs.StringVar(&cfg.Root, "root", ".", "the meshtls checkout to build from")
	fs.StringVar(&cfg.Out, "out", "bin/images", "output directory")
	fs.StringVar(&cfg.Version, "version", "", "image tag and the binaries' version (the Makefile's VERSION, scripts/version.sh)")
	fs.StringVar(&cfg.Registry, "registry", "ghcr.io/meshtls", "registry and path the image names carry in the layout and archive (install's --registry default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("images build takes no arguments, got %q", fs.Args())
	}
	if *epoch == "" {
		return errors.New("no SOURCE_DATE_EPOCH: set it to the commit's time, SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)")
	}
	sec, err := strconv.ParseInt(*epoch, 10, 64)
	if err != nil || sec < 0 {
		return fmt.Errorf("SOURCE_DATE_EPOCH %q is not seconds since 1970", *epoch)
	}
	cfg.Epoch = time.Unix(sec, 0).UTC()
	if cfg.Platforms, err = parsePlatforms(*platforms); err != nil {
		return err
	}
	if cfg.Images, err = parseImages(*images); err != nil {
		return err
	}
	_, err = build(ctx, cfg)
	return err
}

func runPush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("images push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bin/images", "where images build wrote")
	registry := fs.String("registry", "", "registry and path to push to, e.g. ghcr.io/you/meshtls or 127.0.0.1:5000/meshtls")
	insecure := fs.Bool("insecure", false, "plain HTTP (localhost and 127.0.0.1 use it anyway)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("images push takes no arguments, got %q", fs.Args())
	}
	_, err := push(ctx, *out, *registry, *insecure, stdout)
	return err
}

func componentNames() string {
	var names []string
	for _, c := range components {
		names = append(names, c.Name)
	}
	return strings.Join(names, ",")
}

func parseImages(s string) ([]component, error) {
	if strings.TrimSpace(s) == "" {
		return components, nil
	}
	var out []component
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		c, ok := componentByName(n)
		if !ok {
			return nil, fmt.Errorf("--images: no image %q (have %s)", n, componentNames())
		}
		out = append(out, c)
	}
	return out, nil
}
