package dashboard

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// readEvents reads the first n events of a stream that does not end.
func readEvents(t *testing.T, url string, n int) []sseEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s: %s %s", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	var evs []sseEvent
	var cur sseEvent
	var data []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for len(evs) < n && sc.Scan() {
		switch line := sc.Text(); {
		case line == "":
			cur.data = strings.Join(data, "\n")
			evs = append(evs, cur)
			cur, data = sseEvent{}, nil
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
	if len(evs) < n {
		t.Fatalf("%s: %d events before the stream ended, want %d (%v)", url, len(evs), n, sc.Err())
	}
	return evs
}

// TestDashboardLiveTables: a page's live stream sends its tables again,
// each as the event its table body swaps in, with the same rows the page
// has; an unknown namespace has no stream.
func TestDashboardLiveTables(t *testing.T) {
	ts := newTestServer(t, "mixed", Config{Refresh: 20 * time.Millisecond})
	_, page := get(t, ts.URL+"/ns/mixed")
	if !strings.Contains(page, `<main hx-ext="sse" sse-connect="/ns/mixed/live">`) || !strings.Contains(page, `<tbody sse-swap="deployments">`) {
		t.Fatal("the namespace page does not connect its tables to its live stream")
	}
	evs := readEvents(t, ts.URL+"/ns/mixed/live", 6)
	names := []string{}
	for _, e := range evs {
		names = append(names, e.name)
	}
	if strings.Join(names, ",") != "deployments,authorities,updated,deployments,authorities,updated" {
		t.Fatalf("events %v", names)
	}
	for _, id := range []string{"deployments", "authorities"} {
		body := tableSection(page, id)
		body = body[strings.Index(body, "<tbody"):]
		body = strings.TrimSpace(body[strings.Index(body, ">")+1 : strings.Index(body, "</tbody>")])
		for _, e := range evs {
			if e.name == id && e.data != body {
				t.Errorf("%s: the live rows differ from the page's:\n%s\n---\n%s", id, e.data, body)
			}
		}
	}
	if !strings.HasPrefix(evs[2].data, "Updated ") {
		t.Errorf("updated event %q", evs[2].data)
	}
	resp, _ := get(t, ts.URL+"/ns/nosuch/live")
	if resp.StatusCode != 404 {
		t.Errorf("live stream of an unknown namespace: %s", resp.Status)
	}
}
