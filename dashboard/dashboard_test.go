package dashboard

import (
	"bufio"
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshtls/fixtures"
	tapfixtures "meshtls/fixtures/tap"
	"meshtls/stat"
	"meshtls/tap"
)

func openBuiltinCapture(t *testing.T, name string) *stat.Capture {
	t.Helper()
	fsys, err := fixtures.Capture(name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := stat.OpenCapture(fsys, "builtin:"+name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// replayFile plays a recording file; builtinReplay the shipped one.
func replayFile(path string, speed float64) func() (tap.Source, io.Closer, error) {
	return func() (tap.Source, io.Closer, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, err
		}
		rr, err := tap.NewRecordingReader(f, path)
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		return tap.NewReplay(rr, tap.ReplayOptions{Speed: speed}), f, nil
	}
}

func builtinReplay(speed float64) func() (tap.Source, io.Closer, error) {
	return func() (tap.Source, io.Closer, error) {
		f, err := tapfixtures.Open("emojivoto")
		if err != nil {
			return nil, nil, err
		}
		rr, err := tap.NewRecordingReader(f, "builtin:emojivoto")
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		return tap.NewReplay(rr, tap.ReplayOptions{Speed: speed}), f, nil
	}
}

func newTestServer(t *testing.T, capture string, cfg Config) *httptest.Server {
	t.Helper()
	c := openBuiltinCapture(t, capture)
	cfg.Metrics, cfg.Pods, cfg.SourceName = c, c, "capture builtin:"+capture
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// tableRow is the markup of the row named name in the table with id.
func tableRow(t *testing.T, page, id, name string) string {
	t.Helper()
	start := strings.Index(page, `<table class="stat" id="`+id+`">`)
	if start < 0 {
		t.Fatalf("no table %q in the page", id)
	}
	table := page[start:]
	table = table[:strings.Index(table, "</table>")]
	i := strings.Index(table, `<tr data-name="`+name+`">`)
	if i < 0 {
		t.Fatalf("table %q has no row %q:\n%s", id, name, table)
	}
	row := table[i:]
	return row[:strings.Index(row, "</tr>")]
}

var fieldRe = regexp.MustCompile(`data-field="([a-z0-9_]+)" data-value="([^"]*)"`)

// fields reads a row's raw figures; a figure with no value is NaN.
func fields(row string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range fieldRe.FindAllStringSubmatch(row, -1) {
		v := math.NaN()
		if m[2] != "" {
			v, _ = strconv.ParseFloat(m[2], 64)
		}
		out[m[1]] = v
	}
	return out
}

func same(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }

// assertRowMatches compares a page row with the stat engine's row.
func assertRowMatches(t *testing.T, where string, got map[string]float64, want stat.Row) {
	t.Helper()
	for field, w := range map[string]float64{"success": want.Success, "rps": want.RPS, "p50": want.P50, "p95": want.P95, "p99": want.P99, "tls": want.TLS} {
		g, ok := got[field]
		if !ok {
			t.Errorf("%s: no %s cell", where, field)
			continue
		}
		if !same(g, w) {
			t.Errorf("%s: %s = %v in the page, the stat engine says %v", where, field, g, w)
		}
	}
}

func compute(t *testing.T, capture string, q stat.Query) *stat.Result {
	t.Helper()
	c := openBuiltinCapture(t, capture)
	res, err := stat.Compute(context.Background(), q, c, c)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestDashboardPagesShowStatFigures(t *testing.T) {
	for _, capture := range []string{"emojivoto", "mixed"} {
		t.Run(capture, func(t *testing.T) {
			ts := newTestServer(t, capture, Config{})
			resp, page := get(t, ts.URL+"/")
			if resp.StatusCode != 200 {
				t.Fatalf("namespaces page: %s", resp.Status)
			}
			nsRes := compute(t, capture, stat.Query{Resource: stat.Resource{Kind: stat.KindNamespace}})
			if len(nsRes.Rows) == 0 {
				t.Fatal("the stat engine found no namespaces")
			}
			for _, want := range nsRes.Rows {
				assertRowMatches(t, "namespaces/"+want.Name, fields(tableRow(t, page, "namespaces", want.Name)), want)
			}
			ns := capture
			resp, page = get(t, ts.URL+"/ns/"+ns)
			if resp.StatusCode != 200 {
				t.Fatalf("namespace page: %s", resp.Status)
			}
			for id, kind := range map[string]stat.Kind{"deployments": stat.KindDeployment, "authorities": stat.KindAuthority} {
				res := compute(t, capture, stat.Query{Resource: stat.Resource{Kind: kind, Namespace: ns}})
				if len(res.Rows) == 0 {
					t.Fatalf("the stat engine found no %s", id)
				}
				for _, want := range res.Rows {
					row := tableRow(t, page, id, want.Name)
					got := fields(row)
					assertRowMatches(t, id+"/"+want.Name, got, want)
					// The wide breakdown: every reason with its share.
					for reason, n := range want.NoTLS {
						if n <= 0 {
							continue
						}
						if !strings.Contains(row, `<span class="reason">`+reason+`</span> <span data-value="`+strconv.FormatFloat(n/want.Requests, 'g', -1, 64)+`">`) {
							t.Errorf("%s/%s: no_tls_reason %s (%v of %v requests) not shown: %s", id, want.Name, reason, n, want.Requests, row)
						}
					}
					for _, e := range want.TopPlaintext {
						if !strings.Contains(row, e.Source+" → "+e.Destination) {
							t.Errorf("%s/%s: plain-text pair %s → %s not shown", id, want.Name, e.Source, e.Destination)
						}
					}
				}
			}
		})
	}
	// The mixed capture must exercise the breakdown, or the loop above
	// proves nothing about it.
	res := compute(t, "mixed", stat.Query{Resource: stat.Resource{Kind: stat.KindDeployment, Namespace: "mixed", Name: "backend"}})
	if len(res.Rows) != 1 || len(res.Rows[0].NoTLS) == 0 || len(res.Rows[0].TopPlaintext) == 0 {
		t.Fatalf("mixed's backend has no plain-text breakdown: %+v", res.Rows)
	}
}

func TestDashboardDeploymentEdges(t *testing.T) {
	ts := newTestServer(t, "emojivoto", Config{Tap: builtinReplay(0)})
	resp, page := get(t, ts.URL+"/ns/emojivoto/deploy/web")
	if resp.StatusCode != 200 {
		t.Fatalf("deployment page: %s", resp.Status)
	}
	web := stat.Resource{Kind: stat.KindDeployment, Namespace: "emojivoto", Name: "web"}
	all := stat.Resource{Kind: stat.KindDeployment, Namespace: "emojivoto"}
	for id, q := range map[string]stat.Query{"outbound": {Resource: all, From: &web}, "inbound": {Resource: all, To: &web}} {
		res := compute(t, "emojivoto", q)
		n := 0
		for _, want := range res.Rows {
			if !(want.Requests > 0) {
				if strings.Contains(page, `id="`+id+`"`) && strings.Contains(tableSection(page, id), `data-name="`+want.Name+`"`) {
					t.Errorf("%s: %s has no traffic but is listed", id, want.Name)
				}
				continue
			}
			n++
			assertRowMatches(t, id+"/"+want.Name, fields(tableRow(t, page, id, want.Name)), want)
		}
		if n == 0 {
			t.Errorf("%s: the stat engine found no edges, so nothing was compared", id)
		}
	}
	if !strings.Contains(page, `sse-connect="/ns/emojivoto/deploy/web/tap" sse-close="end" data-max-rows="200"`) {
		t.Error("the page does not wire the live list to its event stream with a 200-row cap")
	}
}

func tableSection(page, id string) string {
	i := strings.Index(page, `id="`+id+`"`)
	if i < 0 {
		return ""
	}
	s := page[i:]
	return s[:strings.Index(s, "</table>")]
}

func TestDashboardHTTP(t *testing.T) {
	ts := newTestServer(t, "emojivoto", Config{TapNote: "No live list: no tap source.", CheckNote: "Check needs a cluster: offline."})
	for _, c := range []struct {
		path, ctype string
		status      int
		contains    string
	}{
		{"/", "text/html; charset=utf-8", 200, "emojivoto"},
		{"/ns/emojivoto", "text/html; charset=utf-8", 200, "web-svc.emojivoto:80"},
		{"/ns/emojivoto/deploy/voting", "text/html; charset=utf-8", 200, "No live list"},
		{"/ns/nosuch", "text/html; charset=utf-8", 404, `Namespace &#34;nosuch&#34; is not in capture builtin:emojivoto.`},
		{"/ns/emojivoto/deploy/nosuch", "text/html; charset=utf-8", 404, `Deployment &#34;nosuch&#34;`},
		{"/nowhere", "text/html; charset=utf-8", 404, "No such page"},
		{"/static/style.css", "text/css; charset=utf-8", 200, "table"},
		{"/check", "text/html; charset=utf-8", 200, "Check needs a cluster: offline."},
		{"/static/dashboard.js", "text/javascript; charset=utf-8", 200, "MutationObserver"},
		{"/static/vendor/htmx.min.js", "text/javascript; charset=utf-8", 200, "htmx"},
		{"/static/vendor/htmx-ext-sse.min.js", "text/javascript; charset=utf-8", 200, `defineExtension("sse"`},
		{"/static/vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8", 200, "uPlot"},
		{"/static/vendor/uPlot.min.css", "text/css; charset=utf-8", 200, ".uplot"},
	} {
		resp, body := get(t, ts.URL+c.path)
		if resp.StatusCode != c.status {
			t.Errorf("%s: %s, want %d", c.path, resp.Status, c.status)
		}
		if got := resp.Header.Get("Content-Type"); got != c.ctype {
			t.Errorf("%s: Content-Type %q, want %q", c.path, got, c.ctype)
		}
		if got := resp.Header.Get("Content-Security-Policy"); !strings.Contains(got, "default-src 'none'") || !strings.Contains(got, "script-src 'self'") {
			t.Errorf("%s: Content-Security-Policy %q", c.path, got)
		}
		if !strings.Contains(body, c.contains) {
			t.Errorf("%s: body lacks %q", c.path, c.contains)
		}
		if html := strings.HasPrefix(c.ctype, "text/html"); html && (strings.Contains(body, "http://") || strings.Contains(body, "https://")) {
			t.Errorf("%s: the page refers to something outside the binary", c.path)
		}
	}
	resp, err := http.Post(ts.URL+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s, want 405: the dashboard is read-only", resp.Status)
	}
}

type sseEvent struct{ name, data string }

// readSSE reads a whole event stream, until the server ends it.
func readSSE(t *testing.T, url string) ([]sseEvent, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	var evs []sseEvent
	var cur sseEvent
	var data []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			cur.data = strings.Join(data, "\n")
			evs = append(evs, cur)
			cur, data = sseEvent{}, nil
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		default:
			t.Fatalf("unexpected line in the event stream: %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs, resp.Header
}

// engineEvents is what the tap engine emits for deploy/NAME from the
// recording, to compare the stream against.
func engineEvents(t *testing.T, open func() (tap.Source, io.Closer, error), name string) []tap.Event {
	t.Helper()
	src, closer, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = closer.Close() }()
	var evs []tap.Event
	_, err = tap.Run(context.Background(), tap.RunConfig{Source: src,
		Query: tap.Query{Target: tap.Target{Kind: "deployment", Namespace: "emojivoto", Name: name}},
		Emit:  func(e *tap.Event) error { evs = append(evs, *e); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestDashboardTapStreamMarksTLS(t *testing.T) {
	ts := newTestServer(t, "emojivoto", Config{Tap: builtinReplay(0), MaxEvents: 1e9})
	evs, h := readSSE(t, ts.URL+"/ns/emojivoto/deploy/web/tap")
	if ct := h.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	want := engineEvents(t, builtinReplay(0), "web")
	var rows []string
	for _, e := range evs {
		if e.name == "tap" {
			rows = append(rows, e.data)
		}
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows streamed, the tap engine emits %d", len(rows), len(want))
	}
	plain := 0
	for i, row := range rows {
		w := want[i]
		if w.TLS.Encrypted() {
			if !strings.Contains(row, `<tr class="encrypted">`) || !strings.Contains(row, "🔒</span> encrypted") {
				t.Fatalf("row %d is encrypted but not marked so: %s", i, row)
			}
			continue
		}
		plain++
		if !strings.Contains(row, `<tr class="plain">`) || !strings.Contains(row, "🔓</span> plain: "+w.TLS.Reason()+"<") {
			t.Fatalf("row %d is plain text (%s) but not marked so: %s", i, w.TLS.Reason(), row)
		}
	}
	if plain == 0 || plain == len(rows) {
		t.Fatalf("%d of %d rows plain: the recording should have both", plain, len(rows))
	}
	// The recording's hostile path (a terminal escape) arrives visible,
	// never as raw control bytes.
	all := ""
	for _, r := range rows {
		all += r
	}
	if strings.ContainsAny(all, "\x1b\x07") {
		t.Error("raw control characters reached the page")
	}
	if !strings.Contains(all, `\x1b]0;pwned\x07`) {
		t.Error("the recording's escape-sequence path is not shown escaped")
	}
	if last := evs[len(evs)-1]; last.name != "end" {
		t.Errorf("the stream ends with %q, want end", last.name)
	}
}

func TestDashboardTapStreamHonoursCap(t *testing.T) {
	const maxEvents = 5
	ts := newTestServer(t, "emojivoto", Config{Tap: builtinReplay(0), MaxEvents: maxEvents})
	start := time.Now()
	evs, _ := readSSE(t, ts.URL+"/ns/emojivoto/deploy/web/tap")
	elapsed := time.Since(start)
	total := len(engineEvents(t, builtinReplay(0), "web"))
	sent, dropped := 0, -1
	for _, e := range evs {
		switch e.name {
		case "tap":
			sent++
		case "dropped":
			n, err := strconv.Atoi(e.data)
			if err != nil || n < dropped {
				t.Fatalf("dropped %q after %d: must be a count that never decreases", e.data, dropped)
			}
			dropped = n
		}
	}
	// A token bucket sends its burst, then maxEvents a second.
	if limit := maxEvents + int(math.Ceil(elapsed.Seconds()*maxEvents)); sent > limit {
		t.Errorf("%d events sent in %s, the cap allows %d", sent, elapsed, limit)
	}
	if sent == 0 {
		t.Error("nothing was sent")
	}
	if sent+dropped != total {
		t.Errorf("%d sent + %d reported dropped != %d events from the tap engine", sent, dropped, total)
	}
	if sent >= total {
		t.Errorf("a replay as fast as possible was not capped (%d of %d sent)", sent, total)
	}
}

func TestDashboardTapEscapesHostilePath(t *testing.T) {
	raw, err := fs2string()
	if err != nil {
		t.Fatal(err)
	}
	const hostile = `/<script>alert(1)</script><img src=x onerror=alert(2)>`
	// Every /api/list request gets the hostile path, written as a
	// recording carries it (JSON).
	if !strings.Contains(raw, `"path":"/api/list"`) {
		t.Fatal("the recording has no /api/list request")
	}
	raw = strings.ReplaceAll(raw, `"path":"/api/list"`, `"path":`+strconv.Quote(hostile))
	path := filepath.Join(t.TempDir(), "hostile.jsonl")
	if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, "emojivoto", Config{Tap: replayFile(path, 0), MaxEvents: 1e9})
	evs, _ := readSSE(t, ts.URL+"/ns/emojivoto/deploy/web/tap")
	found := false
	for _, e := range evs {
		if strings.Contains(e.data, "<script") || strings.Contains(e.data, "<img") {
			t.Fatalf("markup from the wire reached the page unescaped: %s", e.data)
		}
		if strings.Contains(e.data, `&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;`) {
			found = true
		}
	}
	if !found {
		t.Fatal("the hostile path is not shown as text")
	}
}

func fs2string() (string, error) {
	f, err := tapfixtures.Open("emojivoto")
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	return string(b), err
}

// TestDashboardEscapesHostileNames: authorities come off the wire and
// URLs from anyone; neither may become markup in a page.
func TestDashboardEscapesHostileNames(t *testing.T) {
	fsys, err := fixtures.Capture("emojivoto")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, fsys); err != nil {
		t.Fatal(err)
	}
	const hostile = `<script>alert(1)</script><img src=x onerror=alert(2)>`
	changed := 0
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(path, ".prom") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if s := strings.ReplaceAll(string(b), `authority="web-svc.emojivoto:80"`, `authority="`+hostile+`"`); s != string(b) {
			changed++
			return os.WriteFile(path, []byte(s), 0o600)
		}
		return nil
	})
	if err != nil || changed == 0 {
		t.Fatalf("rewriting the capture: %v (%d files changed)", err, changed)
	}
	c, err := stat.OpenCapture(os.DirFS(dir), dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Metrics: c, Pods: c, SourceName: "a hostile capture"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	defer ts.Close()
	escaped := `&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;`
	_, page := get(t, ts.URL+"/ns/emojivoto")
	if !strings.Contains(page, `<th scope="row">`+escaped+`</th>`) {
		t.Error("the hostile authority is not shown as text on the namespace page")
	}
	if strings.Contains(page, "<script>alert") || strings.Contains(page, "<img") {
		t.Error("markup from the capture reached the namespace page")
	}
	resp, page := get(t, ts.URL+"/ns/"+pathEscape(hostile))
	if resp.StatusCode != 404 {
		t.Errorf("a hostile namespace in the URL: %s, want 404", resp.Status)
	}
	if strings.Contains(page, "<script>alert") || strings.Contains(page, "<img") || !strings.Contains(page, "&lt;script&gt;") {
		t.Error("the namespace from the URL is not escaped on the 404 page")
	}
}

// TestDashboardTapMaxRPSReachesTheSource: with TapMaxRPS the query asks
// the source itself to cap requests (the tap API's max_rps); the replay
// applies it on recorded time as the tap API would, so fewer requests
// reach the page and the source's drops are in the page's count.
func TestDashboardTapMaxRPSReachesTheSource(t *testing.T) {
	count := func(cfg Config) (reqs, dropped int) {
		ts := newTestServer(t, "emojivoto", cfg)
		evs, _ := readSSE(t, ts.URL+"/ns/emojivoto/deploy/web/tap")
		for _, e := range evs {
			switch e.name {
			case "tap":
				if strings.Contains(e.data, "<td>req</td>") {
					reqs++
				}
			case "dropped":
				dropped, _ = strconv.Atoi(e.data)
			}
		}
		return reqs, dropped
	}
	all, none := count(Config{Tap: builtinReplay(0), MaxEvents: 1e9})
	capped, dropped := count(Config{Tap: builtinReplay(0), MaxEvents: 1e9, TapMaxRPS: 1})
	if none != 0 || all == 0 {
		t.Fatalf("uncapped: %d requests, %d dropped", all, none)
	}
	if capped == 0 || capped >= all || dropped == 0 {
		t.Errorf("with TapMaxRPS 1: %d requests of %d, %d reported dropped; want fewer, with the drops reported", capped, all, dropped)
	}
	t.Logf("TapMaxRPS 1: %d of %d requests, %d reported dropped", capped, all, dropped)
}
