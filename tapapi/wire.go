// Package tapapi is the tap API (`controller tap`): an aggregated API
// server for tap.linkerd.io/v1alpha1 behind the Kubernetes API server. It
// trusts only the API server's front-proxy client certificate, authorises
// each request with a SubjectAccessReview, resolves the target to meshed
// pods, opens Tap.Observe on each pod's proxy over mutual TLS with the
// controller's identity, merges the streams under one max-rps budget and
// streams the events to the client in frames (see README.md, "Wire").
//
// The client side (Source) implements tap.Source over the user's
// kubeconfig, so `linkerd tap` needs nothing else.
package tapapi

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	tappb "meshtls/proto/tap"
)

// Group and Version are the aggregated API's.
const (
	Group   = "tap.linkerd.io"
	Version = "v1alpha1"
	// Subresource is the last path element of every tap request.
	Subresource = "tap"
	// ContentType names the framed stream.
	ContentType = "application/vnd.meshtls.tap-frames"
)

// Frame kinds. A frame is one kind byte, a big-endian uint32 length, and
// that many bytes of payload.
const (
	// FrameEvent carries one TapEvent (protobuf).
	FrameEvent byte = 0
	// FrameStatus carries a Status (JSON).
	FrameStatus byte = 1
)

// maxFrame bounds what a reader accepts, so a corrupt length cannot make
// it allocate gigabytes.
const maxFrame = 4 << 20

// Status tells the client about the session besides its events: how many
// proxies the tap is connected to, events dropped that no later event
// could report (at the end), and proxies that could not be tapped.
type Status struct {
	// Pods is how many pods the target resolved to.
	Pods int `json:"pods"`
	// Proxies is how many of their proxies are streaming now.
	Proxies int `json:"proxies"`
	// Dropped counts events dropped since the last event sent; a Status
	// that ends the stream carries the trailing drops.
	Dropped uint64 `json:"dropped,omitempty"`
	// Errors names proxies that could not be tapped, and why.
	Errors []string `json:"errors,omitempty"`
	// End marks the last frame of a stream that ended on the server's side.
	End bool `json:"end,omitempty"`
}

// frameWriter writes frames to a buffered writer.
type frameWriter struct {
	w   *bufio.Writer
	buf []byte
	hdr [5]byte
}

func newFrameWriter(w io.Writer) *frameWriter {
	return &frameWriter{w: bufio.NewWriterSize(w, 64<<10)}
}

func (fw *frameWriter) write(kind byte, payload []byte) error {
	fw.hdr[0] = kind
	binary.BigEndian.PutUint32(fw.hdr[1:], uint32(len(payload)))
	if _, err := fw.w.Write(fw.hdr[:]); err != nil {
		return err
	}
	_, err := fw.w.Write(payload)
	return err
}

// event writes an encoded TapEvent with its dropped_before set to
// dropped (whatever the proxy had put there was counted already).
func (fw *frameWriter) event(ev []byte, dropped uint64) error {
	fw.buf = withDropped(append(fw.buf[:0], ev...), dropped)
	return fw.write(FrameEvent, fw.buf)
}

func (fw *frameWriter) status(st Status) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return fw.write(FrameStatus, b)
}

// FrameReader reads the frames a tap API stream carries.
type FrameReader struct {
	r   *bufio.Reader
	buf []byte
}

// NewFrameReader reads frames from r.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next frame: an event or a status. It returns io.EOF at
// a clean end between frames.
func (fr *FrameReader) Next() (*tappb.TapEvent, *Status, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, errors.New("tap stream cut in a frame header")
		}
		return nil, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return nil, nil, fmt.Errorf("tap stream frame of %d bytes exceeds the %d-byte limit", n, maxFrame)
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	b := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		return nil, nil, fmt.Errorf("tap stream cut in a frame: %w", err)
	}
	switch hdr[0] {
	case FrameEvent:
		ev := &tappb.TapEvent{}
		if err := proto.Unmarshal(b, ev); err != nil {
			return nil, nil, fmt.Errorf("tap stream: bad event: %w", err)
		}
		return ev, nil, nil
	case FrameStatus:
		st := &Status{}
		if err := json.Unmarshal(b, st); err != nil {
			return nil, nil, fmt.Errorf("tap stream: bad status: %w", err)
		}
		return nil, st, nil
	}
	return nil, nil, fmt.Errorf("tap stream: unknown frame kind %d", hdr[0])
}
