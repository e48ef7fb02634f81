package tap

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

const fixture = "../fixtures/tap/emojivoto.jsonl"

func openFixture(t testing.TB, opts ReplayOptions) *Replay {
	t.Helper()
	f, err := os.Open(fixture)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	rr, err := NewRecordingReader(f, "emojivoto.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return NewReplay(rr, opts)
}

func collect(t testing.TB, src Source, q Query, f *Filter) ([]Event, Stats) {
	t.Helper()
	var evs []Event
	st, err := Run(context.Background(), RunConfig{Source: src, Query: q, Filter: f, Emit: func(e *Event) error {
		evs = append(evs, *e)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	return evs, st
}

func webQuery() Query {
	return Query{Target: Target{Kind: "deployment", Name: "web", Namespace: "emojivoto"}}
}

// The fixture is what it says it is: web's proxy reports both directions,
// every request has its response and end, the unmeshed client is plain
// text with its reason, and some requests fail.
func TestFixtureShape(t *testing.T) {
	evs, st := collect(t, openFixture(t, ReplayOptions{}), webQuery(), nil)
	if st.Events == 0 || st.Events != st.Emitted || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	kinds := map[Kind]int{}
	var in, out, plain, failed, grpcFail int
	for i := range evs {
		e := &evs[i]
		kinds[e.Kind]++
		if e.Proxy().Labels["deployment"] != "web" {
			t.Fatalf("event from another proxy: %+v", e)
		}
		if !e.HasRequest {
			t.Fatalf("uncorrelated %s event %v", e.Kind, e.ID)
		}
		if e.Kind != KindEnd {
			continue
		}
		if e.Direction == DirInbound {
			in++
		} else {
			out++
		}
		if !e.TLS.Encrypted() {
			plain++
			if e.TLS.NoTLSReason != "no_tls_from_remote" || e.Src.Labels["deployment"] != "legacy-client" {
				t.Errorf("plain request not from the unmeshed client with its reason: %+v", e.TLS)
			}
		}
		if !e.Success() {
			failed++
		}
		if e.HasGRPCStatus && e.GRPCStatus != 0 {
			grpcFail++
		}
	}
	if kinds[KindRequest] != kinds[KindResponse] || kinds[KindResponse] != kinds[KindEnd] {
		t.Errorf("unbalanced stages: %v", kinds)
	}
	if in == 0 || out == 0 || plain == 0 || failed == 0 || grpcFail == 0 {
		t.Errorf("in=%d out=%d plain=%d failed=%d grpcFail=%d: the fixture lacks a kind of traffic", in, out, plain, failed, grpcFail)
	}
}

func TestQuerySelects(t *testing.T) {
	all, _ := collect(t, openFixture(t, ReplayOptions{}), Query{Target: Target{Kind: KindNamespace, Name: "emojivoto", Namespace: "emojivoto"}}, nil)
	web, _ := collect(t, openFixture(t, ReplayOptions{}), webQuery(), nil)
	if len(web) >= len(all) {
		t.Fatalf("deploy/web (%d) should see fewer events than the namespace (%d)", len(web), len(all))
	}
	to := webQuery()
	to.To = &Target{Kind: "deployment", Name: "voting", Namespace: "emojivoto"}
	toVoting, _ := collect(t, openFixture(t, ReplayOptions{}), to, nil)
	if len(toVoting) == 0 {
		t.Fatal("no web→voting events")
	}
	for _, e := range toVoting {
		if e.Direction != DirOutbound || e.Dst.Labels["deployment"] != "voting" {
			t.Fatalf("--to voting let through %+v", e)
		}
	}
	q := webQuery()
	q.Method, q.PathPrefix = "GET", "/api/vote"
	votes, _ := collect(t, openFixture(t, ReplayOptions{}), q, nil)
	for _, e := range votes {
		if e.Method != "GET" || !strings.HasPrefix(e.Path, "/api/vote") {
			t.Fatalf("method/path filter let through %s %s %s", e.Kind, e.Method, e.Path)
		}
	}
	if len(votes) == 0 || len(votes)%3 != 0 {
		t.Fatalf("want whole requests (req, rsp, end), got %d events", len(votes))
	}
	q = webQuery()
	q.Authority = "emoji-svc.emojivoto:8080"
	q.Scheme = "http"
	emoji, _ := collect(t, openFixture(t, ReplayOptions{}), q, nil)
	for _, e := range emoji {
		if e.Authority != "emoji-svc.emojivoto:8080" {
			t.Fatalf("authority filter let through %s", e.Authority)
		}
	}
	if len(emoji) == 0 {
		t.Fatal("no emoji events")
	}
}

func TestMaxRPSDropsAndCounts(t *testing.T) {
	q := webQuery()
	q.MaxRPS = 1
	evs, st := collect(t, openFixture(t, ReplayOptions{}), q, nil)
	all, _ := collect(t, openFixture(t, ReplayOptions{}), webQuery(), nil)
	reqs := 0
	for _, e := range evs {
		if e.Kind == KindRequest {
			reqs++
		}
	}
	// 30 s at 1 rps: about 30 requests (a burst of 1 plus one a second).
	if reqs < 25 || reqs > 33 {
		t.Errorf("max-rps 1 over 30 s kept %d requests", reqs)
	}
	allReqs := len(all) / 3
	if st.Dropped != uint64(allReqs-reqs) {
		t.Errorf("dropped %d, want %d (every request not kept)", st.Dropped, allReqs-reqs)
	}
}

func TestReplayPace(t *testing.T) {
	var slept time.Duration
	now := time.Unix(0, 0)
	opts := ReplayOptions{Speed: 2, Now: func() time.Time { return now.Add(slept) }, Sleep: func(_ context.Context, d time.Duration) error {
		if d > 0 {
			slept += d
		}
		return nil
	}}
	evs, _ := collect(t, openFixture(t, opts), webQuery(), nil)
	span := evs[len(evs)-1].Time.Sub(evs[0].Time)
	if want := span / 2; slept < want-time.Millisecond || slept > want+time.Millisecond {
		t.Errorf("slept %v at speed 2, want %v", slept, want)
	}
}

func TestReplayStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	src := openFixture(t, ReplayOptions{Speed: 1})
	n := 0
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, RunConfig{Source: src, Query: webQuery(), Emit: func(*Event) error {
			n++
			if n == 3 {
				cancel()
			}
			return nil
		}})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a cancelled replay is not an error: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("replay did not stop when cancelled")
	}
}

func TestRecordReplayRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	src := openFixture(t, ReplayOptions{})
	rec, err := NewRecorder(&buf, Header{Note: "test", Certificates: src.Certificates()})
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := collect(t, src, webQuery(), nil)
	// Record what a session sees, then replay the recording.
	src2 := openFixture(t, ReplayOptions{})
	if _, err := Run(context.Background(), RunConfig{Source: src2, Query: webQuery(), Recorder: rec, Emit: func(*Event) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	rr, err := NewRecordingReader(bytes.NewReader(buf.Bytes()), "mem")
	if err != nil {
		t.Fatal(err)
	}
	if rr.Header.Note != "test" || len(rr.Header.Certificates) != 4 {
		t.Errorf("header lost: %+v", rr.Header)
	}
	again, _ := collect(t, NewReplay(rr, ReplayOptions{}), Query{}, nil)
	if len(again) != len(orig) {
		t.Fatalf("replayed %d events, recorded %d", len(again), len(orig))
	}
	for i := range orig {
		a, b := AppendLine(nil, &orig[i], true), AppendLine(nil, &again[i], true)
		if !bytes.Equal(a, b) || !orig[i].Time.Equal(again[i].Time) {
			t.Fatalf("event %d differs:\n%s\n%s", i, a, b)
		}
	}
}

func TestRecordingErrors(t *testing.T) {
	good, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(good), "\n", 4)
	cases := []struct{ name, data, want string }{
		{"empty", "", "replay x: the file is empty"},
		{"not json", "hello\n", "replay x: line 1: not a tap recording"},
		{"other format", `{"format":"other/v9"}` + "\n", `replay x: line 1: format "other/v9" is not "meshtls.tap/v1"`},
		{"corrupt line", lines[0] + "\n" + lines[1] + "\n{\"time\": oops\n", "replay x: line 3: corrupt line"},
		{"bad event", lines[0] + "\n" + `{"time":"2026-11-22T10:00:00Z","event":{"proxy_direction":"SIDEWAYS"}}` + "\n", "replay x: line 2: bad TapEvent"},
		{"no event", lines[0] + "\n" + `{"time":"2026-11-22T10:00:00Z"}` + "\n", `replay x: line 2: no "event" in line`},
		{"empty event", lines[0] + "\n" + `{"time":"2026-11-22T10:00:00Z","event":{}}` + "\n", "replay x: line 2: TapEvent has no request, response or end"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rr, err := NewRecordingReader(strings.NewReader(tc.data), "x")
			if err == nil {
				_, err = collectErr(NewReplay(rr, ReplayOptions{}))
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("not one line: %q", err)
			}
		})
	}
}

func collectErr(src Source) (int, error) {
	n := 0
	_, err := Run(context.Background(), RunConfig{Source: src, Emit: func(*Event) error { n++; return nil }})
	return n, err
}

func TestReplayOnlyOnce(t *testing.T) {
	src := openFixture(t, ReplayOptions{})
	if _, err := src.Open(context.Background(), Query{}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Open(context.Background(), Query{}); err == nil {
		t.Fatal("second Open should fail")
	}
	var _ io.Closer // keep io imported for readers
	_ = errors.New
}
