package cli

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshtls/internal/golden"
	"meshtls/stat"
)

func TestStatGolden(t *testing.T) {
	cases := []struct {
		golden string
		args   []string
	}{
		{"stat_au_emojivoto.golden", []string{"stat", "authority", "-n", "emojivoto", "--capture", "builtin:emojivoto"}},
		{"stat_au_emojivoto_wide.golden", []string{"stat", "au", "-n", "emojivoto", "--capture", "builtin:emojivoto", "-o", "wide"}},
		{"stat_au_emojivoto.json.golden", []string{"stat", "au", "-n", "emojivoto", "--capture", "builtin:emojivoto", "-o", "json"}},
		{"stat_deploy_emojivoto.golden", []string{"stat", "deployment", "-n", "emojivoto", "--capture", "builtin:emojivoto"}},
		{"stat_ns_all.golden", []string{"stat", "ns", "-A", "--capture", "builtin:emojivoto"}},
		{"stat_deploy_all.golden", []string{"stat", "deploy", "-A", "--capture", "builtin:emojivoto"}},
		{"stat_from_web.golden", []string{"stat", "deploy", "-n", "emojivoto", "--from", "deploy/web", "--capture", "builtin:emojivoto"}},
		{"stat_to_voting.golden", []string{"stat", "deploy/web", "-n", "emojivoto", "--to", "deploy/voting", "--capture", "builtin:emojivoto"}},
		{"stat_deploy_mixed_wide.golden", []string{"stat", "deploy", "-n", "mixed", "--capture", "builtin:mixed", "-o", "wide"}},
		{"stat_au_mixed_wide.golden", []string{"stat", "au", "-n", "mixed", "--capture", "builtin:mixed", "-o", "wide"}},
		{"stat_deploy_mixed.json.golden", []string{"stat", "deploy", "-n", "mixed", "--capture", "builtin:mixed", "-o", "json"}},
		{"stat_po_mixed_selector.golden", []string{"stat", "po", "-n", "mixed", "-l", "app in (backend,frontend)", "--capture", "builtin:mixed"}},
		{"stat_to_payments_wide.golden", []string{"stat", "deploy/frontend", "-n", "mixed", "--to", "deploy/payments", "--capture", "builtin:mixed", "-o", "wide"}},
		{"stat_ns_mixed_wide.golden", []string{"stat", "ns", "-A", "--capture", "builtin:mixed", "-o", "wide"}},
		{"stat_ns_mixed.json.golden", []string{"stat", "ns", "-A", "--capture", "builtin:mixed", "-o", "json"}},
		{"stat_deploy_mixed_unmeshed.golden", []string{"stat", "deploy", "-n", "mixed", "--capture", "builtin:mixed", "--unmeshed"}},
		{"stat_svc_mixed_wide.golden", []string{"stat", "svc", "-n", "mixed", "--capture", "builtin:mixed", "-o", "wide"}},
		{"stat_several.golden", []string{"stat", "deploy/web", "po/vote-bot-8b9c7d6f5-x7k2p", "au/web-svc.emojivoto:80", "-n", "emojivoto", "--capture", "builtin:emojivoto"}},
		{"stat_po_two.golden", []string{"stat", "po", "web-5d9c8b7f6-x7k2p", "emoji-7c8d9f5b4-q9v4m", "-n", "emojivoto", "--capture", "builtin:emojivoto"}},
		{"stat_all_mixed.golden", []string{"stat", "all", "-n", "mixed", "--capture", "builtin:mixed"}},
		{"stat_several.json.golden", []string{"stat", "deploy/web", "svc/emoji-svc", "-n", "emojivoto", "--capture", "builtin:emojivoto", "-o", "json"}},
	}
	for _, tc := range cases {
		t.Run(tc.golden, func(t *testing.T) {
			res := execute(t, false, tc.args...)
			if res.code != 0 {
				t.Fatalf("exit %d: %s", res.code, res.errOut)
			}
			if res.errOut != "" {
				t.Errorf("unexpected stderr: %q", res.errOut)
			}
			golden.Assert(t, tc.golden, []byte(res.out))
		})
	}
}

// The demo's promise: the built-in capture prints the seed's table exactly.
func TestStatReproducesSeedTable(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("testdata", "seed_stat_authority_emojivoto.txt"))
	if err != nil {
		t.Fatal(err)
	}
	res := execute(t, false, "stat", "authority", "-n", "emojivoto", "--capture", "builtin:emojivoto")
	if res.out != string(want) {
		t.Errorf("table differs from the seed's\n--- got ---\n%s--- seed ---\n%s", res.out, want)
	}
}

func TestStatColourOnlyOnTerminal(t *testing.T) {
	args := []string{"stat", "au", "-n", "mixed", "--capture", "builtin:mixed"}
	if res := execute(t, false, args...); strings.Contains(res.out, "\x1b[") {
		t.Errorf("colour codes in piped output:\n%q", res.out)
	}
	tty := execute(t, true, args...)
	if !strings.Contains(tty.out, "\x1b[32m100%\x1b[0m") || !strings.Contains(tty.out, "\x1b[31m0%\x1b[0m") {
		t.Errorf("want green 100%% and red 0%% on a terminal:\n%q", tty.out)
	}
	// Colour codes must not break the column layout.
	lines := strings.Split(strings.TrimSpace(stripANSI(tty.out)), "\n")
	plain := strings.Split(strings.TrimSpace(execute(t, false, args...).out), "\n")
	if strings.Join(lines, "\n") != strings.Join(plain, "\n") {
		t.Errorf("terminal layout differs from plain layout:\n%s\n---\n%s", strings.Join(lines, "\n"), strings.Join(plain, "\n"))
	}

	t.Setenv("NO_COLOR", "1")
	io := System()
	io.stdoutTTY = true
	if io.ColorEnabled() {
		t.Errorf("NO_COLOR set but colour enabled")
	}
}

func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			for i < len(s) && s[i] != 'm' {
				i++
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestStatBadInput(t *testing.T) {
	badCapture := writeCapture(t, "emojivoto", "web-1", "response_total{direction=\"inbound\"} 1\nresponse_total{direction=\"inbound\" 2\n")
	cases := []struct {
		name     string
		args     []string
		code     int
		contains []string
	}{
		{"unknown type", []string{"stat", "gadgets", "--capture", "builtin:emojivoto"}, 2,
			[]string{`unknown resource type "gadgets"`, "authority (au), deployment (deploy), statefulset (sts), daemonset (ds), replicaset (rs), replicationcontroller (rc), job, cronjob, pod (po), service (svc), namespace (ns), all"}},
		{"malformed scrape", []string{"stat", "au", "-n", "emojivoto", "--capture", badCapture}, 1,
			[]string{"001/emojivoto/web-1.prom", "line 2"}},
		{"unreachable prometheus", []string{"stat", "au", "--prometheus-url", "http://127.0.0.1:1"}, 1,
			[]string{"cannot reach Prometheus at http://127.0.0.1:1"}},
		{"bad prometheus url", []string{"stat", "au", "--prometheus-url", "127.0.0.1:9090"}, 2,
			[]string{`invalid --prometheus-url "127.0.0.1:9090"`}},
		{"missing capture", []string{"stat", "au", "--capture", "/nonexistent/capture"}, 1,
			[]string{"capture directory /nonexistent/capture does not exist", "builtin:emojivoto"}},
		{"unknown builtin", []string{"stat", "au", "--capture", "builtin:nope"}, 1,
			[]string{`no built-in capture "nope"`}},
		{"bad output", []string{"stat", "au", "-o", "yaml", "--capture", "builtin:emojivoto"}, 2,
			[]string{`unknown output format "yaml"`}},
		{"from and to", []string{"stat", "deploy", "--from", "deploy/a", "--to", "deploy/b"}, 2,
			[]string{"--from and --to cannot be used together"}},
		{"bad from", []string{"stat", "deploy", "--from", "web"}, 2,
			[]string{`--from "web": want TYPE/NAME`}},
		{"bad selector", []string{"stat", "deploy", "-l", "a in (", "--capture", "builtin:mixed"}, 1,
			[]string{"invalid label selector"}},
		{"no source", []string{"stat", "deploy"}, 1,
			[]string{"no metrics source", "--prometheus-url or --capture"}},
		{"name twice", []string{"stat", "deploy/a", "b"}, 2, []string{`give the name either as "deploy/a" or as a second argument`}},
		{"no args", []string{"stat"}, 2, []string{"requires at least 1 arg(s)"}},
		{"ns with -n", []string{"stat", "ns", "-n", "x", "--capture", "builtin:emojivoto"}, 2,
			[]string{"-n/--namespace cannot be used with namespaces"}},
		{"-A with -n", []string{"stat", "deploy", "-A", "-n", "x", "--capture", "builtin:emojivoto"}, 2,
			[]string{"-A/--all-namespaces and -n/--namespace cannot be used together"}},
		{"deploy not found", []string{"stat", "deploy/nope", "-n", "emojivoto", "--capture", "builtin:emojivoto"}, 1,
			[]string{`deployment "nope" in namespace "emojivoto" not found in capture builtin:emojivoto`}},
		{"namespace not found", []string{"stat", "deploy", "-n", "nope", "--capture", "builtin:emojivoto"}, 1,
			[]string{`namespace "nope" not found in capture builtin:emojivoto (it holds namespaces emojivoto, linkerd)`}},
		{"from not found", []string{"stat", "deploy", "-n", "emojivoto", "--from", "deploy/nope", "--capture", "builtin:emojivoto"}, 1,
			[]string{`deployment "nope" in namespace "emojivoto" not found in capture builtin:emojivoto`}},
		{"ns resource not found", []string{"stat", "ns/nope", "--capture", "builtin:mixed"}, 1,
			[]string{`namespace "nope" not found in capture builtin:mixed (it holds namespaces mixed)`}},
		{"pod not found", []string{"stat", "po", "a", "b", "-n", "mixed", "--capture", "builtin:mixed"}, 1,
			[]string{`pod "a" in namespace "mixed" not found in capture builtin:mixed`}},
		{"at without prometheus", []string{"stat", "au", "--at", "5m", "--capture", "builtin:emojivoto"}, 2,
			[]string{"--at needs a Prometheus"}},
		{"at unparsable", []string{"stat", "au", "--at", "yesterday", "--prometheus-url", "http://127.0.0.1:1"}, 2,
			[]string{`--at "yesterday": want an RFC 3339 time`}},
		{"at in the future", []string{"stat", "au", "--at", "2999-01-01T00:00:00Z", "--prometheus-url", "http://127.0.0.1:1"}, 2,
			[]string{"--at 2999-01-01T00:00:00Z is in the future"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := execute(t, false, tc.args...)
			if res.code != tc.code {
				t.Errorf("exit code %d, want %d (stderr %q)", res.code, tc.code, res.errOut)
			}
			if n := strings.Count(strings.TrimSpace(res.errOut), "\n"); n != 0 {
				t.Errorf("want one line on stderr, got %d:\n%s", n+1, res.errOut)
			}
			for _, c := range tc.contains {
				if !strings.Contains(res.errOut, c) {
					t.Errorf("stderr %q does not contain %q", res.errOut, c)
				}
			}
			if res.out != "" {
				t.Errorf("stdout should be empty on error, got %q", res.out)
			}
		})
	}
}

func TestStatNoTraffic(t *testing.T) {
	// linkerd holds Prometheus, which sends but receives nothing.
	res := execute(t, false, "stat", "au", "-n", "linkerd", "--capture", "builtin:emojivoto")
	if res.code != 0 || res.errOut != "No traffic found.\n" || res.out != "" {
		t.Errorf("got exit %d, stdout %q, stderr %q; want exit 0 and only \"No traffic found.\" on stderr", res.code, res.out, res.errOut)
	}
}

// writeCapture makes a two-scrape capture whose second scrape of one pod
// is the given text.
func writeCapture(t *testing.T, ns, pod, second string) string {
	t.Helper()
	return writeCaptureRounds(t, ns, pod, "response_total{direction=\"inbound\"} 0\n", second)
}

// writeCaptureRounds makes a two-scrape capture of one pod of deploy/web.
func writeCaptureRounds(t *testing.T, ns, pod, first, second string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "capture")
	p := stat.Pod{Namespace: ns, Name: pod, Meshed: true, Owners: map[string]string{"deployment": "web"}}
	w, err := stat.NewCaptureWriter(dir, "test", []stat.Pod{p})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := w.AddScrape(at, map[string][]byte{ns + "/" + pod: []byte(first)}); err != nil {
		t.Fatal(err)
	}
	if err := w.AddScrape(at.Add(time.Minute), map[string][]byte{ns + "/" + pod: []byte(second)}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Flags become options without touching any source.
func TestStatFlagParsing(t *testing.T) {
	io, _, _ := TestStreams(false)
	f := NewFactory(io)
	var got *StatOptions
	root := NewRootCmd(f)
	root.RemoveCommand(mustFind(t, root.Commands(), "stat"))
	root.AddCommand(newStatCmd(f, func(_ context.Context, o *StatOptions) error { got = o; return nil }))
	root.SetArgs([]string{"stat", "deploy/web", "-n", "emojivoto", "--to", "deploy/voting", "--to-namespace", "other", "-t", "5m", "-l", "app=web", "-o", "wide"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	want := stat.Resource{Kind: stat.KindDeployment, Namespace: "emojivoto", Name: "web"}
	if got.Resource != want {
		t.Errorf("resource %+v, want %+v", got.Resource, want)
	}
	if got.To == nil || *got.To != (stat.Resource{Kind: stat.KindDeployment, Namespace: "other", Name: "voting"}) {
		t.Errorf("to %+v", got.To)
	}
	if got.Window != 5*time.Minute || !got.WindowSet || got.Selector != "app=web" || got.Output != "wide" {
		t.Errorf("options %+v", got)
	}
}

func TestParseAt(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Time
	}{
		{"90m", now.Add(-90 * time.Minute)},
		{"0s", now},
		{"2026-11-22T03:15:00Z", time.Date(2026, 11, 22, 3, 15, 0, 0, time.UTC)},
		{"2026-11-22T11:59:59.5Z", time.Date(2026, 11, 22, 11, 59, 59, 5e8, time.UTC)},
		{"2026-11-22T04:00:00-05:00", time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)},
	}
	for _, tc := range cases {
		got, err := parseAt(tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseAt(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"-5m", "noon", "2026-11-22", "2026-11-22T12:00:01Z"} {
		if _, err := parseAt(bad, now); err == nil {
			t.Errorf("parseAt(%q): want an error", bad)
		}
	}
}

// A NaN sample goes into the sums as Prometheus would carry it: the figures
// it touches are unknown ("-", null), the row stays, and JSON stays valid.
func TestStatNaNSampleKeepsJSONValid(t *testing.T) {
	line := func(class, v string) string {
		return "response_total{direction=\"inbound\",tls=\"true\",classification=\"" + class + "\"} " + v + "\n"
	}
	dir := writeCaptureRounds(t, "emojivoto", "web-1", line("success", "5")+line("failure", "1"), line("success", "NaN")+line("failure", "4"))
	res := execute(t, false, "stat", "deploy", "-n", "emojivoto", "--capture", dir, "-o", "json")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.errOut)
	}
	golden.Assert(t, "stat_nan.json.golden", []byte(res.out))
	table := execute(t, false, "stat", "deploy", "-n", "emojivoto", "--capture", dir)
	if table.code != 0 {
		t.Fatalf("exit %d: %s", table.code, table.errOut)
	}
	golden.Assert(t, "stat_nan.golden", []byte(table.out))
}

// A pod scraped in only one round has no increase: every figure is "-"
// and a warning names the pod.
func TestStatMissedScrape(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "capture")
	pods := []stat.Pod{
		{Namespace: "ns", Name: "web-1", Meshed: true, Owners: map[string]string{"deployment": "web"}},
		{Namespace: "ns", Name: "api-1", Meshed: true, Owners: map[string]string{"deployment": "api"}},
	}
	w, err := stat.NewCaptureWriter(dir, "test", pods)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	line := func(n string) []byte {
		return []byte("response_total{direction=\"inbound\",tls=\"true\",classification=\"success\"} " + n + "\n")
	}
	if err := w.AddScrape(at, map[string][]byte{"ns/web-1": line("0")}); err != nil {
		t.Fatal(err)
	}
	if err := w.AddScrape(at.Add(time.Minute), map[string][]byte{"ns/web-1": line("60"), "ns/api-1": line("60")}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	res := execute(t, false, "stat", "deploy", "-n", "ns", "--capture", dir)
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.errOut)
	}
	golden.Assert(t, "stat_missed.golden", []byte(res.out))
	if !strings.Contains(res.errOut, "Warning: no figures for pod ns/api-1: scraped in 1 of 2 rounds") {
		t.Errorf("stderr %q does not name the missed pod", res.errOut)
	}
}

func TestStatEmptyJSONIsAnEmptyList(t *testing.T) {
	res := execute(t, false, "stat", "au", "-n", "linkerd", "--capture", "builtin:emojivoto", "-o", "json")
	if res.code != 0 || res.out != "[]\n" {
		t.Errorf("exit %d, stdout %q, stderr %q; want [] on stdout", res.code, res.out, res.errOut)
	}
}

// Ctrl-C while stat waits on Prometheus exits 130 with nothing printed,
// as a shell reports an interrupted command.
func TestStatInterruptExits130Quietly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	done := make(chan runResult, 1)
	go func() {
		done <- execute(t, false, "stat", "au", "-A", "--prometheus-url", "http://"+ln.Addr().String())
	}()
	select {
	case <-accepted: // stat is waiting on Prometheus, with its signal handler in place
	case <-time.After(30 * time.Second):
		t.Fatal("stat never queried Prometheus")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.code != 130 || res.errOut != "" || res.out != "" {
			t.Errorf("exit %d, stdout %q, stderr %q; want 130 and nothing printed", res.code, res.out, res.errOut)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stat did not stop on SIGINT")
	}
}

// A capture's rounds may not span -t exactly: stat says which window the
// figures cover.
func TestStatCaptureWindowNote(t *testing.T) {
	res := execute(t, false, "stat", "au", "-n", "emojivoto", "--capture", "builtin:emojivoto", "-t", "1m")
	if res.code != 0 || res.errOut != "Note: the window is 1m50s, the span of the capture's rounds closest to -t 1m0s\n" {
		t.Errorf("exit %d, stderr %q", res.code, res.errOut)
	}
	if res := execute(t, false, "stat", "au", "-n", "emojivoto", "--capture", "builtin:emojivoto", "-t", "110s"); res.errOut != "" {
		t.Errorf("matching -t: stderr %q, want nothing", res.errOut)
	}
}
