package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/pem"
	"strings"
	"testing"
)

// oneLine reports whether an error message prints as one line.
func oneLine(msg string) bool { return !strings.ContainsAny(msg, "\n\r\x1b") }

// FuzzParseCerts reads any tls.crt or trust bundle. An error is one line;
// what parses is at least one certificate, and encoding those again gives
// a bundle that parses to the very same certificates.
func FuzzParseCerts(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCerts(data)
		if err != nil {
			if !oneLine(err.Error()) {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if len(certs) == 0 {
			t.Fatal("no certificates and no error")
		}
		again, err := ParseCerts(EncodeCerts(certs))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-encoded bundle: %d certificates, %v; want %d", len(again), err, len(certs))
		}
		for i := range certs {
			if !again[i].Equal(certs[i]) {
				t.Fatalf("certificate %d changed by re-encoding", i+1)
			}
		}
	})
}

// FuzzParseKey reads any tls.key or root key. An error is one line and
// quotes none of the key's PEM body (errors are logged, keys must not be);
// a key that parses is ECDSA or RSA and survives EncodeKey unchanged.
func FuzzParseKey(f *testing.F) {
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := ParseKey(data)
		if err != nil {
			msg := err.Error()
			if !oneLine(msg) {
				t.Fatalf("error is not one line: %q", msg)
			}
			if block, _ := pem.Decode(data); block != nil {
				body := string(pem.EncodeToMemory(&pem.Block{Type: "X", Bytes: block.Bytes}))
				body = strings.Join(strings.Split(body, "\n")[1:], "")
				const n = 12
				for i := 0; i+n <= len(body); i++ {
					if strings.Contains(msg, body[i:i+n]) {
						t.Fatalf("error %q quotes the key body (%q)", msg, body[i:i+n])
					}
				}
			}
			return
		}
		switch key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey:
		default:
			t.Fatalf("key of type %T accepted", key)
		}
		enc, err := EncodeKey(key)
		if err != nil {
			t.Fatalf("a parsed key does not encode: %v", err)
		}
		back, err := ParseKey(enc)
		if err != nil {
			t.Fatalf("an encoded key does not parse: %v", err)
		}
		if e, ok := key.(interface{ Equal(crypto.PrivateKey) bool }); !ok || !e.Equal(back) {
			t.Fatal("key changed by re-encoding")
		}
	})
}
