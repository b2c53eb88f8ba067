package netsuitetest

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// This is a small SuiteQL: exactly the forms the netsuite client sends,
// and the obvious neighbours, over the customer and contact tables.
//
//	SELECT item [, item]* FROM customer|contact [WHERE cond] [ORDER BY expr [ASC|DESC] [, ...]]
//	item  = * | expr [AS alias]
//	expr  = column | 'string' | number | ? | TO_CHAR(expr, 'fmt') | TO_DATE('s', 'fmt')
//	      | LOWER(expr) | UPPER(expr) | LTRIM(expr) | RTRIM(expr) | MOD(expr, expr)
//	cond  = cond OR cond | cond AND cond | NOT cond | (cond)
//	      | expr (= | <> | != | < | <= | > | >=) expr | expr [NOT] IN (expr, ...) | expr IS [NOT] NULL
//
// Anything else is refused with the 400 a real account gives a query it
// cannot run ("Invalid search query").

// kind is a SuiteQL value's type.
type kind int

const (
	kNull kind = iota
	kStr
	kNum
	kTime
)

type value struct {
	k kind
	s string
	n float64
	t time.Time
	// wall marks a kTime whose t is a zone-less wall-clock time (its
	// fields, in UTC) rather than an instant: see DateSemantics.
	wall bool
}

func (v value) String() string {
	switch v.k {
	case kStr:
		return v.s
	case kNum:
		return strconv.FormatFloat(v.n, 'f', -1, 64)
	case kTime:
		// The account's default date format, as SuiteQL answers a bare
		// date column: why the client uses TO_CHAR.
		return v.t.Format("1/2/2006")
	}
	return ""
}

// token kinds
type tok struct {
	typ  byte // 'i' ident/keyword, 's' string, 'n' number, 'p' punctuation, '?' param
	text string
}

func lex(q string) ([]tok, error) {
	var out []tok
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'':
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(q) {
					return nil, fmt.Errorf("unterminated string literal")
				}
				if q[j] == '\'' {
					if j+1 < len(q) && q[j+1] == '\'' {
						b.WriteByte('\'')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(q[j])
				j++
			}
			out = append(out, tok{'s', b.String()})
			i = j + 1
		case c >= '0' && c <= '9' || c == '-' && i+1 < len(q) && q[i+1] >= '0' && q[i+1] <= '9':
			j := i + 1
			for j < len(q) && (q[j] >= '0' && q[j] <= '9' || q[j] == '.') {
				j++
			}
			out = append(out, tok{'n', q[i:j]})
			i = j
		case c == '_' || unicode.IsLetter(rune(c)):
			j := i
			for j < len(q) && (q[j] == '_' || q[j] == '.' || unicode.IsLetter(rune(q[j])) || q[j] >= '0' && q[j] <= '9') {
				j++
			}
			out = append(out, tok{'i', q[i:j]})
			i = j
		case c == '?':
			out = append(out, tok{'?', "?"})
			i++
		case strings.ContainsRune("(),*", rune(c)):
			out = append(out, tok{'p', string(c)})
			i++
		case c == '<' || c == '>' || c == '!' || c == '=':
			if i+1 < len(q) && (q[i+1] == '=' || c == '<' && q[i+1] == '>') {
				out = append(out, tok{'p', q[i : i+2]})
				i += 2
			} else if c == '!' {
				return nil, fmt.Errorf("unexpected '!'")
			} else {
				out = append(out, tok{'p', string(c)})
				i++
			}
		default:
			return nil, fmt.Errorf("unexpected character %q", c)
		}
	}
	return out, nil
}

// expr is an evaluable node.
type expr interface {
	eval(r *rowCtx) value
}

// rowCtx is the row an expression is evaluated on.
type rowCtx struct {
	e     *entity
	tbl   *table
	loc   *time.Location
	dates DateSemantics
}

// column reads a column of the row; under WallClock a date reads as its
// wall-clock time in the account's zone.
func (r *rowCtx) column(name string) value {
	v := r.tbl.column(r.e, name)
	if v.k == kTime && r.dates == WallClock {
		v = value{k: kTime, t: wall(v.t, r.loc), wall: true}
	}
	return v
}

type colExpr struct{ name string }

func (c colExpr) eval(r *rowCtx) value { return r.column(c.name) }

type litExpr struct{ v value }

func (l litExpr) eval(*rowCtx) value { return l.v }

type funcExpr struct {
	name string
	args []expr
}

// oracleLayout turns the Oracle format models the client uses into Go layouts.
var oracleLayout = strings.NewReplacer("YYYY", "2006", "HH24", "15", "MI", "04", "SS", "05", "MM", "01", "DD", "02")

func (f funcExpr) eval(r *rowCtx) value {
	a := f.args[0].eval(r)
	switch f.name {
	case "LOWER", "UPPER", "LTRIM", "RTRIM":
		if a.k == kNull {
			return a
		}
		var s string
		switch f.name {
		case "LOWER":
			s = strings.ToLower(a.String())
		case "UPPER":
			s = strings.ToUpper(a.String())
		case "LTRIM":
			// Oracle's one-argument forms trim blanks only, not tabs.
			s = strings.TrimLeft(a.String(), " ")
		case "RTRIM":
			s = strings.TrimRight(a.String(), " ")
		}
		if s == "" {
			return value{} // Oracle: an empty string is NULL
		}
		return value{k: kStr, s: s}
	case "MOD":
		// Oracle's MOD(n2, n1): n2 - n1 * FLOOR(n2 / n1), n2 when n1 is 0.
		x, err1 := strconv.ParseFloat(a.String(), 64)
		y, err2 := strconv.ParseFloat(f.args[1].eval(r).String(), 64)
		if a.k == kNull || err1 != nil || err2 != nil {
			return value{}
		}
		if y == 0 {
			return value{k: kNum, n: x}
		}
		return value{k: kNum, n: x - y*math.Floor(x/y)}
	case "TO_CHAR":
		if a.k != kTime {
			return value{k: kStr, s: a.String()}
		}
		layout := oracleLayout.Replace(f.args[1].eval(r).s)
		if a.wall {
			return value{k: kStr, s: a.t.Format(layout)}
		}
		return value{k: kStr, s: a.t.In(r.loc).Format(layout)}
	case "TO_DATE":
		layout := oracleLayout.Replace(f.args[1].eval(r).s)
		w, err := time.Parse(layout, a.s)
		if err != nil {
			return value{}
		}
		switch r.dates {
		case EarlierInstant:
			return value{k: kTime, t: instant(w, r.loc, false)}
		case LaterInstant:
			return value{k: kTime, t: instant(w, r.loc, true)}
		}
		return value{k: kTime, t: w, wall: true}
	}
	return value{}
}

// cond is a WHERE condition; SQL's unknown counts as false.
type cond interface {
	test(r *rowCtx) bool
}

type andCond struct{ a, b cond }

func (c andCond) test(r *rowCtx) bool { return c.a.test(r) && c.b.test(r) }

type orCond struct{ a, b cond }

func (c orCond) test(r *rowCtx) bool { return c.a.test(r) || c.b.test(r) }

type notCond struct{ a cond }

func (c notCond) test(r *rowCtx) bool { return !c.a.test(r) }

type cmpCond struct {
	op   string
	l, r expr
}

func (c cmpCond) test(r *rowCtx) bool {
	a, b := c.l.eval(r), c.r.eval(r)
	n, ok := compare(a, b)
	if !ok {
		return false
	}
	switch c.op {
	case "=":
		return n == 0
	case "<>", "!=":
		return n != 0
	case "<":
		return n < 0
	case "<=":
		return n <= 0
	case ">":
		return n > 0
	case ">=":
		return n >= 0
	}
	return false
}

type inCond struct {
	not  bool
	l    expr
	list []expr
	// When every list item is a literal (the client's id and address
	// lists), they are looked up in sets: a linear scan of 500 ids on
	// each of 100k rows is what made a scoped benchmark take minutes.
	literal bool
	nums    map[float64]bool
	strs    map[string]bool
}

// index builds the literal sets.
func (c *inCond) index() {
	c.nums, c.strs = map[float64]bool{}, map[string]bool{}
	for _, e := range c.list {
		l, ok := e.(litExpr)
		if !ok {
			return
		}
		switch l.v.k {
		case kNum:
			c.nums[l.v.n] = true
		case kStr:
			c.strs[l.v.s] = true
			if n, err := strconv.ParseFloat(l.v.s, 64); err == nil {
				c.nums[n] = true
			}
		}
	}
	c.literal = true
}

func (c inCond) test(r *rowCtx) bool {
	a := c.l.eval(r)
	if a.k == kNull {
		return false
	}
	if c.literal {
		hit := false
		switch a.k {
		case kNum:
			hit = c.nums[a.n]
		case kStr:
			hit = c.strs[a.s]
			if !hit && len(c.nums) > 0 {
				if n, err := strconv.ParseFloat(a.s, 64); err == nil {
					hit = c.nums[n]
				}
			}
		}
		return hit != c.not
	}
	for _, e := range c.list {
		if n, ok := compare(a, e.eval(r)); ok && n == 0 {
			return !c.not
		}
	}
	return c.not
}

type nullCond struct {
	not bool
	l   expr
}

func (c nullCond) test(r *rowCtx) bool { return (c.l.eval(r).k == kNull) != c.not }

// compare orders two values; ok is false when either is NULL or they do
// not compare (Oracle would convert or fail; here they simply never match).
func compare(a, b value) (int, bool) {
	if a.k == kNull || b.k == kNull {
		return 0, false
	}
	switch {
	case a.k == kTime && b.k == kTime:
		return a.t.Compare(b.t), true
	case a.k == kNum && b.k == kNum:
		return cmp.Compare(a.n, b.n), true
	case a.k == kStr && b.k == kStr:
		return strings.Compare(a.s, b.s), true
	case a.k == kNum || b.k == kNum:
		x, err1 := strconv.ParseFloat(a.String(), 64)
		y, err2 := strconv.ParseFloat(b.String(), 64)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		return cmp.Compare(x, y), true
	case a.k == kTime || b.k == kTime:
		return 0, false
	}
	return strings.Compare(a.s, b.s), true
}

type selItem struct {
	star    bool
	e       expr
	name    string
	aliased bool
}

type orderItem struct {
	e    expr
	desc bool
}

// query is a parsed SuiteQL statement.
type query struct {
	items []selItem
	table string
	where cond
	order []orderItem
}

type parser struct {
	toks   []tok
	pos    int
	params []string
	nparam int
	loc    *time.Location
	dates  DateSemantics
}

func (p *parser) peek() tok {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return tok{}
}

func (p *parser) next() tok {
	t := p.peek()
	p.pos++
	return t
}

func (p *parser) keyword(k string) bool {
	if t := p.peek(); t.typ == 'i' && strings.EqualFold(t.text, k) {
		p.pos++
		return true
	}
	return false
}

func (p *parser) punct(s string) bool {
	if t := p.peek(); t.typ == 'p' && t.text == s {
		p.pos++
		return true
	}
	return false
}

func (p *parser) expect(s string) error {
	if !p.punct(s) {
		return fmt.Errorf("expected %q near %q", s, p.peek().text)
	}
	return nil
}

var reserved = map[string]bool{"SELECT": true, "FROM": true, "WHERE": true, "ORDER": true, "BY": true, "AND": true, "OR": true, "NOT": true, "IN": true, "IS": true, "NULL": true, "AS": true, "ASC": true, "DESC": true}

// parseQuery parses q; columns reports whether a table has a column. The
// table is known only after FROM, so column names are checked afterwards.
func parseQuery(q string, params []string, loc *time.Location, dates DateSemantics, tables func(string) (func(string) bool, bool)) (*query, error) {
	toks, err := lex(q)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks, params: params, loc: loc, dates: dates}
	if !p.keyword("SELECT") {
		return nil, fmt.Errorf("only SELECT statements are supported")
	}
	out := &query{}
	var cols []string
	for {
		if p.punct("*") {
			out.items = append(out.items, selItem{star: true})
		} else {
			e, names, err := p.expr()
			if err != nil {
				return nil, err
			}
			cols = append(cols, names...)
			it := selItem{e: e, name: fmt.Sprintf("expr%d", len(out.items)+1)}
			if c, ok := e.(colExpr); ok {
				it.name = c.name
			}
			if p.keyword("AS") {
				t := p.next()
				if t.typ != 'i' || reserved[strings.ToUpper(t.text)] {
					return nil, fmt.Errorf("expected an alias after AS")
				}
				it.name, it.aliased = strings.ToLower(t.text), true
			}
			out.items = append(out.items, it)
		}
		if !p.punct(",") {
			break
		}
	}
	if !p.keyword("FROM") {
		return nil, fmt.Errorf("expected FROM near %q", p.peek().text)
	}
	t := p.next()
	if t.typ != 'i' {
		return nil, fmt.Errorf("expected a table name")
	}
	out.table = strings.ToLower(t.text)
	has, ok := tables(out.table)
	if !ok {
		//lint:ignore ST1005 NetSuite's own wording, sent on the wire
		return nil, fmt.Errorf("Record '%s' was not found.", t.text)
	}
	if p.keyword("WHERE") {
		c, names, err := p.or()
		if err != nil {
			return nil, err
		}
		cols = append(cols, names...)
		out.where = c
	}
	if p.keyword("ORDER") {
		if !p.keyword("BY") {
			return nil, fmt.Errorf("expected BY after ORDER")
		}
		for {
			e, names, err := p.expr()
			if err != nil {
				return nil, err
			}
			cols = append(cols, names...)
			oi := orderItem{e: e}
			if p.keyword("DESC") {
				oi.desc = true
			} else {
				p.keyword("ASC")
			}
			out.order = append(out.order, oi)
			if !p.punct(",") {
				break
			}
		}
	}
	if p.pos != len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.peek().text)
	}
	if p.nparam != len(params) {
		return nil, fmt.Errorf("the query has %d parameters but %d values were given", p.nparam, len(params))
	}
	// An ORDER BY may name a select alias.
	aliases := map[string]expr{}
	for _, it := range out.items {
		if it.aliased {
			aliases[it.name] = it.e
		}
	}
	for i, oi := range out.order {
		if c, ok := oi.e.(colExpr); ok && !has(c.name) {
			if e, ok := aliases[c.name]; ok {
				out.order[i].e = e
			}
		}
	}
	for _, c := range cols {
		if !has(c) && aliases[c] == nil {
			//lint:ignore ST1005 NetSuite's own wording, sent on the wire
			return nil, fmt.Errorf("Field '%s' for record '%s' was not found. Reason: NOT_EXPOSED - Not available for channel SEARCH", c, out.table)
		}
	}
	return out, nil
}

func (p *parser) or() (cond, []string, error) {
	a, names, err := p.and()
	if err != nil {
		return nil, nil, err
	}
	for p.keyword("OR") {
		b, n2, err := p.and()
		if err != nil {
			return nil, nil, err
		}
		a, names = orCond{a, b}, append(names, n2...)
	}
	return a, names, nil
}

func (p *parser) and() (cond, []string, error) {
	a, names, err := p.not()
	if err != nil {
		return nil, nil, err
	}
	for p.keyword("AND") {
		b, n2, err := p.not()
		if err != nil {
			return nil, nil, err
		}
		a, names = andCond{a, b}, append(names, n2...)
	}
	return a, names, nil
}

func (p *parser) not() (cond, []string, error) {
	if p.keyword("NOT") {
		c, names, err := p.not()
		return notCond{c}, names, err
	}
	if p.punct("(") {
		c, names, err := p.or()
		if err != nil {
			return nil, nil, err
		}
		return c, names, p.expect(")")
	}
	l, names, err := p.expr()
	if err != nil {
		return nil, nil, err
	}
	switch {
	case p.keyword("IS"):
		not := p.keyword("NOT")
		if !p.keyword("NULL") {
			return nil, nil, fmt.Errorf("expected NULL after IS")
		}
		return nullCond{not: not, l: l}, names, nil
	case p.keyword("NOT"):
		if !p.keyword("IN") {
			return nil, nil, fmt.Errorf("expected IN after NOT")
		}
		c, n2, err := p.inList(l, true)
		return c, append(names, n2...), err
	case p.keyword("IN"):
		c, n2, err := p.inList(l, false)
		return c, append(names, n2...), err
	}
	t := p.next()
	switch t.text {
	case "=", "<>", "!=", "<", "<=", ">", ">=":
		if t.typ != 'p' {
			break
		}
		r, n2, err := p.expr()
		if err != nil {
			return nil, nil, err
		}
		return cmpCond{op: t.text, l: l, r: r}, append(names, n2...), nil
	}
	return nil, nil, fmt.Errorf("expected a comparison near %q", t.text)
}

func (p *parser) inList(l expr, not bool) (cond, []string, error) {
	if err := p.expect("("); err != nil {
		return nil, nil, err
	}
	c := inCond{not: not, l: l}
	var names []string
	for {
		e, n2, err := p.expr()
		if err != nil {
			return nil, nil, err
		}
		c.list, names = append(c.list, e), append(names, n2...)
		if !p.punct(",") {
			break
		}
	}
	c.index()
	return c, names, p.expect(")")
}

// expr parses a value expression and returns the columns it names.
func (p *parser) expr() (expr, []string, error) {
	t := p.next()
	switch t.typ {
	case 's':
		return litExpr{value{k: kStr, s: t.text}}, nil, nil
	case 'n':
		n, err := strconv.ParseFloat(t.text, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("bad number %q", t.text)
		}
		return litExpr{value{k: kNum, n: n}}, nil, nil
	case '?':
		i := p.nparam
		p.nparam++
		if i >= len(p.params) {
			return litExpr{}, nil, nil // counted and refused after parsing
		}
		return litExpr{value{k: kStr, s: p.params[i]}}, nil, nil
	case 'i':
		name := strings.ToUpper(t.text)
		if p.punct("(") {
			want := map[string]int{"LOWER": 1, "UPPER": 1, "LTRIM": 1, "RTRIM": 1, "TO_CHAR": 2, "TO_DATE": 2, "MOD": 2}[name]
			if want == 0 {
				return nil, nil, fmt.Errorf("unsupported function %s", t.text)
			}
			f := funcExpr{name: name}
			var names []string
			for i := range want {
				if i > 0 {
					if err := p.expect(","); err != nil {
						return nil, nil, err
					}
				}
				a, n2, err := p.expr()
				if err != nil {
					return nil, nil, err
				}
				f.args, names = append(f.args, a), append(names, n2...)
			}
			if name == "TO_DATE" || name == "TO_CHAR" {
				if l, ok := f.args[1].(litExpr); !ok || l.v.k != kStr {
					return nil, nil, fmt.Errorf("%s needs a format literal", name)
				}
			}
			if name == "TO_DATE" {
				l, ok := f.args[0].(litExpr)
				if !ok || l.v.k != kStr {
					return nil, nil, fmt.Errorf("TO_DATE needs a string literal")
				}
				// Folded once here rather than parsed again on every row.
				v := f.eval(&rowCtx{loc: p.loc, dates: p.dates})
				if v.k == kNull {
					return nil, nil, fmt.Errorf("TO_DATE: %q does not match the format", l.v.s)
				}
				return litExpr{v}, names, p.expect(")")
			}
			return f, names, p.expect(")")
		}
		if name == "NULL" {
			return litExpr{}, nil, nil
		}
		if reserved[name] {
			return nil, nil, fmt.Errorf("unexpected %s", t.text)
		}
		col := strings.ToLower(t.text)
		return colExpr{col}, []string{col}, nil
	}
	return nil, nil, fmt.Errorf("unexpected %q", t.text)
}

// run evaluates q over rows and returns the page [offset, offset+limit)
// of the sorted result, projected as collection items, and the number of
// rows the whole result holds. Only the page is projected: a page of
// 1,000 read from a result of 100,000 costs the emulator no more than its
// rows' values.
func (q *query) run(tbl *table, rows []*entity, loc *time.Location, dates DateSemantics, limit, offset int) ([]map[string]any, int) {
	rc := &rowCtx{tbl: tbl, loc: loc, dates: dates}
	var hits []*entity
	for _, e := range rows {
		rc.e = e
		if q.where == nil || q.where.test(rc) {
			hits = append(hits, e)
		}
	}
	if len(q.order) > 0 {
		// Sort keys are computed once per row, not once per comparison.
		keys := make(map[*entity][]value, len(hits))
		for _, e := range hits {
			rc.e = e
			k := make([]value, len(q.order))
			for i, o := range q.order {
				k[i] = o.e.eval(rc)
			}
			keys[e] = k
		}
		slices.SortStableFunc(hits, func(x, y *entity) int {
			ka, kb := keys[x], keys[y]
			for i, o := range q.order {
				va, vb := ka[i], kb[i]
				var n int
				switch {
				case va.k == kNull && vb.k == kNull:
				case va.k == kNull: // Oracle: NULLS LAST ascending
					n = 1
				case vb.k == kNull:
					n = -1
				default:
					n, _ = compare(va, vb)
				}
				if o.desc {
					n = -n
				}
				if n != 0 {
					return n
				}
			}
			return 0
		})
	}
	from, to := window(len(hits), limit, offset)
	out := make([]map[string]any, 0, to-from)
	for _, e := range hits[from:to] {
		rc.e = e
		m := map[string]any{"links": []any{}}
		for _, it := range q.items {
			if it.star {
				for _, c := range tbl.columnNames() {
					if v := rc.column(c); v.k != kNull {
						m[c] = v.String()
					}
				}
				continue
			}
			// NULL columns are left out of the item, as NetSuite does.
			if v := it.e.eval(rc); v.k != kNull {
				m[it.name] = v.String()
			}
		}
		out = append(out, m)
	}
	return out, len(hits)
}
