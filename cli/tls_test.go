package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// The captures recorded from the live demo: legacy-bot (unmeshed) calls
// web in plain text, web calls emoji and voting over mTLS.
func TestTLSPreviewFromCapture(t *testing.T) {
	r := execute(t, false, "tls", "preview", "deploy/web", "-n", "emojivoto", "--capture", "builtin:emojivoto-live")
	if r.code != previewSomeRefused {
		t.Fatalf("preview deploy/web: exit %d, want %d\n%s%s", r.code, previewSomeRefused, r.out, r.errOut)
	}
	for _, want := range []string{"Requiring TLS on deploy/web in emojivoto would refuse 1 client", "(unmeshed)", "no_tls_from_remote", "metrics"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("preview deploy/web: output lacks %q:\n%s", want, r.out)
		}
	}

	r = execute(t, false, "tls", "preview", "deploy/emoji", "-n", "emojivoto", "--capture", "builtin:emojivoto-live")
	if r.code != previewNobodyRefused || r.out != "" || !strings.Contains(r.errOut, "would refuse no client") {
		t.Errorf("preview deploy/emoji: exit %d, stdout %q, stderr %q; want 0, nothing on stdout, the verdict on stderr", r.code, r.out, r.errOut)
	}

	r = execute(t, false, "tls", "preview", "ns/emojivoto", "--capture", "builtin:emojivoto-live", "-o", "json")
	var rep struct {
		Target  string  `json:"target"`
		Reqs    float64 `json:"requests"`
		MTLS    float64 `json:"mtls_requests"`
		Refused bool    `json:"refused"`
		Clients []struct {
			Source string   `json:"source"`
			Seen   []string `json:"seen"`
		} `json:"clients"`
	}
	if err := json.Unmarshal([]byte(r.out), &rep); err != nil {
		t.Fatalf("preview -o json: %v\n%s", err, r.out)
	}
	if r.code != previewSomeRefused || !rep.Refused || rep.Target != "ns/emojivoto" || len(rep.Clients) != 1 || rep.Clients[0].Source != "(unmeshed)" {
		t.Errorf("preview ns/emojivoto -o json: exit %d, %+v", r.code, rep)
	}
	if !(rep.MTLS > 0 && rep.MTLS < rep.Reqs) {
		t.Errorf("preview ns/emojivoto: %v of %v requests over mTLS; want some but not all", rep.MTLS, rep.Reqs)
	}
}

// The live part, from a tap recording of the demo: legacy-bot's
// plain-text requests (its address: the recording has no metadata for
// an unmeshed peer) are named, web's mTLS ones are not.
func TestTLSPreviewFromTapRecording(t *testing.T) {
	r := execute(t, false, "tls", "preview", "deploy/web", "-n", "emojivoto", "--no-metrics", "--watch", "1m", "--replay", "builtin:emojivoto-live", "-o", "json")
	var rep struct {
		Tapped, TappedMTLS int
		Clients            []struct {
			Source string   `json:"source"`
			Reason string   `json:"reason"`
			Seen   []string `json:"seen"`
		} `json:"clients"`
	}
	if err := json.Unmarshal([]byte(r.out), &rep); err != nil {
		t.Fatalf("preview --replay -o json: exit %d, %v\n%s%s", r.code, err, r.out, r.errOut)
	}
	if r.code != previewSomeRefused || len(rep.Clients) != 1 {
		t.Fatalf("preview --replay: exit %d, clients %+v; want 1 and one client", r.code, rep.Clients)
	}
	if c := rep.Clients[0]; c.Reason != "no_tls_from_remote" || len(c.Seen) != 1 || c.Seen[0] != "tap" {
		t.Errorf("client %+v: want no_tls_from_remote seen by tap", c)
	}
}

func TestTLSPreviewBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tls", "preview"}, 2, "needs one resource, such as deploy/web"},
		{[]string{"tls", "preview", "deploy"}, 2, "one named resource"},
		{[]string{"tls", "preview", "svc/web"}, 2, "cannot require TLS on a service"},
		{[]string{"tls", "preview", "au/web-svc:80"}, 2, "cannot require TLS on a authority"},
		{[]string{"tls", "preview", "ns/emojivoto", "-n", "x"}, 2, "give ns/NAME alone"},
		{[]string{"tls", "preview", "deploy/web", "-o", "wide"}, 2, `unknown output format "wide"`},
		{[]string{"tls", "preview", "deploy/web", "-t", "0s"}, 2, "--time-window must be positive"},
		{[]string{"tls", "preview", "deploy/web", "--no-metrics"}, 2, "give --watch too"},
		{[]string{"tls", "preview", "deploy/web", "--replay", "x.jsonl"}, 2, "give --watch too"},
		{[]string{"tls", "preview", "deploy/web", "--capture", "nope/", "--prometheus-url", "http://x"}, 2, "cannot be used together"},
		// No cluster and no metrics: the preview cannot be made (2), not "someone would be refused" (1).
		{[]string{"tls", "preview", "deploy/web"}, 2, "no metrics source"},
		{[]string{"tls", "preview", "deploy/web", "--capture", "/nonexistent"}, 2, "does not exist"},
	} {
		r := execute(t, false, tc.args...)
		if r.code != tc.code || !strings.Contains(r.errOut, tc.want) {
			t.Errorf("linkerd %s: exit %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), r.code, r.errOut, tc.code, tc.want)
		}
		if strings.Count(strings.TrimSpace(r.errOut), "\n") > 0 {
			t.Errorf("linkerd %s: want one line, got %q", strings.Join(tc.args, " "), r.errOut)
		}
	}
}
