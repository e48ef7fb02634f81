package tap

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	tappb "meshtls/proto/tap"
)

// RecordingFormat names the file format in its header line.
const RecordingFormat = "meshtls.tap/v1"

// Header is a recording's first line.
type Header struct {
	Format string `json:"format"`
	Note   string `json:"note,omitempty"`
	// Certificates maps TLS identities to what is known of their
	// certificates, for the TUI's detail pane.
	Certificates map[string]CertInfo `json:"certificates,omitempty"`
}

// recordLine is every other line: one TapEvent (protojson) and when it
// arrived.
type recordLine struct {
	Time  time.Time       `json:"time"`
	Event json.RawMessage `json:"event"`
}

// Recorder writes a recording: a header line, then one JSON line per
// TapEvent.
type Recorder struct {
	w       *bufio.Writer
	pending int
}

var marshal = protojson.MarshalOptions{UseProtoNames: true}

// NewRecorder writes h (its Format is filled in) and returns a recorder.
func NewRecorder(w io.Writer, h Header) (*Recorder, error) {
	h.Format = RecordingFormat
	r := &Recorder{w: bufio.NewWriterSize(w, 64<<10)}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	if _, err := r.w.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	return r, nil
}

// Write appends one record.
func (r *Recorder) Write(rec Record) error {
	ev, err := marshal.Marshal(rec.Event)
	if err != nil {
		return err
	}
	// protojson varies its whitespace on purpose; compacting makes a
	// recording byte-for-byte reproducible.
	var compact bytes.Buffer
	if err := json.Compact(&compact, ev); err != nil {
		return err
	}
	b, err := json.Marshal(recordLine{Time: rec.Time.UTC(), Event: compact.Bytes()})
	if err != nil {
		return err
	}
	if _, err := r.w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("writing recording: %w", err)
	}
	// A live session ends with Ctrl-C; flush now and then so what was seen
	// is on disk.
	if r.pending++; r.pending >= 256 {
		return r.Flush()
	}
	return nil
}

// Flush writes buffered records out.
func (r *Recorder) Flush() error {
	r.pending = 0
	if err := r.w.Flush(); err != nil {
		return fmt.Errorf("writing recording: %w", err)
	}
	return nil
}

// RecordingReader reads a recording line by line, so a replay of a large
// file needs memory for one line.
type RecordingReader struct {
	Header Header
	name   string
	sc     *bufio.Scanner
	line   int
	first  []byte
}

const maxLine = 4 << 20

// NewRecordingReader reads the header (when the file has one; a bare
// stream of event lines is accepted too). name is for error messages.
func NewRecordingReader(r io.Reader, name string) (*RecordingReader, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	rr := &RecordingReader{name: name, sc: sc}
	for sc.Scan() {
		rr.line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(b, &probe); err != nil {
			return nil, lineError(name, rr.line, "not a tap recording (want JSON lines, first %q)", RecordingFormat)
		}
		if _, ok := probe["format"]; ok {
			if err := json.Unmarshal(b, &rr.Header); err != nil {
				return nil, lineError(name, rr.line, "bad header: %v", err)
			}
			if rr.Header.Format != RecordingFormat {
				return nil, lineError(name, rr.line, "format %q is not %q", rr.Header.Format, RecordingFormat)
			}
		} else {
			rr.first = append([]byte(nil), b...)
		}
		return rr, nil
	}
	if err := sc.Err(); err != nil {
		return nil, scanError(name, rr.line+1, err)
	}
	return nil, fmt.Errorf("replay %s: the file is empty", name)
}

func scanError(name string, line int, err error) error {
	if errors.Is(err, bufio.ErrTooLong) {
		return lineError(name, line, "line longer than %d bytes", maxLine)
	}
	return fmt.Errorf("replay %s: %w", name, err)
}

var unmarshal = protojson.UnmarshalOptions{}

// Next returns the next record, or io.EOF.
func (r *RecordingReader) Next() (Record, error) {
	var b []byte
	if r.first != nil {
		b, r.first = r.first, nil
	} else {
		for {
			if !r.sc.Scan() {
				if err := r.sc.Err(); err != nil {
					return Record{}, scanError(r.name, r.line+1, err)
				}
				return Record{}, io.EOF
			}
			r.line++
			b = bytes.TrimSpace(r.sc.Bytes())
			if len(b) > 0 {
				break
			}
		}
	}
	var l recordLine
	if err := json.Unmarshal(b, &l); err != nil {
		return Record{}, lineError(r.name, r.line, "corrupt line: %v", err)
	}
	if len(l.Event) == 0 {
		return Record{}, lineError(r.name, r.line, "no \"event\" in line")
	}
	ev := &tappb.TapEvent{}
	if err := unmarshal.Unmarshal(l.Event, ev); err != nil {
		return Record{}, lineError(r.name, r.line, "bad TapEvent: %v", err)
	}
	if ev.GetHttp().GetEvent() == nil {
		return Record{}, lineError(r.name, r.line, "TapEvent has no request, response or end")
	}
	return Record{Time: l.Time, Event: ev}, nil
}
