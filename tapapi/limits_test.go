package tapapi

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"meshtls/ca/pki"
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

// m6: a rotated front-proxy CA is honoured without a restart: the server
// authenticates against whatever SetAuth (ReloadAuth) last stored.
func TestFrontProxyCAReload(t *testing.T) {
	now := time.Now()
	oldCA, _, err := pki.NewRoot("front-proxy old", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	newCA, _, err := pki.NewRoot("front-proxy new", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := newCA.Issue("front-proxy-client", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCerts(leaf.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	auth := func(r *pki.Root) *RequestHeaderAuth {
		return &RequestHeaderAuth{ClientCAs: r.Pool(), UserHeaders: []string{"X-Remote-User"}}
	}
	s, err := New(Config{Client: fake.NewClientset(), Credentials: func(string) (credentials.TransportCredentials, error) { return nil, nil }, Auth: auth(oldCA)})
	if err != nil {
		t.Fatal(err)
	}
	tapOnce := func() int {
		req := httptest.NewRequest(http.MethodPost, apisPrefix+"/watch/namespaces/x/tap", strings.NewReader(""))
		req.TLS = &tls.ConnectionState{PeerCertificates: certs}
		req.Header.Set("X-Remote-User", "alice")
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		return w.Code
	}
	if code := tapOnce(); code != http.StatusUnauthorized {
		t.Fatalf("a certificate of the new front-proxy CA before the reload: %d, want 401", code)
	}
	s.SetAuth(auth(newCA))
	if code := tapOnce(); code == http.StatusUnauthorized {
		t.Fatal("after the reload the new front-proxy CA is still refused")
	}
	if !s.ClientCAs().Equal(newCA.Pool()) {
		t.Error("the handshake's pool is not the reloaded one")
	}
}

// m12: the peer filter asks the API server, once per namespace, whether
// the user may tap that namespace; the tapped namespace needs no asking.
func TestPeerFilterAsksOncePerNamespace(t *testing.T) {
	client := fake.NewClientset()
	asked := map[string]int{}
	client.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		ns := sar.Spec.ResourceAttributes.Namespace
		asked[ns]++
		sar.Status.Allowed = ns == "shared" && sar.Spec.User == "alice"
		return true, sar, nil
	})
	s, err := New(Config{Client: client, Credentials: func(string) (credentials.TransportCredentials, error) { return nil, nil }, Authorize: true})
	if err != nil {
		t.Fatal(err)
	}
	allowed := s.peerFilter(context.Background(), user{name: "alice"}, "demo")
	for _, tc := range []struct {
		ns   string
		want bool
	}{{"demo", true}, {"payments", false}, {"shared", true}, {"payments", false}} {
		if got := allowed(tc.ns); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.ns, got, tc.want)
		}
	}
	if asked["demo"] != 0 || asked["payments"] != 1 || asked["shared"] != 1 {
		t.Errorf("SubjectAccessReviews per namespace: %v, want none for demo and one each for the others", asked)
	}
}
