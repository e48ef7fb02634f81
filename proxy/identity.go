package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"meshtls/proxy/discovery"
)

// credentials are one loaded, consistent set of TLS files.
type credentials struct {
	cert     *tls.Certificate
	leaf     *x509.Certificate
	roots    *x509.CertPool
	identity string
	// raw is the files' content, to skip reloads that change nothing.
	raw [3][]byte
}

// identityStore holds the pod's current credentials and replaces them when
// the kubelet swaps the volume files. Readers take a snapshot per handshake,
// so a rotation never touches connections already established.
type identityStore struct {
	certFile, keyFile, anchorsFile string
	identity                       string
	log                            *slog.Logger
	m                              *metrics
	now                            func() time.Time

	cur      atomic.Pointer[credentials]
	mu       sync.Mutex // serialises reloads and the disabled log line
	disabled string     // last reason logged, so each cause is logged once
	// lastAttempt fingerprints the files last tried.
	lastAttempt string
}

func newIdentityStore(cfg *Config, m *metrics, log *slog.Logger) *identityStore {
	return &identityStore{
		certFile: cfg.CertFile, keyFile: cfg.KeyFile, anchorsFile: cfg.TrustAnchorsFile,
		identity: cfg.Identity, log: log, m: m, now: time.Now,
	}
}

// configured says whether the pod was injected with TLS at all.
func (s *identityStore) configured() bool {
	return s.identity != "" && s.certFile != "" && s.keyFile != "" && s.anchorsFile != ""
}

// current returns the credentials in force, or nil when TLS is disabled.
func (s *identityStore) current() *credentials {
	c := s.cur.Load()
	if c == nil || s.now().After(c.leaf.NotAfter) {
		return nil
	}
	return c
}

// unusable says why current is nil, for errors and /ready.
func (s *identityStore) unusable() string {
	if !s.configured() {
		return "TLS is not configured for this pod"
	}
	if c := s.cur.Load(); c != nil && s.now().After(c.leaf.NotAfter) {
		return "the pod's certificate expired at " + c.leaf.NotAfter.UTC().Format(time.RFC3339) + " and no renewed one has been loaded"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disabled != "" {
		return "no usable TLS certificate: " + s.disabled
	}
	return "no usable TLS certificate loaded yet"
}

// reload reads the files again. A failure keeps credentials that are still
// valid (a half-written update must not turn TLS off), and otherwise
// leaves TLS disabled; either way it is logged once per cause, never with
// file contents.
func (s *identityStore) reload() {
	if !s.configured() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var raw [3][]byte
	var err error
	for i, f := range []string{s.certFile, s.keyFile, s.anchorsFile} {
		if raw[i], err = os.ReadFile(f); err != nil {
			break
		}
	}
	// The poll and every fsnotify event land here: only a change of
	// content (or of the reason it cannot be read) is a reload.
	attempt := sha256.New()
	for _, b := range raw {
		attempt.Write(b)
		attempt.Write([]byte{0})
	}
	if err != nil {
		attempt.Write([]byte(err.Error()))
	}
	sum := string(attempt.Sum(nil))
	if sum == s.lastAttempt {
		return
	}
	s.lastAttempt = sum
	var c *credentials
	if err == nil {
		c, err = parseCredentials(raw, s.identity, s.now())
	}
	if err != nil {
		s.m.tlsReload.WithLabelValues("failure").Inc()
		if s.current() != nil {
			s.log.Warn("TLS credentials not reloaded; keeping the previous ones", "reason", err.Error())
			return
		}
		s.cur.Store(nil)
		if s.disabled != err.Error() {
			s.disabled = err.Error()
			s.log.Warn("TLS disabled: not ready, and no traffic to peers with an identity, until usable credentials appear", "reason", err.Error())
		}
		return
	}
	s.cur.Store(c)
	s.disabled = ""
	s.m.tlsReload.WithLabelValues("success").Inc()
	s.m.tlsLastReload.SetToCurrentTime()
	s.log.Info("TLS credentials loaded", "identity", s.identity, "not_after", c.leaf.NotAfter.UTC().Format(time.RFC3339), "serial", c.leaf.SerialNumber.String())
}

// parseCredentials checks that the files belong together: the key matches
// the leaf, the leaf names our identity and chains to the anchors.
func parseCredentials(raw [3][]byte, identity string, now time.Time) (*credentials, error) {
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		// The tls package's errors never include key bytes; still, name
		// the file rather than echo the parser.
		return nil, fmt.Errorf("certificate and key do not form a usable pair: %s", sanitize(err))
	}
	leaf := cert.Leaf
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(raw[2]) {
		return nil, errors.New("trust anchors file holds no PEM certificate")
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: identity, Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, fmt.Errorf("certificate does not serve identity %s under the trust anchors: %w", identity, err)
	}
	return &credentials{cert: &cert, leaf: leaf, roots: roots, identity: identity, raw: raw}, nil
}

func sanitize(err error) string {
	msg := err.Error()
	if bytes.Contains([]byte(msg), []byte("PRIVATE KEY")) {
		return "malformed key material"
	}
	return msg
}

// watch reloads on any change in the files' directories (the kubelet's
// ..data symlink swap renames within the directory) and, as a backstop for
// directories that do not exist yet, every poll.
func (s *identityStore) watch(ctx context.Context, poll time.Duration) {
	if !s.configured() {
		return
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("cannot watch TLS files; polling only", "reason", err.Error())
	}
	var dirs []string
	for _, f := range []string{s.certFile, s.keyFile, s.anchorsFile} {
		if d := filepath.Dir(f); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	watched := map[string]bool{}
	addWatches := func() {
		if w == nil {
			return
		}
		for _, d := range dirs {
			if !watched[d] && w.Add(d) == nil {
				watched[d] = true
			}
		}
	}
	addWatches()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		defer func() { _ = w.Close() }()
		events, errs = w.Events, w.Errors
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	// Debounce: the kubelet's update is several renames in a row.
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			debounce = time.After(50 * time.Millisecond)
		case err := <-errs:
			s.log.Debug("TLS file watch error", "error", err)
		case <-debounce:
			debounce = nil
			s.reload()
		case <-tick.C:
			addWatches()
			s.reload()
		}
	}
}

// serverConfig is the inbound TLS configuration for the current
// credentials: our certificate, and a client certificate required and
// verified against the trust anchors.
func (c *credentials) serverConfig(nextProtos []string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*c.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.roots,
		NextProtos:   nextProtos,
		// Tickets would let a client resume without presenting its
		// certificate to a later credential set; full handshakes are cheap.
		SessionTicketsDisabled: true,
	}
}

// clientConfig is the outbound TLS configuration to a peer that must be
// serverID. The name check happens in VerifyConnection, which also runs
// on resumed sessions.
func (c *credentials) clientConfig(serverID string, nextProtos []string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*c.cert},
		RootCAs:      c.roots,
		ServerName:   serverID,
		NextProtos:   nextProtos,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("peer presented no certificate")
			}
			return cs.PeerCertificates[0].VerifyHostname(serverID)
		},
	}
}

// peerIdentity is the DNS SAN of a verified peer certificate.
func peerIdentity(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	if names := cs.PeerCertificates[0].DNSNames; len(names) > 0 {
		return names[0]
	}
	return ""
}

// ControllerTLS is the client TLS configuration for the proxy's own calls
// to the control plane (the destination service): it presents the pod's
// current certificate, when it has one, and accepts only a server that
// chains to the current trust anchors and is controllerID. Both are read
// at each handshake, so rotation needs no new client.
func (p *Proxy) ControllerTLS(controllerID string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: controllerID,
		// Verification is done below against the anchors of the moment,
		// which a static RootCAs could not follow.
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection verifies chain and name
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := p.id.current(); c != nil {
				return c.cert, nil
			}
			return &tls.Certificate{}, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			c := p.id.current()
			if c == nil {
				return errors.New("no trust anchors loaded: cannot verify the controller")
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("controller presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: controllerID, Roots: c.roots, Intermediates: inter})
			return err
		},
	}
}

// SetResolver sets the resolver before Run, for resolvers that need the
// proxy's ControllerTLS.
func (p *Proxy) SetResolver(r discovery.Resolver) { p.cfg.Resolver = r }
