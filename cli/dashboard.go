package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"meshtls/dashboard"
	"meshtls/tap"
)

// DashboardOptions is everything `linkerd dashboard` needs once flags are
// parsed.
type DashboardOptions struct {
	Capture   string
	Replay    string
	Speed     float64
	Port      int
	Show      string
	MaxEvents float64
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
each marked encrypted or plain with the reason.

The figures come from the same stat and tap engines as 'linkerd stat' and
'linkerd tap'. This version runs offline: --capture is a recorded capture
(builtin:emojivoto and builtin:mixed ship with the CLI) and --replay a tap
recording (builtin:emojivoto) played for each live list that is opened.

Ctrl-C stops the server.`,
		Example: `  # The built-in capture and tap recording, on a free port
  linkerd dashboard --capture builtin:emojivoto --replay builtin:emojivoto

  # A fixed port, and open it in the browser
  linkerd dashboard --capture builtin:mixed --port 50750 --show browser

  # A recorded capture directory, the tap recording played twice as fast
  linkerd dashboard --capture ./capture --replay /tmp/emojivoto.jsonl --speed 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
	if o.Capture == "" {
		return usageErrorf("--capture is required: this version of the dashboard runs on a recorded capture (e.g. --capture builtin:emojivoto)")
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

func runDashboard(ctx context.Context, f *Factory, opts *DashboardOptions) error {
	c, err := openCapture(opts.Capture)
	if err != nil {
		return err
	}
	cfg := dashboard.Config{
		Metrics: c, Pods: c, SourceName: "capture " + opts.Capture, MaxEvents: opts.MaxEvents,
		ErrorLog: log.New(f.IO.ErrOut, "dashboard: ", 0),
	}
	if opts.Replay != "" {
		topts := &TapOptions{Replay: opts.Replay, Speed: opts.Speed}
		// Open it once now so a missing or broken file fails at start.
		_, closer, err := f.tapSource(topts)
		if err != nil {
			return err
		}
		_ = closer.Close()
		cfg.TapName = "replay " + opts.Replay
		cfg.Tap = func() (tap.Source, io.Closer, error) { return f.tapSource(topts) }
	}
	srv, err := dashboard.New(cfg)
	if err != nil {
		return err
	}
	// Loopback only: the dashboard has no authentication.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.Port)))
	if err != nil {
		return fmt.Errorf("cannot listen on 127.0.0.1:%d: %v", opts.Port, err)
	}
	url := "http://" + ln.Addr().String() + "/"
	// Live lists end with the server: their requests' context is this one.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return baseCtx },
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
