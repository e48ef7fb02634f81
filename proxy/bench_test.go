package proxy

import (
	"io"
	"testing"
)

// BenchmarkRequest is one HTTP/1.1 request through a client-side and a
// server-side proxy, in one process.
func BenchmarkRequest(b *testing.B) {
	for _, tc := range []struct {
		name string
		o    meshOpts
	}{{"plain", meshOpts{advertised: "-"}}, {"mTLS", meshOpts{idA: idA, idB: idB}}} {
		b.Run(tc.name, func(b *testing.B) {
			m := newMesh(b, tc.o)
			c := m.client(false)
			url := m.url("/bench")
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
}
