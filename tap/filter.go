package tap

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
)

// Filter is a compiled --filter expression. A nil *Filter matches all.
//
// The language: predicates `FIELD OP VALUE` joined with `&&`, `||`, `!`
// and parentheses (`!` binds tightest, then `&&`, then `||`). Operators are
// == (or =), !=, <, <=, >, >= for numbers and durations, and ==, !=, ^=
// (prefix), =~ and !~ (regular expressions) for text. Values are bare words
// (`/api/vote`, `web-svc.emojivoto:80`) or "quoted strings". A predicate on
// something an event does not have yet (the status of a request that has
// not been answered) is false.
type Filter struct {
	src  string
	eval func(*Event) bool
}

// Match reports whether e passes the filter.
func (f *Filter) Match(e *Event) bool {
	if f == nil {
		return true
	}
	return f.eval(e)
}

// String is the expression as written.
func (f *Filter) String() string {
	if f == nil {
		return ""
	}
	return f.src
}

// ParseError points at the offending part of an expression.
type ParseError struct {
	Input string
	// Pos is the byte offset of the problem in Input.
	Pos int
	Msg string
}

// Column is the 1-based character column of the problem.
func (e *ParseError) Column() int {
	return utf8.RuneCountInString(e.Input[:min(e.Pos, len(e.Input))]) + 1
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("at column %d: %s", e.Column(), e.Msg)
}

// Pointer renders the expression with a caret under the problem, for
// places that have room for two lines (the TUI's filter prompt).
func (e *ParseError) Pointer() string {
	return Escape(e.Input) + "\n" + strings.Repeat(" ", e.Column()-1) + "^"
}

// ParseFilter compiles an expression; an empty one matches everything and
// returns nil.
func ParseFilter(expr string) (*Filter, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, nil
	}
	p := &parser{in: expr}
	eval, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos < len(p.in) {
		if p.in[p.pos] == ')' {
			return nil, p.errf(p.pos, "unmatched )")
		}
		return nil, p.errf(p.pos, "expected && or || before %q", p.word())
	}
	return &Filter{src: strings.TrimSpace(expr), eval: eval}, nil
}

type parser struct {
	in  string
	pos int
}

func (p *parser) errf(pos int, format string, args ...any) error {
	return &ParseError{Input: p.in, Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// spaceAt is the length of the white space character at i, 0 if there is
// none. Space is what strings.TrimSpace trims, so that an expression and
// its String (trimmed) parse alike.
func (p *parser) spaceAt(i int) int {
	if r, n := utf8.DecodeRuneInString(p.in[i:]); unicode.IsSpace(r) {
		return n
	}
	return 0
}

func (p *parser) skipSpace() {
	for p.pos < len(p.in) {
		n := p.spaceAt(p.pos)
		if n == 0 {
			return
		}
		p.pos += n
	}
}

// word is the rest of the current token, for error messages.
func (p *parser) word() string {
	end := p.pos
	for end < len(p.in) && !strings.ContainsRune("()&|", rune(p.in[end])) && p.spaceAt(end) == 0 {
		end++
	}
	if end == p.pos && end < len(p.in) {
		end++
	}
	return p.in[p.pos:end]
}

func (p *parser) consume(tok string) bool {
	p.skipSpace()
	if strings.HasPrefix(p.in[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

func (p *parser) parseOr() (func(*Event) bool, error) {
	left, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	for p.consume("||") {
		right, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		l := left
		left = func(e *Event) bool { return l(e) || right(e) }
	}
	return left, nil
}

func (p *parser) parseAnd() (func(*Event) bool, error) {
	left, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	for p.consume("&&") {
		right, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		l := left
		left = func(e *Event) bool { return l(e) && right(e) }
	}
	return left, nil
}

func (p *parser) parseUnary() (func(*Event) bool, error) {
	p.skipSpace()
	if p.pos >= len(p.in) {
		return nil, p.errf(p.pos, "expression ends where a predicate such as status>=500 was expected")
	}
	switch {
	case p.in[p.pos] == '!' && !strings.HasPrefix(p.in[p.pos:], "!="):
		p.pos++
		inner, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		return func(e *Event) bool { return !inner(e) }, nil
	case p.in[p.pos] == '(':
		open := p.pos
		p.pos++
		inner, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if !p.consume(")") {
			p.skipSpace()
			if p.pos >= len(p.in) {
				return nil, p.errf(open, "( is never closed")
			}
			return nil, p.errf(p.pos, "expected ) or an operator, got %q", p.word())
		}
		return inner, nil
	}
	return p.parsePredicate()
}

var operators = []string{"==", "!=", "<=", ">=", "=~", "!~", "^=", "<", ">", "="}

func (p *parser) parsePredicate() (func(*Event) bool, error) {
	start := p.pos
	for p.pos < len(p.in) && isFieldChar(p.in[p.pos]) {
		p.pos++
	}
	name := p.in[start:p.pos]
	if name == "" {
		return nil, p.errf(start, "expected a field name such as status, got %q", p.word())
	}
	f, ok := lookupField(name)
	if !ok {
		msg := fmt.Sprintf("unknown field %q", name)
		if s := suggestField(name); s != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", s)
		} else {
			msg += " (fields: " + strings.Join(FieldNames(), ", ") + ")"
		}
		return nil, p.errf(start, "%s", msg)
	}
	p.skipSpace()
	opPos := p.pos
	op := ""
	for _, o := range operators {
		if strings.HasPrefix(p.in[p.pos:], o) {
			op = o
			break
		}
	}
	if op == "" {
		if p.pos >= len(p.in) {
			return nil, p.errf(p.pos, "%s needs an operator and a value, e.g. %s", name, f.example)
		}
		return nil, p.errf(p.pos, "expected an operator (==, !=, <, <=, >, >=, ^=, =~, !~) after %s, got %q", name, p.word())
	}
	p.pos += len(op)
	if op == "=" {
		op = "=="
	}
	p.skipSpace()
	valPos := p.pos
	val, err := p.value()
	if err != nil {
		return nil, err
	}
	return f.compile(p, name, op, opPos, val, valPos)
}

func isFieldChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' || c == '/'
}

// value reads a quoted string or a bare word up to white space, a parenthesis
// or a && / ||.
func (p *parser) value() (string, error) {
	if p.pos >= len(p.in) {
		return "", p.errf(p.pos, "expression ends where a value was expected")
	}
	if p.in[p.pos] == '"' {
		end := p.pos + 1
		for end < len(p.in) && p.in[end] != '"' {
			if p.in[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(p.in) {
			return "", p.errf(p.pos, "string is never closed (missing \")")
		}
		s, err := strconv.Unquote(p.in[p.pos : end+1])
		if err != nil {
			return "", p.errf(p.pos, "bad string: %v", err)
		}
		p.pos = end + 1
		return s, nil
	}
	start := p.pos
	for p.pos < len(p.in) {
		c := p.in[p.pos]
		if c == ')' || c == '(' || p.spaceAt(p.pos) > 0 ||
			strings.HasPrefix(p.in[p.pos:], "&&") || strings.HasPrefix(p.in[p.pos:], "||") {
			break
		}
		p.pos++
	}
	if p.pos == start {
		return "", p.errf(start, "expected a value, got %q", p.word())
	}
	return p.in[start:p.pos], nil
}

type valueType uint8

const (
	typeText valueType = iota
	typeNumber
	typeDuration
	typeBool
)

func (t valueType) String() string {
	return [...]string{"text", "a number", "a duration", "true or false"}[t]
}

type field struct {
	typ     valueType
	example string
	text    func(*Event) (string, bool)
	number  func(*Event) (uint64, bool)
	dur     func(*Event) (time.Duration, bool)
	boolean func(*Event) (bool, bool)
	// literal parses a number field's value when it is not decimal (gRPC
	// code names).
	literal func(string) (uint64, bool)
}

func textField(get func(*Event) string, example string) field {
	return field{typ: typeText, example: example, text: func(e *Event) (string, bool) { return get(e), true }}
}

func requestText(get func(*Event) string, example string) field {
	return field{typ: typeText, example: example, text: func(e *Event) (string, bool) { return get(e), e.HasRequest }}
}

var fields = map[string]field{
	"type":      textField(func(e *Event) string { return e.Kind.String() }, "type==end"),
	"id":        textField(func(e *Event) string { return fmt.Sprintf("%d:%d", e.ID.Base, e.ID.Stream) }, "id==3:17"),
	"proxy":     textField(func(e *Event) string { return e.Direction.String() }, "proxy==in"),
	"method":    requestText(func(e *Event) string { return e.Method }, "method==POST"),
	"scheme":    requestText(func(e *Event) string { return e.Scheme }, "scheme==http"),
	"authority": requestText(func(e *Event) string { return e.Authority }, "authority==web-svc.emojivoto:80"),
	"path":      requestText(func(e *Event) string { return e.Path }, "path^=/api"),
	"tls":       textField(func(e *Event) string { return e.TLS.Status }, "tls!=true"),
	"no_tls_reason": textField(func(e *Event) string { return e.TLS.NoTLSReason },
		"no_tls_reason==no_tls_from_remote"),
	"client_id": textField(func(e *Event) string { return e.TLS.ClientID }, "client_id^=web."),
	"server_id": textField(func(e *Event) string { return e.TLS.ServerID }, "server_id^=emoji."),
	"error":     textField(func(e *Event) string { return e.Error }, `error!=""`),
	"status": {typ: typeNumber, example: "status>=500", number: func(e *Event) (uint64, bool) {
		return uint64(e.Status), e.Status != 0
	}},
	"grpc_status": {typ: typeNumber, example: "grpc_status!=OK", number: func(e *Event) (uint64, bool) {
		return uint64(e.GRPCStatus), e.HasGRPCStatus
	}, literal: grpcCode},
	"reset": {typ: typeNumber, example: "reset>0", number: func(e *Event) (uint64, bool) {
		return uint64(e.ResetCode), e.HasReset
	}},
	"request_bytes": {typ: typeNumber, example: "request_bytes>1000", number: func(e *Event) (uint64, bool) {
		return e.RequestBytes, e.Kind == KindEnd
	}},
	"response_bytes": {typ: typeNumber, example: "response_bytes>1000", number: func(e *Event) (uint64, bool) {
		return e.ResponseBytes, e.Kind == KindEnd
	}},
	"dropped": {typ: typeNumber, example: "dropped>0", number: func(e *Event) (uint64, bool) {
		return e.DroppedBefore, true
	}},
	"latency": {typ: typeDuration, example: "latency>100ms", dur: func(e *Event) (time.Duration, bool) {
		return e.Latency, e.Kind >= KindResponse
	}},
	"duration": {typ: typeDuration, example: "duration>1s", dur: func(e *Event) (time.Duration, bool) {
		return e.Duration, e.Kind == KindEnd
	}},
	"success": {typ: typeBool, example: "success==false", boolean: func(e *Event) (bool, bool) {
		return e.Success(), e.Kind == KindEnd
	}},
}

// fieldAliases are other spellings users reach for.
var fieldAliases = map[string]string{
	"kind": "type", "direction": "proxy", "dir": "proxy", "reason": "no_tls_reason", "grpc": "grpc_status",
	":method": "method", ":path": "path", ":authority": "authority", ":status": "status",
	"rsp_bytes": "response_bytes", "req_bytes": "request_bytes",
}

func peerOf(side string) func(*Event) *Peer {
	if side == "src" {
		return func(e *Event) *Peer { return &e.Src }
	}
	return func(e *Event) *Peer { return &e.Dst }
}

// peerField resolves src.X and dst.X: ip, port, namespace (ns), pod,
// resource, and any other label of the peer (src.deployment, dst.app).
func peerField(name string) (field, bool) {
	side, attr, ok := strings.Cut(name, ".")
	switch side {
	case "source":
		side = "src"
	case "destination":
		side = "dst"
	}
	if side != "src" && side != "dst" {
		return field{}, false
	}
	get := peerOf(side)
	if !ok {
		return field{typ: typeText, example: side + "==10.244.0.11:8080", text: func(e *Event) (string, bool) {
			a := get(e).Addr
			return a.String(), a.IsValid()
		}}, true
	}
	switch attr {
	case "":
		return field{}, false
	case "ip":
		return field{typ: typeText, example: side + ".ip==10.244.0.11", text: func(e *Event) (string, bool) {
			a := get(e).Addr
			return a.Addr().String(), a.IsValid()
		}}, true
	case "port":
		return field{typ: typeNumber, example: side + ".port==8080", number: func(e *Event) (uint64, bool) {
			a := get(e).Addr
			return uint64(a.Port()), a.IsValid()
		}}, true
	case "resource", "res":
		return field{typ: typeText, example: side + ".resource==deploy/web", text: func(e *Event) (string, bool) {
			r := get(e).Resource()
			return r, r != ""
		}}, true
	case "ns":
		attr = "namespace"
	}
	return field{typ: typeText, example: side + "." + attr + "==emojivoto", text: func(e *Event) (string, bool) {
		v, ok := get(e).Labels[attr]
		return v, ok
	}}, true
}

func lookupField(name string) (field, bool) {
	if a, ok := fieldAliases[name]; ok {
		name = a
	}
	if f, ok := fields[name]; ok {
		return f, true
	}
	return peerField(name)
}

// FieldNames lists the fields a filter can name, for help and completion.
func FieldNames() []string {
	names := make([]string, 0, len(fields)+8)
	for n := range fields {
		names = append(names, n)
	}
	names = append(names, "src", "src.ip", "src.port", "src.namespace", "src.pod", "src.resource", "src.LABEL",
		"dst", "dst.ip", "dst.port", "dst.namespace", "dst.pod", "dst.resource", "dst.LABEL")
	sort.Strings(names)
	return names
}

func suggestField(name string) string {
	best, bestD := "", 3
	for _, n := range FieldNames() {
		if d := editDistance(strings.ToLower(name), n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func grpcCode(s string) (uint64, bool) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if strings.EqualFold(c.String(), s) || strings.EqualFold(strings.ReplaceAll(c.String(), "_", ""), s) {
			return uint64(c), true
		}
	}
	return 0, false
}

func (f field) compile(p *parser, name, op string, opPos int, val string, valPos int) (func(*Event) bool, error) {
	switch f.typ {
	case typeText:
		return compileText(p, f.text, op, opPos, val, valPos)
	case typeBool:
		if op != "==" && op != "!=" {
			return nil, p.errf(opPos, "%s is true or false: use == or !=", name)
		}
		want, err := strconv.ParseBool(val)
		if err != nil {
			return nil, p.errf(valPos, "%s is true or false, not %q", name, val)
		}
		if op == "!=" {
			want = !want
		}
		return func(e *Event) bool { v, ok := f.boolean(e); return ok && v == want }, nil
	case typeNumber:
		if name == "status" || fieldAliases[name] == "status" {
			if cls, ok := statusClass(val); ok {
				if op != "==" && op != "!=" {
					return nil, p.errf(opPos, "a status class such as %s takes == or !=", val)
				}
				eq := op == "=="
				return func(e *Event) bool {
					v, ok := f.number(e)
					return ok && (v/100 == cls) == eq
				}, nil
			}
		}
		n, err := strconv.ParseUint(val, 10, 64)
		if err != nil {
			ok := false
			if f.literal != nil {
				n, ok = f.literal(val)
			}
			if !ok {
				return nil, p.errf(valPos, "%s takes a whole number (as in %s), not %q", name, f.example, val)
			}
		}
		cmp, err := numberOp(p, name, op, opPos)
		if err != nil {
			return nil, err
		}
		return func(e *Event) bool { v, ok := f.number(e); return ok && cmp(v, n) }, nil
	case typeDuration:
		d, err := time.ParseDuration(val)
		if err != nil {
			if _, nerr := strconv.ParseFloat(val, 64); nerr == nil {
				return nil, p.errf(valPos, "%s needs a unit: %sms or %ss", name, val, val)
			}
			return nil, p.errf(valPos, "%s takes a duration such as 100ms or 1.5s, not %q", name, val)
		}
		cmp, err := numberOp(p, name, op, opPos)
		if err != nil {
			return nil, err
		}
		return func(e *Event) bool { v, ok := f.dur(e); return ok && cmp(uint64(max(v, 0)), uint64(max(d, 0))) }, nil
	}
	return nil, p.errf(opPos, "internal: field %s has no type", name)
}

func statusClass(s string) (uint64, bool) {
	if len(s) == 3 && s[0] >= '1' && s[0] <= '5' && (s[1] == 'x' || s[1] == 'X') && (s[2] == 'x' || s[2] == 'X') {
		return uint64(s[0] - '0'), true
	}
	return 0, false
}

func numberOp(p *parser, name, op string, opPos int) (func(a, b uint64) bool, error) {
	switch op {
	case "==":
		return func(a, b uint64) bool { return a == b }, nil
	case "!=":
		return func(a, b uint64) bool { return a != b }, nil
	case "<":
		return func(a, b uint64) bool { return a < b }, nil
	case "<=":
		return func(a, b uint64) bool { return a <= b }, nil
	case ">":
		return func(a, b uint64) bool { return a > b }, nil
	case ">=":
		return func(a, b uint64) bool { return a >= b }, nil
	}
	return nil, p.errf(opPos, "%s is compared with ==, !=, <, <=, > or >=, not %s", name, op)
}

func compileText(p *parser, get func(*Event) (string, bool), op string, opPos int, val string, valPos int) (func(*Event) bool, error) {
	switch op {
	case "==":
		return func(e *Event) bool { v, ok := get(e); return ok && v == val }, nil
	case "!=":
		return func(e *Event) bool { v, ok := get(e); return ok && v != val }, nil
	case "^=":
		return func(e *Event) bool { v, ok := get(e); return ok && strings.HasPrefix(v, val) }, nil
	case "=~", "!~":
		re, err := regexp.Compile(val)
		if err != nil {
			return nil, p.errf(valPos, "bad regular expression: %v", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		}
		want := op == "=~"
		return func(e *Event) bool { v, ok := get(e); return ok && re.MatchString(v) == want }, nil
	}
	return nil, p.errf(opPos, "%s only compares numbers and durations; text takes ==, !=, ^=, =~ or !~", op)
}
