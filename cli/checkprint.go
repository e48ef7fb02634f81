package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"meshtls/check"
	"meshtls/tap"
)

// checkPrinter renders a check run: Observe gets every attempt as it
// happens, Finish the summary.
type checkPrinter interface {
	Observe(check.Result)
	Finish(check.Summary) error
}

const (
	glyphOK      = "√"
	glyphError   = "×"
	glyphWarning = "‼"
	glyphSkipped = "-"
	// maxListedProblems is how many failing objects are listed one per
	// line; beyond that one line gives the count and the first few names.
	maxListedProblems = 5
	namesShown        = 3
)

type checkTextPrinter struct {
	out      io.Writer
	color    bool
	spin     bool
	category string

	mu      sync.Mutex
	spinner *spinner
}

func newCheckTextPrinter(ios *IOStreams) *checkTextPrinter {
	return &checkTextPrinter{out: ios.Out, color: ios.ColorEnabled(), spin: ios.IsStdoutTTY()}
}

func (p *checkTextPrinter) paint(code, s string) string {
	if !p.color {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (p *checkTextPrinter) Observe(r check.Result) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.Category != p.category {
		p.stopSpinner()
		if p.category != "" {
			fmt.Fprintln(p.out)
		}
		fmt.Fprintln(p.out, r.Category)
		fmt.Fprintln(p.out, strings.Repeat("-", len(r.Category)))
		p.category = r.Category
	}
	if r.Retrying {
		// Only a terminal gets the spinner; a pipe sees final lines only.
		if p.spin {
			p.startSpinner(r.Description + " (waiting: " + clusterText(r.Error) + ")")
		}
		return
	}
	p.stopSpinner()
	p.printResult(r)
}

func (p *checkTextPrinter) printResult(r check.Result) {
	var glyph string
	switch r.Status {
	case check.StatusOK:
		glyph = p.paint("32", glyphOK)
	case check.StatusWarning:
		glyph = p.paint("33", glyphWarning)
	case check.StatusSkipped:
		glyph = p.paint("2", glyphSkipped)
	default:
		glyph = p.paint("31", glyphError)
	}
	line := glyph + " " + r.Description
	if r.Status == check.StatusSkipped {
		line += p.paint("2", " (skipped: "+clusterText(r.Error)+")")
	}
	fmt.Fprintln(p.out, line)
	if r.Status == check.StatusError || r.Status == check.StatusWarning {
		fmt.Fprintln(p.out, "    "+clusterText(r.Error))
		for _, l := range problemLines(r.Problems) {
			fmt.Fprintln(p.out, "    "+l)
		}
		if r.Hint != "" {
			fmt.Fprintln(p.out, "    "+p.paint("36", "hint: ")+r.Hint)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintln(p.out, "    "+p.paint("2", "note: "+clusterText(n)))
	}
}

// clusterText makes an error, reason or note safe for a terminal: they
// quote names, certificate subjects and SANs that whoever can write a
// Secret, a ConfigMap or a pod chose, so their control characters are
// printed as escapes (as tap prints what comes off the wire).
func clusterText(s string) string { return tap.Escape(oneLine(s)) }

// problemLines names each failing object with its remedy, or, when there
// are many, one line with the count and the first few names, then the
// first one's reason and remedy as an example.
func problemLines(probs []check.Problem) []string {
	if len(probs) <= maxListedProblems {
		var out []string
		for _, pr := range probs {
			out = append(out, "* "+tap.Escape(pr.Object())+": "+clusterText(pr.Reason))
			if pr.Remedy != "" {
				out = append(out, "  remedy: "+clusterText(pr.Remedy))
			}
		}
		return out
	}
	names := make([]string, 0, namesShown)
	for _, pr := range probs[:namesShown] {
		names = append(names, tap.Escape(pr.Object()))
	}
	first := probs[0]
	out := []string{fmt.Sprintf("* %d objects: %s, +%d more (-o json lists all)", len(probs), strings.Join(names, ", "), len(probs)-namesShown),
		"  first: " + tap.Escape(first.Object()) + ": " + clusterText(first.Reason)}
	if first.Remedy != "" {
		out = append(out, "  remedy: "+clusterText(first.Remedy))
	}
	return out
}

func (p *checkTextPrinter) Finish(sum check.Summary) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopSpinner()
	counts := sum.Counts()
	glyph := p.paint("32", glyphOK)
	if !sum.Success {
		glyph = p.paint("31", glyphError)
	} else if counts[check.StatusWarning] > 0 {
		glyph = p.paint("33", glyphWarning)
	}
	var parts []string
	for _, c := range []struct {
		s    check.Status
		name string
	}{{check.StatusOK, "passed"}, {check.StatusWarning, "warning"}, {check.StatusError, "failed"}, {check.StatusSkipped, "skipped"}} {
		if n := counts[c.s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, c.name))
		}
	}
	fmt.Fprintln(p.out)
	line := fmt.Sprintf("Status check results are %s (%s)", glyph, strings.Join(parts, ", "))
	if sum.Stopped {
		line += "; stopped early: later checks depend on the failed one"
	}
	fmt.Fprintln(p.out, line)
	return nil
}

func (p *checkTextPrinter) startSpinner(text string) {
	if p.spinner != nil {
		p.spinner.set(text)
		return
	}
	p.spinner = newSpinner(p.out, text)
}

func (p *checkTextPrinter) stopSpinner() {
	if p.spinner != nil {
		p.spinner.stop()
		p.spinner = nil
	}
}

// spinner redraws one line on a terminal until stopped, then erases it.
type spinner struct {
	out  io.Writer
	mu   sync.Mutex
	text string
	// stopped is a context rather than a channel: the cli package has its
	// own close().
	stopped context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

func newSpinner(out io.Writer, text string) *spinner {
	s := &spinner{out: out, text: text}
	s.stopped, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			s.mu.Lock()
			fmt.Fprintf(s.out, "\r\x1b[K%s %s", spinnerFrames[i%len(spinnerFrames)], s.text)
			s.mu.Unlock()
			select {
			case <-s.stopped.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *spinner) set(text string) {
	s.mu.Lock()
	s.text = text
	s.mu.Unlock()
}

func (s *spinner) stop() {
	s.cancel()
	s.wg.Wait()
	fmt.Fprint(s.out, "\r\x1b[K")
}

// checkJSONPrinter collects final results and prints one document: the
// same categories, checks, errors, hints, problems and notes as the text.
type checkJSONPrinter struct {
	w       io.Writer
	results []check.Result
}

type checkJSON struct {
	Success    bool           `json:"success"`
	Stopped    bool           `json:"stopped,omitempty"`
	Categories []categoryJSON `json:"categories"`
}

type categoryJSON struct {
	Name   string         `json:"name"`
	Checks []check.Result `json:"checks"`
}

func (p *checkJSONPrinter) Observe(r check.Result) {
	if !r.Retrying {
		p.results = append(p.results, r)
	}
}

func (p *checkJSONPrinter) Finish(sum check.Summary) error {
	doc := checkJSON{Success: sum.Success, Stopped: sum.Stopped, Categories: []categoryJSON{}}
	for _, r := range p.results {
		if n := len(doc.Categories); n == 0 || doc.Categories[n-1].Name != r.Category {
			doc.Categories = append(doc.Categories, categoryJSON{Name: r.Category})
		}
		last := &doc.Categories[len(doc.Categories)-1]
		last.Checks = append(last.Checks, r)
	}
	enc := json.NewEncoder(p.w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
