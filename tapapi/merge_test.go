package tapapi

import (
	"bytes"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	tappb "meshtls/proto/tap"
)

func reqEv(base uint32, n uint64) *tappb.TapEvent {
	return &tappb.TapEvent{Event: &tappb.TapEvent_Http_{Http: &tappb.TapEvent_Http{Event: &tappb.TapEvent_Http_RequestInit_{
		RequestInit: &tappb.TapEvent_Http_RequestInit{Id: &tappb.TapEvent_Http_StreamId{Base: base, Stream: n}, Method: "GET", Path: "/"}}}}}
}

func rspEv(base uint32, n uint64) *tappb.TapEvent {
	return &tappb.TapEvent{Event: &tappb.TapEvent_Http_{Http: &tappb.TapEvent_Http{Event: &tappb.TapEvent_Http_ResponseInit_{
		ResponseInit: &tappb.TapEvent_Http_ResponseInit{Id: &tappb.TapEvent_Http_StreamId{Base: base, Stream: n}, HttpStatus: 200}}}}}
}

func endEv(base uint32, n uint64) *tappb.TapEvent {
	return &tappb.TapEvent{Event: &tappb.TapEvent_Http_{Http: &tappb.TapEvent_Http{Event: &tappb.TapEvent_Http_ResponseEnd_{
		ResponseEnd: &tappb.TapEvent_Http_ResponseEnd{Id: &tappb.TapEvent_Http_StreamId{Base: base, Stream: n}}}}}}
}

func enc(t *testing.T, ev *tappb.TapEvent) []byte {
	t.Helper()
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// drain counts queued events per stage and checks every response and end
// belongs to a request that was shown.
func drain(t *testing.T, m *Merger, shown map[streamKey]bool) (reqs, others int) {
	t.Helper()
	for {
		select {
		case raw := <-m.Events():
			ev := &tappb.TapEvent{}
			if err := proto.Unmarshal(raw, ev); err != nil {
				t.Fatal(err)
			}
			h := ev.GetHttp()
			key := func(id *tappb.TapEvent_Http_StreamId) streamKey { return streamKey{id.GetBase(), id.GetStream()} }
			switch {
			case h.GetRequestInit() != nil:
				shown[key(h.GetRequestInit().GetId())] = true
				reqs++
			case h.GetResponseInit() != nil:
				if !shown[key(h.GetResponseInit().GetId())] {
					t.Errorf("response of a dropped request passed: %v", h.GetResponseInit().GetId())
				}
				others++
			case h.GetResponseEnd() != nil:
				if !shown[key(h.GetResponseEnd().GetId())] {
					t.Errorf("end of a dropped request passed: %v", h.GetResponseEnd().GetId())
				}
				others++
			}
		default:
			return reqs, others
		}
	}
}

// max-rps is one budget across every proxy, not one per proxy.
func TestMaxRPSAcrossProxies(t *testing.T) {
	m := NewMerger(50, 10000)
	var feeders []*Feeder
	for range 4 {
		feeders = append(feeders, m.Feeder())
	}
	// Four proxies report 100 requests each, at once: the same stream
	// numbers on every proxy (ids are per proxy).
	for n := uint64(1); n <= 100; n++ {
		for i, f := range feeders {
			f.Push(enc(t, reqEv(uint32(i), n)))
		}
	}
	for n := uint64(1); n <= 100; n++ {
		for i, f := range feeders {
			f.Push(enc(t, rspEv(uint32(i), n)))
			f.Push(enc(t, endEv(uint32(i), n)))
		}
	}
	reqs, others := drain(t, m, map[streamKey]bool{})
	// The burst is one second's budget; refills during the test add at
	// most a few.
	if reqs < 50 || reqs > 55 {
		t.Errorf("%d requests passed a 50 rps budget from 4 proxies", reqs)
	}
	if others != 2*reqs {
		t.Errorf("%d responses and ends for %d requests", others, reqs)
	}
	if d := m.TakeDropped(); d != uint64(400-reqs) {
		t.Errorf("dropped %d, want %d (one per request over the budget)", d, 400-reqs)
	}
	if d := m.TakeDropped(); d != 0 {
		t.Errorf("TakeDropped did not reset: %d", d)
	}
}

// A full queue drops and counts instead of blocking the proxy's stream.
func TestFullQueueDropsWithoutBlocking(t *testing.T) {
	m := NewMerger(0, 10)
	f := m.Feeder()
	for n := uint64(1); n <= 30; n++ {
		f.Push(enc(t, reqEv(7, n)))
	}
	if got := len(m.Events()); got != 10 {
		t.Fatalf("queue holds %d, want 10", got)
	}
	if d := m.Dropped(); d != 20 {
		t.Errorf("dropped %d, want 20", d)
	}
	shown := map[streamKey]bool{}
	reqs, _ := drain(t, m, shown)
	// Ends of the dropped requests are dropped with them, silently.
	for n := uint64(1); n <= 30; n++ {
		f.Push(enc(t, endEv(7, n)))
	}
	_, others := drain(t, m, shown)
	if reqs != 10 || others != 10 {
		t.Errorf("requests %d, ends %d; want 10 and 10", reqs, others)
	}
	if d := m.TakeDropped(); d != 20 {
		t.Errorf("dropped %d after the ends, want still 20", d)
	}
}

// What a proxy says it dropped is added to the client's count.
func TestProxyDropsAreCounted(t *testing.T) {
	m := NewMerger(0, 10)
	ev := reqEv(1, 1)
	ev.DroppedBefore = 42
	m.Feeder().Push(enc(t, ev))
	raw := <-m.Events()
	if d := m.TakeDropped(); d != 42 {
		t.Errorf("proxy drops not counted by the merger: %d", d)
	}
	// The writer's count replaces the proxy's, which was counted.
	got := &tappb.TapEvent{}
	if err := proto.Unmarshal(withDropped(raw, 0), got); err != nil || got.GetDroppedBefore() != 0 {
		t.Errorf("dropped_before not overridden: %v %v", got.GetDroppedBefore(), err)
	}
	if err := proto.Unmarshal(withDropped(raw, 7), got); err != nil || got.GetDroppedBefore() != 7 || got.GetHttp().GetRequestInit().GetId().GetStream() != 1 {
		t.Errorf("dropped_before not set: %v %v", got, err)
	}
	// A malformed event is counted, not queued.
	m.Feeder().Push([]byte{0xff, 0xff})
	if len(m.Events()) != 0 || m.TakeDropped() != 1 {
		t.Error("a malformed event was queued or not counted")
	}
}

func TestFramesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	fw := newFrameWriter(&buf)
	want := []*tappb.TapEvent{reqEv(1, 1), rspEv(1, 1), endEv(1, 1)}
	if err := fw.status(Status{Pods: 3, Proxies: 2, Errors: []string{"pod a/b: refused"}}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range want {
		if err := fw.event(enc(t, ev), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.status(Status{Dropped: 5, End: true}); err != nil {
		t.Fatal(err)
	}
	if err := fw.w.Flush(); err != nil {
		t.Fatal(err)
	}
	fr := NewFrameReader(bytes.NewReader(buf.Bytes()))
	_, st, err := fr.Next()
	if err != nil || st == nil || st.Proxies != 2 || st.Pods != 3 || len(st.Errors) != 1 {
		t.Fatalf("first frame: %v %v", st, err)
	}
	for _, w := range want {
		ev, _, err := fr.Next()
		if err != nil || !proto.Equal(ev, w) {
			t.Fatalf("event: %v %v, want %v", ev, err, w)
		}
	}
	if _, st, err := fr.Next(); err != nil || !st.End || st.Dropped != 5 {
		t.Fatalf("last frame: %v %v", st, err)
	}
	if _, _, err := fr.Next(); err != io.EOF {
		t.Errorf("after the last frame: %v, want EOF", err)
	}
	// A cut stream and an absurd length are errors, not hangs or
	// allocations.
	if _, _, err := NewFrameReader(bytes.NewReader(buf.Bytes()[:3])).Next(); err == nil {
		t.Error("a cut header read as a frame")
	}
	if _, _, err := NewFrameReader(bytes.NewReader([]byte{0, 0xff, 0xff, 0xff, 0xff})).Next(); err == nil {
		t.Error("a 4 GiB frame length was accepted")
	}
}

func TestPaths(t *testing.T) {
	for _, tc := range []struct {
		t    Target
		path string
	}{
		{Target{Namespace: "emojivoto", Resource: "deployments", Name: "web"}, "/apis/tap.linkerd.io/v1alpha1/watch/namespaces/emojivoto/deployments/web/tap"},
		{Target{Namespace: "emojivoto", Resource: "namespaces"}, "/apis/tap.linkerd.io/v1alpha1/watch/namespaces/emojivoto/tap"},
		{Target{Namespace: "emojivoto", Resource: "pods"}, "/apis/tap.linkerd.io/v1alpha1/watch/namespaces/emojivoto/tap?resource=pods"},
	} {
		p := tc.t.Path()
		if p != tc.path {
			t.Errorf("%+v: path %s, want %s", tc.t, p, tc.path)
		}
		path, q, _ := bytes.Cut([]byte(p), []byte("?"))
		got, err := ParsePath(string(path), string(q))
		if err != nil || got != tc.t {
			t.Errorf("ParsePath(%s) = %+v, %v", p, got, err)
		}
	}
	for _, bad := range []string{
		"/apis/tap.linkerd.io/v1alpha1/watch/namespaces/x/secrets/y/tap",
		"/apis/tap.linkerd.io/v1alpha1/watch/namespaces//tap",
		"/apis/tap.linkerd.io/v1alpha1/watch/namespaces/x/deployments/y",
	} {
		if _, err := ParsePath(bad, ""); err == nil {
			t.Errorf("ParsePath(%s) accepted", bad)
		}
	}
}

// The tap API names the tapped pod's owner, which its proxy does not know,
// on the pod's side of each event; the proxy's labels stay.
func TestSelfLabelsMerge(t *testing.T) {
	m := NewMerger(0, 10)
	f := m.Feeder()
	f.SetSelf(map[string]string{"deployment": "web"})
	in := reqEv(1, 1)
	in.ProxyDirection = tappb.TapEvent_INBOUND
	in.DestinationMeta = &tappb.TapEvent_EndpointMeta{Labels: map[string]string{"pod": "web-1"}}
	out := reqEv(1, 2)
	out.ProxyDirection = tappb.TapEvent_OUTBOUND
	out.SourceMeta = &tappb.TapEvent_EndpointMeta{Labels: map[string]string{"pod": "web-1"}}
	out.DestinationMeta = &tappb.TapEvent_EndpointMeta{Labels: map[string]string{"deployment": "emoji"}}
	f.Push(enc(t, in))
	f.Push(enc(t, out))
	var got [2]*tappb.TapEvent
	for i := range got {
		got[i] = &tappb.TapEvent{}
		if err := proto.Unmarshal(<-m.Events(), got[i]); err != nil {
			t.Fatal(err)
		}
	}
	if l := got[0].GetDestinationMeta().GetLabels(); l["deployment"] != "web" || l["pod"] != "web-1" {
		t.Errorf("inbound: destination labels %v", l)
	}
	if l := got[1].GetSourceMeta().GetLabels(); l["deployment"] != "web" || l["pod"] != "web-1" {
		t.Errorf("outbound: source labels %v", l)
	}
	if l := got[1].GetDestinationMeta().GetLabels(); l["deployment"] != "emoji" || len(l) != 1 {
		t.Errorf("outbound: destination labels %v changed", l)
	}
}
