package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/cookiejar"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDashboardBadFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		// Without a capture the dashboard needs a cluster, as stat does.
		{[]string{"dashboard"}, "no metrics source: no cluster in this test; or give --prometheus-url or --capture"},
		{[]string{"dashboard", "--capture", "builtin:emojivoto", "--prometheus-url", "http://127.0.0.1:9090"}, "--capture and --prometheus-url cannot be used together"},
		{[]string{"dashboard", "--prometheus-url", "ftp://x"}, `invalid --prometheus-url "ftp://x"`},
		{[]string{"dashboard", "--capture", "builtin:emojivoto", "--refresh", "10ms"}, "--refresh must be at least 1s"},
		{[]string{"dashboard", "--capture", "builtin:emojivoto", "-t", "0s"}, "--time-window must be positive"},
		{[]string{"dashboard", "--capture", "builtin:emojivoto", "--show", "tv"}, `unknown --show "tv"`},
		{[]string{"dashboard", "--capture", "builtin:emojivoto", "--port", "70000"}, "--port 70000 is out of range"},
		{[]string{"dashboard", "--capture", "builtin:emojivoto", "--max-events", "0"}, "--max-events must be positive"},
		{[]string{"dashboard", "--capture", "builtin:nosuch"}, `no built-in capture "nosuch"`},
		{[]string{"dashboard", "--capture", "/nonexistent/capture"}, "capture directory /nonexistent/capture does not exist"},
		{[]string{"dashboard", "--capture", "builtin:emojivoto", "--replay", "/nonexistent/tap.jsonl"}, "cannot read replay file"},
		{[]string{"dashboard", "--capture", "builtin:emojivoto", "extra"}, "unknown command"},
	} {
		r := execute(t, false, c.args...)
		if r.code == 0 {
			t.Errorf("%v: exit 0, want an error", c.args)
		}
		lines := strings.Split(strings.TrimSpace(r.errOut), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "Error: ") || !strings.Contains(lines[0], c.want) {
			t.Errorf("%v: stderr %q, want one line with %q", c.args, r.errOut, c.want)
		}
		if r.out != "" {
			t.Errorf("%v: stdout %q, want nothing", c.args, r.out)
		}
	}
}

var dashboardCellRe = regexp.MustCompile(`data-field="(success|rps|tls)" data-value="([^"]*)"`)

// TestDashboardCommandServesStatFigures runs the real binary: it prints
// its URL, its namespace page shows what `stat -o json` prints for the
// same capture, and Ctrl-C stops it.
func TestDashboardCommandServesStatFigures(t *testing.T) {
	bin := buildLinkerd(t)
	cmd := exec.Command(bin, "dashboard", "--capture", "builtin:emojivoto", "--replay", "builtin:emojivoto")
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
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			t.Logf("dashboard killed at cleanup: %v", <-exited)
		}
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
	var url string
	select {
	case url = <-urls:
	case err := <-exited:
		t.Fatalf("dashboard exited before printing its URL: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("no URL within 60s; stderr: %s", stderr.String())
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("URL %q is not on loopback", url)
	}
	printed := url
	url, _, _ = strings.Cut(printed, "?")
	if !strings.Contains(printed, "?token=") {
		t.Fatalf("URL %q carries no token", printed)
	}
	// Without the token, or with a rebound name, nothing is served.
	refusals := []struct {
		name, path string
		header     http.Header
		host       string
		want       int
	}{
		{"no token", "ns/emojivoto", nil, "", http.StatusForbidden},
		{"no token, tap", "ns/emojivoto/deploy/web/tap", nil, "", http.StatusForbidden},
		{"wrong token", "?token=guess", nil, "", http.StatusForbidden},
		{"rebound Host", strings.TrimPrefix(printed, url), nil, "rebind.example:" + strings.TrimPrefix(url[:len(url)-1], "http://127.0.0.1:"), http.StatusMisdirectedRequest},
	}
	for _, r := range refusals {
		req, _ := http.NewRequest("GET", url+r.path, nil)
		if r.host != "" {
			req.Host = r.host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != r.want || strings.Contains(string(body), "<html") {
			t.Errorf("%s: %s, want %d and no page\n%s", r.name, resp.Status, r.want, body)
		}
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browserLike := &http.Client{Jar: jar}
	if resp, err := browserLike.Get(printed); err != nil || resp.StatusCode != 200 || resp.Request.URL.RawQuery != "" {
		t.Fatalf("the printed URL: %v %v (should land on the page without the token in the address)", resp, err)
	} else {
		resp.Body.Close()
	}
	// The session's cookie does not help a page from another origin.
	req, _ := http.NewRequest("GET", url+"ns/emojivoto/deploy/web/tap", nil)
	req.Header.Set("Origin", "http://evil.example")
	if resp, err := browserLike.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("tap with a foreign Origin: %v %v, want 403", resp, err)
	} else {
		resp.Body.Close()
	}

	resp, err := browserLike.Get(url + "ns/emojivoto")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("namespace page: %s", resp.Status)
	}
	page := string(body)

	for _, kind := range []string{"deploy", "authority"} {
		r := execute(t, false, "stat", kind, "-n", "emojivoto", "--capture", "builtin:emojivoto", "-o", "json")
		if r.code != 0 {
			t.Fatalf("stat: %d %s", r.code, r.errOut)
		}
		var rows []struct {
			Name    string   `json:"name"`
			Success *float64 `json:"success"`
			RPS     *float64 `json:"rps"`
			TLS     *float64 `json:"tls"`
		}
		if err := json.Unmarshal([]byte(r.out), &rows); err != nil {
			t.Fatal(err)
		}
		compared := 0
		for _, want := range rows {
			i := strings.Index(page, `<tr data-name="`+want.Name+`">`)
			if i < 0 {
				t.Errorf("%s %s is not on the page", kind, want.Name)
				continue
			}
			row := page[i:]
			row = row[:strings.Index(row, "</tr>")]
			got := map[string]float64{}
			for _, m := range dashboardCellRe.FindAllStringSubmatch(row, -1) {
				v := math.NaN()
				if m[2] != "" {
					v, _ = strconv.ParseFloat(m[2], 64)
				}
				got[m[1]] = v
			}
			for field, w := range map[string]*float64{"success": want.Success, "rps": want.RPS, "tls": want.TLS} {
				g, ok := got[field]
				switch {
				case !ok:
					t.Errorf("%s %s: no %s cell", kind, want.Name, field)
				case w == nil && !math.IsNaN(g):
					t.Errorf("%s %s: %s = %v, stat -o json says null", kind, want.Name, field, g)
				case w != nil && math.Abs(g-*w) > 1e-6:
					// -o json rounds to six digits.
					t.Errorf("%s %s: %s = %v, stat -o json says %v", kind, want.Name, field, g, *w)
				case w != nil:
					compared++
				}
			}
		}
		if compared == 0 {
			t.Errorf("%s: no figure was compared", kind)
		}
	}

	// A live list open at Ctrl-C must not hold the server up: the
	// recording plays for 30 s at its recorded pace.
	resp, err = browserLike.Get(url + "ns/emojivoto/deploy/web/tap")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("live list: %s, Content-Type %q", resp.Status, ct)
	}
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || first != "event: tap\n" {
		t.Fatalf("live list's first line %q, %v", first, err)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if err != nil && (!errors.As(err, &ee) || ee.ExitCode() != 130) {
			t.Errorf("after Ctrl-C: %v, want exit 0 or 130; stderr: %s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the dashboard did not stop within 15s of Ctrl-C with a live list open")
	}
	if _, err := http.Get(url); err == nil {
		t.Error("the server still answers after it stopped")
	}
}

func TestDashboardBrowserWithoutXdgOpen(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	io, _, errOut := TestStreams(false)
	openBrowser(NewFactory(io), "http://127.0.0.1:1/")
	if !strings.Contains(errOut.String(), "xdg-open is not installed; open the URL above yourself") {
		t.Errorf("stderr %q: want to be told xdg-open is missing", errOut.String())
	}
}
