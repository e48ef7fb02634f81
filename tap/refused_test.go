package tap

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"meshtls/contract"
)

// TestRefusedPrinted: an end event a required proxy marked refused prints
// refused=REASON (not error=), with the client's address, in text and
// JSON; it is a failure, and an ordinary proxy error still prints error=.
func TestRefusedPrinted(t *testing.T) {
	e := Event{Kind: KindEnd, Direction: DirInbound, Status: 403,
		Src:   Peer{Addr: netip.MustParseAddrPort("10.1.2.3:41000")},
		Dst:   Peer{Addr: netip.MustParseAddrPort("10.1.2.4:8080")},
		TLS:   TLS{Status: "no_identity", NoTLSReason: contract.RefusedNoTLS},
		Error: contract.TapRefusedPrefix + contract.RefusedNoTLS}
	if e.Refused() != contract.RefusedNoTLS || e.Success() {
		t.Fatalf("Refused %q Success %v", e.Refused(), e.Success())
	}
	line := string(AppendLine(nil, &e, true))
	if !strings.Contains(line, " refused=no_tls_from_remote") || strings.Contains(line, "error=") || !strings.Contains(line, "src=10.1.2.3:41000") {
		t.Errorf("line %q", line)
	}
	b, err := MarshalJSON(&e)
	if err != nil {
		t.Fatal(err)
	}
	var j struct{ End struct{ Refused string } }
	if err := json.Unmarshal(b, &j); err != nil || j.End.Refused != "no_tls_from_remote" {
		t.Errorf("json %s: %v", b, err)
	}
	e.Error = "connect_failed"
	if line := string(AppendLine(nil, &e, false)); !strings.Contains(line, " error=connect_failed") || strings.Contains(line, "refused=") {
		t.Errorf("plain error line %q", line)
	}
}
