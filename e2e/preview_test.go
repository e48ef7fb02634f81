//go:build integration

package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"meshtls/testutil/localcluster"
)

// previewJSON is `linkerd tls preview -o json`.
type previewJSON struct {
	Target   string  `json:"target"`
	Requests float64 `json:"requests"`
	Tapped   int     `json:"tapped_requests"`
	Refused  bool    `json:"refused"`
	Clients  []struct {
		Source   string   `json:"source"`
		Reason   string   `json:"reason"`
		Requests float64  `json:"requests"`
		Seen     []string `json:"seen"`
	} `json:"clients"`
}

// runPreview runs `linkerd tls preview ARGS -o json` against the demo's
// control plane and returns the report and the exit code. Its stdout is
// the JSON alone; stderr (warnings) is kept apart.
func runPreview(t *testing.T, cp string, args ...string) (previewJSON, int, string) {
	t.Helper()
	args = append([]string{"tls", "preview"}, args...)
	args = append(args, "-o", "json", "-L", cp, "--kubeconfig", localcluster.Kubeconfig(t))
	cmd := exec.Command(linkerdBin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var rep previewJSON
	if code < 2 {
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("linkerd %s: exit %d, output is not JSON: %v\n%s\nstderr: %s", strings.Join(args, " "), code, err, out, stderr.String())
		}
	}
	return rep, code, stderr.String()
}

// verifyPreview checks `linkerd tls preview` on the running demo: web is
// called by the meshed vote-bot (mTLS) and the unmeshed legacy-bot (plain
// text); emoji only by web's proxy (mTLS).
//
//   - deploy/web exits 1 and names legacy-bot, from the live tap, by its
//     workload, and the metrics' unmeshed plain text; it never names
//     vote-bot, whose traffic is mTLS;
//   - deploy/emoji exits 0: nobody would be refused;
//   - a workload that does not exist exits 2 and says so.
func verifyPreview(t *testing.T, cp, ns string) {
	localcluster.Eventually(t, 3*time.Minute, func() error {
		rep, code, stderr := runPreview(t, cp, "deploy/web", "-n", ns, "--watch", "15s")
		if code != 1 {
			return fmt.Errorf("preview deploy/web: exit %d, want 1 (legacy-bot would be refused): %+v %s", code, rep, stderr)
		}
		var tapSeen, metricsSeen bool
		for _, c := range rep.Clients {
			if strings.Contains(c.Source, "vote-bot") && !strings.Contains(c.Source, "legacy-bot") {
				t.Errorf("preview deploy/web names vote-bot, whose traffic is mTLS: %+v", c)
			}
			if c.Source == "deploy/legacy-bot" && slices.Contains(c.Seen, "tap") {
				if c.Reason != "no_tls_from_remote" {
					t.Errorf("legacy-bot's reason: got %q, want no_tls_from_remote", c.Reason)
				}
				tapSeen = true
			}
			if c.Source == "(unmeshed)" && slices.Contains(c.Seen, "metrics") {
				metricsSeen = true
			}
		}
		if !tapSeen || !metricsSeen {
			return fmt.Errorf("preview deploy/web: want deploy/legacy-bot from tap and (unmeshed) from metrics, got %+v (stderr %s)", rep.Clients, stderr)
		}
		return nil
	})

	rep, code, stderr := runPreview(t, cp, "deploy/emoji", "-n", ns, "--watch", "10s")
	if code != 0 || rep.Refused || len(rep.Clients) != 0 {
		t.Errorf("preview deploy/emoji: exit %d, clients %+v, want 0 and none (only web's proxy calls it, over mTLS); stderr %s", code, rep.Clients, stderr)
	}
	if rep.Requests <= 0 && rep.Tapped <= 0 {
		t.Errorf("preview deploy/emoji saw no request at all: it must have looked at emoji's traffic (%+v)", rep)
	}

	_, code, stderr = runPreview(t, cp, "deploy/no-such-app", "-n", ns)
	if code != 2 || !strings.Contains(stderr, "no-such-app") {
		t.Errorf("preview of a missing deployment: exit %d, stderr %q; want 2 naming it", code, stderr)
	}
}
