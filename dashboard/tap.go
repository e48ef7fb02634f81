package dashboard

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"meshtls/contract"
	"meshtls/tap"
)

// tapRow is one tap event as a row of the live list.
type tapRow struct {
	Time                    string
	Kind                    string
	Direction               string
	Src, Dst                string
	Method, Authority, Path string
	Status                  string
	Latency                 string
	Encrypted               bool
	Reason                  string
}

func newTapRow(ev *tap.Event) tapRow {
	r := tapRow{
		Time: ev.Time.UTC().Format("15:04:05.000"), Kind: ev.Kind.String(), Direction: ev.Direction.String(),
		// Escape makes control characters visible; html/template then
		// escapes what is left for HTML.
		Src: tap.Escape(ev.Src.Name()), Dst: tap.Escape(ev.Dst.Name()),
		Method: tap.Escape(ev.Method), Authority: tap.Escape(ev.Authority), Path: tap.Escape(ev.Path),
		Encrypted: ev.TLS.Encrypted(), Reason: tap.Escape(ev.TLS.Reason()),
	}
	if ev.Status != 0 {
		r.Status = strconv.FormatUint(uint64(ev.Status), 10)
	}
	if ev.HasGRPCStatus {
		r.Status += fmt.Sprintf(" grpc=%d", ev.GRPCStatus)
	}
	if ev.Kind != tap.KindRequest && ev.Latency > 0 {
		r.Latency = ev.Latency.Round(time.Microsecond).String()
	}
	return r
}

// tapEvents streams the deployment's tap events as server-sent events:
// each "tap" event's data is a table row rendered by html/template, so
// the page inserts markup the server escaped and never builds it from
// wire data. At most MaxEvents per second go to one page; a "dropped"
// event says how many were left out so far, and "end" closes the stream.
func (s *Server) tapEvents(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Tap == nil {
		s.errorPage(w, http.StatusNotFound, "No live list", "The dashboard was started without a tap source (--replay).")
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	src, closer, err := s.cfg.Tap()
	if err != nil {
		s.cfg.ErrorLog.Printf("tap: %v", err)
		http.Error(w, "cannot open the tap source: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer func() { _ = closer.Close() }()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()

	ns, name := r.PathValue("ns"), r.PathValue("name")
	q := tap.Query{Target: tap.Target{Kind: contract.KindDeployment, Namespace: ns, Name: name}}
	limit := rate.NewLimiter(rate.Limit(s.cfg.MaxEvents), max(1, int(s.cfg.MaxEvents)))
	// dropped counts what this page did not get: the source's drops and
	// the cap's; sourceDrops is the source's part carried by events.
	var dropped, reported, sourceDrops uint64
	var buf bytes.Buffer
	send := func(event, data string) error {
		buf.Reset()
		buf.WriteString("event: " + event + "\n")
		// A data line cannot hold a newline; SSE joins several with one.
		for _, line := range strings.Split(data, "\n") {
			buf.WriteString("data: " + line + "\n")
		}
		buf.WriteString("\n")
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	var row bytes.Buffer
	emit := func(ev *tap.Event) error {
		dropped += ev.DroppedBefore
		sourceDrops += ev.DroppedBefore
		if !limit.Allow() {
			dropped++
			return nil
		}
		if dropped != reported {
			if err := send("dropped", strconv.FormatUint(dropped, 10)); err != nil {
				return err
			}
			reported = dropped
		}
		row.Reset()
		if err := s.row.Execute(&row, newTapRow(ev)); err != nil {
			return err
		}
		return send("tap", strings.TrimSpace(row.String()))
	}
	st, err := tap.Run(r.Context(), tap.RunConfig{Source: src, Query: q, Emit: emit})
	if r.Context().Err() != nil {
		return
	}
	if err != nil {
		s.cfg.ErrorLog.Printf("tap: %v", err)
		_ = send("failed", err.Error())
		return
	}
	// The source's drops after its last event are known only at the end.
	_ = send("dropped", strconv.FormatUint(dropped+st.Dropped-sourceDrops, 10))
	_ = send("end", "the recording ended")
}
