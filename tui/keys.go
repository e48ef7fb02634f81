package tui

import "charm.land/bubbles/v2/key"

// keyMap declares every key once; the help line is drawn from it, and keys
// that mean nothing in the current view are disabled, so help never shows
// a key that would do nothing.
type keyMap struct {
	Up, Down, Top, Follow key.Binding
	Pause                 key.Binding
	Filter                key.Binding
	Detail                key.Binding
	Aggregate             key.Binding
	Group                 key.Binding
	Sort                  key.Binding
	Back                  key.Binding
	Help                  key.Binding
	Quit                  key.Binding
}

func newKeyMap() keyMap {
	return keyMap{
		Up:        key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "older")),
		Down:      key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "newer")),
		Top:       key.NewBinding(key.WithKeys("home", "g"), key.WithHelp("g", "oldest")),
		Follow:    key.NewBinding(key.WithKeys("end", "G"), key.WithHelp("G", "follow")),
		Pause:     key.NewBinding(key.WithKeys("p", "space"), key.WithHelp("p", "pause")),
		Filter:    key.NewBinding(key.WithKeys("/"), key.WithHelp("/", "filter")),
		Detail:    key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "detail")),
		Aggregate: key.NewBinding(key.WithKeys("a"), key.WithHelp("a", "aggregate")),
		Group:     key.NewBinding(key.WithKeys("tab"), key.WithHelp("tab", "edge/path")),
		Sort:      key.NewBinding(key.WithKeys("s"), key.WithHelp("s", "sort")),
		Back:      key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "back")),
		Help:      key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "help")),
		Quit:      key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
	}
}

// forState enables the keys that act in state s.
func (k keyMap) forState(s state) keyMap {
	list, agg, detail := s == stateList, s == stateAggregate, s == stateDetail
	k.Up.SetEnabled(list || agg)
	k.Down.SetEnabled(list || agg)
	k.Top.SetEnabled(list)
	k.Follow.SetEnabled(list)
	k.Detail.SetEnabled(list)
	k.Group.SetEnabled(agg)
	k.Sort.SetEnabled(agg)
	k.Back.SetEnabled(agg || detail || s == stateHelp)
	k.Aggregate.SetEnabled(list || agg)
	return k
}

// ShortHelp is the one-line help under the view.
func (k keyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Pause, k.Filter, k.Detail, k.Aggregate, k.Group, k.Sort, k.Back, k.Help, k.Quit}
}

// FullHelp is the `?` screen.
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.Up, k.Down, k.Top, k.Follow},
		{k.Pause, k.Filter, k.Detail, k.Aggregate},
		{k.Group, k.Sort, k.Back, k.Help, k.Quit},
	}
}
