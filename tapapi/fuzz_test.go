package tapapi

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	tappb "meshtls/proto/tap"
)

// FuzzScanEvent checks the merger's field scanner, which reads events from
// proxies without decoding them, against the protobuf decoder: bytes the
// decoder rejects are never silently taken as a well-formed event with
// other fields, and for bytes it accepts the scanner reads the same
// dropped_before, direction, stage, stream id and peer addresses. A pushed
// event comes out of the merger decoding as it went in.
func FuzzScanEvent(f *testing.F) {
	for _, ev := range []*tappb.TapEvent{reqEv(1, 1), rspEv(1, 1), endEv(7, 1<<40)} {
		b, err := proto.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(withDropped(b, 3))
	}
	// Two messages in a row decode as one, merged: a request's id merges
	// with a later one's, a response replaces a request.
	req, _ := proto.Marshal(reqEv(1, 1))
	rsp, _ := proto.Marshal(rspEv(2, 5))
	idOnly, _ := proto.Marshal(&tappb.TapEvent{Event: &tappb.TapEvent_Http_{Http: &tappb.TapEvent_Http{Event: &tappb.TapEvent_Http_RequestInit_{
		RequestInit: &tappb.TapEvent_Http_RequestInit{Id: &tappb.TapEvent_Http_StreamId{Stream: 9}}}}}})
	f.Add(append(append([]byte{}, req...), idOnly...))
	f.Add(append(append([]byte{}, req...), rsp...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		sc, err := scanEvent(b)
		ev := &tappb.TapEvent{}
		perr := proto.Unmarshal(b, ev)
		if err != nil {
			if !errors.Is(err, errBadEvent) {
				t.Fatalf("scanEvent(%x): %v is not errBadEvent", b, err)
			}
			if perr == nil {
				t.Fatalf("scanEvent(%x) rejects what protobuf decodes: %v", b, ev)
			}
			return
		}
		if perr != nil {
			// The scanner reads only what the merger needs; a bad string
			// elsewhere is the client's to report.
			return
		}
		h := ev.GetHttp()
		var stage int
		var id *tappb.TapEvent_Http_StreamId
		switch {
		case h.GetRequestInit() != nil:
			stage, id = stageRequest, h.GetRequestInit().GetId()
		case h.GetResponseInit() != nil:
			stage, id = stageResponse, h.GetResponseInit().GetId()
		case h.GetResponseEnd() != nil:
			stage, id = stageEnd, h.GetResponseEnd().GetId()
		}
		ip := func(a interface{ GetIp() []byte }) netip.Addr {
			v, _ := netip.AddrFromSlice(a.GetIp())
			return v.Unmap()
		}
		want := scanned{
			dropped: ev.GetDroppedBefore(), stage: stage,
			key: streamKey{id.GetBase(), id.GetStream()}, dir: int32(ev.GetProxyDirection()),
			src: ip(ev.GetSource()), dst: ip(ev.GetDestination()),
			dstLabeled: len(ev.GetDestinationMeta().GetLabels()) > 0,
		}
		if sc != want {
			t.Fatalf("scanEvent(%x) = %+v, decoded %+v (%v)", b, sc, want, ev)
		}

		m := NewMerger(0, 4)
		m.Feeder().Push(b)
		select {
		case out := <-m.Events():
			got := &tappb.TapEvent{}
			if err := proto.Unmarshal(out, got); err != nil || !proto.Equal(got, ev) {
				t.Fatalf("merger passed %x as %v (%v), want %v", out, got, err, ev)
			}
		default:
			t.Fatalf("merger dropped %v (%d dropped)", ev, m.Dropped())
		}
	})
}

// FuzzFrameReader reads any bytes as a tap API stream. Reading ends at EOF
// or at the first error, never takes more frames than the stream could
// hold, every error is one line, and every frame read writes and reads
// back the same.
func FuzzFrameReader(f *testing.F) {
	var buf bytes.Buffer
	fw := newFrameWriter(&buf)
	_ = fw.status(Status{Pods: 3, Proxies: 2, Errors: []string{"pod a/b: refused"}})
	for _, ev := range []*tappb.TapEvent{reqEv(1, 1), rspEv(1, 1), endEv(1, 1)} {
		b, _ := proto.Marshal(ev)
		_ = fw.event(b, 2)
	}
	_ = fw.status(Status{Dropped: 5, End: true})
	_ = fw.w.Flush()
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:7])
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{9, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, stream []byte) {
		fr := NewFrameReader(bytes.NewReader(stream))
		var rewritten bytes.Buffer
		fw := newFrameWriter(&rewritten)
		var evs []*tappb.TapEvent
		var sts []*Status
		for n := 0; ; n++ {
			if n > len(stream)/5 {
				t.Fatalf("%d frames from %d bytes", n, len(stream))
			}
			ev, st, err := fr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				if msg := err.Error(); strings.ContainsAny(msg, "\n\r") {
					t.Fatalf("error is not one line: %q", msg)
				}
				break
			}
			switch {
			case ev != nil && st == nil:
				b, err := proto.Marshal(ev)
				if err != nil {
					t.Fatal(err)
				}
				if err := fw.event(b, ev.GetDroppedBefore()); err != nil {
					t.Fatal(err)
				}
				evs = append(evs, ev)
			case st != nil && ev == nil:
				if err := fw.status(*st); err != nil {
					t.Fatal(err)
				}
				sts = append(sts, st)
			default:
				t.Fatalf("frame %d: event %v and status %v", n, ev, st)
			}
		}
		if err := fw.w.Flush(); err != nil {
			t.Fatal(err)
		}
		fr = NewFrameReader(&rewritten)
		for len(evs)+len(sts) > 0 {
			ev, st, err := fr.Next()
			if err != nil {
				t.Fatalf("re-reading: %v", err)
			}
			if ev != nil {
				if len(evs) == 0 || !proto.Equal(ev, evs[0]) {
					t.Fatalf("re-read event %v, want %v", ev, evs)
				}
				evs = evs[1:]
				continue
			}
			if len(sts) == 0 || !equalStatus(*st, *sts[0]) {
				t.Fatalf("re-read status %+v, want %+v", st, sts)
			}
			sts = sts[1:]
		}
		if _, _, err := fr.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("re-read stream has more: %v", err)
		}
	})
}

func equalStatus(a, b Status) bool {
	return a.Pods == b.Pods && a.Proxies == b.Proxies && a.Dropped == b.Dropped && a.End == b.End &&
		strings.Join(a.Errors, "\x00") == strings.Join(b.Errors, "\x00") && len(a.Errors) == len(b.Errors)
}
