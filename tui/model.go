// Package tui is `linkerd tap --tui`: a live list of requests that marks
// which are encrypted, with pause, filter predicates, a detail pane and a
// per-edge aggregate view. A parent model owns the state and the child
// views; events arrive through a command that re-arms itself and hands
// over many events at once, so Update never blocks and the renderer draws
// one frame per batch, not one per event.
package tui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"charm.land/bubbles/v2/help"
	"charm.land/bubbles/v2/key"
	"charm.land/bubbles/v2/textinput"
	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"meshtls/tap"
)

type state uint8

const (
	stateList state = iota
	stateDetail
	stateAggregate
	stateHelp
)

// Defaults for Options' zero values.
const (
	DefaultCapacity        = 10_000
	DefaultPendingCapacity = 100_000
	DefaultBatch           = 4096
)

// Options configure a Model.
type Options struct {
	// Events is the stream, closed when the source ends; Err then says
	// why (nil for a clean end).
	Events <-chan tap.Event
	Err    func() error
	// Filter is the initial filter (--filter).
	Filter *tap.Filter
	// Color enables colour (a terminal without NO_COLOR); ASCII replaces
	// the lock and other marks for terminals that cannot draw them.
	Color, ASCII bool
	// Certs finds certificates for the detail pane, when the source knows.
	Certs tap.CertLookup
	// Proxies reports connected proxies when the source knows; otherwise
	// the proxies heard from are counted.
	Proxies func() int
	// Title names what is tapped.
	Title string
	// ControlNamespace names identities derived from workloads.
	ControlNamespace string
	// Capacity bounds the rows kept, PendingCapacity the events buffered
	// while paused, Batch the events handed over per frame.
	Capacity, PendingCapacity, Batch int
	// Now is the clock, for tests.
	Now func() time.Time
}

// Model is the TUI's parent model.
type Model struct {
	opts   Options
	state  state
	keys   keyMap
	help   help.Model
	styles styles
	glyphs glyphs

	width, height int

	store     *store
	filter    *tap.Filter
	aggEdge   *tap.Aggregator
	aggPath   *tap.Aggregator
	aggByPath bool

	list   listView
	detail detailView
	agg    aggregateView

	filtering   bool
	input       textinput.Model
	savedFilter *tap.Filter
	filterErr   *tap.ParseError

	paused  bool
	pending []tap.Event

	received     uint64
	droppedSrc   uint64
	droppedLocal uint64
	rate         float64
	rateCount    uint64
	rateSince    time.Time

	ended bool
	err   error
}

type eventsMsg struct {
	events []tap.Event
	closed bool
}

type tickMsg time.Time

// New builds the model.
func New(opts Options) *Model {
	if opts.Capacity <= 0 {
		opts.Capacity = DefaultCapacity
	}
	if opts.PendingCapacity <= 0 {
		opts.PendingCapacity = DefaultPendingCapacity
	}
	if opts.Batch <= 0 {
		opts.Batch = DefaultBatch
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ControlNamespace == "" {
		opts.ControlNamespace = "linkerd"
	}
	in := textinput.New()
	in.Prompt = "filter> "
	in.Placeholder = "status>=500 && tls!=true"
	m := &Model{
		opts:    opts,
		keys:    newKeyMap(),
		help:    help.New(),
		styles:  newStyles(opts.Color),
		glyphs:  newGlyphs(opts.ASCII),
		store:   newStore(opts.Capacity),
		filter:  opts.Filter,
		aggEdge: tap.NewAggregator(tap.ByEdge),
		aggPath: tap.NewAggregator(tap.ByPath),
		list:    listView{following: true},
		input:   in,
		width:   80, height: 24,
	}
	if !opts.Color {
		m.help.Styles = help.Styles{}
	}
	m.detail = detailView{certs: opts.Certs, controlNS: opts.ControlNamespace, now: opts.Now}
	m.rateSince = opts.Now()
	m.resize()
	return m
}

// Init starts reading events and the once-a-second counter tick.
func (m *Model) Init() tea.Cmd {
	return tea.Batch(m.waitForEvents(), tick())
}

func tick() tea.Cmd {
	return tea.Tick(time.Second, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// waitForEvents blocks, in its own goroutine, for the next event, then
// takes whatever else is already waiting, up to a batch.
func (m *Model) waitForEvents() tea.Cmd {
	ch, batch := m.opts.Events, m.opts.Batch
	if ch == nil {
		return nil
	}
	return func() tea.Msg {
		first, ok := <-ch
		if !ok {
			return eventsMsg{closed: true}
		}
		evs := make([]tap.Event, 1, 64)
		evs[0] = first
		for len(evs) < batch {
			select {
			case e, ok := <-ch:
				if !ok {
					return eventsMsg{events: evs, closed: true}
				}
				evs = append(evs, e)
			default:
				return eventsMsg{events: evs}
			}
		}
		return eventsMsg{events: evs}
	}
}

// Err is the stream's error, once it has ended.
func (m *Model) Err() error { return m.err }

func (m *Model) resize() {
	bodyH := m.height - 3
	if m.filtering {
		bodyH--
		if m.filterErr != nil {
			bodyH -= 2
		}
	}
	bodyH = max(bodyH, 1)
	m.list.setSize(m.width, bodyH-1)
	m.detail.setSize(m.width, bodyH)
	m.agg.setSize(m.width, bodyH)
	m.help.SetWidth(m.width)
	m.input.SetWidth(max(m.width-len(m.input.Prompt)-1, 10))
}

// Update handles one message; it never blocks.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.resize()
		return m, nil
	case eventsMsg:
		m.ingest(msg.events)
		if msg.closed {
			m.ended = true
			if m.opts.Err != nil {
				m.err = m.opts.Err()
			}
			return m, nil
		}
		return m, m.waitForEvents()
	case tickMsg:
		now := m.opts.Now()
		if el := now.Sub(m.rateSince); el > 0 {
			m.rate = float64(m.rateCount) / el.Seconds()
		}
		m.rateCount, m.rateSince = 0, now
		return m, tick()
	case tea.KeyPressMsg:
		return m.key(msg)
	}
	if m.filtering {
		var cmd tea.Cmd
		m.input, cmd = m.input.Update(msg)
		return m, cmd
	}
	return m, nil
}

func (m *Model) ingest(evs []tap.Event) {
	m.received += uint64(len(evs))
	m.rateCount += uint64(len(evs))
	for i := range evs {
		e := &evs[i]
		m.droppedSrc += e.DroppedBefore
		if m.paused {
			if len(m.pending) >= m.opts.PendingCapacity {
				m.droppedLocal++
				continue
			}
			m.pending = append(m.pending, *e)
			continue
		}
		m.apply(e)
	}
}

func (m *Model) apply(e *tap.Event) {
	row := m.store.apply(e)
	if row.Kind == tap.KindEnd && m.filter.Match(row) {
		m.aggEdge.Add(row)
		m.aggPath.Add(row)
	}
}

// setFilter changes the filter and recounts the aggregates from the rows
// held, so the aggregate view always agrees with the list.
func (m *Model) setFilter(f *tap.Filter) {
	m.filter = f
	m.aggEdge.Reset()
	m.aggPath.Reset()
	for seq := m.store.oldest(); seq < m.store.next; seq++ {
		if row := m.store.get(seq); row.Kind == tap.KindEnd && f.Match(row) {
			m.aggEdge.Add(row)
			m.aggPath.Add(row)
		}
	}
}

func (m *Model) aggregator() *tap.Aggregator {
	if m.aggByPath {
		return m.aggPath
	}
	return m.aggEdge
}

func (m *Model) key(msg tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	if m.filtering {
		return m.filterKey(msg)
	}
	k := m.keys.forState(m.state)
	switch {
	case key.Matches(msg, k.Quit):
		return m, tea.Quit
	case key.Matches(msg, k.Help):
		if m.state == stateHelp {
			m.state = stateList
		} else {
			m.state = stateHelp
		}
	case key.Matches(msg, k.Back):
		m.state = stateList
	case key.Matches(msg, k.Pause):
		m.togglePause()
	case key.Matches(msg, k.Filter):
		m.filtering = true
		m.savedFilter = m.filter
		m.input.SetValue(m.filter.String())
		m.input.CursorEnd()
		m.resize()
		return m, m.input.Focus()
	case key.Matches(msg, k.Detail):
		if e := m.list.selectedEvent(m.store, m.filter); e != nil {
			m.detail.event = *e
			m.state = stateDetail
		}
	case key.Matches(msg, k.Aggregate):
		if m.state == stateAggregate {
			m.state = stateList
		} else {
			m.state = stateAggregate
		}
	case key.Matches(msg, k.Group):
		m.aggByPath = !m.aggByPath
		m.agg.offset = 0
	case key.Matches(msg, k.Sort):
		m.agg.sort = m.agg.sort.Next()
	case key.Matches(msg, k.Up):
		if m.state == stateAggregate {
			m.agg.offset = max(m.agg.offset-1, 0)
		} else {
			m.list.move(m.store, m.filter, -1)
		}
	case key.Matches(msg, k.Down):
		if m.state == stateAggregate {
			m.agg.offset++
		} else {
			m.list.move(m.store, m.filter, 1)
		}
	case key.Matches(msg, k.Top):
		m.list.move(m.store, m.filter, -m.store.len())
	case key.Matches(msg, k.Follow):
		m.list.following, m.list.fromBottom = true, 0
	}
	return m, nil
}

func (m *Model) togglePause() {
	m.paused = !m.paused
	if !m.paused {
		for i := range m.pending {
			m.apply(&m.pending[i])
		}
		m.pending = m.pending[:0]
	}
}

// filterKey edits the filter; each change that parses applies at once,
// so the list narrows as the predicate is typed.
func (m *Model) filterKey(msg tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	switch msg.String() {
	case "esc":
		m.filtering, m.filterErr = false, nil
		m.setFilter(m.savedFilter)
		m.input.Blur()
		m.resize()
		return m, nil
	case "enter":
		if m.filterErr != nil {
			return m, nil
		}
		m.filtering = false
		m.input.Blur()
		m.resize()
		return m, nil
	case "ctrl+c":
		return m, tea.Quit
	}
	var cmd tea.Cmd
	m.input, cmd = m.input.Update(msg)
	f, err := tap.ParseFilter(m.input.Value())
	var perr *tap.ParseError
	switch {
	case err == nil:
		m.filterErr = nil
		if f.String() != m.filter.String() {
			m.setFilter(f)
		}
	case errors.As(err, &perr):
		m.filterErr = perr
	}
	m.resize()
	return m, cmd
}

func (m *Model) statusBar() string {
	g := m.glyphs
	mode := g.live
	switch {
	case m.paused:
		mode = fmt.Sprintf("%s buffered %d/%d", g.paused, len(m.pending), m.opts.PendingCapacity)
	case m.ended:
		mode = g.ended
	}
	proxies := len(m.store.proxies)
	if m.opts.Proxies != nil {
		proxies = m.opts.Proxies()
	}
	parts := []string{
		mode,
		fmt.Sprintf("%.0f events/s", m.rate),
		fmt.Sprintf("dropped %d", m.droppedSrc+m.droppedLocal),
		fmt.Sprintf("proxies %d", proxies),
		fmt.Sprintf("rows %d", m.store.len()),
	}
	if m.filter != nil {
		parts = append(parts, "filter: "+tap.Escape(m.filter.String()))
	}
	if m.err != nil {
		parts = append(parts, "error: "+tap.Escape(m.err.Error()))
	}
	s := " " + strings.Join(parts, " | ")
	s = ansi.Truncate(s, m.width, "…")
	if pad := m.width - ansi.StringWidth(s); pad > 0 {
		s += strings.Repeat(" ", pad)
	}
	return m.styles.status.Render(s)
}

// Render draws the screen as a string (View wraps it for the program).
func (m *Model) Render() string {
	var b strings.Builder
	title := "linkerd tap " + m.opts.Title
	b.WriteString(m.styles.title.Render(ansi.Truncate(tap.Escape(title), m.width, "…")))
	b.WriteByte('\n')
	switch m.state {
	case stateList:
		b.WriteString(m.list.view(m.store, m.filter, m.glyphs, m.styles))
	case stateDetail:
		b.WriteString(m.detail.view(m.glyphs, m.styles))
	case stateAggregate:
		b.WriteString(m.agg.view(m.aggregator(), m.glyphs, m.styles))
	case stateHelp:
		body := "Keys\n\n" + m.help.FullHelpView(m.keys.forState(stateList).FullHelp()) +
			"\n\nFilter language: FIELD OP VALUE joined by &&, ||, ! and ( ).\n" +
			"  status>=500   tls!=true   latency>100ms   src.namespace==emojivoto   path^=/api\n" +
			"Fields: " + strings.Join(tap.FieldNames(), " ")
		lines := strings.Split(body, "\n")
		for len(lines) < m.list.height+1 {
			lines = append(lines, "")
		}
		for i := range lines {
			lines[i] = ansi.Truncate(lines[i], m.width, "…")
		}
		b.WriteString(strings.Join(lines[:m.list.height+1], "\n"))
	}
	b.WriteByte('\n')
	b.WriteString(m.statusBar())
	if m.filtering {
		b.WriteByte('\n')
		b.WriteString(m.input.View())
		if m.filterErr != nil {
			b.WriteByte('\n')
			ptr := strings.SplitN(m.filterErr.Pointer(), "\n", 2)
			b.WriteString(strings.Repeat(" ", len(m.input.Prompt)) + m.styles.errText.Render(ptr[1]+" "+m.filterErr.Msg))
			b.WriteByte('\n')
			b.WriteString(m.styles.dim.Render("enter applies, esc cancels"))
		}
	}
	b.WriteByte('\n')
	b.WriteString(m.help.ShortHelpView(m.keys.forState(m.state).ShortHelp()))
	return b.String()
}

// View implements tea.Model.
func (m *Model) View() tea.View {
	v := tea.NewView(m.Render())
	v.AltScreen = true
	v.WindowTitle = "linkerd tap"
	return v
}

// Run shows the TUI on in/out until the user quits or ctx ends. It
// returns the stream's error, if the stream failed.
func Run(ctx context.Context, in io.Reader, out io.Writer, opts Options) error {
	m := New(opts)
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out))
	final, err := p.Run()
	// Cancelling ctx kills the program; that is a quit, not a failure.
	if err != nil && (!errors.Is(err, tea.ErrProgramKilled) || ctx.Err() == nil) {
		return err
	}
	if fm, ok := final.(*Model); ok {
		return fm.Err()
	}
	return nil
}
