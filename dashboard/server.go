// Package dashboard serves `linkerd dashboard`: pages rendered by the Go
// server from the same stat and tap engines the CLI uses, so the page and
// `linkerd stat` never disagree. It is read-only and meant for loopback.
package dashboard

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"meshtls/check"
	"meshtls/contract"
	"meshtls/stat"
	"meshtls/tap"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// DefaultMaxEvents is how many tap events per second one page receives
// unless Config says otherwise; the rest are counted and reported.
const DefaultMaxEvents = 50

// DefaultMaxRows is how many tap rows a page keeps.
const DefaultMaxRows = 200

// DefaultRefresh is how often open pages get fresh figures.
const DefaultRefresh = 10 * time.Second

// Config is what a dashboard shows and where its figures come from.
type Config struct {
	Metrics stat.MetricSource
	Pods    stat.PodSource
	// Window is the stat window; zero lets a capture use its whole span.
	Window time.Duration
	// SourceName says where the figures come from, for the page header.
	SourceName string
	// Static says the figures never change (a capture): each query is
	// computed once and kept. Otherwise results are kept for Refresh, so
	// several open pages share one computation.
	Static bool
	// Refresh is how often open pages get fresh tables over server-sent
	// events (DefaultRefresh when zero).
	Refresh time.Duration
	// History gives earlier windows for the per-deployment charts; nil
	// means there is none, and HistoryNote says why.
	History     History
	HistoryNote string
	// Check, when set, is the configuration the check page runs
	// `linkerd check --tls` with; nil means there is no cluster, and
	// CheckNote says so.
	Check     *check.Config
	CheckNote string
	// Tap opens a fresh tap source for one live list (a replay plays only
	// once per source). Nil means there is no live list, and TapNote says
	// why.
	Tap     func() (tap.Source, io.Closer, error)
	TapNote string
	// TapName says where tap events come from, for the page.
	TapName string
	// MaxEvents caps the tap events per second sent to one page.
	MaxEvents float64
	// TapMaxRPS, when set, asks the tap source itself to report at most
	// that many requests a second (the tap API's max_rps, applied by the
	// controller and the proxies), so a busy deployment's events the page
	// would drop anyway never cross the API server; the source's drops
	// are counted with the page's.
	TapMaxRPS float64
	// MaxRows is how many tap rows the page keeps.
	MaxRows int
	// ControlNamespace is the control plane's namespace, part of every
	// workload identity ("linkerd" when empty).
	ControlNamespace string
	// ErrorLog receives server-side failures; nil discards them.
	ErrorLog *log.Logger
}

// Server is the dashboard's HTTP handler.
type Server struct {
	cfg   Config
	mux   *http.ServeMux
	pages map[string]*template.Template
	row   *template.Template
	// statMu guards the cache and the computations in flight. The
	// sources (a capture, Prometheus, the scraper, the pod lists) hold no
	// state between calls, so different queries are computed at once: a
	// page's several queries, each waiting a whole window when the
	// proxies are scraped directly, overlap instead of queueing. The same
	// query asked twice meanwhile waits for the one computation.
	statMu   sync.Mutex
	cache    map[string]cached
	inflight map[string]*flight
	// checkMu serialises check runs; the last one is kept briefly so
	// reloading the page does not dial every proxy again.
	checkMu   sync.Mutex
	lastCheck *checkRun
}

type cached struct {
	at  time.Time
	res *stat.Result
}

// flight is a computation under way; done is closed when res or err is
// set.
type flight struct {
	done chan struct{}
	res  *stat.Result
	err  error
}

// maxCached bounds the cache: URLs name namespaces, and anyone on the
// machine can ask for many.
const maxCached = 1000

func (s *Server) funcs() template.FuncMap {
	return template.FuncMap{
		"nsPath":     func(ns string) string { return "/ns/" + pathEscape(ns) },
		"deployPath": func(ns, name string) string { return "/ns/" + pathEscape(ns) + "/deploy/" + pathEscape(name) },
		// identity is the name a workload's certificate carries, which its
		// peers verify: the identity mutual TLS proves on that edge.
		"identity": func(kind, name, ns string) string {
			return contract.Identity(name, kind, ns, s.cfg.ControlNamespace)
		},
		"edges": func(ns string, rows []rowView, empty string) edgeRows {
			return edgeRows{Namespace: ns, Rows: rows, Empty: empty}
		},
	}
}

type edgeRows struct {
	Namespace string
	Rows      []rowView
	Empty     string
}

// New checks cfg and builds the handler.
func New(cfg Config) (*Server, error) {
	if cfg.Metrics == nil {
		return nil, errors.New("dashboard: no metrics source")
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	if cfg.MaxRows <= 0 {
		cfg.MaxRows = DefaultMaxRows
	}
	if cfg.ErrorLog == nil {
		cfg.ErrorLog = log.New(io.Discard, "", 0)
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.ControlNamespace == "" {
		cfg.ControlNamespace = "linkerd"
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), pages: map[string]*template.Template{}, cache: map[string]cached{},
		inflight: map[string]*flight{}}
	for _, p := range []string{"namespaces", "namespace", "deployment", "check", "error"} {
		t, err := template.New("layout.html").Funcs(s.funcs()).ParseFS(templateFS, "templates/layout.html", "templates/fragments.html", "templates/"+p+".html")
		if err != nil {
			return nil, err
		}
		s.pages[p] = t
	}
	var err error
	if s.row, err = template.New("row.html").Funcs(s.funcs()).ParseFS(templateFS, "templates/row.html"); err != nil {
		return nil, err
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	s.mux.HandleFunc("GET /{$}", s.page(s.namespacesView))
	s.mux.HandleFunc("GET /live", s.live(s.namespacesView))
	s.mux.HandleFunc("GET /check", s.checkPage)
	s.mux.HandleFunc("GET /ns/{ns}", s.page(s.namespaceView))
	s.mux.HandleFunc("GET /ns/{ns}/live", s.live(s.namespaceView))
	s.mux.HandleFunc("GET /ns/{ns}/history", s.history)
	s.mux.HandleFunc("GET /ns/{ns}/deploy/{name}", s.page(s.deploymentView))
	s.mux.HandleFunc("GET /ns/{ns}/deploy/{name}/live", s.live(s.deploymentView))
	s.mux.HandleFunc("GET /ns/{ns}/deploy/{name}/tap", s.tapEvents)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.errorPage(w, http.StatusNotFound, "No such page", "There is no page at "+r.URL.Path+".")
	})
	return s, nil
}

// csp allows nothing from outside the binary and no inline script or
// style, so even a mistake in escaping cannot run what came off the wire.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// Read-only: nothing here changes state.
		http.Error(w, "the dashboard is read-only", http.StatusMethodNotAllowed)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) compute(ctx context.Context, qs ...stat.Query) (*stat.Result, error) {
	for i := range qs {
		qs[i].Window = s.cfg.Window
	}
	return s.computeWith(ctx, "", s.cfg.Metrics, s.cfg.Pods, qs)
}

// computeWith runs the stat engine, or answers from the cache: a static
// source's figures never change, a live one's are shared for Refresh.
// Results are never modified after they are computed.
func (s *Server) computeWith(ctx context.Context, prefix string, src stat.MetricSource, pods stat.PodSource, qs []stat.Query) (*stat.Result, error) {
	key := prefix + queryKey(qs)
	for {
		s.statMu.Lock()
		if c, ok := s.cache[key]; ok && (s.cfg.Static || time.Since(c.at) < s.cfg.Refresh) {
			s.statMu.Unlock()
			return c.res, nil
		}
		f, running := s.inflight[key]
		if !running {
			break // computed below, still holding statMu
		}
		s.statMu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-f.done:
		}
		// The request that computed it may have gone away (its context
		// ended the computation); this one then computes it itself.
		if f.err == nil || (!errors.Is(f.err, context.Canceled) && !errors.Is(f.err, context.DeadlineExceeded)) {
			return f.res, f.err
		}
	}
	f := &flight{done: make(chan struct{})}
	s.inflight[key] = f
	s.statMu.Unlock()

	f.res, f.err = stat.ComputeAll(ctx, qs, src, pods)

	s.statMu.Lock()
	delete(s.inflight, key)
	if f.err == nil {
		if len(s.cache) >= maxCached {
			clear(s.cache)
		}
		s.cache[key] = cached{at: time.Now(), res: f.res}
	}
	s.statMu.Unlock()
	close(f.done)
	return f.res, f.err
}

func queryKey(qs []stat.Query) string {
	var b strings.Builder
	res := func(r *stat.Resource) {
		if r == nil {
			b.WriteString("-;")
			return
		}
		fmt.Fprintf(&b, "%s/%q/%q;", r.Kind, r.Namespace, r.Name)
	}
	for _, q := range qs {
		res(&q.Resource)
		res(q.From)
		res(q.To)
		fmt.Fprintf(&b, "%s|%q|%t\n", q.Window, q.PodSelector, q.Unmeshed)
	}
	return b.String()
}

type page struct {
	Title      string
	SourceName string
	TapName    string
	Window     string
	Crumbs     []crumb
	Warnings   []string
	Data       any
	// Live pages connect to LiveURL for fresh tables every Refresh.
	Live             bool
	LiveURL, Refresh string
}

type crumb struct{ Name, Href string }

func (s *Server) render(w http.ResponseWriter, status int, name string, p page) {
	p.SourceName, p.TapName = s.cfg.SourceName, s.cfg.TapName
	var buf bytes.Buffer
	if err := s.pages[name].Execute(&buf, p); err != nil {
		s.cfg.ErrorLog.Printf("render %s: %v", name, err)
		http.Error(w, "cannot render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

func (s *Server) errorPage(w http.ResponseWriter, status int, title, msg string) {
	s.render(w, status, "error", page{Title: title, Data: msg})
}

func (s *Server) failed(w http.ResponseWriter, err error) {
	s.cfg.ErrorLog.Printf("stat: %v", err)
	s.errorPage(w, http.StatusInternalServerError, "Cannot compute the figures", err.Error())
}

// view is one page as built from the engines: the page itself, and its
// live tables, which /live streams again every Refresh.
type view struct {
	status int
	name   string
	page   page
	tables []liveTable
}

// liveTable is a table body the page replaces when its event arrives.
type liveTable struct {
	Event, Template string
	Data            any
}

func notFound(title, msg string) view {
	return view{status: http.StatusNotFound, name: "error", page: page{Title: title, Data: msg}}
}

// page serves a view as a whole HTML page.
func (s *Server) page(build func(*http.Request) (view, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := build(r)
		if err != nil {
			s.failed(w, err)
			return
		}
		p := v.page
		p.Live = v.status == http.StatusOK && len(v.tables) > 0
		if p.Live {
			p.LiveURL = strings.TrimSuffix(r.URL.EscapedPath(), "/") + "/live"
			p.Refresh = s.cfg.Refresh.String()
		}
		s.render(w, v.status, v.name, p)
	}
}

func (s *Server) namespacesView(r *http.Request) (view, error) {
	res, err := s.compute(r.Context(), stat.Query{Resource: stat.Resource{Kind: stat.KindNamespace}})
	if err != nil {
		return view{}, err
	}
	rows := rowViews(res.Rows, res.Window)
	return view{status: http.StatusOK, name: "namespaces",
		page:   page{Title: "Namespaces", Window: res.Window.String(), Warnings: res.Warnings, Data: rows},
		tables: []liveTable{{"namespaces", "namespace-rows", rows}}}, nil
}

// namespaceExists says whether ns is one the figures know of, so an
// unknown one gets a clear 404 rather than an empty table. The pod list is
// cheap (figures parse every scrape), so it is asked first.
func (s *Server) namespaceExists(ctx context.Context, ns string) (bool, error) {
	if s.cfg.Pods != nil {
		pods, err := s.cfg.Pods.Pods(ctx, ns, labels.Everything())
		if err == nil && len(pods) > 0 {
			return true, nil
		}
	}
	res, err := s.compute(ctx, stat.Query{Resource: stat.Resource{Kind: stat.KindNamespace}, Unmeshed: true})
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(res.Rows, func(r stat.Row) bool { return r.Name == ns }), nil
}

type namespaceData struct {
	Namespace   string
	Deployments []rowView
	Authorities []rowView
	// HistoryURL is where the charts' figures are; empty when there is
	// no history, and HistoryNote says why.
	HistoryURL, HistoryNote string
}

func (s *Server) namespaceView(r *http.Request) (view, error) {
	ns := r.PathValue("ns")
	ok, err := s.namespaceExists(r.Context(), ns)
	if err != nil {
		return view{}, err
	}
	if !ok {
		return notFound("Unknown namespace", fmt.Sprintf("Namespace %q is not in %s.", ns, s.cfg.SourceName)), nil
	}
	res, err := s.compute(r.Context(),
		stat.Query{Resource: stat.Resource{Kind: stat.KindDeployment, Namespace: ns}},
		stat.Query{Resource: stat.Resource{Kind: stat.KindAuthority, Namespace: ns}})
	if err != nil {
		return view{}, err
	}
	d := namespaceData{Namespace: ns, HistoryNote: s.cfg.HistoryNote}
	if s.cfg.History != nil {
		d.HistoryURL = "/ns/" + pathEscape(ns) + "/history"
	}
	for _, v := range rowViews(res.Rows, res.Window) {
		if v.Kind == stat.KindAuthority {
			d.Authorities = append(d.Authorities, v)
		} else {
			d.Deployments = append(d.Deployments, v)
		}
	}
	return view{status: http.StatusOK, name: "namespace",
		page: page{Title: "Namespace " + ns, Window: res.Window.String(), Warnings: res.Warnings,
			Crumbs: []crumb{{"Namespaces", "/"}}, Data: d},
		tables: []liveTable{{"deployments", "deployment-rows", d}, {"authorities", "authority-rows", d}}}, nil
}

type deploymentData struct {
	Namespace, Name string
	Row             *rowView
	Outbound        []rowView
	Inbound         []rowView
	Tap             bool
	TapNote         string
	TapURL          string
	MaxRows         int
	MaxEvents       float64
}

func (s *Server) deploymentView(r *http.Request) (view, error) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	self := stat.Resource{Kind: stat.KindDeployment, Namespace: ns, Name: name}
	all := stat.Resource{Kind: stat.KindDeployment, Namespace: ns}
	// Three computations, all at once (scraping the proxies, each waits a
	// whole window): the namespace's deployments, which tell an unknown
	// one (a 404) from an engine failure and hold this one's own row; and
	// the edges, stat's --from and --to figures: the deployments this one
	// sends to, and those that send to it.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	qs := []stat.Query{
		{Resource: all, Unmeshed: true},
		{Resource: all, From: &self},
		{Resource: all, To: &self},
	}
	results := make([]*stat.Result, len(qs))
	errs := make([]error, len(qs))
	var wg sync.WaitGroup
	for i := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = s.compute(ctx, qs[i])
			if i == 0 && errs[i] == nil && !slices.ContainsFunc(results[i].Rows, func(r stat.Row) bool { return r.Name == name }) {
				cancel() // unknown: the edges are not needed
			}
		}()
	}
	wg.Wait()
	list := results[0]
	if errs[0] != nil {
		return view{}, errs[0]
	}
	i := slices.IndexFunc(list.Rows, func(r stat.Row) bool { return r.Name == name })
	if i < 0 {
		return notFound("Unknown deployment", fmt.Sprintf("Deployment %q in namespace %q is not in %s.", name, ns, s.cfg.SourceName)), nil
	}
	res := &stat.Result{Rows: list.Rows[i : i+1], Window: list.Window, Warnings: list.Warnings}
	d := deploymentData{Namespace: ns, Name: name, Tap: s.cfg.Tap != nil, TapNote: s.cfg.TapNote, MaxRows: s.cfg.MaxRows, MaxEvents: s.cfg.MaxEvents,
		TapURL: "/ns/" + pathEscape(ns) + "/deploy/" + pathEscape(name) + "/tap"}
	self0 := rowViews(res.Rows, res.Window)[0]
	d.Row = &self0
	for k, out := range []*[]rowView{&d.Outbound, &d.Inbound} {
		e, err := results[k+1], errs[k+1]
		if err != nil {
			return view{}, err
		}
		for i, v := range rowViews(e.Rows, e.Window) {
			if e.Rows[i].Requests > 0 {
				*out = append(*out, v)
			}
		}
	}
	return view{status: http.StatusOK, name: "deployment",
		page: page{Title: "Deployment " + name, Window: res.Window.String(), Warnings: res.Warnings,
			Crumbs: []crumb{{"Namespaces", "/"}, {ns, "/ns/" + pathEscape(ns)}}, Data: d},
		tables: []liveTable{{"self", "self-rows", d}, {"outbound", "outbound-rows", d}, {"inbound", "inbound-rows", d}}}, nil
}

func pathEscape(s string) string {
	return strings.ReplaceAll(template.URLQueryEscaper(s), "+", "%20")
}

// rowView is a stat row as the page shows it: each figure as text and
// as the raw number (data-value) that tests and scripts read.
type rowView struct {
	Kind      stat.Kind
	Namespace string
	Name      string
	Meshed    string
	Success   cell
	RPS       cell
	P50       cell
	P95       cell
	P99       cell
	TCPConn   cell
	TLS       tlsView
	PlainRPS  cell
	Reasons   []reasonView
	Plaintext []edgeView
}

type cell struct{ Text, Value string }

type tlsView struct {
	cell
	// Class is full, partial, none or unknown; the page shows a lock and a
	// word too, never colour alone.
	Class, Mark, Word string
}

type reasonView struct {
	Reason  string
	Share   cell
	Request cell
}

type edgeView struct {
	Source, Destination, Reason string
	RPS                         cell
}

func num(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return ""
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func pct(v float64, decimals int) cell {
	if math.IsNaN(v) {
		return cell{Text: "-"}
	}
	return cell{Text: fmt.Sprintf("%.*f%%", decimals, v*100), Value: num(v)}
}

func rps(v float64) cell {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return cell{Text: "-"}
	}
	return cell{Text: fmt.Sprintf("%.1frps", v), Value: num(v)}
}

func ms(v float64) cell {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return cell{Text: "-"}
	}
	return cell{Text: fmt.Sprintf("%dms", int64(math.Round(v))), Value: num(v)}
}

func count(v float64) cell {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return cell{Text: "-"}
	}
	return cell{Text: strconv.FormatInt(int64(math.Round(v)), 10), Value: num(v)}
}

func tlsOf(v float64) tlsView {
	t := tlsView{cell: pct(v, 0)}
	switch {
	case math.IsNaN(v):
		t.Class, t.Mark, t.Word = "unknown", "", "no traffic"
	case v >= 1:
		t.Class, t.Mark, t.Word = "full", "🔒", "encrypted"
	case v <= 0:
		t.Class, t.Mark, t.Word = "none", "🔓", "plain text"
	default:
		t.Class, t.Mark, t.Word = "partial", "⚠", "partly plain"
	}
	return t
}

func rowViews(rows []stat.Row, window time.Duration) []rowView {
	secs := window.Seconds()
	out := make([]rowView, 0, len(rows))
	for _, r := range rows {
		v := rowView{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, Meshed: "-",
			Success: pct(r.Success, 2), RPS: rps(r.RPS), P50: ms(r.P50), P95: ms(r.P95), P99: ms(r.P99),
			TCPConn: count(r.TCPConn), TLS: tlsOf(r.TLS), PlainRPS: cell{Text: "-"}}
		if r.Meshed != nil {
			v.Meshed = fmt.Sprintf("%d/%d", r.Meshed.Meshed, r.Meshed.Total)
		}
		var plain float64
		for _, n := range r.NoTLS {
			plain += n
		}
		if !math.IsNaN(r.RPS) && secs > 0 {
			v.PlainRPS = rps(plain / secs)
		}
		for reason, n := range r.NoTLS {
			if n <= 0 || !(r.Requests > 0) {
				continue
			}
			v.Reasons = append(v.Reasons, reasonView{Reason: reason, Share: pct(n/r.Requests, 0), Request: count(n)})
		}
		sort.Slice(v.Reasons, func(i, j int) bool {
			a, b := v.Reasons[i], v.Reasons[j]
			if a.Share.Value != b.Share.Value {
				return r.NoTLS[a.Reason] > r.NoTLS[b.Reason]
			}
			return a.Reason < b.Reason
		})
		for _, e := range r.TopPlaintext {
			ev := edgeView{Source: e.Source, Destination: e.Destination, Reason: e.Reason, RPS: cell{Text: "-"}}
			if secs > 0 {
				ev.RPS = rps(e.Requests / secs)
			}
			v.Plaintext = append(v.Plaintext, ev)
		}
		out = append(out, v)
	}
	return out
}
