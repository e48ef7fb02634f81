package tapapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"meshtls/contract"
	"meshtls/tap"
)

// ErrNotAvailable is the tap API missing or not serving.
var ErrNotAvailable = errors.New("tap API not available: is the control plane installed? run linkerd check")

// Source is the live tap API as a tap.Source: it reaches tap.linkerd.io
// through the API server with the user's kubeconfig, and nothing else.
type Source struct {
	Config           *rest.Config
	ControlNamespace string
	// Now stamps records; nil means time.Now.
	Now func() time.Time
}

var resourceOfKind = map[string]string{
	contract.KindPod:         "pods",
	contract.KindDeployment:  "deployments",
	contract.KindStatefulSet: "statefulsets",
	contract.KindDaemonSet:   "daemonsets",
	tap.KindNamespace:        "namespaces",
}

// TargetOf maps a CLI target to the API's.
func TargetOf(t tap.Target) (Target, error) {
	r, ok := resourceOfKind[t.Kind]
	if !ok {
		return Target{}, fmt.Errorf("the tap API cannot tap %s", t.Kind)
	}
	out := Target{Namespace: t.Namespace, Resource: r, Name: t.Name}
	if r == "namespaces" {
		out.Name = ""
	}
	return out, nil
}

// Open starts a tap.
func (s *Source) Open(ctx context.Context, q tap.Query) (tap.Stream, error) {
	t, err := TargetOf(q.Target)
	if err != nil {
		return nil, err
	}
	body, err := proto.Marshal(q.ObserveRequest())
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(s.Config)
	// A tap runs until stopped.
	cfg.Timeout = 0
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	host := strings.TrimSuffix(cfg.Host, "/")
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	// A name from a URL (the dashboard's) must not change the path or
	// query of a request sent with the user's credentials.
	if err := t.Validate(); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, host+strings.TrimSuffix(cfg.APIPath, "/")+t.Path(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Accept", ContentType+", application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reaching the Kubernetes API server: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, s.httpError(resp.StatusCode, resp.Header.Get(SourceHeader) != "", b, t)
	}
	now := s.Now
	if now == nil {
		now = time.Now
	}
	return &stream{body: resp.Body, fr: NewFrameReader(resp.Body), now: now}, nil
}

var userRe = regexp.MustCompile(`[Uu]ser "([^"]*)"`)

// httpError names the cause of a refused tap.
func (s *Source) httpError(code int, ours bool, body []byte, t Target) error {
	var st metav1.Status
	_ = json.Unmarshal(body, &st)
	msg := st.Message
	if msg == "" {
		msg = strings.TrimSpace(string(body))
	}
	switch {
	case code == http.StatusForbidden:
		// The API server authorises the same verb before it forwards,
		// in its own words; both say the same in ours.
		u := "you"
		if m := userRe.FindStringSubmatch(msg); m != nil {
			u = m[1]
		}
		return errors.New(Denied(u, t, s.controlNS()))
	case code == http.StatusNotFound && !ours, code == http.StatusServiceUnavailable, code == http.StatusBadGateway:
		return fmt.Errorf("%w (the API server said %d: %s)", ErrNotAvailable, code, msg)
	case code == http.StatusUnauthorized:
		return fmt.Errorf("the API server did not accept your credentials: %s", msg)
	}
	return fmt.Errorf("tap API: %s", msg)
}

func (s *Source) controlNS() string {
	if s.ControlNamespace == "" {
		return "linkerd"
	}
	return s.ControlNamespace
}

// stream reads frames as records. It implements tap.ProxyCounter and the
// trailing-drops hook.
type stream struct {
	body     io.ReadCloser
	fr       *FrameReader
	now      func() time.Time
	proxies  atomic.Int32
	pending  uint64
	trailing uint64
	closed   bool
}

func (s *stream) Recv() (tap.Record, error) {
	for {
		if s.closed {
			return tap.Record{}, io.EOF
		}
		ev, st, err := s.fr.Next()
		if err != nil {
			s.body.Close()
			s.closed = true
			s.trailing, s.pending = s.pending, 0
			if errors.Is(err, io.EOF) {
				return tap.Record{}, io.EOF
			}
			return tap.Record{}, err
		}
		if st != nil {
			s.proxies.Store(int32(st.Proxies))
			s.pending += st.Dropped
			if st.End {
				s.body.Close()
				s.closed = true
				s.trailing, s.pending = s.pending, 0
				return tap.Record{}, io.EOF
			}
			continue
		}
		ev.DroppedBefore += s.pending
		s.pending = 0
		return tap.Record{Time: s.now(), Event: ev}, nil
	}
}

func (s *stream) ConnectedProxies() int { return int(s.proxies.Load()) }
func (s *stream) TrailingDrops() uint64 { return s.trailing }
