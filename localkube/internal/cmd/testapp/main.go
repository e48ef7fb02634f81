// Command testapp is the container of localkube's own tests: a tiny HTTP
// server that reports its pid, environment and files, and can be told to
// crash, fail its probes or ignore SIGTERM.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	os.Exit(run())
}

func run() int {
	addr := flag.String("listen", ":8080", "address to serve on (the pod has its own network namespace)")
	exitAfter := flag.Duration("exit-after", 0, "exit after this long (0: never)")
	exitCode := flag.Int("exit-code", 3, "exit code for --exit-after and /crash")
	ignoreTerm := flag.Bool("ignore-sigterm", false, "keep running on SIGTERM")
	file := flag.String("file", "", "file served at /file")
	serveTLS := flag.Bool("tls", false, "serve HTTPS with a fresh self-signed certificate")
	flag.Parse()

	var live atomic.Bool
	live.Store(true)
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/live", func(w http.ResponseWriter, _ *http.Request) {
		if !live.Load() {
			http.Error(w, "told to fail", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/fail-live", func(w http.ResponseWriter, _ *http.Request) { live.Store(false) })
	mux.HandleFunc("/pid", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, os.Getpid()) })
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, os.Getenv(r.URL.Query().Get("name"))) })
	mux.HandleFunc("/args", func(w http.ResponseWriter, _ *http.Request) {
		for _, a := range os.Args[1:] {
			fmt.Fprintln(w, a)
		}
	})
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Query().Get("path")
		if p == "" {
			p = *file
		}
		b, err := os.ReadFile(p)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		_, _ = w.Write(b) // the client may have gone; nothing to do
	})
	// /dial?addr=HOST:PORT dials from inside the pod: "ok LOCAL" or the error.
	mux.HandleFunc("/dial", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 2*time.Second)
		if err != nil {
			fmt.Fprint(w, "error: ", err)
			return
		}
		defer func() { _ = c.Close() }()
		fmt.Fprint(w, "ok ", c.LocalAddr())
	})
	// /resolve?name=NAME looks NAME up with the pod's resolver (its
	// /etc/resolv.conf, as any Go program does): the sorted addresses, or
	// "error: ..." (for a name that does not exist, "no such host").
	// With &server=IP:PORT it asks that server instead.
	mux.HandleFunc("/resolve", func(w http.ResponseWriter, r *http.Request) {
		res := net.DefaultResolver
		if server := r.URL.Query().Get("server"); server != "" {
			res = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, server)
			}}
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		addrs, err := res.LookupHost(ctx, r.URL.Query().Get("name"))
		if err != nil {
			fmt.Fprint(w, "error: ", err)
			return
		}
		sort.Strings(addrs)
		fmt.Fprint(w, strings.Join(addrs, " "))
	})
	// /get?url=URL fetches from inside the pod and returns the body.
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		// A new connection per request: behind a ClusterIP each one is
		// balanced afresh, so a test can see every endpoint.
		cl := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := cl.Get(r.URL.Query().Get("url"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		_, _ = io.Copy(w, resp.Body)
	})
	// /whoami reports the remote and local address of this request, so a
	// test sees where a (possibly redirected) connection came from and went.
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "remote=%s local=%v uid=%d", r.RemoteAddr, r.Context().Value(http.LocalAddrContextKey), os.Getuid())
	})
	// /apis/GROUP/VERSION answers as an aggregated API server's discovery
	// would; /apis/GROUP/VERSION/whoami returns the user kube-apiserver's
	// front proxy vouched for (X-Remote-User).
	mux.HandleFunc("/apis/", func(w http.ResponseWriter, r *http.Request) {
		gv := strings.TrimPrefix(r.URL.Path, "/apis/")
		if strings.HasSuffix(gv, "/whoami") {
			fmt.Fprint(w, r.Header.Get("X-Remote-User"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":%q,"resources":[]}`, strings.Trim(gv, "/"))
	})
	mux.HandleFunc("/crash", func(http.ResponseWriter, *http.Request) {
		fmt.Println("crashing as asked")
		os.Exit(*exitCode)
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		return 1
	}
	fmt.Printf("testapp pid %d serving on %s\n", os.Getpid(), ln.Addr())
	if *serveTLS {
		cert, err := selfSigned()
		if err != nil {
			fmt.Fprintln(os.Stderr, "testapp:", err)
			return 1
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	}
	go func() { _ = http.Serve(ln, mux) }() // ends with the process

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	var exit <-chan time.Time
	if *exitAfter > 0 {
		exit = time.After(*exitAfter)
	}
	for {
		select {
		case <-sigs:
			fmt.Println("got SIGTERM")
			if !*ignoreTerm {
				return 0
			}
		case <-exit:
			fmt.Println("exiting with code " + strconv.Itoa(*exitCode))
			return *exitCode
		}
	}
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "testapp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
