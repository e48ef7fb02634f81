package tap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// oneLine reports whether an error message prints as one line that a
// terminal shows as text.
func oneLine(msg string) bool {
	return !strings.ContainsAny(msg, "\n\r\x1b\x00")
}

// FuzzRecordingReader reads arbitrary bytes as a `--replay FILE` recording.
// Every error is one line naming the file (and the line for a bad one),
// reading ends after at most one call per line, every record it returns
// survives `--record` and a second read unchanged, and every line printed
// from it (text, wide, json) is one line with no terminal controls, both
// read directly and played back through Run.
func FuzzRecordingReader(f *testing.F) {
	f.Add([]byte(`{"format":"meshtls.tap/v1","note":"n"}` + "\n" +
		`{"time":"2026-11-23T05:41:26.896389783Z","event":{"source":{"ip":"xhI2Cg==","port":36590},"proxy_direction":"INBOUND","http":{"request_init":{"id":{"base":1,"stream":2},"method":{"registered":"GET"},"path":"/x"}}}}` + "\n"))
	f.Add([]byte(`{"time":"2026-11-23T05:41:26Z","event":{"http":{"response_end":{"id":{},"since_request_init":"0.5s","grpc_status":2}}}}`))
	f.Add([]byte(`{"format":"meshtls.tap/v2"}`))
	f.Add([]byte("\n\n"))
	f.Add([]byte("not json"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.jsonl"
		lines := bytes.Count(data, []byte("\n")) + 1
		rr, err := NewRecordingReader(bytes.NewReader(data), name)
		if err != nil {
			checkReplayError(t, err, name)
			return
		}
		var recs []Record
		for i := 0; ; i++ {
			if i > lines {
				t.Fatalf("%d records from %d lines", i, lines)
			}
			rec, err := rr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				checkReplayError(t, err, name)
				if !strings.Contains(err.Error(), ": line ") {
					t.Fatalf("error %q does not name the line", err)
				}
				break
			}
			recs = append(recs, rec)
		}

		// What was read records and reads back as it was.
		var buf bytes.Buffer
		w, err := NewRecorder(&buf, rr.Header)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			if err := w.Write(rec); err != nil {
				t.Fatalf("recording %v: %v", rec.Event, err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		again, err := NewRecordingReader(bytes.NewReader(buf.Bytes()), "again")
		if err != nil {
			t.Fatalf("re-reading the recording: %v\n%s", err, buf.Bytes())
		}
		for _, want := range recs {
			got, err := again.Next()
			if err != nil {
				t.Fatalf("re-reading the recording: %v\n%s", err, buf.Bytes())
			}
			if !got.Time.Equal(want.Time) || !proto.Equal(got.Event, want.Event) {
				t.Fatalf("record changed by a round trip:\n%v %v\n%v %v", want.Time, want.Event, got.Time, got.Event)
			}
		}
		if _, err := again.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("re-read recording has more: %v", err)
		}

		for _, rec := range recs {
			e := FromProto(rec)
			checkPrinted(t, &e)
		}
		rr, err = NewRecordingReader(bytes.NewReader(data), name)
		if err != nil {
			t.Fatalf("second open: %v", err)
		}
		_, err = Run(context.Background(), RunConfig{Source: NewReplay(rr, ReplayOptions{}), Query: webQuery(), Emit: func(e *Event) error {
			checkPrinted(t, e)
			return nil
		}})
		if err != nil {
			checkReplayError(t, err, name)
		}
	})
}

func checkReplayError(t *testing.T, err error, name string) {
	t.Helper()
	if msg := err.Error(); !oneLine(msg) || !strings.HasPrefix(msg, "replay "+name+": ") {
		t.Fatalf("error is not one line naming the file: %q", msg)
	}
}

func checkPrinted(t *testing.T, e *Event) {
	t.Helper()
	for _, wide := range []bool{false, true} {
		if line := string(AppendLine(nil, e, wide)); !safe(line, false) {
			t.Fatalf("printed line has controls or is not UTF-8: %q", line)
		}
	}
	b, err := MarshalJSON(e)
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	if !json.Valid(b) || !safe(string(b), false) {
		t.Fatalf("json line is not valid or has controls: %q", b)
	}
}
