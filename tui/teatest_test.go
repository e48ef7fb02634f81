package tui

import (
	"bytes"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest/v2"

	"meshtls/tap"
)

// End to end through a real bubbletea program: the stream arrives through
// the re-arming command, keys go through the program's input, and the
// final screen is compared with a golden file (-update rewrites it).
func TestProgramEndToEndGolden(t *testing.T) {
	evs, src := fixtureEvents(t)
	ch := make(chan tap.Event, 64)
	go func() {
		for _, e := range evs {
			ch <- e
		}
		close(ch)
	}()
	m := New(Options{Events: ch, Certs: src, Title: "deploy/web -n emojivoto", Now: func() time.Time { return testNow }})
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(150, 20))
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		return bytes.Contains(b, []byte("ended"))
	}, teatest.WithDuration(30*time.Second), teatest.WithCheckInterval(20*time.Millisecond))

	tm.Send(tea.KeyPressMsg{Code: 'p', Text: "p"})
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		return bytes.Contains(b, []byte("PAUSED"))
	}, teatest.WithDuration(10*time.Second))
	tm.Send(tea.KeyPressMsg{Code: 'a', Text: "a"})
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		return bytes.Contains(b, []byte("Aggregate by edge"))
	}, teatest.WithDuration(10*time.Second))
	tm.Send(tea.KeyPressMsg{Code: 'q', Text: "q"})

	final := tm.FinalModel(t, teatest.WithFinalTimeout(10*time.Second)).(*Model)
	if final.received != uint64(len(evs)) {
		t.Errorf("program received %d of %d events", final.received, len(evs))
	}
	golden.RequireEqual(t, []byte(final.Render()))
}
