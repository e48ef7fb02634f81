package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"

	k8slabels "k8s.io/apimachinery/pkg/labels"
	"meshtls/ca/pki"
	tappb "meshtls/proto/tap"
	"meshtls/stat"
)

// TestRotationDropsNothing rotates both proxies' certificates, the
// kubelet's way, three times under steady traffic on kept-alive HTTP/1.1
// and HTTP/2 connections: no request fails, no connection is replaced,
// and new handshakes present the new certificate.
func TestRotationDropsNothing(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		c := m.client(i%2 == 1)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(m.url("/steady"))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
			}
		})
	}
	reloads := func(p *testProxy) float64 {
		return metric(t, p.addr("admin"), "tls_config_reload_total", map[string]string{"status": "success"})
	}
	// Proxy-to-proxy connections closed: none, from the start (racing
	// h2 dials no longer open connections only to close them).
	hopCloses := func() (float64, float64) {
		return metric(t, m.a.addr("admin"), "tcp_close_total", map[string]string{"direction": "outbound", "peer": "dst"}),
			metric(t, m.b.addr("admin"), "tcp_close_total", map[string]string{"direction": "inbound", "peer": "src"})
	}
	var last *pki.Leaf
	for round := 1; round <= 3; round++ {
		before := ok.Load()
		eventually(t, 10*time.Second, "traffic before rotating", func() bool { return ok.Load() > before+20 })
		for _, p := range []*testProxy{m.a, m.b} {
			leaf := getPKI(t).issue(t, p.identity)
			if p == m.b {
				last = leaf
			}
			writeVolume(t, p.identityDir, map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM})
		}
		for _, p := range []*testProxy{m.a, m.b} {
			eventually(t, 10*time.Second, fmt.Sprintf("reload %d", round), func() bool { return reloads(p) == float64(1+round) })
		}
	}
	before := ok.Load()
	eventually(t, 10*time.Second, "traffic after rotating", func() bool { return ok.Load() > before+20 })
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during rotation; first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	if got := metric(t, m.a.addr("admin"), "tcp_open_total", map[string]string{"direction": "outbound", "peer": "src"}); got != 4 {
		t.Errorf("clients opened %v connections, want 4 (none dropped)", got)
	}
	// Nor was any proxy-to-proxy connection: a rotation that replaced
	// them would show here, on both sides of the mTLS hop.
	if a, b := hopCloses(); a != 0 || b != 0 {
		t.Errorf("proxy-to-proxy connections closed: A %v, B %v, want none", a, b)
	}
	// A new handshake gets the newest certificate.
	c, err := tls.Dial("tcp", m.b.addr("inbound"), tlsClientConfig(t, getPKI(t).issue(t, idA), idB))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(last.Serial) != 0 {
		t.Errorf("served serial %v, want the rotated %v", got, last.Serial)
	}
	if v := metric(t, m.b.addr("admin"), "tls_config_last_reload_seconds", nil); time.Since(time.Unix(int64(v), 0)) > time.Minute {
		t.Errorf("tls_config_last_reload_seconds = %v", v)
	}
	t.Logf("%d requests across 3 rotations, 0 failed", ok.Load())
}

// lockedBuffer collects a proxy's log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCertificateArrivesLater: a pod whose Secret has not been written
// still accepts plain text inbound (tls="disabled"), is not ready (first
// "waiting", after ReadyWait naming the cause), logs the cause once, then
// picks the files up when they appear and becomes ready. Broken files are
// the same; no key material is ever logged.
func TestCertificateArrivesLater(t *testing.T) {
	var logs lockedBuffer
	app := startApp(t)
	b := startProxy(t, proxyOpts{identity: idB, noFiles: true, tune: func(c *Config) {
		c.ReadyWait = 1500 * time.Millisecond
		c.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	b.setOrigDst(app.addr)
	admin := b.addr("admin")
	ready := func() int {
		resp, err := http.Get("http://" + admin + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := ready(); got != 503 {
		t.Errorf("/ready without a certificate = %d, want 503 during ReadyWait", got)
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if code, _ := get(t, plain, "http://"+b.addr("inbound")+"/early"); code != 200 {
		t.Fatalf("plain text without certificate: %d", code)
	}
	// A peer proxy's handshake for this identity fails at the proxy,
	// counted, rather than being handed to the application as bytes.
	early := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsClientConfig(t, getPKI(t).issue(t, idA), idB)}}
	if resp, err := early.Get("https://" + b.addr("inbound") + "/mtls-early"); err == nil {
		_ = resp.Body.Close()
		t.Errorf("mTLS to a pod without a certificate answered %d", resp.StatusCode)
	}
	// The client can see its handshake fail before the proxy has counted
	// it: wait for the count, then check it is exactly one.
	eventually(t, 5*time.Second, "the refused handshake to be counted", func() bool {
		return metric(t, admin, "proxy_connection_errors_total", map[string]string{"direction": "inbound", "reason": errTLSInbound}) >= 1
	})
	if got := metric(t, admin, "proxy_connection_errors_total", map[string]string{"direction": "inbound", "reason": errTLSInbound}); got != 1 {
		t.Errorf("inbound handshakes refused without a certificate = %v, want 1", got)
	}
	if got := metric(t, admin, "request_total", map[string]string{"tls": "disabled", "no_tls_reason": "not_configured"}); got != 1 {
		t.Errorf("tls=disabled requests = %v", got)
	}
	readyBody := func() string {
		resp, err := http.Get("http://" + admin + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprint(resp.StatusCode, " ", string(b))
	}
	eventually(t, 5*time.Second, "/ready naming the missing certificate after ReadyWait", func() bool {
		return strings.HasPrefix(readyBody(), "503 no usable TLS certificate")
	})

	// Broken files: a key that does not parse. Still disabled, still plain.
	leaf := getPKI(t).issue(t, idB)
	failures := metric(t, admin, "tls_config_reload_total", map[string]string{"status": "failure"})
	writeVolume(t, b.anchorsDir, map[string][]byte{"trust-anchors.pem": getPKI(t).root.CertPEM})
	writeVolume(t, b.identityDir, map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM[:len(leaf.KeyPEM)/2]})
	eventually(t, 10*time.Second, "a failed reload of the broken key", func() bool {
		return strings.Contains(logs.String(), "not form a usable pair") &&
			metric(t, admin, "tls_config_reload_total", map[string]string{"status": "failure"}) > failures
	})
	if code, _ := get(t, plain, "http://"+b.addr("inbound")+"/broken"); code != 200 {
		t.Fatalf("plain text with broken files: %d", code)
	}

	// The real files arrive: TLS comes up without a restart.
	writeVolume(t, b.identityDir, map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM})
	eventually(t, 10*time.Second, "a successful reload", func() bool {
		return metric(t, admin, "tls_config_reload_total", map[string]string{"status": "success"}) == 1
	})
	if got := ready(); got != 200 {
		t.Errorf("/ready with the certificate = %d", got)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsClientConfig(t, getPKI(t).issue(t, idA), idB)}}
	if code, _ := get(t, c, "https://"+b.addr("inbound")+"/late"); code != 200 {
		t.Fatalf("mTLS after the files arrived: %d", code)
	}
	out := logs.String()
	if n := strings.Count(out, "TLS disabled"); n != 2 {
		t.Errorf("want one 'TLS disabled' line per cause (missing, broken), got %d:\n%s", n, out)
	}
	keyBody := strings.Split(string(leaf.KeyPEM), "\n")[1]
	if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, keyBody[:20]) {
		t.Errorf("key material in the log:\n%s", out)
	}
}

// TestOpenSSLVerifiesServedChain: real openssl sees our chain and verifies
// it against the trust bundle and the identity.
func TestOpenSSLVerifiesServedChain(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (make deps installs it):", err)
	}
	m := newMesh(t, meshOpts{idB: idB})
	dir := t.TempDir()
	client := getPKI(t).issue(t, idA)
	files := map[string][]byte{"ca.pem": getPKI(t).root.CertPEM, "a.crt": client.CertPEM, "a.key": client.KeyPEM}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", "s_client", "-connect", m.b.addr("inbound"), "-servername", idB,
		"-CAfile", filepath.Join(dir, "ca.pem"), "-verify_hostname", idB, "-verify_return_error",
		"-cert", filepath.Join(dir, "a.crt"), "-key", filepath.Join(dir, "a.key"), "-showcerts", "-ign_eof")
	cmd.Stdin = strings.NewReader("GET /openssl HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	for _, want := range []string{"Verify return code: 0 (ok)", "Verified peername: " + idB, "HTTP/1.1 200"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("openssl output lacks %q:\n%s", want, out)
		}
	}
	if got := metric(t, m.b.addr("admin"), "request_total", map[string]string{"tls": "true", "client_id": idA}); got != 1 {
		t.Errorf("openssl's request not counted as mTLS from %s: %v", idA, got)
	}
}

func tapClient(t *testing.T, addr string, as string) tappb.TapClient {
	t.Helper()
	cfg := tlsClientConfig(t, getPKI(t).issue(t, as), idB)
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(grpccreds.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return tappb.NewTapClient(cc)
}

func TestTap(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Anyone but the tap API is refused: a workload, and the
	// destination service (whose key must not let it read traffic).
	for _, as := range []string{idA, idCtrl} {
		st, err := tapClient(t, m.b.addr("tap"), as).Observe(ctx, &tappb.ObserveRequest{})
		if err == nil {
			_, err = st.Recv()
		}
		if err == nil {
			t.Fatalf("tap accepted %s", as)
		}
	}

	req := &tappb.ObserveRequest{Limit: 2, Match: &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Http_{Http: &tappb.ObserveRequest_Match_Http{
		Match: &tappb.ObserveRequest_Match_Http_Path{Path: &tappb.ObserveRequest_Match_Http_StringMatch{Match: &tappb.ObserveRequest_Match_Http_StringMatch_Prefix{Prefix: "/tapped"}}}}}}}
	st, err := tapClient(t, m.b.addr("tap"), idTap).Observe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the tap stream to open", func() bool {
		return metric(t, m.b.addr("admin"), "tap_streams", nil) == 1
	})
	c := m.client(false)
	get(t, c, m.url("/other"))
	get(t, c, m.url("/tapped/1"))
	get(t, c, m.url("/tapped/2"))
	get(t, c, m.url("/tapped/3"))
	var evs []*tappb.TapEvent
	for {
		ev, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 6 {
		t.Fatalf("got %d events, want 3 per request for the limit of 2: %v", len(evs), evs)
	}
	init := evs[0].GetHttp().GetRequestInit()
	if init.GetPath() != "/tapped/1" || init.GetMethod() != "GET" || init.GetAuthority() != "b.ns.svc.cluster.local:8080" {
		t.Errorf("request_init %v", init)
	}
	if tls := evs[0].GetTls(); tls.GetStatus() != "true" || tls.GetClientId() != idA {
		t.Errorf("tls %v", tls)
	}
	if got := evs[0].GetDestinationMeta().GetLabels()["pod"]; got != "b-1" {
		t.Errorf("inbound destination meta %v, want pod b-1", evs[0].GetDestinationMeta())
	}
	if evs[0].GetProxyDirection() != tappb.TapEvent_INBOUND {
		t.Errorf("direction %v", evs[0].GetProxyDirection())
	}
	if rsp := evs[1].GetHttp().GetResponseInit(); rsp.GetHttpStatus() != 200 {
		t.Errorf("response_init %v", rsp)
	}
	if end := evs[2].GetHttp().GetResponseEnd(); end.GetResponseBytes() == 0 || end.GetSinceRequestInit().AsDuration() <= 0 {
		t.Errorf("response_end %v", end)
	}
}

// TestSlowTapConsumer: a tap stream that never reads does not slow
// traffic; its events are dropped, counted, and reported in
// dropped_before once it reads again.
func TestSlowTapConsumer(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB, tuneB: func(c *Config) { c.TapBuffer = 4 }})
	run := func(path string, n int) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			c := m.client(false)
			wg.Go(func() {
				for i := 0; i < n/4; i++ {
					if code, _ := get(t, c, m.url(path)); code != 200 {
						t.Errorf("%s: status %d", path, code)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The stream taps /tapped only, so requests to /load go through the
	// same proxy at the same time untapped: the two are compared in
	// interleaved batches, which a loaded machine slows alike.
	req := &tappb.ObserveRequest{Match: &tappb.ObserveRequest_Match{Match: &tappb.ObserveRequest_Match_Http_{Http: &tappb.ObserveRequest_Match_Http{
		Match: &tappb.ObserveRequest_Match_Http_Path{Path: &tappb.ObserveRequest_Match_Http_StringMatch{Match: &tappb.ObserveRequest_Match_Http_StringMatch_Prefix{Prefix: "/tapped"}}}}}}}
	st, err := tapClient(t, m.b.addr("tap"), idTap).Observe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the tap stream to open", func() bool {
		return metric(t, m.b.addr("admin"), "tap_streams", nil) == 1
	})
	// The consumer reads nothing while 2,000 requests go by (about 6,000
	// events: more than the stream's buffer and gRPC's flow-control
	// window hold). A stall that reached the traffic would hold these
	// requests past the client's 10 s timeout.
	run("/tapped", 2000)
	var untapped, tapped time.Duration
	for range 5 {
		untapped += run("/load", 200)
		tapped += run("/tapped", 200)
	}
	t.Logf("1,000 requests in interleaved batches: %s untapped, %s tapped by a stalled stream", untapped, tapped)
	if tapped > 3*untapped {
		t.Errorf("a stalled tap stream slowed the requests it taps: %s vs %s untapped", tapped, untapped)
	}
	dropped := metric(t, m.b.addr("admin"), "tap_events_dropped_total", nil)
	if dropped == 0 {
		t.Fatal("no tap events dropped")
	}
	// Drain, then one more request: its first event says what was lost.
	var reported uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := st.Recv()
			if err != nil {
				return
			}
			reported += ev.GetDroppedBefore()
			if ev.GetHttp().GetRequestInit().GetPath() == "/tapped/last" {
				return
			}
		}
	}()
	time.Sleep(500 * time.Millisecond) // let the drain reach the live end
	get(t, m.client(false), m.url("/tapped/last"))
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("never saw /last on the tap stream")
	}
	if reported == 0 || float64(reported) > dropped {
		t.Errorf("dropped_before summed to %d, metric says %v", reported, dropped)
	}
}

// fixedPods is stat's pod source for one proxy.
type fixedPods []stat.Pod

func (f fixedPods) Pods(context.Context, string, k8slabels.Selector) ([]stat.Pod, error) {
	return f, nil
}

// TestStatReadsProxyMetrics: stat's live scraper, unchanged, reads our
// /metrics and sees the traffic as 100% TLS.
func TestStatReadsProxyMetrics(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	host, port, _ := net.SplitHostPort(m.b.addr("admin"))
	portN, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	pods := fixedPods{{Namespace: "ns", Name: "b-1", IP: host, Meshed: true, Owners: map[string]string{"deployment": "b"}}}
	// stat, like Prometheus's increase(), counts a series only when both
	// scrapes hold it: let the inbound series exist before the first one.
	get(t, m.client(false), m.url("/stat"))
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, m.b.addr("admin"), "response_total", map[string]string{"direction": "inbound"}) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("b's proxy counted no inbound response in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		c := m.client(false)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			get(t, c, m.url("/stat"))
		}
	})
	res, err := stat.Compute(context.Background(), stat.Query{Resource: stat.Resource{Kind: stat.KindDeployment, Namespace: "ns"}, Window: 2 * time.Second},
		&stat.Scraper{Fetcher: stat.ProxyFetcher{Port: portN}, Rounds: 2}, pods)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 1 {
		t.Fatalf("rows %+v", res.Rows)
	}
	r := res.Rows[0]
	if r.Name != "b" || r.Requests < 5 || r.TLS != 1 || r.Success != 1 || r.P50 <= 0 {
		t.Errorf("stat row %+v", r)
	}
}
