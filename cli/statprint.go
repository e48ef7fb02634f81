package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"

	"meshtls/stat"
	"meshtls/tap"
)

func printStat(io *IOStreams, opts *StatOptions, res *stat.Result) error {
	switch opts.Output {
	case "json":
		return printStatJSON(io.Out, res)
	default:
		return printStatTable(io, opts, res)
	}
}

// newTable returns a borderless table laid out like kubectl's and
// Linkerd's: three spaces between columns, the first alignLeft columns
// left-aligned and the figures right-aligned.
func newTable(w io.Writer, columns, alignLeft int) *tablewriter.Table {
	aligns := make([]tw.Align, columns)
	pads := make([]tw.Padding, columns)
	for i := range aligns {
		aligns[i] = tw.AlignRight
		if i < alignLeft {
			aligns[i] = tw.AlignLeft
		}
		pads[i] = tw.PaddingNone
	}
	cell := func(wrapFormat tw.State) tw.CellConfig {
		return tw.CellConfig{
			Formatting: tw.CellFormatting{AutoFormat: wrapFormat, AutoWrap: tw.WrapNone},
			Alignment:  tw.CellAlignment{PerColumn: aligns},
			Padding:    tw.CellPadding{Global: tw.PaddingNone, PerColumn: pads},
		}
	}
	return tablewriter.NewTable(w,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders:  tw.BorderNone,
			Symbols:  tw.NewSymbolCustom("meshtls").WithColumn("   "),
			Settings: tw.Settings{Separators: tw.Separators{BetweenColumns: tw.On}, Lines: tw.LinesNone},
		})),
		tablewriter.WithConfig(tablewriter.Config{Header: cell(tw.Off), Row: cell(tw.Off)}),
	)
}

// printStatTable prints one table per kind, in the order asked, with a
// blank line between them; when a call mixes kinds, names carry their
// type (deploy/web) as kubectl prints them.
func printStatTable(io *IOStreams, opts *StatOptions, res *stat.Result) error {
	var kinds []stat.Kind
	byKind := map[stat.Kind][]stat.Row{}
	for _, r := range res.Rows {
		if _, ok := byKind[r.Kind]; !ok {
			kinds = append(kinds, r.Kind)
		}
		byKind[r.Kind] = append(byKind[r.Kind], r)
	}
	mixed := false
	for _, r := range opts.Resources {
		if r.Kind != opts.Resource.Kind {
			mixed = true
		}
	}
	for i, k := range kinds {
		if i > 0 {
			fmt.Fprintln(io.Out)
		}
		if err := printKindTable(io, opts, byKind[k], res.Window, mixed); err != nil {
			return err
		}
	}
	return nil
}

func printKindTable(io *IOStreams, opts *StatOptions, rows []stat.Row, window time.Duration, typed bool) error {
	wide := opts.Output == "wide"
	withNS := opts.AllNamespaces && rows[0].Kind != stat.KindNamespace
	// Authorities have no TCP figures (the proxy does not label
	// connections by authority), so their table is the seed's.
	tcp := rows[0].Kind != stat.KindAuthority
	header := []string{"NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"}
	if tcp {
		header = append(header, "TCP_CONN")
		if wide {
			header = append(header, "READ_BYTES/SEC", "WRITE_BYTES/SEC")
		}
	}
	header = append(header, "TLS")
	left := 1
	if withNS {
		header = append([]string{"NAMESPACE"}, header...)
		left = 2
	}
	textCols := 2
	// REFUSED appears only when some row has refusals (pods with
	// linkerd.io/tls: required), so other tables keep their shape.
	refused := false
	for _, r := range rows {
		refused = refused || r.Refused > 0
	}
	if wide {
		header = append(header, "PLAIN_RPS", "NO_TLS_REASONS", "TOP_PLAINTEXT")
		if refused {
			header = append(header, "REFUSED")
			textCols++
		}
	}
	out := &trimWriter{w: io.Out}
	defer out.Flush()
	tbl := newTable(out, len(header), left)
	if wide {
		// The breakdown columns are text: keep them left-aligned.
		aligns := make([]tw.Align, len(header))
		for i := range aligns {
			aligns[i] = tw.AlignRight
			if i < left || i >= len(header)-textCols {
				aligns[i] = tw.AlignLeft
			}
		}
		tbl.Configure(func(c *tablewriter.Config) {
			c.Header.Alignment.PerColumn = aligns
			c.Row.Alignment.PerColumn = aligns
		})
	}
	tbl.Header(toAny(header)...)
	color := io.ColorEnabled()
	for _, r := range rows {
		// Names and label values come from scraped metrics, which any pod
		// can serve: escape them as tap does before they reach a terminal.
		name := tap.Escape(r.Name)
		if typed && r.Kind != stat.KindAuthority {
			name = r.Kind.Short() + "/" + name
		}
		cells := []string{name, meshedCell(r), percentCell(r.Success, 2), rpsCell(r.RPS),
			latencyCell(r.P50), latencyCell(r.P95), latencyCell(r.P99)}
		if tcp {
			cells = append(cells, countCell(r.TCPConn))
			if wide {
				cells = append(cells, bytesRateCell(r.ReadBytes, window), bytesRateCell(r.WriteBytes, window))
			}
		}
		cells = append(cells, tlsCell(r.TLS, color))
		if withNS {
			cells = append([]string{tap.Escape(r.Namespace)}, cells...)
		}
		if wide {
			secs := window.Seconds()
			plain := math.NaN()
			if !math.IsNaN(r.RPS) {
				plain = plainRequests(r) / secs
			}
			cells = append(cells, rpsCell(plain), reasonsCell(r), edgesCell(r.TopPlaintext, secs))
			if refused {
				cells = append(cells, refusedCell(r))
			}
		}
		if err := tbl.Append(toAny(cells)...); err != nil {
			return err
		}
	}
	return tbl.Render()
}

// trimWriter drops the spaces a table pads its last column with.
type trimWriter struct {
	w    io.Writer
	line []byte
}

func (t *trimWriter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b != '\n' {
			t.line = append(t.line, b)
			continue
		}
		if _, err := t.w.Write(append(bytes.TrimRight(t.line, " "), '\n')); err != nil {
			return 0, err
		}
		t.line = t.line[:0]
	}
	return len(p), nil
}

// Flush writes a last line that had no newline.
func (t *trimWriter) Flush() {
	if len(t.line) > 0 {
		_, _ = t.w.Write(bytes.TrimRight(t.line, " "))
		t.line = nil
	}
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func plainRequests(r stat.Row) float64 {
	var n float64
	for _, v := range r.NoTLS {
		n += v
	}
	return n
}

func countCell(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf("%d", int64(math.Round(v)))
}

// bytesRateCell is bytes per second over the window, as Linkerd prints it
// (B/s with one decimal).
func bytesRateCell(bytes float64, window time.Duration) string {
	if math.IsNaN(bytes) || math.IsInf(bytes, 0) || window <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fB/s", bytes/window.Seconds())
}

func meshedCell(r stat.Row) string {
	if r.Meshed == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", r.Meshed.Meshed, r.Meshed.Total)
}

func percentCell(v float64, decimals int) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.*f%%", decimals, v*100)
}

func rpsCell(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf("%.1frps", v)
}

// latencyCell rounds to whole milliseconds, half away from zero.
func latencyCell(ms float64) string {
	if math.IsNaN(ms) || math.IsInf(ms, 0) {
		return "-"
	}
	return fmt.Sprintf("%dms", int64(math.Round(ms)))
}

func tlsCell(v float64, color bool) string {
	s := percentCell(v, 0)
	if !color || math.IsNaN(v) {
		return s
	}
	code := "33" // yellow: partly plain text
	switch {
	case v >= 1:
		code = "32"
	case v <= 0:
		code = "31"
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func reasonsCell(r stat.Row) string {
	total := r.Requests
	if len(r.NoTLS) == 0 || total <= 0 {
		return "-"
	}
	reasons := make([]string, 0, len(r.NoTLS))
	for k := range r.NoTLS {
		reasons = append(reasons, k)
	}
	sort.Slice(reasons, func(i, j int) bool {
		if r.NoTLS[reasons[i]] != r.NoTLS[reasons[j]] {
			return r.NoTLS[reasons[i]] > r.NoTLS[reasons[j]]
		}
		return reasons[i] < reasons[j]
	})
	parts := make([]string, 0, len(reasons))
	for _, k := range reasons {
		if r.NoTLS[k] <= 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%s", tap.Escape(k), percentCell(r.NoTLS[k]/total, 0)))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

// refusedCell is a row's refusals in the window and their reasons:
// "12 (no_tls_from_remote=12)", or "-".
func refusedCell(r stat.Row) string {
	if r.Refused <= 0 {
		return "-"
	}
	reasons := make([]string, 0, len(r.RefusedReasons))
	for k := range r.RefusedReasons {
		reasons = append(reasons, k)
	}
	sort.Slice(reasons, func(i, j int) bool {
		if r.RefusedReasons[reasons[i]] != r.RefusedReasons[reasons[j]] {
			return r.RefusedReasons[reasons[i]] > r.RefusedReasons[reasons[j]]
		}
		return reasons[i] < reasons[j]
	})
	parts := make([]string, 0, len(reasons))
	for _, k := range reasons {
		parts = append(parts, fmt.Sprintf("%s=%s", tap.Escape(k), strconv.FormatFloat(math.Round(r.RefusedReasons[k]), 'f', -1, 64)))
	}
	return strconv.FormatFloat(math.Round(r.Refused), 'f', -1, 64) + " (" + strings.Join(parts, ",") + ")"
}

// wideEdges is how many plain-text pairs the wide table shows per row.
const wideEdges = 2

func edgesCell(edges []stat.PlaintextEdge, window float64) string {
	if len(edges) == 0 {
		return "-"
	}
	parts := []string{}
	for i, e := range edges {
		if i == wideEdges {
			parts = append(parts, fmt.Sprintf("+%d more", len(edges)-wideEdges))
			break
		}
		parts = append(parts, fmt.Sprintf("%s->%s(%s)", tap.Escape(e.Source), tap.Escape(e.Destination), rpsCell(e.Requests/window)))
	}
	return strings.Join(parts, ",")
}

// statJSON is one row of `stat -o json`. Fractions are 0..1; figures that
// could not be computed (no traffic, or NaN from the proxies, as Prometheus
// would give) are null, so the output is always valid JSON. Numbers are
// rounded a few digits below what the table shows.
type statJSON struct {
	Namespace    string              `json:"namespace"`
	Kind         string              `json:"kind"`
	Name         string              `json:"name"`
	Meshed       *string             `json:"meshed"`
	Requests     *float64            `json:"requests"`
	Success      *float64            `json:"success"`
	RPS          *float64            `json:"rps"`
	P50          *float64            `json:"latency_ms_p50"`
	P95          *float64            `json:"latency_ms_p95"`
	P99          *float64            `json:"latency_ms_p99"`
	TLS          *float64            `json:"tls"`
	TCPConn      *float64            `json:"tcp_open_connections"`
	ReadBPS      *float64            `json:"tcp_read_bytes_per_sec"`
	WriteBPS     *float64            `json:"tcp_write_bytes_per_sec"`
	NoTLS        map[string]*float64 `json:"no_tls"`
	TopPlaintext []edgeJSON          `json:"top_plaintext"`
	// Refused counts what required pods refused in the window (not in
	// requests), by reason in RefusedReasons.
	Refused        *float64            `json:"refused"`
	RefusedReasons map[string]*float64 `json:"refused_reasons"`
	WindowSecs     float64             `json:"window_seconds"`
}

type edgeJSON struct {
	Source      string   `json:"source"`
	Destination string   `json:"destination"`
	Reason      string   `json:"reason"`
	Requests    *float64 `json:"requests"`
}

// Decimals kept in JSON: the table shows success to 0.01% (4 decimals of
// a fraction), RPS to 0.1 and latency to 1 ms; JSON keeps two more for
// fractions and five more for rates and latencies, so scripts can compare
// sources without the table's rounding. TLS rounds as success does.
const (
	fractionDecimals = 6
	rateDecimals     = 6
	latencyDecimals  = 5
	countDecimals    = 4
)

// num rounds v to decimals, or is nil for NaN and ±Inf, which JSON cannot
// carry.
func num(v float64, decimals int) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	p := math.Pow10(decimals)
	r := math.Round(v*p) / p
	return &r
}

func statJSONRow(r stat.Row, window time.Duration) statJSON {
	j := statJSON{
		Namespace: r.Namespace, Kind: string(r.Kind), Name: r.Name,
		Requests: num(r.Requests, countDecimals), Success: num(r.Success, fractionDecimals),
		RPS: num(r.RPS, rateDecimals), P50: num(r.P50, latencyDecimals), P95: num(r.P95, latencyDecimals),
		P99: num(r.P99, latencyDecimals), TLS: num(r.TLS, fractionDecimals),
		NoTLS: map[string]*float64{}, TopPlaintext: []edgeJSON{}, WindowSecs: *num(window.Seconds(), 3),
		TCPConn: num(r.TCPConn, countDecimals),
		Refused: num(r.Refused, countDecimals), RefusedReasons: map[string]*float64{},
	}
	for k, v := range r.RefusedReasons {
		j.RefusedReasons[k] = num(v, countDecimals)
	}
	if secs := window.Seconds(); secs > 0 {
		j.ReadBPS, j.WriteBPS = num(r.ReadBytes/secs, rateDecimals), num(r.WriteBytes/secs, rateDecimals)
	}
	for k, v := range r.NoTLS {
		j.NoTLS[k] = num(v, countDecimals)
	}
	for _, e := range r.TopPlaintext {
		j.TopPlaintext = append(j.TopPlaintext, edgeJSON{e.Source, e.Destination, e.Reason, num(e.Requests, countDecimals)})
	}
	if r.Meshed != nil {
		m := meshedCell(r)
		j.Meshed = &m
	}
	return j
}

func printStatJSON(w io.Writer, res *stat.Result) error {
	rows := make([]statJSON, 0, len(res.Rows))
	for _, r := range res.Rows {
		rows = append(rows, statJSONRow(r, res.Window))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}
