package dashboard

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"meshtls/check"
)

// checkTimeout bounds one check run started by the page.
const checkTimeout = 2 * time.Minute

// checkKeep is how long a run's results answer the page again: reloading
// should not dial every proxy anew.
const checkKeep = 10 * time.Second

type checkRun struct {
	at      time.Time
	summary check.Summary
}

type checkData struct {
	Note    string
	Ran     string
	Results []checkResultView
	Summary string
	Success bool
}

type checkResultView struct {
	check.Result
	Mark, Word, Class string
	NewCategory       bool
}

// checkPage runs `linkerd check --tls` with the check engine and shows
// every result with its hint, as the CLI prints them.
func (s *Server) checkPage(w http.ResponseWriter, r *http.Request) {
	p := page{Title: "Check", Crumbs: []crumb{{"Namespaces", "/"}}}
	if s.cfg.Check == nil {
		p.Data = checkData{Note: s.cfg.CheckNote}
		s.render(w, http.StatusOK, "check", p)
		return
	}
	run := s.runCheck(r.Context())
	d := checkData{Ran: run.at.UTC().Format("15:04:05") + " UTC", Success: run.summary.Success}
	category := ""
	for _, res := range run.summary.Results {
		v := checkResultView{Result: res, NewCategory: res.Category != category}
		category = res.Category
		switch res.Status {
		case check.StatusOK:
			v.Mark, v.Word, v.Class = "✔", "passed", "ok"
		case check.StatusWarning:
			v.Mark, v.Word, v.Class = "‼", "warning", "warning"
		case check.StatusSkipped:
			v.Mark, v.Word, v.Class = "–", "skipped", "skipped"
		default:
			v.Mark, v.Word, v.Class = "✘", "failed", "error"
		}
		d.Results = append(d.Results, v)
	}
	counts := run.summary.Counts()
	d.Summary = checkSummary(counts, run.summary.Stopped)
	p.Data = d
	s.render(w, http.StatusOK, "check", p)
}

func checkSummary(counts map[check.Status]int, stopped bool) string {
	out := ""
	for _, c := range []struct {
		s    check.Status
		name string
	}{{check.StatusOK, "passed"}, {check.StatusWarning, "warning"}, {check.StatusError, "failed"}, {check.StatusSkipped, "skipped"}} {
		if n := counts[c.s]; n > 0 {
			if out != "" {
				out += ", "
			}
			out += strconv.Itoa(n) + " " + c.name
		}
	}
	if stopped {
		out += "; stopped early: later checks depend on the failed one"
	}
	return out
}

func (s *Server) runCheck(ctx context.Context) *checkRun {
	s.checkMu.Lock()
	defer s.checkMu.Unlock()
	if s.lastCheck != nil && time.Since(s.lastCheck.at) < checkKeep {
		return s.lastCheck
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	cfg := *s.cfg.Check
	cfg.TLS = true
	sum := check.Run(ctx, check.Categories(cfg), check.Options{}, nil)
	s.lastCheck = &checkRun{at: time.Now(), summary: sum}
	return s.lastCheck
}
