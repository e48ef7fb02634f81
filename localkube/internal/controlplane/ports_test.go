package controlplane

import (
	"net"
	"strconv"
	"testing"
)

// The ports a cluster picks lie outside the kernel's ephemeral range, so
// no outgoing connection can take one before its server binds it.
func TestFreePortAvoidsTheEphemeralRange(t *testing.T) {
	lo, hi := ephemeralRange()
	if lo > hi || lo < 1 {
		t.Fatalf("ephemeral range %d-%d", lo, hi)
	}
	for range 50 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if p >= lo && p <= hi {
			t.Fatalf("port %d is in the ephemeral range %d-%d", p, lo, hi)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}
}
