// Package check is the engine behind `linkerd check`: categories of
// checkers, each an error or a warning when it fails, with a hint, an
// optional retry deadline, and every result sent to an observer.
//
// It never prints and knows nothing of cobra or exit codes; cli renders
// the results. Unlike Linkerd's pkg/healthcheck, checks share no mutable
// state: each checker is a closure over what it needs (a client getter, a
// snapshot loader), so any checker can run alone and none depends on an
// earlier one having filled in a field.
package check

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Status is the outcome of one checker.
type Status string

// Statuses, as they appear in JSON.
const (
	StatusOK      Status = "ok"
	StatusWarning Status = "warning"
	StatusError   Status = "error"
	// StatusSkipped marks a checker that could not run because what it
	// verifies against is missing (for example no usable root); the failure
	// that caused it is reported by its own checker.
	StatusSkipped Status = "skipped"
)

// Checker is one line of output.
type Checker struct {
	Description string
	// Hint tells the user what to do when the check fails; a Problem may
	// carry a more specific remedy per object.
	Hint string
	// Warning makes a failure a warning: reported, but the run still
	// succeeds.
	Warning bool
	// Fatal stops the run after this checker fails: what follows would only
	// repeat its failure (no client, no API, no control plane).
	Fatal bool
	// Retry re-runs a failing checker until Options.Wait has passed, for
	// things that become true on their own (a Deployment rolling out).
	Retry bool
	// Run does the check. A nil error passes; see Warn, Skip and Problems
	// for richer outcomes.
	Run func(ctx context.Context) error
}

// Category groups checkers under one heading.
type Category struct {
	Name     string
	Checkers []Checker
}

// Result is what the observer receives for each attempt of each checker.
type Result struct {
	Category    string    `json:"category"`
	Description string    `json:"description"`
	Status      Status    `json:"status"`
	Error       string    `json:"error,omitempty"`
	Hint        string    `json:"hint,omitempty"`
	Problems    []Problem `json:"problems,omitempty"`
	Notes       []string  `json:"notes,omitempty"`
	// Retrying is true for a failed attempt that will be retried; the
	// final attempt of every checker has it false.
	Retrying bool `json:"-"`
}

// Problem is one object that fails a check, named, with its own remedy.
type Problem struct {
	// Kind, Name and Namespace identify the object, e.g. "deploy", "web"
	// and "emojivoto"; a namespace itself has Kind "ns".
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Reason    string `json:"reason"`
	Remedy    string `json:"remedy,omitempty"`
}

// Object is how a problem is named in text, as kubectl spells it:
// deploy/web -n emojivoto.
func (p Problem) Object() string {
	s := p.Name
	if p.Kind != "" {
		s = p.Kind + "/" + p.Name
	}
	if p.Namespace != "" {
		s += " -n " + p.Namespace
	}
	return s
}

// Observer receives results as they happen.
type Observer func(Result)

// Options tune Run.
type Options struct {
	// Wait is how long Retry checkers are retried before their failure
	// counts; zero checks once.
	Wait time.Duration
	// RetryInterval is the pause between attempts (default 1s).
	RetryInterval time.Duration
}

// Summary is the outcome of a whole run.
type Summary struct {
	// Success is false when any non-warning checker failed.
	Success bool     `json:"success"`
	Results []Result `json:"-"`
	// Stopped is true when a fatal failure ended the run early.
	Stopped bool `json:"stopped,omitempty"`
}

// Counts returns how many final results have each status.
func (s Summary) Counts() map[Status]int {
	out := map[Status]int{}
	for _, r := range s.Results {
		out[r.Status]++
	}
	return out
}

// Run runs the categories in order and reports every attempt to observe.
// Checkers run one at a time so output appears in order; the expensive
// work inside a checker (hundreds of Secrets) is parallel.
func Run(ctx context.Context, categories []Category, opts Options, observe Observer) Summary {
	if observe == nil {
		observe = func(Result) {}
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = time.Second
	}
	deadline := time.Now().Add(opts.Wait)
	sum := Summary{Success: true}
	for _, cat := range categories {
		for _, c := range cat.Checkers {
			res := runOne(ctx, cat.Name, c, deadline, opts.RetryInterval, observe)
			sum.Results = append(sum.Results, res)
			if res.Status == StatusError {
				sum.Success = false
				if c.Fatal {
					sum.Stopped = true
					return sum
				}
			}
			if ctx.Err() != nil {
				sum.Success = false
				sum.Stopped = true
				return sum
			}
		}
	}
	return sum
}

func runOne(ctx context.Context, category string, c Checker, deadline time.Time, interval time.Duration, observe Observer) Result {
	for attempt := 0; ; attempt++ {
		actx := withAttempt(ctx, attempt, time.Now())
		res := evaluate(actx, category, c)
		retry := c.Retry && res.Status != StatusOK && res.Status != StatusSkipped &&
			time.Now().Add(interval).Before(deadline) && ctx.Err() == nil
		if !retry {
			observe(res)
			return res
		}
		res.Retrying = true
		observe(res)
		select {
		case <-ctx.Done():
			res.Retrying = false
			res.Status = StatusError
			res.Error = fmt.Sprintf("%s (interrupted while waiting: %v)", res.Error, ctx.Err())
			observe(res)
			return res
		case <-time.After(interval):
		}
	}
}

// evaluate runs the checker once and turns its error into a result; a
// panicking checker is a failed check, not a crashed CLI.
func evaluate(ctx context.Context, category string, c Checker) (res Result) {
	res = Result{Category: category, Description: c.Description, Status: StatusOK}
	defer func() {
		if p := recover(); p != nil {
			res.Status, res.Error, res.Hint = StatusError, fmt.Sprintf("check panicked: %v", p), c.Hint
		}
	}()
	err := c.Run(ctx)
	var notes *notedError
	if errors.As(err, &notes) {
		res.Notes = notes.notes
		err = notes.err
	}
	if err == nil {
		return res
	}
	var skip *skipError
	if errors.As(err, &skip) {
		res.Status, res.Error = StatusSkipped, skip.reason
		return res
	}
	res.Status = StatusError
	if c.Warning {
		res.Status = StatusWarning
	}
	var warn *warnError
	if errors.As(err, &warn) {
		res.Status = StatusWarning
	}
	var probs *ProblemsError
	if errors.As(err, &probs) {
		res.Problems = probs.Problems
	}
	res.Error = err.Error()
	res.Hint = c.Hint
	return res
}

// Warn marks err as a warning even from a checker whose failures are
// errors, e.g. a certificate inside the warn window but not the fail one.
func Warn(err error) error {
	if err == nil {
		return nil
	}
	return &warnError{err}
}

type warnError struct{ err error }

func (e *warnError) Error() string { return e.err.Error() }
func (e *warnError) Unwrap() error { return e.err }

// Skip says the check could not run, and why.
func Skip(format string, args ...any) error {
	return &skipError{reason: fmt.Sprintf(format, args...)}
}

type skipError struct{ reason string }

func (e *skipError) Error() string { return "skipped: " + e.reason }

// WithNotes attaches notes to an outcome (nil for a pass), for what a
// passing check did not cover, such as pods whose proxy is not serving.
func WithNotes(err error, notes ...string) error {
	if len(notes) == 0 {
		return err
	}
	return &notedError{err: err, notes: notes}
}

type notedError struct {
	err   error
	notes []string
}

func (e *notedError) Error() string {
	if e.err == nil {
		return "ok"
	}
	return e.err.Error()
}
func (e *notedError) Unwrap() error { return e.err }

// ProblemsError is a failure of several objects. Its message summarises
// them; Problems names each with its remedy.
type ProblemsError struct {
	Summary  string
	Problems []Problem
}

func (e *ProblemsError) Error() string { return e.Summary }

// Problems returns nil for no problems, else a ProblemsError whose summary
// is format with the count, e.g. "owners without a Secret: %d".
func Problems(probs []Problem, format string) error {
	if len(probs) == 0 {
		return nil
	}
	return &ProblemsError{Summary: fmt.Sprintf(format, len(probs)), Problems: probs}
}

type attemptKey struct{}

type attempt struct {
	n     int
	start time.Time
}

func withAttempt(ctx context.Context, n int, start time.Time) context.Context {
	return context.WithValue(ctx, attemptKey{}, attempt{n: n, start: start})
}
