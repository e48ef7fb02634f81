// Package scripts holds the tests of the scripts next to them: that
// tools.txt names every tool the demo, the tests and the benchmarks run,
// that deps.sh installs from it, and demo.sh's reading of stat's output.
package scripts_test

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"mvdan.cc/sh/v3/syntax"
)

// commands are the make commands scripts/deps.sh installs for.
var commands = []string{"demo", "test", "bench", "generate"}

// row is one line of tools.txt.
type row struct {
	line     int
	commands []string // nil for "-": used when present, installed by nothing
	alts     []string // the executable or file, or its alternatives
	pkg, why string
}

func readTools(t *testing.T, path string) []row {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []row
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) < 4 {
			t.Errorf("tools.txt:%d: want commands, executable, package and why; got %q", n, text)
			continue
		}
		r := row{line: n, alts: strings.Split(fields[1], "|"), pkg: fields[2], why: strings.Join(fields[3:], " ")}
		if fields[0] != "-" {
			r.commands = strings.Split(fields[0], ",")
			for _, c := range r.commands {
				if !slices.Contains(commands, c) {
					t.Errorf("tools.txt:%d: unknown command %q (want %s or -)", n, c, strings.Join(commands, ", "))
				}
			}
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// dryRun runs `scripts/deps.sh cmd` with a PATH that holds only the Go
// toolchain, a dry-run apt-get (and sudo, for a non-root run) and files
// looked up under an empty dir, so every listed tool is missing. It
// returns the packages apt-get was asked to install, after checking how it
// was asked and the one line deps.sh printed.
func dryRun(t *testing.T, root, bash, goBin, cmd string) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	pathDir := filepath.Join(dir, "path")
	if err := os.Mkdir(pathDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(goBin, filepath.Join(pathDir, "go")); err != nil {
		t.Fatal(err)
	}
	// Builtins only: nothing else is on PATH.
	aptGet := fmt.Sprintf("#!%s\nprintf '%%s\\n' \"DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*\" >>%q\n", bash, calls)
	sudo := fmt.Sprintf("#!%s\nwhile [[ $1 == *=* ]]; do export \"$1\"; shift; done\nexec \"$@\"\n", bash)
	for name, text := range map[string]string{"apt-get": aptGet, "sudo": sudo} {
		if err := os.WriteFile(filepath.Join(pathDir, name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := exec.Command(bash, filepath.Join(root, "scripts", "deps.sh"), cmd)
	c.Env = []string{"PATH=" + pathDir, "DEPS_SYSROOT=" + filepath.Join(dir, "empty")}
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/deps.sh %s with an empty PATH: %v\n%s", cmd, err, out)
	}
	b, err := os.ReadFile(calls)
	if err != nil {
		t.Fatalf("scripts/deps.sh %s never ran apt-get (%v); it printed:\n%s", cmd, err, out)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	const update = "DEBIAN_FRONTEND=noninteractive -qq update"
	const install = "DEBIAN_FRONTEND=noninteractive -y -qq --no-install-recommends install "
	if len(lines) != 2 || lines[0] != update || !strings.HasPrefix(lines[1], install) {
		t.Fatalf("scripts/deps.sh %s ran apt-get as\n%s\nwant %q, then %q and the packages", cmd, b, update, install)
	}
	pkgs := map[string]bool{}
	for _, p := range strings.Fields(strings.TrimPrefix(lines[1], install)) {
		pkgs[p] = true
	}
	said := strings.TrimSuffix(string(out), "\n")
	if strings.Contains(said, "\n") || !strings.HasPrefix(said, "make "+cmd+": installing from Debian: ") {
		t.Errorf("scripts/deps.sh %s printed %q, want one line \"make %s: installing from Debian: …\"", cmd, out, cmd)
	}
	for p := range pkgs {
		if !strings.Contains(said, p+" (") {
			t.Errorf("scripts/deps.sh %s installs %s without saying why: %q", cmd, p, said)
		}
	}
	return pkgs
}

// use is one place that runs an external tool, and the make commands that
// reach it.
type use struct {
	tool  string
	where string
	need  []string // nil: production code, which the demo and the tests run
}

// TestToolsListIsComplete checks that scripts/tools.txt names every tool
// the repository runs, with its Debian package, for each command that runs
// it, and that scripts/deps.sh, with nothing installed, asks apt-get for
// all of them. The tools found are string literals: the first argument of
// exec.Command, exec.CommandContext and exec.LookPath in every Go file of
// every module (and a range variable over a literal list), the command
// that `ip netns exec`, `setpriv`, `unshare` or `sh -c` run, and every
// command scripts/demo.sh runs. Exempt by rule: what make builds into bin/
// (a $(BIN)/NAME target of the Makefiles, or a cmd/NAME package that
// `make build` builds) and the Go toolchain ($GOROOT/bin).
//
// Where a file runs a tool decides which commands need it: scripts/demo.sh
// the demo; a _test.go file or a test helper package (a directory named
// *test*) the tests; bench/ the benchmarks; other code the demo and the
// tests, unless the list says it copes without the tool ("-").
func TestToolsListIsComplete(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("the test runs scripts/deps.sh with bash, which is not on PATH")
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	gorootBin := filepath.Join(strings.TrimSpace(string(goroot)), "bin")

	rows := readTools(t, filepath.Join(root, "scripts", "tools.txt"))
	asked := map[string]map[string]bool{}
	for _, c := range commands {
		asked[c] = dryRun(t, root, bash, filepath.Join(gorootBin, "go"), c)
	}
	// Every row's package is asked for each of its commands: deps.sh reads
	// the whole list, alternatives and files included.
	for _, r := range rows {
		for _, c := range r.commands {
			if !asked[c][r.pkg] {
				t.Errorf("tools.txt:%d: %s is missing, yet scripts/deps.sh %s did not ask apt-get for %s", r.line, r.alts[0], c, r.pkg)
			}
		}
	}

	built := repoBuilt(t, root, gorootBin)
	uses := append(scanGo(t, root), scanDemoScript(t, root, built)...)
	if len(uses) == 0 {
		t.Fatal("the scan found no tool at all")
	}
	found := map[string][]string{}
	for _, u := range uses {
		if built[u.tool] {
			continue
		}
		found[u.tool] = append(found[u.tool], u.where)
		var named []row
		for _, r := range rows {
			if slices.Contains(r.alts, u.tool) {
				named = append(named, r)
			}
		}
		if len(named) == 0 {
			t.Errorf("%s runs %q, which scripts/tools.txt does not name: add a row (commands, executable, Debian package, why)", u.where, u.tool)
			continue
		}
		need := u.need
		if need == nil {
			if slices.ContainsFunc(named, func(r row) bool { return r.commands == nil }) {
				continue
			}
			need = []string{"demo", "test"}
		}
		for _, c := range need {
			ok := slices.ContainsFunc(named, func(r row) bool { return slices.Contains(r.commands, c) && asked[c][r.pkg] })
			if !ok {
				t.Errorf("%s runs %q, which make %s needs, but scripts/tools.txt names it for %s only", u.where, u.tool, c, commandsOf(named))
			}
		}
	}
	tools := make([]string, 0, len(found))
	for tool := range found {
		tools = append(tools, tool)
	}
	sort.Strings(tools)
	for _, tool := range tools {
		t.Logf("%-18s %s", tool, strings.Join(found[tool], ", "))
	}
}

func commandsOf(rows []row) string {
	var cs []string
	for _, r := range rows {
		if r.commands == nil {
			cs = append(cs, "-")
		}
		cs = append(cs, r.commands...)
	}
	return strings.Join(cs, ",")
}

// repoBuilt is what make builds into bin/ and the Go toolchain: the tools
// exempt from the list.
func repoBuilt(t *testing.T, root, gorootBin string) map[string]bool {
	t.Helper()
	built := map[string]bool{}
	target := regexp.MustCompile(`\$\(BIN\)/([A-Za-z0-9._-]+)`)
	mks, _ := filepath.Glob(filepath.Join(root, "*", "*.mk"))
	for _, mk := range append([]string{filepath.Join(root, "Makefile")}, mks...) {
		b, err := os.ReadFile(mk)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range target.FindAllStringSubmatch(string(b), -1) {
			built[m[1]] = true
		}
	}
	cmds, err := os.ReadDir(filepath.Join(root, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range cmds {
		if d.IsDir() {
			built[d.Name()] = true
		}
	}
	if !built["linkerd"] || !built["kubectl"] || !built["prometheus"] {
		t.Fatalf("the Makefiles' bin/ targets and cmd/ give %v; expected linkerd, kubectl and prometheus among them", built)
	}
	gobin, err := os.ReadDir(gorootBin)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range gobin {
		built[e.Name()] = true
	}
	return built
}

// scanGo finds the tools every Go file runs.
func scanGo(t *testing.T, root string) []use {
	t.Helper()
	var uses []use
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || name == "node_modules" || rel == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		need := needOf(rel)
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, run := range execCalls(f) {
			for _, tool := range run.tools {
				uses = append(uses, use{tool: tool, where: fmt.Sprintf("%s:%d", rel, fset.Position(run.pos).Line), need: need})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return uses
}

// needOf says which commands run the code in a file (nil: the product).
func needOf(rel string) []string {
	dirs := strings.Split(filepath.Dir(rel), string(filepath.Separator))
	switch {
	case dirs[0] == "bench":
		return []string{"bench"}
	case strings.HasSuffix(rel, "_test.go"):
		return []string{"test"}
	case slices.ContainsFunc(dirs, func(d string) bool { return strings.Contains(d, "test") }):
		return []string{"test"}
	}
	return nil
}

type execCall struct {
	pos   token.Pos
	tools []string
}

// execCalls finds the os/exec calls in f and what they run.
func execCalls(f *ast.File) []execCall {
	pkg := ""
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == "os/exec" {
			pkg = "exec"
			if imp.Name != nil {
				pkg = imp.Name.Name
			}
		}
	}
	if pkg == "" {
		return nil
	}
	var calls []execCall
	var sc scopes
	var stack []ast.Node
	ast.Inspect(f, func(n ast.Node) bool {
		if n == nil {
			if opensScope(stack[len(stack)-1]) {
				sc = sc[:len(sc)-1]
			}
			stack = stack[:len(stack)-1]
			return true
		}
		stack = append(stack, n)
		if opensScope(n) {
			sc = append(sc, map[string][]string{})
		}
		switch n := n.(type) {
		case *ast.RangeStmt:
			// The value ranging over a literal list takes each of its
			// strings.
			for _, v := range []ast.Expr{n.Key, n.Value} {
				if id, ok := v.(*ast.Ident); ok {
					sc.bind(id.Name, nil)
				}
			}
			if id, ok := n.Value.(*ast.Ident); ok {
				if lit, ok := n.X.(*ast.CompositeLit); ok {
					var all []string
					for _, el := range lit.Elts {
						all = append(all, sc.literals(el)...)
					}
					sc.bind(id.Name, all)
				}
			}
		case *ast.AssignStmt:
			for i, l := range n.Lhs {
				if id, ok := l.(*ast.Ident); ok {
					var v []string
					if len(n.Lhs) == len(n.Rhs) {
						v = sc.literals(n.Rhs[i])
					}
					sc.bind(id.Name, v)
				}
			}
		case *ast.ValueSpec:
			for i, id := range n.Names {
				var v []string
				if i < len(n.Values) {
					v = sc.literals(n.Values[i])
				}
				sc.bind(id.Name, v)
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != pkg {
				return true
			}
			first := 0
			switch sel.Sel.Name {
			case "Command", "LookPath":
			case "CommandContext":
				first = 1
			default:
				return true
			}
			if len(n.Args) <= first {
				return true
			}
			var tools []string
			for _, name := range sc.literals(n.Args[first]) {
				tools = append(tools, name)
				if sel.Sel.Name != "LookPath" {
					tools = append(tools, runsToo(name, sc.flatten(n.Args[first+1:]))...)
				}
			}
			if len(tools) > 0 {
				calls = append(calls, execCall{n.Pos(), tools})
			}
		}
		return true
	})
	return calls
}

// scopes are the string values of the names in scope, innermost last:
// what a name was set to from literals, or nothing.
type scopes []map[string][]string

func opensScope(n ast.Node) bool {
	switch n.(type) {
	case *ast.File, *ast.FuncDecl, *ast.FuncLit, *ast.BlockStmt, *ast.RangeStmt, *ast.ForStmt, *ast.IfStmt, *ast.SwitchStmt, *ast.TypeSwitchStmt, *ast.CaseClause:
		return true
	}
	return false
}

func (sc scopes) bind(name string, v []string) {
	if len(sc) > 0 {
		sc[len(sc)-1][name] = v
	}
}

// literals resolves e to the strings it may hold: a string literal, a
// variable or constant set from one, or a range variable over a literal
// list. Anything else gives nothing.
func (sc scopes) literals(e ast.Expr) []string {
	switch e := e.(type) {
	case *ast.BasicLit:
		if s, err := strconv.Unquote(e.Value); err == nil && e.Kind == token.STRING {
			return []string{s}
		}
	case *ast.Ident:
		for i := len(sc) - 1; i >= 0; i-- {
			if v, ok := sc[i][e.Name]; ok {
				return v
			}
		}
	}
	return nil
}

// flatten lists a call's arguments as strings, "" where one is not a
// literal; append(lit{…}, …) and fmt.Sprintf("…", …) give their literal
// parts (a format string as is, for a script).
func (sc scopes) flatten(args []ast.Expr) []string {
	var out []string
	for _, a := range args {
		switch a := a.(type) {
		case *ast.CallExpr:
			fn := ""
			switch f := a.Fun.(type) {
			case *ast.Ident:
				fn = f.Name
			case *ast.SelectorExpr:
				if x, ok := f.X.(*ast.Ident); ok {
					fn = x.Name + "." + f.Sel.Name
				}
			}
			switch {
			case fn == "append" && len(a.Args) > 0:
				out = append(out, sc.flatten(a.Args[:1])...)
				out = append(out, "")
			case fn == "fmt.Sprintf" && len(a.Args) > 0:
				out = append(out, sc.flatten(a.Args[:1])...)
			default:
				out = append(out, "")
			}
		case *ast.CompositeLit:
			out = append(out, sc.flatten(a.Elts)...)
		default:
			s := sc.literals(a)
			if len(s) == 1 {
				out = append(out, s[0])
			} else {
				out = append(out, "")
			}
		}
	}
	return out
}

// runsToo gives what a command runs in turn: `ip netns exec NS CMD`,
// `setpriv|unshare|nsenter [OPTIONS] CMD`, `sh|bash -c SCRIPT`.
func runsToo(name string, args []string) []string {
	var next []string
	switch name {
	case "ip":
		for i := 0; i+3 < len(args); i++ {
			if args[i] == "netns" && args[i+1] == "exec" {
				next = args[i+3:]
				break
			}
		}
	case "setpriv", "unshare", "nsenter":
		for i, a := range args {
			if !strings.HasPrefix(a, "-") {
				next = args[i:]
				break
			}
		}
	case "sh", "bash":
		if len(args) >= 2 && args[0] == "-c" && args[1] != "" {
			return shellCommands(args[1])
		}
	}
	if len(next) == 0 || next[0] == "" {
		return nil
	}
	return append([]string{next[0]}, runsToo(next[0], next[1:])...)
}

// shellCommands lists the commands a sh -c script runs (nothing if it
// does not parse), builtins left out.
func shellCommands(script string) []string {
	f, err := syntax.NewParser().Parse(strings.NewReader(script), "")
	if err != nil {
		return nil
	}
	var out []string
	for _, c := range shellCalls(f, nil, nil) {
		if !shellBuiltins()[c.name] {
			out = append(out, c.name)
		}
	}
	return out
}

// shellCall is a command a shell script runs: a name looked up on PATH or
// an absolute path, or (bin set) NAME in a bin/ dir of the repository.
type shellCall struct {
	name string
	line uint
	bin  bool
}

// unknown stands for the part of a word the scan cannot resolve.
const unknown = "\x00"

// shellCalls lists what the script f runs, builtins and its functions
// included; wrappers' commands (unshare CMD, command -v CMD) too.
func shellCalls(f *syntax.File, vars map[string]string, funcs map[string]bool) []shellCall {
	if vars == nil {
		vars = map[string]string{}
	}
	if funcs == nil {
		funcs = map[string]bool{}
	}
	// Functions, and variables set once from a literal or a default
	// (MAKE=${MAKE:-make}), in the order they are set.
	syntax.Walk(f, func(n syntax.Node) bool {
		switch n := n.(type) {
		case *syntax.FuncDecl:
			funcs[n.Name.Value] = true
		case *syntax.Assign:
			if n.Value != nil && n.Name != nil {
				if len(n.Value.Parts) == 1 {
					if pe, ok := n.Value.Parts[0].(*syntax.ParamExp); ok && pe.Param.Value == n.Name.Value && pe.Exp != nil && pe.Exp.Op == syntax.DefaultUnsetOrNull {
						vars[n.Name.Value] = resolveWord(pe.Exp.Word, vars)
						return true
					}
				}
				vars[n.Name.Value] = resolveWord(n.Value, vars)
			}
		}
		return true
	})
	var calls []shellCall
	syntax.Walk(f, func(n syntax.Node) bool {
		c, ok := n.(*syntax.CallExpr)
		if !ok || len(c.Args) == 0 {
			return true
		}
		args := make([]string, len(c.Args))
		for i, w := range c.Args {
			args[i] = resolveWord(w, vars)
		}
		line := c.Args[0].Pos().Line()
		for len(args) > 0 {
			name := args[0]
			switch {
			case name == "" || strings.Contains(name, unknown) && !strings.Contains(name, "/"):
				// "$@", a function's argument: what the caller passes.
			case strings.Contains(name, "/") && !strings.HasPrefix(name, "/"):
				// A path inside the repository ($ROOT/…); bin/NAME is
				// what make builds.
				if dir, base := filepath.Split(name); strings.HasSuffix(dir, "/bin/") {
					calls = append(calls, shellCall{name: base, line: line, bin: true})
				}
			case funcs[name]:
			case name == "command" || name == "exec":
				rest := args[1:]
				if len(rest) > 0 && (rest[0] == "-v" || rest[0] == "-V") {
					rest = rest[1:]
				}
				args = rest
				continue
			case shellBuiltins()[name]:
			default:
				calls = append(calls, shellCall{name: name, line: line})
				for _, next := range runsToo(name, args[1:]) {
					calls = append(calls, shellCall{name: next, line: line})
				}
			}
			break
		}
		return true
	})
	return calls
}

// resolveWord is w's text with quotes removed and variables replaced when
// known; unknown marks what is not.
func resolveWord(w *syntax.Word, vars map[string]string) string {
	if w == nil {
		return ""
	}
	var b strings.Builder
	var part func(p syntax.WordPart)
	part = func(p syntax.WordPart) {
		switch p := p.(type) {
		case *syntax.Lit:
			b.WriteString(p.Value)
		case *syntax.SglQuoted:
			b.WriteString(p.Value)
		case *syntax.DblQuoted:
			for _, q := range p.Parts {
				part(q)
			}
		case *syntax.ParamExp:
			if v, ok := vars[p.Param.Value]; ok && p.Exp == nil && !p.Length && p.Index == nil && p.Slice == nil && p.Repl == nil {
				b.WriteString(v)
			} else {
				b.WriteString(unknown)
			}
		default:
			b.WriteString(unknown)
		}
	}
	for _, p := range w.Parts {
		part(p)
	}
	return b.String()
}

var builtins map[string]bool

// shellBuiltins are bash's builtins and keywords, from bash itself.
func shellBuiltins() map[string]bool {
	if builtins == nil {
		out, err := exec.Command("bash", "-c", "compgen -b; compgen -k").Output()
		if err != nil {
			panic("bash -c 'compgen -b': " + err.Error())
		}
		builtins = map[string]bool{}
		for _, b := range strings.Fields(string(out)) {
			builtins[b] = true
		}
	}
	return builtins
}

// scanDemoScript finds what scripts/demo.sh runs: the demo needs it. It
// also checks that each bin/NAME it runs is one make builds.
func scanDemoScript(t *testing.T, root string, built map[string]bool) []use {
	t.Helper()
	const rel = "scripts/demo.sh"
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	f, err := syntax.NewParser().Parse(strings.NewReader(string(b)), rel)
	if err != nil {
		t.Fatalf("parse %s: %v", rel, err)
	}
	var uses []use
	for _, c := range shellCalls(f, nil, nil) {
		where := fmt.Sprintf("%s:%d", rel, c.line)
		if c.bin {
			if !built[c.name] {
				t.Errorf("%s runs bin/%s, which no make rule builds", where, c.name)
			}
			continue
		}
		uses = append(uses, use{tool: c.name, where: where, need: []string{"demo"}})
	}
	if len(uses) == 0 {
		t.Fatalf("found no command in %s", rel)
	}
	return uses
}
