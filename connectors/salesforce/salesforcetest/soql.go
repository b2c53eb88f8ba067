package salesforcetest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// This file is a deliberately small SOQL engine: the SELECT forms the
// connector sends (field lists, comparisons, IN lists, semi- and anti-joins,
// AND/OR/NOT with parentheses, ORDER BY, LIMIT). Anything else is answered
// the way Salesforce answers a query it cannot parse: 400 MALFORMED_QUERY.

// queryError is an error answer for a query: errorCode and message.
type queryError struct {
	code string
	msg  string
}

func (e *queryError) Error() string { return e.code + ": " + e.msg }

func malformed(format string, args ...any) error {
	return &queryError{code: "MALFORMED_QUERY", msg: fmt.Sprintf(format, args...)}
}

// ---- lexer ----

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tString
	tNumber
	tDatetime
	tPunct
)

type token struct {
	kind tokKind
	text string // identifier, punctuation, raw number/datetime, or decoded string
	pos  int
}

func lex(src string) ([]token, error) {
	var out []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'':
			start := i
			i++
			var b strings.Builder
			closed := false
			for i < len(src) {
				ch := src[i]
				if ch == '\\' {
					if i+1 >= len(src) {
						break
					}
					// The escapes SOQL defines for string literals.
					switch src[i+1] {
					case 'n':
						b.WriteByte('\n')
					case 'r':
						b.WriteByte('\r')
					case 't':
						b.WriteByte('\t')
					case 'b':
						b.WriteByte('\b')
					case 'f':
						b.WriteByte('\f')
					case '"', '\'', '\\':
						b.WriteByte(src[i+1])
					default:
						return nil, malformed("Invalid string literal '%s'. Illegal character sequence '\\%c' in string literal.", src[start:min(len(src), i+2)], src[i+1])
					}
					i += 2
					continue
				}
				if ch == '\'' {
					closed = true
					i++
					break
				}
				b.WriteByte(ch)
				i++
			}
			if !closed {
				return nil, malformed("unexpected token: unterminated string literal at position %d", start)
			}
			out = append(out, token{kind: tString, text: b.String(), pos: start})
		case c >= '0' && c <= '9' || c == '-' && i+1 < len(src) && src[i+1] >= '0' && src[i+1] <= '9':
			start := i
			i++
			for i < len(src) && strings.IndexByte("0123456789-:.TZ+", src[i]) >= 0 {
				i++
			}
			text := src[start:i]
			kind := tNumber
			if strings.Contains(text, "T") {
				kind = tDatetime
			}
			out = append(out, token{kind: kind, text: text, pos: start})
		case c == '_' || unicode.IsLetter(rune(c)):
			start := i
			for i < len(src) && (src[i] == '_' || src[i] == '.' || unicode.IsLetter(rune(src[i])) || unicode.IsDigit(rune(src[i]))) {
				i++
			}
			out = append(out, token{kind: tIdent, text: src[start:i], pos: start})
		case strings.HasPrefix(src[i:], "!=") || strings.HasPrefix(src[i:], "<=") || strings.HasPrefix(src[i:], ">=") || strings.HasPrefix(src[i:], "<>"):
			out = append(out, token{kind: tPunct, text: src[i : i+2], pos: i})
			i += 2
		case strings.IndexByte("(),=<>", c) >= 0:
			out = append(out, token{kind: tPunct, text: string(c), pos: i})
			i++
		default:
			return nil, malformed("unexpected token: '%c' at position %d", c, i)
		}
	}
	return append(out, token{kind: tEOF, pos: len(src)}), nil
}

// ---- AST ----

type valueKind int

const (
	vNull valueKind = iota
	vString
	vBool
	vDatetime
	vNumber
)

type literal struct {
	kind valueKind
	s    string
	b    bool
	t    time.Time
	n    float64
}

type orderKey struct {
	field *fieldDef
	desc  bool
}

type query struct {
	object  *objectDef
	fields  []*fieldDef
	where   expr
	orderBy []orderKey
	limit   int // -1: none
}

type expr interface{}

type andExpr struct{ l, r expr }
type orExpr struct{ l, r expr }
type notExpr struct{ e expr }
type cmpExpr struct {
	field *fieldDef
	op    string
	val   literal
}
type inExpr struct {
	field  *fieldDef
	not    bool
	values []literal
	sub    *query
}

// ---- parser ----

type parser struct {
	toks    []token
	i       int
	schema  *schema
	current *objectDef // object of the SELECT whose WHERE is being parsed
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) isKeyword(kw string) bool {
	t := p.peek()
	return t.kind == tIdent && strings.EqualFold(t.text, kw)
}

func (p *parser) expectKeyword(kw string) error {
	if !p.isKeyword(kw) {
		return p.unexpected()
	}
	p.next()
	return nil
}

func (p *parser) expectPunct(s string) error {
	t := p.peek()
	if t.kind != tPunct || t.text != s {
		return p.unexpected()
	}
	p.next()
	return nil
}

func (p *parser) unexpected() error {
	t := p.peek()
	if t.kind == tEOF {
		return malformed("unexpected token: <EOF>")
	}
	return malformed("unexpected token: '%s' at position %d", t.text, t.pos)
}

func parseSOQL(s *schema, src string) (*query, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks, schema: s}
	q, err := p.parseSelect(false)
	if err != nil {
		return nil, err
	}
	if p.peek().kind != tEOF {
		return nil, p.unexpected()
	}
	return q, nil
}

var reserved = map[string]bool{"select": true, "from": true, "where": true, "and": true, "or": true, "not": true, "in": true, "order": true, "by": true, "limit": true, "asc": true, "desc": true, "null": true, "true": true, "false": true, "nulls": true, "first": true, "last": true}

func (p *parser) parseSelect(sub bool) (*query, error) {
	if err := p.expectKeyword("SELECT"); err != nil {
		return nil, err
	}
	var names []token
	for {
		t := p.next()
		if t.kind != tIdent || reserved[strings.ToLower(t.text)] {
			p.i--
			return nil, p.unexpected()
		}
		names = append(names, t)
		if p.peek().kind == tPunct && p.peek().text == "," {
			p.next()
			continue
		}
		break
	}
	if err := p.expectKeyword("FROM"); err != nil {
		return nil, err
	}
	ot := p.next()
	if ot.kind != tIdent {
		p.i--
		return nil, p.unexpected()
	}
	obj := p.schema.object(ot.text)
	if obj == nil {
		return nil, &queryError{code: "INVALID_TYPE", msg: fmt.Sprintf("\n%s\n^\nERROR at Row:1:Column:%d\nsObject type '%s' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.", ot.text, ot.pos+1, ot.text)}
	}
	q := &query{object: obj, limit: -1}
	p.current = obj
	for _, n := range names {
		f, err := p.field(obj, n)
		if err != nil {
			return nil, err
		}
		q.fields = append(q.fields, f)
	}
	if p.isKeyword("WHERE") {
		p.next()
		e, err := p.parseOr(sub)
		if err != nil {
			return nil, err
		}
		q.where = e
	}
	if p.isKeyword("ORDER") {
		p.next()
		if err := p.expectKeyword("BY"); err != nil {
			return nil, err
		}
		for {
			t := p.next()
			if t.kind != tIdent {
				p.i--
				return nil, p.unexpected()
			}
			f, err := p.field(obj, t)
			if err != nil {
				return nil, err
			}
			k := orderKey{field: f}
			if p.isKeyword("ASC") {
				p.next()
			} else if p.isKeyword("DESC") {
				p.next()
				k.desc = true
			}
			q.orderBy = append(q.orderBy, k)
			if p.peek().kind == tPunct && p.peek().text == "," {
				p.next()
				continue
			}
			break
		}
	}
	if p.isKeyword("LIMIT") {
		p.next()
		t := p.next()
		n, err := strconv.Atoi(t.text)
		if t.kind != tNumber || err != nil || n < 0 {
			p.i--
			return nil, p.unexpected()
		}
		q.limit = n
	}
	return q, nil
}

func (p *parser) field(obj *objectDef, t token) (*fieldDef, error) {
	f := obj.field(t.text)
	if f == nil {
		return nil, &queryError{code: "INVALID_FIELD", msg: fmt.Sprintf("\nERROR at Row:1:Column:%d\nNo such column '%s' on entity '%s'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.", t.pos+1, t.text, obj.name)}
	}
	return f, nil
}

func (p *parser) parseOr(sub bool) (expr, error) {
	l, err := p.parseAnd(sub)
	if err != nil {
		return nil, err
	}
	for p.isKeyword("OR") {
		p.next()
		r, err := p.parseAnd(sub)
		if err != nil {
			return nil, err
		}
		l = orExpr{l, r}
		// Salesforce refuses a semi-join or anti-join under OR.
		if hasJoin(l) {
			return nil, malformed("Semi join sub-selects are not allowed with the 'OR' operator")
		}
	}
	return l, nil
}

func hasJoin(e expr) bool {
	switch x := e.(type) {
	case andExpr:
		return hasJoin(x.l) || hasJoin(x.r)
	case orExpr:
		return hasJoin(x.l) || hasJoin(x.r)
	case notExpr:
		return hasJoin(x.e)
	case *inExpr:
		return x.sub != nil
	}
	return false
}

func (p *parser) parseAnd(sub bool) (expr, error) {
	l, err := p.parseUnary(sub)
	if err != nil {
		return nil, err
	}
	for p.isKeyword("AND") {
		p.next()
		r, err := p.parseUnary(sub)
		if err != nil {
			return nil, err
		}
		l = andExpr{l, r}
	}
	return l, nil
}

func (p *parser) parseUnary(sub bool) (expr, error) {
	if p.isKeyword("NOT") {
		p.next()
		e, err := p.parseUnary(sub)
		if err != nil {
			return nil, err
		}
		return notExpr{e}, nil
	}
	if t := p.peek(); t.kind == tPunct && t.text == "(" {
		p.next()
		e, err := p.parseOr(sub)
		if err != nil {
			return nil, err
		}
		if err := p.expectPunct(")"); err != nil {
			return nil, err
		}
		return e, nil
	}
	return p.parseCondition(sub)
}

func (p *parser) parseCondition(sub bool) (expr, error) {
	t := p.next()
	if t.kind != tIdent || reserved[strings.ToLower(t.text)] {
		p.i--
		return nil, p.unexpected()
	}
	f, err := p.field(p.current, t)
	if err != nil {
		return nil, err
	}
	not := false
	if p.isKeyword("NOT") {
		p.next()
		not = true
		if !p.isKeyword("IN") {
			return nil, p.unexpected()
		}
	}
	if p.isKeyword("IN") {
		p.next()
		if err := p.expectPunct("("); err != nil {
			return nil, err
		}
		in := &inExpr{field: f, not: not}
		if p.isKeyword("SELECT") {
			if sub {
				return nil, malformed("Nesting of semi join sub-selects is not supported")
			}
			if f.typ != ftID && f.typ != ftRef {
				return nil, malformed("Invalid field for semi/anti join: %s. Only Id or reference fields can be used", f.name)
			}
			saved := p.current
			sq, err := p.parseSelect(true)
			p.current = saved
			if err != nil {
				return nil, err
			}
			if len(sq.fields) != 1 || (sq.fields[0].typ != ftID && sq.fields[0].typ != ftRef) {
				return nil, malformed("The selected field in a semi/anti join sub-select must be an Id or a reference field")
			}
			in.sub = sq
		} else {
			for {
				v, err := p.literal(f)
				if err != nil {
					return nil, err
				}
				in.values = append(in.values, v)
				if p.peek().kind == tPunct && p.peek().text == "," {
					p.next()
					continue
				}
				break
			}
		}
		if err := p.expectPunct(")"); err != nil {
			return nil, err
		}
		return in, nil
	}
	op := p.next()
	if op.kind != tPunct || !strings.Contains("= != <> < > <= >=", op.text) || op.text == "(" || op.text == ")" || op.text == "," {
		p.i--
		return nil, p.unexpected()
	}
	v, err := p.literal(f)
	if err != nil {
		return nil, err
	}
	if v.kind == vNull && op.text != "=" && op.text != "!=" && op.text != "<>" {
		return nil, malformed("invalid operator on null: %s", op.text)
	}
	opText := op.text
	if opText == "<>" {
		opText = "!="
	}
	return cmpExpr{field: f, op: opText, val: v}, nil
}

// literal reads one literal and checks it against the field's type, the way
// Salesforce rejects a quoted datetime or boolean with INVALID_FIELD.
func (p *parser) literal(f *fieldDef) (literal, error) {
	t := p.next()
	wrongType := func(want string, quoted bool) error {
		how := "should not be enclosed in quotes"
		if quoted {
			how = "should be enclosed in quotes"
		}
		return &queryError{code: "INVALID_FIELD", msg: fmt.Sprintf("\nERROR at Row:1:Column:%d\nvalue of filter criterion for field '%s' must be of type %s and %s", t.pos+1, f.name, want, how)}
	}
	switch {
	case t.kind == tIdent && strings.EqualFold(t.text, "null"):
		return literal{kind: vNull}, nil
	case t.kind == tIdent && (strings.EqualFold(t.text, "true") || strings.EqualFold(t.text, "false")):
		if f.typ != ftBool {
			return literal{}, wrongType(f.typ.String(), f.typ == ftString || f.typ == ftID || f.typ == ftRef)
		}
		return literal{kind: vBool, b: strings.EqualFold(t.text, "true")}, nil
	case t.kind == tString:
		if f.typ != ftString && f.typ != ftID && f.typ != ftRef {
			return literal{}, wrongType(f.typ.String(), false)
		}
		return literal{kind: vString, s: t.text}, nil
	case t.kind == tDatetime:
		if f.typ != ftDatetime {
			return literal{}, wrongType(f.typ.String(), f.typ == ftString || f.typ == ftID || f.typ == ftRef)
		}
		tm, err := parseDatetimeLiteral(t.text)
		if err != nil {
			return literal{}, malformed("line 1:%d no viable alternative at character '%s'", t.pos+1, t.text)
		}
		return literal{kind: vDatetime, t: tm}, nil
	case t.kind == tNumber:
		n, err := strconv.ParseFloat(t.text, 64)
		if err != nil {
			return literal{}, malformed("unexpected token: '%s'", t.text)
		}
		if f.typ != ftNumber {
			return literal{}, wrongType(f.typ.String(), f.typ == ftString || f.typ == ftID || f.typ == ftRef)
		}
		return literal{kind: vNumber, n: n}, nil
	}
	p.i--
	return literal{}, p.unexpected()
}

// parseDatetimeLiteral accepts the SOQL dateTime forms: YYYY-MM-DDThh:mm:ssZ,
// with an optional fraction, or with a +hh:mm / -hh:mm offset.
func parseDatetimeLiteral(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02T15:04:05Z", "2006-01-02T15:04:05.000Z", "2006-01-02T15:04:05-07:00", "2006-01-02T15:04:05.000-07:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("bad datetime %q", s)
}
