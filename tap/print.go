package tap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
)

// Formats a Printer writes.
const (
	FormatText = "text"
	FormatWide = "wide"
	FormatJSON = "json"
)

// Printer writes events one line each.
type Printer struct {
	w      io.Writer
	format string
	buf    []byte
}

// NewPrinter writes to w in format (text, wide or json).
func NewPrinter(w io.Writer, format string) (*Printer, error) {
	switch format {
	case FormatText, FormatWide, FormatJSON:
	default:
		return nil, fmt.Errorf("unknown output format %q: use text, wide or json", format)
	}
	return &Printer{w: w, format: format}, nil
}

// Print writes one event.
func (p *Printer) Print(e *Event) error {
	p.buf = p.buf[:0]
	if p.format == FormatJSON {
		b, err := MarshalJSON(e)
		if err != nil {
			return err
		}
		p.buf = append(p.buf, b...)
	} else {
		p.buf = AppendLine(p.buf, e, p.format == FormatWide)
	}
	p.buf = append(p.buf, '\n')
	_, err := p.w.Write(p.buf)
	return err
}

func addrString(p Peer) string {
	if !p.Addr.IsValid() {
		return "-"
	}
	return p.Addr.String()
}

func micros(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) + "µs" }

// GRPCStatusName is a gRPC status code's name as Linkerd prints it.
func GRPCStatusName(c uint32) string { return codes.Code(c).String() }

// AppendLine appends Linkerd's text line for e (without a newline); wide
// adds the peers' resources and namespaces, and the peer identities or why
// the request was not encrypted.
func AppendLine(b []byte, e *Event, wide bool) []byte {
	b = append(b, e.Kind.String()...)
	b = fmt.Appendf(b, " id=%d:%d proxy=%s src=%s dst=%s tls=%s", e.ID.Base, e.ID.Stream, e.Direction,
		addrString(e.Src), addrString(e.Dst), EscapeField(orDash(e.TLS.Status)))
	switch e.Kind {
	case KindRequest:
		b = append(b, " :method="...)
		b = append(b, EscapeField(e.Method)...)
		b = append(b, " :authority="...)
		b = append(b, EscapeField(e.Authority)...)
		b = append(b, " :path="...)
		b = append(b, EscapeField(e.Path)...)
	case KindResponse:
		b = fmt.Appendf(b, " :status=%d latency=%s", e.Status, micros(e.Latency))
	case KindEnd:
		switch {
		case e.HasGRPCStatus:
			b = append(b, " grpc-status="...)
			b = append(b, GRPCStatusName(e.GRPCStatus)...)
		case e.HasReset:
			b = fmt.Appendf(b, " reset-error=%d", e.ResetCode)
		}
		b = fmt.Appendf(b, " duration=%s response-length=%dB", micros(e.Duration), e.ResponseBytes)
		if r := e.Refused(); r != "" {
			b = append(b, " refused="...)
			b = append(b, EscapeField(r)...)
		} else if e.Error != "" {
			b = append(b, " error="...)
			b = append(b, EscapeField(e.Error)...)
		}
	}
	if wide {
		b = appendPeerWide(b, "src", e.Src)
		b = appendPeerWide(b, "dst", e.Dst)
		if e.TLS.Encrypted() {
			if e.TLS.ClientID != "" {
				b = append(b, " client_id="...)
				b = append(b, EscapeField(e.TLS.ClientID)...)
			}
			if e.TLS.ServerID != "" {
				b = append(b, " server_id="...)
				b = append(b, EscapeField(e.TLS.ServerID)...)
			}
		} else {
			b = append(b, " no_tls_reason="...)
			b = append(b, EscapeField(e.TLS.Reason())...)
		}
	}
	return b
}

func appendPeerWide(b []byte, side string, p Peer) []byte {
	b = fmt.Appendf(b, " %s_res=%s %s_ns=%s", side, EscapeField(orDash(p.Resource())), side, EscapeField(orDash(p.Namespace())))
	return b
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// The JSON shape of an event, one object per line for scripts.
type jsonPeer struct {
	IP       string            `json:"ip,omitempty"`
	Port     uint16            `json:"port,omitempty"`
	Resource string            `json:"resource,omitempty"`
	Identity string            `json:"identity,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type jsonTLS struct {
	Status      string `json:"status"`
	NoTLSReason string `json:"no_tls_reason,omitempty"`
	ClientID    string `json:"client_id,omitempty"`
	ServerID    string `json:"server_id,omitempty"`
}

type jsonRequest struct {
	Method    string `json:"method"`
	Scheme    string `json:"scheme,omitempty"`
	Authority string `json:"authority"`
	Path      string `json:"path"`
}

type jsonResponse struct {
	Status    uint32 `json:"status"`
	LatencyUS int64  `json:"latency_us"`
}

type jsonEnd struct {
	GRPCStatus     *string `json:"grpc_status,omitempty"`
	GRPCStatusCode *uint32 `json:"grpc_status_code,omitempty"`
	ResetError     *uint32 `json:"reset_error,omitempty"`
	Error          string  `json:"error,omitempty"`
	Refused        string  `json:"refused,omitempty"`
	DurationUS     int64   `json:"duration_us"`
	ResponseBytes  uint64  `json:"response_bytes"`
	RequestBytes   uint64  `json:"request_bytes"`
	Success        bool    `json:"success"`
}

type jsonEvent struct {
	Type          string        `json:"type"`
	Time          *time.Time    `json:"time,omitempty"`
	ID            string        `json:"id"`
	Proxy         string        `json:"proxy"`
	Source        jsonPeer      `json:"source"`
	Destination   jsonPeer      `json:"destination"`
	TLS           jsonTLS       `json:"tls"`
	Request       *jsonRequest  `json:"request,omitempty"`
	Response      *jsonResponse `json:"response,omitempty"`
	End           *jsonEnd      `json:"end,omitempty"`
	DroppedBefore uint64        `json:"dropped_before,omitempty"`
}

func toJSONPeer(p Peer, identity string) jsonPeer {
	j := jsonPeer{Resource: p.Resource(), Identity: identity, Metadata: p.Labels}
	if p.Addr.IsValid() {
		j.IP, j.Port = p.Addr.Addr().String(), p.Addr.Port()
	}
	return j
}

// MarshalJSON is e as one JSON object: the text line's fields, plus both
// peers' metadata and identities.
func MarshalJSON(e *Event) ([]byte, error) {
	// The peer identities: the client's is verified on inbound TLS, the
	// server's on outbound.
	j := jsonEvent{
		Type:          e.Kind.String(),
		ID:            fmt.Sprintf("%d:%d", e.ID.Base, e.ID.Stream),
		Proxy:         e.Direction.String(),
		Source:        toJSONPeer(e.Src, e.TLS.ClientID),
		Destination:   toJSONPeer(e.Dst, e.TLS.ServerID),
		TLS:           jsonTLS{Status: e.TLS.Status, ClientID: e.TLS.ClientID, ServerID: e.TLS.ServerID},
		DroppedBefore: e.DroppedBefore,
	}
	if !e.TLS.Encrypted() {
		j.TLS.NoTLSReason = e.TLS.Reason()
	}
	if !e.Time.IsZero() {
		t := e.Time.UTC()
		j.Time = &t
	}
	if e.HasRequest {
		j.Request = &jsonRequest{Method: e.Method, Scheme: e.Scheme, Authority: e.Authority, Path: e.Path}
	}
	if e.Kind >= KindResponse {
		j.Response = &jsonResponse{Status: e.Status, LatencyUS: e.Latency.Microseconds()}
	}
	if e.Kind == KindEnd {
		end := &jsonEnd{Error: e.Error, Refused: e.Refused(), DurationUS: e.Duration.Microseconds(), ResponseBytes: e.ResponseBytes, RequestBytes: e.RequestBytes, Success: e.Success()}
		if e.HasGRPCStatus {
			name, code := GRPCStatusName(e.GRPCStatus), e.GRPCStatus
			end.GRPCStatus, end.GRPCStatusCode = &name, &code
		}
		if e.HasReset {
			code := e.ResetCode
			end.ResetError = &code
		}
		j.End = end
	}
	b, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	return escapeJSONControls(b), nil
}

// escapeJSONControls escapes what encoding/json leaves raw but a terminal
// may still act on: DEL and the C1 controls (U+0080–U+009F, such as the
// one-byte CSI).
func escapeJSONControls(b []byte) []byte {
	clean := true
	for i := 0; i < len(b); i++ {
		if b[i] == 0x7f || (b[i] == 0xc2 && i+1 < len(b) && b[i+1] >= 0x80 && b[i+1] < 0xa0) {
			clean = false
			break
		}
	}
	if clean {
		return b
	}
	var out bytes.Buffer
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == 0x7f || (r >= 0x80 && r < 0xa0) {
			fmt.Fprintf(&out, `\u%04x`, r)
		} else {
			out.Write(b[i : i+size])
		}
		i += size
	}
	return out.Bytes()
}

// Summary is a one-line account of a session for stderr.
func (s Stats) Summary() string {
	var parts []string
	parts = append(parts, fmt.Sprintf("%d events", s.Emitted))
	if s.Emitted != s.Events {
		parts = append(parts, fmt.Sprintf("%d filtered out", s.Events-s.Emitted))
	}
	if s.Dropped > 0 {
		parts = append(parts, fmt.Sprintf("%d dropped by the source (max-rps or a full tap buffer)", s.Dropped))
	}
	return strings.Join(parts, ", ")
}
