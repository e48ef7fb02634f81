package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"meshtls/check"
	"meshtls/dashboard"
	"meshtls/fixtures"
	"meshtls/stat"
	"meshtls/tap"
)

// DashboardOptions is everything `linkerd dashboard` needs once flags are
// parsed.
type DashboardOptions struct {
	Capture       string
	Replay        string
	PrometheusURL string
	Window        time.Duration
	WindowSet     bool
	Refresh       time.Duration
	Speed         float64
	Port          int
	Show          string
	MaxEvents     float64
}

func newDashboardCmd(f *Factory) *cobra.Command {
	var opts DashboardOptions
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve a local web page showing how much traffic is encrypted, and why the rest is not",
		Long: `Serve a read-only web dashboard on 127.0.0.1: every namespace with its
request rate, success rate and TLS share; a namespace's deployments and
authorities as 'linkerd stat -o wide' shows them (why traffic is plain text,
and who sends it); a deployment's edges and a live list of its requests,
each marked encrypted or plain with the reason; and the 'check --tls'
results with their hints.

The figures come from the same stat, tap and check engines as 'linkerd stat',
'linkerd tap' and 'linkerd check --tls', found the same way: with a cluster,
the control plane's Prometheus through a port-forward (or --prometheus-url),
else every meshed proxy scraped directly; the live list from the tap API.
Open pages refresh their tables every --refresh without reloading, and each
deployment gets a chart of its RPS and TLS share over the last windows.

Offline, --capture is a recorded capture (builtin:emojivoto and
builtin:mixed ship with the CLI) and --replay a tap recording
(builtin:emojivoto) played for each live list that is opened.

The dashboard acts with your kube credentials, so it answers only your
browser: the URL it prints carries a random token for this run (traded at
once for an HttpOnly, SameSite=Strict cookie), and it refuses any Host but
127.0.0.1, localhost or [::1] with its port (DNS rebinding) and requests
from any other origin. Open the printed URL; another user of this machine,
or a web page you visit, gets 403.

Ctrl-C stops the server.`,
		Example: `  # The cluster of the current kubeconfig context
  linkerd dashboard

  # A Prometheus of your own, figures over 5 minutes
  linkerd dashboard --prometheus-url http://127.0.0.1:9090 -t 5m

  # The built-in capture and tap recording, on a free port
  linkerd dashboard --capture builtin:emojivoto --replay builtin:emojivoto

  # A fixed port, and open it in the browser
  linkerd dashboard --capture builtin:mixed --port 50750 --show browser

  # A recorded capture directory, the tap recording played twice as fast
  linkerd dashboard --capture ./capture --replay /tmp/emojivoto.jsonl --speed 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.WindowSet = cmd.Flags().Changed("time-window")
			if err := opts.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			err := runDashboard(ctx, f, &opts)
			if err == nil && ctx.Err() != nil && cmd.Context().Err() == nil {
				// Ctrl-C is how a server is stopped: exit as a shell does.
				return &ExitError{Code: 130}
			}
			return err
		},
	}
	flags := cmd.Flags()
	flags.StringVar(&opts.Capture, "capture", "", "read figures from a capture directory (or builtin:emojivoto, builtin:mixed)")
	flags.StringVar(&opts.Replay, "replay", "", "play this tap recording (a file, or builtin:emojivoto) in each live list")
	flags.StringVar(&opts.PrometheusURL, "prometheus-url", "", "query this Prometheus (e.g. http://127.0.0.1:9090) instead of the control plane's")
	flags.DurationVarP(&opts.Window, "time-window", "t", time.Minute, "window the figures cover (direct scraping: 10s unless given)")
	flags.DurationVar(&opts.Refresh, "refresh", dashboard.DefaultRefresh, "how often open pages get fresh tables")
	flags.Float64Var(&opts.Speed, "speed", 1, "replay pace: 1 as recorded, 2 twice as fast, 0 as fast as possible")
	flags.IntVar(&opts.Port, "port", 0, "port to listen on at 127.0.0.1 (0: a free one)")
	flags.StringVar(&opts.Show, "show", "url", "url prints the address; browser also opens it with xdg-open")
	flags.Float64Var(&opts.MaxEvents, "max-events", dashboard.DefaultMaxEvents, "most tap events per second sent to one page; the rest are counted as dropped")
	_ = cmd.RegisterFlagCompletionFunc("show", fixedCompletion("url", "browser"))
	_ = cmd.RegisterFlagCompletionFunc("capture", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"builtin:emojivoto", "builtin:mixed"}, cobra.ShellCompDirectiveFilterDirs
	})
	return cmd
}

func (o *DashboardOptions) validate() error {
	if o.Capture != "" && o.PrometheusURL != "" {
		return usageErrorf("--capture and --prometheus-url cannot be used together")
	}
	if o.Window <= 0 {
		return usageErrorf("--time-window must be positive, got %s", o.Window)
	}
	if o.Refresh < time.Second {
		return usageErrorf("--refresh must be at least 1s, got %s", o.Refresh)
	}
	switch o.Show {
	case "url", "browser":
	default:
		return usageErrorf("unknown --show %q: use url or browser", o.Show)
	}
	if o.Port < 0 || o.Port > 65535 {
		return usageErrorf("--port %d is out of range 0-65535", o.Port)
	}
	if o.Speed < 0 {
		return usageErrorf("--speed must not be negative, got %g", o.Speed)
	}
	if o.MaxEvents <= 0 {
		return usageErrorf("--max-events must be positive, got %g", o.MaxEvents)
	}
	return nil
}

// captureFS resolves a --capture value to its files, for the history
// charts (openCapture resolves the same value for the figures).
func captureFS(value string) (fs.FS, error) {
	if name, ok := strings.CutPrefix(value, builtinPrefix); ok {
		return fixtures.Capture(name)
	}
	return os.DirFS(value), nil
}

// dashboardSources fills cfg's figures, history and check as `stat` and
// `check` would find them; close ends what they hold open.
func dashboardSources(ctx context.Context, f *Factory, opts *DashboardOptions, cfg *dashboard.Config) (close func(), err error) {
	close = func() {}
	if opts.Capture != "" {
		c, err := openCapture(opts.Capture)
		if err != nil {
			return close, err
		}
		cfg.Metrics, cfg.Pods, cfg.Static = c, c, true
		cfg.SourceName = "capture " + opts.Capture
		if opts.WindowSet {
			cfg.Window = opts.Window
		}
		fsys, err := captureFS(opts.Capture)
		if err != nil {
			return close, err
		}
		if cfg.History, cfg.HistoryNote, err = dashboard.CaptureHistory(fsys, opts.Capture); err != nil {
			return close, err
		}
		cfg.CheckNote = "Check needs a cluster: this dashboard shows a recorded capture (--capture). Start it without --capture, with a kubeconfig, to run linkerd check --tls here."
		return close, nil
	}
	sopts := &StatOptions{Window: opts.Window, WindowSet: true, PrometheusURL: opts.PrometheusURL}
	src, pods, closeSrc, err := f.statSources(ctx, sopts)
	if err != nil {
		return close, err
	}
	cfg.Metrics, cfg.Pods, cfg.Window = src, pods, opts.Window
	switch p := src.(type) {
	case *stat.Prometheus:
		cfg.SourceName = "Prometheus " + opts.PrometheusURL
		if opts.PrometheusURL == "" {
			cfg.SourceName = "the control plane's Prometheus (port-forwarded)"
		}
		cfg.History = &dashboard.PrometheusHistory{Prometheus: p, Window: opts.Window}
	case *stat.Scraper:
		cfg.SourceName = "every meshed proxy, scraped directly"
		if !opts.WindowSet {
			// Each page waits one window for the second scrape.
			cfg.Window = 10 * time.Second
		}
		cfg.Refresh = max(cfg.Refresh, cfg.Window)
		// The page must not print progress on the terminal.
		p.Progress = nil
		cfg.HistoryNote = "No history: without Prometheus, figures come from scraping the proxies, which keep no history."
	default:
		cfg.SourceName = "live metrics"
	}
	if _, err := f.KubeClient(); err == nil {
		cfg.Check = &check.Config{ControlNamespace: f.LinkerdNamespace, TLS: true,
			NewClient: func() (kubernetes.Interface, error) { return f.KubeClient() }}
	} else {
		cfg.CheckNote = "Check needs a cluster: " + err.Error()
	}
	return closeSrc, nil
}

// newDashboard builds the dashboard's handler on the sources `stat`,
// `tap` and `check` would use; close ends what they hold open.
func newDashboard(ctx context.Context, f *Factory, opts *DashboardOptions) (srv *dashboard.Server, cfg dashboard.Config, close func(), err error) {
	cfg = dashboard.Config{
		MaxEvents: opts.MaxEvents, Refresh: opts.Refresh, ControlNamespace: f.LinkerdNamespace,
		ErrorLog: log.New(f.IO.ErrOut, "dashboard: ", 0),
	}
	close, err = dashboardSources(ctx, f, opts, &cfg)
	if err != nil {
		close()
		return nil, cfg, func() {}, err
	}
	switch {
	case opts.Replay != "":
		topts := &TapOptions{Replay: opts.Replay, Speed: opts.Speed}
		// Open it once now so a missing or broken file fails at start.
		_, closer, err := f.tapSource(topts)
		if err != nil {
			close()
			return nil, cfg, func() {}, err
		}
		_ = closer.Close()
		cfg.TapName = "replay " + opts.Replay
		cfg.Tap = func() (tap.Source, io.Closer, error) { return f.tapSource(topts) }
	case opts.Capture != "":
		cfg.TapNote = "No live list: this dashboard shows a recorded capture; add --replay FILE (or --replay builtin:emojivoto) to play a tap recording here."
	case f.TapSource != nil:
		// The tap API needs a cluster; without one the page says so rather
		// than promising a live list that fails when opened.
		if _, err := f.TapSource(); err != nil {
			cfg.TapNote = "Tap API not available: " + err.Error() + "."
			break
		}
		cfg.TapName = "the tap API"
		cfg.Tap = func() (tap.Source, io.Closer, error) { return f.tapSource(&TapOptions{}) }
		// A request is up to three events (request, response, end): a
		// page never shows more requests a second than it does events,
		// so the rest need not leave the cluster.
		cfg.TapMaxRPS = opts.MaxEvents
	default:
		cfg.TapNote = "Tap API not available: " + errNoTapAPI.Error() + "."
	}
	srv, err = dashboard.New(cfg)
	if err != nil {
		close()
		return nil, cfg, func() {}, err
	}
	return srv, cfg, close, nil
}

func runDashboard(ctx context.Context, f *Factory, opts *DashboardOptions) error {
	srv, cfg, closeSrc, err := newDashboard(ctx, f, opts)
	if err != nil {
		return err
	}
	defer closeSrc()
	if cfg.Static {
		// A capture never changes: read it once, now, so the first visitor
		// of each namespace page does not wait for the engine.
		start := time.Now()
		if n, err := srv.Warm(ctx); err != nil {
			cfg.ErrorLog.Printf("pages will be computed when asked: %v", err)
		} else if n > 0 {
			fmt.Fprintf(f.IO.ErrOut, "Read %s: %d pages ready in %s.\n", cfg.SourceName, n, time.Since(start).Round(time.Millisecond))
		}
	}
	// Loopback only, and behind a per-run token and a Host and Origin
	// check: the dashboard acts with the user's kube credentials.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.Port)))
	if err != nil {
		return fmt.Errorf("cannot listen on 127.0.0.1:%d: %v", opts.Port, err)
	}
	token, err := dashboard.NewToken()
	if err != nil {
		_ = ln.Close()
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	url := "http://" + ln.Addr().String() + "/?" + dashboard.TokenParam + "=" + token
	// Live lists end with the server: their requests' context is this one.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	hs := &http.Server{Handler: dashboard.Guard(srv, port, token), ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return baseCtx },
		ErrorLog: cfg.ErrorLog}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	fmt.Fprintf(f.IO.Out, "Dashboard: %s\n", url)
	if opts.Show == "browser" {
		openBrowser(f, url)
	}
	fmt.Fprintln(f.IO.ErrOut, "Press Ctrl-C to stop.")
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	cancelBase()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("stopping the dashboard: %v", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// openBrowser tries xdg-open only; when it is missing the URL printed
// above is the way in, and the user is told so.
func openBrowser(f *Factory, url string) {
	path, err := exec.LookPath("xdg-open")
	if err != nil {
		fmt.Fprintln(f.IO.ErrOut, "Cannot open a browser: xdg-open is not installed; open the URL above yourself.")
		return
	}
	cmd := exec.Command(path, url)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(f.IO.ErrOut, "Cannot open a browser: %v; open the URL above yourself.\n", err)
		return
	}
	// xdg-open hands the URL to the browser and exits; reap it.
	go func() { _ = cmd.Wait() }()
}
