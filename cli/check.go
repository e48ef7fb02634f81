package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"meshtls/check"
	"meshtls/contract"
)

// CheckOptions is everything `linkerd check` needs once flags are parsed.
type CheckOptions struct {
	TLS bool
	// ClusterDomain is install's --cluster-domain.
	ClusterDomain string
	Output        string
	Wait          time.Duration
	// Thresholds for how close to expiry the root and the workload leaves
	// may be before a warning (WarnWithin) or an error (FailWithin).
	RootWarnWithin, RootFailWithin time.Duration
	LeafWarnWithin, LeafFailWithin time.Duration
	ControlNamespace               string
}

// errChecksFailed is returned when a non-warning check failed; the output
// already said which, so Main prints nothing more and exits 1.
var errChecksFailed = &ExitError{Code: 1}

func newCheckCmd(f *Factory, runF func(context.Context, *CheckOptions) error) *cobra.Command {
	opts := &CheckOptions{
		Output:         "text",
		RootWarnWithin: check.DefaultRootWarnWithin, RootFailWithin: check.DefaultRootFailWithin,
		LeafWarnWithin: check.DefaultLeafWarnWithin, LeafFailWithin: check.DefaultLeafFailWithin,
	}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the control plane and, with --tls, every workload's certificate",
		Long: `Check that the Kubernetes API answers and the control plane is installed
and ready. With --tls, also check the certificate authority and the whole
TLS data plane: the CA is ready and answers /ready; its root Secret parses, is
a CA for server and client auth, is valid and not expiring soon; every
namespace with TLS-enabled pods has the trust bundle holding the current
root; every TLS-enabled owner has a kubernetes.io/tls Secret whose key
matches, which chains to the current root, names the owner's identity, allows
server and client auth and is not expiring soon; every pod mounts it; and
each running proxy serves that very certificate on 4143.

Each failure names the owners or pods concerned and what to do. The exit
status is 1 when any check other than a warning (‼) fails, including a
certificate inside --fail-within or --leaf-fail-within.

Durations take Go units (90m, 6h) and days (30d).`,
		Example: `  # Is the control plane installed and ready?
  linkerd check

  # Is automatic TLS really in place for every workload?
  linkerd check --tls

  # Right after install: wait up to two minutes for things to become ready
  linkerd check --tls --wait 2m

  # Fail when the root expires within 60 days or any leaf within 3 hours
  linkerd check --tls --fail-within 60d --leaf-fail-within 3h

  # For scripts
  linkerd check --tls -o json | jq '.categories[].checks[] | select(.status != "ok")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.ControlNamespace = f.LinkerdNamespace
			if err := opts.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			if runF != nil {
				return runF(ctx, opts)
			}
			return runCheck(ctx, f, opts)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&opts.TLS, "tls", false, "also check the certificate authority and every TLS-enabled workload's certificate")
	fl.StringVarP(&opts.Output, "output", "o", "text", "output format: text or json")
	fl.StringVar(&opts.ClusterDomain, "cluster-domain", contract.DefaultClusterDomain, "the cluster's DNS domain, as given to install: workload certificates must name identities under it")
	fl.Var((*days)(&opts.Wait), "wait", "retry checks that can still become true (rollouts, readiness) for up to this long, e.g. 2m")
	fl.Var((*days)(&opts.RootWarnWithin), "warn-within", "warn when the root expires within this long")
	fl.Var((*days)(&opts.RootFailWithin), "fail-within", "fail when the root expires within this long")
	fl.Var((*days)(&opts.LeafWarnWithin), "leaf-warn-within", "warn when a workload certificate expires within this long")
	fl.Var((*days)(&opts.LeafFailWithin), "leaf-fail-within", "fail when a workload certificate expires within this long")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion("text", "json"))
	_ = cmd.RegisterFlagCompletionFunc("wait", fixedCompletion("30s", "1m", "5m"))
	_ = cmd.RegisterFlagCompletionFunc("warn-within", fixedCompletion("30d", "60d", "90d"))
	_ = cmd.RegisterFlagCompletionFunc("fail-within", fixedCompletion("7d", "14d", "30d"))
	_ = cmd.RegisterFlagCompletionFunc("leaf-warn-within", fixedCompletion("6h", "12h"))
	_ = cmd.RegisterFlagCompletionFunc("leaf-fail-within", fixedCompletion("1h", "3h"))
	return cmd
}

func (o *CheckOptions) validate() error {
	switch o.Output {
	case "text", "json":
	default:
		return usageErrorf("unknown output format %q: use text or json", o.Output)
	}
	if err := contract.CheckClusterDomain(o.ClusterDomain); err != nil {
		return usageErrorf("%v", err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"wait", o.Wait}, {"warn-within", o.RootWarnWithin}, {"fail-within", o.RootFailWithin}, {"leaf-warn-within", o.LeafWarnWithin}, {"leaf-fail-within", o.LeafFailWithin}} {
		if d.v < 0 {
			return usageErrorf("--%s must not be negative, got %s", d.name, d.v)
		}
	}
	if o.RootFailWithin > o.RootWarnWithin {
		return usageErrorf("--fail-within (%s) is longer than --warn-within (%s): the warning would never show", fmtDays(o.RootFailWithin), fmtDays(o.RootWarnWithin))
	}
	if o.LeafFailWithin > o.LeafWarnWithin {
		return usageErrorf("--leaf-fail-within (%s) is longer than --leaf-warn-within (%s): the warning would never show", fmtDays(o.LeafFailWithin), fmtDays(o.LeafWarnWithin))
	}
	return nil
}

func runCheck(ctx context.Context, f *Factory, opts *CheckOptions) error {
	cfg := check.Config{
		ControlNamespace: opts.ControlNamespace,
		ClusterDomain:    opts.ClusterDomain,
		TLS:              opts.TLS,
		NewClient:        func() (kubernetes.Interface, error) { return f.KubeClient() },
		RootWarnWithin:   opts.RootWarnWithin, RootFailWithin: opts.RootFailWithin,
		LeafWarnWithin: opts.LeafWarnWithin, LeafFailWithin: opts.LeafFailWithin,
	}
	var printer checkPrinter
	if opts.Output == "json" {
		printer = &checkJSONPrinter{w: f.IO.Out}
	} else {
		printer = newCheckTextPrinter(f.IO)
	}
	sum := check.Run(ctx, check.Categories(cfg), check.Options{Wait: opts.Wait}, printer.Observe)
	if err := printer.Finish(sum); err != nil {
		return err
	}
	if !sum.Success {
		return errChecksFailed
	}
	return nil
}

// days is a duration flag that also takes days ("30d"), the unit
// certificate lifetimes are thought in.
type days time.Duration

func (d *days) String() string { return fmtDays(time.Duration(*d)) }
func (d *days) Type() string   { return "duration" }
func (d *days) Set(s string) error {
	v, err := parseDays(s)
	if err != nil {
		return err
	}
	*d = days(v)
	return nil
}

func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		f, err := strconv.ParseFloat(n, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: want e.g. 30d, 12h, 90m", s)
		}
		return time.Duration(f * float64(24*time.Hour)), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want e.g. 30d, 12h, 90m", s)
	}
	return v, nil
}

func fmtDays(d time.Duration) string {
	if d != 0 && d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return d.String()
}
