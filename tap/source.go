package tap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/time/rate"

	tappb "meshtls/proto/tap"
)

// Source is where tap events come from: a recorded file today, the tap API
// (`controller tap`, served as tap.linkerd.io) for a live cluster. A source
// applies the query where it can: the tap API sends it to the proxies, a
// recording filters locally.
type Source interface {
	Open(ctx context.Context, q Query) (Stream, error)
}

// Stream yields records until it returns io.EOF (the source ended) or
// another error. It has the shape of a gRPC client stream, so the tap
// API's Observe stream fits behind it directly.
type Stream interface {
	Recv() (Record, error)
}

// ProxyCounter is implemented by streams that know how many proxies they
// are connected to; otherwise a viewer counts the proxies it has heard from.
type ProxyCounter interface {
	ConnectedProxies() int
}

// CertInfo is what is known of a workload's certificate.
type CertInfo struct {
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// CertLookup finds the certificate behind a TLS identity, when a source
// knows it (a recording's header does; the tap API may).
type CertLookup interface {
	Certificate(identity string) (CertInfo, bool)
}

// trailingDrops is implemented by streams that can say, at their end, how
// many events they dropped after the last one they sent (no later event
// carries that count).
type trailingDrops interface {
	TrailingDrops() uint64
}

// Stats counts what a Run saw.
type Stats struct {
	// Events is the number of events read from the stream.
	Events uint64
	// Emitted is the number that passed the filter.
	Emitted uint64
	// Dropped is the number of events the source reported dropping.
	Dropped uint64
}

// RunConfig wires a tap session together.
type RunConfig struct {
	Source Source
	Query  Query
	// Filter is applied here, on the client, after the source's query.
	Filter *Filter
	// Recorder, when set, receives every record the source sends, before
	// Filter: a recording can be replayed later with another filter.
	Recorder *Recorder
	// Emit is called for each event that passes Filter, in order.
	Emit func(*Event) error
}

// Run reads the source until it ends, ctx is cancelled (not an error) or
// Emit fails.
func Run(ctx context.Context, cfg RunConfig) (Stats, error) {
	var st Stats
	stream, err := cfg.Source.Open(ctx, cfg.Query)
	if err != nil {
		return st, err
	}
	p := NewPipeline(cfg.Filter)
	for {
		rec, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if t, ok := stream.(trailingDrops); ok {
				st.Dropped += t.TrailingDrops()
			}
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				// Stopped (Ctrl-C): drops reported since the last
				// event still count.
				if t, ok := stream.(trailingDrops); ok {
					st.Dropped += t.TrailingDrops()
				}
				break
			}
			return st, err
		}
		st.Events++
		st.Dropped += rec.Event.GetDroppedBefore()
		if cfg.Recorder != nil {
			if err := cfg.Recorder.Write(rec); err != nil {
				return st, err
			}
		}
		if ev, ok := p.Process(rec); ok {
			st.Emitted++
			if err := cfg.Emit(&ev); err != nil {
				return st, err
			}
		}
	}
	if cfg.Recorder != nil {
		if err := cfg.Recorder.Flush(); err != nil {
			return st, err
		}
	}
	return st, nil
}

// Pipeline turns records into correlated, filtered events.
type Pipeline struct {
	corr   *Correlator
	filter *Filter
}

// NewPipeline filters with f (nil passes everything).
func NewPipeline(f *Filter) *Pipeline {
	return &Pipeline{corr: NewCorrelator(0), filter: f}
}

// Process converts, correlates and filters one record.
func (p *Pipeline) Process(rec Record) (Event, bool) {
	ev := FromProto(rec)
	p.corr.Observe(&ev, true)
	return ev, p.filter.Match(&ev)
}

// ReplayOptions control how a recording is played back.
type ReplayOptions struct {
	// Speed multiplies the recorded pace; 0 plays as fast as possible.
	Speed float64
	// Now and Sleep are the clock, for tests; nil means the real one.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// Replay is a recording as a Source.
type Replay struct {
	reader *RecordingReader
	opts   ReplayOptions
	opened bool
}

// NewReplay plays r back.
func NewReplay(r *RecordingReader, opts ReplayOptions) *Replay {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = sleepCtx
	}
	return &Replay{reader: r, opts: opts}
}

// Certificates is everything the recording's header knows.
func (r *Replay) Certificates() map[string]CertInfo { return r.reader.Header.Certificates }

// Certificate looks an identity up in the recording's header.
func (r *Replay) Certificate(identity string) (CertInfo, bool) {
	c, ok := r.reader.Header.Certificates[identity]
	return c, ok
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Open starts the playback; a recording plays once.
func (r *Replay) Open(ctx context.Context, q Query) (Stream, error) {
	if r.opened {
		return nil, errors.New("a recording can be replayed only once per session")
	}
	r.opened = true
	s := &replayStream{ctx: ctx, r: r, q: q, match: q.Match(), corr: NewCorrelator(0)}
	if q.MaxRPS > 0 {
		// The limit runs on recorded time, so a replay as fast as possible
		// keeps what a live tap at that cap would have kept.
		s.limit = rate.NewLimiter(rate.Limit(q.MaxRPS), max(1, int(q.MaxRPS)))
	}
	return s, nil
}

type replayStream struct {
	ctx     context.Context
	r       *Replay
	q       Query
	match   *tappb.ObserveRequest_Match
	corr    *Correlator
	limit   *rate.Limiter
	dropped uint64

	started       bool
	wallStart     time.Time
	recordedStart time.Time
}

func (s *replayStream) TrailingDrops() uint64 { return s.dropped }

func (s *replayStream) Recv() (Record, error) {
	for {
		if err := s.ctx.Err(); err != nil {
			return Record{}, err
		}
		rec, err := s.r.reader.Next()
		if err != nil {
			return Record{}, err
		}
		if !s.selects(rec) {
			continue
		}
		if err := s.pace(rec.Time); err != nil {
			return Record{}, err
		}
		if s.dropped > 0 {
			rec.Event.DroppedBefore += s.dropped
			s.dropped = 0
		}
		return rec, nil
	}
}

// selects applies the query as the tap API would: the target's proxies
// only, the flag filters at the request, its response and end with it.
func (s *replayStream) selects(rec Record) bool {
	ev := FromProto(rec)
	if !s.q.Selects(&ev) {
		return false
	}
	pass := true
	if ev.Kind == KindRequest {
		pass = EvalMatch(s.match, &ev)
		if pass && s.limit != nil && !s.limit.AllowN(rec.Time, 1) {
			pass = false
			s.dropped++
		}
	}
	passed, known := s.corr.Observe(&ev, pass)
	if ev.Kind == KindRequest {
		return pass
	}
	// A response whose request came before the recording started passes
	// when no request-level filter could have rejected it.
	if !known {
		return s.match == nil && s.limit == nil
	}
	return passed
}

func (s *replayStream) pace(t time.Time) error {
	if s.r.opts.Speed <= 0 || t.IsZero() {
		return nil
	}
	if !s.started {
		s.started, s.wallStart, s.recordedStart = true, s.r.opts.Now(), t
		return nil
	}
	due := s.wallStart.Add(time.Duration(float64(t.Sub(s.recordedStart)) / s.r.opts.Speed))
	return s.r.opts.Sleep(s.ctx, due.Sub(s.r.opts.Now()))
}

// errorf wraps a replay problem with the file and line.
func lineError(name string, line int, format string, args ...any) error {
	return fmt.Errorf("replay %s: line %d: %s", name, line, fmt.Sprintf(format, args...))
}
