package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshtls/internal/golden"
	"meshtls/stat"
)

// writeRequiredCapture records a required server (a/srv) that served 50
// requests over mTLS and refused 25 (20 HTTP, 5 gRPC) in 100 s, next to an
// optional one (a/old) that served plain text and refused nothing.
func writeRequiredCapture(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "required")
	pods := []stat.Pod{
		{Namespace: "a", Name: "srv-1", Meshed: true, Owners: map[string]string{"deployment": "srv"}},
		{Namespace: "a", Name: "old-1", Meshed: true, Owners: map[string]string{"deployment": "old"}},
	}
	w, err := stat.NewCaptureWriter(dir, "test", pods)
	if err != nil {
		t.Fatal(err)
	}
	srv := func(served, http, grpc int) []byte {
		return fmt.Appendf(nil, `response_total{direction="inbound",authority="srv.a:80",tls="true",client_id="cli.deployment.a.linkerd-managed.linkerd.svc.cluster.local",classification="success",status_code="200"} %d
inbound_tls_refused_total{direction="inbound",reason="no_tls_from_remote",protocol="http",authority="srv.a:80"} %d
inbound_tls_refused_total{direction="inbound",reason="no_tls_from_remote",protocol="grpc",authority="srv.a:80"} %d
`, served, http, grpc)
	}
	old := func(n int) []byte {
		return fmt.Appendf(nil, `response_total{direction="inbound",authority="old.a:80",tls="no_identity",no_tls_reason="no_tls_from_remote",classification="success",status_code="200"} %d
`, n)
	}
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, n := range []int{0, 1} {
		if err := w.AddScrape(at.Add(time.Duration(i)*100*time.Second), map[string][]byte{"a/srv-1": srv(50*n, 20*n, 5*n), "a/old-1": old(10 * n)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestStatShowsRefused: stat -o wide adds a REFUSED column with the count
// and reasons; -o json has them per row; the TLS column stays the share
// of served requests (100% for the required server, whose refusals are
// not requests it served).
func TestStatShowsRefused(t *testing.T) {
	dir := writeRequiredCapture(t)
	res := execute(t, false, "stat", "deploy", "-n", "a", "--capture", dir, "-o", "wide")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.errOut)
	}
	golden.Assert(t, "stat_required_wide.golden", []byte(res.out))

	res = execute(t, false, "stat", "deploy", "-n", "a", "--capture", dir, "-o", "json")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.errOut)
	}
	var rows []struct {
		Name           string
		Requests       float64
		TLS            float64
		Refused        float64
		RefusedReasons map[string]float64 `json:"refused_reasons"`
	}
	if err := json.Unmarshal([]byte(res.out), &rows); err != nil {
		t.Fatalf("%v: %s", err, res.out)
	}
	got := map[string]string{}
	for _, r := range rows {
		got[r.Name] = fmt.Sprintf("requests=%v tls=%v refused=%v reasons=%v", r.Requests, r.TLS, r.Refused, r.RefusedReasons)
	}
	want := map[string]string{
		"srv": "requests=50 tls=1 refused=25 reasons=map[no_tls_from_remote:25]",
		"old": "requests=10 tls=0 refused=0 reasons=map[]",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("json rows:\n got %v\nwant %v", got, want)
	}

	// Without refusals the wide table keeps its shape.
	res = execute(t, false, "stat", "deploy/old", "-n", "a", "--capture", dir, "-o", "wide")
	if res.code != 0 || strings.Contains(res.out, "REFUSED") {
		t.Errorf("no refusals, yet: %s %s", res.out, res.errOut)
	}
}
