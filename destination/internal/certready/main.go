// Command certready is the integration tests' stand-in for a meshed pod's
// proxy: /ready on :8080 answers 200 once its certificate file exists (or
// always, with --always-ready, as a proxy whose bounded wait for its
// certificate ran out), and :4143 serves TLS with the certificate and key
// files as they are at each handshake.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	ip := os.Getenv("POD_IP")
	cert := flag.String("cert", "", "certificate file (PEM)")
	key := flag.String("key", "", "private key file (PEM)")
	alwaysReady := flag.Bool("always-ready", false, "answer /ready with 200 with or without a certificate")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !*alwaysReady {
			if _, err := os.Stat(*cert); err != nil {
				http.Error(w, "no certificate yet", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	tl, err := tls.Listen("tcp", net.JoinHostPort(ip, "4143"), &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(*cert, *key)
			if err != nil {
				return nil, fmt.Errorf("no certificate: %w", err)
			}
			return &c, nil
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "certready:", err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
				_ = c.Close()
			}()
		}
	}()
	srv := &http.Server{Addr: net.JoinHostPort(ip, "8080"), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Println("certready serving on", ip)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "certready:", err)
		os.Exit(1)
	}
}
