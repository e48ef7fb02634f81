package tui

import (
	"fmt"
	"runtime"
	"sort"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"meshtls/tap"
)

// frames feeds events in per-frame batches at a given rate (the renderer
// draws at most 60 frames a second) and times Update plus the frame drawn
// after it.
func frames(b *testing.B, m *Model, evs []tap.Event, perFrame, total int) (frameTimes []time.Duration) {
	batch := make([]tap.Event, perFrame)
	for sent := 0; sent < total; sent += perFrame {
		for i := range batch {
			batch[i] = evs[(sent+i)%len(evs)]
			// Fresh stream ids, so every request is a new row as in a
			// live stream.
			batch[i].ID.Stream += uint64(sent/len(evs)) << 32
		}
		start := time.Now()
		m.Update(eventsMsg{events: batch})
		_ = m.View()
		frameTimes = append(frameTimes, time.Since(start))
	}
	return frameTimes
}

func quantile(ts []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), ts...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

// BenchmarkModel10kEventsPerSecond: one op is one second of a 10,000
// events/s stream, 167 events in each of 60 frames.
func BenchmarkModel10kEventsPerSecond(b *testing.B) {
	evs, _ := fixtureEvents(b)
	m := New(Options{Now: time.Now})
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 40})
	var all []time.Duration
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		all = append(all, frames(b, m, evs, 167, 10_020)...)
	}
	el := time.Since(start)
	b.ReportMetric(float64(b.N*10_020)/el.Seconds(), "events/s")
	b.ReportMetric(float64(quantile(all, 0.5))/1e6, "ms/frame-p50")
	b.ReportMetric(float64(quantile(all, 0.99))/1e6, "ms/frame-p99")
}

// BenchmarkSustained20kFor30s: 20,000 events/s for 30 s of stream (600,000
// events, 334 a frame, with a filter on), as fast as the model takes them.
// It reports the slowest frames and the heap before and after: the ring
// keeps memory flat.
func BenchmarkSustained20kFor30s(b *testing.B) {
	evs, _ := fixtureEvents(b)
	f, err := tap.ParseFilter("tls==true || status>=500")
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		m := New(Options{Now: time.Now, Filter: f})
		m.Update(tea.WindowSizeMsg{Width: 160, Height: 40})
		var ms runtime.MemStats
		warm := frames(b, m, evs, 334, 200_000) // the first 10 s fill the ring
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heapAt10s := ms.HeapAlloc
		start := time.Now()
		rest := frames(b, m, evs, 334, 400_000)
		el := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&ms)
		all := append(warm, rest...)
		b.ReportMetric(400_000/el.Seconds(), "events/s")
		b.ReportMetric(float64(quantile(all, 0.99))/1e6, "ms/frame-p99")
		b.ReportMetric(float64(quantile(all, 1))/1e6, "ms/frame-max")
		b.ReportMetric(float64(heapAt10s)/(1<<20), "MB-heap@10s")
		b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "MB-heap@30s")
		if testing.Verbose() {
			fmt.Printf("rows %d index %d\n", m.store.len(), len(m.store.index))
		}
	}
}
