package tapapi

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"meshtls/contract"
	"meshtls/tap"
)

// Drops reported in status frames reach the client's count: on the next
// event, or at the end; the proxy count follows the status.
func TestStreamFoldsStatusDrops(t *testing.T) {
	var buf bytes.Buffer
	fw := newFrameWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fw.status(Status{Pods: 2, Proxies: 2}))
	must(fw.event(enc(t, reqEv(1, 1)), 3))
	must(fw.status(Status{Pods: 2, Proxies: 1, Dropped: 4}))
	must(fw.event(enc(t, rspEv(1, 1)), 1))
	must(fw.status(Status{Pods: 2, Proxies: 1, Dropped: 6, End: true}))
	must(fw.w.Flush())
	s := &stream{body: io.NopCloser(&buf), fr: NewFrameReader(&buf), now: time.Now}
	r1, err := s.Recv()
	must(err)
	if r1.Event.GetDroppedBefore() != 3 || s.ConnectedProxies() != 2 {
		t.Errorf("first event: dropped %d, proxies %d", r1.Event.GetDroppedBefore(), s.ConnectedProxies())
	}
	r2, err := s.Recv()
	must(err)
	if r2.Event.GetDroppedBefore() != 5 || s.ConnectedProxies() != 1 {
		t.Errorf("second event: dropped %d (want 1 + 4 from the status), proxies %d", r2.Event.GetDroppedBefore(), s.ConnectedProxies())
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the end status: %v", err)
	}
	if s.TrailingDrops() != 6 {
		t.Errorf("trailing drops %d, want 6", s.TrailingDrops())
	}
	var _ tap.ProxyCounter = s
}

// A refusal is one line naming its cause, whoever refused.
func TestHTTPErrors(t *testing.T) {
	src := &Source{ControlNamespace: "linkerd"}
	tg := Target{Namespace: "demo", Resource: "deployments", Name: "web"}
	apiServer403 := `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"deployments.tap.linkerd.io \"web\" is forbidden: User \"alice\" cannot watch resource \"deployments/tap\" in API group \"tap.linkerd.io\" in the namespace \"demo\"","reason":"Forbidden","details":{"name":"web","group":"tap.linkerd.io","kind":"deployments"},"code":403}`
	for _, tc := range []struct {
		code int
		ours bool
		body string
		want string
	}{
		{403, false, apiServer403, `user "alice" cannot watch deployments/tap in namespace "demo": bind the ClusterRole ` + contract.TapViewClusterRole("linkerd")},
		{404, false, `{"kind":"Status","message":"the server could not find the requested resource","code":404}`, "tap API not available: is the control plane installed? run linkerd check"},
		{503, false, `service unavailable`, "tap API not available"},
		{404, true, `{"kind":"Status","message":"deployment \"web\" not found in namespace \"demo\"","code":404}`, `tap API: deployment "web" not found in namespace "demo"`},
	} {
		err := src.httpError(tc.code, tc.ours, []byte(tc.body), tg)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%d (ours %v): %v, want one line with %q", tc.code, tc.ours, err, tc.want)
		}
	}
}
