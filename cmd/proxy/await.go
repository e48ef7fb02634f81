package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"meshtls/contract"
)

// await polls the proxy's /ready until it answers 200. It is the pod's
// postStart hook on the proxy container (inject puts the proxy first), so
// the kubelet starts the application only once the proxy listens.
//
// If the proxy listens but is still not ready at the timeout (no
// certificate yet), await says why and lets the application start: the
// proxy then refuses, visibly, what it cannot send over mTLS. If the proxy
// does not even listen, await fails, and the kubelet restarts it.
func await(args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("await", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the proxy to be ready")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: proxy await [--timeout 2m]\n\nWaits until the proxy in this pod answers /ready on its admin port\n("+contract.EnvAdminListenAddr+"). Example, as inject writes it:\n  lifecycle: {postStart: {exec: {command: [/proxy, await, --timeout=2m]}}}")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	addr := getenv(contract.EnvAdminListenAddr)
	if addr == "" {
		addr = fmt.Sprintf("127.0.0.1:%d", contract.AdminPort)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintf(stderr, "proxy await: %s=%q: %v\n", contract.EnvAdminListenAddr, addr, err)
		return 2
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/ready"
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	listening, last := false, "no answer"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			_ = resp.Body.Close()
			listening, last = true, string(b)
			if resp.StatusCode == http.StatusOK {
				return 0
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			if listening {
				fmt.Fprintf(stderr, "proxy await: proxy listens but is not ready after %s: %s", *timeout, last)
				return 0
			}
			fmt.Fprintf(stderr, "proxy await: proxy not listening on %s after %s: %s\n", url, *timeout, last)
			return 1
		case <-time.After(200 * time.Millisecond):
		}
	}
}
