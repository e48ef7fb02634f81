package cli

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"meshtls/fixtures"
	"meshtls/internal/testprom"
	"meshtls/stat"
)

// TestStatPrometheusMatchesCapture runs a real Prometheus against replays
// of the built-in captures and checks that `stat --prometheus-url`, which
// lets Prometheus compute increase() and histogram_quantile(), gives the
// same figures as `stat --capture`, which computes them client-side.
//
// Each capture gets its own Prometheus: emojivoto and emojivoto-live hold
// the same namespace, deployments and authorities, so one Prometheus
// scraping both would sum them.
func TestStatPrometheusMatchesCapture(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: starts a real Prometheus and waits for data")
	}
	const interval = 500 * time.Millisecond
	const window = "4s"
	proms := map[string]*testprom.Server{}
	targets := map[string]int{}
	for _, name := range fixtures.Captures() {
		c, err := openCapture(builtinPrefix + name)
		if err != nil {
			t.Fatal(err)
		}
		r, err := stat.StartReplayWith(c, stat.ReplayOptions{Step: interval})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		var tgs []testprom.Target
		for _, tg := range r.Targets {
			tgs = append(tgs, testprom.Target{Addr: tg.Addr, Labels: tg.Pod.TargetLabels()})
		}
		proms[name], targets[name] = testprom.Start(t, tgs, interval), len(tgs)
	}
	for name, prom := range proms {
		prom.WaitTargetsUp(t, targets[name], 60*time.Second)
	}
	// increase() over the window needs samples spanning all of it.
	time.Sleep(6 * time.Second)
	// Evaluate at a grid instant a little in the past: the replay stamps
	// its samples on the scrape interval's grid, so every target has
	// samples exactly at both ends of the range and Prometheus's
	// increase() is the plain difference, as the capture's is, even when a
	// loaded machine delays some scrapes. (A delayed scrape that skips one
	// grid instant is extrapolated linearly, which is exact here too.)
	at := time.Now().Add(-2 * interval).Truncate(interval).UTC().Format(time.RFC3339Nano)

	cases := []struct {
		capture string
		args    []string
	}{
		{"emojivoto", []string{"authority", "-n", "emojivoto"}},
		{"emojivoto", []string{"deploy", "-n", "emojivoto"}},
		{"emojivoto", []string{"ns", "-A"}},
		{"emojivoto", []string{"deploy/voting", "-n", "emojivoto", "--from", "deploy/web"}},
		{"emojivoto", []string{"deploy/web", "-n", "emojivoto", "--to", "deploy/voting"}},
		{"emojivoto-live", []string{"authority", "-n", "emojivoto"}},
		{"emojivoto-live", []string{"deploy", "-n", "emojivoto"}},
		{"emojivoto-live", []string{"deploy/web", "-n", "emojivoto", "--to", "deploy/voting"}},
		{"mixed", []string{"authority", "-n", "mixed"}},
		{"mixed", []string{"deploy", "-n", "mixed"}},
		{"mixed", []string{"po", "-n", "mixed"}},
		{"mixed", []string{"ns", "-A"}},
		{"mixed", []string{"svc", "-n", "mixed"}},
		{"mixed", []string{"deploy/backend", "po/frontend-6c7d8e9f4-q9v4m", "-n", "mixed"}},
	}
	for _, tc := range cases {
		t.Run(tc.capture+" "+fmt.Sprint(tc.args), func(t *testing.T) {
			fromCapture := statJSONRows(t, append(tc.args, "--capture", builtinPrefix+tc.capture, "-o", "json"))
			fromProm := statJSONRows(t, append(tc.args, "--prometheus-url", proms[tc.capture].URL, "-t", window, "--at", at, "-o", "json"))
			// Prometheus knows a workload only from its series; without a
			// pod list it cannot show one that received no request, which
			// the capture lists from its pods. Every other row must be on
			// both sides.
			for key, p := range fromProm {
				if _, ok := fromCapture[key]; !ok {
					t.Errorf("%s: in Prometheus's output (rps %s) but not in the capture's", key, show(p.RPS))
				}
			}
			compared := 0
			for key, c := range fromCapture {
				p, ok := fromProm[key]
				if !ok {
					if c.RPS != nil && *c.RPS != 0 {
						t.Errorf("%s: in the capture's output (rps %s) but not in Prometheus's", key, show(c.RPS))
					}
					continue
				}
				compared++
				for _, f := range []struct {
					name string
					c, p *float64
				}{
					{"success", c.Success, p.Success}, {"rps", c.RPS, p.RPS}, {"tls", c.TLS, p.TLS},
					{"p50", c.P50, p.P50}, {"p95", c.P95, p.P95}, {"p99", c.P99, p.P99},
					{"tcp_open_connections", c.TCPConn, p.TCPConn},
					{"tcp_read_bytes_per_sec", c.ReadBPS, p.ReadBPS}, {"tcp_write_bytes_per_sec", c.WriteBPS, p.WriteBPS},
				} {
					if !close(f.c, f.p) {
						t.Errorf("%s %s: capture %s, prometheus %s", key, f.name, show(f.c), show(f.p))
					}
				}
				for reason, n := range c.NoTLS {
					cs, ps := share(n, c.Requests), share(p.NoTLS[reason], p.Requests)
					if !closeVal(cs, ps) {
						t.Errorf("%s no_tls[%s]: capture %.4f of requests, prometheus %.4f", key, reason, cs, ps)
					}
				}
				if len(c.TopPlaintext) != len(p.TopPlaintext) {
					t.Errorf("%s top_plaintext: capture %v, prometheus %v", key, c.TopPlaintext, p.TopPlaintext)
				} else {
					for i := range c.TopPlaintext {
						ce, pe := c.TopPlaintext[i], p.TopPlaintext[i]
						if ce.Source != pe.Source || ce.Destination != pe.Destination || ce.Reason != pe.Reason ||
							!closeVal(share(ce.Requests, c.Requests), share(pe.Requests, p.Requests)) {
							t.Errorf("%s top_plaintext[%d]: capture %+v, prometheus %+v", key, i, ce, pe)
						}
					}
				}
			}
			if compared == 0 {
				t.Fatalf("no rows with traffic to compare")
			}
		})
	}
}

// TestStatPrometheusRefusesShortWindow: a window under two scrape
// intervals cannot hold two samples, so stat refuses it with a hint
// instead of printing nothing.
func TestStatPrometheusRefusesShortWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: starts a real Prometheus")
	}
	prom := testprom.Start(t, nil, 2*time.Second)
	res := execute(t, false, "stat", "au", "-A", "--prometheus-url", prom.URL, "-t", "3s")
	if res.code != 2 || !strings.Contains(res.errOut, "-t 3s is shorter than twice Prometheus's scrape interval (2s)") ||
		!strings.Contains(res.errOut, "use -t 4s or more") {
		t.Errorf("exit %d, stderr %q; want a usage error with the interval and a hint", res.code, res.errOut)
	}
	if res := execute(t, false, "stat", "au", "-A", "--prometheus-url", prom.URL, "-t", "4s"); res.code != 0 {
		t.Errorf("-t 4s: exit %d, stderr %q", res.code, res.errOut)
	}
}

func statJSONRows(t *testing.T, args []string) map[string]statJSON {
	t.Helper()
	args = append([]string{"stat"}, args...)
	res := execute(t, false, args...)
	if res.code != 0 {
		t.Fatalf("linkerd %v: exit %d: %s", args, res.code, res.errOut)
	}
	var rows []statJSON
	if err := json.Unmarshal([]byte(res.out), &rows); err != nil {
		t.Fatalf("linkerd %v: bad JSON: %v\n%s", args, err, res.out)
	}
	out := map[string]statJSON{}
	for _, r := range rows {
		out[r.Namespace+"/"+r.Name] = r
	}
	return out
}

// Both sides compute from exactly the same counter values, so they agree
// but for the order of floating-point sums: a relative 1e-4 is far tighter
// than the table's rounding and still catches any difference of method.
func closeVal(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9 || math.Abs(a-b) <= 1e-4*math.Max(math.Abs(a), math.Abs(b))
}

func close(a, b *float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return closeVal(*a, *b)
}

// share is n/total, NaN when either is null.
func share(n, total *float64) float64 {
	if n == nil || total == nil {
		return math.NaN()
	}
	return *n / *total
}

func show(v *float64) string {
	if v == nil {
		return "null"
	}
	return fmt.Sprintf("%.4f", *v)
}
