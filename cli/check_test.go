package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"meshtls/check"
	"meshtls/internal/golden"
)

// brokenRun is a run as the engine reports it on a mesh with one Secret
// from another CA, a leaf in the warn window and a check skipped.
func brokenRun() []check.Result {
	ok := func(cat, d string) check.Result {
		return check.Result{Category: cat, Description: d, Status: check.StatusOK}
	}
	return []check.Result{
		ok(check.CategoryKubernetesAPI, "can initialize the client"),
		ok(check.CategoryKubernetesAPI, "can query the Kubernetes API"),
		ok(check.CategoryKubernetesAPI, "is running the minimum Kubernetes API version"),
		ok(check.CategoryLinkerdExists, "control plane namespace exists"),
		ok(check.CategoryLinkerdExists, "control plane Deployments exist"),
		ok(check.CategoryLinkerdExists, "control plane Deployments are ready"),
		ok(check.CategoryCA, "CA Deployment is ready"),
		{Category: check.CategoryCA, Description: "CA answers /ready", Status: check.StatusOK,
			Notes: []string{"po/linkerd/linkerd-ca-7d4b9c-x2x9z: answered at 10.244.0.5:9995 directly (the API server's pods/proxy refused: …)"}},
		{Category: check.CategoryCA, Description: "CA leader election has a live holder", Status: check.StatusOK, Notes: []string{"1 running replica: no election needed"}},
		ok(check.CategoryCA, "root Secret exists and parses"),
		{Category: check.CategoryTLSDataPlane, Description: "workload certificates chain to the current root", Status: check.StatusError,
			Error: "certificates not chaining to the current root: 1",
			Hint:  "certificates from another or an older root are rejected by every peer",
			Problems: []check.Problem{{Kind: "deploy", Name: "web", Namespace: "emojivoto",
				Reason: `not signed by the current root ("identity.linkerd.linkerd.cluster.local root CA"); issued by "some other root"`,
				Remedy: "kubectl -n linkerd rollout restart deploy/linkerd-ca to re-issue against the current root"}}},
		{Category: check.CategoryTLSDataPlane, Description: "workload certificates are not expiring soon", Status: check.StatusWarning,
			Error: "certificates expiring soon: 1", Hint: "the CA should have renewed these by now",
			Problems: []check.Problem{{Kind: "deploy", Name: "emoji", Namespace: "emojivoto", Reason: "expires in 2h59m0s (at 2026-11-23T05:00:00Z), within --warn-within 6h0m0s",
				Remedy: "delete it so the CA re-issues it: kubectl -n emojivoto delete secret emoji-deployment-tls-linkerd-io"}}},
		{Category: check.CategoryTLSDataPlane, Description: "trust bundles hold the current root", Status: check.StatusSkipped, Error: "no usable root to compare with, see linkerd-ca"},
		{Category: check.CategoryTLSDataPlane, Description: "proxies serve their Secret's certificate", Status: check.StatusOK,
			Notes: []string{"skipped 4 pods whose proxy is not running: emojivoto/emoji-5f4d-1, emojivoto/vote-bot-7c-2, emojivoto/voting-9a-3, +1 more"}},
	}
}

func printRun(t *testing.T, p checkPrinter, results []check.Result) {
	t.Helper()
	sum := check.Summary{Success: true, Results: results}
	for _, r := range results {
		p.Observe(r)
		if r.Status == check.StatusError {
			sum.Success = false
		}
	}
	if err := p.Finish(sum); err != nil {
		t.Fatal(err)
	}
}

func TestCheckTextGolden(t *testing.T) {
	io, out, _ := TestStreams(false)
	printRun(t, newCheckTextPrinter(io), brokenRun())
	golden.Assert(t, "check_tls_broken.golden", out.Bytes())
	if strings.Contains(out.String(), "\x1b[") {
		t.Error("colour codes on a non-terminal")
	}
}

func TestCheckTextColourOnlyOnTerminal(t *testing.T) {
	io, out, _ := TestStreams(true)
	printRun(t, newCheckTextPrinter(io), brokenRun())
	if !strings.Contains(out.String(), "\x1b[31m×\x1b[0m") {
		t.Errorf("no red × on a terminal:\n%s", out)
	}
	io, out, _ = TestStreams(true)
	io.noColor = true // NO_COLOR
	printRun(t, newCheckTextPrinter(io), brokenRun())
	if strings.Contains(out.String(), "\x1b[") {
		t.Error("colour despite NO_COLOR")
	}
}

func TestCheckJSONGolden(t *testing.T) {
	var out bytes.Buffer
	printRun(t, &checkJSONPrinter{w: &out}, brokenRun())
	golden.Assert(t, "check_tls_broken.json.golden", out.Bytes())
	var doc struct {
		Success    bool
		Categories []struct {
			Name   string
			Checks []check.Result
		}
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Success || len(doc.Categories) != 4 || doc.Categories[3].Checks[0].Problems[0].Name != "web" {
		t.Errorf("JSON does not carry the same data: %+v", doc)
	}
}

// A thousand failing owners make one line with the count and the first
// few names, not a thousand lines; JSON keeps every one.
func TestThousandProblemsAggregate(t *testing.T) {
	var probs []check.Problem
	for i := range 1000 {
		probs = append(probs, check.Problem{Kind: "deploy", Name: fmt.Sprintf("app-%04d", i), Namespace: "bench", Reason: fmt.Sprintf("Secret app-%04d-deployment-tls-linkerd-io does not exist", i), Remedy: "…"})
	}
	r := check.Result{Category: check.CategoryTLSDataPlane, Description: "each TLS-enabled owner has its Secret", Status: check.StatusError,
		Error: "owners without a usable Secret: 1000", Hint: "the CA issues one Secret per owner", Problems: probs}
	io, out, _ := TestStreams(false)
	printRun(t, newCheckTextPrinter(io), []check.Result{r})
	golden.Assert(t, "check_thousand.golden", out.Bytes())
	if n := strings.Count(out.String(), "deploy/app-0"); n != 4 {
		t.Errorf("%d names printed, want the first 3 and the example", n)
	}
	var js bytes.Buffer
	printRun(t, &checkJSONPrinter{w: &js}, []check.Result{r})
	if n := strings.Count(js.String(), `"name": "app-`); n != 1000 {
		t.Errorf("JSON has %d problems, want 1000", n)
	}
}

func TestCheckFlags(t *testing.T) {
	var got *CheckOptions
	io, _, _ := TestStreams(false)
	f := NewFactory(io)
	root := NewRootCmd(f)
	for i, c := range root.Commands() {
		if c.Name() == "check" {
			root.RemoveCommand(root.Commands()[i])
			break
		}
	}
	root.AddCommand(newCheckCmd(f, func(_ context.Context, o *CheckOptions) error { got = o; return nil }))
	root.SetArgs([]string{"check", "--tls", "-L", "mesh", "--wait", "2m", "--warn-within", "60d", "--fail-within", "14d", "--leaf-fail-within", "90m", "-o", "json", "--cluster-domain", "corp.example"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	want := CheckOptions{TLS: true, ClusterDomain: "corp.example", Output: "json", Wait: 2 * time.Minute, ControlNamespace: "mesh",
		RootWarnWithin: 60 * 24 * time.Hour, RootFailWithin: 14 * 24 * time.Hour, LeafWarnWithin: 6 * time.Hour, LeafFailWithin: 90 * time.Minute}
	if *got != want {
		t.Errorf("options %+v, want %+v", *got, want)
	}
}

func TestCheckBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"check", "-o", "yaml"},
		{"check", "--fail-within", "40d"},
		{"check", "--leaf-warn-within", "30m"},
		{"check", "--wait", "soon"},
		{"check", "extra"},
	} {
		res := execute(t, false, args...)
		if res.code != 2 || strings.Count(strings.TrimSpace(res.errOut), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q", args, res.code, res.errOut)
		}
	}
}

// Without a cluster the first check fails, the run stops, and the exit
// code says so; the error is on the check's line, not a panic.
func TestCheckNoCluster(t *testing.T) {
	res := execute(t, false, "check", "--tls")
	if res.code != 1 || !strings.Contains(res.out, "× can initialize the client") || !strings.Contains(res.out, "no cluster in this test") {
		t.Errorf("exit %d\n%s%s", res.code, res.out, res.errOut)
	}
	res = execute(t, false, "check", "-o", "json")
	if res.code != 1 || !strings.Contains(res.out, `"status": "error"`) {
		t.Errorf("json: exit %d\n%s", res.code, res.out)
	}
}

func TestCheckHelpAndCompletion(t *testing.T) {
	res := execute(t, false, "check", "--help")
	for _, want := range []string{"--tls", "--wait", "--leaf-fail-within", "Examples:", "linkerd check --tls"} {
		if !strings.Contains(res.out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	res = execute(t, false, "__complete", "check", "--output", "")
	if !strings.Contains(res.out, "json\n") {
		t.Errorf("completion of -o: %s", res.out)
	}
}

// Under --wait a terminal shows a spinner while a check is retried, and
// the final line replaces it; a pipe only ever sees final lines.
func TestCheckSpinnerOnlyOnTerminal(t *testing.T) {
	retrying := check.Result{Category: check.CategoryCA, Description: "CA Deployment is ready", Status: check.StatusError, Error: "deploy/linkerd-ca: 0/1 replicas ready", Retrying: true}
	final := retrying
	final.Retrying, final.Status, final.Error = false, check.StatusOK, ""

	io, out, _ := TestStreams(true)
	p := newCheckTextPrinter(io)
	p.Observe(retrying)
	time.Sleep(250 * time.Millisecond) // a few frames
	p.Observe(final)
	got := out.String()
	if !strings.Contains(got, "CA Deployment is ready (waiting: deploy/linkerd-ca: 0/1 replicas ready)") || !strings.Contains(got, "\r\x1b[K") {
		t.Errorf("no spinner on a terminal: %q", got)
	}
	if !strings.HasSuffix(got, "√\x1b[0m CA Deployment is ready\n") {
		t.Errorf("final line should replace the spinner: %q", got)
	}

	io, out, _ = TestStreams(false)
	p = newCheckTextPrinter(io)
	p.Observe(retrying)
	p.Observe(final)
	if strings.Contains(out.String(), "waiting") || strings.Contains(out.String(), "\r") {
		t.Errorf("spinner on a pipe: %q", out.String())
	}
}
