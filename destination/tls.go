package destination

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// CertFiles are the controller's identity as mounted from its Secret
// (tls.crt, tls.key) and the trust bundle (trust-anchors.pem). They are
// re-read when they change, since the kubelet swaps them on rotation and
// the Secret may only appear after the controller starts.
type CertFiles struct {
	Cert, Key, TrustAnchors string
	Logger                  *slog.Logger

	mu      sync.Mutex
	checked time.Time
	stamp   string
	config  *tls.Config
	err     error
}

// recheck limits how often the files are stat'ed: a handshake at most
// once a second.
const recheck = time.Second

// ServerConfig is a tls.Config serving the current files. A client that
// presents a certificate must chain to the trust anchors (mutual TLS); one
// that presents none is still served, since what discovery says is no
// secret and a proxy waiting for its own certificate needs it too.
func (f *CertFiles) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.current()
		},
	}
}

func (f *CertFiles) current() (*tls.Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) < recheck && (f.config != nil || f.err != nil) {
		return f.config, f.err
	}
	f.checked = time.Now()
	stamp := ""
	for _, p := range []string{f.Cert, f.Key, f.TrustAnchors} {
		st, err := os.Stat(p)
		if err != nil {
			f.config, f.err = nil, fmt.Errorf("controller identity not available: %w", err)
			return nil, f.err
		}
		stamp += fmt.Sprintf("%s:%d:%d;", p, st.ModTime().UnixNano(), st.Size())
	}
	if stamp == f.stamp && f.config != nil {
		return f.config, nil
	}
	cfg, err := f.load()
	if err != nil {
		f.config, f.err = nil, err
		f.log().Error("controller identity unusable; TLS handshakes fail until it is fixed", "err", err)
		return nil, err
	}
	f.config, f.err, f.stamp = cfg, nil, stamp
	f.log().Info("controller identity loaded", "cert", f.Cert)
	return cfg, nil
}

func (f *CertFiles) log() *slog.Logger {
	if f.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return f.Logger
}

// load reads the files. Its errors name files, never their contents.
func (f *CertFiles) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("load %s and %s: %w", f.Cert, f.Key, err)
	}
	anchors, err := os.ReadFile(f.TrustAnchors)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(anchors) {
		return nil, fmt.Errorf("no certificate in %s", f.TrustAnchors)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		NextProtos:   []string{"h2"},
	}, nil
}

// Load checks the files now, for a clear error at startup.
func (f *CertFiles) Load() error {
	_, err := f.current()
	return err
}

// EitherListener accepts TLS and plain-text connections on one port: a
// connection whose first byte is a TLS handshake record is served with
// cfg, any other as it is. Proxies with a certificate dial TLS and check
// the controller's identity; which one a client uses is its choice, and
// the server never turns a TLS connection into plain text.
func EitherListener(l net.Listener, cfg *tls.Config) net.Listener {
	el := &eitherListener{Listener: l, cfg: cfg, conns: make(chan net.Conn), done: make(chan struct{})}
	go el.accept()
	return el
}

type eitherListener struct {
	net.Listener
	cfg   *tls.Config
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	err   error
}

// sniffTimeout bounds how long a connection may stay silent before its
// first byte: a client that connects and sends nothing is dropped.
const sniffTimeout = 10 * time.Second

func (el *eitherListener) accept() {
	for {
		c, err := el.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			el.once.Do(func() { el.err = err; close(el.done) })
			return
		}
		// Sniff off the accept loop, so one silent client does not hold
		// up the others.
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
			br := bufio.NewReaderSize(c, 1)
			b, err := br.Peek(1)
			if err != nil {
				_ = c.Close()
				return
			}
			_ = c.SetReadDeadline(time.Time{})
			var conn net.Conn = &peekedConn{Conn: c, r: br}
			if b[0] == 0x16 { // TLS handshake record
				conn = tls.Server(conn, el.cfg)
			}
			select {
			case el.conns <- conn:
			case <-el.done:
				_ = c.Close()
			}
		}()
	}
}

func (el *eitherListener) Accept() (net.Conn, error) {
	select {
	case c := <-el.conns:
		return c, nil
	case <-el.done:
		return nil, el.err
	}
}

func (el *eitherListener) Close() error {
	err := el.Listener.Close()
	el.once.Do(func() { el.err = net.ErrClosed; close(el.done) })
	return err
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// EitherCredentials are gRPC server credentials that serve TLS with cfg to
// a client whose first byte is a TLS handshake record, and plain text to
// any other, as EitherListener does, but inside gRPC's per-connection
// handshake: a TLS client's verified certificate reaches the handlers
// (peer.FromContext), so the server records who asked.
func EitherCredentials(cfg *tls.Config) credentials.TransportCredentials {
	return &eitherCreds{cfg: cfg}
}

type eitherCreds struct{ cfg *tls.Config }

type plainAuth struct{ credentials.CommonAuthInfo }

func (plainAuth) AuthType() string { return "insecure" }

func (e *eitherCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	br := bufio.NewReaderSize(c, 1)
	b, err := br.Peek(1)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, nil, err
	}
	conn := &peekedConn{Conn: c, r: br}
	if b[0] != 0x16 {
		return conn, plainAuth{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
	}
	tc := tls.Server(conn, e.cfg)
	_ = c.SetDeadline(time.Now().Add(sniffTimeout))
	err = tc.Handshake()
	_ = c.SetDeadline(time.Time{})
	if err != nil {
		return nil, nil, err
	}
	return tc, credentials.TLSInfo{State: tc.ConnectionState(), CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (e *eitherCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("EitherCredentials are for servers")
}

func (e *eitherCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (e *eitherCreds) Clone() credentials.TransportCredentials { return &eitherCreds{cfg: e.cfg} }

func (e *eitherCreds) OverrideServerName(string) error { return nil }
