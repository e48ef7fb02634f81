package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sort"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"meshtls/contract"
)

// errNotServing marks a proxy that cannot be reached at all, as opposed to
// one that answers with the wrong certificate.
var errNotServing = errors.New("proxy not serving")

// ServedCertificate connects to addr, asks for serverName by SNI, and
// returns the certificate the server presents. It does not judge the
// certificate: the caller compares it with what the Secret holds, and the
// Secret's checks judge the rest. No client certificate is offered.
func ServedCertificate(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), addr, serverName string) (*x509.Certificate, error) {
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNotServing, err)
	}
	defer func() { _ = raw.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	conn := tls.Client(raw, &tls.Config{
		ServerName: serverName,
		// Verification is the comparison with the Secret, which the other
		// checks have verified against the root; a mismatch is what we want
		// to see, not a handshake error hiding it.
		InsecureSkipVerify: true, //nolint:gosec // see above
		MinVersion:         tls.VersionTLS12,
	})
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake with %s (SNI %s): %w", addr, serverName, err)
	}
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s presented no certificate", addr)
	}
	return certs[0], nil
}

// compareServed says why a served certificate is not the Secret's, or "".
func compareServed(served *x509.Certificate, secretSerial *big.Int) string {
	if served.SerialNumber.Cmp(secretSerial) == 0 {
		return ""
	}
	return fmt.Sprintf("serves serial %x (%s, expires %s), but its Secret holds serial %x", served.SerialNumber, firstDNS(served), stamp(served.NotAfter), secretSerial)
}

func firstDNS(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return "CN " + c.Subject.CommonName
}

// servedCheck dials every TLS-enabled pod whose proxy runs. A pod whose
// proxy is not running or not listening is skipped and named in a note:
// there is nothing served to compare.
func servedCheck(ctx context.Context, cfg Config, dp *dataPlane) error {
	type target struct {
		st  *ownerState
		pod *corev1.Pod
	}
	var targets []target
	var notRunning []string
	for _, st := range dp.owners {
		if st.secret != "" || st.findings.Parse != "" || st.findings.Serial == nil {
			continue // no Secret certificate to compare with, reported above
		}
		for _, p := range st.pods {
			if p.Status.PodIP == "" || !proxyRunning(p) {
				notRunning = append(notRunning, p.Namespace+"/"+p.Name)
				continue
			}
			targets = append(targets, target{st, p})
		}
	}
	var (
		mu         sync.Mutex
		probs      []Problem
		notServing []string
	)
	_ = parallel(ctx, cfg.Parallelism, len(targets), func(i int) error {
		t := targets[i]
		dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		defer cancel()
		addr := net.JoinHostPort(t.pod.Status.PodIP, strconv.Itoa(contract.InboundPort))
		served, err := ServedCertificate(dctx, cfg.Dial, addr, t.st.identity)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, errNotServing):
			notServing = append(notServing, t.pod.Namespace+"/"+t.pod.Name)
		case err != nil:
			probs = append(probs, Problem{Kind: "po", Name: t.pod.Name, Namespace: t.pod.Namespace, Reason: err.Error(),
				Remedy: fmt.Sprintf("kubectl -n %s logs %s -c %s", t.pod.Namespace, t.pod.Name, contract.ProxyContainerName)})
		default:
			if why := compareServed(served, t.st.findings.Serial); why != "" {
				probs = append(probs, Problem{Kind: "po", Name: t.pod.Name, Namespace: t.pod.Namespace, Reason: why,
					Remedy: fmt.Sprintf("restart %s -n %s so its proxy loads the current certificate", t.st.owner.ref(), t.st.owner.Namespace)})
			}
		}
		return nil
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	sortProblems(probs)
	var notes []string
	if len(dp.pods) == 0 {
		notes = append(notes, "no TLS-enabled pods")
	}
	if n := len(notRunning); n > 0 {
		notes = append(notes, fmt.Sprintf("skipped %d pods whose proxy is not running: %s", n, joinNames(sortedStrings(notRunning), 3)))
	}
	if n := len(notServing); n > 0 {
		notes = append(notes, fmt.Sprintf("skipped %d pods whose proxy does not accept connections on %d: %s", n, contract.InboundPort, joinNames(sortedStrings(notServing), 3)))
	}
	if len(targets) > 0 {
		notes = append(notes, fmt.Sprintf("compared %d of %d pods", len(targets)-len(notServing), len(dp.pods)))
	}
	return WithNotes(Problems(probs, "proxies serving a certificate other than their Secret's: %d"), notes...)
}

func proxyRunning(p *corev1.Pod) bool {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == contract.ProxyContainerName {
			return cs.State.Running != nil
		}
	}
	return false
}

func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
