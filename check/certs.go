package check

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"meshtls/ca/pki"
)

// The x509 judgements check makes, kept free of client-go so they can be
// tested alone. ca/pki decides whether the CA should re-issue; these say,
// one property at a time, what exactly is wrong.

// leafFindings is everything wrong with one workload Secret's content.
// Each field is "" when that property holds.
type leafFindings struct {
	Parse    string // tls.crt or tls.key unreadable; nothing else is judged then
	KeyMatch string
	Chain    string // does not verify to the current root
	SAN      string
	EKU      string
	Validity string // not yet valid or expired
	Expiry   string // expires within a threshold
	// ExpiryFatal says Expiry is inside the fail window, not just the warn one.
	ExpiryFatal bool
	Serial      *big.Int
	NotAfter    time.Time
}

type thresholds struct{ warn, fail time.Duration }

// analyzeLeaf judges a kubernetes.io/tls Secret's tls.crt and tls.key for
// identity under root (nil: chain not judged). Private key material never
// reaches the findings.
func analyzeLeaf(certPEM, keyPEM []byte, root *x509.Certificate, identity string, now time.Time, th thresholds) leafFindings {
	var f leafFindings
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		f.Parse = "tls.crt: " + err.Error()
		return f
	}
	leaf := certs[0]
	f.Serial, f.NotAfter = leaf.SerialNumber, leaf.NotAfter
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		f.Parse = "tls.key: " + err.Error()
		return f
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := key.Public().(equaler); !ok || !pub.Equal(leaf.PublicKey) {
		f.KeyMatch = "tls.key does not match the certificate in tls.crt"
	}
	if root != nil {
		f.Chain = verifyChain(leaf, certs[1:], root)
	}
	if !hasDNSName(leaf, identity) {
		f.SAN = fmt.Sprintf("DNS SAN is %v, want %s", leaf.DNSNames, identity)
	}
	f.EKU = usageProblem(leaf, certs[1:], root)
	f.Validity = validityProblem(leaf, now)
	if f.Validity == "" {
		f.Expiry, f.ExpiryFatal = expiryProblem(leaf.NotAfter, now, th)
	}
	return f
}

// verifyChain checks the signature path only: it verifies at an instant
// inside the leaf's validity, so an expired leaf is reported once, by the
// validity check, not also as "does not chain".
func verifyChain(leaf *x509.Certificate, rest []*x509.Certificate, root *x509.Certificate) string {
	_, err := leaf.Verify(verifyOptions(leaf, rest, root, x509.ExtKeyUsageAny))
	if err == nil {
		return ""
	}
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return fmt.Sprintf("not signed by the current root (%q); issued by %q", root.Subject.CommonName, leaf.Issuer.CommonName)
	}
	return err.Error()
}

func verifyOptions(leaf *x509.Certificate, rest []*x509.Certificate, root *x509.Certificate, usage x509.ExtKeyUsage) x509.VerifyOptions {
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range rest {
		if !c.Equal(root) {
			inter.AddCert(c)
		}
	}
	// The middle of the window where both leaf and root are valid; with
	// no such window the chain cannot verify at any instant, which is the
	// error to report.
	start, end := leaf.NotBefore, leaf.NotAfter
	if root.NotBefore.After(start) {
		start = root.NotBefore
	}
	if root.NotAfter.Before(end) {
		end = root.NotAfter
	}
	if end.Before(start) {
		start, end = leaf.NotBefore, leaf.NotAfter
	}
	at := start.Add(end.Sub(start) / 2)
	return x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{usage}}
}

func hasDNSName(c *x509.Certificate, name string) bool {
	for _, n := range c.DNSNames {
		if n == name {
			return true
		}
	}
	return false
}

// usageProblem checks serverAuth and clientAuth each on its own: Go's
// VerifyOptions.KeyUsages accepts a chain valid for any one of the listed
// usages, so asking for both at once would pass a server-only leaf.
func usageProblem(leaf *x509.Certificate, rest []*x509.Certificate, root *x509.Certificate) string {
	var missing []string
	for _, u := range []struct {
		usage x509.ExtKeyUsage
		name  string
	}{{x509.ExtKeyUsageServerAuth, "serverAuth"}, {x509.ExtKeyUsageClientAuth, "clientAuth"}} {
		if !certAllows(leaf, u.usage) {
			missing = append(missing, u.name)
			continue
		}
		// The chain can narrow usages too (EKU nests); only judge it when
		// the chain verifies at all, which the chain check reports, and
		// only when some CA in it restricts usages: each Verify costs a
		// signature check, and a thousand pods make that count.
		if root != nil && chainRestrictsUsage(rest, root) {
			if _, err := leaf.Verify(verifyOptions(leaf, rest, root, x509.ExtKeyUsageAny)); err == nil {
				if _, err := leaf.Verify(verifyOptions(leaf, rest, root, u.usage)); err != nil {
					missing = append(missing, u.name+" (not allowed by the chain)")
				}
			}
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("extended key usage lacks %v (has %s)", missing, ekuNames(leaf))
}

func chainRestrictsUsage(rest []*x509.Certificate, root *x509.Certificate) bool {
	for _, c := range append([]*x509.Certificate{root}, rest...) {
		if len(c.ExtKeyUsage) > 0 || len(c.UnknownExtKeyUsage) > 0 {
			return true
		}
	}
	return false
}

// certAllows follows x509: no EKU at all means any usage.
func certAllows(c *x509.Certificate, usage x509.ExtKeyUsage) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == usage || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

func ekuNames(c *x509.Certificate) string {
	if len(c.ExtKeyUsage) == 0 {
		return "none"
	}
	names := map[x509.ExtKeyUsage]string{x509.ExtKeyUsageServerAuth: "serverAuth", x509.ExtKeyUsageClientAuth: "clientAuth", x509.ExtKeyUsageAny: "any"}
	var out []string
	for _, u := range c.ExtKeyUsage {
		if n, ok := names[u]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("eku(%d)", u))
		}
	}
	return fmt.Sprint(out)
}

func validityProblem(c *x509.Certificate, now time.Time) string {
	if now.Before(c.NotBefore) {
		return "not valid before " + stamp(c.NotBefore)
	}
	if now.After(c.NotAfter) {
		return "expired at " + stamp(c.NotAfter)
	}
	return ""
}

// expiryProblem says whether notAfter falls inside the fail or warn window.
func expiryProblem(notAfter, now time.Time, th thresholds) (string, bool) {
	left := notAfter.Sub(now)
	switch {
	case left <= th.fail:
		return fmt.Sprintf("expires in %s (at %s), within --fail-within %s", roundDuration(left), stamp(notAfter), th.fail), true
	case left <= th.warn:
		return fmt.Sprintf("expires in %s (at %s), within --warn-within %s", roundDuration(left), stamp(notAfter), th.warn), false
	}
	return "", false
}

// rootProblems checks the root certificate for use as the mesh's trust
// anchor: a CA, able to sign, and valid for both TLS usages (each on its
// own, as for leaves).
func rootUsageProblem(root *x509.Certificate) string {
	if !root.IsCA || !root.BasicConstraintsValid {
		return "not a CA certificate (basicConstraints CA:TRUE missing)"
	}
	if root.KeyUsage != 0 && root.KeyUsage&x509.KeyUsageCertSign == 0 {
		return "may not sign certificates (keyUsage lacks keyCertSign)"
	}
	for _, u := range []struct {
		usage x509.ExtKeyUsage
		name  string
	}{{x509.ExtKeyUsageServerAuth, "serverAuth"}, {x509.ExtKeyUsageClientAuth, "clientAuth"}} {
		if !certAllows(root, u.usage) {
			return fmt.Sprintf("extended key usage does not allow %s (has %s): leaves under it cannot be used for it", u.name, ekuNames(root))
		}
	}
	return ""
}

// algorithmProblem accepts what the proxies' TLS stacks accept for a
// mesh root: ECDSA P-256/P-384 and RSA of at least 2048 bits, signed with
// SHA-256 or better.
func algorithmProblem(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Sprintf("ECDSA curve %s is not supported: use P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Sprintf("RSA key of %d bits is too short: use 2048 or more", k.N.BitLen())
		}
	default:
		return fmt.Sprintf("public key algorithm %s is not supported: use ECDSA P-256 or RSA", c.PublicKeyAlgorithm)
	}
	switch c.SignatureAlgorithm {
	case x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512,
		x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
		x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
		return ""
	}
	return fmt.Sprintf("signature algorithm %s is not supported: use SHA-256 or better", c.SignatureAlgorithm)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// roundDuration prints a duration at a precision a human reads: days for
// roots, minutes for leaves.
func roundDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	default:
		return d.Round(time.Second).String()
	}
}
