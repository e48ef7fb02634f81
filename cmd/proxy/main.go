// Command proxy is the meshtls sidecar. It takes no flags but --version:
// inject writes its configuration as environment variables
// (inject/README.md).
//
// `proxy await` is the pod's postStart hook: it returns once the proxy
// beside it is ready, so the application starts after the proxy listens.
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"meshtls/contract"
	"meshtls/destination/client"
	"meshtls/internal/version"
	"meshtls/proxy"
	"meshtls/proxy/discovery"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "await" {
		os.Exit(await(os.Args[2:], os.Getenv, os.Stderr))
	}
	os.Exit(run())
}

func run() int {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println("proxy version " + version.Version)
		return 0
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: proxy.LogLevel(os.Getenv(contract.EnvLog))}))
	cfg, err := proxy.FromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		return 2
	}
	cfg.Log = log
	if v := os.Getenv(contract.EnvCores); v != "" {
		// As linkerd2-proxy's LINKERD2_PROXY_CORES: inject sets it from
		// the proxy's CPU limit. Go's own default follows a cgroup CPU
		// limit too, but never below 2.
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "proxy: %s=%q: want a whole number of cores, 1 or more\n", contract.EnvCores, v)
			return 2
		}
		runtime.GOMAXPROCS(n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	p := proxy.New(cfg)
	if addr := os.Getenv(contract.EnvDestinationAddr); addr != "" {
		// A pod injected without TLS never holds trust anchors, so it
		// could never verify the controller: it asks in plain text, as
		// the destination service allows. A TLS pod always dials mutual
		// TLS and checks the controller's identity: discovery decides
		// where its mTLS goes, and an unauthenticated answer could strip
		// identities.
		r, err := newResolver(addr, controllerTLS(cfg, p), "ns:"+cfg.PodNamespace+" pod:"+cfg.PodName, log)
		if err != nil {
			fmt.Fprintln(os.Stderr, "proxy:", err)
			return 2
		}
		p.SetResolver(r)
	} else {
		log.Warn(contract.EnvDestinationAddr + " not set: no service discovery, outbound traffic is plain text")
	}
	if err := p.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		return 1
	}
	return 0
}

// controllerTLS is how the proxy dials the destination service: nil
// (plain text) for a pod injected without TLS.
func controllerTLS(cfg proxy.Config, p *proxy.Proxy) *tls.Config {
	if !cfg.TLSConfigured() {
		return nil
	}
	return p.ControllerTLS(cfg.ControllerIdentity)
}

// newResolver is the destination service's gRPC client: one stream per
// target, answers cached, streams reopened with backoff when the service is
// unreachable. With the controller TLS config it dials mutual TLS and
// checks the controller's identity.
func newResolver(addr string, controllerTLS *tls.Config, token string, log *slog.Logger) (discovery.Resolver, error) {
	return client.New(client.Config{Addr: addr, TLS: controllerTLS, ContextToken: token, Logger: log})
}
