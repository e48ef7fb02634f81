package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"meshtls/check"
	"meshtls/dashboard"
	tapfixtures "meshtls/fixtures/tap"
	"meshtls/testutil/chromium"
)

// The browser tests drive Debian's chromium headless through chromedp:
// what a person sees, not only what the server sends. `make test`
// installs chromium (scripts/deps.sh); without it they fail in CI and
// elsewhere skip and say why (testutil/chromium).

// testOutputDir is where screenshots go: $TEST_OUTPUT when set (kept),
// else the test's temporary directory.
func testOutputDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("TEST_OUTPUT"); d != "" {
		dir := filepath.Join(d, "dashboard")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

type browser struct {
	ctx context.Context
	mu  sync.Mutex
	// errs are console errors, uncaught exceptions and CSP violations:
	// a page that works has none.
	errs []string
}

func (b *browser) errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

func newBrowser(t testing.TB, width, height int) *browser {
	t.Helper()
	return newBrowserWith(t, width, height)
}

func newBrowserWith(t testing.TB, width, height int, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium.Path(t)),
		// Tests run as root, where chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.WindowSize(width, height),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("enable-precise-memory-info", true),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	b := &browser{ctx: ctx}
	// The first action starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
		case *cdplog.EventEntryAdded:
			// A failed favicon fetch is the browser's, not the page's.
			if e.Entry.Level == cdplog.EntryLevelError && e.Entry.Source != cdplog.EntrySourceNetwork {
				msg = fmt.Sprintf("%s: %s", e.Entry.Source, e.Entry.Text)
			}
		case *runtime.EventConsoleAPICalled:
			if e.Type == "error" {
				msg = "console.error"
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.errs = append(b.errs, msg)
			b.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *browser) timeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, 2*time.Minute)
}

func (b *browser) do(t testing.TB, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

func run[T any](t testing.TB, b *browser, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := b.timeout()
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func evaluate[T any](t testing.TB, b *browser, js string) T {
	t.Helper()
	return run(t, b, chromedp.Evaluate[T](js))
}

// waitFor polls a JavaScript predicate until it holds.
func waitFor(js string, timeout time.Duration) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(timeout))
}

func (b *browser) screenshot(t testing.TB, dir, name string) string {
	t.Helper()
	png := run(t, b, chromedp.FullScreenshot(100))
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}

// startDashboard serves the dashboard the command would build for opts,
// on a free loopback port, with no cluster.
func startDashboard(t testing.TB, opts DashboardOptions) string {
	t.Helper()
	ios, _, _ := TestStreams(false)
	f := NewFactory(ios)
	f.RESTConfig = func() (*rest.Config, error) { return nil, errNoCluster }
	f.KubeClient = func() (kubernetes.Interface, error) { return nil, errNoCluster }
	// No cluster, so no tap API either (NewFactory fills the slot for any
	// kubeconfig).
	f.TapSource = nil
	if opts.MaxEvents == 0 {
		opts.MaxEvents = 1e9
	}
	if opts.Refresh == 0 {
		opts.Refresh = time.Second
	}
	if opts.Window == 0 {
		opts.Window = time.Minute
	}
	srv, _, closeSrc, err := newDashboard(context.Background(), f, &opts)
	if err != nil {
		t.Fatal(err)
	}
	base, cancel := context.WithCancel(context.Background())
	ts := httptest.NewUnstartedServer(srv)
	// Open event streams end with the test, so Close does not wait.
	ts.Config.BaseContext = func(net.Listener) context.Context { return base }
	ts.Start()
	t.Cleanup(func() { cancel(); ts.Close(); closeSrc() })
	return ts.URL
}

type pageCell struct {
	Value string `json:"value"`
	Text  string `json:"text"`
}

type pageRow struct {
	Table string              `json:"table"`
	Name  string              `json:"name"`
	Cells map[string]pageCell `json:"cells"`
}

// readRowsJS reads every figure cell of the page's stat tables, as shown.
const readRowsJS = `Array.from(document.querySelectorAll('table.stat tbody tr[data-name]')).map(tr => ({
  table: tr.closest('table').id, name: tr.dataset.name,
  cells: Object.fromEntries(Array.from(tr.querySelectorAll('td[data-field]')).map(td =>
    [td.dataset.field, {value: td.dataset.value || '', text: td.textContent.trim()}]))}))`

// TestDashboardBrowserNamespaceMatchesStatJSON: the cells a browser shows
// on the namespace page (and after a live refresh) equal `stat -o json`
// on the same capture, and TLS is shown with a mark and a word.
func TestDashboardBrowserNamespaceMatchesStatJSON(t *testing.T) {
	b := newBrowser(t, 1280, 800)
	out := testOutputDir(t)
	for _, capture := range []string{"emojivoto", "mixed"} {
		url := startDashboard(t, DashboardOptions{Capture: "builtin:" + capture})
		b.do(t, chromedp.Navigate(url+"/ns/"+capture), chromedp.WaitVisible("#deployments"))
		check := func(when string) {
			rows := evaluate[[]pageRow](t, b, readRowsJS)
			byTable := map[string]map[string]pageRow{}
			for _, r := range rows {
				if byTable[r.Table] == nil {
					byTable[r.Table] = map[string]pageRow{}
				}
				byTable[r.Table][r.Name] = r
			}
			compared := 0
			for table, kind := range map[string]string{"deployments": "deploy", "authorities": "authority"} {
				r := execute(t, false, "stat", kind, "-n", capture, "--capture", "builtin:"+capture, "-o", "json")
				if r.code != 0 {
					t.Fatalf("stat: %d %s", r.code, r.errOut)
				}
				var want []struct {
					Name    string   `json:"name"`
					Success *float64 `json:"success"`
					RPS     *float64 `json:"rps"`
					TLS     *float64 `json:"tls"`
				}
				if err := json.Unmarshal([]byte(r.out), &want); err != nil {
					t.Fatal(err)
				}
				if len(want) != len(byTable[table]) {
					t.Errorf("%s %s: %d rows in the browser, stat -o json has %d", when, table, len(byTable[table]), len(want))
				}
				for _, w := range want {
					row, ok := byTable[table][w.Name]
					if !ok {
						t.Errorf("%s %s: %s is not on the page", when, table, w.Name)
						continue
					}
					for field, wv := range map[string]*float64{"success": w.Success, "rps": w.RPS, "tls": w.TLS} {
						c := row.Cells[field]
						where := fmt.Sprintf("%s %s/%s %s", when, table, w.Name, field)
						if wv == nil {
							if c.Value != "" || c.Text != "-" && field != "tls" {
								t.Errorf("%s: %+v, stat -o json says null", where, c)
							}
							continue
						}
						g, err := strconv.ParseFloat(c.Value, 64)
						if err != nil || math.Abs(g-*wv) > 1e-6 { // -o json rounds to six digits
							t.Errorf("%s: %q in the page, stat -o json says %v", where, c.Value, *wv)
						}
						// The text is what the table shows.
						var text string
						switch field {
						case "success":
							text = fmt.Sprintf("%.2f%%", *wv*100)
						case "rps":
							text = fmt.Sprintf("%.1frps", *wv)
						case "tls":
							text = fmt.Sprintf("%.0f%%", *wv*100)
						}
						if !strings.Contains(c.Text, text) {
							t.Errorf("%s: shows %q, want %q", where, c.Text, text)
						}
						if field == "tls" {
							mark := map[bool]string{true: "🔒", false: "⚠"}[*wv >= 1]
							word := map[bool]string{true: "encrypted", false: "partly plain"}[*wv >= 1]
							if *wv <= 0 {
								mark, word = "🔓", "plain text"
							}
							if !strings.Contains(c.Text, mark) || !strings.Contains(c.Text, word) {
								t.Errorf("%s: %q lacks the mark %s and the word %q: colour is never the only sign", where, c.Text, mark, word)
							}
						}
						compared++
					}
				}
			}
			if compared == 0 {
				t.Fatalf("%s: nothing compared", when)
			}
		}
		check(capture + " on load")
		// The tables refresh over server-sent events (every second here);
		// once one has arrived the figures are still stat's.
		b.do(t, waitFor(`document.querySelector('.live span').textContent.startsWith('Updated')`, 30*time.Second))
		check(capture + " after a live refresh")
		note := evaluate[string](t, b, `document.getElementById('no-history').textContent`)
		if !strings.Contains(note, "No history") {
			t.Errorf("a two-round capture shows no charts and should say so; it says %q", note)
		}
		b.screenshot(t, out, "namespace-"+capture+".png")
		if errs := b.errors(); len(errs) > 0 {
			t.Errorf("the page logged errors (CSP violations count): %q", errs)
		}
	}
}

// TestDashboardBrowserPages visits every page at 1280×800 and at a narrow
// width, saves a screenshot of each, and checks each is readable: no
// horizontal scrolling of the page itself (wide tables scroll inside).
func TestDashboardBrowserPages(t *testing.T) {
	out := testOutputDir(t)
	url := startDashboard(t, DashboardOptions{Capture: "builtin:mixed"})
	emoji := startDashboard(t, DashboardOptions{Capture: "builtin:emojivoto", Replay: "builtin:emojivoto", Speed: 0})
	checked := startCheckingDashboard(t)
	historyDir, _ := writeHistoryCapture(t, 12)
	history := startDashboard(t, DashboardOptions{Capture: historyDir})
	for _, size := range []struct {
		name          string
		width, height int
	}{{"", 1280, 800}, {"-narrow", 420, 800}} {
		b := newBrowser(t, size.width, size.height)
		for _, p := range []struct{ name, url, wait string }{
			{"namespaces", url + "/", "#namespaces"},
			{"namespace", url + "/ns/mixed", "#deployments"},
			{"namespace-charts", history + "/ns/mixed", "#deployments"},
			{"deployment", emoji + "/ns/emojivoto/deploy/web", "#tap-rows tr"},
			{"check", url + "/check", "#check-note"},
			{"check-results", checked + "/check", "#check"},
		} {
			b.do(t, chromedp.Navigate(p.url), chromedp.WaitVisible(p.wait))
			switch p.name {
			case "deployment":
				b.do(t, waitFor(`document.getElementById('tap-state').textContent.includes('ended')`, 60*time.Second))
			case "namespace-charts":
				// Deployments with traffic get a chart (a canvas) and its
				// figures in words; those without say so.
				b.do(t, waitFor(`document.querySelectorAll('#deployments td.chart .chart-summary').length === 4`, 30*time.Second))
				got := evaluate[[]string](t, b, `Array.from(document.querySelectorAll('#deployments td.chart')).map(td =>
				  (td.querySelector('canvas') ? 'canvas ' : '') + td.querySelector('.chart-summary').textContent)`)
				want := []string{"canvas RPS ", "canvas RPS ", "no traffic in the history", "no traffic in the history"}
				for i := range want {
					if i >= len(got) || !strings.HasPrefix(got[i], want[i]) {
						t.Errorf("chart cells %q, want them to start %q", got, want)
						break
					}
				}
			case "namespace":
				if n := evaluate[int](t, b, `document.querySelectorAll('#deployments td.chart').length`); n != 0 {
					t.Errorf("a capture without history shows %d charts", n)
				}
			}
			overflow := evaluate[bool](t, b, `document.documentElement.scrollWidth > window.innerWidth + 1`)
			if overflow {
				t.Errorf("%s at %dpx: the page scrolls sideways", p.name, size.width)
			}
			shot := b.screenshot(t, out, p.name+size.name+".png")
			if p.name == "namespace-charts" && size.name == "" && os.Getenv("UPDATE_SCREENSHOT") != "" {
				copyFile(t, shot, filepath.Join("..", "docs", "dashboard.png"))
			}
		}
		if errs := b.errors(); len(errs) > 0 {
			t.Errorf("pages logged errors (CSP violations count): %q", errs)
		}
	}
	b := newBrowser(t, 1280, 800)
	b.do(t, chromedp.Navigate(url+"/ns/nosuch"))
	text := evaluate[string](t, b, `document.querySelector('main').textContent`)
	if !strings.Contains(text, `Namespace "nosuch" is not in capture builtin:mixed.`) {
		t.Errorf("unknown namespace page says %q", text)
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("copied %s to %s", from, to)
}

type tapRowView struct {
	Cells []string `json:"cells"`
	Class string   `json:"class"`
	TLS   string   `json:"tls"`
	Path  string   `json:"path"`
}

const readTapJS = `Array.from(document.querySelectorAll('#tap-rows tr')).map(tr => ({
  cells: Array.from(tr.cells).map(td => td.textContent), class: tr.className,
  tls: tr.querySelector('td.tls').textContent, path: tr.querySelector('td.path').textContent}))`

// TestDashboardBrowserTapList: the live list shows a replayed stream as it
// arrives, each row with a lock and a word, plain ones with the reason,
// and keeps only the newest rows.
func TestDashboardBrowserTapList(t *testing.T) {
	url := startDashboard(t, DashboardOptions{Capture: "builtin:emojivoto", Replay: "builtin:emojivoto", Speed: 0})
	b := newBrowser(t, 1280, 800)
	b.do(t, chromedp.Navigate(url+"/ns/emojivoto/deploy/web"),
		waitFor(`document.getElementById('tap-state').textContent.includes('ended')`, 60*time.Second))
	rows := evaluate[[]tapRowView](t, b, readTapJS)
	want := countTapEvents(t, "web")
	if exp := min(want, 200); len(rows) != exp {
		t.Errorf("%d rows in the list, want %d (the engine's %d events, at most 200 kept)", len(rows), exp, want)
	}
	plain := 0
	for i, r := range rows {
		switch r.Class {
		case "encrypted":
			if !strings.HasPrefix(r.TLS, "🔒 encrypted") {
				t.Fatalf("row %d is encrypted but shows %q", i, r.TLS)
			}
			if !strings.Contains(r.Cells[len(r.Cells)-1], ".linkerd-managed.") {
				t.Errorf("row %d: encrypted without the peer's identity: %q", i, r.Cells)
			}
		case "plain":
			plain++
			if !strings.HasPrefix(r.TLS, "🔓 plain: ") || len(r.TLS) <= len("🔓 plain: ") {
				t.Fatalf("row %d is plain text but shows %q", i, r.TLS)
			}
		default:
			t.Fatalf("row %d has class %q", i, r.Class)
		}
	}
	if plain == 0 || plain == len(rows) {
		t.Errorf("%d of %d rows plain: the recording has both", plain, len(rows))
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Errorf("the page logged errors: %q", errs)
	}
}

// countTapEvents is how many events `linkerd tap deploy/NAME` prints from
// the built-in recording: the engine's count, through the CLI.
func countTapEvents(t *testing.T, name string) int {
	t.Helper()
	r := execute(t, false, "tap", "deploy/"+name, "-n", "emojivoto", "--replay", "builtin:emojivoto", "--speed", "0", "--max-rps", "0", "-o", "json")
	if r.code != 0 {
		t.Fatalf("tap: %d %s", r.code, r.errOut)
	}
	return strings.Count(r.out, "\n")
}

// TestDashboardBrowserHostilePath: a path holding markup arrives as text
// and never runs, even though the list is built from server-rendered
// fragments.
func TestDashboardBrowserHostilePath(t *testing.T) {
	f, err := tapfixtures.Open("emojivoto")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	const hostile = `/<script>window.pwnedScript=1</script><img src=x onerror="window.pwnedImg=1">`
	rec := strings.ReplaceAll(string(raw), `"path":"/api/list"`, `"path":`+strconv.Quote(hostile))
	if rec == string(raw) {
		t.Fatal("the recording has no /api/list request to make hostile")
	}
	path := filepath.Join(t.TempDir(), "hostile.jsonl")
	if err := os.WriteFile(path, []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	url := startDashboard(t, DashboardOptions{Capture: "builtin:emojivoto", Replay: path, Speed: 0})
	b := newBrowser(t, 1280, 800)
	b.do(t, chromedp.Navigate(url+"/ns/emojivoto/deploy/web"),
		waitFor(`document.getElementById('tap-state').textContent.includes('ended')`, 60*time.Second))
	type result struct {
		Ran      bool `json:"ran"`
		Elements int  `json:"elements"`
		AsText   int  `json:"asText"`
	}
	res := evaluate[result](t, b, `({ran: window.pwnedScript !== undefined || window.pwnedImg !== undefined,
	  elements: document.querySelectorAll('#tap-rows script, #tap-rows img').length,
	  asText: Array.from(document.querySelectorAll('#tap-rows td.path')).filter(td => td.textContent === `+strconv.Quote(hostile)+`).length})`)
	if res.Ran {
		t.Error("script from a tapped path ran in the page")
	}
	if res.Elements != 0 {
		t.Errorf("%d script or img elements made from a tapped path", res.Elements)
	}
	if res.AsText == 0 {
		t.Error("the hostile path is not shown, as text, in any row")
	}
}

// startCheckingDashboard serves a dashboard whose check page runs the
// check engine against an API server that refuses connections, so the
// page shows real results: the first check fails with its hint.
func startCheckingDashboard(t testing.TB) string {
	t.Helper()
	ios, _, _ := TestStreams(false)
	f := NewFactory(ios)
	f.RESTConfig = func() (*rest.Config, error) { return &rest.Config{Host: "https://127.0.0.1:1"}, nil }
	f.KubeClient = func() (kubernetes.Interface, error) {
		return kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1"})
	}
	opts := DashboardOptions{Capture: "builtin:mixed", Window: time.Minute, Refresh: time.Second, MaxEvents: 50}
	_, cfg, closeSrc, err := newDashboard(context.Background(), f, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeSrc)
	cfg.CheckNote = ""
	cfg.Check = &check.Config{ControlNamespace: "linkerd", TLS: true, NewClient: f.KubeClient}
	srv, err := dashboard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts.URL
}
