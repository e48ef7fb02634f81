// Command testsum reads `go test -json` and tells what happened: one line
// per package as it ends (with the output of whatever failed), then a
// summary of every test passed, failed and skipped, each skip with its
// reason, and the slowest packages and tests.
//
// In CI (CI=true, or -ci) a skip is a failure unless the skip allow-list
// names the test: in CI a skipped test is a capability nobody checked.
//
//	go test -json ./... | testsum -save out.json        # stream one run
//	testsum -summary -allow .ci/skip-allowlist a.json b.json  # summarise several
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Time       time.Time
	Action     string
	Package    string
	Test       string
	Elapsed    float64
	Output     string
	ImportPath string // build-output and build-fail events
}

type key struct{ pkg, test string }

// result is what one test or package did.
type result struct {
	action  string // pass, fail, skip
	elapsed float64
	output  []string
}

// run accumulates the events of one or more `go test -json` streams.
type run struct {
	tests    map[key]*result
	pkgs     map[string]*result
	running  map[key][]string // output of tests not ended yet
	pkgOut   map[string][]string
	buildOut map[string][]string
	order    []key
}

func newRun() *run {
	return &run{
		tests: map[key]*result{}, pkgs: map[string]*result{}, running: map[key][]string{},
		pkgOut: map[string][]string{}, buildOut: map[string][]string{},
	}
}

// add takes one event; it returns the package result when a package ends.
func (r *run) add(e event) (string, *result) {
	switch e.Action {
	case "build-output":
		// ImportPath is "pkg" or "pkg [pkg.test]".
		pkg, _, _ := strings.Cut(e.ImportPath, " ")
		r.buildOut[pkg] = append(r.buildOut[pkg], e.Output)
		return "", nil
	case "build-fail":
		return "", nil
	}
	if e.Package == "" {
		return "", nil
	}
	if e.Test == "" {
		switch e.Action {
		case "output":
			r.pkgOut[e.Package] = append(r.pkgOut[e.Package], e.Output)
		case "pass", "fail", "skip":
			res := &result{action: e.Action, elapsed: e.Elapsed, output: r.pkgOut[e.Package]}
			r.pkgs[e.Package] = res
			return e.Package, res
		}
		return "", nil
	}
	k := key{e.Package, e.Test}
	switch e.Action {
	case "output":
		r.running[k] = append(r.running[k], e.Output)
	case "pass", "fail", "skip":
		if _, seen := r.tests[k]; !seen {
			r.order = append(r.order, k)
		}
		r.tests[k] = &result{action: e.Action, elapsed: e.Elapsed, output: r.running[k]}
		delete(r.running, k)
	}
	return "", nil
}

// read feeds every event of in to r; save, when not nil, gets each line
// as read, and each package's end is reported to onPkg.
func (r *run) read(in io.Reader, save io.Writer, onPkg func(string, *result)) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if save != nil {
			_, _ = save.Write(append(line, '\n'))
		}
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not test2json: go test's own messages (a build that
			// failed before any test ran, say). Show them.
			fmt.Fprintln(os.Stdout, string(line))
			continue
		}
		if pkg, res := r.add(e); res != nil && onPkg != nil {
			onPkg(pkg, res)
		}
	}
	return sc.Err()
}

// skipReason is what a skipped test said, without the framework's lines.
func skipReason(out []string) string {
	var lines []string
	for _, l := range out {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		lines = append(lines, t)
	}
	if len(lines) == 0 {
		return "(no reason given)"
	}
	return strings.Join(lines, " / ")
}

// allowList is the set of tests that may skip in CI, from a file of
// `package TestName  # why` lines.
type allowList map[key]bool

func readAllowList(path string) (allowList, error) {
	a := allowList{}
	if path == "" {
		return a, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for i, l := range strings.Split(string(b), "\n") {
		if j := strings.Index(l, "#"); j >= 0 {
			l = l[:j]
		}
		f := strings.Fields(l)
		switch len(f) {
		case 0:
			continue
		case 2:
			a[key{f[0], f[1]}] = true
		default:
			return nil, fmt.Errorf("%s:%d: want `package TestName  # why`, got %q", path, i+1, strings.TrimSpace(l))
		}
	}
	return a, nil
}

func (a allowList) allows(k key) bool {
	// A subtest is allowed when its top-level test is.
	top, _, _ := strings.Cut(k.test, "/")
	return a[k] || a[key{k.pkg, top}]
}

func printPkg(w io.Writer, r *run, pkg string, res *result) {
	switch res.action {
	case "pass":
		fmt.Fprintf(w, "ok    %-44s %6.1fs\n", pkg, res.elapsed)
	case "skip":
		fmt.Fprintf(w, "-     %-44s (no tests)\n", pkg)
	default:
		fmt.Fprintf(w, "FAIL  %-44s %6.1fs\n", pkg, res.elapsed)
		failedAny := false
		for _, k := range r.order {
			if k.pkg != pkg || r.tests[k].action != "fail" {
				continue
			}
			failedAny = true
			fmt.Fprintf(w, "  --- FAIL %s (%.1fs)\n", k.test, r.tests[k].elapsed)
			for _, l := range r.tests[k].output {
				if t := strings.TrimSpace(l); !strings.HasPrefix(t, "=== ") && !strings.HasPrefix(t, "--- FAIL") {
					fmt.Fprint(w, "      "+l)
				}
			}
		}
		// Tests that never ended: a panic or the timeout killed the binary.
		for k, out := range r.running {
			if k.pkg == pkg {
				failedAny = true
				fmt.Fprintf(w, "  --- %s did not finish\n", k.test)
				for _, l := range out {
					fmt.Fprint(w, "      "+l)
				}
			}
		}
		if !failedAny {
			for _, l := range append(r.buildOut[pkg], res.output...) {
				fmt.Fprint(w, "      "+l)
			}
		}
	}
}

// summarize prints the totals, every skip, and the slowest; it returns an
// error when something failed or, in CI, skipped without leave.
func summarize(w io.Writer, r *run, allow allowList, ci bool, slowest int) error {
	var passed, failed, skipped int
	var skips, failures, badSkips []key
	for _, k := range r.order {
		switch r.tests[k].action {
		case "pass":
			passed++
		case "fail":
			failed++
			failures = append(failures, k)
		case "skip":
			skipped++
			skips = append(skips, k)
			if ci && !allow.allows(k) {
				badSkips = append(badSkips, k)
			}
		}
	}
	var failedPkgs []string
	for p, res := range r.pkgs {
		if res.action == "fail" {
			failedPkgs = append(failedPkgs, p)
		}
	}
	for k := range r.running {
		failures = append(failures, k)
	}
	sort.Strings(failedPkgs)

	fmt.Fprintf(w, "\n==> tests: %d passed, %d failed, %d skipped, in %d packages\n", passed, failed, skipped, len(r.pkgs))
	if len(skips) > 0 {
		fmt.Fprintln(w, "skipped:")
		for _, k := range skips {
			mark := ""
			if allow.allows(k) {
				mark = " [allowed]"
			}
			fmt.Fprintf(w, "  %s %s%s: %s\n", k.pkg, k.test, mark, skipReason(r.tests[k].output))
		}
	}
	type timed struct {
		name    string
		elapsed float64
	}
	var pk, ts []timed
	for p, res := range r.pkgs {
		if res.action != "skip" {
			pk = append(pk, timed{p, res.elapsed})
		}
	}
	for _, k := range r.order {
		if !strings.Contains(k.test, "/") {
			ts = append(ts, timed{k.pkg + " " + k.test, r.tests[k].elapsed})
		}
	}
	for _, list := range []struct {
		title string
		items []timed
	}{{"slowest packages", pk}, {"slowest tests", ts}} {
		sort.Slice(list.items, func(i, j int) bool { return list.items[i].elapsed > list.items[j].elapsed })
		if len(list.items) > slowest {
			list.items = list.items[:slowest]
		}
		if len(list.items) == 0 {
			continue
		}
		fmt.Fprintln(w, list.title+":")
		for _, it := range list.items {
			fmt.Fprintf(w, "  %7.1fs  %s\n", it.elapsed, it.name)
		}
	}
	var errs []string
	if len(failures) > 0 || len(failedPkgs) > 0 {
		fmt.Fprintln(w, "failed:")
		for _, k := range failures {
			fmt.Fprintf(w, "  %s %s\n", k.pkg, k.test)
		}
		for _, p := range failedPkgs {
			fmt.Fprintf(w, "  %s (package)\n", p)
		}
		errs = append(errs, fmt.Sprintf("%d tests and %d packages failed", len(failures), len(failedPkgs)))
	}
	if len(badSkips) > 0 {
		fmt.Fprintln(w, "skipped in CI without leave (a skip in CI is a capability nobody checked: fix the test, or add it to the allow-list with the reason):")
		for _, k := range badSkips {
			fmt.Fprintf(w, "  %s %s\n", k.pkg, k.test)
		}
		errs = append(errs, fmt.Sprintf("%d tests skipped in CI without being on the allow-list", len(badSkips)))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// totals prints one line of counts, and fails when anything failed.
func totals(w io.Writer, r *run) error {
	n := map[string]int{}
	for _, res := range r.tests {
		n[res.action]++
	}
	failedPkgs := 0
	for _, res := range r.pkgs {
		if res.action == "fail" {
			failedPkgs++
		}
	}
	fmt.Fprintf(w, "==> %d passed, %d failed, %d skipped\n", n["pass"], n["fail"], n["skip"])
	if n["fail"] > 0 || failedPkgs > 0 || len(r.running) > 0 {
		return fmt.Errorf("%d tests and %d packages failed", n["fail"]+len(r.running), failedPkgs)
	}
	return nil
}

func main() {
	summary := flag.Bool("summary", false, "summarise saved `go test -json` files (the arguments) instead of reading standard input")
	save := flag.String("save", "", "also write the JSON read from standard input to this `file`")
	allowPath := flag.String("allow", "", "skip allow-list `file`: lines of `package TestName  # why`")
	ci := flag.Bool("ci", os.Getenv("CI") == "true", "fail on a skip outside the allow-list (default: $CI is true)")
	slowest := flag.Int("slowest", 10, "how many of the slowest packages and tests to list")
	brief := flag.Bool("brief", false, "with standard input: print the package lines and the totals only (a later -summary lists the rest)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: go test -json ./... | testsum [-save FILE] [-allow FILE]\n       testsum -summary [-allow FILE] FILE.json...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := mainErr(*summary, *brief, *save, *allowPath, *ci, *slowest); err != nil {
		fmt.Fprintln(os.Stderr, "testsum:", err)
		os.Exit(1)
	}
}

func mainErr(summary, brief bool, save, allowPath string, ci bool, slowest int) error {
	allow, err := readAllowList(allowPath)
	if err != nil {
		return err
	}
	r := newRun()
	if !summary {
		var w io.Writer
		if save != "" {
			f, err := os.Create(save)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		if err := r.read(os.Stdin, w, func(p string, res *result) { printPkg(os.Stdout, r, p, res) }); err != nil {
			return err
		}
		if flag.NArg() > 0 {
			return errors.New("files are read only with -summary")
		}
		if brief {
			return totals(os.Stdout, r)
		}
	} else {
		if flag.NArg() == 0 {
			return errors.New("-summary needs the saved JSON files as arguments")
		}
		for _, path := range flag.Args() {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			err = r.read(f, nil, nil)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	return summarize(os.Stdout, r, allow, ci, slowest)
}
