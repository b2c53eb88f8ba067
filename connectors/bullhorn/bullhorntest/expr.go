//lint:file-ignore ST1005 the emulator answers with Bullhorn's own error texts, capitals and full stops included

package bullhorntest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// The two filter languages the emulator understands: the Lucene subset
// /search takes and the JPQL subset /query takes. Both parse into one
// expression tree evaluated against a record.

type expr interface {
	eval(s *Server, r *record) bool
}

type andExpr []expr
type orExpr []expr
type notExpr struct{ e expr }

func (a andExpr) eval(s *Server, r *record) bool {
	for _, e := range a {
		if !e.eval(s, r) {
			return false
		}
	}
	return true
}

func (o orExpr) eval(s *Server, r *record) bool {
	for _, e := range o {
		if e.eval(s, r) {
			return true
		}
	}
	return false
}

func (n notExpr) eval(s *Server, r *record) bool { return !n.e.eval(s, r) }

// matchAll is the Lucene "*:*" query.
type matchAll struct{}

func (matchAll) eval(*Server, *record) bool { return true }

// termExpr is a Lucene field:value (or field:"phrase").
type termExpr struct {
	f     *fieldDef
	value string
	// num and b are value parsed for numeric and boolean fields.
	num int64
	b   bool
}

func (t termExpr) eval(s *Server, r *record) bool {
	v := r.vals[t.f.name]
	switch t.f.typ {
	case ftBool:
		x, _ := v.(bool)
		return x == t.b
	case ftInt, ftTimestamp:
		x, ok := v.(int64)
		return ok && x == t.num
	case ftFloat:
		x, ok := v.(float64)
		f, err := strconv.ParseFloat(t.value, 64)
		return ok && err == nil && x == f
	}
	x, ok := v.(string)
	if !ok {
		return false
	}
	if isEmailField(t.f.name) && s.opts.EmailIndex == EmailTokenized {
		return containsTokens(tokens(x), tokens(t.value))
	}
	return strings.EqualFold(strings.TrimSpace(x), t.value)
}

func isEmailField(name string) bool { return name == "email" || name == "email2" || name == "email3" }

// tokens splits text the way a standard analyzer would: lower-cased runs
// of letters and digits.
func tokens(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
}

func containsTokens(hay, needle []string) bool {
	if len(needle) == 0 {
		return false
	}
	for i := 0; i+len(needle) <= len(hay); i++ {
		match := true
		for j := range needle {
			if hay[i+j] != needle[j] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// rangeExpr is a Lucene [lo TO hi] over a number or a timestamp; a nil
// bound is open ("*").
type rangeExpr struct {
	f              *fieldDef
	lo, hi         *int64
	loIncl, hiIncl bool
}

func (x rangeExpr) eval(_ *Server, r *record) bool {
	v, ok := r.vals[x.f.name].(int64)
	if !ok {
		return false
	}
	if x.lo != nil && (v < *x.lo || !x.loIncl && v == *x.lo) {
		return false
	}
	if x.hi != nil && (v > *x.hi || !x.hiIncl && v == *x.hi) {
		return false
	}
	return true
}

// cmpExpr is a JPQL comparison: field op literal.
type cmpExpr struct {
	f   *fieldDef
	op  string
	lit any // string, int64, float64, bool
}

func (c cmpExpr) eval(_ *Server, r *record) bool {
	v := r.vals[c.f.name]
	if v == nil {
		return false // SQL: a comparison with NULL is not true
	}
	n := compare(v, c.lit)
	switch c.op {
	case "=":
		return n == 0
	case "<>", "!=":
		return n != 0 && n != incomparable
	case "<":
		return n == -1
	case "<=":
		return n == -1 || n == 0
	case ">":
		return n == 1
	case ">=":
		return n == 1 || n == 0
	}
	return false
}

const incomparable = 2

func compare(v, lit any) int {
	switch x := v.(type) {
	case string:
		y, ok := lit.(string)
		if !ok {
			return incomparable
		}
		// Bullhorn's database compares text case-insensitively (the
		// default collation); UNCONFIRMED, and it matches the search index.
		return strings.Compare(strings.ToLower(x), strings.ToLower(y))
	case bool:
		y, ok := lit.(bool)
		if !ok {
			return incomparable
		}
		if x == y {
			return 0
		}
		return incomparable
	case int64:
		switch y := lit.(type) {
		case int64:
			return cmpNum(float64(x), float64(y))
		case float64:
			return cmpNum(float64(x), y)
		}
	case float64:
		switch y := lit.(type) {
		case int64:
			return cmpNum(x, float64(y))
		case float64:
			return cmpNum(x, y)
		}
	}
	return incomparable
}

func cmpNum(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type inExpr struct {
	f    *fieldDef
	lits []any
	not  bool
}

func (x inExpr) eval(_ *Server, r *record) bool {
	v := r.vals[x.f.name]
	if v == nil {
		return false
	}
	for _, l := range x.lits {
		if compare(v, l) == 0 {
			return !x.not
		}
	}
	return x.not
}

type nullExpr struct {
	f   *fieldDef
	not bool
}

func (x nullExpr) eval(_ *Server, r *record) bool {
	isNull := r.vals[x.f.name] == nil
	return isNull != x.not
}

// ---- Lucene ----

// maxClauses is Lucene's default BooleanQuery.maxClauseCount: a query with
// more terms fails (TooManyClauses). UNCONFIRMED that Bullhorn keeps the
// default.
const maxClauses = 1024

type lucene struct {
	s       *Server
	e       *entityDef
	in      string
	pos     int
	clauses int
}

// parseLucene parses the /search query language, the subset the sync and
// simple clients use: field:term, field:"phrase", field:[a TO b] (and
// {a TO b}, * for an open end), AND, OR, NOT, parentheses; adjacent
// clauses are ORed, as Lucene's default operator does.
func (s *Server) parseLucene(e *entityDef, q string) (expr, error) {
	p := &lucene{s: s, e: e, in: q}
	x, err := p.or()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos < len(p.in) {
		return nil, fmt.Errorf("Cannot parse '%s': unexpected %q at position %d", q, p.in[p.pos:p.pos+1], p.pos)
	}
	if p.clauses > maxClauses {
		return nil, fmt.Errorf("too many boolean clauses (%d, at most %d)", p.clauses, maxClauses)
	}
	return x, nil
}

func (p *lucene) space() {
	for p.pos < len(p.in) && (p.in[p.pos] == ' ' || p.in[p.pos] == '\t' || p.in[p.pos] == '\n') {
		p.pos++
	}
}

func (p *lucene) keyword(k string) bool {
	p.space()
	if strings.HasPrefix(p.in[p.pos:], k) {
		end := p.pos + len(k)
		if end == len(p.in) || p.in[end] == ' ' || p.in[end] == '(' {
			p.pos = end
			return true
		}
	}
	return false
}

func (p *lucene) or() (expr, error) {
	var terms orExpr
	for {
		x, err := p.and()
		if err != nil {
			return nil, err
		}
		terms = append(terms, x)
		if p.keyword("OR") || p.keyword("||") {
			continue
		}
		p.space()
		if p.pos < len(p.in) && p.in[p.pos] != ')' {
			continue // default operator OR
		}
		break
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return terms, nil
}

func (p *lucene) and() (expr, error) {
	var terms andExpr
	for {
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		terms = append(terms, x)
		if !p.keyword("AND") && !p.keyword("&&") {
			break
		}
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return terms, nil
}

func (p *lucene) unary() (expr, error) {
	if p.keyword("NOT") {
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return notExpr{x}, nil
	}
	p.space()
	if p.pos < len(p.in) && p.in[p.pos] == '(' {
		p.pos++
		x, err := p.or()
		if err != nil {
			return nil, err
		}
		p.space()
		if p.pos >= len(p.in) || p.in[p.pos] != ')' {
			return nil, fmt.Errorf("Cannot parse '%s': missing ')'", p.in)
		}
		p.pos++
		return x, nil
	}
	return p.clause()
}

func (p *lucene) clause() (expr, error) {
	p.space()
	start := p.pos
	for p.pos < len(p.in) && p.in[p.pos] != ':' && p.in[p.pos] != ' ' && p.in[p.pos] != ')' {
		p.pos++
	}
	name := p.in[start:p.pos]
	if p.pos >= len(p.in) || p.in[p.pos] != ':' || name == "" {
		return nil, fmt.Errorf("Cannot parse '%s': expected field:value at position %d", p.in, start)
	}
	p.pos++
	if name == "*" && strings.HasPrefix(p.in[p.pos:], "*") {
		p.pos++
		return matchAll{}, nil
	}
	f := p.e.field(name)
	if f == nil {
		return nil, fmt.Errorf("unknown field %s on %s", name, p.e.name)
	}
	p.clauses++
	if p.pos < len(p.in) && (p.in[p.pos] == '[' || p.in[p.pos] == '{') {
		return p.rangeClause(f)
	}
	val, err := p.value()
	if err != nil {
		return nil, err
	}
	t := termExpr{f: f, value: val}
	switch f.typ {
	case ftBool:
		switch strings.ToLower(val) {
		case "1", "true":
			t.b = true
		case "0", "false":
		default:
			return nil, fmt.Errorf("%q is not a boolean value for %s", val, name)
		}
	case ftInt, ftTimestamp:
		n, err := p.s.searchNumber(f, val)
		if err != nil {
			return nil, err
		}
		t.num = n
	}
	return t, nil
}

// value reads a term or a quoted phrase, with backslash escapes.
func (p *lucene) value() (string, error) {
	var b strings.Builder
	if p.pos < len(p.in) && p.in[p.pos] == '"' {
		p.pos++
		for p.pos < len(p.in) && p.in[p.pos] != '"' {
			if p.in[p.pos] == '\\' && p.pos+1 < len(p.in) {
				p.pos++
			}
			b.WriteByte(p.in[p.pos])
			p.pos++
		}
		if p.pos >= len(p.in) {
			return "", fmt.Errorf("Cannot parse '%s': unterminated phrase", p.in)
		}
		p.pos++
		return b.String(), nil
	}
	for p.pos < len(p.in) {
		c := p.in[p.pos]
		if c == '\\' && p.pos+1 < len(p.in) {
			b.WriteByte(p.in[p.pos+1])
			p.pos += 2
			continue
		}
		if c == ' ' || c == ')' || c == '(' {
			break
		}
		if strings.IndexByte(`+-!{}[]^"~*?:/`, c) >= 0 && !(c == '-' && b.Len() > 0) {
			return "", fmt.Errorf("Cannot parse '%s': unescaped special character %q at position %d", p.in, c, p.pos)
		}
		b.WriteByte(c)
		p.pos++
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("Cannot parse '%s': empty value at position %d", p.in, p.pos)
	}
	return b.String(), nil
}

func (p *lucene) rangeClause(f *fieldDef) (expr, error) {
	x := rangeExpr{f: f, loIncl: p.in[p.pos] == '['}
	p.pos++
	end := strings.IndexAny(p.in[p.pos:], "]}")
	if end < 0 {
		return nil, fmt.Errorf("Cannot parse '%s': unterminated range", p.in)
	}
	body := p.in[p.pos : p.pos+end]
	x.hiIncl = p.in[p.pos+end] == ']'
	p.pos += end + 1
	parts := strings.Fields(body)
	if len(parts) != 3 || parts[1] != "TO" {
		return nil, fmt.Errorf("Cannot parse '%s': a range is [from TO to]", p.in)
	}
	if f.typ != ftInt && f.typ != ftTimestamp {
		return nil, fmt.Errorf("range queries on %s are not supported by this emulator", f.name)
	}
	for i, v := range []string{parts[0], parts[2]} {
		if v == "*" {
			continue
		}
		n, err := p.s.searchNumber(f, v)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			x.lo = &n
		} else {
			x.hi = &n
		}
	}
	return x, nil
}

// searchNumber reads a number in a search: a timestamp in the format the
// SearchDates option names.
func (s *Server) searchNumber(f *fieldDef, v string) (int64, error) {
	if f.typ != ftTimestamp {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number for %s", v, f.name)
		}
		return n, nil
	}
	if s.opts.SearchDates == DatesCompact {
		layout := ""
		switch len(v) {
		case 8:
			layout = "20060102"
		case 14:
			layout = "20060102150405"
		}
		t, err := time.Parse(layout, v)
		if layout == "" || err != nil {
			return 0, fmt.Errorf("Error parsing date '%s' for field %s: expected yyyyMMdd or yyyyMMddHHmmss", v, f.name)
		}
		return t.UnixMilli(), nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("Error parsing date '%s' for field %s: expected epoch milliseconds", v, f.name)
	}
	return n, nil
}

// ---- JPQL ----

type jpql struct {
	e   *entityDef
	in  string
	pos int
}

// parseWhere parses the /query where clause: comparisons (= <> < <= > >=),
// IS [NOT] NULL, [NOT] IN (...), AND, OR, NOT and parentheses, with string
// literals in single quotes (a quote doubled inside), numbers and
// true/false.
func parseWhere(e *entityDef, where string) (expr, error) {
	p := &jpql{e: e, in: where}
	x, err := p.or()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos < len(p.in) {
		return nil, fmt.Errorf("Invalid where clause: unexpected %q at position %d", p.in[p.pos:], p.pos)
	}
	return x, nil
}

func (p *jpql) space() {
	for p.pos < len(p.in) && unicode.IsSpace(rune(p.in[p.pos])) {
		p.pos++
	}
}

func (p *jpql) word(w string) bool {
	p.space()
	if len(p.in)-p.pos >= len(w) && strings.EqualFold(p.in[p.pos:p.pos+len(w)], w) {
		end := p.pos + len(w)
		if end == len(p.in) || !isIdent(p.in[end]) {
			p.pos = end
			return true
		}
	}
	return false
}

func isIdent(c byte) bool {
	return c == '_' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func (p *jpql) or() (expr, error) {
	var terms orExpr
	for {
		x, err := p.and()
		if err != nil {
			return nil, err
		}
		terms = append(terms, x)
		if !p.word("OR") {
			break
		}
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return terms, nil
}

func (p *jpql) and() (expr, error) {
	var terms andExpr
	for {
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		terms = append(terms, x)
		if !p.word("AND") {
			break
		}
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return terms, nil
}

func (p *jpql) unary() (expr, error) {
	if p.word("NOT") {
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return notExpr{x}, nil
	}
	p.space()
	if p.pos < len(p.in) && p.in[p.pos] == '(' {
		p.pos++
		x, err := p.or()
		if err != nil {
			return nil, err
		}
		p.space()
		if p.pos >= len(p.in) || p.in[p.pos] != ')' {
			return nil, fmt.Errorf("Invalid where clause: missing ')'")
		}
		p.pos++
		return x, nil
	}
	start := p.pos
	for p.pos < len(p.in) && isIdent(p.in[p.pos]) {
		p.pos++
	}
	name := p.in[start:p.pos]
	f := p.e.field(name)
	if f == nil {
		return nil, fmt.Errorf("Invalid field '%s' at position %d.", name, start)
	}
	switch {
	case p.word("IS"):
		not := p.word("NOT")
		if !p.word("NULL") {
			return nil, fmt.Errorf("Invalid where clause: IS [NOT] NULL expected at position %d", p.pos)
		}
		return nullExpr{f: f, not: not}, nil
	case p.word("NOT"):
		if !p.word("IN") {
			return nil, fmt.Errorf("Invalid where clause: NOT IN expected at position %d", p.pos)
		}
		lits, err := p.list()
		return inExpr{f: f, lits: lits, not: true}, err
	case p.word("IN"):
		lits, err := p.list()
		return inExpr{f: f, lits: lits}, err
	}
	p.space()
	op := ""
	for _, o := range []string{"<>", "!=", "<=", ">=", "=", "<", ">"} {
		if strings.HasPrefix(p.in[p.pos:], o) {
			op = o
			break
		}
	}
	if op == "" {
		return nil, fmt.Errorf("Invalid where clause: an operator expected after %s at position %d", name, p.pos)
	}
	p.pos += len(op)
	lit, err := p.literal()
	if err != nil {
		return nil, err
	}
	return cmpExpr{f: f, op: op, lit: lit}, nil
}

func (p *jpql) list() ([]any, error) {
	p.space()
	if p.pos >= len(p.in) || p.in[p.pos] != '(' {
		return nil, fmt.Errorf("Invalid where clause: '(' expected at position %d", p.pos)
	}
	p.pos++
	var out []any
	for {
		lit, err := p.literal()
		if err != nil {
			return nil, err
		}
		out = append(out, lit)
		p.space()
		if p.pos < len(p.in) && p.in[p.pos] == ',' {
			p.pos++
			continue
		}
		if p.pos < len(p.in) && p.in[p.pos] == ')' {
			p.pos++
			return out, nil
		}
		return nil, fmt.Errorf("Invalid where clause: ',' or ')' expected at position %d", p.pos)
	}
}

func (p *jpql) literal() (any, error) {
	p.space()
	if p.pos >= len(p.in) {
		return nil, fmt.Errorf("Invalid where clause: a value expected at the end")
	}
	if p.in[p.pos] == '\'' {
		var b strings.Builder
		p.pos++
		for {
			if p.pos >= len(p.in) {
				return nil, fmt.Errorf("Invalid where clause: unterminated string literal")
			}
			c := p.in[p.pos]
			if c == '\'' {
				if p.pos+1 < len(p.in) && p.in[p.pos+1] == '\'' {
					b.WriteByte('\'')
					p.pos += 2
					continue
				}
				p.pos++
				return b.String(), nil
			}
			b.WriteByte(c)
			p.pos++
		}
	}
	if p.word("true") {
		return true, nil
	}
	if p.word("false") {
		return false, nil
	}
	start := p.pos
	for p.pos < len(p.in) && (p.in[p.pos] == '-' || p.in[p.pos] == '.' || p.in[p.pos] >= '0' && p.in[p.pos] <= '9') {
		p.pos++
	}
	num := p.in[start:p.pos]
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		return n, nil
	}
	if f, err := strconv.ParseFloat(num, 64); err == nil {
		return f, nil
	}
	return nil, fmt.Errorf("Invalid where clause: a value expected at position %d", start)
}
