package dashboard

import (
	"bytes"
	"fmt"
	"html/template"
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
	// PeerID is the identity the other end proved: the client's for an
	// inbound request, the server's for an outbound one.
	PeerID string
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
	if r.Encrypted {
		id := ev.TLS.ClientID
		if ev.Direction == tap.DirOutbound {
			id = ev.TLS.ServerID
		}
		r.PeerID = tap.Escape(id)
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
		s.errorPage(w, http.StatusNotFound, "No live list", s.cfg.TapNote)
		return
	}
	src, closer, err := s.cfg.Tap()
	if err != nil {
		s.cfg.ErrorLog.Printf("tap: %v", err)
		http.Error(w, "cannot open the tap source: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer func() { _ = closer.Close() }()
	out, ok := startSSE(w)
	if !ok {
		return
	}

	ns, name := r.PathValue("ns"), r.PathValue("name")
	q := tap.Query{Target: tap.Target{Kind: contract.KindDeployment, Namespace: ns, Name: name}, MaxRPS: s.cfg.TapMaxRPS}
	limit := rate.NewLimiter(rate.Limit(s.cfg.MaxEvents), max(1, int(s.cfg.MaxEvents)))
	// dropped counts what this page did not get: the source's drops and
	// the cap's; sourceDrops is the source's part carried by events.
	var dropped, reported, sourceDrops uint64
	send := out.send
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
		// Swapped into the page as markup: escape it.
		_ = send("failed", template.HTMLEscapeString("Tap failed: "+err.Error()))
		return
	}
	// The source's drops after its last event are known only at the end.
	_ = send("dropped", strconv.FormatUint(dropped+st.Dropped-sourceDrops, 10))
	_ = send("end", "The stream ended.")
}
