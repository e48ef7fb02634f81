package stat

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

// testCapture writes a capture of pods whose scrapes are given per round
// ("ns/pod" -> text; a pod absent from a round was not scraped then).
func testCapture(t *testing.T, pods []Pod, rounds ...map[string]string) *Capture {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "capture")
	w, err := NewCaptureWriter(dir, "test", pods)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, r := range rounds {
		bodies := map[string][]byte{}
		for k, v := range r {
			bodies[k] = []byte(v)
		}
		if err := w.AddScrape(at.Add(time.Duration(i)*10*time.Second), bodies); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCapture(os.DirFS(dir), dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func meshedPod(ns, name, deploy string) Pod {
	return Pod{Namespace: ns, Name: name, Meshed: true, Owners: map[string]string{"deployment": deploy}}
}

// counters renders response_total series, one per "labels value" pair.
func counters(lines ...string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("response_total{" + l + "\n")
	}
	return b.String()
}

// One deployment with a meshed and an unmeshed pod: the meshed client's
// plain text to the unmeshed pod is not part of the deployment's row
// (only the meshed pod reports inbound), so it must not be blamed for the
// row's plain text, which came from a client outside the mesh. Namespace
// rows must blame the same senders.
func TestEdgesMatchTheDestinationPod(t *testing.T) {
	pods := []Pod{
		meshedPod("m", "api-a", "api"),
		{Namespace: "m", Name: "api-b", Owners: map[string]string{"deployment": "api"}},
		meshedPod("m", "cli-1", "cli"),
		{Namespace: "m", Name: "legacy-1", Owners: map[string]string{"deployment": "legacy"}},
	}
	out := func(n int) string {
		return counters(
			`direction="outbound",dst_namespace="m",dst_deployment="api",dst_pod="api-a",tls="true",classification="success"} `+itoa(10*n),
			`direction="outbound",dst_namespace="m",dst_deployment="api",dst_pod="api-b",tls="no_identity",no_tls_reason="not_provided_by_service_discovery",classification="success"} `+itoa(5*n))
	}
	in := func(n int) string {
		return counters(
			`direction="inbound",tls="true",classification="success"} `+itoa(10*n),
			`direction="inbound",tls="no_identity",no_tls_reason="no_tls_from_remote",classification="success"} `+itoa(4*n))
	}
	c := testCapture(t, pods,
		map[string]string{"m/api-a": in(1), "m/cli-1": out(1)},
		map[string]string{"m/api-a": in(2), "m/cli-1": out(2)})
	for _, res := range []Resource{{Kind: KindDeployment, Namespace: "m", Name: "api"}, {Kind: KindNamespace, Name: "m"}} {
		r, err := Compute(context.Background(), Query{Resource: res}, c, c)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Rows) != 1 {
			t.Fatalf("%s: rows %+v", res, r.Rows)
		}
		row := r.Rows[0]
		if row.Requests != 14 || math.Abs(row.TLS-10.0/14) > 1e-9 {
			t.Errorf("%s: requests %v tls %v, want 14 and 10/14", res, row.Requests, row.TLS)
		}
		if len(row.TopPlaintext) != 1 || row.TopPlaintext[0].Source != UnmeshedSource || row.TopPlaintext[0].Requests != 4 {
			t.Errorf("%s: plain-text senders %+v, want only (unmeshed) with 4", res, row.TopPlaintext)
		}
	}
}

// A pod scraped once has no increase (Prometheus returns nothing for it):
// its row shows no figures rather than 0 requests, and the result names it.
func TestMissedScrapeShowsNothingAndSaysWhich(t *testing.T) {
	pods := []Pod{meshedPod("m", "api-a", "api"), meshedPod("m", "api-b", "api2")}
	line := func(n int) string {
		return counters(`direction="inbound",tls="true",classification="success"} ` + itoa(n))
	}
	c := testCapture(t, pods,
		map[string]string{"m/api-a": line(1)},
		map[string]string{"m/api-a": line(5), "m/api-b": line(7)})
	r, err := Compute(context.Background(), Query{Resource: Resource{Kind: KindDeployment, Namespace: "m"}}, c, c)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Row{}
	for _, row := range r.Rows {
		byName[row.Name] = row
	}
	if got := byName["api"]; got.Requests != 4 || math.Abs(got.RPS-0.4) > 1e-9 {
		t.Errorf("api: %+v, want 4 requests, 0.4 rps", got)
	}
	missed := byName["api2"]
	if !math.IsNaN(missed.RPS) || !math.IsNaN(missed.Success) || missed.Meshed == nil || missed.Meshed.Total != 1 {
		t.Errorf("api2 (scraped once): %+v, want no figures and MESHED 1/1", missed)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "pod m/api-b") || !strings.Contains(r.Warnings[0], "1 of 2") {
		t.Errorf("warnings %q, want one naming pod m/api-b", r.Warnings)
	}
}

func itoa(n int) string { return ftoa(float64(n)) }

type unreachablePods struct{}

func (unreachablePods) Pods(context.Context, string, labels.Selector) ([]Pod, error) {
	return nil, errors.New("connection refused")
}

func (unreachablePods) exists(context.Context, Resource) error {
	return errors.New("cannot look up: connection refused")
}

// With Prometheus the cluster is optional: an unreachable one leaves MESHED
// unknown but must not fail the query, while a definite "not found" does.
func TestOptionalPodsCheckOnlyFailsOnNotFound(t *testing.T) {
	q := Query{Resource: Resource{Kind: KindDeployment, Namespace: "ns", Name: "web"}}
	if err := CheckExists(context.Background(), []Query{q}, OptionalPods{Source: unreachablePods{}}); err != nil {
		t.Errorf("unreachable cluster: %v, want no error", err)
	}
	c := testCapture(t, []Pod{meshedPod("ns", "web-1", "web")}, map[string]string{}, map[string]string{})
	q.Resource.Name = "nope"
	var nf *NotFoundError
	if err := CheckExists(context.Background(), []Query{q}, OptionalPods{Source: c}); !errors.As(err, &nf) {
		t.Errorf("missing deployment: %v, want a NotFoundError", err)
	}
}
