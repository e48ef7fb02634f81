package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshtls/internal/golden"
)

const tapFixture = "../fixtures/tap/emojivoto.jsonl"

func TestTapGolden(t *testing.T) {
	cases := []struct {
		golden string
		args   []string
	}{
		{"tap_web_to_voting.golden", []string{"tap", "deploy/web", "-n", "emojivoto", "--to", "deploy/voting", "--replay", tapFixture, "--speed", "0"}},
		{"tap_web_plain_wide.golden", []string{"tap", "deploy/web", "-n", "emojivoto", "--replay", tapFixture, "--speed", "0", "--filter", "tls!=true", "-o", "wide"}},
		{"tap_web_failures.json.golden", []string{"tap", "deploy", "web", "-n", "emojivoto", "--replay", "builtin:emojivoto", "--speed", "0", "--filter", "status>=500 || (grpc_status!=OK && type==end)", "-o", "json"}},
		{"tap_ns_slow.golden", []string{"tap", "ns", "emojivoto", "--replay", tapFixture, "--speed", "0", "--filter", "latency>100ms && type==rsp", "-o", "wide"}},
	}
	for _, tc := range cases {
		t.Run(tc.golden, func(t *testing.T) {
			res := execute(t, false, tc.args...)
			if res.code != 0 {
				t.Fatalf("exit %d: %s", res.code, res.errOut)
			}
			if res.errOut != "" {
				t.Errorf("unexpected stderr: %q", res.errOut)
			}
			if strings.Count(res.out, "\n") < 3 {
				t.Errorf("too little output to be a useful golden:\n%s", res.out)
			}
			golden.Assert(t, tc.golden, []byte(res.out))
		})
	}
}

// Nothing off the wire reaches the terminal raw: the fixture's hostile
// path arrives escaped in every format.
func TestTapEscapesHostileInput(t *testing.T) {
	for _, o := range []string{"text", "wide", "json"} {
		res := execute(t, true, "tap", "deploy/web", "-n", "emojivoto", "--replay", tapFixture, "--speed", "0", "--filter", "src.deployment==legacy-client", "-o", o)
		if res.code != 0 {
			t.Fatalf("-o %s: exit %d: %s", o, res.code, res.errOut)
		}
		if strings.ContainsAny(res.out, "\x1b\x07") {
			t.Errorf("-o %s: raw control characters in output", o)
		}
		if !strings.Contains(res.out, `pwned`) {
			t.Errorf("-o %s: the hostile request is missing", o)
		}
	}
}

func TestTapBadInput(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.jsonl")
	data, err := os.ReadFile(tapFixture)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(data), "\n", 6)
	if err := os.WriteFile(corrupt, []byte(strings.Join(lines[:5], "\n")+"\n{\"time\":\"2026\",broken\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad filter", []string{"tap", "deploy/web", "--replay", tapFixture, "--filter", "status>=5xx"}, 2,
			`Error: invalid --filter "status>=5xx": at column 7: a status class such as 5xx takes == or !=`},
		{"unknown field", []string{"tap", "deploy/web", "--replay", tapFixture, "--filter", "stauts>=500"}, 2,
			`Error: invalid --filter "stauts>=500": at column 1: unknown field "stauts" (did you mean status?)`},
		{"missing replay", []string{"tap", "deploy/web", "--replay", filepath.Join(dir, "nope.jsonl")}, 1,
			"Error: cannot read replay file: open " + filepath.Join(dir, "nope.jsonl") + ": no such file or directory"},
		{"unknown builtin", []string{"tap", "deploy/web", "--replay", "builtin:nope"}, 1,
			`Error: no built-in tap recording "nope" (have emojivoto, emojivoto-live)`},
		{"corrupt line", []string{"tap", "deploy/web", "-n", "emojivoto", "--replay", corrupt, "--speed", "0"}, 1,
			"Error: replay " + corrupt + ": line 6: corrupt line: invalid character 'b' looking for beginning of object key string"},
		{"bad output", []string{"tap", "deploy/web", "--replay", tapFixture, "-o", "yaml"}, 2,
			`Error: unknown output format "yaml": use text, wide or json`},
		{"bad kind", []string{"tap", "authority", "--replay", tapFixture}, 2,
			`Error: cannot tap resource type "authority": valid types are deployment (deploy), statefulset (sts), daemonset (ds), pod (po), namespace (ns)`},
		{"bad to", []string{"tap", "deploy/web", "--to", "voting", "--replay", tapFixture}, 2,
			`Error: --to "voting": want TYPE/NAME, e.g. deploy/voting`},
		{"no cluster", []string{"tap", "deploy/web"}, 1,
			"Error: " + errNoCluster.Error()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := execute(t, false, tc.args...)
			if res.code != tc.code {
				t.Errorf("exit %d, want %d", res.code, tc.code)
			}
			errLines := strings.Split(strings.TrimSpace(res.errOut), "\n")
			if len(errLines) != 1 || errLines[0] != tc.want {
				t.Errorf("stderr:\n%s\nwant the one line:\n%s", res.errOut, tc.want)
			}
		})
	}
}

func TestTapTUIFallsBackWhenNotATerminal(t *testing.T) {
	res := execute(t, false, "tap", "deploy/web", "-n", "emojivoto", "--replay", tapFixture, "--speed", "0", "--tui", "--to", "deploy/voting")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.errOut)
	}
	if res.errOut != "Note: stdout is not a terminal; printing text lines instead of the TUI\n" {
		t.Errorf("stderr: %q", res.errOut)
	}
	want, err := os.ReadFile(filepath.Join("testdata", "tap_web_to_voting.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if res.out != string(want) {
		t.Errorf("fallback output differs from the text lines")
	}
}

func TestTapRecordThenReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rec.jsonl")
	first := execute(t, false, "tap", "deploy/web", "-n", "emojivoto", "--replay", tapFixture, "--speed", "0", "--record", path, "-o", "wide")
	if first.code != 0 {
		t.Fatalf("exit %d: %s", first.code, first.errOut)
	}
	again := execute(t, false, "tap", "deploy/web", "-n", "emojivoto", "--replay", path, "--speed", "0", "-o", "wide")
	if again.code != 0 {
		t.Fatalf("exit %d: %s", again.code, again.errOut)
	}
	if first.out != again.out || strings.Count(first.out, "\n") < 100 {
		t.Errorf("replay of the recording differs from what was recorded (%d vs %d lines)", strings.Count(first.out, "\n"), strings.Count(again.out, "\n"))
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"certificates"`) {
		t.Errorf("re-recording dropped the certificates")
	}
}

func TestTapFlagsToOptions(t *testing.T) {
	io, _, _ := TestStreams(false)
	f := NewFactory(io)
	var got *TapOptions
	cmd := newTapCmd(f, func(_ context.Context, o *TapOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"deploy", "web", "--to", "deploy/voting", "--to-namespace", "other", "--method", "POST", "--path", "/api", "--authority", "a:80", "--scheme", "http", "--max-rps", "7", "--filter", "status>=500", "-o", "json", "--speed", "0", "--replay", "x", "--record", "y", "--tui"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	q := got.Query
	if q.Target.Kind != "deployment" || q.Target.Name != "web" || q.To == nil || q.To.Name != "voting" || q.To.Namespace != "other" ||
		q.Method != "POST" || q.PathPrefix != "/api" || q.Authority != "a:80" || q.Scheme != "http" || q.MaxRPS != 7 ||
		got.Filter.String() != "status>=500" || got.Output != "json" || got.Speed != 0 || got.Replay != "x" || got.Record != "y" || !got.TUI {
		t.Errorf("options: %+v query %+v", got, q)
	}
	if m := q.Match(); m == nil || len(m.GetAll().GetMatches()) != 6 {
		t.Errorf("tap API match: %v", m)
	}
}

func TestTapHelpHasExamples(t *testing.T) {
	res := execute(t, false, "tap", "--help")
	for _, want := range []string{"linkerd tap deploy/web -n emojivoto --replay builtin:emojivoto", "--tui", "status>=500", "--record", "--max-rps"} {
		if !strings.Contains(res.out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	comp := execute(t, false, "__complete", "tap", "deploy/web", "--replay", "")
	if !strings.Contains(comp.out, "builtin:emojivoto") {
		t.Errorf("completion of --replay: %q", comp.out)
	}
	comp = execute(t, false, "__complete", "tap", "deploy/web", "--filter", "status>=500&&ts")
	if !strings.Contains(comp.out, "status>=500&&tls") {
		t.Errorf("completion of --filter: %q", comp.out)
	}
}
