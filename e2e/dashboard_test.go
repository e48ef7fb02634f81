//go:build integration

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"meshtls/contract"
	"meshtls/testutil/chromium"
	"meshtls/testutil/localcluster"
)

// TestDashboardOnLiveMesh is `linkerd dashboard` (the built binary, as a
// user starts it: a kubeconfig, no capture) on a running mesh: the
// control plane with the tap API, emojivoto's deployments injected and
// talking mutual TLS. Its pages must show what the CLI shows from the same
// cluster: the namespace's deployments and authorities at TLS 100% with a
// live RPS that agrees with `linkerd stat -o json` over the same window,
// the deployment's live list from the real tap API with each request
// marked encrypted and the identity the server proved, and the check page
// with `linkerd check --tls`'s results.
//
// The control plane's Prometheus is removed (as the other e2e tests do),
// so both the dashboard and stat scrape every meshed proxy directly: the
// same source, so the same figures up to when each one's window falls.
func TestDashboardOnLiveMesh(t *testing.T) {
	// Not parallel: it needs its own control plane behind the tap API
	// (check, tap, the dashboard), and the APIService v1alpha1.tap.linkerd.io
	// is cluster-wide: another install would take it over.
	m := startLiveMesh(t, false)
	ctx, ns, cp, kubeconfig := m.ctx, m.ns, m.cp, m.kubeconfig
	emoji, voting, web := m.emoji, m.voting, m.web

	// The window of both the dashboard and stat: each scrapes twice,
	// window apart.
	const window = 8 * time.Second
	base := startDashboard(t, "-L", cp, "--kubeconfig", kubeconfig, "-t", window.String(), "--refresh", window.String())
	emojiID := contract.Identity("emoji", contract.KindDeployment, ns, cp)
	votingID := contract.Identity("voting", contract.KindDeployment, ns, cp)

	t.Run("namespace page: TLS 100% and live RPS as stat shows them", func(t *testing.T) {
		meshed := []string{"emoji", "voting", "web"}
		// Lines of the attempt that passed.
		var seen []string
		// The dashboard keeps a result for --refresh; a page that took
		// less than half a window was answered from that cache, and its
		// window ended before stat's began: ask again until both scrape
		// over the same window, started together.
		localcluster.Eventually(t, 3*time.Minute, func() error {
			seen = nil
			var (
				wg      sync.WaitGroup
				page    string
				took    time.Duration
				pageErr error
				rows    map[string]row
				statErr error
			)
			wg.Add(2)
			go func() {
				defer wg.Done()
				start := time.Now()
				page, pageErr = getOK(base+"/ns/"+ns, "text/html")
				took = time.Since(start)
			}()
			go func() {
				defer wg.Done()
				rows, statErr = statRows("stat", "deploy", "-n", ns, "-L", cp, "-t", window.String(), "--kubeconfig", kubeconfig, "-o", "json")
			}()
			wg.Wait()
			if pageErr != nil {
				return pageErr
			}
			if statErr != nil {
				return statErr
			}
			if took < window/2 {
				return fmt.Errorf("the page came from the cache (%v), not from a window alongside stat's", took)
			}
			cells := pageCells(page)
			for _, name := range meshed {
				c, ok := cells["deployments/"+name]
				if !ok {
					return fmt.Errorf("no row for deploy/%s on the page", name)
				}
				if c.tls != "1" || !strings.Contains(c.tlsText, "🔒") || !strings.Contains(c.tlsText, "encrypted") {
					return fmt.Errorf("deploy/%s: TLS cell %q (value %q), want 100%% with the lock and the word", name, c.tlsText, c.tls)
				}
				pageRPS, err := strconv.ParseFloat(c.rps, 64)
				if err != nil || pageRPS <= 0 {
					return fmt.Errorf("deploy/%s: RPS %q on the page, want live traffic", name, c.rps)
				}
				r, ok := rows[ns+"/"+name]
				if !ok || r.RPS == nil || r.TLS == nil {
					return fmt.Errorf("stat has no figures for deploy/%s: %+v", name, r)
				}
				if *r.TLS != 1 {
					return fmt.Errorf("stat says deploy/%s TLS %v", name, *r.TLS)
				}
				// Two scrapes each, started together: the windows differ by
				// the scrape times on a loaded machine, so a quarter of the
				// rate (and half a request a second for slow edges).
				if d := math.Abs(pageRPS - *r.RPS); d > 0.25*math.Max(pageRPS, *r.RPS)+0.5 {
					return fmt.Errorf("deploy/%s: %.2f rps on the page, %.2f from stat: beyond 25%% + 0.5 rps", name, pageRPS, *r.RPS)
				}
				seen = append(seen, fmt.Sprintf("deploy/%s: page %.2f rps, stat -o json %.2f rps, TLS %s", name, pageRPS, *r.RPS, c.tlsText))
			}
			// The servers' authorities (pod IP and port: no cluster DNS
			// names in these apps' addresses) at TLS 100% too.
			for _, au := range []string{emoji.Status.PodIP + ":8080", voting.Status.PodIP + ":8080", web.Status.PodIP + ":8080"} {
				c, ok := cells["authorities/"+au]
				if !ok {
					return fmt.Errorf("no authority row %s on the page", au)
				}
				if c.tls != "1" || !strings.Contains(c.tlsText, "🔒") {
					return fmt.Errorf("authority %s: TLS %q, want 100%% with the lock", au, c.tlsText)
				}
				if v, _ := strconv.ParseFloat(c.rps, 64); v <= 0 {
					return fmt.Errorf("authority %s: RPS %q, want live traffic", au, c.rps)
				}
			}
			return nil
		})
		for _, l := range seen {
			t.Log(l)
		}
	})

	t.Run("deployment page: edges and the live list from the tap API", func(t *testing.T) {
		start := time.Now()
		page, err := getOK(base+"/ns/"+ns+"/deploy/web", "text/html")
		if err != nil {
			t.Fatal(err)
		}
		// Its three computations (the namespace's deployments, the edges
		// from and to web) scrape at once; dashboard's
		// TestDeploymentPageComputationsOverlap shows that by events. The
		// time on a shared machine is logged, not asserted.
		t.Logf("deployment page, scraping the proxies over %v: %v", window, time.Since(start))
		for _, want := range []string{`/ns/` + ns + `/deploy/web/tap`, emojiID, votingID} {
			if !strings.Contains(page, html.EscapeString(want)) {
				t.Errorf("the deployment page does not name %q", want)
			}
		}
		if strings.Contains(page, "Tap API not available") {
			t.Fatalf("the live list says the tap API is missing:\n%s", page)
		}
		// The live list's stream, as the page's SSE extension reads it:
		// web's outbound calls, each marked encrypted with the identity
		// the server proved.
		localcluster.Eventually(t, 2*time.Minute, func() error {
			row, err := sseUntil(ctx, base+"/ns/"+ns+"/deploy/web/tap", 45*time.Second, func(event, data string) bool {
				return event == "tap" && strings.Contains(data, "🔒</span> encrypted") &&
					(strings.Contains(data, html.EscapeString(emojiID)) || strings.Contains(data, html.EscapeString(votingID)))
			})
			if err != nil {
				return err
			}
			t.Logf("a live row: %s", row)
			return nil
		})
	})

	t.Run("check page: check --tls's results from the cluster", func(t *testing.T) {
		localcluster.Eventually(t, 2*time.Minute, func() error {
			out, err := exec.CommandContext(ctx, linkerdBin, "check", "--tls", "-L", cp, "--kubeconfig", kubeconfig, "-o", "json").Output()
			if err != nil && len(out) == 0 {
				return fmt.Errorf("linkerd check --tls: %v", err)
			}
			var res struct {
				Categories []struct {
					Checks []struct {
						Description string `json:"description"`
						Status      string `json:"status"`
					} `json:"checks"`
				} `json:"categories"`
			}
			if err := json.Unmarshal(out, &res); err != nil {
				return fmt.Errorf("linkerd check -o json: %v\n%s", err, out)
			}
			page, err := getOK(base+"/check", "text/html")
			if err != nil {
				return err
			}
			onPage := checkRows(page)
			n := 0
			for _, c := range res.Categories {
				for _, ck := range c.Checks {
					n++
					if got, ok := onPage[ck.Description]; !ok || got != ck.Status {
						return fmt.Errorf("check %q: %q on the page (present %t), %q from linkerd check --tls", ck.Description, got, ok, ck.Status)
					}
				}
			}
			if n == 0 || n != len(onPage) {
				return fmt.Errorf("%d checks from linkerd check --tls, %d on the page", n, len(onPage))
			}
			for _, want := range []string{"tap API is available"} {
				if onPage[want] != "ok" {
					return fmt.Errorf("check %q: %q on the page, want ok", want, onPage[want])
				}
			}
			t.Logf("the check page shows all %d results of linkerd check --tls, with the same statuses", n)
			return nil
		})
	})

	t.Run("in chromium: the live namespace page", func(t *testing.T) {
		path := chromium.Path(t)
		actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1280, 800),
			chromedp.Flag("disable-dev-shm-usage", true))...)
		defer cancelAlloc()
		bctx, cancelB := chromedp.NewContext(actx)
		defer cancelB()
		// The first action starts the browser; it must not carry a timeout.
		if err := chromedp.Do(bctx); err != nil {
			t.Fatalf("starting chromium: %v", err)
		}
		tctx, cancelT := context.WithTimeout(bctx, 2*time.Minute)
		defer cancelT()
		sel := chromedp.CSS(`#deployments tr[data-name="web"] td[data-field="tls"]`)
		printed, _ := dashboardURLs.Load(base)
		if err := chromedp.Do(tctx, chromedp.Navigate(printed.(string)), chromedp.Navigate(base+"/ns/"+ns), chromedp.WaitVisible(sel)); err != nil {
			t.Fatalf("chromium on the namespace page: %v", err)
		}
		tlsText, err := chromedp.Run(tctx, chromedp.Text(sel))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(tlsText, "🔒") || !strings.Contains(tlsText, "100%") || !strings.Contains(tlsText, "encrypted") {
			t.Errorf("web's TLS cell in chromium: %q, want 🔒 100%% encrypted", tlsText)
		}
		// The page refreshes itself over server-sent events: the status
		// line changes from the promise to the time of the last update.
		updated, err := chromedp.Run(tctx, chromedp.Poll[string](`(() => { const e = document.querySelector('[sse-swap="updated"]'); return e && e.textContent.startsWith('Updated') ? e.textContent : false })()`))
		if err != nil {
			t.Fatalf("the page never refreshed live: %v", err)
		}
		// The rows are swapped in by their own event, which may land after
		// the status line's: wait for the cell to show web's live rate.
		rpsSel := `#deployments tr[data-name="web"] td[data-field="rps"]`
		rpsText, err := chromedp.Run(tctx, chromedp.Poll[string](`(() => { const e = document.querySelector('`+rpsSel+`'); const v = e ? parseFloat(e.textContent) : NaN; return v > 0 ? e.textContent.trim() : false })()`))
		if err != nil {
			last, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(rpsSel)))
			t.Fatalf("web's RPS cell never showed a live rate after refreshes (last %q): %v", last, err)
		}
		if v, err := strconv.ParseFloat(strings.TrimSuffix(rpsText, "rps"), 64); err != nil || v <= 0 {
			t.Errorf("web's RPS cell after a live refresh: %q", rpsText)
		}
		t.Logf("chromium: web %s, TLS %q; %s", rpsText, tlsText, updated)
	})
}

// TestDashboardOnLiveMeshPrometheus is the dashboard's default path on a
// cluster whose control plane runs its Prometheus: the figures and the
// charts come from it, reached through a client-go port-forward, as
// `linkerd stat` reaches it.
func TestDashboardOnLiveMeshPrometheus(t *testing.T) {
	// Not parallel: it needs its own control plane behind the tap API
	// (check, tap, the dashboard), and the APIService v1alpha1.tap.linkerd.io
	// is cluster-wide: another install would take it over.
	m := startLiveMesh(t, true)
	ctx, ns, cp, kubeconfig := m.ctx, m.ns, m.cp, m.kubeconfig
	// The installed Prometheus, unchanged (bin/prometheus: Kubernetes
	// service discovery finds the proxies), scrapes every 10 s; a rate
	// needs two samples, so a window of three scrapes.
	readyPod(ctx, t, localcluster.Client(t), cp, contract.ComponentLabel+"=prometheus")
	const window = 30 * time.Second
	base := startDashboard(t, "-L", cp, "--kubeconfig", kubeconfig, "-t", window.String(), "--refresh", "5s")

	t.Run("namespace page from the control plane's Prometheus, as stat shows it", func(t *testing.T) {
		// Lines of the attempt that passed.
		var seen []string
		localcluster.Eventually(t, 3*time.Minute, func() error {
			seen = nil
			page, err := getOK(base+"/ns/"+ns, "text/html")
			if err != nil {
				return err
			}
			if !strings.Contains(page, "Figures from the control plane&#39;s Prometheus (port-forwarded)") {
				return fmt.Errorf("the page does not say its figures come from the control plane's Prometheus:\n%s", page)
			}
			rows, err := statRows("stat", "deploy", "-n", ns, "-L", cp, "-t", window.String(), "--kubeconfig", kubeconfig, "-o", "json")
			if err != nil {
				return err
			}
			cells := pageCells(page)
			for _, name := range []string{"emoji", "voting", "web"} {
				c := cells["deployments/"+name]
				pageRPS, _ := strconv.ParseFloat(c.rps, 64)
				if c.tls != "1" || pageRPS <= 0 {
					return fmt.Errorf("deploy/%s: TLS %q, RPS %q on the page, want 100%% with traffic", name, c.tlsText, c.rps)
				}
				r := rows[ns+"/"+name]
				if r.RPS == nil || r.TLS == nil || *r.TLS != 1 {
					return fmt.Errorf("stat: deploy/%s %+v", name, r)
				}
				// Both ask Prometheus for the window ending now, moments
				// apart: a scrape or so (10 s of a 30 s window).
				if d := math.Abs(pageRPS - *r.RPS); d > 0.35*math.Max(pageRPS, *r.RPS)+0.5 {
					return fmt.Errorf("deploy/%s: %.2f rps on the page, %.2f from stat: beyond 35%% + 0.5 rps", name, pageRPS, *r.RPS)
				}
				seen = append(seen, fmt.Sprintf("deploy/%s from Prometheus: page %.2f rps, stat -o json %.2f rps, TLS %s", name, pageRPS, *r.RPS, c.tlsText))
			}
			return nil
		})
		for _, l := range seen {
			t.Log(l)
		}
	})

	t.Run("charts from Prometheus history", func(t *testing.T) {
		localcluster.Eventually(t, 2*time.Minute, func() error {
			body, err := getOK(base+"/ns/"+ns+"/history", "application/json")
			if err != nil {
				return err
			}
			var h struct {
				Times       []float64 `json:"times"`
				Deployments map[string]struct {
					RPS []*float64 `json:"rps"`
					TLS []*float64 `json:"tls"`
				} `json:"deployments"`
			}
			if err := json.Unmarshal([]byte(body), &h); err != nil {
				return fmt.Errorf("history: %v: %s", err, body)
			}
			web, ok := h.Deployments["web"]
			if !ok || len(h.Times) < 2 || len(web.RPS) != len(h.Times) {
				return fmt.Errorf("history has no series for web over %d windows: %s", len(h.Times), body)
			}
			last := len(h.Times) - 1
			if web.RPS[last] == nil || *web.RPS[last] <= 0 || web.TLS[last] == nil || *web.TLS[last] != 1 {
				return fmt.Errorf("web's latest chart point: rps %v tls %v, want traffic at TLS 100%%: %s", web.RPS[last], web.TLS[last], body)
			}
			t.Logf("web's chart: %d windows, latest %.2f rps at TLS %.0f%%", len(h.Times), *web.RPS[last], *web.TLS[last]*100)
			return nil
		})
	})
}

// liveMesh is emojivoto injected and talking mutual TLS under a fresh
// control plane with the tap API.
type liveMesh struct {
	ctx                context.Context
	ns, cp, kubeconfig string
	emoji, voting, web corev1.Pod
}

// startLiveMesh installs a control plane (--tls=optional, with the tap
// API; its Prometheus only when keepPrometheus, not waited for) and emojivoto's four
// deployments, injected, with vote-bot sending traffic, and waits until
// the tap API is Available.
func startLiveMesh(t *testing.T, keepPrometheus bool) liveMesh {
	t.Helper()
	client := localcluster.Client(t)
	kubeconfig := localcluster.Kubeconfig(t)
	kubectl := localcluster.Kubectl(t)
	ns := localcluster.Namespace(t)
	cp := "l5d-" + rand.String(5)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)

	installControlPlane(t, kubectl, kubeconfig, cp)
	if !keepPrometheus {
		_ = client.AppsV1().Deployments(cp).Delete(ctx, "linkerd-prometheus", metav1.DeleteOptions{})
	}
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=destination")
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=ca")
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=tap")
	inject := func(manifest string) { t.Helper(); injectApply(t, kubectl, kubeconfig, cp, manifest) }
	inject(demoDeployment(ns, "emoji", "emoji", map[string]string{"GRPC_PORT": "8080"}, 8080) +
		demoDeployment(ns, "voting", "voting", map[string]string{"GRPC_PORT": "8080"}, 8080))
	emoji := readyPod(ctx, t, client, ns, "app=emoji")
	voting := readyPod(ctx, t, client, ns, "app=voting")
	inject(demoDeployment(ns, "web", "web", map[string]string{
		"WEB_PORT": "8080", "EMOJISVC_HOST": emoji.Status.PodIP + ":8080", "VOTINGSVC_HOST": voting.Status.PodIP + ":8080",
	}, 8080))
	web := readyPod(ctx, t, client, ns, "app=web")
	inject(demoDeployment(ns, "vote-bot", "vote-bot", map[string]string{
		"WEB_HOST": web.Status.PodIP + ":8080", "VOTE_RATE": "5", "TRUTH_PORT": "8802",
	}, 8802))
	readyPod(ctx, t, client, ns, "app=vote-bot")
	localcluster.Eventually(t, 2*time.Minute, func() error {
		out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "get", "apiservice", contract.TapAPIService,
			"-o", `jsonpath={.status.conditions[?(@.type=="Available")].status}`).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "True") {
			return fmt.Errorf("APIService %s not Available: %s %v", contract.TapAPIService, out, err)
		}
		return nil
	})

	return liveMesh{ctx: ctx, ns: ns, cp: cp, kubeconfig: kubeconfig, emoji: emoji, voting: voting, web: web}
}

// startDashboard runs `linkerd dashboard` on a free port with args and
// returns its URL; it is stopped with Ctrl-C (and killed if it does not
// stop) when the test ends.
func startDashboard(t *testing.T, args ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(linkerdBin, append([]string{"dashboard", "--port", strconv.Itoa(port)}, args...)...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-done:
			// Ctrl-C exits 130, as a shell does.
			var ee *exec.ExitError
			if err != nil && (!errors.As(err, &ee) || ee.ExitCode() != 130) {
				t.Errorf("linkerd dashboard stopped with %v\n%s", err, stderr.String())
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			err := <-done
			t.Errorf("linkerd dashboard did not stop within 15 s of Ctrl-C (killed: %v)\n%s", err, stderr.String())
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "Dashboard: "); ok {
				lines <- u
			}
		}
		close(lines)
	}()
	select {
	case printed, ok := <-lines:
		if !ok {
			t.Fatalf("linkerd dashboard printed no URL\n%s", stderr.String())
		}
		// The printed URL carries the run's token; visiting it once puts
		// the session cookie in the jar every request here uses.
		u, _, _ := strings.Cut(printed, "/?token=")
		if want := fmt.Sprintf("http://127.0.0.1:%d", port); u != want || !strings.Contains(printed, "/?token=") {
			t.Fatalf("linkerd dashboard prints %s, want %s/?token=…", printed, want)
		}
		if _, err := getOK(printed, "text/html"); err != nil {
			t.Fatalf("the printed URL: %v", err)
		}
		dashboardURLs.Store(u, printed)
		return u
	case <-time.After(time.Minute):
		t.Fatalf("linkerd dashboard printed no URL within a minute\n%s", stderr.String())
	}
	return ""
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dashboardJar keeps each dashboard's session cookie, as a browser does
// after opening the printed URL; dashboardURLs maps a dashboard's base URL
// to the printed one, for a browser to open first.
var (
	dashboardJar, _ = cookiejar.New(nil)
	dashboardURLs   sync.Map
)

// getOK fetches url and wants 200 with the content type.
func getOK(url, contentType string) (string, error) {
	c := http.Client{Timeout: 2 * time.Minute, Jar: dashboardJar}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), contentType) {
		return "", fmt.Errorf("GET %s: %s %s\n%s", url, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	return string(b), nil
}

type pageCell struct{ rps, tls, tlsText string }

var (
	tbodyRE = regexp.MustCompile(`(?s)<table class="stat" id="(\w+)".*?</table>`)
	rowRE   = regexp.MustCompile(`(?s)<tr data-name="([^"]*)">(.*?)</tr>`)
	rpsRE   = regexp.MustCompile(`data-field="rps" data-value="([^"]*)"`)
	tlsRE   = regexp.MustCompile(`(?s)data-field="tls" data-value="([^"]*)">(.*?)</td>`)
	tagRE   = regexp.MustCompile(`<[^>]*>`)
)

// pageCells reads a namespace page's figure cells, keyed by table and row
// name: the raw numbers each cell carries, and the TLS cell's text.
func pageCells(page string) map[string]pageCell {
	out := map[string]pageCell{}
	for _, table := range tbodyRE.FindAllStringSubmatch(page, -1) {
		for _, r := range rowRE.FindAllStringSubmatch(table[0], -1) {
			var c pageCell
			if m := rpsRE.FindStringSubmatch(r[2]); m != nil {
				c.rps = m[1]
			}
			if m := tlsRE.FindStringSubmatch(r[2]); m != nil {
				c.tls, c.tlsText = m[1], html.UnescapeString(tagRE.ReplaceAllString(m[2], ""))
			}
			out[table[1]+"/"+html.UnescapeString(r[1])] = c
		}
	}
	return out
}

var checkRowRE = regexp.MustCompile(`<tr class="[^"]*" data-status="([^"]*)">.*?<th scope="row">(.*?)</th>`)

// checkRows reads the check page's results: description to status.
func checkRows(page string) map[string]string {
	out := map[string]string{}
	for _, m := range checkRowRE.FindAllStringSubmatch(page, -1) {
		out[html.UnescapeString(m[2])] = m[1]
	}
	return out
}

// sseUntil reads the server-sent events at url until ok accepts one, and
// returns its data.
func sseUntil(ctx context.Context, url string, limit time.Duration, ok func(event, data string) bool) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Jar: dashboardJar}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("GET %s: %s %s: %s", url, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var event string
	var data []string
	var seen []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			d := strings.Join(data, "\n")
			if ok(event, d) {
				return d, nil
			}
			if len(seen) < 5 {
				seen = append(seen, event+": "+d)
			}
			if event == "end" || event == "failed" {
				return "", fmt.Errorf("the live list ended before a matching row: %v", seen)
			}
			event, data = "", nil
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
	return "", fmt.Errorf("no matching event within %v (first events %v): %v", limit, seen, sc.Err())
}

// TestDashboardOnDemo is the "Live" check on the demo itself:
// demo/emojivoto.yml as shipped (apps reach Services by DNS name, an
// unmeshed legacy-bot calls web-svc), the control plane's Prometheus, and
// `linkerd dashboard` started as a user would. Its namespace page shows
// emojivoto's meshed-to-meshed authorities at TLS 100% with live RPS, and
// web-svc, which also gets legacy-bot's plain text, below 100% with the
// reason, as `linkerd stat au -o json` says.
func TestDashboardOnDemo(t *testing.T) {
	// Not parallel: it needs its own control plane behind the tap API
	// (check, tap, the dashboard), and the APIService v1alpha1.tap.linkerd.io
	// is cluster-wide: another install would take it over.
	client := localcluster.Client(t)
	kubeconfig := localcluster.Kubeconfig(t)
	kubectl := localcluster.Kubectl(t)
	cp := "l5d-dash-" + rand.String(4)
	ns := "emojivoto-" + rand.String(5)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	installControlPlane(t, kubectl, kubeconfig, cp)
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	kubectlApply(t, kubectl, kubeconfig, injectDemo(t, cp, ns))
	for _, app := range []string{"emoji-svc", "voting-svc", "web-svc", "vote-bot", "legacy-bot"} {
		readyPod(ctx, t, client, ns, "app="+app)
	}
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=prometheus")
	waitServiceDNS(ctx, t, client, ns)
	const window = 30 * time.Second
	base := startDashboard(t, "-L", cp, "--kubeconfig", kubeconfig, "-t", window.String(), "--refresh", "5s")

	// authority finds the row of a Service's requests (svc.ns:port).
	authority := func(cells map[string]pageCell, svc string) (string, pageCell, bool) {
		for k, c := range cells {
			if name, ok := strings.CutPrefix(k, "authorities/"); ok && strings.HasPrefix(name, svc+"."+ns+":") {
				return name, c, true
			}
		}
		return "", pageCell{}, false
	}
	// Lines of the attempt that passed.
	var seen []string
	localcluster.Eventually(t, 3*time.Minute, func() error {
		seen = nil
		page, err := getOK(base+"/ns/"+ns, "text/html")
		if err != nil {
			return err
		}
		rows, err := statRows("stat", "au", "-n", ns, "-L", cp, "-t", window.String(), "--kubeconfig", kubeconfig, "-o", "json")
		if err != nil {
			return err
		}
		cells := pageCells(page)
		for _, svc := range []string{"emoji-svc", "voting-svc", "web-svc"} {
			name, c, found := authority(cells, svc)
			if !found {
				return fmt.Errorf("no authority row for %s on the page", svc)
			}
			pageRPS, _ := strconv.ParseFloat(c.rps, 64)
			if pageRPS <= 0 {
				return fmt.Errorf("authority %s: RPS %q, want live traffic", name, c.rps)
			}
			var r row
			ok := false
			for _, sr := range rows {
				if sr.Name == name {
					r, ok = sr, true
				}
			}
			if !ok || r.RPS == nil || r.TLS == nil {
				return fmt.Errorf("stat au has no figures for %s", name)
			}
			if d := math.Abs(pageRPS - *r.RPS); d > 0.35*math.Max(pageRPS, *r.RPS)+0.5 {
				return fmt.Errorf("authority %s: %.2f rps on the page, %.2f from stat: beyond 35%% + 0.5 rps", name, pageRPS, *r.RPS)
			}
			pageTLS, _ := strconv.ParseFloat(c.tls, 64)
			if math.Abs(pageTLS-*r.TLS) > 0.1 {
				return fmt.Errorf("authority %s: TLS %v on the page, %v from stat", name, c.tls, *r.TLS)
			}
			if svc != "web-svc" {
				if c.tls != "1" || !strings.Contains(c.tlsText, "🔒") || !strings.Contains(c.tlsText, "encrypted") {
					return fmt.Errorf("authority %s: TLS %q, want 🔒 100%% encrypted (meshed to meshed)", name, c.tlsText)
				}
			} else {
				// legacy-bot is not meshed: web-svc is partly plain, and
				// the page says why.
				if pageTLS >= 1 || !strings.Contains(c.tlsText, "partly plain") {
					return fmt.Errorf("authority %s: TLS %q, want partly plain (legacy-bot is not meshed)", name, c.tlsText)
				}
				if !strings.Contains(page, `<span class="reason">no_tls_from_remote</span>`) {
					return fmt.Errorf("the page does not name no_tls_from_remote for legacy-bot's requests")
				}
			}
			seen = append(seen, fmt.Sprintf("authority %s: page %.2f rps, stat %.2f rps; TLS %s", name, pageRPS, *r.RPS, c.tlsText))
		}
		return nil
	})
	for _, l := range seen {
		t.Log(l)
	}
}
