package tap

import (
	"testing"
	"time"
)

func TestAggregateEdges(t *testing.T) {
	evs, _ := collect(t, openFixture(t, ReplayOptions{}), webQuery(), nil)
	agg := NewAggregator(ByEdge)
	want := map[AggKey]*struct{ n, ok, tls uint64 }{}
	for i := range evs {
		e := &evs[i]
		agg.Add(e)
		if e.Kind != KindEnd {
			continue
		}
		k := AggKey{Src: e.Src.Name(), Dst: dstName(e)}
		w := want[k]
		if w == nil {
			w = &struct{ n, ok, tls uint64 }{}
			want[k] = w
		}
		w.n++
		if e.Success() {
			w.ok++
		}
		if e.TLS.Encrypted() {
			w.tls++
		}
	}
	rows := agg.Rows(SortByCount)
	if len(rows) != 4 || len(rows) != len(want) {
		t.Fatalf("want 4 edges (vote-bot→web, legacy→web, web→emoji, web→voting), got %d", len(rows))
	}
	for i, r := range rows {
		w := want[r.Key]
		if w == nil || r.Count != w.n || r.Successes != w.ok || r.TLS != w.tls {
			t.Errorf("row %+v: want %+v", r.Key, w)
		}
		if i > 0 && rows[i-1].Count < r.Count {
			t.Errorf("not sorted by count")
		}
		if r.Key.Src == "deploy/legacy-client" {
			if r.TLSRate() != 0 || r.NoTLSReasons()["no_tls_from_remote"] != r.Count {
				t.Errorf("legacy edge: TLS %v reasons %v", r.TLSRate(), r.NoTLSReasons())
			}
		} else if r.TLSRate() != 1 {
			t.Errorf("%v: TLS %v, want 100%%", r.Key, r.TLSRate())
		}
	}
	bySucc := agg.Rows(SortBySuccess)
	if bySucc[0].SuccessRate() > bySucc[len(bySucc)-1].SuccessRate() {
		t.Errorf("success sort: worst first")
	}
}

func TestLatencyQuantiles(t *testing.T) {
	var h latencyHistogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.quantile(tc.q)
		if d := float64(got-tc.want) / float64(tc.want); d < 0 || d > 0.02 {
			t.Errorf("q%v = %v, want %v within +2%%", tc.q, got, tc.want)
		}
	}
	var one latencyHistogram
	one.add(0)
	if one.quantile(0.5) != time.Microsecond {
		t.Errorf("zero latency lands in the first bucket: %v", one.quantile(0.5))
	}
}

func TestCorrelatorBounded(t *testing.T) {
	c := NewCorrelator(4)
	for i := uint64(1); i <= 10; i++ {
		e := Event{Kind: KindRequest, ID: StreamID{1, i}, Method: "GET"}
		e.key = newRequestKey(&e)
		c.Observe(&e, true)
	}
	if c.Open() != 4 {
		t.Fatalf("open %d, want 4", c.Open())
	}
	old := Event{Kind: KindEnd, ID: StreamID{1, 1}}
	old.key = newRequestKey(&old)
	if _, known := c.Observe(&old, true); known {
		t.Error("evicted request still known")
	}
	recent := Event{Kind: KindEnd, ID: StreamID{1, 10}}
	recent.key = newRequestKey(&recent)
	if _, known := c.Observe(&recent, true); !known || recent.Method != "GET" || c.Open() != 3 {
		t.Errorf("recent end: known=%v method=%q open=%d", known, recent.Method, c.Open())
	}
}
