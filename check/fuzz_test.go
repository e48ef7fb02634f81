package check

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
	"unicode/utf8"

	"meshtls/ca/pki"
)

// The fuzz root is a test-only CA (testdata/fuzz-root, made with ca/pki,
// valid until 2125) that signed the leaves in testdata/fuzz/FuzzAnalyzeLeaf.
var fuzzNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

const fuzzIdentity = "web.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local"

// secretPEM is what a fuzz argument stands for in a Secret: PEM as it is,
// or DER (which mutates into other certificates far more often than its
// base64 does) wrapped in one block of typ, followed by tail.
func secretPEM(b []byte, typ string, tail []byte) []byte {
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN")) {
		return b
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), tail...)
}

// printable says whether a finding can be printed as one line of text.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// FuzzAnalyzeLeaf judges any tls.crt and tls.key a workload Secret could
// hold. Each finding is one printable line; an unreadable Secret is
// reported as that alone; the analysis is the same when repeated; and a
// Secret the CA accepts as valid (ca/pki's Check, which decides whether to
// re-issue) is one check finds nothing wrong with, apart from an expiry
// warning, so that check never fails on what the CA would leave alone.
func FuzzAnalyzeLeaf(f *testing.F) {
	rootPEM, err := os.ReadFile("testdata/fuzz-root/ca.crt")
	if err != nil {
		f.Fatal(err)
	}
	rootKey, err := os.ReadFile("testdata/fuzz-root/ca.key")
	if err != nil {
		f.Fatal(err)
	}
	ca, err := pki.LoadRoot(rootPEM, rootKey, fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	leaf, err := ca.Issue(fuzzIdentity, 24*time.Hour, fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(leaf.CertPEM, leaf.KeyPEM)
	th := thresholds{warn: 6 * time.Hour, fail: time.Hour}
	f.Fuzz(func(t *testing.T, cert, key []byte) {
		certPEM := secretPEM(cert, "CERTIFICATE", ca.CertPEM)
		keyPEM := secretPEM(key, "PRIVATE KEY", nil)
		// check --tls judges every Secret of the mesh, and the CA checks
		// each: one Secret must not hold either up.
		done := make(chan string, 1)
		go func() { done <- judgeLeaf(ca, certPEM, keyPEM, th) }()
		select {
		case msg := <-done:
			if msg != "" {
				t.Fatal(msg)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("judging tls.crt %q, tls.key %q takes over 10 s", certPEM, keyPEM)
		}
	})
}

// judgeLeaf is FuzzAnalyzeLeaf's checks of one Secret; it returns what is
// wrong, "" if nothing is.
func judgeLeaf(ca *pki.Root, certPEM, keyPEM []byte, th thresholds) string {
	fs := analyzeLeaf(certPEM, keyPEM, ca.Cert, fuzzIdentity, fuzzNow, th)
	judged := []string{fs.KeyMatch, fs.Chain, fs.SAN, fs.EKU, fs.Validity, fs.Expiry}
	for _, s := range append(judged, fs.Parse) {
		if !printable(s) {
			return fmt.Sprintf("finding %q is not one printable line", s)
		}
	}
	if fs.Parse != "" {
		for _, s := range judged {
			if s != "" {
				return fmt.Sprintf("unreadable (%s), yet judged: %q", fs.Parse, s)
			}
		}
	}
	again := analyzeLeaf(certPEM, keyPEM, ca.Cert, fuzzIdentity, fuzzNow, th)
	if again.Parse != fs.Parse || again.KeyMatch != fs.KeyMatch || again.Chain != fs.Chain || again.SAN != fs.SAN ||
		again.EKU != fs.EKU || again.Validity != fs.Validity || again.Expiry != fs.Expiry || again.ExpiryFatal != fs.ExpiryFatal {
		return fmt.Sprintf("analysis differs when repeated:\n%+v\n%+v", fs, again)
	}
	if _, err := ca.Check(certPEM, keyPEM, fuzzIdentity, fuzzNow); err == nil || errors.Is(err, pki.ErrRenewalDue) {
		if problem := fs.Parse + fs.KeyMatch + fs.Chain + fs.SAN + fs.EKU + fs.Validity; problem != "" {
			return fmt.Sprintf("the CA accepts the Secret (%v), check reports: %+v", err, fs)
		}
	}
	return ""
}
