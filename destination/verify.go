package destination

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"meshtls/contract"
)

// verifier says whether a pod serves an identity now. The resolver
// advertises an identity only when it does.
type verifier interface {
	serves(pod *corev1.Pod, identity string) bool
}

// handshakeVerifier checks that a pod's proxy serves its identity by
// starting a TLS handshake to the pod's inbound port with that identity as
// SNI, as a peer proxy would, and reading the certificate it presents. The
// handshake is abandoned once the certificate is seen: nothing is sent and
// no client certificate is needed. A pod is checked when it is first seen
// Ready, then retried with backoff until it passes; a pod that passed stays
// trusted while it keeps its IP and stays Ready, since certificate rotation
// keeps the identity.
//
// This closes the gap readiness leaves open: a proxy whose certificate
// never arrives turns Ready in plain text after a bounded wait, and must
// not then be advertised with an identity its peers would fail to reach.
type handshakeVerifier struct {
	port int
	// roots are the trust anchors of the moment (nil: check the name and
	// dates only); they are read at each check, so a rotated bundle
	// applies without a restart.
	roots   func() *x509.CertPool
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time
	// changed wakes the streams of a pod when its verdict changes.
	changed func(namespace, name string)

	mu   sync.Mutex
	pods map[types.UID]*podCheck
	ctx  context.Context
}

type podCheck struct {
	ip, identity string
	ok           bool
	// notAfter is when the certificate the pod served expires: past it,
	// the pod is checked again (it must have renewed it).
	notAfter time.Time
	running  bool
	next     time.Time
	backoff  time.Duration
	err      error
}

const (
	minRetry = 500 * time.Millisecond
	maxRetry = 30 * time.Second
)

func newHandshakeVerifier(ctx context.Context, roots func() *x509.CertPool, log *slog.Logger, changed func(namespace, name string)) *handshakeVerifier {
	return &handshakeVerifier{
		port: contract.InboundPort, roots: roots, timeout: 5 * time.Second, log: log, now: time.Now,
		changed: changed, pods: map[types.UID]*podCheck{}, ctx: ctx,
	}
}

func (v *handshakeVerifier) serves(pod *corev1.Pod, identity string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	pc := v.pods[pod.UID]
	if pc == nil || pc.ip != pod.Status.PodIP || pc.identity != identity || pc.ok && v.now().After(pc.notAfter) {
		// New, moved or renamed: check afresh.
		pc = &podCheck{ip: pod.Status.PodIP, identity: identity, backoff: minRetry}
		v.pods[pod.UID] = pc
	}
	if pc.ok {
		return true
	}
	if !pc.running && !v.now().Before(pc.next) && v.ctx.Err() == nil {
		pc.running = true
		go v.check(pod.UID, pod.Namespace, pod.Name, pc)
	}
	return false
}

// pending says whether a pod's first check of identity has not concluded
// yet: the resolver then leaves the pod out rather than advertise it
// without an identity it may well serve, which would send its peers' first
// requests in plain text.
func (v *handshakeVerifier) pending(pod *corev1.Pod, identity string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	pc := v.pods[pod.UID]
	return pc != nil && pc.ip == pod.Status.PodIP && pc.identity == identity && !pc.ok && pc.err == nil
}

// forget drops a pod's verdict: it was deleted, or stopped being Ready,
// which is when a proxy may have restarted without its certificate.
func (v *handshakeVerifier) forget(uid types.UID) {
	v.mu.Lock()
	delete(v.pods, uid)
	v.mu.Unlock()
}

func (v *handshakeVerifier) check(uid types.UID, namespace, name string, pc *podCheck) {
	addr := net.JoinHostPort(pc.ip, strconv.Itoa(v.port))
	notAfter, err := probeIdentity(v.ctx, addr, pc.identity, v.roots(), v.timeout, v.now)
	v.mu.Lock()
	pc.running = false
	current := v.pods[uid] == pc
	next := pc.next
	if err == nil {
		pc.ok, pc.notAfter = true, notAfter
	} else {
		pc.err = err
		pc.next = v.now().Add(pc.backoff)
		pc.backoff = min(2*pc.backoff, maxRetry)
		next = pc.next
	}
	v.mu.Unlock()
	if !current {
		return
	}
	if err != nil {
		v.log.Info("pod does not serve its identity: advertised without it until a check passes", "pod", namespace+"/"+name, "addr", addr, "err", err)
	} else {
		v.log.Debug("pod serves its identity", "pod", namespace+"/"+name, "identity", pc.identity)
	}
	// Wake the namespace either way: on success to advertise the
	// identity, on failure so a stream recomputes after the backoff.
	if err == nil {
		v.changed(namespace, name)
		return
	}
	go func() {
		select {
		case <-v.ctx.Done():
		case <-time.After(time.Until(next)):
			v.changed(namespace, name)
		}
	}()
}

var errSeen = errors.New("certificate seen")

// forgetAll drops every verdict, so each pod is checked again: the trust
// anchors changed.
func (v *handshakeVerifier) forgetAll() {
	v.mu.Lock()
	clear(v.pods)
	v.mu.Unlock()
}

// probeIdentity reads the certificate addr serves for identity, and says
// until when it is valid.
func probeIdentity(ctx context.Context, addr, identity string, roots *x509.CertPool, timeout time.Duration, now func() time.Time) (time.Time, error) {
	var verdict error
	var notAfter time.Time
	cfg := &tls.Config{
		ServerName: identity,
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		// The chain is checked below, against the mesh's roots and the
		// identity; the handshake itself is never used for traffic.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			verdict = checkServed(cs.PeerCertificates, identity, roots, now())
			if len(cs.PeerCertificates) > 0 {
				notAfter = cs.PeerCertificates[0].NotAfter
			}
			return errSeen
		},
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if c != nil {
		_ = c.Close()
	}
	if verdict != nil || errors.Is(err, errSeen) {
		return notAfter, verdict
	}
	if err == nil {
		return notAfter, errors.New("handshake ended without a certificate")
	}
	return notAfter, err
}

func checkServed(chain []*x509.Certificate, identity string, roots *x509.CertPool, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("no certificate presented")
	}
	leaf := chain[0]
	if err := leaf.VerifyHostname(identity); err != nil {
		return fmt.Errorf("presents another identity: %w", err)
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("certificate not valid now (valid %s to %s)", leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
	}
	if roots == nil {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		DNSName: identity, Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}

// readyVerifier trusts readiness alone, for clusters where the controller
// cannot reach pods (VerifyIdentity off).
type readyVerifier struct{}

func (readyVerifier) serves(*corev1.Pod, string) bool { return true }
