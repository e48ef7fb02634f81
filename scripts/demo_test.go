package scripts_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"meshtls/cli"
)

// statJSON runs `linkerd stat args... -o json` in-process and returns its
// output and rows.
func statJSON(t *testing.T, args ...string) (string, []map[string]any) {
	t.Helper()
	io, out, errOut := cli.TestStreams(false)
	root := cli.NewRootCmd(cli.NewFactory(io))
	root.SetArgs(append(append([]string{"stat"}, args...), "-o", "json"))
	if err := root.Execute(); err != nil {
		t.Fatalf("linkerd stat %s -o json: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	var rows []map[string]any
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("stat -o json: %v\n%s", err, out)
	}
	return out.String(), rows
}

// demoFunc runs the pipeline of scripts/demo.sh's functions (sourced, so
// nothing of the demo runs) with input on stdin.
func demoFunc(t *testing.T, input, pipeline string) (string, bool) {
	t.Helper()
	cmd := exec.Command("bash", "-c", `source scripts/demo.sh && `+pipeline)
	cmd.Dir = ".."
	cmd.Stdin = strings.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatalf("bash: %v", err)
	}
	if stderr.Len() > 0 {
		t.Errorf("%s wrote to stderr: %s", pipeline, stderr.String())
	}
	return string(out), err == nil
}

func indent(t *testing.T, rows []map[string]any) string {
	t.Helper()
	b, err := json.MarshalIndent(rows, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// TestDemoReadsStatJSON feeds stat's own JSON (from the capture recorded
// from the demo) to the functions with which demo.sh decides that traffic
// flows and reads web-svc's rate, and checks them against the same JSON
// decoded in Go.
func TestDemoReadsStatJSON(t *testing.T) {
	out, rows := statJSON(t, "authority", "-n", "emojivoto", "--capture", "builtin:emojivoto-live")
	if len(rows) != 3 {
		t.Fatalf("want the three emojivoto Services' authorities, got %d rows:\n%s", len(rows), out)
	}
	var want strings.Builder
	webRPS := ""
	for _, r := range rows {
		rps := "null"
		if v, ok := r["rps"].(float64); ok {
			rps = strconv.FormatFloat(v, 'f', -1, 64)
		}
		fmt.Fprintf(&want, "%s %s\n", r["name"], rps)
		if strings.HasPrefix(r["name"].(string), "web-svc.") {
			webRPS = rps
		}
	}

	got, ok := demoFunc(t, out, "rps_by_name")
	if !ok || !sameRates(got, want.String()) {
		t.Errorf("rps_by_name read\n%s\nwant\n%s", got, want.String())
	}
	if _, ok := demoFunc(t, out, "rps_by_name | all_services_busy"); !ok {
		t.Error("all_services_busy: no, on the live capture where every Service has traffic")
	}
	if got, ok := demoFunc(t, out, "rps_by_name | web_svc_rps"); !ok || !sameRates(got, webRPS+"\n") {
		t.Errorf("web_svc_rps: %q (ok %v), want %s", got, ok, webRPS)
	}

	// The same rows with the keys in another order (sorted: no_tls comes
	// between name and rps) and a field stat may add one day.
	for _, r := range rows {
		r["zz_new_figure"] = 1.5
	}
	reordered := indent(t, rows)
	if got, _ := demoFunc(t, reordered, "rps_by_name"); !sameRates(got, want.String()) {
		t.Errorf("rps_by_name on reordered keys read\n%s\nwant\n%s", got, want.String())
	}
	if _, ok := demoFunc(t, reordered, "rps_by_name | all_services_busy"); !ok {
		t.Error("all_services_busy: no, on reordered keys")
	}

	// A Service without requests: no rate (null) or a rate of 0.
	for _, idle := range []any{nil, 0.0} {
		for _, r := range rows {
			if strings.HasPrefix(r["name"].(string), "voting-svc.") {
				r["rps"] = idle
			}
		}
		if _, ok := demoFunc(t, indent(t, rows), "rps_by_name | all_services_busy"); ok {
			t.Errorf("all_services_busy: yes, with voting-svc's rps %v", idle)
		}
	}
	for _, r := range rows {
		if strings.HasPrefix(r["name"].(string), "web-svc.") {
			r["rps"] = nil
		}
	}
	if got, ok := demoFunc(t, indent(t, rows), "rps_by_name | web_svc_rps"); ok {
		t.Errorf("web_svc_rps: %q, with web-svc's rps null", got)
	}
	if _, ok := demoFunc(t, "[]\n", "rps_by_name | all_services_busy"); ok {
		t.Error("all_services_busy: yes, on no rows")
	}
}

// sameRates compares "name rps" lines, the rates as numbers.
func sameRates(got, want string) bool {
	g, w := strings.Split(strings.TrimSpace(got), "\n"), strings.Split(strings.TrimSpace(want), "\n")
	if len(g) != len(w) {
		return false
	}
	for i := range g {
		gf, wf := strings.Fields(g[i]), strings.Fields(w[i])
		if len(gf) != len(wf) || len(gf) == 0 {
			return false
		}
		last := len(gf) - 1
		if strings.Join(gf[:last], " ") != strings.Join(wf[:last], " ") {
			return false
		}
		a, errA := strconv.ParseFloat(gf[last], 64)
		b, errB := strconv.ParseFloat(wf[last], 64)
		if errA != nil || errB != nil {
			if gf[last] != wf[last] {
				return false
			}
		} else if a != b {
			return false
		}
	}
	return true
}
