package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"

	"meshtls/stat"
)

func newCaptureCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "capture",
		Short: "Record proxy metrics to a capture directory, or serve one as live proxies",
		Long: `A capture is a directory of timestamped /metrics scrapes of many proxies,
with a capture.json manifest (format: fixtures/README.md). stat --capture
reads one with no cluster at all.`,
	}
	cmd.AddCommand(newCaptureRecordCmd(f), newCaptureReplayCmd(f))
	return cmd
}

func newCaptureRecordCmd(f *Factory) *cobra.Command {
	var (
		allNamespaces bool
		window        time.Duration
		rounds        int
		selector      string
		note          string
	)
	cmd := &cobra.Command{
		Use:   "record DIR",
		Short: "Scrape every meshed pod's proxy a few times and save the scrapes",
		Example: `  # Two scrapes of emojivoto one minute apart
  linkerd capture record ./emojivoto-capture -n emojivoto

  # Then, anywhere, without the cluster
  linkerd stat authority -n emojivoto --capture ./emojivoto-capture`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rounds < 2 {
				return usageErrorf("--rounds must be at least 2 to measure a rate, got %d", rounds)
			}
			if window <= 0 {
				return usageErrorf("--time-window must be positive, got %s", window)
			}
			sel, err := labels.Parse(selector)
			if err != nil {
				return usageErrorf("invalid label selector %q: %v", selector, err)
			}
			client, err := f.KubeClient()
			if err != nil {
				return err
			}
			ns := f.Namespace()
			if allNamespaces {
				ns = ""
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			pods, err := stat.KubePods{Client: client}.Pods(ctx, ns, sel)
			if err != nil {
				return err
			}
			var meshed []stat.Pod
			for _, p := range pods {
				if p.Meshed {
					meshed = append(meshed, p)
				}
			}
			if len(meshed) == 0 {
				return fmt.Errorf("no meshed pods to record in %s", nsDescription(ns))
			}
			if note == "" {
				note = "recorded by linkerd capture record from " + nsDescription(ns)
			}
			w, err := stat.NewCaptureWriter(args[0], note, pods)
			if err != nil {
				return err
			}
			scraper := &stat.Scraper{
				Fetcher: stat.ProxyFetcher{Client: client},
				Rounds:  rounds,
				Warn:    f.warn,
				Record:  w.AddScrape,
			}
			if f.IO.IsStderrTTY() {
				scraper.Progress = func(left time.Duration, n int) {
					fmt.Fprintf(f.IO.ErrOut, "\rRecording %d proxies: %s left ", n, left.Round(time.Second))
				}
			}
			if _, err := stat.Compute(ctx, stat.Query{Resource: stat.Resource{Kind: stat.KindNamespace}, Window: window}, scraper, staticPods(meshed)); err != nil {
				return err
			}
			if err := w.Close(); err != nil {
				return err
			}
			if f.IO.IsStderrTTY() {
				fmt.Fprint(f.IO.ErrOut, "\r\x1b[K")
			}
			fmt.Fprintf(f.IO.Out, "Recorded %d proxies, %d scrapes, into %s\n", len(meshed), rounds, args[0])
			return nil
		},
	}
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "record pods in every namespace")
	cmd.Flags().DurationVarP(&window, "time-window", "t", time.Minute, "time between the first and the last scrape")
	cmd.Flags().IntVar(&rounds, "rounds", 2, "number of scrapes, evenly spread over the window")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only pods matching this label selector")
	cmd.Flags().StringVar(&note, "note", "", "a note saved in the manifest")
	return cmd
}

func nsDescription(ns string) string {
	if ns == "" {
		return "all namespaces"
	}
	return "namespace " + ns
}

// staticPods is a fixed pod list.
type staticPods []stat.Pod

func (s staticPods) Pods(context.Context, string, labels.Selector) ([]stat.Pod, error) {
	return s, nil
}

func newCaptureReplayCmd(f *Factory) *cobra.Command {
	var opts stat.ReplayOptions
	cmd := &cobra.Command{
		Use:   "replay DIR|builtin:NAME",
		Short: "Serve a capture's pods as live proxies on loopback, for Prometheus to scrape",
		Long: `Serve each meshed pod of a capture on its own 127.0.0.1 port. Counters grow
at the capture's recorded rate for as long as the replay runs, so a
Prometheus scraping the targets sees the same traffic the capture holds.
The targets are printed as a Prometheus file_sd list (JSON) on stdout.`,
		Example: `  # Every pod on its own loopback port, as a file_sd list for Prometheus
  linkerd capture replay builtin:emojivoto > targets.json

  # One pod, as a proxy's admin port (how the local cluster's pods replay)
  linkerd capture replay builtin:emojivoto --pod emojivoto/web-5d9c8b7f6-x7k2p --listen 127.0.0.5:4191`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := openCapture(args[0])
			if err != nil {
				return err
			}
			r, err := stat.StartReplayWith(c, opts)
			if err != nil {
				return err
			}
			defer r.Close()
			var groups []string
			for _, t := range r.Targets {
				var ls []string
				for k, v := range t.Pod.TargetLabels() {
					ls = append(ls, fmt.Sprintf("%q: %q", k, v))
				}
				groups = append(groups, fmt.Sprintf(`  {"targets": [%q], "labels": {%s}}`, t.Addr, strings.Join(ls, ", ")))
			}
			fmt.Fprintf(f.IO.Out, "[\n%s\n]\n", strings.Join(groups, ",\n"))
			fmt.Fprintln(f.IO.ErrOut, "Serving; press Ctrl-C to stop.")
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Pod, "pod", "", "serve only this pod (NAMESPACE/NAME)")
	cmd.Flags().StringVar(&opts.Listen, "listen", "", "address to serve on (default 127.0.0.1 with a free port per pod)")
	return cmd
}
