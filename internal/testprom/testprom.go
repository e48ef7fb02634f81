// Package testprom runs a real Prometheus server on loopback for
// integration tests: the repository's bin/prometheus-server, built by `make
// prometheus` from install/prometheus, so a plain `go test` and CI run the
// same Prometheus as the local cluster's control plane.
package testprom

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"meshtls/testutil/needs"
	"meshtls/testutil/testbin"

	"github.com/prometheus/common/model"
)

// Target is one scrape target with the labels Prometheus attaches to it.
type Target struct {
	Addr   string
	Labels map[string]string
}

// Server is a running Prometheus.
type Server struct {
	URL string
}

// Start runs Prometheus scraping targets every interval. It stops when the
// test ends. A missing binary fails the test with how to build it.
func Start(t testing.TB, targets []Target, interval time.Duration) *Server {
	t.Helper()
	bin, err := serverBinary()
	if err != nil {
		needs.Missing(t, err.Error())
	}
	dir := t.TempDir()
	var groups []map[string]any
	for _, tg := range targets {
		groups = append(groups, map[string]any{"targets": []string{tg.Addr}, "labels": tg.Labels})
	}
	sd, _ := json.Marshal(groups)
	if err := os.WriteFile(filepath.Join(dir, "targets.json"), sd, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: %[1]s
  evaluation_interval: %[1]s
scrape_configs:
  - job_name: linkerd-proxy
    scrape_timeout: %[2]s
    file_sd_configs:
      - files: [%[3]q]
`, model.Duration(interval), model.Duration(interval*9/10), filepath.Join(dir, "targets.json"))
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		logFile.Close()
	})
	s := &Server{URL: "http://" + addr}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("prometheus exited during start:\n%s", log)
		default:
		}
		if resp, err := http.Get(s.URL + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus at %s not ready after 60s", s.URL)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return s
}

// WaitTargetsUp waits until n targets have been scraped successfully.
func (s *Server) WaitTargetsUp(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if v, err := s.scalar(ctx, "count(up == 1)"); err == nil && v == fmt.Sprint(n) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("prometheus: %d targets not up after %s", n, timeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (s *Server) scalar(ctx context.Context, q string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api/v1/query?query="+urlEscape(q), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", err
	}
	if len(body.Data.Result) == 0 {
		return "", fmt.Errorf("no result")
	}
	return fmt.Sprint(body.Data.Result[0].Value[1]), nil
}

func urlEscape(s string) string { return url.QueryEscape(s) }

// serverBinary is <repo>/bin/prometheus-server, not a prometheus on PATH:
// that is the local cluster's launcher when bin/ comes first, and otherwise
// whatever release the system has.
func serverBinary() (string, error) {
	root, err := testbin.RepoRoot()
	if err != nil {
		return "", fmt.Errorf("testprom: %w", err)
	}
	p := filepath.Join(root, "bin", "prometheus-server")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("testprom: %s is missing: run `make prometheus` in %s", p, root)
	}
	return p, nil
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
