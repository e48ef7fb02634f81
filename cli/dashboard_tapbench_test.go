package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/chromedp"

	"meshtls/contract"
	tapfixtures "meshtls/fixtures/tap"
	"meshtls/tap"
)

// writeFastRecording writes a recording of deploy/web's events from the
// built-in one, replayed back to back at perSecond events a second for
// the given duration.
func writeFastRecording(t testing.TB, perSecond, seconds int) string {
	t.Helper()
	f, err := tapfixtures.Open("emojivoto")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rr, err := tap.NewRecordingReader(f, "builtin:emojivoto")
	if err != nil {
		t.Fatal(err)
	}
	q := tap.Query{Target: tap.Target{Kind: contract.KindDeployment, Namespace: "emojivoto", Name: "web"}}
	var base []tap.Record
	for {
		rec, err := rr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev := tap.FromProto(rec); q.Selects(&ev) {
			base = append(base, rec)
		}
	}
	path := filepath.Join(t.TempDir(), "fast.jsonl")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	w, err := tap.NewRecorder(out, tap.Header{Note: fmt.Sprintf("deploy/web of builtin:emojivoto at %d events/s", perSecond)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	step := time.Second / time.Duration(perSecond)
	for i := 0; i < perSecond*seconds; i++ {
		rec := base[i%len(base)]
		rec.Time = start.Add(time.Duration(i) * step)
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDashboardTapMemory1000PerSecond (make bench; DASHBOARD_TAP_BENCH=1)
// feeds the live list 1,000 events a second for 30 s in chromium, every
// one sent to the page (--max-events 1000), and samples the page's JS heap
// after a garbage collection, its DOM size, the rows kept, the events
// received and the longest stall of the page's main thread.
func TestDashboardTapMemory1000PerSecond(t *testing.T) {
	if os.Getenv("DASHBOARD_TAP_BENCH") == "" {
		t.Skip("a 30 s measurement: set DASHBOARD_TAP_BENCH=1 (make bench does)")
	}
	const perSecond, seconds, maxRows = 1000, 30, 200
	rec := writeFastRecording(t, perSecond, seconds)
	url := startDashboard(t, DashboardOptions{Capture: "builtin:emojivoto", Replay: rec, Speed: 1, MaxEvents: perSecond})
	b := newBrowserWith(t, 1280, 800, chromedp.Flag("js-flags", "--expose-gc"))
	// Counted from the page's first moment: the stream starts as it loads.
	ctx, cancel := b.timeout()
	_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `
	  window.__n = 0; window.__lag = 0;
	  document.addEventListener('htmx:sseMessage', e => { if (e.detail.type === 'tap') window.__n++; });
	  let last = performance.now();
	  setInterval(() => { const now = performance.now(); window.__lag = Math.max(window.__lag, now - last - 100); last = now; }, 100);`})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = b.timeout()
	_, err = chromedp.Call(ctx, performance.Enable, performance.EnableParams{TimeDomain: performance.EnableTimeDomainThreadTicks})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	// busy is the page's main-thread task time so far, in CPU time of
	// that thread: what the page costs, whatever else the machine runs.
	busy := func() float64 {
		ctx, cancel := b.timeout()
		defer cancel()
		m, err := chromedp.Call(ctx, performance.GetMetrics, cdp.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range m.Metrics {
			if x.Name == "TaskDuration" {
				return x.Value
			}
		}
		t.Fatal("no TaskDuration metric")
		return 0
	}
	t.Logf("load average at start: %s", loadavg())
	b.do(t, chromedp.Navigate(url+"/ns/emojivoto/deploy/web"), chromedp.WaitVisible("#tap"))
	type sample struct {
		Heap  float64 `json:"heap"`
		Nodes int     `json:"nodes"`
		Rows  int     `json:"rows"`
		N     int     `json:"n"`
		Lag   float64 `json:"lag"`
		Ended bool    `json:"ended"`
		Drop  string  `json:"drop"`
	}
	read := func() sample {
		return evaluate[sample](t, b, `(() => { window.gc(); return {heap: performance.memory.usedJSHeapSize,
		  nodes: document.getElementsByTagName('*').length, rows: document.getElementById('tap-rows').rows.length,
		  n: window.__n, lag: window.__lag, ended: document.getElementById('tap-state').textContent.includes('ended'),
		  drop: document.getElementById('tap-dropped').textContent}; })()`)
	}
	start := time.Now()
	busy0, n0 := busy(), evaluate[int](t, b, `window.__n`)
	var samples []sample
	for i := 0; ; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * 5 * time.Second)))
		s := read()
		samples = append(samples, s)
		t.Logf("t=%2.0fs  heap %6.2f MB  DOM nodes %5d  rows %3d  events received %6d  longest main-thread stall %4.0f ms",
			time.Since(start).Seconds(), s.Heap/1e6, s.Nodes, s.Rows, s.N, s.Lag)
		if s.Ended || time.Since(start) > time.Duration(seconds+30)*time.Second {
			break
		}
	}
	last := samples[len(samples)-1]
	if !last.Ended {
		t.Errorf("the replay did not end within %ds", seconds+30)
	}
	busy1 := busy()
	t.Logf("load average at end: %s", loadavg())
	t.Logf("main-thread task time (thread CPU) per 1,000 events handled: %.0f ms (%d events in %.1f s of tasks)",
		1000*(busy1-busy0)/float64(last.N-n0)*1000, last.N-n0, busy1-busy0)
	rate := float64(last.N) / time.Since(start).Seconds()
	t.Logf("received %d events in %s (%.0f events/s on average), %s reported dropped by the server's per-page cap", last.N, time.Since(start).Round(time.Second), rate, last.Drop)
	// The cap holds in every sample; the heap is judged over the steady
	// state, the samples with a full list.
	var steady []sample
	for i, s := range samples {
		if s.Rows > maxRows {
			t.Errorf("sample %d: %d rows kept, the cap is %d", i, s.Rows, maxRows)
		}
		if s.Rows == maxRows {
			steady = append(steady, s)
		}
	}
	if len(steady) < 3 {
		t.Fatalf("the list was full in %d samples; want at least 3", len(steady))
	}
	lo, hi := steady[0].Heap, steady[0].Heap
	for _, s := range steady {
		lo, hi = min(lo, s.Heap), max(hi, s.Heap)
	}
	t.Logf("JS heap over the full-list samples: %.2f–%.2f MB (spread %.0f%%)", lo/1e6, hi/1e6, 100*(hi-lo)/lo)
	if hi > 1.5*lo {
		t.Errorf("the page's heap grew from %.2f to %.2f MB: not flat", lo/1e6, hi/1e6)
	}
	if last.N < perSecond*seconds/2 {
		t.Errorf("only %d of %d events reached the page", last.N, perSecond*seconds)
	}
}

// loadavg is the machine's load, which explains stalls of a shared one.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
