package cli

import (
	"bufio"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// startDashboardCommand runs the real `linkerd dashboard` with args and
// returns the URL it printed; the process is killed when the test ends.
func startDashboardCommand(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(buildLinkerd(t), append([]string{"dashboard"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "Dashboard: "); ok {
				urls <- u
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case u := <-urls:
		return u
	case err := <-exited:
		exited <- err
		t.Fatalf("dashboard exited before printing its URL: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("no URL within 60s; stderr: %s", stderr.String())
	}
	return ""
}

// TestDashboardBrowserRefusesRebindingAndMissingToken drives a real
// chromium at the real command, as a DNS-rebinding page and another local
// user would reach it: the name rebind.example resolves to 127.0.0.1
// (what a rebinding attack achieves), and a visit without the printed
// URL has no token. Both get a refusal and no page; the printed URL gets
// the dashboard, its token traded for a cookie that scripts cannot read.
func TestDashboardBrowserRefusesRebindingAndMissingToken(t *testing.T) {
	printed := startDashboardCommand(t, "--capture", "builtin:emojivoto")
	base, query, ok := strings.Cut(printed, "?")
	if !ok || !strings.HasPrefix(query, "token=") {
		t.Fatalf("printed URL %q carries no token", printed)
	}
	port := strings.TrimSuffix(strings.TrimPrefix(base, "http://127.0.0.1:"), "/")
	b := newBrowserWith(t, 1280, 800, chromedp.Flag("host-resolver-rules", "MAP rebind.example 127.0.0.1"))

	body := func() string { return evaluate[string](t, b, `document.body ? document.body.innerText : ""`) }
	hasDashboard := func() bool {
		return evaluate[bool](t, b, `document.getElementById('namespaces') !== null`)
	}

	// Another user on this machine, or a page that guessed the port.
	b.do(t, chromedp.Navigate(base+"ns/emojivoto"))
	if got := body(); !strings.Contains(got, "no dashboard token") || hasDashboard() {
		t.Errorf("without the token the page shows %q", got)
	}
	// A rebound name carries the attacker's Host, even with the token.
	rebound := "http://rebind.example:" + port + "/?" + query
	b.do(t, chromedp.Navigate(rebound))
	if got := body(); !strings.Contains(got, "is not this dashboard's") || hasDashboard() {
		t.Errorf("a rebound name (%s) shows %q", rebound, got)
	}

	// The printed URL works, and leaves no token behind.
	b.do(t, chromedp.Navigate(printed), chromedp.WaitVisible("#namespaces"))
	if loc := evaluate[string](t, b, `location.href`); strings.Contains(loc, "token") {
		t.Errorf("the token stays in the address bar: %s", loc)
	}
	if c := evaluate[string](t, b, `document.cookie`); c != "" {
		t.Errorf("the session cookie is readable by scripts: %q", c)
	}
	b.do(t, chromedp.Navigate(base+"ns/emojivoto"), chromedp.WaitVisible("#deployments"))
	// The same browser, on the rebound name, still gets nothing: the
	// cookie is not the rebound origin's, and its Host is refused anyway.
	b.do(t, chromedp.Navigate("http://rebind.example:"+port+"/ns/emojivoto"))
	if got := body(); !strings.Contains(got, "is not this dashboard's") || evaluate[bool](t, b, `document.getElementById('deployments') !== null`) {
		t.Errorf("the rebound name after a real session shows %q", got)
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Logf("browser errors (the refusals are expected to log some): %q", errs)
	}
}
