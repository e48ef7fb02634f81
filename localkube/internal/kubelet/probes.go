package kubelet

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

type probeKind string

const (
	startupProbe   probeKind = "Startup"
	readinessProbe probeKind = "Readiness"
	livenessProbe  probeKind = "Liveness"
)

// probeResult is sent to the pod worker when a probe's verdict changes.
type probeResult struct {
	container string
	gen       int // container run the probe belongs to
	kind      probeKind
	ok        bool
	message   string
}

// fastRetry is the probe interval of readiness and startup probes before
// their first success.
const fastRetry = 250 * time.Millisecond

var probeHTTP = &http.Client{
	Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // kubelet does not verify probe targets either
		DisableKeepAlives: true,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// runProbe checks p until ctx ends and reports each change of verdict, after
// successThreshold successes or failureThreshold failures in a row. A
// startup probe stops after its first success.
func runProbe(ctx context.Context, kind probeKind, p *v1.Probe, c *v1.Container, podIP string, gen int, out chan<- probeResult) {
	period := secondsOr(p.PeriodSeconds, 10)
	timeout := secondsOr(p.TimeoutSeconds, 1)
	successes, failures := int(orDefault(p.SuccessThreshold, 1)), int(orDefault(p.FailureThreshold, 3))
	if kind != readinessProbe {
		successes = 1
	}
	// The verdict before any check: not ready, alive, not started.
	verdict := kind == livenessProbe
	runOK, runFail := 0, 0
	wait := secondsOr(p.InitialDelaySeconds, 0)
	if kind == livenessProbe {
		// Never judge a process in its first moments: it may not listen yet.
		wait = max(wait, period)
	}
	everOK := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = period
		ok, msg := check(ctx, p, c, podIP, timeout)
		if ok {
			runOK, runFail = runOK+1, 0
			everOK = true
		} else {
			runOK, runFail = 0, runFail+1
		}
		if !everOK && kind != livenessProbe {
			// Until a new process first passes, look again soon rather than
			// a whole period later, so pods become Ready promptly.
			wait = min(period, fastRetry)
		}
		changed := false
		if ok && !verdict && runOK >= successes {
			verdict, changed = true, true
		} else if !ok && verdict && runFail >= failures {
			verdict, changed = false, true
		} else if !ok && kind == startupProbe && runFail >= failures {
			changed = true
		}
		if changed {
			select {
			case out <- probeResult{container: c.Name, gen: gen, kind: kind, ok: verdict, message: msg}:
			case <-ctx.Done():
				return
			}
			if kind == startupProbe && verdict {
				return
			}
			if kind != readinessProbe && !verdict {
				// Liveness failed: the worker restarts the container, which
				// starts a new probe.
				return
			}
		}
	}
}

func secondsOr(v int32, def int32) time.Duration {
	if v <= 0 {
		v = def
	}
	return time.Duration(v) * time.Second
}

func orDefault(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

// check runs one probe. exec and gRPC probes are not supported by the
// process kubelet; they count as passing (documented in the README).
func check(ctx context.Context, p *v1.Probe, c *v1.Container, podIP string, timeout time.Duration) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		g := p.HTTPGet
		port, err := resolvePort(g.Port, c)
		if err != nil {
			return false, err.Error()
		}
		host := g.Host
		if host == "" {
			host = podIP
		}
		scheme := "http"
		if g.Scheme == v1.URISchemeHTTPS {
			scheme = "https"
		}
		u := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: g.Path}
		if u.Path == "" {
			u.Path = "/"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return false, err.Error()
		}
		req.Header.Set("User-Agent", "kube-probe/localkube")
		for _, h := range g.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		resp, err := probeHTTP.Do(req)
		if err != nil {
			return false, fmt.Sprintf("Get %q: %v", u.String(), err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 400 {
			return true, ""
		}
		return false, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, c)
		if err != nil {
			return false, err.Error()
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = podIP
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false, err.Error()
		}
		_ = conn.Close() // the probe only needed the connection to open
		return true, ""
	}
	return true, ""
}

func resolvePort(p intstr.IntOrString, c *v1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("container %q has no port named %q", c.Name, p.StrVal)
}
