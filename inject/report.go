package inject

import (
	"fmt"
	"io"
	"strings"
)

// Checks reported after an injection, in the style of Linkerd's inject
// report: one dotted line per check, then a summary.
const (
	checkHostNetwork = "hostNetwork"
	checkKubeSystem  = "kube-system"
	checkDisabled    = "disabled"
	checkTLS         = "tls"
	checkSidecar     = "sidecar"
	checkJob         = "job"
	checkAnnotations = "annotations"
	checkSupported   = "supported"
)

var checkTitles = []struct{ id, title string }{
	{checkHostNetwork, "hostNetwork: pods do not use host networking"},
	{checkKubeSystem, "kube-system: resources are not in the kube-system namespace"},
	{checkDisabled, "disabled: resources do not opt out of injection"},
	{checkSidecar, "sidecar: pods do not already have another mesh's sidecar"},
	{checkTLS, "tls: every injected resource gets a TLS identity"},
	{checkJob, "job: injected pods complete when their work does"},
	{checkAnnotations, "annotations: config.linkerd.io annotations are valid"},
	{checkSupported, "supported: at least one resource injected"},
}

const reportWidth = 76

// WriteReport prints the inject report for all inputs to w.
func WriteReport(w io.Writer, results []*Result) {
	var reports []Report
	docs, injectedDocs := 0, 0
	for _, r := range results {
		reports = append(reports, r.Reports...)
		docs += r.Documents
		injectedDocs += r.InjectedDocuments
	}
	problems := map[string][]Report{}
	var injected []Report
	for _, r := range reports {
		if r.Check != "" {
			problems[r.Check] = append(problems[r.Check], r)
		}
		if r.Outcome == Injected {
			injected = append(injected, r)
		}
	}
	fmt.Fprintln(w)
	for _, c := range checkTitles {
		if (c.id == checkTLS || c.id == checkJob) && len(problems[c.id]) == 0 {
			// Only meaningful when TLS was asked for and could not be had.
			continue
		}
		line := c.title
		status := "[ok]"
		var details []string
		switch {
		case c.id == checkSupported && len(injected) == 0:
			status = "[warn]"
			details = append(details, "no supported objects found")
		case len(problems[c.id]) > 0:
			status = "[warn]"
			for _, p := range problems[c.id] {
				details = append(details, fmt.Sprintf("%s/%s %s", p.Kind, p.Name, p.Reason))
			}
		}
		if pad := reportWidth - len(line); pad > 0 {
			line += strings.Repeat(".", pad)
		}
		fmt.Fprintln(w, line+status)
		for _, d := range details {
			fmt.Fprintln(w, "  -- "+d)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Summary: %d of %d YAML documents injected\n", injectedDocs, docs)
	for _, r := range injected {
		fmt.Fprintf(w, "  %s/%s\n", r.Kind, r.Name)
	}
	fmt.Fprintln(w)
}
