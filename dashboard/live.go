package dashboard

import (
	"bytes"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// sse writes server-sent events.
type sse struct {
	w       http.ResponseWriter
	flusher http.Flusher
	buf     bytes.Buffer
}

// startSSE sends the stream's headers; it fails only when the connection
// cannot stream.
func startSSE(w http.ResponseWriter) (*sse, bool) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return nil, false
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	return &sse{w: w, flusher: flusher}, true
}

// send writes one event. data is markup the server rendered (htmx swaps
// it in as it is), so callers escape anything that is not.
func (e *sse) send(event, data string) error {
	e.buf.Reset()
	e.buf.WriteString("event: " + event + "\n")
	// A data line cannot hold a newline; SSE joins several with one.
	for _, line := range strings.Split(data, "\n") {
		e.buf.WriteString("data: " + line + "\n")
	}
	e.buf.WriteString("\n")
	if _, err := e.w.Write(e.buf.Bytes()); err != nil {
		return err
	}
	e.flusher.Flush()
	return nil
}

// live streams a page's tables again every Refresh, each as the event
// its table body listens for (htmx's SSE extension swaps it in), then an
// "updated" event with the time, so the page says how fresh it is.
func (s *Server) live(build func(*http.Request) (view, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := build(r)
		if err != nil {
			s.failed(w, err)
			return
		}
		if v.status != http.StatusOK {
			s.render(w, v.status, v.name, v.page)
			return
		}
		out, ok := startSSE(w)
		if !ok {
			return
		}
		tick := time.NewTicker(s.cfg.Refresh)
		defer tick.Stop()
		var frag bytes.Buffer
		for {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
			v, err := build(r)
			if err != nil {
				s.cfg.ErrorLog.Printf("live: %v", err)
				if out.send("updated", template.HTMLEscapeString("Cannot refresh: "+err.Error())) != nil {
					return
				}
				continue
			}
			tmpl := s.pages[v.name]
			for _, t := range v.tables {
				frag.Reset()
				if err := tmpl.ExecuteTemplate(&frag, t.Template, t.Data); err != nil {
					s.cfg.ErrorLog.Printf("live: %v", err)
					return
				}
				if out.send(t.Event, strings.TrimSpace(frag.String())) != nil {
					return
				}
			}
			if out.send("updated", "Updated "+time.Now().UTC().Format("15:04:05")+" UTC.") != nil {
				return
			}
		}
	}
}
