package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshtls/testutil/testbin"
)

// tmuxSession is a private tmux server (its own socket) running one
// command in a real terminal.
type tmuxSession struct {
	t        *testing.T
	sock     string
	exitFile string
}

func (s *tmuxSession) tmux(args ...string) (string, error) {
	out, err := exec.Command("tmux", append([]string{"-S", s.sock}, args...)...).CombinedOutput()
	return string(out), err
}

func (s *tmuxSession) capture() string {
	out, err := s.tmux("capture-pane", "-p", "-t", "tap")
	if err != nil {
		s.t.Fatalf("capture-pane: %v: %s", err, out)
	}
	return out
}

func (s *tmuxSession) send(keys ...string) {
	if out, err := s.tmux(append([]string{"send-keys", "-t", "tap"}, keys...)...); err != nil {
		s.t.Fatalf("send-keys %v: %v: %s", keys, err, out)
	}
}

func (s *tmuxSession) typeText(text string) {
	if out, err := s.tmux("send-keys", "-t", "tap", "-l", text); err != nil {
		s.t.Fatalf("send-keys -l: %v: %s", err, out)
	}
}

// waitFor polls the pane until cond holds, failing with the last screen.
func (s *tmuxSession) waitFor(what string, cond func(screen string) bool) string {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var screen string
	for time.Now().Before(deadline) {
		screen = s.capture()
		if cond(screen) {
			return screen
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("timed out waiting for %s; screen:\n%s", what, screen)
	return ""
}

// waitExit waits for the program to exit with status 0, and says what
// tmux last reported when it does not.
func (s *tmuxSession) waitExit() {
	s.t.Helper()
	var last string
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(s.exitFile); err == nil && strings.HasSuffix(string(b), "\n") {
			if last = strings.TrimSpace(string(b)); last == "0" {
				return
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("program did not exit with status 0 (exit status %q); screen:\n%s", last, s.capture())
}

func contains(sub ...string) func(string) bool {
	return func(screen string) bool {
		for _, s := range sub {
			if !strings.Contains(screen, s) {
				return false
			}
		}
		return true
	}
}

// startTmux runs command in a detached session of a private tmux server.
// The server is killed when the test ends, and by a watchdog if the test
// process dies first (a timeout's panic or SIGKILL skip t.Cleanup).
func startTmux(t *testing.T, width, height int, env []string, command ...string) *tmuxSession {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("tmux is not installed: run `make deps` (installs Debian's tmux package)")
	}
	dir, err := os.MkdirTemp("", "taptmux")
	if err != nil {
		t.Fatal(err)
	}
	s := &tmuxSession{t: t, sock: filepath.Join(dir, "sock")}
	conf := filepath.Join(dir, "tmux.conf")
	// remain-on-exit keeps the pane after the command exits, to read its
	// exit status.
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g status off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	watchdog := exec.Command("sh", "-c", fmt.Sprintf(
		"while kill -0 %d 2>/dev/null && [ -e %q ]; do sleep 1; done; tmux -S %q kill-server 2>/dev/null; rm -rf %q",
		os.Getpid(), dir, s.sock, dir))
	watchdog.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := watchdog.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = s.tmux("kill-server")
		os.RemoveAll(dir)
		_ = watchdog.Process.Kill()
		_ = watchdog.Wait()
	})
	args := []string{"-f", conf, "new-session", "-d", "-s", "tap", "-x", strconv.Itoa(width), "-y", strconv.Itoa(height)}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	// The shell records the exit status in a file: tmux 3.3 leaves
	// pane_dead_status empty for some exits, so it cannot be relied on.
	s.exitFile = filepath.Join(dir, "exit")
	args = append(args, strings.Join(command, " ")+"; echo $? > "+s.exitFile)
	if out, err := s.tmux(args...); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	return s
}

func buildLinkerd(t *testing.T) string {
	t.Helper()
	return testbin.Command(t, "linkerd")
}

// listRows are the screen's request rows (the lines under the header,
// down to the status bar).
func listRows(screen string) []string {
	var rows []string
	for _, l := range strings.Split(screen, "\n") {
		if strings.HasPrefix(l, "  ") && strings.Contains(l, "deploy/") || strings.HasPrefix(l, "> ") {
			rows = append(rows, l)
		}
	}
	return rows
}

// TestTapTUIInTmux drives the real binary in a real terminal: lock marks,
// pause, a filter typed into the prompt, the detail pane, the aggregate
// view, escaped hostile input, and a clean quit.
func TestTapTUIInTmux(t *testing.T) {
	bin := buildLinkerd(t)
	fixture, err := filepath.Abs(tapFixture)
	if err != nil {
		t.Fatal(err)
	}
	s := startTmux(t, 160, 32, []string{"LANG=C.UTF-8", "TERM=xterm-256color"},
		bin, "tap", "deploy/web", "-n", "emojivoto", "--replay", fixture, "--speed", "3", "--tui")

	s.waitFor("rows with the lock", contains("🔒 mtls", "● live", "linkerd tap deploy/web -n emojivoto"))

	// Pause: the rows freeze while the buffer count grows.
	s.send("p")
	screen := s.waitFor("pause", contains("⏸ PAUSED buffered"))
	frozen := listRows(screen)
	buffered := func(screen string) int {
		i := strings.Index(screen, "buffered ")
		n, _ := strconv.Atoi(strings.SplitN(screen[i+len("buffered "):], "/", 2)[0])
		return n
	}
	first := buffered(screen)
	screen = s.waitFor("the buffer to grow", func(sc string) bool { return strings.Contains(sc, "PAUSED") && buffered(sc) > first+20 })
	if got := listRows(screen); strings.Join(got, "\n") != strings.Join(frozen, "\n") {
		t.Errorf("rows changed while paused:\n%s\n---\n%s", strings.Join(frozen, "\n"), strings.Join(got, "\n"))
	}
	s.send("p")
	s.waitFor("resume", func(sc string) bool { return !strings.Contains(sc, "PAUSED") })
	s.waitFor("the end of the replay", contains("■ ended"))

	// A filter typed into the prompt: only plain text, with its reason.
	s.send("/")
	s.waitFor("the filter prompt", contains("filter>"))
	s.typeText("tls!=true")
	s.send("Enter")
	screen = s.waitFor("the filtered list", func(sc string) bool {
		return strings.Contains(sc, "filter: tls!=true") && !strings.Contains(sc, "filter>")
	})
	rows := listRows(screen)
	if len(rows) == 0 {
		t.Fatalf("no rows under tls!=true:\n%s", screen)
	}
	for _, r := range rows {
		if !strings.Contains(r, "⚠ plain no_tls_from_remote") || strings.Contains(r, "🔒") {
			t.Errorf("row under tls!=true: %q", r)
		}
	}
	// The hostile path is shown escaped, and never set the window title.
	if !strings.Contains(screen, `choice=\x1b]0;pwned\x07\x1b[2J`) {
		t.Errorf("hostile path not shown escaped:\n%s", screen)
	}
	if title, _ := s.tmux("display-message", "-p", "-t", "tap", "#{pane_title}"); strings.Contains(title, "pwned") {
		t.Errorf("hostile input set the pane title: %q", title)
	}

	// A bad filter points at the problem and keeps the old one.
	s.send("/")
	s.send("C-u")
	s.typeText("status>=5x")
	s.waitFor("the error under the prompt", contains("^ status takes a whole number", "enter applies, esc cancels"))
	s.send("Escape")
	s.waitFor("the prompt to close", func(sc string) bool {
		return !strings.Contains(sc, "filter>") && strings.Contains(sc, "filter: tls!=true")
	})

	// The detail pane of an encrypted request: both identities, serials.
	s.send("/")
	s.send("C-u")
	s.typeText("dst.deployment==voting && type==end")
	s.send("Enter")
	s.waitFor("the voting filter", contains("filter: dst.deployment==voting && type==end"))
	s.send("Enter")
	screen = s.waitFor("the detail pane", contains("Request detail", "server identity  voting.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local (verified peer)"))
	if strings.Count(screen, "serial ") != 2 || !strings.Contains(screen, "expires 2026-11-23T10:00:00Z") {
		t.Errorf("detail pane lacks both certificates:\n%s", screen)
	}
	// A key right after Escape would read as Alt+key: wait for the list.
	s.send("Escape")
	s.waitFor("the list again", func(sc string) bool { return !strings.Contains(sc, "Request detail") })

	// The aggregate view, unfiltered: the plain edge at 0% TLS.
	s.send("/")
	s.send("C-u")
	s.send("Enter")
	s.send("a")
	screen = s.waitFor("the aggregate view", contains("Aggregate by edge", "deploy/legacy-client → deploy/web", "no_tls_from_remote="))
	for _, l := range strings.Split(screen, "\n") {
		if strings.Contains(l, "legacy-client → deploy/web") && !strings.Contains(l, "0.0%  no_tls_from_remote") {
			t.Errorf("legacy edge should be 0%% TLS: %q", l)
		}
	}

	s.send("q")
	s.waitExit()
}

// Where the locale cannot draw the lock, rows carry ASCII marks.
func TestTapTUIAsciiInTmux(t *testing.T) {
	bin := buildLinkerd(t)
	fixture, err := filepath.Abs(tapFixture)
	if err != nil {
		t.Fatal(err)
	}
	s := startTmux(t, 140, 20, []string{"LANG=C", "LC_ALL=C", "TERM=xterm-256color"},
		bin, "tap", "deploy/web", "-n", "emojivoto", "--replay", fixture, "--speed", "0", "--tui", "--filter", "'src.deployment==legacy-client'")
	screen := s.waitFor("ASCII marks", contains("[PLAIN] no_tls_from_remote", "ENDED"))
	if strings.Contains(screen, "🔒") || strings.Contains(screen, "⚠") {
		t.Errorf("non-ASCII marks under LANG=C:\n%s", screen)
	}
	s.send("q")
	s.waitExit()
}
