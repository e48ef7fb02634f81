// Command certready is the integration tests' stand-in for a meshed pod:
// an HTTP server whose /ready answers 200 only once a certificate file
// exists, as the proxy's readiness waits for its certificate.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	addr := flag.String("listen", "", "address to serve on (default $POD_IP:8080)")
	cert := flag.String("cert", "", "file whose presence makes /ready answer 200 (empty: always ready)")
	flag.Parse()
	if *addr == "" {
		*addr = net.JoinHostPort(os.Getenv("POD_IP"), "8080")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if *cert != "" {
			if _, err := os.Stat(*cert); err != nil {
				http.Error(w, "no certificate yet", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Println("certready serving on", *addr)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "certready:", err)
		os.Exit(1)
	}
}
