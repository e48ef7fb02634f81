package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"meshtls/preview"
	"meshtls/stat"
	"meshtls/tap"
)

// Exit codes of `linkerd tls preview`, as diff's: scripts gate on them.
const (
	previewNobodyRefused = 0
	previewSomeRefused   = 1
	previewTrouble       = 2
)

func newTLSCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Work with the mesh's TLS policy: preview who requiring TLS would refuse",
		Long: `Commands about the TLS policy of meshed workloads. Today: preview, which
names the clients that requiring TLS (linkerd.io/tls: required) on a
workload or namespace would refuse, from live data, before anything changes.`,
		Example: `  # Who would be refused if web required TLS?
  linkerd tls preview deploy/web -n emojivoto --watch 30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newTLSPreviewCmd(f, nil))
	return cmd
}

// PreviewOptions is what `linkerd tls preview` needs once flags are parsed.
type PreviewOptions struct {
	Resource stat.Resource
	Target   tap.Target
	// Window is the metrics' window; zero reads no metrics (--watch only).
	Window        time.Duration
	WindowSet     bool
	Watch         time.Duration
	Output        string
	Capture       string
	PrometheusURL string
	Replay        string
}

func newTLSPreviewCmd(f *Factory, runF func(context.Context, *PreviewOptions) error) *cobra.Command {
	var (
		window                   time.Duration
		watch                    time.Duration
		output, capture, promURL string
		replay                   string
		noMetrics                bool
	)
	cmd := &cobra.Command{
		Use:   "preview RESOURCE",
		Short: "Name the clients that requiring TLS on a workload or namespace would refuse",
		Long: `Before you require TLS on a workload (linkerd inject --tls=required) or a
namespace, preview names every client that would be refused: each one that
reached the target without mutual TLS, with the reason its traffic was plain
text and its request rate.

Evidence comes from two places:
  metrics    the target's proxies over the window (-t, default 1h), from the
             control plane's Prometheus, --prometheus-url, or --capture. They
             name meshed clients by workload; plain text from clients without
             a proxy is one "(unmeshed)" row, since no proxy of theirs counts it.
  live tap   with --watch, the target's proxies are tapped for that long, and
             every plain-text client is named by workload, pod or address,
             unmeshed ones included. Use it for clients too rare for the window
             or to name the unmeshed row.

The kubelet's HTTP probes to the target's pods stay allowed in required mode,
so tap does not list them (it counts them as exempt).

Exit status: 0 when no client would be refused, 1 when some would, 2 when the
preview could not be made (no metrics, no tap API, bad arguments). A target
with no traffic at all exits 0 and says so on stderr.

RESOURCE is a workload (deploy/web, sts/db, ds/agent, po/web-1, …) or a
namespace (ns/emojivoto).`,
		Example: `  # Who would break if web required TLS? (metrics of the last hour)
  linkerd tls preview deploy/web -n emojivoto

  # Also watch live traffic for 30 seconds, naming unmeshed clients
  linkerd tls preview deploy/web -n emojivoto --watch 30s

  # A whole namespace, as JSON for a script
  linkerd tls preview ns/emojivoto -o json

  # Gate a rollout on it
  linkerd tls preview deploy/web -n emojivoto && linkerd inject --tls=required ...

  # Offline, from the capture recorded from the live demo
  linkerd tls preview deploy/web -n emojivoto --capture builtin:emojivoto-live`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErrorf("tls preview needs one resource, such as deploy/web or ns/emojivoto: the workload or namespace that would require TLS (got %d arguments)", len(args))
			}
			return nil
		},
		ValidArgsFunction: statCompletion(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := previewOptions(f, args[0], previewFlags{
				window: window, windowSet: cmd.Flags().Changed("time-window"), watch: watch, output: output,
				capture: capture, promURL: promURL, replay: replay, noMetrics: noMetrics,
				namespaceSet: cmd.Flags().Changed("namespace"),
			})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			if runF != nil {
				return runF(ctx, opts)
			}
			return runPreview(ctx, f, opts)
		},
	}
	flags := cmd.Flags()
	flags.DurationVarP(&window, "time-window", "t", time.Hour, "window of metrics to look at (e.g. 10m, 1h, 24h)")
	flags.DurationVar(&watch, "watch", 0, "also tap the target live for this long (e.g. 30s) and name every plain-text client")
	flags.BoolVar(&noMetrics, "no-metrics", false, "read no metrics: only the live tap (needs --watch)")
	flags.StringVarP(&output, "output", "o", "table", "output format: table or json")
	flags.StringVar(&capture, "capture", "", "read metrics from a capture directory (or builtin:emojivoto-live) instead of Prometheus")
	flags.StringVar(&promURL, "prometheus-url", "", "query this Prometheus (e.g. http://127.0.0.1:9090) instead of the control plane's")
	flags.StringVar(&replay, "replay", "", "read the live part from a tap recording (linkerd tap --record) instead of the tap API")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion("table", "json"))
	_ = cmd.RegisterFlagCompletionFunc("watch", fixedCompletion("10s", "30s", "1m", "5m"))
	_ = cmd.RegisterFlagCompletionFunc("time-window", fixedCompletion("10m", "1h", "6h", "24h"))
	return cmd
}

type previewFlags struct {
	window, watch                      time.Duration
	windowSet, noMetrics, namespaceSet bool
	output, capture, promURL, replay   string
}

func previewOptions(f *Factory, arg string, fl previewFlags) (*PreviewOptions, error) {
	ns := f.Namespace()
	r, err := stat.ParseResource([]string{arg}, ns)
	if err != nil {
		return nil, &usageError{err}
	}
	if r.Name == "" {
		return nil, usageErrorf("tls preview needs one named resource such as deploy/web or ns/emojivoto, not every %s", r.Kind)
	}
	switch r.Kind {
	case stat.KindAuthority, stat.KindService:
		return nil, usageErrorf("cannot require TLS on a %s: give the workload that serves it (deploy/NAME) or its namespace (ns/NAME)", r.Kind)
	case stat.KindNamespace:
		if fl.namespaceSet {
			return nil, usageErrorf("-n/--namespace cannot be used with a namespace: give ns/NAME alone")
		}
	}
	target, err := tap.ParseTarget([]string{r.Kind.Short() + "/" + r.Name}, ns)
	if err != nil {
		return nil, &usageError{err}
	}
	opts := &PreviewOptions{Resource: r, Target: target, Window: fl.window, WindowSet: fl.windowSet, Watch: fl.watch,
		Output: fl.output, Capture: fl.capture, PrometheusURL: fl.promURL, Replay: fl.replay}
	switch opts.Output {
	case "table", "json":
	default:
		return nil, usageErrorf("unknown output format %q: use table or json", opts.Output)
	}
	if fl.window <= 0 {
		return nil, usageErrorf("--time-window must be positive, got %s", fl.window)
	}
	if fl.watch < 0 {
		return nil, usageErrorf("--watch must not be negative, got %s", fl.watch)
	}
	if fl.capture != "" && fl.promURL != "" {
		return nil, usageErrorf("--capture and --prometheus-url cannot be used together")
	}
	if fl.noMetrics {
		if fl.watch == 0 {
			return nil, usageErrorf("--no-metrics leaves only the live tap: give --watch too (e.g. --watch 30s)")
		}
		if fl.capture != "" || fl.promURL != "" {
			return nil, usageErrorf("--no-metrics cannot be used with --capture or --prometheus-url")
		}
		opts.Window = 0
	}
	if fl.replay != "" && fl.watch == 0 {
		return nil, usageErrorf("--replay feeds the live part: give --watch too (the replay is read for that long at most)")
	}
	return opts, nil
}

// previewError reports a preview that could not be made: exit 2, so that
// a script can tell it from "some client would be refused" (1).
func previewError(f *Factory, err error) error {
	fmt.Fprintln(f.IO.ErrOut, "Error: "+oneLine(err.Error()))
	return &ExitError{Code: previewTrouble}
}

func runPreview(ctx context.Context, f *Factory, opts *PreviewOptions) error {
	rep := &preview.Report{Target: opts.Resource.Kind.Short() + "/" + opts.Resource.Name, Namespace: opts.Resource.Namespace}
	if opts.Resource.Kind == stat.KindNamespace {
		rep.Namespace = opts.Resource.Name
	}
	if opts.Window > 0 {
		if err := previewMetrics(ctx, f, opts, rep); err != nil {
			return previewError(f, err)
		}
	}
	if opts.Watch > 0 {
		if err := previewTap(ctx, f, opts, rep); err != nil {
			return previewError(f, err)
		}
	}
	if err := printPreview(f, opts, rep); err != nil {
		return previewError(f, err)
	}
	if rep.Refused() {
		return &ExitError{Code: previewSomeRefused}
	}
	return nil
}

func previewMetrics(ctx context.Context, f *Factory, opts *PreviewOptions, rep *preview.Report) error {
	sopts := &StatOptions{Resource: opts.Resource, Resources: []stat.Resource{opts.Resource}, Window: opts.Window,
		WindowSet: opts.WindowSet, Output: "json", Capture: opts.Capture, PrometheusURL: opts.PrometheusURL}
	q := stat.Query{Resource: opts.Resource, Window: opts.Window}
	if opts.Capture == "" && opts.PrometheusURL == "" {
		if client, err := f.KubeClient(); err == nil {
			if err := stat.CheckExists(ctx, []stat.Query{q}, stat.KubePods{Client: client}); err != nil {
				return err
			}
		}
	}
	src, pods, closeSrc, err := f.statSources(ctx, sopts)
	if err != nil {
		return err
	}
	defer closeSrc()
	if _, scraping := src.(*stat.Scraper); scraping {
		return errors.New("no Prometheus answered, and a preview needs the window's history: give --prometheus-url, or use --watch 30s --no-metrics for the live tap alone")
	}
	q.Window = sopts.Window
	res, err := stat.Compute(ctx, q, src, pods)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		f.warn(w)
	}
	rep.AddRows(res.Rows, res.Window)
	return nil
}

func previewTap(ctx context.Context, f *Factory, opts *PreviewOptions, rep *preview.Report) error {
	tally := &preview.Tally{TargetNamespace: rep.Namespace}
	if opts.Replay == "" {
		client, err := f.KubeClient()
		if err != nil {
			return fmt.Errorf("--watch taps the cluster: %v", err)
		}
		if tally.Probes, err = targetProbes(ctx, client, opts.Target); err != nil {
			return err
		}
	}
	src, closer, err := f.tapSource(&TapOptions{Replay: opts.Replay, Query: tap.Query{Target: opts.Target}})
	if err != nil {
		return err
	}
	defer func() { _ = closer.Close() }()
	wctx, cancel := context.WithTimeout(ctx, opts.Watch)
	defer cancel()
	if f.IO.IsStderrTTY() {
		fmt.Fprintf(f.IO.ErrOut, "Watching %s for %s…\n", opts.Target, fmtWatch(opts.Watch))
	}
	st, err := tap.Run(wctx, tap.RunConfig{Source: src, Query: tap.Query{Target: opts.Target}, Emit: func(e *tap.Event) error {
		tally.Observe(e)
		return nil
	}})
	if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("tap: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if st.Dropped > 0 {
		f.warn(fmt.Sprintf("tap dropped %d events: a client seen only in them is missing from the list", st.Dropped))
	}
	rep.AddTally(tally, opts.Watch)
	return nil
}

func fmtWatch(d time.Duration) string { return d.Round(time.Second).String() }

// targetProbes lists the HTTP probes of the target's pods: required mode
// lets the kubelet's probes through, so they are not refused clients.
func targetProbes(ctx context.Context, client kubernetes.Interface, t tap.Target) ([]preview.Probe, error) {
	pods, err := client.CoreV1().Pods(t.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("cannot list the pods of %s: %v", t, err)
	}
	var out []preview.Probe
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
				if pr == nil || pr.HTTPGet == nil {
					continue
				}
				if port, ok := probePort(pr.HTTPGet.Port, c); ok {
					out = append(out, preview.Probe{Port: port, Path: pr.HTTPGet.Path})
				}
			}
		}
	}
	return out, nil
}

func probePort(p intstr.IntOrString, c corev1.Container) (int, bool) {
	if p.Type == intstr.Int {
		return p.IntValue(), true
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), true
		}
	}
	return 0, false
}

func printPreview(f *Factory, opts *PreviewOptions, rep *preview.Report) error {
	if opts.Output == "json" {
		type jsonReport struct {
			*preview.Report
			WindowSeconds float64 `json:"window_seconds"`
			WatchSeconds  float64 `json:"watch_seconds"`
			Refused       bool    `json:"refused"`
		}
		if rep.Clients == nil {
			rep.Clients = []preview.Client{}
		}
		enc := json.NewEncoder(f.IO.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(jsonReport{Report: rep, WindowSeconds: rep.Window.Seconds(), WatchSeconds: rep.Watch.Seconds(), Refused: rep.Refused()})
	}
	if !rep.Refused() {
		fmt.Fprintln(f.IO.ErrOut, tap.Escape(rep.Summary()))
		return nil
	}
	fmt.Fprintln(f.IO.Out, tap.Escape(rep.Summary()))
	fmt.Fprintln(f.IO.Out)
	out := &trimWriter{w: f.IO.Out}
	defer out.Flush()
	tbl := newTable(out, 5, 2)
	tbl.Header("CLIENT", "REASON", "REQUESTS", "RPS", "SEEN BY")
	for _, c := range rep.Clients {
		if err := tbl.Append(tap.Escape(c.Source), tap.Escape(c.Reason), strconv.FormatInt(int64(c.Requests+0.5), 10),
			rpsCell(c.RPS), strings.Join(c.Seen, ",")); err != nil {
			return err
		}
	}
	return tbl.Render()
}
