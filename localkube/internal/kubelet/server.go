package kubelet

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// serveAPI serves the kubelet endpoints kube-apiserver proxies to:
// /containerLogs/NS/POD/CONTAINER (`kubectl logs`), /portForward/NS/POD
// and /exec/NS/POD/CONTAINER. Only clients with a
// certificate from the cluster CA (the API server) are let in.
func (k *Kubelet) serveAPI(ctx context.Context) error {
	cert, err := tls.LoadX509KeyPair(k.cfg.Cert, k.cfg.Key)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(k.cfg.CACert)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	ln, err := net.Listen("tcp", net.JoinHostPort(hostIP, strconv.Itoa(k.cfg.Port)))
	if err != nil {
		return fmt.Errorf("kubelet API on %s:%d: %w", hostIP, k.cfg.Port, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/containerLogs/", k.containerLogs)
	mux.HandleFunc("/portForward/", k.portForward)
	mux.HandleFunc("/exec/", k.exec)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert},
	}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			k.log.Printf("kubelet API: %v", err)
		}
	}()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return nil
}

// LogPath is where a container of a running pod writes its output, or ""
// when the pod has no directory on this node.
func LogPath(clusterDir, ns, pod, container string) string {
	matches, _ := filepath.Glob(filepath.Join(clusterDir, "pods", ns+"_"+pod+"_*", "logs"))
	if len(matches) == 0 {
		return ""
	}
	return filepath.Join(matches[len(matches)-1], container+".log")
}

func (k *Kubelet) containerLogs(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/containerLogs/"), "/")
	if len(parts) != 3 {
		http.Error(w, "want /containerLogs/NAMESPACE/POD/CONTAINER", http.StatusBadRequest)
		return
	}
	path := LogPath(k.cfg.Dir, parts[0], parts[1], parts[2])
	f, err := os.Open(path)
	if path == "" || err != nil {
		http.Error(w, fmt.Sprintf("container %q in pod %s/%s has no log on node %s", parts[2], parts[0], parts[1], k.cfg.NodeName), http.StatusNotFound)
		return
	}
	defer f.Close()
	q := r.URL.Query()
	w.Header().Set("Content-Type", "text/plain")
	if n, err := strconv.Atoi(q.Get("tailLines")); err == nil && n >= 0 {
		if err := seekTail(f, n); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	var out io.Writer = w
	if n, err := strconv.ParseInt(q.Get("limitBytes"), 10, 64); err == nil && n > 0 {
		out = &limitWriter{w: w, n: n}
	}
	follow := q.Get("follow") == "true"
	for {
		if _, err := io.Copy(out, f); err != nil {
			return
		}
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		if !follow {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
		if _, err := os.Stat(path); err != nil {
			return
		}
	}
}

// seekTail positions f at the start of its last n lines.
func seekTail(f *os.File, n int) error {
	var offsets []int64
	var pos int64
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			offsets = append(offsets, pos)
			pos += int64(len(line))
		}
		if err != nil {
			break
		}
	}
	start := pos
	if n < len(offsets) {
		start = offsets[len(offsets)-n]
	} else if len(offsets) > 0 {
		start = 0
	}
	if n == 0 {
		start = pos
	}
	_, err := f.Seek(start, io.SeekStart)
	return err
}

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}
