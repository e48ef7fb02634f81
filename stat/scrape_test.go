package stat_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"meshtls/fixtures"
	"meshtls/stat"
)

// replayFetcher reaches each pod's replayed proxy over real HTTP.
type replayFetcher struct {
	addrs map[string]string
	fail  map[string]bool
	calls atomic.Int32
}

func (f *replayFetcher) Fetch(ctx context.Context, pod stat.Pod) ([]byte, error) {
	f.calls.Add(1)
	if f.fail[pod.Name] {
		return nil, fmt.Errorf("connection refused")
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+f.addrs[pod.Namespace+"/"+pod.Name]+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// Scraping live proxies twice, one window apart, gives the figures the
// capture they replay holds.
func TestScraperMatchesCapture(t *testing.T) {
	fsys, err := fixtures.Capture("emojivoto")
	if err != nil {
		t.Fatal(err)
	}
	c, err := stat.OpenCapture(fsys, "builtin:emojivoto")
	if err != nil {
		t.Fatal(err)
	}
	replay, err := stat.StartReplay(c)
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	fetcher := &replayFetcher{addrs: map[string]string{}, fail: map[string]bool{}}
	for _, tg := range replay.Targets {
		fetcher.addrs[tg.Pod.Namespace+"/"+tg.Pod.Name] = tg.Addr
	}
	// vote-bot's proxy is unreachable: its row loses nothing it has (it
	// receives no traffic), and the warning names it.
	fetcher.fail["vote-bot-8b9c7d6f5-x7k2p"] = true
	var warnings []string
	var progress atomic.Int32
	scraper := &stat.Scraper{
		Fetcher:  fetcher,
		Rounds:   3,
		Warn:     func(m string) { warnings = append(warnings, m) },
		Progress: func(time.Duration, int) { progress.Add(1) },
	}
	q := stat.Query{Resource: stat.Resource{Kind: stat.KindAuthority, Namespace: "emojivoto"}, Window: 3 * time.Second}
	began := time.Now()
	live, err := stat.Compute(context.Background(), q, scraper, c)
	took := time.Since(began)
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := stat.Compute(context.Background(), stat.Query{Resource: q.Resource}, c, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(live.Rows) != len(recorded.Rows) || len(live.Rows) != 4 {
		t.Fatalf("live rows %d, recorded rows %d, want 4", len(live.Rows), len(recorded.Rows))
	}
	for i, l := range live.Rows {
		r := recorded.Rows[i]
		if l.Name != r.Name {
			t.Fatalf("row %d: %s vs %s", i, l.Name, r.Name)
		}
		for _, f := range []struct {
			name string
			l, r float64
		}{{"rps", l.RPS, r.RPS}, {"success", l.Success, r.Success}, {"tls", l.TLS, r.TLS}, {"p50", l.P50, r.P50}, {"p99", l.P99, r.P99}} {
			// The replay stamps its samples, so both paths scale each pod
			// to the window by the same instants: only float noise differs.
			if math.Abs(f.l-f.r) > 0.001*math.Max(math.Abs(f.r), 1e-3) {
				t.Errorf("%s %s: live %.4f, recorded %.4f", l.Name, f.name, f.l, f.r)
			}
		}
	}
	if got := fetcher.calls.Load(); got != 3*5 {
		t.Errorf("%d fetches, want 3 rounds x 5 meshed pods (4 in emojivoto, and prometheus in linkerd, a possible sender)", got)
	}
	if len(warnings) != 3 || !strings.Contains(warnings[0], "emojivoto/vote-bot-8b9c7d6f5-x7k2p") {
		t.Errorf("warnings %q: want one per round naming the unreachable pod", warnings)
	}
	if progress.Load() == 0 {
		t.Errorf("no progress reported while waiting")
	}
	// The window is the time measured between the first and the last
	// round: at least the 3 s asked for, and within the call that measured
	// it (a late timer on a loaded machine only lengthens both).
	if w := live.Window; w < 3*time.Second || w > took {
		t.Errorf("window %s, want from 3s to the %s the computation took", w, took)
	}
}

func TestScraperStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	scraper := &stat.Scraper{Fetcher: &replayFetcher{fail: map[string]bool{"p": true}}}
	pods := staticPods{{Namespace: "ns", Name: "p", Meshed: true}}
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	start := time.Now()
	_, err := stat.Compute(ctx, stat.Query{Resource: stat.Resource{Kind: stat.KindPod, Namespace: "ns"}, Window: time.Hour}, scraper, pods)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %s: want a prompt cancellation", err, time.Since(start))
	}
}

// Live with -n, a meshed client in another namespace that sends plain
// text is named as -A names it, not as "(unmeshed)": its outbound metrics
// are scraped wherever it runs.
func TestScraperNamesSendersInOtherNamespaces(t *testing.T) {
	dir := t.TempDir()
	pods := []stat.Pod{
		{Namespace: "a", Name: "srv-1", Meshed: true, Owners: map[string]string{"deployment": "srv"}},
		{Namespace: "b", Name: "cli-1", Meshed: true, Owners: map[string]string{"deployment": "cli"}},
	}
	w, err := stat.NewCaptureWriter(dir, "test", pods)
	if err != nil {
		t.Fatal(err)
	}
	in := func(n int) []byte {
		return []byte(fmt.Sprintf("response_total{direction=\"inbound\",tls=\"disabled\",no_tls_reason=\"no_tls_from_remote\",classification=\"success\"} %d\n", n))
	}
	out := func(n int) []byte {
		return []byte(fmt.Sprintf("response_total{direction=\"outbound\",dst_namespace=\"a\",dst_deployment=\"srv\",dst_pod=\"srv-1\",tls=\"disabled\",no_tls_reason=\"not_configured\",classification=\"success\"} %d\n", n))
	}
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, n := range []int{0, 100} {
		if err := w.AddScrape(at.Add(time.Duration(i)*100*time.Second), map[string][]byte{"a/srv-1": in(n), "b/cli-1": out(n)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := stat.OpenCapture(os.DirFS(dir), dir)
	if err != nil {
		t.Fatal(err)
	}
	replay, err := stat.StartReplay(c)
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close()
	fetcher := &replayFetcher{addrs: map[string]string{}, fail: map[string]bool{}}
	for _, tg := range replay.Targets {
		fetcher.addrs[tg.Pod.Namespace+"/"+tg.Pod.Name] = tg.Addr
	}
	senders := func(ns string) []string {
		t.Helper()
		q := stat.Query{Resource: stat.Resource{Kind: stat.KindDeployment, Namespace: ns, Name: "srv"}, Window: time.Second}
		res, err := stat.Compute(context.Background(), q, &stat.Scraper{Fetcher: fetcher}, c)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range res.Rows {
			for _, e := range r.TopPlaintext {
				out = append(out, r.Namespace+": "+e.Source+"->"+e.Destination)
			}
		}
		return out
	}
	want := []string{"a: b/deploy/cli->a/deploy/srv"}
	if got := senders("a"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("-n a: plain-text senders %q, want %q", got, want)
	}
	if got := senders(""); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("-A: plain-text senders %q, want %q", got, want)
	}
}
