package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"meshtls/fixtures"
	"meshtls/internal/testprom"
	"meshtls/stat"
	"meshtls/tap"
)

// writeHistoryCapture writes a capture of the built-in mixed one's pods
// over rounds scrape rounds, 10 s apart, whose TLS share changes from one
// window to the next: counters of TLS traffic grow with the square of the
// round, the others linearly. It returns the directory and each round's
// bodies ("namespace/pod" → text).
func writeHistoryCapture(t testing.TB, rounds int) (string, []map[string][]byte) {
	t.Helper()
	fsys, err := fixtures.Capture("mixed")
	if err != nil {
		t.Fatal(err)
	}
	c, err := stat.OpenCapture(fsys, "builtin:mixed")
	if err != nil {
		t.Fatal(err)
	}
	m := c.Manifest()
	last := m.Scrapes[len(m.Scrapes)-1]
	base := map[string][]byte{}
	for _, p := range m.Pods {
		b, err := fs.ReadFile(fsys, last.Dir+"/"+p.Namespace+"/"+p.Name+".prom")
		if err == nil {
			base[p.Namespace+"/"+p.Name] = b
		}
	}
	dir := filepath.Join(t.TempDir(), "history")
	w, err := stat.NewCaptureWriter(dir, "mixed, with history", m.Pods)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	var all []map[string][]byte
	for k := 1; k <= rounds; k++ {
		bodies := map[string][]byte{}
		for key, b := range base {
			bodies[key] = scaleCounters(t, b, func(line string) float64 {
				if strings.Contains(line, `tls="true"`) {
					return float64(k * k)
				}
				return float64(2 * k)
			})
		}
		if err := w.AddScrape(start.Add(time.Duration(k)*10*time.Second), bodies); err != nil {
			t.Fatal(err)
		}
		all = append(all, bodies)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, all
}

func scaleCounters(t testing.TB, body []byte, factor func(string) float64) []byte {
	t.Helper()
	var out strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("unexpected sample line %q", line)
		}
		fmt.Fprintf(&out, "%s %g\n", line[:i], v*factor(line))
	}
	return []byte(out.String())
}

// TestDashboardHistoryIsTheStatEngineOverEachWindow: each point of a
// deployment's chart is what `stat` says for that window alone, computed
// here from a capture holding only that window's two rounds.
func TestDashboardHistoryIsTheStatEngineOverEachWindow(t *testing.T) {
	const rounds = 5
	dir, bodies := writeHistoryCapture(t, rounds)
	url := startDashboard(t, DashboardOptions{Capture: dir})
	resp, err := http.Get(url + "/ns/mixed/history")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("history: %s, %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	var h struct {
		Times       []float64 `json:"times"`
		Deployments map[string]struct {
			RPS []*float64 `json:"rps"`
			TLS []*float64 `json:"tls"`
		} `json:"deployments"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if len(h.Times) != rounds-1 {
		t.Fatalf("%d points, want %d (one per window between rounds)", len(h.Times), rounds-1)
	}
	base, err := stat.OpenCapture(os.DirFS(dir), dir)
	if err != nil {
		t.Fatal(err)
	}
	pods := base.Manifest().Pods
	compared, tlsChanges := 0, false
	for i := 1; i < rounds; i++ {
		// The window alone, as its own capture.
		sub := filepath.Join(t.TempDir(), fmt.Sprint(i))
		w, err := stat.NewCaptureWriter(sub, "one window", pods)
		if err != nil {
			t.Fatal(err)
		}
		at := time.Unix(int64(h.Times[i-1]), 0)
		for _, r := range []int{i - 1, i} {
			if err := w.AddScrape(at.Add(time.Duration(r-i)*10*time.Second), bodies[r]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		c, err := stat.OpenCapture(os.DirFS(sub), sub)
		if err != nil {
			t.Fatal(err)
		}
		res, err := stat.Compute(t.Context(), stat.Query{Resource: stat.Resource{Kind: stat.KindDeployment, Namespace: "mixed"}}, c, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range res.Rows {
			d, ok := h.Deployments[row.Name]
			if !ok {
				t.Errorf("window %d: %s has no series", i, row.Name)
				continue
			}
			for field, pair := range map[string]struct {
				got  *float64
				want float64
			}{"rps": {d.RPS[i-1], row.RPS}, "tls": {d.TLS[i-1], row.TLS}} {
				switch {
				case math.IsNaN(pair.want) && pair.got != nil:
					t.Errorf("window %d %s %s: %v, stat says no traffic", i, row.Name, field, *pair.got)
				case !math.IsNaN(pair.want) && (pair.got == nil || *pair.got != pair.want):
					t.Errorf("window %d %s %s: %v, stat says %v", i, row.Name, field, pair.got, pair.want)
				case !math.IsNaN(pair.want):
					compared++
				}
			}
			if i > 1 && d.TLS[i-1] != nil && d.TLS[i-2] != nil && *d.TLS[i-1] != *d.TLS[i-2] {
				tlsChanges = true
			}
		}
	}
	if compared == 0 || !tlsChanges {
		t.Fatalf("%d figures compared, TLS changed over time: %t; the capture should give both", compared, tlsChanges)
	}

	// A capture of two rounds has one window: no chart, and a clear note.
	two := startDashboard(t, DashboardOptions{Capture: "builtin:mixed"})
	resp2, body := httpGet(t, two+"/ns/mixed")
	if resp2.StatusCode != 200 || !strings.Contains(body, `id="no-history">No history: builtin:mixed has 2 scrape rounds`) || strings.Contains(body, `class="chart"`) {
		t.Errorf("a two-round capture's namespace page: %s, note or chart wrong", resp2.Status)
	}
}

func httpGet(t testing.TB, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return resp, b.String()
}

// TestDashboardOnPrometheus runs the dashboard as it runs against a
// cluster's Prometheus (here a real Prometheus scraping a replay of the
// built-in mixed capture): its pages show stat's figures, each chart
// point is `stat --at` that window's end, and without a cluster the check
// page and the live list say what they need.
func TestDashboardOnPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: starts a real Prometheus and waits for data")
	}
	const interval = 500 * time.Millisecond
	const window = 2 * time.Second
	c, err := openCapture(builtinPrefix + "mixed")
	if err != nil {
		t.Fatal(err)
	}
	r, err := stat.StartReplayWith(c, stat.ReplayOptions{Step: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	var targets []testprom.Target
	for _, tg := range r.Targets {
		targets = append(targets, testprom.Target{Addr: tg.Addr, Labels: tg.Pod.TargetLabels()})
	}
	prom := testprom.Start(t, targets, interval)
	prom.WaitTargetsUp(t, len(targets), 60*time.Second)
	url := startDashboard(t, DashboardOptions{PrometheusURL: prom.URL, Window: window, WindowSet: true})
	// Wait until a few windows hold data (polling, not a fixed sleep).
	var h struct {
		Times       []float64 `json:"times"`
		Deployments map[string]struct {
			RPS []*float64 `json:"rps"`
			TLS []*float64 `json:"tls"`
		} `json:"deployments"`
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, body := httpGet(t, url+"/ns/mixed/history")
		if resp.StatusCode == 200 {
			if err := json.Unmarshal([]byte(body), &h); err != nil {
				t.Fatal(err)
			}
			if b, ok := h.Deployments["backend"]; ok && len(b.RPS) == 12 && b.RPS[8] != nil && b.RPS[9] != nil && b.RPS[10] != nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no three windows of history for backend within 90s: %s %s", resp.Status, body)
		}
		time.Sleep(time.Second)
	}
	// The second-to-last point: its window is surely all in Prometheus.
	i := len(h.Times) - 2
	at := time.Unix(int64(h.Times[i]), 0).UTC()
	want := statJSONRows(t, []string{"deploy", "-n", "mixed", "--prometheus-url", prom.URL, "-t", window.String(), "--at", at.Format(time.RFC3339), "-o", "json"})
	compared := 0
	for _, name := range []string{"backend", "frontend"} {
		d := h.Deployments[name]
		w := want["mixed/"+name]
		if !close(d.RPS[i], w.RPS) || !close(d.TLS[i], w.TLS) {
			t.Errorf("%s at %s: chart rps %s tls %s, stat --at says rps %s tls %s", name, at, show(d.RPS[i]), show(d.TLS[i]), show(w.RPS), show(w.TLS))
		}
		if w.RPS != nil {
			compared++
		}
	}
	if compared == 0 {
		t.Fatal("stat --at found no traffic to compare")
	}

	resp, page := httpGet(t, url+"/ns/mixed")
	if resp.StatusCode != 200 || !strings.Contains(page, `data-history="/ns/mixed/history"`) || !strings.Contains(page, `<tr data-name="backend">`) ||
		!strings.Contains(page, "Figures from Prometheus "+prom.URL+" over 2s") {
		t.Errorf("namespace page on Prometheus: %s\n%s", resp.Status, page)
	}
	if _, page := httpGet(t, url+"/ns/mixed/deploy/backend"); !strings.Contains(page, "Tap API not available") {
		t.Errorf("without a tap API the deployment page must say so:\n%s", page)
	}
	if _, page := httpGet(t, url+"/check"); !strings.Contains(page, "Check needs a cluster: no cluster in this test") {
		t.Errorf("without a cluster the check page must say so:\n%s", page)
	}
}

// TestDashboardUsesTheTapAPISlot: with a cluster and no --replay, the live
// list comes from the factory's TapSource (the tap API), the source
// `linkerd tap` uses; here the slot holds the built-in recording.
func TestDashboardUsesTheTapAPISlot(t *testing.T) {
	ios, _, _ := TestStreams(false)
	f := NewFactory(ios)
	f.RESTConfig = func() (*rest.Config, error) { return nil, errNoCluster }
	f.KubeClient = func() (kubernetes.Interface, error) { return nil, errNoCluster }
	opened := 0
	f.TapSource = func() (tap.Source, error) {
		opened++
		src, _, err := f.tapSource(&TapOptions{Replay: "builtin:emojivoto", Speed: 0})
		return src, err
	}
	opts := DashboardOptions{PrometheusURL: "http://127.0.0.1:1", Window: time.Minute, Refresh: time.Second, MaxEvents: 1e9, Show: "url"}
	srv, cfg, closeSrc, err := newDashboard(t.Context(), f, &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSrc()
	if cfg.TapName != "the tap API" || cfg.Tap == nil {
		t.Fatalf("tap source %q, %v: want the tap API", cfg.TapName, cfg.Tap != nil)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	_, body := httpGet(t, ts.URL+"/ns/emojivoto/deploy/web/tap")
	want := countTapEvents(t, "web")
	// Opened once at start (is there a tap API?), then once for the list.
	if got := strings.Count(body, "event: tap\n"); opened != 2 || got != want || !strings.HasSuffix(body, "event: end\ndata: The stream ended.\n\n") {
		t.Errorf("opened the slot %d times, %d events (linkerd tap prints %d); stream ends:\n%s", opened, got, want, body[max(0, len(body)-300):])
	}

	// The factory's own slot without a cluster: the tap API cannot be
	// reached, and the page says why.
	factory := NewFactory(ios)
	factory.RESTConfig = func() (*rest.Config, error) { return nil, errNoCluster }
	f.TapSource = factory.TapSource
	_, cfg, closeSrc1, err := newDashboard(t.Context(), f, &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSrc1()
	if cfg.Tap != nil || cfg.TapNote != "Tap API not available: "+errNoCluster.Error()+"." {
		t.Errorf("no cluster: tap %v, note %q", cfg.Tap != nil, cfg.TapNote)
	}

	// An empty slot is said on the page, and the stream is a 404.
	f.TapSource = nil
	_, cfg, closeSrc2, err := newDashboard(t.Context(), f, &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSrc2()
	if cfg.Tap != nil || !strings.HasPrefix(cfg.TapNote, "Tap API not available: live tap needs the tap API") {
		t.Errorf("empty slot: note %q", cfg.TapNote)
	}
}
