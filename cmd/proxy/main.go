// Command proxy is the meshtls sidecar. It takes no flags but --version:
// inject writes its configuration as environment variables
// (inject/README.md).
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"meshtls/contract"
	"meshtls/destination/client"
	"meshtls/internal/version"
	"meshtls/proxy"
	"meshtls/proxy/discovery"
)

func main() {
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	p := proxy.New(cfg)
	if addr := os.Getenv(contract.EnvDestinationAddr); addr != "" {
		r, err := newResolver(addr, p.ControllerTLS(cfg.ControllerIdentity), "ns:"+cfg.PodNamespace+" pod:"+cfg.PodName, log)
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

// newResolver is the destination service's gRPC client: one stream per
// target, answers cached, streams reopened with backoff when the service is
// unreachable. With the controller TLS config it dials mutual TLS and
// checks the controller's identity.
func newResolver(addr string, controllerTLS *tls.Config, token string, log *slog.Logger) (discovery.Resolver, error) {
	return client.New(client.Config{Addr: addr, TLS: controllerTLS, ContextToken: token, Logger: log})
}
