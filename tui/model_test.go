package tui

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"meshtls/tap"
)

const fixture = "../fixtures/tap/emojivoto.jsonl"

var testNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// fixtureEvents replays the recorded emojivoto stream for deploy/web.
func fixtureEvents(t testing.TB) ([]tap.Event, *tap.Replay) {
	t.Helper()
	f, err := os.Open(fixture)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	rr, err := tap.NewRecordingReader(f, fixture)
	if err != nil {
		t.Fatal(err)
	}
	src := tap.NewReplay(rr, tap.ReplayOptions{})
	var evs []tap.Event
	_, err = tap.Run(context.Background(), tap.RunConfig{Source: src,
		Query: tap.Query{Target: tap.Target{Kind: "deployment", Name: "web", Namespace: "emojivoto"}},
		Emit:  func(e *tap.Event) error { evs = append(evs, *e); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	return evs, src
}

func newTestModel(t testing.TB, opts Options) (*Model, []tap.Event) {
	evs, src := fixtureEvents(t)
	if opts.Now == nil {
		opts.Now = func() time.Time { return testNow }
	}
	opts.Certs = src
	opts.Title = "deploy/web -n emojivoto"
	m := New(opts)
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 30})
	return m, evs
}

func press(m *Model, keys ...string) {
	for _, k := range keys {
		var msg tea.KeyPressMsg
		switch k {
		case "enter":
			msg = tea.KeyPressMsg{Code: tea.KeyEnter}
		case "esc":
			msg = tea.KeyPressMsg{Code: tea.KeyEscape}
		case "tab":
			msg = tea.KeyPressMsg{Code: tea.KeyTab}
		case "up":
			msg = tea.KeyPressMsg{Code: tea.KeyUp}
		case "backspace":
			msg = tea.KeyPressMsg{Code: tea.KeyBackspace}
		default:
			r := []rune(k)[0]
			msg = tea.KeyPressMsg{Code: r, Text: k}
		}
		m.Update(msg)
	}
}

func typeText(m *Model, s string) {
	for _, r := range s {
		m.Update(tea.KeyPressMsg{Code: r, Text: string(r)})
	}
}

func feed(m *Model, evs []tap.Event) { m.Update(eventsMsg{events: evs}) }

func TestRowsMarkEncryption(t *testing.T) {
	for _, ascii := range []bool{false, true} {
		m, evs := newTestModel(t, Options{ASCII: ascii})
		feed(m, evs)
		out := m.Render()
		lock, plain := "🔒 mtls", "⚠ plain no_tls_from_remote"
		if ascii {
			lock, plain = "[TLS] mtls", "[PLAIN] no_tls_from_remote"
		}
		if !strings.Contains(out, lock) {
			t.Errorf("ascii=%v: no lock mark:\n%s", ascii, out)
		}
		// The plain-text rows are older than one screen; filter to them.
		press(m, "/")
		typeText(m, "tls!=true")
		press(m, "enter")
		out = m.Render()
		if !strings.Contains(out, plain) || strings.Contains(out, lock) {
			t.Errorf("ascii=%v: filtered view should only have plain rows with their reason:\n%s", ascii, out)
		}
	}
}

func TestPauseBuffersBounded(t *testing.T) {
	m, evs := newTestModel(t, Options{PendingCapacity: 10})
	feed(m, evs[:300])
	before := m.store.len()
	press(m, "p")
	feed(m, evs[300:325])
	if m.store.len() != before {
		t.Fatalf("rows changed while paused: %d → %d", before, m.store.len())
	}
	status := m.statusBar()
	if !strings.Contains(status, "PAUSED buffered 10/10") || !strings.Contains(status, "dropped 15") {
		t.Errorf("status while paused: %q", status)
	}
	press(m, "p")
	if m.store.len() <= before || strings.Contains(m.statusBar(), "PAUSED") {
		t.Errorf("resume did not apply the buffered events")
	}
}

func TestSourceDropsCounted(t *testing.T) {
	m, evs := newTestModel(t, Options{})
	evs[5].DroppedBefore = 42
	feed(m, evs[:10])
	if !strings.Contains(m.statusBar(), "dropped 42") {
		t.Errorf("status: %q", m.statusBar())
	}
}

func TestFilterTypedLive(t *testing.T) {
	m, evs := newTestModel(t, Options{})
	feed(m, evs)
	press(m, "/")
	typeText(m, "status>=500")
	// Applied while typing, before enter.
	if m.filter.String() != "status>=500" {
		t.Fatalf("filter not applied live: %q", m.filter)
	}
	out := m.Render()
	for _, line := range strings.Split(out, "\n")[2:] {
		if strings.Contains(line, "mtls") && !strings.Contains(line, " 500 ") {
			t.Errorf("row without status 500 under status>=500: %s", line)
		}
	}
	typeText(m, " && latncy")
	out = m.Render()
	if !strings.Contains(out, `unknown field "latncy" (did you mean latency?)`) || !strings.Contains(out, "^") {
		t.Errorf("no error with a caret:\n%s", out)
	}
	if m.filter.String() != "status>=500" {
		t.Errorf("a bad expression replaced the filter: %q", m.filter)
	}
	press(m, "enter")
	if !m.filtering {
		t.Errorf("enter closed the prompt on a bad expression")
	}
	press(m, "esc")
	if m.filtering || m.filter != nil {
		t.Errorf("esc should restore the filter before editing (none), got %q", m.filter)
	}
}

func TestDetailPane(t *testing.T) {
	m, evs := newTestModel(t, Options{})
	feed(m, evs)
	press(m, "/")
	typeText(m, "dst.deployment==voting && type==end")
	press(m, "enter", "enter")
	if m.state != stateDetail {
		t.Fatalf("enter did not open the detail pane")
	}
	out := m.Render()
	for _, want := range []string{
		"server identity  voting.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local (verified peer)",
		"client identity  web.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local",
		"serial ", "expires 2026-11-23T10:00:00Z", "grpc-status", "/emojivoto.v1.VotingService/",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("detail lacks %q:\n%s", want, out)
		}
	}
	press(m, "esc")
	if m.state != stateList {
		t.Errorf("esc did not go back")
	}
}

func TestDetailMarksExpiredCertificate(t *testing.T) {
	m, evs := newTestModel(t, Options{Now: func() time.Time { return testNow.Add(48 * time.Hour) }})
	feed(m, evs)
	press(m, "enter")
	if out := m.Render(); !strings.Contains(out, "EXPIRED") {
		t.Errorf("no expiry warning:\n%s", out)
	}
}

func TestAggregateView(t *testing.T) {
	m, evs := newTestModel(t, Options{})
	feed(m, evs)
	press(m, "a")
	out := m.Render()
	for _, want := range []string{"Aggregate by edge, sorted by count (4 rows)", "deploy/legacy-client → deploy/web", "no_tls_from_remote=", "100.0%", "0.0%"} {
		if !strings.Contains(out, want) {
			t.Errorf("aggregate lacks %q:\n%s", want, out)
		}
	}
	press(m, "s", "s", "s")
	out = m.Render()
	lines := strings.Split(out, "\n")
	if !strings.Contains(out, "sorted by tls") || !strings.Contains(lines[3], "legacy-client") {
		t.Errorf("sorted by TLS, the plain edge should come first:\n%s", out)
	}
	press(m, "tab")
	if out := m.Render(); !strings.Contains(out, "Aggregate by path") || !strings.Contains(out, "GET /api/list") {
		t.Errorf("by path:\n%s", out)
	}
	// The aggregate follows the filter.
	press(m, "/")
	typeText(m, "src.deployment==legacy-client")
	press(m, "enter", "tab")
	if out := m.Render(); !strings.Contains(out, "(1 rows)") {
		t.Errorf("filtered aggregate:\n%s", out)
	}
}

func TestResize(t *testing.T) {
	m, evs := newTestModel(t, Options{})
	feed(m, evs)
	for _, size := range [][2]int{{60, 15}, {200, 50}, {100, 8}} {
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		for _, st := range []string{"", "a", "a"} {
			if st != "" {
				press(m, st)
			}
			out := m.Render()
			lines := strings.Split(out, "\n")
			if len(lines) != size[1] {
				t.Errorf("%dx%d: %d lines", size[0], size[1], len(lines))
			}
			for _, l := range lines {
				if w := ansi.StringWidth(l); w > size[0] {
					t.Errorf("%dx%d: line %d wide: %q", size[0], size[1], w, l)
				}
			}
		}
	}
}

func TestRingBounded(t *testing.T) {
	m, evs := newTestModel(t, Options{Capacity: 100})
	feed(m, evs)
	if m.store.len() != 100 || len(m.store.index) > 100 {
		t.Errorf("rows %d, index %d", m.store.len(), len(m.store.index))
	}
}

func TestSelectionMoves(t *testing.T) {
	m, evs := newTestModel(t, Options{})
	feed(m, evs)
	newest := m.list.selectedEvent(m.store, nil)
	press(m, "up", "up")
	sel := m.list.selectedEvent(m.store, nil)
	if sel == nil || sel == newest || m.list.following {
		t.Fatalf("up did not move the selection off the newest row")
	}
	// New requests do not move a pinned selection.
	m2seq := m.list.selected
	feed(m, evs[:30])
	if m.list.selected != m2seq {
		t.Errorf("selection moved with new rows")
	}
	press(m, "G")
	if !m.list.following {
		t.Errorf("G did not resume following")
	}
}

func TestColourOnlyWhenEnabled(t *testing.T) {
	m, evs := newTestModel(t, Options{})
	feed(m, evs)
	if strings.Contains(m.Render(), "\x1b[") {
		t.Errorf("escape codes with colour off")
	}
	c, _ := newTestModel(t, Options{Color: true})
	feed(c, evs)
	if !strings.Contains(c.Render(), "\x1b[") {
		t.Errorf("no colour with colour on")
	}
}

func TestHelpFromKeyMap(t *testing.T) {
	m, _ := newTestModel(t, Options{})
	out := m.Render()
	last := out[strings.LastIndex(out, "\n")+1:]
	for _, want := range []string{"p pause", "/ filter", "enter detail", "a aggregate", "? help", "q quit"} {
		if !strings.Contains(last, want) {
			t.Errorf("help line lacks %q: %q", want, last)
		}
	}
	if strings.Contains(last, "sort") {
		t.Errorf("sort shown in the list view, where it does nothing: %q", last)
	}
	press(m, "a")
	out = m.Render()
	if last = out[strings.LastIndex(out, "\n")+1:]; !strings.Contains(last, "s sort") {
		t.Errorf("aggregate help lacks sort: %q", last)
	}
	press(m, "?")
	if out := m.Render(); !strings.Contains(out, "Filter language") || !strings.Contains(out, "follow") {
		t.Errorf("full help:\n%s", out)
	}
}

func TestQuit(t *testing.T) {
	m, _ := newTestModel(t, Options{})
	_, cmd := m.Update(tea.KeyPressMsg{Code: 'q', Text: "q"})
	if cmd == nil {
		t.Fatal("q returned no command")
	}
	if _, ok := cmd().(tea.QuitMsg); !ok {
		t.Errorf("q did not quit")
	}
}

// The feed command hands over what is waiting, up to a batch, and never
// more: one frame per batch, not one per event.
func TestFeedBatches(t *testing.T) {
	evs, _ := fixtureEvents(t)
	ch := make(chan tap.Event, len(evs))
	for _, e := range evs {
		ch <- e
	}
	close(ch)
	m := New(Options{Events: ch, Batch: 100})
	total := 0
	cmd := m.waitForEvents()
	for cmd != nil {
		msg := cmd().(eventsMsg)
		if len(msg.events) > 100 {
			t.Fatalf("batch of %d", len(msg.events))
		}
		total += len(msg.events)
		_, cmd = m.Update(msg)
	}
	if total != len(evs) || !m.ended {
		t.Errorf("got %d of %d events, ended=%v", total, len(evs), m.ended)
	}
}
