package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"

	"github.com/spf13/cobra"

	tapfixtures "meshtls/fixtures/tap"
	"meshtls/tap"
	"meshtls/tui"
)

// TapOptions is everything `linkerd tap` needs once flags are parsed.
type TapOptions struct {
	Query  tap.Query
	Filter *tap.Filter
	Output string
	// Replay plays a recording (a file, or builtin:NAME) instead of
	// tapping the cluster; Speed multiplies its pace (0: as fast as
	// possible).
	Replay string
	Speed  float64
	// Record writes what the source sends to this file.
	Record string
	TUI    bool
	ASCII  bool
}

type tapFlags struct {
	toNS, to                string
	method, path, authority string
	scheme, filter, output  string
	replay, record          string
	maxRPS, speed           float64
	tui, ascii              bool
}

// errNoTapAPI is what a live tap says in a factory without a tap source.
var errNoTapAPI = errors.New("live tap needs the tap API (controller tap, tap.linkerd.io); use --replay FILE or --replay builtin:emojivoto")

func newTapCmd(f *Factory, runF func(context.Context, *TapOptions) error) *cobra.Command {
	var fl tapFlags
	cmd := &cobra.Command{
		Use:   "tap RESOURCE [NAME] | RESOURCE/NAME",
		Short: "Watch requests as they happen, and see which are encrypted",
		Long: `Watch the requests a workload's proxies handle, as they happen: each request,
its response and its end, and whether the connection was mutual TLS (and if
not, why).

Resource types: ` + tap.ValidTargetKinds + `.

Without --replay it taps the cluster through the tap API (tap.linkerd.io,
served by the control plane's controller tap behind the Kubernetes API
server), with your kubeconfig's credentials: you need watch on RESOURCE/tap
in group tap.linkerd.io (the ClusterRole linkerd-<control-ns>-tap-view). The
proxies and the tap API drop requests beyond --max-rps, across all pods, and
the count of dropped events is printed at the end (and shown in the TUI).

Output is Linkerd's text lines by default (req, rsp and end lines), -o wide
adds the peers' resources and identities or the no_tls_reason, -o json prints
one object per event. --tui opens a live view (pause, filter, detail pane,
per-edge aggregate with TLS%).

--filter EXPR keeps events matching predicates on any field, joined with &&,
|| and ! and grouped with parentheses:
  status>=500   tls!=true   latency>100ms   src.namespace==emojivoto
  path^=/api    method==POST   grpc_status!=OK   dst.resource==deploy/voting
Fields: ` + strings.Join(tap.FieldNames(), ", ") + `.
A predicate on something an event does not have yet (the status of a request
line) is false.

--record FILE writes the stream as JSON lines; --replay FILE plays one back
without a cluster, at its recorded pace (--speed 2 doubles it, --speed 0 is as
fast as possible). builtin:emojivoto (generated) and builtin:emojivoto-live
(recorded from the live demo) ship with the CLI.`,
		Example: `  # Every request to and from the web deployment, live
  linkerd tap deploy/web -n emojivoto

  # The same as JSON, one object per event
  linkerd tap deploy/web -n emojivoto -o json

  # Every request to and from the web deployment, from the built-in recording
  linkerd tap deploy/web -n emojivoto --replay builtin:emojivoto

  # The live view
  linkerd tap deploy/web -n emojivoto --replay fixtures/tap/emojivoto.jsonl --tui

  # Only plain-text requests, with why they were not encrypted
  linkerd tap deploy/web -n emojivoto --replay builtin:emojivoto --filter 'tls!=true' -o wide

  # Failures or slow answers from web to voting, as JSON for scripts
  linkerd tap deploy/web -n emojivoto --to deploy/voting --replay builtin:emojivoto --speed 0 \
      --filter 'status>=500 || grpc_status!=OK || latency>100ms' -o json

  # Record a session, replay it later
  linkerd tap ns/emojivoto --record /tmp/emojivoto.jsonl
  linkerd tap ns/emojivoto --replay /tmp/emojivoto.jsonl --tui`,
		Args: cobra.RangeArgs(1, 2),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return tap.TargetKindNames(), cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := fl.toOptions(f, args)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			if runF != nil {
				return runF(ctx, opts)
			}
			return runTap(ctx, f, opts)
		},
	}
	flags := cmd.Flags()
	flags.StringVar(&fl.to, "to", "", "only requests from the resource to this one (e.g. deploy/voting)")
	flags.StringVar(&fl.toNS, "to-namespace", "", "namespace of the --to resource (default: -n)")
	flags.StringVar(&fl.method, "method", "", "only requests with this HTTP method")
	flags.StringVar(&fl.path, "path", "", "only requests whose path starts with this")
	flags.StringVar(&fl.authority, "authority", "", "only requests to this authority (host:port)")
	flags.StringVar(&fl.scheme, "scheme", "", "only requests with this scheme (http, https)")
	flags.Float64Var(&fl.maxRPS, "max-rps", 100, "most requests per second to show; the rest are counted as dropped (0: no cap)")
	flags.StringVar(&fl.filter, "filter", "", "keep events matching this expression (e.g. 'status>=500 || tls!=true')")
	flags.StringVarP(&fl.output, "output", "o", "text", "output format: text, wide or json")
	flags.StringVar(&fl.replay, "replay", "", "play back a recording (a file written by --record, or builtin:emojivoto) instead of the cluster")
	flags.Float64Var(&fl.speed, "speed", 1, "replay pace: 1 as recorded, 2 twice as fast, 0 as fast as possible")
	flags.StringVar(&fl.record, "record", "", "write the stream to this file as JSON lines, for --replay")
	flags.BoolVar(&fl.tui, "tui", false, "show a live, interactive view (text lines when stdout is not a terminal)")
	flags.BoolVar(&fl.ascii, "ascii", false, "in the TUI, draw ASCII marks instead of the lock (automatic when the locale is not UTF-8)")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion("text", "wide", "json"))
	_ = cmd.RegisterFlagCompletionFunc("method", fixedCompletion("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"))
	_ = cmd.RegisterFlagCompletionFunc("scheme", fixedCompletion("http", "https"))
	_ = cmd.RegisterFlagCompletionFunc("replay", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		names := []string{}
		for _, n := range tapfixtures.Names() {
			names = append(names, builtinPrefix+n)
		}
		return names, cobra.ShellCompDirectiveDefault
	})
	_ = cmd.RegisterFlagCompletionFunc("to", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"deploy/", "po/", "sts/", "ds/", "ns/"}, cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
	})
	_ = cmd.RegisterFlagCompletionFunc("filter", func(_ *cobra.Command, _ []string, typed string) ([]string, cobra.ShellCompDirective) {
		// Complete the field of the predicate being typed.
		i := strings.LastIndexAny(typed, "&|!( ")
		prefix := typed[:i+1]
		var out []string
		for _, n := range tap.FieldNames() {
			out = append(out, prefix+n)
		}
		return out, cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

func (fl *tapFlags) toOptions(f *Factory, args []string) (*TapOptions, error) {
	ns := f.Namespace()
	target, err := tap.ParseTarget(args, ns)
	if err != nil {
		return nil, &usageError{err}
	}
	opts := &TapOptions{
		Query: tap.Query{Target: target, Method: fl.method, PathPrefix: fl.path, Authority: fl.authority,
			Scheme: fl.scheme, MaxRPS: fl.maxRPS},
		Output: fl.output, Replay: fl.replay, Speed: fl.speed, Record: fl.record, TUI: fl.tui, ASCII: fl.ascii,
	}
	switch opts.Output {
	case tap.FormatText, tap.FormatWide, tap.FormatJSON:
	default:
		return nil, usageErrorf("unknown output format %q: use text, wide or json", opts.Output)
	}
	if fl.maxRPS < 0 {
		return nil, usageErrorf("--max-rps must not be negative, got %g", fl.maxRPS)
	}
	if fl.speed < 0 {
		return nil, usageErrorf("--speed must not be negative, got %g", fl.speed)
	}
	if fl.to != "" {
		toNS := fl.toNS
		if toNS == "" {
			toNS = ns
		}
		if !strings.Contains(fl.to, "/") {
			return nil, usageErrorf("--to %q: want TYPE/NAME, e.g. deploy/voting", fl.to)
		}
		to, err := tap.ParseTarget([]string{fl.to}, toNS)
		if err != nil {
			return nil, &usageError{fmt.Errorf("--to: %v", err)}
		}
		opts.Query.To = &to
	} else if fl.toNS != "" {
		to := tap.Target{Kind: tap.KindNamespace, Name: fl.toNS, Namespace: fl.toNS}
		opts.Query.To = &to
	}
	if opts.Filter, err = tap.ParseFilter(fl.filter); err != nil {
		return nil, usageErrorf("invalid --filter %q: %v", fl.filter, err)
	}
	if opts.Record != "" && opts.Record == opts.Replay {
		return nil, usageErrorf("--record and --replay name the same file %s", opts.Record)
	}
	return opts, nil
}

// tapSource opens the replay, or the live tap API.
func (f *Factory) tapSource(opts *TapOptions) (tap.Source, io.Closer, error) {
	if opts.Replay == "" {
		if f.TapSource == nil {
			return nil, nil, errNoTapAPI
		}
		src, err := f.TapSource()
		return src, io.NopCloser(nil), err
	}
	var (
		file fs.File
		err  error
	)
	if name, ok := strings.CutPrefix(opts.Replay, builtinPrefix); ok {
		file, err = tapfixtures.Open(name)
	} else {
		file, err = os.Open(opts.Replay)
		if err != nil {
			err = fmt.Errorf("cannot read replay file: %w", err)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	rr, err := tap.NewRecordingReader(file, opts.Replay)
	if err != nil {
		file.Close()
		return nil, nil, err
	}
	return tap.NewReplay(rr, tap.ReplayOptions{Speed: opts.Speed}), file, nil
}

func runTap(ctx context.Context, f *Factory, opts *TapOptions) error {
	src, closer, err := f.tapSource(opts)
	if err != nil {
		return err
	}
	defer func() { _ = closer.Close() }()
	cfg := tap.RunConfig{Source: src, Query: opts.Query, Filter: opts.Filter}
	if opts.Record != "" {
		out, err := os.Create(opts.Record)
		if err != nil {
			return fmt.Errorf("cannot write recording: %w", err)
		}
		defer out.Close()
		h := tap.Header{Note: fmt.Sprintf("linkerd tap %s -n %s", opts.Query.Target, opts.Query.Target.Namespace)}
		if opts.Replay != "" {
			h.Note += ", re-recorded from " + opts.Replay
			if rp, ok := src.(*tap.Replay); ok {
				h.Certificates = rp.Certificates()
			}
		}
		if cfg.Recorder, err = tap.NewRecorder(out, h); err != nil {
			return fmt.Errorf("cannot write recording: %w", err)
		}
	}
	if opts.TUI {
		if f.IO.IsStdoutTTY() {
			return runTapTUI(ctx, f, opts, src, cfg)
		}
		fmt.Fprintln(f.IO.ErrOut, "Note: stdout is not a terminal; printing text lines instead of the TUI")
	}
	p, err := tap.NewPrinter(f.IO.Out, opts.Output)
	if err != nil {
		return &usageError{err}
	}
	cfg.Emit = p.Print
	st, err := tap.Run(ctx, cfg)
	if st.Dropped > 0 {
		f.warn(st.Summary())
	}
	return err
}

func runTapTUI(ctx context.Context, f *Factory, opts *TapOptions, src tap.Source, cfg tap.RunConfig) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, streamErr, wait := tui.Feed(ctx, func(ctx context.Context, emit func(*tap.Event) error) error {
		cfg.Emit = emit
		_, err := tap.Run(ctx, cfg)
		return err
	})
	tuiOpts := tui.Options{
		Events:           events,
		Err:              streamErr,
		Filter:           opts.Filter,
		Color:            f.IO.ColorEnabled(),
		ASCII:            opts.ASCII || !utf8Locale(),
		Title:            tapTitle(opts),
		ControlNamespace: f.LinkerdNamespace,
	}
	if certs, ok := src.(tap.CertLookup); ok {
		tuiOpts.Certs = certs
	}
	err := tui.Run(ctx, f.IO.In, f.IO.Out, tuiOpts)
	cancel()
	wait()
	return err
}

func tapTitle(opts *TapOptions) string {
	t := opts.Query.Target.String()
	if opts.Query.Target.Kind != tap.KindNamespace {
		t += " -n " + opts.Query.Target.Namespace
	}
	if opts.Query.To != nil {
		t += " --to " + opts.Query.To.String()
	}
	if opts.Replay != "" {
		t += "  (replay " + opts.Replay + ")"
	}
	return t
}

// utf8Locale says whether the terminal is likely to draw the lock, as
// the C library decides which charset to use.
func utf8Locale() bool {
	for _, v := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if s := os.Getenv(v); s != "" {
			s = strings.ToLower(s)
			return strings.Contains(s, "utf-8") || strings.Contains(s, "utf8")
		}
	}
	return false
}
