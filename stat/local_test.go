package stat

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

type textScrape string

func (s textScrape) Open() ([]byte, error) { return []byte(s), nil }
func (s textScrape) Source() string        { return "test" }

func deltasOf(t *testing.T, scrapes ...string) map[string]float64 {
	t.Helper()
	ts := targetScrapes{Name: "pod", Target: map[string]string{"namespace": "ns", "pod": "p"}}
	for _, s := range scrapes {
		if s == "-" {
			ts.Scrapes = append(ts.Scrapes, nil)
			continue
		}
		ts.Scrapes = append(ts.Scrapes, textScrape(s))
	}
	series, err := increases(ts, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, s := range series {
		le := s.get("le")
		if v, err := parseLE(le); err == nil && le != "" {
			le = ftoa(v) // the parser may spell 1 as 1.0
		}
		out[s.get("authority")+le] = s.Value
	}
	return out
}

func TestIncreasesHandleResets(t *testing.T) {
	line := func(v string) string { return `response_total{authority="a"} ` + v + "\n" }
	cases := []struct {
		name    string
		scrapes []string
		want    float64
	}{
		{"plain increase", []string{line("10"), line("25")}, 15},
		{"reset counts the later value whole", []string{line("10"), line("4")}, 4},
		{"reset between three scrapes", []string{line("10"), line("30"), line("5")}, 25},
		{"missing middle scrape", []string{line("10"), "-", line("30")}, 20},
		{"no change", []string{line("7"), line("7")}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := deltasOf(t, tc.scrapes...)["a"]; got != tc.want {
				t.Fatalf("increase %v, want %v", got, tc.want)
			}
		})
	}
}

// Prometheus's increase() needs two samples of a series in the range: a
// series first seen in the last scrape has none yet, and one first seen in
// a middle scrape counts from there.
func TestIncreasesNeedTwoSamples(t *testing.T) {
	a := func(v string) string { return `response_total{authority="a"} ` + v + "\n" }
	b := func(v string) string { return `response_total{authority="b"} ` + v + "\n" }
	got := deltasOf(t, a("1"), a("2")+b("5"))
	if _, ok := got["b"]; ok || got["a"] != 1 {
		t.Fatalf("got %v, want a=1 and no b", got)
	}
	got = deltasOf(t, a("1"), a("2")+b("5"), a("3")+b("9"))
	if got["a"] != 2 || got["b"] != 4 {
		t.Fatalf("got %v, want a=2 b=4", got)
	}
}

// NaN and ±Inf samples go through increase() as Prometheus computes it:
// last - first + resets, where comparisons with NaN are false.
func TestIncreasesNaNAndInfAsPrometheus(t *testing.T) {
	line := func(v string) string { return `response_total{authority="a"} ` + v + "\n" }
	cases := []struct {
		name    string
		scrapes []string
		want    float64
	}{
		{"NaN in the middle is skipped over", []string{line("10"), line("NaN"), line("30")}, 20},
		{"NaN first", []string{line("NaN"), line("5")}, math.NaN()},
		{"NaN last", []string{line("5"), line("NaN")}, math.NaN()},
		{"+Inf last", []string{line("5"), line("+Inf")}, math.Inf(1)},
		{"+Inf both", []string{line("+Inf"), line("+Inf")}, math.NaN()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := deltasOf(t, tc.scrapes...)["a"]
			if !ok {
				t.Fatal("series missing")
			}
			if !(got == tc.want || math.IsNaN(got) && math.IsNaN(tc.want)) {
				t.Fatalf("increase %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIncreasesHistogramBuckets(t *testing.T) {
	h := func(le1, inf float64) string {
		return "# TYPE response_latency_ms histogram\n" +
			`response_latency_ms_bucket{authority="a",le="1"} ` + ftoa(le1) + "\n" +
			`response_latency_ms_bucket{authority="a",le="+Inf"} ` + ftoa(inf) + "\n" +
			`response_latency_ms_count{authority="a"} ` + ftoa(inf) + "\n" +
			`response_latency_ms_sum{authority="a"} 3` + "\n"
	}
	got := deltasOf(t, h(1, 2), h(4, 10))
	if got["a1"] != 3 || got["a+Inf"] != 8 {
		t.Fatalf("got %v, want le=1: 3, +Inf: 8", got)
	}
}

func ftoa(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func TestParseErrorNamesSourceAndLine(t *testing.T) {
	ts := targetScrapes{Target: map[string]string{}, Scrapes: []scrapeText{textScrape("ok 1\nbroken{ 2\n")}}
	_, err := increases(ts, 0)
	var se *ScrapeError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "test") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("want a ScrapeError naming the source and line 2, got %v", err)
	}
}

func TestTargetLabelsOverrideMetricLabels(t *testing.T) {
	series, err := parseScrape([]byte(`response_total{namespace="spoofed",authority="a"} 1`+"\n"), map[string]string{"namespace": "real"})
	if err != nil {
		t.Fatal(err)
	}
	if series[0].get("namespace") != "real" || series[0].get("exported_namespace") != "spoofed" {
		t.Fatalf("labels %v", series[0].Labels)
	}
}

func TestSumMatchesAndGroups(t *testing.T) {
	mk := func(v float64, kv ...string) series {
		var ls []labelPair
		for i := 0; i < len(kv); i += 2 {
			ls = append(ls, labelPair{kv[i], kv[i+1]})
		}
		sortLabels(ls)
		return series{Metric: metricResponses, Labels: ls, Value: v}
	}
	d := &deltaSet{span: time.Minute, series: []series{
		mk(1, "direction", "inbound", "authority", "a", "tls", "true"),
		mk(2, "direction", "inbound", "authority", "a", "tls", "no_identity"),
		mk(4, "direction", "inbound", "authority", "b", "tls", "true"),
		mk(8, "direction", "outbound", "authority", "a", "tls", "true"),
		mk(16, "direction", "inbound", "authority", "c"), // no tls label: != "true" must match it
	}}
	q := vectorQuery{Metric: metricResponses, Matchers: []matcher{{"direction", opEq, "inbound"}, {"tls", opNeq, "true"}}, By: []string{"authority"}}
	got, err := d.sum(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]float64{}
	for _, s := range got {
		sums[s.Labels["authority"]] = s.Value
	}
	if len(sums) != 2 || sums["a"] != 2 || sums["c"] != 16 {
		t.Fatalf("sums %v, want a=2 c=16", sums)
	}
	q.Matchers = []matcher{{"authority", opRe, "a|b"}, {"direction", opEq, "inbound"}}
	got, _ = d.sum(context.Background(), q)
	if len(got) != 2 {
		t.Fatalf("regex alternatives: got %v", got)
	}
}

func TestPromQLRendering(t *testing.T) {
	p, err := buildPlan(Query{Resource: Resource{Kind: KindAuthority, Namespace: "emojivoto"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `sum(increase(response_total{direction="inbound", namespace="emojivoto", authority!=""}[1m])) by (namespace, authority, classification, tls, no_tls_reason)`
	if got := p.requests.PromQL("1m"); got != want {
		t.Errorf("requests query\n got %s\nwant %s", got, want)
	}
	want = `histogram_quantile(0.95, sum(rate(response_latency_ms_bucket{direction="inbound", namespace="emojivoto", authority!=""}[1m])) by (le, namespace, authority))`
	if got := p.latency.QuantilePromQL(0.95, "1m"); got != want {
		t.Errorf("latency query\n got %s\nwant %s", got, want)
	}
	p, err = buildPlan(Query{Resource: Resource{Kind: KindDeployment, Namespace: "emojivoto", Name: "voting"}, From: &Resource{Kind: KindDeployment, Namespace: "emojivoto", Name: "web"}}, []string{"web-1", "a.b"})
	if err != nil {
		t.Fatal(err)
	}
	want = `sum(increase(response_total{direction="outbound", namespace="emojivoto", deployment="web", dst_namespace="emojivoto", dst_deployment="voting", pod=~"web-1|a\\.b"}[5m])) by (dst_namespace, dst_deployment, classification, tls, no_tls_reason)`
	if got := p.requests.PromQL("5m"); got != want {
		t.Errorf("--from query\n got %s\nwant %s", got, want)
	}
}

func TestPlanRejectsImpossibleDirections(t *testing.T) {
	au := Resource{Kind: KindAuthority, Namespace: "x"}
	dep := Resource{Kind: KindDeployment, Namespace: "x", Name: "web"}
	if _, err := buildPlan(Query{Resource: au, To: &dep}, nil); err == nil {
		t.Error("authority --to should be refused")
	}
	if _, err := buildPlan(Query{Resource: dep, From: &au}, nil); err == nil {
		t.Error("--from authority should be refused")
	}
}

func TestParseResource(t *testing.T) {
	cases := []struct {
		args []string
		want Resource
		err  string
	}{
		{[]string{"au"}, Resource{Kind: KindAuthority, Namespace: "ns"}, ""},
		{[]string{"deploy/web"}, Resource{Kind: KindDeployment, Namespace: "ns", Name: "web"}, ""},
		{[]string{"po", "web-1"}, Resource{Kind: KindPod, Namespace: "ns", Name: "web-1"}, ""},
		{[]string{"ns/emojivoto"}, Resource{Kind: KindNamespace, Name: "emojivoto"}, ""},
		{[]string{"deploy/web", "x"}, Resource{}, "either"},
		{[]string{"deploy/"}, Resource{}, "empty name"},
		{[]string{"gadget"}, Resource{}, "valid types are"},
		{[]string{"svc/web"}, Resource{Kind: KindService, Namespace: "ns", Name: "web"}, ""},
		{[]string{"sts", "db"}, Resource{Kind: KindStatefulSet, Namespace: "ns", Name: "db"}, ""},
	}
	for _, tc := range cases {
		got, err := ParseResource(tc.args, "ns")
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v: got %+v, %v; want %+v", tc.args, got, err, tc.want)
		}
	}
}

func TestComputeFiguresFromCapture(t *testing.T) {
	// A hand-made capture: 30 TLS successes, 10 plain failures from an
	// unmeshed client, in 20 seconds.
	first := `response_total{direction="inbound",authority="svc:80",tls="true",classification="success"} 0
response_total{direction="inbound",authority="svc:80",tls="no_identity",no_tls_reason="no_tls_from_remote",classification="failure"} 0
`
	second := `response_total{direction="inbound",authority="svc:80",tls="true",classification="success"} 30
response_total{direction="inbound",authority="svc:80",tls="no_identity",no_tls_reason="no_tls_from_remote",classification="failure"} 10
`
	d := &deltaSet{span: 20 * time.Second}
	ts := targetScrapes{Target: map[string]string{"namespace": "ns", "pod": "p", "deployment": "svc"}, Scrapes: []scrapeText{textScrape(first), textScrape(second)}}
	var err error
	d.series, err = increases(ts, 0)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := evaluate(context.Background(), Query{Resource: Resource{Kind: KindAuthority, Namespace: "ns"}}, mustPlan(t, Query{Resource: Resource{Kind: KindAuthority, Namespace: "ns"}}), d, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("rows %v", rows)
	}
	r := rows[0]
	if r.RPS != 2 || r.Success != 0.75 || r.TLS != 0.75 || r.NoTLS["no_tls_from_remote"] != 10 || r.Meshed != nil {
		t.Errorf("row %+v", r)
	}
	if !math.IsNaN(r.P50) {
		t.Errorf("no histogram should give NaN latency, got %v", r.P50)
	}
	if len(r.TopPlaintext) != 1 || r.TopPlaintext[0].Source != UnmeshedSource || r.TopPlaintext[0].Requests != 10 {
		t.Errorf("plain text pairs %+v", r.TopPlaintext)
	}
}

func mustPlan(t *testing.T, q Query) plan {
	t.Helper()
	p, err := buildPlan(q, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type timedText struct {
	text string
	at   time.Time
}

func (s timedText) Open() ([]byte, error) { return []byte(s.text), nil }
func (s timedText) Source() string        { return "test" }
func (s timedText) At() time.Time         { return s.at }

// A target's increase is scaled from its own first-to-last interval to the
// window, by arrival time or, when the samples carry one, their timestamp.
func TestIncreasesScaleToWindow(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	cases := []struct {
		name    string
		span    time.Duration
		scrapes []scrapeText
		want    float64
	}{
		{"no span: the raw increase", 0, []scrapeText{
			timedText{"response_total 10\n", t0}, timedText{"response_total 30\n", t0.Add(5 * time.Second)}}, 20},
		{"arrived 5s apart, window 4s", 4 * time.Second, []scrapeText{
			timedText{"response_total 10\n", t0}, timedText{"response_total 30\n", t0.Add(5 * time.Second)}}, 16},
		{"timestamps override arrival", 4 * time.Second, []scrapeText{
			timedText{"response_total 10 1700000000000\n", t0.Add(time.Second)},
			timedText{"response_total 30 1700000002000\n", t0.Add(5 * time.Second)}}, 40},
		{"untimed scrapes are not scaled", 4 * time.Second, []scrapeText{
			textScrape("response_total 10\n"), textScrape("response_total 30\n")}, 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			series, err := increases(targetScrapes{Name: "pod", Target: map[string]string{}, Scrapes: tc.scrapes}, tc.span)
			if err != nil {
				t.Fatal(err)
			}
			if len(series) != 1 || math.Abs(series[0].Value-tc.want) > 1e-9 {
				t.Fatalf("got %+v, want one series of %v", series, tc.want)
			}
		})
	}
}

func TestParseResources(t *testing.T) {
	got, err := ParseResources([]string{"deploy/web", "po/x", "deploy/web"}, "ns")
	want := []Resource{{KindDeployment, "ns", "web"}, {KindPod, "ns", "x"}}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("mixed TYPE/NAMEs: %v, %v; want %v (duplicates once)", got, err, want)
	}
	got, err = ParseResources([]string{"po", "a", "b"}, "ns")
	if err != nil || len(got) != 2 || got[1] != (Resource{KindPod, "ns", "b"}) {
		t.Errorf("po a b: %v, %v", got, err)
	}
	got, err = ParseResources([]string{"all"}, "ns")
	if err != nil || len(got) != len(AllKinds) {
		t.Errorf("all: %v, %v", got, err)
	}
	for _, bad := range [][]string{{"all/x"}, {"all", "x"}, {"deploy/web", "x"}, {"po", "a/b"}, {"po//"}, {"deploy/a/b"}, {"deploy", ""}, {"deploy", "web", ""}} {
		if _, err := ParseResources(bad, "ns"); err == nil {
			t.Errorf("%v: want an error", bad)
		}
	}
}
