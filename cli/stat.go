package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"meshtls/fixtures"
	"meshtls/stat"
)

// StatOptions is everything `linkerd stat` needs once flags are parsed.
type StatOptions struct {
	// Resource is the first of Resources, the resources asked for.
	Resource      stat.Resource
	Resources     []stat.Resource
	Unmeshed      bool
	From, To      *stat.Resource
	Window        time.Duration
	WindowSet     bool // -t given; captures otherwise use their whole span
	Selector      string
	Output        string
	AllNamespaces bool
	Capture       string
	PrometheusURL string
	// At ends the window at a past instant (Prometheus only); zero is now.
	At time.Time
}

type statFlags struct {
	allNamespaces bool
	window        time.Duration
	from, to      string
	fromNS, toNS  string
	selector      string
	output        string
	capture       string
	at            string
	unmeshed      bool
	prometheusURL string
}

// builtinPrefix names captures compiled into the binary.
const builtinPrefix = "builtin:"

func newStatCmd(f *Factory, runF func(context.Context, *StatOptions) error) *cobra.Command {
	var fl statFlags
	cmd := &cobra.Command{
		Use:     "stat RESOURCE [NAME...] | RESOURCE/NAME...",
		Aliases: []string{"st"},
		Short:   "Show traffic statistics, including the share of TLS traffic",
		Long: `Show success rate, request rate, latency quantiles, open TCP connections
and the share of TLS traffic for workloads, pods, services, authorities or
namespaces. Several resources may be given at once (deploy/web po/web-1,
or po a b); "all" stands for every workload kind, pods, services and
authorities. Workloads without a meshed pod and without traffic are hidden
unless --unmeshed is given.

Resource types: ` + stat.ValidKinds + `.

Figures come from, in order of preference:
  --capture DIR        a recorded capture (builtin:emojivoto and builtin:mixed ship
                       with the CLI), no cluster needed;
  --prometheus-url URL Prometheus, with the queries Linkerd's public API used;
  otherwise            the control plane's Prometheus (-L), reached through a
                       port-forward via the Kubernetes API; when none answers,
                       every meshed proxy's :4191/metrics, scraped twice one
                       window apart (and stat says so).

The TLS column is the share of requests with tls="true". -o wide and -o json
say why the rest was not encrypted (no_tls_reason) and name the source and
destination pairs that carry the most plain text.`,
		Example: `  # TLS share of every authority in emojivoto (the seed's table)
  linkerd stat authority -n emojivoto

  # The same from the recorded capture shipped with the CLI
  linkerd stat au -n emojivoto --capture builtin:emojivoto

  # Why is some traffic plain text, and who sends it?
  linkerd stat deploy -n mixed --capture builtin:mixed -o wide

  # Traffic from web to voting, over the last 5 minutes, from Prometheus
  linkerd stat deploy/voting -n emojivoto --from deploy/web -t 5m --prometheus-url http://127.0.0.1:9090

  # The five minutes before an incident, from Prometheus
  linkerd stat au -n emojivoto -t 5m --at 2026-11-22T03:15:00Z --prometheus-url http://127.0.0.1:9090

  # Several resources in one call, and every workload kind
  linkerd stat deploy/web po/vote-bot-8b9c7d6f5-x7k2p -n emojivoto
  linkerd stat all -n emojivoto

  # Every namespace, as JSON for scripts
  linkerd stat ns -A -o json`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: statCompletion(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := fl.toOptions(f, args, cmd.Flags().Changed("time-window"), cmd.Flags().Changed("namespace"))
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			if runF != nil {
				err = runF(ctx, opts)
			} else {
				err = runStat(ctx, f, opts)
			}
			if err != nil && ctx.Err() != nil && cmd.Context().Err() == nil {
				// Ctrl-C: the user knows; exit as a shell does, quietly.
				return &ExitError{Code: 130}
			}
			return err
		},
	}
	flags := cmd.Flags()
	flags.BoolVarP(&fl.allNamespaces, "all-namespaces", "A", false, "stat resources in every namespace")
	flags.DurationVarP(&fl.window, "time-window", "t", time.Minute, "window the figures cover (e.g. 10s, 1m, 1h)")
	flags.StringVar(&fl.from, "from", "", "only traffic from this resource (e.g. deploy/web)")
	flags.StringVar(&fl.to, "to", "", "only traffic to this resource (e.g. deploy/emoji)")
	flags.StringVar(&fl.fromNS, "from-namespace", "", "namespace of the --from resource (default: -n)")
	flags.StringVar(&fl.toNS, "to-namespace", "", "namespace of the --to resource (default: -n)")
	flags.StringVarP(&fl.selector, "selector", "l", "", "only traffic of pods matching this label selector (e.g. app=web)")
	flags.StringVarP(&fl.output, "output", "o", "table", "output format: table, wide or json")
	flags.StringVar(&fl.at, "at", "", "end the window at this past time, RFC 3339 (2026-11-22T03:15:00Z) or a duration ago (90m); needs a Prometheus")
	flags.BoolVar(&fl.unmeshed, "unmeshed", false, "also show workloads with no meshed pod and no traffic")
	flags.StringVar(&fl.prometheusURL, "prometheus-url", "", "query this Prometheus (e.g. http://127.0.0.1:9090) instead of the control plane's")
	flags.StringVar(&fl.capture, "capture", "", "read a capture directory (or builtin:emojivoto, builtin:mixed) instead of live proxies")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion("table", "wide", "json"))
	_ = cmd.RegisterFlagCompletionFunc("at", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"5m", "1h", time.Now().UTC().Truncate(time.Minute).Format(time.RFC3339)}, cobra.ShellCompDirectiveNoFileComp
	})
	_ = cmd.RegisterFlagCompletionFunc("capture", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		names := []string{}
		for _, n := range fixtures.Captures() {
			names = append(names, builtinPrefix+n)
		}
		return names, cobra.ShellCompDirectiveFilterDirs
	})
	return cmd
}

func fixedCompletion(values ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

func (fl *statFlags) toOptions(f *Factory, args []string, windowSet, namespaceSet bool) (*StatOptions, error) {
	ns := f.Namespace()
	if fl.allNamespaces {
		if namespaceSet {
			return nil, usageErrorf("-A/--all-namespaces and -n/--namespace cannot be used together")
		}
		ns = ""
	}
	resources, err := stat.ParseResources(args, ns)
	if err != nil {
		return nil, &usageError{err}
	}
	if namespaceSet && fl.from == "" && fl.to == "" {
		for _, r := range resources {
			if r.Kind == stat.KindNamespace {
				return nil, usageErrorf("-n/--namespace cannot be used with namespaces: a namespace is not inside one (use stat ns/NAME)")
			}
		}
	}
	opts := &StatOptions{
		Resource: resources[0], Resources: resources, Window: fl.window, WindowSet: windowSet, Selector: fl.selector,
		Output: fl.output, AllNamespaces: fl.allNamespaces, Capture: fl.capture,
		PrometheusURL: fl.prometheusURL, Unmeshed: fl.unmeshed,
	}
	switch opts.Output {
	case "table", "wide", "json":
	default:
		return nil, usageErrorf("unknown output format %q: use table, wide or json", opts.Output)
	}
	if fl.window <= 0 {
		return nil, usageErrorf("--time-window must be positive, got %s", fl.window)
	}
	if fl.from != "" && fl.to != "" {
		return nil, usageErrorf("--from and --to cannot be used together")
	}
	parseEnd := func(flag, value, endNS string) (*stat.Resource, error) {
		if value == "" {
			return nil, nil
		}
		if endNS == "" {
			endNS = f.Namespace()
		}
		parts := strings.SplitN(value, "/", 2)
		if len(parts) != 2 || parts[1] == "" {
			return nil, usageErrorf("--%s %q: want TYPE/NAME, e.g. deploy/web", flag, value)
		}
		r, err := stat.ParseResource([]string{value}, endNS)
		if err != nil {
			return nil, &usageError{fmt.Errorf("--%s: %v", flag, err)}
		}
		return &r, nil
	}
	if opts.From, err = parseEnd("from", fl.from, fl.fromNS); err != nil {
		return nil, err
	}
	if opts.To, err = parseEnd("to", fl.to, fl.toNS); err != nil {
		return nil, err
	}
	if opts.Capture != "" && opts.PrometheusURL != "" {
		return nil, usageErrorf("--capture and --prometheus-url cannot be used together")
	}
	if fl.at != "" {
		if opts.Capture != "" {
			return nil, usageErrorf("--at needs a Prometheus: a capture's window ends at its last round")
		}
		if opts.At, err = parseAt(fl.at, time.Now()); err != nil {
			return nil, err
		}
	}
	return opts, nil
}

// openCapture resolves a --capture value: builtin:NAME or a directory.
func openCapture(value string) (*stat.Capture, error) {
	if name, ok := strings.CutPrefix(value, builtinPrefix); ok {
		fsys, err := fixtures.Capture(name)
		if err != nil {
			return nil, err
		}
		return stat.OpenCapture(fsys, value)
	}
	info, err := os.Stat(value)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("capture directory %s does not exist (built-in captures: %s)", value, strings.Join(prefixed(fixtures.Captures()), ", "))
		}
		return nil, err
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("capture %s is not a directory", value)
	}
	return stat.OpenCapture(os.DirFS(value), value)
}

func prefixed(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = builtinPrefix + n
	}
	return out
}

// statSources picks where metrics and pods come from: a capture, the
// Prometheus given, the control plane's Prometheus through a port-forward,
// or, when no Prometheus answers, the proxies themselves. close ends
// whatever the sources hold open.
func (f *Factory) statSources(ctx context.Context, opts *StatOptions) (src stat.MetricSource, pods stat.PodSource, close func(), err error) {
	close = func() {}
	if opts.Capture != "" {
		c, err := openCapture(opts.Capture)
		if err != nil {
			return nil, nil, close, err
		}
		if !opts.WindowSet {
			opts.Window = 0
		}
		return c, c, close, nil
	}
	if opts.PrometheusURL != "" {
		p, err := stat.NewPrometheus(opts.PrometheusURL)
		if err != nil {
			return nil, nil, close, &usageError{err}
		}
		p.Now = opts.At
		// Pods are optional with Prometheus: they fill the MESHED column.
		if client, err := f.KubeClient(); err == nil {
			pods = stat.OptionalPods{Source: stat.KubePods{Client: client}, Warn: f.warn}
		}
		return p, pods, close, nil
	}
	client, err := f.KubeClient()
	if err != nil {
		return nil, nil, close, fmt.Errorf("no metrics source: %v; or give --prometheus-url or --capture", err)
	}
	kubePods := stat.KubePods{Client: client}
	cfg, err := f.RESTConfig()
	if err != nil {
		return nil, nil, close, err
	}
	cp, err := stat.ConnectControlPlanePrometheus(ctx, cfg, client, f.LinkerdNamespace)
	if err == nil {
		p, err := stat.NewPrometheus(cp.URL)
		if err != nil {
			cp.Close()
			return nil, nil, close, err
		}
		p.Name = fmt.Sprintf("%s (pod %s, port-forwarded)", cp.URL, cp.Pod)
		p.Now = opts.At
		return p, kubePods, cp.Close, nil
	}
	if ctx.Err() != nil {
		return nil, nil, close, ctx.Err()
	}
	if !opts.At.IsZero() {
		return nil, nil, close, fmt.Errorf("--at needs a Prometheus, and none answered: %v", err)
	}
	f.warn(fmt.Sprintf("no Prometheus answered (%v); scraping every meshed proxy directly, which takes the whole window (%s)", err, opts.Window))
	scraper := &stat.Scraper{Fetcher: stat.ProxyFetcher{Client: client}}
	scraper.Warn = f.warn
	if f.IO.IsStderrTTY() {
		start := time.Now()
		scraper.Progress = func(left time.Duration, pods int) {
			// Short waits need no progress; longer ones say how long is left.
			if time.Since(start) < progressAfter {
				return
			}
			fmt.Fprintf(f.IO.ErrOut, "\rScraping %d proxies: %s left ", pods, left.Round(time.Second))
		}
	}
	return scraper, kubePods, close, nil
}

// progressAfter is how long direct scraping runs before it shows progress.
const progressAfter = 3 * time.Second

func runStat(ctx context.Context, f *Factory, opts *StatOptions) error {
	var qs []stat.Query
	for _, r := range opts.Resources {
		qs = append(qs, stat.Query{Resource: r, From: opts.From, To: opts.To, Window: opts.Window, PodSelector: opts.Selector, Unmeshed: opts.Unmeshed})
	}
	if opts.Capture == "" && opts.PrometheusURL == "" {
		// A typo fails before any Prometheus is looked for.
		if client, err := f.KubeClient(); err == nil {
			if err := stat.CheckExists(ctx, qs, stat.KubePods{Client: client}); err != nil {
				return err
			}
		}
	}
	src, pods, closeSrc, err := f.statSources(ctx, opts)
	if err != nil {
		return err
	}
	defer closeSrc()
	_, scraping := src.(*stat.Scraper)
	res, err := stat.ComputeAll(ctx, qs, src, pods)
	if f.IO.IsStderrTTY() && scraping {
		fmt.Fprint(f.IO.ErrOut, "\r\x1b[K")
	}
	if err != nil {
		var we *stat.WindowError
		if errors.As(err, &we) {
			return &usageError{err}
		}
		return err
	}
	for _, w := range res.Warnings {
		f.warn(w)
	}
	if opts.Capture != "" && opts.WindowSet && res.Window != opts.Window {
		fmt.Fprintf(f.IO.ErrOut, "Note: the window is %s, the span of the capture's rounds closest to -t %s\n", res.Window, opts.Window)
	}
	if len(res.Rows) == 0 && opts.Output != "json" {
		fmt.Fprintln(f.IO.ErrOut, "No traffic found.")
		return nil
	}
	return printStat(f.IO, opts, res)
}

// parseAt reads --at: an RFC 3339 time, or a duration meaning that long
// before now. The instant must not be in the future.
func parseAt(value string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(value); err == nil {
		if d < 0 {
			return time.Time{}, usageErrorf("--at %q: give a duration ago as a positive value, e.g. 90m", value)
		}
		return now.Add(-d), nil
	}
	at, err := time.Parse(time.RFC3339, value)
	if err != nil {
		return time.Time{}, usageErrorf("--at %q: want an RFC 3339 time (2026-11-22T03:15:00Z) or a duration ago (90m)", value)
	}
	if at.After(now) {
		return time.Time{}, usageErrorf("--at %s is in the future", value)
	}
	return at, nil
}
