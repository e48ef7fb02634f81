package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestPassThroughMatrix: what a client sends and what the application
// answers crosses a proxy pair over mTLS unchanged, for each thing the
// issue names: large bodies (both ways, HTTP/1.1 and HTTP/2), Expect:
// 100-continue, HTTP/1.1 trailers both ways, gRPC messages of several MB
// both ways, deadlines, cancellation, a status with any Unicode message,
// and custom metadata (text and binary) both ways.
func TestPassThroughMatrix(t *testing.T) {
	m := newMesh(t, meshOpts{idA: idA, idB: idB})
	big := make([]byte, 8<<20)
	_, _ = rand.Read(big)

	t.Run("large bodies", func(t *testing.T) {
		for _, h2 := range []bool{false, true} {
			resp, err := m.client(h2).Post(m.url("/echo-body"), "application/octet-stream", bytes.NewReader(big))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, big) {
				t.Errorf("h2=%v: %d of %d bytes came back equal (%v)", h2, len(got), len(big), err)
			}
		}
	})

	t.Run("headers as large as a direct call allows", func(t *testing.T) {
		// net/http's own limit is 1 MiB; 200 KiB works calling the app
		// directly, so it must work through the mesh.
		req, _ := http.NewRequest("GET", m.url("/echo"), nil)
		req.Header.Set("X-Large", strings.Repeat("v", 200<<10))
		resp, err := m.client(false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e echoed
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(e.Header.Get("X-Large")) != 200<<10 {
			t.Errorf("a 200 KiB header: status %d, %d bytes arrived", resp.StatusCode, len(e.Header.Get("X-Large")))
		}
	})

	t.Run("expect 100-continue", func(t *testing.T) {
		c, err := net.Dial("tcp", m.a.addr("outbound"))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		rr := newResponseReader(c)
		// The body waits for the 100, which must come through both
		// proxies from the application's server.
		resp, err := http.ReadResponse(rr.br, nil)
		if err != nil || resp.StatusCode != http.StatusContinue {
			t.Fatalf("first response %v %v, want 100 Continue", resp, err)
		}
		fmt.Fprint(c, "hello")
		resp, err = http.ReadResponse(rr.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var e echoed
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 200 || e.BodyLen != 5 || e.Header.Get("Expect") != "100-continue" {
			t.Errorf("after 100: %d %+v", resp.StatusCode, e)
		}
	})

	t.Run("http/1.1 trailers both ways", func(t *testing.T) {
		req, _ := http.NewRequest("POST", m.url("/echo-body"), io.NopCloser(strings.NewReader("body with a trailer")))
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Request-Trailer": {"sent-after-the-body"}}
		resp, err := m.client(false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "body with a trailer" || resp.Trailer.Get("X-Request-Trailer") != "sent-after-the-body" {
			t.Errorf("body %q, response trailers %v: the request trailer did not reach the app and come back", b, resp.Trailer)
		}
	})

	cl := grpcClient(t, m.a.addr("outbound"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("grpc messages of several MB", func(t *testing.T) {
		payload := big[:5<<20]
		resp, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: payload}})
		if err != nil || !bytes.Equal(resp.GetPayload().GetBody(), payload) {
			t.Fatalf("5 MB request echoed: %d bytes, %v", len(resp.GetPayload().GetBody()), err)
		}
		resp, err = cl.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 6 << 20})
		if err != nil || len(resp.GetPayload().GetBody()) != 6<<20 {
			t.Fatalf("6 MB response: %d bytes, %v", len(resp.GetPayload().GetBody()), err)
		}
	})

	t.Run("grpc deadline", func(t *testing.T) {
		dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
		defer dcancel()
		var hdr metadata.MD
		if _, err := cl.UnaryCall(dctx, &testpb.SimpleRequest{}, grpc.Header(&hdr)); err != nil {
			t.Fatal(err)
		}
		left, err := strconv.Atoi(strings.Join(hdr.Get("x-deadline-left-ms"), ""))
		if err != nil || left <= 0 || left > 30_000 {
			t.Errorf("the app saw deadline %v ms left (%v), want (0, 30000]", hdr.Get("x-deadline-left-ms"), err)
		}
	})

	t.Run("grpc status with a unicode message", func(t *testing.T) {
		const msg = "ünïcødé ✓ 日本語 🚀 100% \"quoted\"\nnewline"
		_, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.FailedPrecondition), Message: msg}})
		st := status.Convert(err)
		if st.Code() != codes.FailedPrecondition || st.Message() != msg {
			t.Errorf("got %v %q, want FailedPrecondition %q", st.Code(), st.Message(), msg)
		}
	})

	t.Run("grpc custom metadata both ways", func(t *testing.T) {
		bin := string([]byte{0, 1, 2, 0xff, 0xfe})
		mctx := metadata.AppendToOutgoingContext(ctx, "x-custom", "value one", "x-custom", "value two", "x-blob-bin", bin)
		var hdr, trl metadata.MD
		if _, err := cl.UnaryCall(mctx, &testpb.SimpleRequest{}, grpc.Header(&hdr), grpc.Trailer(&trl)); err != nil {
			t.Fatal(err)
		}
		for name, md := range map[string]metadata.MD{"header": hdr, "trailer": trl} {
			if got := md.Get("x-custom"); strings.Join(got, "|") != "value one|value two" {
				t.Errorf("%s x-custom = %q", name, got)
			}
			if got := md.Get("x-blob-bin"); len(got) != 1 || got[0] != bin {
				t.Errorf("%s x-blob-bin = %q", name, got)
			}
		}
	})

	t.Run("grpc cancellation", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		st, err := cl.FullDuplexCall(cctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
		// Counted from here: the deadline case before may end either
		// way (the app's DEADLINE_EXCEEDED or the client's reset first).
		failures := func(p *testProxy) float64 {
			return metric(t, p.addr("admin"), "response_total", map[string]string{"classification": "failure", "grpc_status": ""})
		}
		before := map[*testProxy]float64{m.a: failures(m.a), m.b: failures(m.b)}
		ccancel()
		select {
		case err := <-m.app.canceled:
			if status.Code(err) != codes.Canceled && err != context.Canceled {
				t.Errorf("the app's stream ended with %v, want canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the client's cancellation never reached the app")
		}
		// A cancelled call is not a success on either proxy: the stream
		// ended without a grpc-status.
		for _, p := range []*testProxy{m.a, m.b} {
			eventually(t, 5*time.Second, "the cancelled call recorded as a failure", func() bool {
				return failures(p) == before[p]+1
			})
		}
	})
}
