package tapapi

import (
	"strings"
	"testing"
)

// m6: a caller cannot ask a proxy for an unlimited stream, nor more than
// the server's ceiling.
func TestServerCeilingOnRPS(t *testing.T) {
	for _, tc := range []struct{ asked, want float64 }{{0, 100}, {1e9, 100}, {10, 10}, {100, 100}} {
		if got := clampRPS(tc.asked, 100); got != tc.want {
			t.Errorf("clampRPS(%v) = %v, want %v", tc.asked, got, tc.want)
		}
	}
}

// m6: one user holds at most MaxSessionsPerUser sessions; others are not
// affected, and a closed session frees its place.
func TestSessionCapPerUser(t *testing.T) {
	s := &Server{cfg: Config{MaxSessionsPerUser: 2}, open: map[string]int{}}
	if !s.acquire("alice") || !s.acquire("alice") {
		t.Fatal("alice's first two sessions were refused")
	}
	if s.acquire("alice") {
		t.Fatal("alice got a third session over a cap of 2")
	}
	if !s.acquire("bob") {
		t.Fatal("bob was refused because of alice")
	}
	s.release("alice")
	if !s.acquire("alice") {
		t.Fatal("a closed session did not free its place")
	}
}

// m10: names that would change the path or query of the request sent with
// the user's credentials are refused, and Path escapes what it is given.
func TestTargetNamesAreValidatedAndEscaped(t *testing.T) {
	for _, bad := range []Target{
		{Namespace: "x", Resource: "deployments", Name: "a/../../y"},
		{Namespace: "x", Resource: "deployments", Name: "web?watch=1"},
		{Namespace: "x/../kube-system", Resource: "namespaces"},
		{Namespace: "X", Resource: "pods", Name: "p"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v validates", bad)
		}
	}
	if err := (Target{Namespace: "emojivoto", Resource: "deployments", Name: "web-1.a"}).Validate(); err != nil {
		t.Errorf("a valid target is refused: %v", err)
	}
	p := Target{Namespace: "x", Resource: "deployments", Name: "a/b?c"}.Path()
	if strings.Contains(p, "a/b") || strings.Contains(p, "?") {
		t.Errorf("Path does not escape the name: %s", p)
	}
	if _, err := ParsePath(apisPrefix+"/watch/namespaces/x/deployments/we b/tap", ""); err == nil {
		t.Error("ParsePath accepts a name with a space")
	}
}
