package dashboard

import (
	"context"
	"errors"
	"html/template"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes"

	"meshtls/check"
)

// TestDashboardCheckPageShowsTheCheckEngine: the check page is check.Run
// on `check --tls`'s categories: every result the engine gives, in order,
// with its status as a mark and a word, its error and its hint. With an
// API server that cannot be reached the engine stops at the first check.
func TestDashboardCheckPageShowsTheCheckEngine(t *testing.T) {
	errAPI := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	cfg := check.Config{TLS: true, NewClient: func() (kubernetes.Interface, error) { return nil, errAPI }}
	ts := newTestServer(t, "emojivoto", Config{Check: &cfg})
	resp, page := get(t, ts.URL+"/check")
	if resp.StatusCode != 200 {
		t.Fatalf("check page: %s", resp.Status)
	}
	want := check.Run(context.Background(), check.Categories(cfg), check.Options{}, nil)
	if len(want.Results) == 0 {
		t.Fatal("the check engine gave no results")
	}
	for _, r := range want.Results {
		row := `data-status="` + string(r.Status) + `">`
		if !strings.Contains(page, row) || !strings.Contains(page, "<th scope=\"row\">"+template.HTMLEscapeString(r.Description)+"</th>") {
			t.Errorf("result %q (%s) is not on the page", r.Description, r.Status)
		}
		if r.Status == check.StatusError {
			if !strings.Contains(page, template.HTMLEscapeString(r.Error)) || r.Hint != "" && !strings.Contains(page, "hint: "+template.HTMLEscapeString(r.Hint)) {
				t.Errorf("failed result %q: error or hint missing", r.Description)
			}
			if !strings.Contains(page, `<span aria-hidden="true">✘</span> failed`) {
				t.Error("a failure is not marked with a sign and a word")
			}
		}
	}
	if strings.Count(page, "data-status=") != len(want.Results) {
		t.Errorf("%d results on the page, the engine gave %d", strings.Count(page, "data-status="), len(want.Results))
	}
	if want.Success || !strings.Contains(page, "some checks failed") {
		t.Error("the summary does not say the run failed")
	}

	// Offline there is no check to run; the page says what it needs.
	off := httptest.NewServer(mustNew(t, Config{Metrics: openBuiltinCapture(t, "emojivoto"), CheckNote: "Check needs a cluster: offline."}))
	defer off.Close()
	if _, page := get(t, off.URL+"/check"); !strings.Contains(page, `<p class="note" id="check-note">Check needs a cluster: offline.</p>`) {
		t.Errorf("offline check page:\n%s", page)
	}
}

func mustNew(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
