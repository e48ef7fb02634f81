package tap

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func sampleEnd() *Event {
	return &Event{
		Kind: KindEnd, Direction: DirInbound, ID: StreamID{7, 3},
		Src:    Peer{Addr: netip.MustParseAddrPort("10.244.0.20:40001"), Labels: map[string]string{"namespace": "emojivoto", "deployment": "legacy-client", "pod": "legacy-1"}},
		Dst:    Peer{Addr: netip.MustParseAddrPort("10.244.0.11:8080"), Labels: map[string]string{"namespace": "emojivoto", "deployment": "web", "pod": "web-1", "app": "web-svc"}},
		TLS:    TLS{Status: "no_identity", NoTLSReason: "no_tls_from_remote"},
		Method: "GET", Scheme: "http", Authority: "web-svc.emojivoto:80", Path: "/api/vote?choice=:doughnut:", HasRequest: true,
		Status: 500, Latency: 150 * time.Millisecond, Duration: 2 * time.Millisecond,
		HasGRPCStatus: true, GRPCStatus: 2, ResponseBytes: 1200,
	}
}

func TestFilterMatches(t *testing.T) {
	e := sampleEnd()
	req := *e
	req.Kind, req.Status, req.Latency, req.HasGRPCStatus = KindRequest, 0, 0, false
	cases := []struct {
		expr      string
		end, req_ bool
	}{
		{"status>=500", true, false},
		{"status==5xx", true, false},
		{"status!=2xx", true, false},
		{"status<500", false, false},
		{"!(status<500)", true, true},
		{"tls!=true", true, true},
		{"tls==true", false, false},
		{"latency>100ms", true, false},
		{"latency>=150ms && latency<=150ms", true, false},
		{"latency<1s", true, false},
		{"duration>1ms", true, false},
		{"src.namespace==emojivoto", true, true},
		{"src.ns==emojivoto && dst.deployment==web", true, true},
		{"dst.app==web-svc", true, true},
		{"src.resource==deploy/legacy-client", true, true},
		{"src.ip==10.244.0.20 && src.port==40001", true, true},
		{"dst==10.244.0.11:8080", true, true},
		{"src.missing==x", false, false},
		{"path^=/api/vote", true, true},
		{`path=~"choice=:(doughnut|pizza):$"`, true, true},
		{"path!~doughnut", false, false},
		{"method==GET && (status>=500 || tls!=true)", true, true},
		{"method==POST || tls==true", false, false},
		{"!tls==true", true, true},
		{"!!tls==true", false, false},
		{"grpc_status==Unknown", true, false},
		{"grpc_status!=OK", true, false},
		{"grpc==2", true, false},
		{"success==false", true, false},
		{"no_tls_reason==no_tls_from_remote", true, true},
		{"reason==no_tls_from_remote", true, true},
		{"type==end", true, false},
		{"proxy==in", true, true},
		{"id==7:3", true, true},
		{"response_bytes>1000", true, false},
		{`authority=="web-svc.emojivoto:80"`, true, true},
		{"  status >= 500   &&   tls != true ", true, false},
		{"status=500", true, false},
		{"a==b || status>=500", false, false}, // unknown field is an error, see below
	}
	for _, tc := range cases {
		f, err := ParseFilter(tc.expr)
		if tc.expr == "a==b || status>=500" {
			if err == nil {
				t.Errorf("%q: want an error for the unknown field", tc.expr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		if got := f.Match(e); got != tc.end {
			t.Errorf("%q on end: got %v, want %v", tc.expr, got, tc.end)
		}
		if got := f.Match(&req); got != tc.req_ {
			t.Errorf("%q on req: got %v, want %v", tc.expr, got, tc.req_)
		}
	}
}

func TestFilterPrecedence(t *testing.T) {
	e := sampleEnd()
	// && binds tighter than ||: false || (true && true).
	f, err := ParseFilter("method==POST || tls!=true && status>=500")
	if err != nil || !f.Match(e) {
		t.Fatalf("want match, err=%v", err)
	}
	// Parentheses override: (false || true) && false.
	f, err = ParseFilter("(method==POST || tls!=true) && status<500")
	if err != nil || f.Match(e) {
		t.Fatalf("want no match, err=%v", err)
	}
}

func TestFilterEmptyMatchesAll(t *testing.T) {
	f, err := ParseFilter("   ")
	if err != nil || f != nil || !f.Match(sampleEnd()) {
		t.Fatalf("empty filter: %v %v", f, err)
	}
}

func TestFilterErrors(t *testing.T) {
	cases := []struct {
		expr string
		col  int
		msg  string
	}{
		{"stauts>=500", 1, `unknown field "stauts" (did you mean status?)`},
		{"status>=5xx", 7, "a status class such as 5xx takes == or !="},
		{"status>=abc", 9, `status takes a whole number (as in status>=500), not "abc"`},
		{"latency>100", 9, "latency needs a unit: 100ms or 100s"},
		{"latency>fast", 9, `latency takes a duration such as 100ms or 1.5s, not "fast"`},
		{"path<5", 5, "< only compares numbers and durations; text takes ==, !=, ^=, =~ or !~"},
		{"status>=500 &&", 15, "expression ends where a predicate such as status>=500 was expected"},
		{"(status>=500", 1, "( is never closed"},
		{"status>=500)", 12, "unmatched )"},
		{"status", 7, "status needs an operator and a value, e.g. status>=500"},
		{"status ~ 5", 8, `expected an operator (==, !=, <, <=, >, >=, ^=, =~, !~) after status, got "~"`},
		{"status>=500 tls==true", 13, `expected && or || before "tls==true"`},
		{`path=="unterminated`, 7, `string is never closed (missing ")`},
		{`path=~"("`, 7, "bad regular expression: missing closing ): `(`"},
		{"success>true", 8, "success is true or false: use == or !="},
		{"success==maybe", 10, `success is true or false, not "maybe"`},
		{"&& status>=1", 1, `expected a field name such as status, got "&"`},
		{"status==", 9, "expression ends where a value was expected"},
		{"src.==x", 1, `unknown field "src."`},
		{"zzzzzzzzz==1", 1, `unknown field "zzzzzzzzz" (fields: `},
		{"grpc_status==Nope", 14, `grpc_status takes a whole number`},
		{"é==1", 1, "expected a field name"},
		{"path==a && é==1", 12, "expected a field name"},
	}
	for _, tc := range cases {
		_, err := ParseFilter(tc.expr)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%q: want a ParseError, got %v", tc.expr, err)
			continue
		}
		if pe.Column() != tc.col || !strings.Contains(pe.Msg, tc.msg) {
			t.Errorf("%q: got column %d %q, want column %d containing %q", tc.expr, pe.Column(), pe.Msg, tc.col, tc.msg)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error is not one line: %q", tc.expr, err)
		}
	}
}

// Any white space separates tokens, as strings.TrimSpace sees it: a filter
// pasted with CRLF or a no-break space means what it says, and its String
// (trimmed) parses to the same filter.
func TestFilterWhiteSpace(t *testing.T) {
	e := sampleEnd()
	for _, expr := range []string{"status>=500\r\n&&\fmethod==GET\v", "status>=500\u00a0&& method==GET\u2003", "path!~\f"} {
		f, err := ParseFilter(expr)
		if expr == "path!~\f" {
			if err == nil {
				t.Errorf("%q parsed: a form feed is not a value", expr)
			}
			continue
		}
		if err != nil || !f.Match(e) {
			t.Errorf("%q: %v, match %v", expr, err, err == nil && f.Match(e))
			continue
		}
		if again, err := ParseFilter(f.String()); err != nil || !again.Match(e) {
			t.Errorf("%q: String %q: %v", expr, f.String(), err)
		}
	}
}

func TestParseErrorPointer(t *testing.T) {
	_, err := ParseFilter("tls!=true && status>=5x")
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatal(err)
	}
	want := "tls!=true && status>=5x\n                     ^"
	if got := pe.Pointer(); got != want {
		t.Errorf("pointer:\n%s\nwant:\n%s", got, want)
	}
}

// FuzzParseFilter checks the filter language on any expression: an error
// is a one-line *ParseError pointing inside the expression; an expression
// that parses means the same when parsed again from its String, and
// negating or parenthesising it parses too and selects exactly the
// complement or the same events.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"status>=500", "tls!=true && (latency>100ms || !src.namespace==x)", `path=~"a|b"`, "((", "status==5xx", "a\x00b", "!(!(!x==1))"} {
		f.Add(s)
	}
	end := sampleEnd()
	req := *end
	req.Kind, req.Status, req.Latency, req.HasGRPCStatus = KindRequest, 0, 0, false
	events := []*Event{end, &req, {}}
	f.Fuzz(func(t *testing.T, expr string) {
		flt, err := ParseFilter(expr)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("%q: error %v is not a ParseError", expr, err)
			}
			if pe.Pos < 0 || pe.Pos > len(expr) {
				t.Fatalf("%q: position %d out of range", expr, pe.Pos)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("%q: error is not one line: %q", expr, msg)
			}
			if lines := strings.Split(pe.Pointer(), "\n"); len(lines) != 2 || !strings.HasSuffix(lines[1], "^") {
				t.Fatalf("%q: pointer %q is not the expression and a caret", expr, pe.Pointer())
			}
			return
		}
		if flt == nil {
			if strings.TrimSpace(expr) != "" {
				t.Fatalf("%q: a nil filter for a non-empty expression", expr)
			}
			return
		}
		reparsed := mustParse(t, flt.String())
		not := mustParse(t, "!("+expr+")")
		paren := mustParse(t, "("+expr+")")
		for _, e := range events {
			m := flt.Match(e)
			if reparsed.Match(e) != m || paren.Match(e) != m || not.Match(e) == m {
				t.Fatalf("%q on %+v: %v, but from String %v, parenthesised %v, negated %v", expr, e, m, reparsed.Match(e), paren.Match(e), not.Match(e))
			}
		}
	})
}

func mustParse(t *testing.T, expr string) *Filter {
	t.Helper()
	f, err := ParseFilter(expr)
	if err != nil || f == nil {
		t.Fatalf("%q does not parse: %v", expr, err)
	}
	return f
}
